"""medic-register against hostile containers, a refusing agent and registrator's flags:
real Consul agents, the real Docker engine, the real daemon (docs/hostile-input.md).

A hostile container sits next to a normal one: the normal one is registered and
deregistered as always, the hostile one is refused with an audit line.
"""
import base64
import json
import socket
import threading
import time
import uuid

import pytest

import support
import support_register as sr

pytestmark = [pytest.mark.consul, pytest.mark.docker]

NORMAL = {"SERVICE_CHECK_HTTP": "/cgi-bin/health", "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s"}


def passing(agent, sid):
    return [c for c in sr.checks_of(agent, sid).values() if c["Status"] == "passing"]


class Listener(threading.Thread):
    """Counts connections to 127.0.0.9:<port>: where a check label must never reach."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.9", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port, self.hits, self.stop = self.sock.getsockname()[1], 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.join(5)
        self.sock.close()


def test_hostile_containers_refused_while_a_normal_one_comes_and_goes(docker_client, demo_image, consul_factory,
                                                                      unique, tmp_path):
    agent = consul_factory(node="medic-regh-" + unique)
    agent.register_ttl("medic", "medic")  # medic's own service, as medic-config renders it
    medic_before = sr.services(agent)["medic"]
    trap = Listener()
    trap.start()
    d = sr.Daemon(agent.addr, unique, resync=2, audit_log=str(tmp_path / "audit.jsonl")).start()
    try:
        support.wait_for(lambda: d.records("resync") or not d.alive(), timeout=60, what="initial resync")
        hostile = {
            "meta": dict({"SERVICE_NAME": "meta-" + unique}, **{"SERVICE_K%d" % i: "v" for i in range(70)}),
            "takeover": {"SERVICE_ID": "medic", "SERVICE_NAME": "medic"},
            "ssrf": {"SERVICE_NAME": "ssrf-" + unique, "SERVICE_CHECK_HTTP": "@127.0.0.9:%d/ssrf" % trap.port,
                     "SERVICE_CHECK_INTERVAL": "1s"},
            "name": {"SERVICE_NAME": "bad name\u200f" + unique},
            "script": {"SERVICE_NAME": "script-" + unique, "SERVICE_CHECK_SCRIPT": "/bin/true"},
            "tags": {"SERVICE_NAME": "tags-" + unique, "SERVICE_TAGS": ",".join("t%d" % i for i in range(10000))},
        }
        for what, labels in hostile.items():
            sr.run_container(docker_client, unique, "medic-reg-%s-h%s" % (unique, what), labels=labels)
        normal = sr.run_container(docker_client, unique, "medic-reg-%s-normal" % unique,
                                  labels=dict(NORMAL, SERVICE_NAME="www-" + unique))
        sid = sr.service_id(normal.name)
        support.wait_for(lambda: passing(agent, sid), timeout=60, what="the normal container registered, passing")

        want = {"medic-reg-%s-h%s" % (unique, w) for w in ("meta", "name", "tags", "ssrf", "script")}
        support.wait_for(lambda: want <= {r["container"] for r in d.records("refuse")}
                         and any(r["service_id"] == "medic" for r in d.records("refuse")),
                         timeout=30, what="one refuse record per hostile container")
        refused = {r["container"]: r["reason"] for r in d.records("refuse")}
        assert "at most 64 Meta pairs" in refused["medic-reg-%s-hmeta" % unique]
        assert "letters, digits" in refused["medic-reg-%s-hname" % unique]
        assert "10000 tags" in refused["medic-reg-%s-htags" % unique]
        assert "must start with '/'" in refused["medic-reg-%s-hssrf" % unique]
        assert "script checks are not supported" in refused["medic-reg-%s-hscript" % unique]
        assert any(r["service_id"] == "medic" and "belongs to medic" in r["reason"] for r in d.records("refuse"))

        services = sr.services(agent)
        ours = {k for k, v in services.items() if (v.get("Meta") or {}).get("medic_registrar") == d.registrar_id}
        # the SSRF and script containers are registered, but with a check that is critical and says why
        for what in ("ssrf", "script"):
            ssid = sr.service_id("medic-reg-%s-h%s" % (unique, what))
            assert ssid in ours
            (chk,) = sr.checks_of(agent, ssid).values()
            assert (chk["Type"], chk["Status"]) == ("ttl", "critical"), chk
            assert "medic-register refused this check" in chk["Output"], chk
        assert ours == {sid, sr.service_id("medic-reg-%s-hssrf" % unique),
                        sr.service_id("medic-reg-%s-hscript" % unique)}
        assert services["medic"] == medic_before and "service:medic" in sr.checks_of(agent, "medic")

        # the normal container goes on being handled: removed on time, a new one added
        normal.kill()
        support.wait_for(lambda: sid not in sr.services(agent), timeout=30, what="the normal one deregistered")
        n2 = sr.run_container(docker_client, unique, "medic-reg-%s-normal2" % unique,
                              labels=dict(NORMAL, SERVICE_NAME="www-" + unique))
        support.wait_for(lambda: passing(agent, sr.service_id(n2.name)), timeout=60, what="a new one registered")
        n_resyncs = len(d.resyncs())
        support.wait_for(lambda: len(d.resyncs()) >= n_resyncs + 2, timeout=30, what="2 more resyncs")
        assert d.alive(), d.stderr()
        assert trap.hits == 0, "a check label reached 127.0.0.9"
        assert not d.records("consul"), "a refused input was taken for Consul being down"
        assert len(d.records("refuse")) == len(refused), "refusals are audited once while they last"
    finally:
        d.stop()
        trap.close()
        sr.remove_containers(docker_client, unique)


def _acl_agent(consul_factory, unique):
    master = str(uuid.uuid4())
    agent = consul_factory(node="medic-rega-" + unique, config={
        "primary_datacenter": "dc1",
        "acl": {"enabled": True, "default_policy": "deny", "down_policy": "extend-cache",
                "tokens": {"master": master, "agent": master, "default": master}}})
    rules = ('node_prefix "" { policy = "read" }\nservice_prefix "" { policy = "read" }\n'
             'service_prefix "ok-%s" { policy = "write" }\nkey_prefix "medic/default/roles/" { policy = "read" }\n'
             'key_prefix "medic/default/wake/" { policy = "write" }\n' % unique)
    policy = support.http_json(agent.addr + "/v1/acl/policy", "PUT", {"Name": "reg-" + unique, "Rules": rules},
                               token=master)
    token = support.http_json(agent.addr + "/v1/acl/token", "PUT", {"Description": "medic-register test",
                                                                    "Policies": [{"ID": policy["ID"]}]},
                              token=master)
    return agent, token["SecretID"]


def test_a_registration_consul_refuses_is_retried_alone_while_the_rest_goes_on(docker_client, demo_image,
                                                                              consul_factory, unique, tmp_path):
    """HTTP 403 (a service name outside the token's rights) on a real agent with ACLs on."""
    agent, token = _acl_agent(consul_factory, unique)
    d = sr.Daemon(agent.addr, unique, resync=30, audit_log=str(tmp_path / "audit.jsonl"),
                  env={"CONSUL_HTTP_TOKEN": token}).start()
    try:
        support.wait_for(lambda: d.records("resync") or not d.alive(), timeout=60, what="initial resync")
        sr.run_container(docker_client, unique, "medic-reg-%s-forbid" % unique,
                         labels=dict(NORMAL, SERVICE_NAME="forbid-" + unique))
        ok1 = sr.run_container(docker_client, unique, "medic-reg-%s-ok1" % unique,
                               labels=dict(NORMAL, SERVICE_NAME="ok-" + unique))
        sid1 = sr.service_id(ok1.name)
        support.wait_for(lambda: sid1 in sr.services(agent), timeout=30, what="the allowed one registered")
        support.wait_for(lambda: len(d.records("refused")) >= 2, timeout=30, what="the forbidden one retried")
        first, second = d.records("refused")[:2]
        assert first["status"] == 403 and "permission denied (ACL)" in first["reason"]
        assert (first["attempt"], second["attempt"]) == (1, 2) and second["retry_in"] > first["retry_in"]
        ok2 = sr.run_container(docker_client, unique, "medic-reg-%s-ok2" % unique,
                               labels=dict(NORMAL, SERVICE_NAME="ok-" + unique))
        ok1.kill()
        support.wait_for(lambda: sr.service_id(ok2.name) in sr.services(agent) and sid1 not in sr.services(agent),
                         timeout=30, what="the others registered and deregistered meanwhile")
        assert d.alive() and not d.records("consul"), d.stderr()
        assert sr.service_id("medic-reg-%s-forbid" % unique) not in sr.services(agent)
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)


def _kv(agent, key):
    import urllib.error
    try:
        got = agent.api("/v1/kv/" + key)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    return json.loads(base64.b64decode(got[0]["Value"])) if got else None


def test_graceful_stop_writes_the_wake_key_and_registrations_carry_medic_started(docker_client, demo_image,
                                                                                consul_factory, unique, tmp_path):
    agent = consul_factory(node="medic-regw-" + unique)
    env_name = "reg" + unique
    d = sr.Daemon(agent.addr, unique, resync=30, audit_log=str(tmp_path / "audit.jsonl"),
                  env={"MEDIC_ENV": env_name}).start()
    try:
        support.wait_for(lambda: d.records("resync") or not d.alive(), timeout=60, what="initial resync")
        c = sr.run_container(docker_client, unique, "medic-reg-%s-w" % unique,
                             labels=dict(NORMAL, SERVICE_NAME="wake-" + unique))
        sid = sr.service_id(c.name)
        support.wait_for(lambda: sid in sr.services(agent), timeout=30, what="registration")
        started = docker_client.api.inspect_container(c.id)["State"]["StartedAt"]
        import calendar
        epoch = calendar.timegm(time.strptime(started[:19], "%Y-%m-%dT%H:%M:%S"))
        assert sr.services(agent)[sid]["Meta"]["medic_started"] == str(epoch)
        key = "medic/%s/wake/wake-%s" % (env_name, unique)
        assert _kv(agent, key) is None
        t0 = time.time()
        c.stop(timeout=5)
        support.wait_for(lambda: _kv(agent, key) is not None, timeout=30, what="the wake-up key: %s" % d.records())
        rec = _kv(agent, key)
        assert rec["container"] == c.id and int(t0) - 1 <= rec["at"] <= time.time() + 1
        assert "after it was deregistered at its stop signal" in rec["why"]
        assert [r["key"] for r in d.records("wake")] == [key]
        assert sid not in sr.services(agent)
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)


def test_host_network_and_explicit_like_registrator(docker_client, demo_image, consul_factory, unique, tmp_path):
    agent = consul_factory(node="medic-regn-" + unique)
    d = sr.Daemon(agent.addr, unique, resync=30, audit_log=str(tmp_path / "audit.jsonl"),
                  extra=["--ip", "127.0.0.1", "--explicit"]).start()
    try:
        support.wait_for(lambda: d.records("resync") or not d.alive(), timeout=60, what="initial resync")
        # host networking: its exposed port (the image EXPOSEs 80) on the host address; sleep binds nothing
        h = docker_client.containers.run(demo_image, ["sleep", "300"], name="medic-reg-%s-host" % unique,
                                         detach=True, network_mode="host",
                                         labels={sr.LABEL: unique, "SERVICE_NAME": "hostnet-" + unique})
        sr.run_container(docker_client, unique, "medic-reg-%s-noname" % unique)   # --explicit: no SERVICE_NAME
        sid = sr.service_id(h.name)
        support.wait_for(lambda: sid in sr.services(agent), timeout=30, what="the host-network container")
        svc = sr.services(agent)[sid]
        assert (svc["Service"], svc["Address"], svc["Port"]) == ("hostnet-" + unique, "127.0.0.1", 80)
        support.wait_for(lambda: any("--explicit" in r["reason"] for r in d.records("ignore")), timeout=30,
                         what="the unnamed container left out")
        assert sr.owned_ids(agent, d.registrar_id) == [sid]
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)


def test_loopback_guess_refused_at_start_without_ip(tmp_path):
    r = support.run_medic("medic-register", ["--once", "--hostname", "localhost", "--consul-addr", "127.0.0.1:1"],
                          env=support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "a.jsonl")))
    assert r.returncode == 3 and len(r.stdout.splitlines()) == 1, r.stdout
    assert "resolves to 127.0.0.1, a loopback address" in r.stdout and "--ip" in r.stdout
    r = support.run_medic("medic-register", ["--once", "--ip", "not-an-ip", "--consul-addr", "127.0.0.1:1"],
                          env=support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "a.jsonl")))
    assert r.returncode == 3 and "is not an IP address" in r.stdout


def test_internal_and_deregister_on_success_like_registrator(docker_client, demo_image, consul_factory, unique,
                                                           tmp_path):
    agent = consul_factory(node="medic-regi-" + unique)
    d = sr.Daemon(agent.addr, unique, resync=30, audit_log=str(tmp_path / "audit.jsonl"),
                  extra=["--internal", "--deregister", "on-success", "--allow-loopback-ip"]).start()
    try:
        support.wait_for(lambda: d.records("resync") or not d.alive(), timeout=60, what="initial resync")
        web = sr.run_container(docker_client, unique, "medic-reg-%s-iweb" % unique,
                               labels=dict(NORMAL, SERVICE_NAME="iweb-" + unique))
        crash = sr.run_container(docker_client, unique, "medic-reg-%s-icrash" % unique,
                                 command=["sh", "-c", "sleep 3; exit 3"], labels={"SERVICE_NAME": "icrash-" + unique})
        sid, csid = sr.service_id(web.name), sr.service_id(crash.name)
        # --internal: the container's own address on its (our) network and the container port
        support.wait_for(lambda: passing(agent, sid), timeout=60, what="internal registration passing")
        ip = docker_client.api.inspect_container(web.id)["NetworkSettings"]["Networks"][sr.network_for(
            docker_client, unique)]["IPAddress"]
        svc = sr.services(agent)[sid]
        assert (svc["Address"], svc["Port"]) == (ip, 80)
        # on-success: a container that exits non-zero (no stop signal) stays registered
        support.wait_for(lambda: csid in sr.services(agent), timeout=30, what="the crashing one registered")
        assert docker_client.api.wait(crash.id, timeout=30)["StatusCode"] == 3
        time.sleep(1.5)
        assert csid in sr.services(agent), d.records()
        crash.remove()
        support.wait_for(lambda: csid not in sr.services(agent), timeout=30, what="deregistered when removed")
        web.stop(timeout=1)                                    # a stop is always a deregistration
        support.wait_for(lambda: sid not in sr.services(agent), timeout=30, what="deregistered at the stop")
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)
