"""gliderlabs/registrator's top issues replayed against medic-register (docs/peers.md): tags
holding an escaped comma (#390, #401), containers created from an image ID (#701), IPv6
published addresses (#321, #341), a resync racing a graceful stop (#621). Pure conventions
with literal inspect data, then the real daemon with the real engine and a real Consul agent."""
import threading
import time

import pytest

import support
import support_register as sr
from consul_medic.handlers.register import reg_labels as labels
from consul_medic.handlers.catalog import reg_model as model
from test_registrar import OPTS, container, one

TRAEFIK = r"traefik.frontend.rule=Host: www.example.com\, Path: /api,traefik.enable=true"


def test_a_backslash_escaped_comma_stays_in_its_tag():
    assert model.split_tags(r"a\,b") == ("a,b",)
    assert model.split_tags(TRAEFIK) == ("traefik.frontend.rule=Host: www.example.com, Path: /api",
                                         "traefik.enable=true")
    assert model.split_tags(r"x\,y, z ,,x\,y") == ("x,y", "z")
    assert model.split_tags(r"a\b,c") == (r"a\b", "c")       # any other backslash is kept as it is
    reg = one(container(labels={"SERVICE_80_TAGS": TRAEFIK}), model.Options("h", force_tags=model.split_tags(r"p\,q")))
    assert reg.tags == ("traefik.frontend.rule=Host: www.example.com, Path: /api", "traefik.enable=true", "p,q")


def test_a_container_created_from_an_image_id_is_named_after_its_compose_service():
    image_id = "sha256:" + "cb" * 32
    reg = one(container(image=image_id, labels={"com.docker.compose.service": "api"}))
    assert reg.name == "api"
    assert one(container(image=image_id, labels={"SERVICE_NAME": "named"})).name == "named"
    regs, skips = labels.registrations(container(image=image_id), OPTS)
    assert regs == [] and "image is an ID" in skips[0].reason and "SERVICE_NAME" in skips[0].reason
    regs, skips = labels.registrations(container(image="cbcbcbcbcbcb"), OPTS)
    assert regs == [] and "image is an ID" in skips[0].reason
    assert one(container(image="registry.local:5000/team/redis:7")).name == "redis"


def test_dual_stack_bindings_are_one_registration_and_ipv6_addresses_are_kept():
    dual = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "7"}, {"HostIp": "::", "HostPort": "7"}]}
    regs, _ = labels.registrations(container(ports=dual), model.Options("h", fallback_ip="192.0.2.9"))
    assert [(r.address, r.port) for r in regs] == [("192.0.2.9", 7)]
    v6 = {"80/tcp": [{"HostIp": "::1", "HostPort": "8"}]}
    reg = one(container(ports=v6, labels={"SERVICE_CHECK_HTTP": "/h"}))
    assert (reg.address, dict(reg.check)["HTTP"]) == ("::1", "http://[::1]:8/h")


@pytest.fixture
def world(docker_client, demo_image, consul_factory, unique, tmp_path):
    agent = consul_factory(node="medic-peers-" + unique)
    daemons = []

    def daemon(**kw):
        d = sr.Daemon(agent.addr, unique, audit_log=str(tmp_path / "audit.jsonl"), **kw).start()
        daemons.append(d)
        support.wait_for(lambda: d.records("resync") or not d.alive(), timeout=60, what="the initial resync")
        assert d.alive(), d.stderr()
        return d
    yield agent, daemon
    for d in daemons:
        d.stop()
    sr.remove_containers(docker_client, unique)


@pytest.mark.consul
@pytest.mark.docker
def test_registrator_habits_on_the_real_engine(world, docker_client, demo_image, unique):
    """One daemon, three containers as registrator users start them: a traefik rule tag with an
    escaped comma, a container created from an image ID by compose, one published on [::1]."""
    agent, daemon = world
    d = daemon()
    a = sr.run_container(docker_client, unique, "medic-peers-%s-a" % unique,
                         labels={"SERVICE_NAME": "rule-" + unique, "SERVICE_TAGS": TRAEFIK})
    image_id = docker_client.images.get(demo_image).id
    b = sr.run_container(docker_client, unique, "medic-peers-%s-b" % unique, image=image_id,
                         labels={"com.docker.compose.service": "api-" + unique})
    c = docker_client.containers.run(demo_image, name="medic-peers-%s-c" % unique, detach=True,
                                     labels={sr.LABEL: unique, "SERVICE_NAME": "v6-" + unique,
                                             "SERVICE_CHECK_TCP": "1", "SERVICE_CHECK_INTERVAL": "1s"},
                                     ports={"80/tcp": ("::1", None)}, network=sr.network_for(docker_client, unique))
    ids = {x: sr.service_id(x.name) for x in (a, b, c)}
    support.wait_for(lambda: set(ids.values()) <= set(sr.services(agent)), 30, what="three registrations")
    svcs = sr.services(agent)
    assert svcs[ids[a]]["Tags"] == ["traefik.frontend.rule=Host: www.example.com, Path: /api", "traefik.enable=true"]
    assert svcs[ids[b]]["Service"] == "api-" + unique
    assert (svcs[ids[c]]["Address"], svcs[ids[c]]["Port"]) == ("::1", sr.published_port(docker_client, c.id))
    support.wait_for(lambda: [v for v in sr.checks_of(agent, ids[c]).values() if v["Status"] == "passing"], 20,
                     what="the TCP check on [::1] passing")
    assert d.alive()


@pytest.mark.consul
@pytest.mark.docker
@pytest.mark.slow
def test_a_resync_during_a_graceful_stop_does_not_bring_the_service_back(world, docker_client, unique):
    """registrator #621: a resync listing a container that is still shutting down re-registered it.
    Here SIGTERM is ignored, so the container runs 5 s after `docker stop`; a resync runs every
    second meanwhile, and the service must stay out of Consul from the stop on."""
    agent, daemon = world
    d = daemon(resync=1)
    c = sr.run_container(docker_client, unique, "medic-peers-%s-g" % unique, entrypoint="sh",
                         command=["-c", "trap '' TERM; exec httpd -f -p 80 -h /www"],
                         labels={"SERVICE_NAME": "graceful-" + unique})
    sid = sr.service_id(c.name)
    support.wait_for(lambda: sid in sr.services(agent), 30, what="registration")
    stopper = threading.Thread(target=lambda: c.stop(timeout=5))
    stopper.start()
    support.wait_for(lambda: sid not in sr.services(agent), 10, what="deregistered at the stop signal")
    resyncs_before, seen = len(d.resyncs()), []
    while stopper.is_alive():
        if sid in sr.services(agent):
            seen.append(time.monotonic())
        time.sleep(0.1)
    stopper.join()
    assert len(d.resyncs()) - resyncs_before >= 3, d.resyncs()
    assert seen == []
    assert sid not in sr.services(agent)


@pytest.mark.consul
@pytest.mark.docker
def test_the_registrar_started_before_its_agent_waits_and_registers(docker_client, demo_image, consul_factory,
                                                                      unique, tmp_path):
    """consul-alerts #32 / registrator at boot: Consul not there yet is not a reason to exit."""
    agent = consul_factory(start=False, node="medic-peers-late-" + unique)
    d = sr.Daemon(agent.addr, unique, audit_log=str(tmp_path / "audit.jsonl")).start()
    try:
        c = sr.run_container(docker_client, unique, "medic-peers-%s-late" % unique, labels={"SERVICE_NAME": "late"})
        time.sleep(2.0)
        assert d.alive(), d.stderr()
        agent.start()
        support.wait_for(lambda: sr.service_id(c.name) in sr.services(agent), 30, what="registered once Consul is up")
        assert d.alive()
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)
