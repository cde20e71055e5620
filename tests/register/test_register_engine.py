"""medic-register across a restart of the (shared!) Docker engine.

DISRUPTIVE: stops dockerd and starts it again as testbed/install.sh does; every
container on this machine stops. Marked engine_restart (CI runs it last).
"""
import time

import pytest

import support
import support_register as sr

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow, pytest.mark.engine_restart]

LABELS = {"SERVICE_CHECK_HTTP": "/cgi-bin/health", "SERVICE_CHECK_INTERVAL": "1s"}


def test_engine_restart_converges_without_a_registrar_restart(docker_client, demo_image, consul_factory, unique,
                                                             tmp_path, capsys):
    import docker
    agent = consul_factory(node="medic-rege-" + unique)
    # resync 0 = never: whatever converges after the restart is the reconnect's doing
    d = sr.Daemon(agent.addr, unique, resync=0, audit_log=str(tmp_path / "audit.jsonl")).start()
    client = None
    try:
        support.wait_for(lambda: d.records("resync"), timeout=60, what="initial resync")
        keep = sr.run_container(docker_client, unique, "medic-rege-%s-keep" % unique,
                                labels=dict(LABELS, SERVICE_NAME="keep-" + unique), restart_policy={"Name": "always"})
        gone = sr.run_container(docker_client, unique, "medic-rege-%s-gone" % unique,
                                labels=dict(LABELS, SERVICE_NAME="gone-" + unique))
        ids = {sr.service_id(keep.name), sr.service_id(gone.name)}
        support.wait_for(lambda: set(sr.owned_ids(agent, d.registrar_id)) == ids, timeout=30, what="2 registrations")
        old_port = sr.published_port(docker_client, keep.id)

        t0 = time.monotonic()
        t_stop = sr.restart_engine()
        t_engine = time.monotonic() - t0
        client = docker.from_env(timeout=60)
        assert d.alive(), d.stderr()

        def restarted_port():
            data = client.api.inspect_container(keep.id)
            ports = data["NetworkSettings"]["Ports"] or {}
            return data["State"]["Running"] and ports.get("80/tcp") and int(ports["80/tcp"][0]["HostPort"])
        new_port = support.wait_for(restarted_port, timeout=60, what="the restart-policy container running again")

        def converged():
            s = sr.services(agent)
            return (sr.owned_ids(agent, d.registrar_id) == [sr.service_id(keep.name)]
                    and s[sr.service_id(keep.name)]["Port"] == new_port)
        support.wait_for(converged, timeout=120, what="registrations converged after the engine restart")
        t_conv = time.monotonic() - t0
        # the event stream is followed again: a new container is registered by its event
        new = sr.run_container(client, unique, "medic-rege-%s-new" % unique,
                               labels=dict(LABELS, SERVICE_NAME="new-" + unique))
        support.wait_for(lambda: sr.service_id(new.name) in sr.services(agent), timeout=60,
                         what="a container started after the restart")
        support.wait_for(lambda: [c for c in sr.checks_of(agent, sr.service_id(keep.name)).values()
                                  if c["Status"] == "passing"], timeout=60, what="the restarted instance passing")
        reasons = [r["reason"] for r in d.records("engine")]
        assert any(x.startswith("event stream lost") for x in reasons), reasons
        assert any(x.startswith("event stream reconnected") for x in reasons), reasons
        assert d.alive()
        with capsys.disabled():
            print("\n[engine restart] dockerd stopped in %.1f s, answered again after %.1f s; registrations "
                  "converged %.1f s after the restart began (port %d -> %d)"
                  % (t_stop, t_engine, t_conv, old_port, new_port))
    finally:
        d.stop()
        sr.remove_containers(client or docker_client, unique)
        if client is not None:
            client.close()
