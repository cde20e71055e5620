"""medic-tag: role tags changed in place, kept in KV, surviving resyncs and registrar restarts."""
import base64
import json
import time

import pytest

import support
import support_register as sr
from consul_medic.handlers.core import keys

pytestmark = [pytest.mark.consul]

LABELS = {"SERVICE_NAME": "redis-%s", "SERVICE_TAGS": "redis,slave", "SERVICE_CHECK_TCP": "true",
          "SERVICE_CHECK_INTERVAL": "1s"}


def tag(agent, *args, tmp_path=None):
    extra = ["--audit-log", str(tmp_path / "tag.jsonl")] if tmp_path else []
    return support.run_medic("medic-tag", list(args) + ["--consul-addr", agent.addr] + extra)


def role(agent, sid):
    entries = agent.api("/v1/kv/" + keys.key(None, "roles", sid))
    return json.loads(base64.b64decode(entries[0]["Value"]))


def labels(unique):
    return {k: (v % unique if "%s" in v else v) for k, v in LABELS.items()}


@pytest.mark.docker
def test_role_tag_survives_resyncs_and_a_registrar_restart(docker_client, demo_image, consul_factory, unique,
                                                             tmp_path):
    agent = consul_factory(node="medic-tag-" + unique)
    audit_log = str(tmp_path / "audit.jsonl")
    d = sr.Daemon(agent.addr, unique, resync=0.5, audit_log=audit_log).start()
    try:
        c = sr.run_container(docker_client, unique, "medic-tag-%s" % unique, labels=labels(unique))
        sid = sr.service_id(c.name)
        support.wait_for(lambda: [x for x in sr.checks_of(agent, sid).values() if x["Status"] == "passing"],
                         timeout=30, what="a registered, passing instance")
        r = tag(agent, sid, "--add", "master", "--remove", "slave", tmp_path=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("MEDIC OK - %s tags redis,master (check rebuilt from its Meta)" % sid)
        svc = sr.services(agent)[sid]
        assert sorted(svc["Tags"]) == ["master", "redis"]
        (chk,) = sr.checks_of(agent, sid).values()
        assert (chk["Type"], chk["Status"], sorted(chk["ServiceTags"])) == ("tcp", "passing", ["master", "redis"])
        assert role(agent, sid) == {"add": ["master"], "remove": ["slave"]}
        health = "/v1/health/service/redis-" + unique
        time.sleep(1.0)
        idx = sr.index_of(agent, health)
        n = len(d.resyncs())
        support.wait_for(lambda: len(d.resyncs()) >= n + 4, timeout=30, what="4 resyncs")
        assert sorted(sr.services(agent)[sid]["Tags"]) == ["master", "redis"]
        assert sr.index_of(agent, health) == idx, "a resync rewrote the re-tagged instance"
        # registrar restart
        assert d.stop()[0] == 0
        d = sr.Daemon(agent.addr, unique, resync=0.5, audit_log=audit_log).start()
        support.wait_for(lambda: len(d.resyncs()) >= 3, timeout=30, what="resyncs of the new registrar")
        assert sorted(sr.services(agent)[sid]["Tags"]) == ["master", "redis"]
        assert sr.index_of(agent, health) == idx
        # the container restarts on a new port: re-registered, the role kept
        c.restart(timeout=2)
        port = sr.published_port(docker_client, c.id)
        support.wait_for(lambda: sr.services(agent).get(sid, {}).get("Port") == port, timeout=30,
                         what="re-registration on the new port")
        assert sorted(sr.services(agent)[sid]["Tags"]) == ["master", "redis"]
        # back to slave
        r = tag(agent, sid, "--add", "slave", "--remove", "master", tmp_path=tmp_path)
        assert r.returncode == 0, r.stdout
        assert sorted(sr.services(agent)[sid]["Tags"]) == ["redis", "slave"]
        assert role(agent, sid) == {"add": ["slave"], "remove": ["master"]}
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)


@pytest.mark.docker
def test_a_role_written_to_kv_is_applied_without_waiting_for_a_resync(docker_client, demo_image, consul_factory,
                                                                     unique, tmp_path):
    agent = consul_factory(node="medic-tagkv-" + unique)
    d = sr.Daemon(agent.addr, unique, resync=3600, audit_log=str(tmp_path / "a.jsonl")).start()
    try:
        c = sr.run_container(docker_client, unique, "medic-tagkv-%s" % unique, labels=labels(unique))
        sid = sr.service_id(c.name)
        support.wait_for(lambda: sid in sr.services(agent), timeout=30, what="registration")
        agent.api("/v1/kv/" + keys.key(None, "roles", sid), "PUT", {"add": ["master"], "remove": ["slave"]})
        support.wait_for(lambda: sorted(sr.services(agent)[sid]["Tags"]) == ["master", "redis"], timeout=10,
                         what="the registrar applying the KV role")
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)


def test_retag_of_a_foreign_service_keeps_its_checks_running(consul_factory, unique, tmp_path):
    agent = consul_factory(node="medic-tagf-" + unique)
    sid = "manual-" + unique
    agent.register_ttl(sid, "db-" + unique, tags=("db", "slave"))
    r = tag(agent, sid, "--add", "master,primary", "--remove", "slave", tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout
    assert "checks left running untouched" in r.stdout
    assert sr.services(agent)[sid]["Tags"] == ["db", "master", "primary"]
    (chk,) = sr.checks_of(agent, sid).values()
    assert (chk["CheckID"], chk["Status"]) == ("service:" + sid, "passing")
    agent.set_ttl(sid, "critical")  # the TTL check is still the live one
    assert sr.checks_of(agent, sid)["service:" + sid]["Status"] == "critical"
    # asking again changes nothing on the agent
    idx = sr.index_of(agent, "/v1/catalog/services")
    r = tag(agent, sid, "--add", "master", tmp_path=tmp_path)
    assert r.returncode == 0 and "unchanged" in r.stdout
    assert sr.index_of(agent, "/v1/catalog/services") == idx
    # no change asked: show
    r = tag(agent, sid)
    assert r.stdout == 'MEDIC OK - %s tags db,master,primary; role {"add": ["master", "primary"], "remove": ' \
                       '["slave"]}\n' % sid
    from consul_medic.handlers.core import audit
    recs = audit.read(str(tmp_path / "tag.jsonl"))
    assert [x["reason"][:12] for x in recs] == ["re-registere", "tags already"]


def test_service_not_on_this_agent_records_the_role_and_warns(consul_factory, unique, tmp_path):
    agent = consul_factory(node="medic-tagn-" + unique)
    sid = "vm:nowhere-%s:80" % unique
    r = tag(agent, sid, "--add", "master", tmp_path=tmp_path)
    assert r.returncode == 1 and r.stdout.startswith("MEDIC WARNING - %s is not registered" % sid)
    assert role(agent, sid) == {"add": ["master"], "remove": []}
    r = tag(agent, sid, "--remove", "master", tmp_path=tmp_path)
    assert r.returncode == 1
    assert role(agent, sid) == {"add": [], "remove": ["master"]}


@pytest.mark.parametrize("args, msg", [
    (["x:y:80", "--add", "a", "--remove", "a"], "usage: tag a is both added and removed"),
    (["a/b", "--add", "m"], "usage: service ID 'a/b': must be non-empty and contain no '/'"),
    (["x:y:80", "--add", " , "], "usage: --add needs a non-empty tag"),
    (["x:y:80", "--add", "ma\u200fster"], "usage: --add tag 'ma?ster': printable, at most 255 characters"),
    (["x:y:80", "--remove", "t" * 300], "usage: --remove tag '%s...': printable, at most 255 characters" % ("t" * 80)),
    (["x:y:80", "--add", ",".join("t%d" % i for i in range(70))], "usage: --add: 70 tags, at most 64"),
    ([], "usage: Missing argument 'SERVICE_ID'."),
])
def test_usage_errors(args, msg):
    r = support.run_medic("medic-tag", args + ["--consul-addr", "127.0.0.1:1"])
    assert (r.returncode, r.stdout) == (3, "MEDIC UNKNOWN - %s\n" % msg)


def test_consul_down_is_unknown():
    port = support.free_port()
    r = support.run_medic("medic-tag", ["x:y:80", "--add", "m", "--consul-addr", "127.0.0.1:%d" % port,
                                        "--consul-timeout", "1"])
    assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - consul: cannot connect")


def test_malformed_and_concurrent_role_records(consul_factory, unique, tmp_path):
    """An unreadable record is replaced (said in the output); concurrent runs all land (check-and-set)."""
    import concurrent.futures
    agent = consul_factory(node="medic-tagc-" + unique)
    sid = "nowhere:%s:80" % unique
    agent.api("/v1/kv/" + keys.key(None, "roles", sid), "PUT", "not json")
    r = tag(agent, sid, "--add", "a", tmp_path=tmp_path)
    assert r.returncode == 1 and role(agent, sid) == {"add": ["a"], "remove": []}, r.stdout
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda t: tag(agent, sid, "--add", t, tmp_path=tmp_path), ["b", "c", "d", "e"]))
    assert [x.returncode for x in runs] == [1, 1, 1, 1], [x.stdout for x in runs]
    assert sorted(role(agent, sid)["add"]) == ["a", "b", "c", "d", "e"]
