"""Fail closed (issue 23): a read that a decision or a displayed state depends on, answered with
anything but a clean 200/404, is UNKNOWN. Real Consul with ACLs on (default deny): the token may
read the service and its history but is denied the pause key."""
import json

import pytest

import support
from test_acl import ACL_CONFIG, AclAgent, make_token

pytestmark = [pytest.mark.consul]


@pytest.fixture
def acl_agent(consul_bin):
    agent = AclAgent(node="trust-acl-%d" % support.free_port(), config=ACL_CONFIG)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()


def _spec(tmp_path, service):
    d = tmp_path / "specs"
    d.mkdir()
    (tmp_path / "compose.yml").write_text("services:\n  web:\n    image: x\n")
    (d / (service + ".json")).write_text(json.dumps({
        "service": service, "instances": 1,
        "scale": {"driver": "compose", "project": "p", "file": str(tmp_path / "compose.yml"), "service": "web"}}))
    return str(d)


def _status(agent, specs, token, tmp_path):
    tf = tmp_path / ("token-%d" % support.free_port())
    tf.write_text(token + "\n")
    return support.run_medic("medic-status", ["--specs", specs, "--consul-addr", agent.addr, "--token-file", str(tf),
                                              "--no-engine", "--json", "--audit-log", str(tmp_path / "a.jsonl")],
                             env=support.medic_env(MEDIC_NOTIFY="off", MEDIC_CACHE_DIR=""))


def test_a_pause_read_denied_is_unknown_not_unpaused(acl_agent, tmp_path, unique):
    svc = "web-fc-%s" % unique
    acl_agent.api("/v1/agent/service/register", "PUT", {"ID": svc + "-1", "Name": svc, "Port": 80, "Meta": {
        "medic_compose_project": "p", "medic_compose_service": "web"}})
    acl_agent.api("/v1/kv/medic/default/pause/" + svc, "PUT",
                  {"until": None, "reason": "db migration", "by": "ops@h", "at": 1.0})
    specs = _spec(tmp_path, svc)
    base = ('service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
            'key_prefix "medic/default/history/" { policy = "read" }\n')
    everything = make_token(acl_agent, "fc-all-" + unique, base + 'key_prefix "medic/" { policy = "read" }\n')
    no_pause = make_token(acl_agent, "fc-nopause-" + unique, base)

    r = _status(acl_agent, specs, everything, tmp_path)
    (row,) = json.loads(r.stdout)["services"]
    assert row["paused"].startswith("paused by ops@h: db migration"), r.stdout + r.stderr
    assert row["state"] == "OK" and r.returncode == 0

    r = _status(acl_agent, specs, no_pause, tmp_path)
    (row,) = json.loads(r.stdout)["services"]
    assert r.returncode == 3, r.stdout + r.stderr
    assert row["state"] == "UNKNOWN" and row.get("paused") is None
    assert "permission denied (ACL)" in row["error"] and "cannot say whether it is paused" in row["error"]
