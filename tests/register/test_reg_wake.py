"""medic-register's wake-ups and the heal fallback (handlers.reg_wake)."""
import json
import os
import stat
import sys

import pytest

from consul_medic.handlers.heal import heal_select
from consul_medic.handlers.register import reg_wake
from consul_medic.handlers.core.errors import ConsulError
from consul_medic.handlers.register.reg_agent import Refused


class Agent:
    def __init__(self):
        self.fail, self.written = None, []

    def put_wake(self, service, record):
        if self.fail:
            raise self.fail
        self.written.append((service, record))
        return "medic/default/wake/" + service


def make(fallback=True):
    agent, records, started = Agent(), [], []

    def spawn(service, record):
        started.append((service, record))
        return 4242
    w = reg_wake.Wakes(agent, records.append, lambda: 1795784400.7, spawn if fallback else None)
    return agent, w, records, started


def test_without_a_leader_every_queued_wake_up_starts_medic_heal_once_and_is_written_later():
    agent, w, records, started = make()
    agent.fail = ConsulError("Consul PUT /v1/kv/medic/default/wake/a: HTTP 500: No cluster leader")
    w.add("a", "c1", "container x exited")
    w.add("b", "c2", "container y exited")
    for _ in range(3):  # the registrar's loop retries with backoff
        with pytest.raises(ConsulError):
            w.flush()
    assert [s for s, _ in started] == ["a", "b"]  # once each, the second one too although the first failed
    assert started[0][1] == {"at": 1795784400, "why": "container x exited", "container": "c1"}
    assert [r["fallback"] for r in records] == [True, True]
    assert "No cluster leader" in records[0]["reason"] and "pid 4242" in records[0]["reason"]
    agent.fail = None
    w.flush()
    assert [s for s, _ in agent.written] == ["a", "b"] and w.written == 2 and not w.queue and not w.fell_back


def test_a_refused_write_is_audited_and_dropped_without_the_fallback():
    agent, w, records, started = make()
    agent.fail = Refused("Consul PUT /v1/kv/...: permission denied (ACL)", 403)
    w.add("a", "c1", "why")
    w.flush()
    assert not w.queue and started == [] and "wake-up key not written" in records[0]["reason"]


def test_without_the_option_a_failed_write_only_waits():
    agent, w, records, started = make(fallback=False)
    agent.fail = ConsulError("no leader")
    w.add("a", "c1", "why")
    with pytest.raises(ConsulError):
        w.flush()
    assert records == [] and len(w.queue) == 1


def test_the_fallback_run_gets_the_wake_record_as_a_keyprefix_payload_and_never_the_registrars_token(tmp_path):
    """A stand-in medic-heal beside argv0 records what it was given."""
    out = tmp_path / "got.json"
    fake = tmp_path / "medic-heal"
    fake.write_text("#!%s\nimport json, os, sys\njson.dump({'argv': sys.argv[1:], 'stdin': sys.stdin.read(), "
                    "'env': {k: v for k, v in os.environ.items() if 'CONSUL' in k or 'MEDIC' in k}}, "
                    "open(%r, 'w'))\n" % (sys.executable, str(out)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    environ = dict(os.environ, CONSUL_HTTP_TOKEN="registrar-secret", CONSUL_HTTP_TOKEN_FILE="/etc/reg-token",
                   CONSUL_INDEX="7")
    spawn = reg_wake.HealSpawner(str(tmp_path / "medic-register"), "live", specs="/etc/specs",
                                 consul_addr="http://127.0.0.9:8500", token_file="/etc/heal-token",
                                 audit_log="/var/log/heal.jsonl", environ=environ)
    pid = spawn("www.example.com", {"at": 1, "why": "exited", "container": "c1"})
    assert pid > 0
    spawn.children[0].wait(30)
    got = json.loads(out.read_text())
    assert got["argv"] == ["--env", "live", "--specs", "/etc/specs", "--consul-addr", "http://127.0.0.9:8500",
                           "--token-file", "/etc/heal-token", "--audit-log", "/var/log/heal.jsonl"]
    assert "registrar-secret" not in json.dumps(got) and "CONSUL_HTTP_TOKEN_FILE" not in got["env"]
    assert "CONSUL_INDEX" not in got["env"] and got["env"]["MEDIC_DEADLINE"] == "60"
    sel = heal_select.from_bytes(got["stdin"].encode(), "live")
    assert (sel.kind, sel.names, sel.wake) == ("keyprefix", ("www.example.com",), {"www.example.com": 0})
    spawn("x", {})
    assert len(spawn.children) == 1  # the first child had ended: reaped, no zombie kept
    for p in spawn.children:
        p.wait(30)


def test_the_default_environment_passes_no_env_and_a_broken_spawner_never_stops_the_registrar(tmp_path):
    spawn = reg_wake.HealSpawner(str(tmp_path / "medic-register"), None, environ={})
    assert spawn.argv == ["medic-heal"]  # nothing beside argv0: found on PATH
    agent, w, records, _ = make()

    def broken(service, record):
        raise TypeError("expected str, bytes or os.PathLike object, not NoneType")
    w.fallback = broken
    agent.fail = ConsulError("No cluster leader")
    w.add("a", "c1", "why")
    with pytest.raises(ConsulError):  # the registrar's loop retries; nothing else escapes
        w.flush()
    assert "medic-heal could not be started: TypeError" in records[0]["reason"]
