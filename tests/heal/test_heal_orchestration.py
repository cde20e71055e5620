"""medic-heal's whole orchestration (healing.run -> healer: lock -> observe -> decide -> act ->
record) without Consul or Docker: tests/fakes.py, a fixed clock. Runs in `make unit`.

The same behaviours are driven against a real agent and engine in test_heal_holds.py."""
import io
import json
import os
import time

import pytest

import fakes
import support_heal as sh
from consul_medic.handlers.core import audit, keys
from consul_medic.handlers.heal import healing, recheck
from consul_medic.handlers.service import history, pause
from consul_medic.handlers.consul import lock
from consul_medic.handlers.core.status import Status

SERVICE, PROJECT = "www.orch.example", "orch"


@pytest.fixture(autouse=True)
def no_notify(monkeypatch):
    monkeypatch.setenv("MEDIC_NOTIFY", "off")  # alerts are audited, no medic-notify child


class World:
    def __init__(self, tmp_path, instances=3, **heal):
        self.clock = fakes.Clock()
        self.consul = fakes.FakeConsul(self.clock)
        self.engine = fakes.FakeEngine(self.clock)
        self.scaled, self.spawned = [], []
        self.specs = str(tmp_path / "specs")
        self.audit = str(tmp_path / "audit.jsonl")
        h = {"grace": "20s", "cooldown": "10s", "backoff_base": "10s", "backoff_max": "40s"}
        h.update(heal)
        sh.write_spec(self.specs, SERVICE, PROJECT, instances=instances, heal=h, file="/nonexistent/compose.yml")
        self.parts = healing.Parts(lambda: self.engine, lambda sp, e: fakes.FakeComposeScaler(sp.scale, e, self.scaled),
                                   self.consul, lambda sp, at: self.spawned.append((sp.service, at)) or os.getpid(),
                                   self.clock, self.clock.monotonic, self.clock.sleep)

    def run(self, stdin=None, **kw):
        kw.setdefault("services", () if stdin is not None else (SERVICE,))
        return healing.run(specs=self.specs, audit_log=self.audit, conn={"consul_addr": "http://127.0.0.1:1"},
                           environ={"MEDIC_CACHE_DIR": ""}, parts=self.parts,
                           stdin=io.TextIOWrapper(io.BytesIO(stdin.encode())) if stdin is not None else None, **kw)

    def up(self, n, register=True):
        for _ in range(n):
            c = self.engine.run(PROJECT)
            if register:
                self.consul.register(SERVICE, c)
        self.clock.advance(100.0)  # they have run for a while

    def register_new(self):
        known = {i.meta["medic_container_id"] for i in self.consul.services.get(SERVICE, {}).values()}
        for a in self.engine.of(PROJECT):
            if a["Id"] not in known and a["State"]["Status"] == "running":
                self.consul.register(SERVICE, a)

    def kill(self, i=0):
        a = sorted(self.engine.of(PROJECT), key=lambda a: a["Name"])[i]
        self.engine.exit(a["Id"], 137)
        self.consul.deregister(SERVICE, a["Id"])
        return a["Id"]

    def records(self, decision=None):
        return [r for r in audit.read(self.audit) if r.get("kind") == "heal" and r.get("service") == SERVICE
                and (decision is None or r["decision"] == decision)]

    def history(self):
        return history.parse(self.consul.kv.value(history.history_key(None, SERVICE)))


def test_a_loss_is_healed_and_the_pending_hold_says_when_it_ends(tmp_path):
    w = World(tmp_path)
    w.up(3)
    w.kill(1)
    out = w.run()
    assert out.status == Status.OK and "heal(3)" in out.text, out.text
    assert w.scaled == [(3, (), None)] and len(w.engine.of(PROJECT)) == 3
    (rec,) = w.records()
    assert rec["decision"] == "heal" and rec["result"] == "ok" and rec["observed"]["stopped"] == 1
    assert [a.result for a in w.history().actions] == ["started"]
    # the killed container was restarted but is not registered yet: pending, until grace after its start
    w.clock.advance(1.0)
    out = w.run()
    rec = w.records()[-1]
    assert rec["decision"] == "hold" and "pending" in rec["reason"] and rec["until"] == pytest.approx(w.clock() + 19)
    assert rec["recheck"].startswith("deferred run at") and w.spawned == [(SERVICE, pytest.approx(w.clock() + 19.2))]
    assert len(w.scaled) == 1
    # a second run for the same hold arranges no second deferred run
    w.run()
    assert len(w.spawned) == 1 and "already arranged" in w.records()[-1]["recheck"]


def test_a_second_loss_right_after_a_restored_heal_is_healed_at_once(tmp_path):
    """Issue 10: cooldown guards only an action that has not settled."""
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    w.run()
    w.clock.advance(1.0)
    w.register_new()
    w.run()  # noop: restored
    assert w.history().actions[-1].result == "restored"
    w.clock.advance(1.0)  # 2 s after the heal, cooldown is 10 s
    w.kill(1)
    out = w.run()
    assert "heal(3)" in out.text and len(w.scaled) == 2, out.text


def test_a_loss_inside_the_cooldown_of_an_unsettled_action_is_healed_when_the_cooldown_ends(tmp_path):
    """The run keeps the lock and looks again when the hold ends (<= 15 s): no watch, no reconcile."""
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    w.run()  # heal: web-1 restarted, not registered yet (the action is unsettled)
    t_heal = w.clock()
    w.clock.advance(2.0)
    w.kill(1)  # a second loss 2 s later
    out = w.run()
    recs = w.records()
    assert [r["decision"] for r in recs[-2:]] == ["hold", "heal"], [r["reason"] for r in recs]
    assert "cooldown" in recs[-2]["reason"] and recs[-2]["until"] == pytest.approx(t_heal + 10)
    assert recs[-2]["recheck"].startswith("wait under the lock")
    assert w.clock() == pytest.approx(t_heal + 10, abs=0.5)  # looked again when the cooldown ended
    assert len(w.scaled) == 2 and out.status == Status.OK


def test_a_killed_restart_is_a_loss_not_a_failed_heal(tmp_path):
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    w.run()
    w.clock.advance(1.0)
    restarted = [a for a in w.engine.of(PROJECT) if a["State"]["Status"] == "running"
                 and a["Id"] not in {i.meta["medic_container_id"] for i in w.consul.services[SERVICE].values()}]
    w.engine.exit(restarted[0]["Id"], 137)  # killed again before it passed
    w.run()
    h = w.history()
    assert [a.result for a in h.actions] == ["lost", "started"]
    assert not [r for r in audit.read(w.audit) if r.get("kind") == "notify"]  # no heal_failed alert
    # a crash of its own (exit 1) is a failure: backoff, alert
    w.clock.advance(1.0)
    new = [a for a in w.engine.of(PROJECT) if a["State"]["Status"] == "running"
           and a["Id"] not in {i.meta["medic_container_id"] for i in w.consul.services[SERVICE].values()}]
    w.engine.exit(new[0]["Id"], 1)
    w.run()  # verdict failed, backoff 10 s (a short hold: this run waits for it, then heals again)
    assert [a.result for a in w.history().actions] == ["lost", "failed", "started"]
    assert [r["decision"] for r in w.records()][-2:] == ["hold", "heal"] and "backoff" in w.records()[-2]["reason"]
    assert [r["event"]["kind"] for r in audit.read(w.audit) if r.get("kind") == "notify"] == ["heal_failed"]


def test_a_dead_holder_on_this_host_is_freed_at_once(tmp_path):
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    sid = w.consul.session.create()
    dead = json.dumps({"operation": "heal", "host": os.uname().nodename, "pid": 2 ** 22 + 12345, "since": 1.0})
    assert w.consul.kv.put(lock.lock_key(None, SERVICE), dead, acquire=sid)
    out = w.run()
    assert "heal(3)" in out.text, out.text
    assert [r["decision"] for r in w.records()] == ["unlock", "heal"]
    assert sid not in w.consul.sessions


def test_a_live_holder_gets_a_dirty_mark_and_the_holder_looks_again(tmp_path):
    w = World(tmp_path)
    w.up(3)
    sid = w.consul.session.create()
    me = json.dumps({"operation": "heal", "host": os.uname().nodename, "pid": os.getpid(), "since": time.time()})
    assert w.consul.kv.put(lock.lock_key(None, SERVICE), me, acquire=sid)
    out = w.run()
    assert ": skip:" in out.text and "marked dirty" in out.text
    assert w.consul.kv.value(recheck.dirty_key(None, SERVICE)) is not None
    # the holder's side: after it lets go it finds the mark, takes it, and looks again
    assert recheck.take_dirty(w.consul, None, SERVICE) and not recheck.take_dirty(w.consul, None, SERVICE)


def test_a_holder_on_another_host_that_still_holds_later_gets_its_host_asked_to_look(tmp_path):
    """Only the holder's own host can compare its pid: a SIGKILLed holder elsewhere would keep the
    lock until its session's TTL ran out (about 2 x 15 s). The skipper arranges one deferred run;
    if the same holder still holds then, that run writes the wake key (every host's watch runs
    medic-heal, the holder's host frees a dead holder)."""
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    sid = w.consul.session.create()
    since = w.clock() - 0.3
    other = json.dumps({"operation": "heal", "host": "elsewhere", "pid": 4242, "since": since})
    assert w.consul.kv.put(lock.lock_key(None, SERVICE), other, acquire=sid)
    out = w.run()
    assert ": skip:" in out.text and "deferred run at" in out.text, out.text
    assert w.spawned == [(SERVICE, since + recheck.HOLDER_CHECK)]
    w.run()  # a second skipper: already arranged
    assert len(w.spawned) == 1
    w.clock.advance(recheck.HOLDER_CHECK)
    out = w.run(not_before=since + recheck.HOLDER_CHECK)  # the deferred run: the same holder still holds
    assert "asked every host to look (wake key)" in out.text, out.text
    assert json.loads(w.consul.kv.value(recheck.wake_key(None, SERVICE)))["holder"]["host"] == "elsewhere"
    assert len(w.spawned) == 1 and w.scaled == []  # nothing acted here: the lock is still held


def test_an_old_holder_elsewhere_is_looked_at_from_now_and_a_newer_one_is_not_reported(tmp_path):
    """A holder that exited with its lock held (its release failed during a leader election) is
    old when the next run finds it: the look is arranged from now, not skipped."""
    w = World(tmp_path)
    w.up(3)
    sid = w.consul.session.create()
    old = json.dumps({"operation": "heal", "host": "elsewhere", "pid": 4242, "since": w.clock() - 9.0})
    assert w.consul.kv.put(lock.lock_key(None, SERVICE), old, acquire=sid)
    out = w.run()
    assert ": skip:" in out.text and w.spawned == [(SERVICE, w.clock() + 0.2)], out.text
    out = w.run(not_before=w.clock() + 0.2)  # that deferred run: the same holder still holds
    assert "wake key" in out.text, out.text
    w.consul.kv.delete(recheck.wake_key(None, SERVICE))
    young = json.dumps({"operation": "heal", "host": "elsewhere", "pid": 4243, "since": w.clock() - 0.1})
    w.consul.kv.data[lock.lock_key(None, SERVICE)]["Value"] = young.encode()
    out = w.run(not_before=w.clock() - 0.5)  # a holder newer than the one it was arranged for: not asked
    assert "wake key" not in out.text and w.consul.kv.value(recheck.wake_key(None, SERVICE)) is None


def test_a_rollout_holds_with_its_reason_and_a_look_later(tmp_path):
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    sid = w.consul.session.create()
    w.consul.kv.put(lock.lock_key(None, SERVICE), json.dumps({"operation": "rollout", "host": "h", "pid": 1}),
                    acquire=sid)
    out = w.run()
    (rec,) = w.records()
    assert rec["decision"] == "hold" and rec["reason"].startswith("rollout in progress") and not w.scaled
    assert rec["recheck"].startswith("deferred run") and out.status == Status.OK


def test_pause_resume_and_expiry(tmp_path):
    w = World(tmp_path)
    w.up(3)
    out = w.run(services=(), pause=SERVICE, pause_for="30m", reason="db migration")
    assert out.status == Status.OK and "paused by" in out.text and "db migration" in out.text
    w.kill(0)
    out = w.run()
    rec = w.records()[-1]
    assert rec["decision"] == "hold" and rec["reason"].startswith("paused by") and rec["paused"] and not w.scaled
    assert rec["until"] == pytest.approx(w.clock() + 1800) and w.spawned  # a look when it expires
    out = w.run(services=(), all_=True)
    assert not w.scaled
    out = w.run(services=(), resume=SERVICE)
    assert "resumed (was paused by" in out.text and "heal(3)" in out.text and len(w.scaled) == 1
    assert [r["decision"] for r in w.records()][-2:] == ["resume", "heal"]
    # expiry: a pause --for ends by itself
    w.run(services=(), pause=SERVICE, pause_for="5s")
    w.kill(1)
    assert pause.read(w.consul, None, SERVICE, w.clock()) is not None
    w.clock.advance(6.0)
    assert pause.read(w.consul, None, SERVICE, w.clock()) is None
    out = w.run()
    assert "heal(3)" in out.text and len(w.scaled) == 2


@pytest.mark.parametrize("bad", ["0s", "-5m", "soon", "1e999s", "9999h"])
def test_pause_for_must_be_a_sane_duration(tmp_path, bad):
    from consul_medic.handlers.core.errors import UsageError
    w = World(tmp_path)
    with pytest.raises(UsageError):
        w.run(services=(), pause=SERVICE, pause_for=bad)


def test_a_failing_count_check_heals_the_service_it_counts(tmp_path):
    w = World(tmp_path)
    w.up(3)
    w.kill(2)
    payload = [{"Node": "monitor", "CheckID": "medic:" + SERVICE, "Name": "medic count", "Status": "critical",
                "ServiceID": "medic", "ServiceName": "medic"},
               {"Node": "monitor", "CheckID": "medic:reconcile", "Name": "r", "Status": "critical",
                "ServiceID": "medic", "ServiceName": "medic"}]
    out = w.run(stdin=json.dumps(payload))
    assert "heal(3)" in out.text, out.text
    assert not [r for r in audit.read(w.audit) if r.get("decision") == "ignore"]


def test_a_wake_key_heals_its_service_and_is_consumed(tmp_path):
    import base64
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    key = recheck.wake_key(None, SERVICE)
    w.consul.kv.put(key, json.dumps({"at": w.clock(), "why": "exited after deregistration", "container": "x"}))
    item = w.consul.kv.data[key]
    payload = [{"Key": key, "CreateIndex": 1, "ModifyIndex": item["ModifyIndex"], "LockIndex": 0, "Flags": 0,
                "Value": base64.b64encode(item["Value"]).decode(), "Session": ""}]
    out = w.run(stdin=json.dumps(payload))
    assert "heal(3)" in out.text and w.consul.kv.value(key) is None, out.text
    assert "payload names no service" in w.run(stdin="null").text


def test_an_open_circuit_exits_1_from_the_decision(tmp_path):
    w = World(tmp_path, max_attempts=1)
    w.up(2)
    w.engine.run(PROJECT)  # a third that never passes ...
    store = history.Store(w.consul, None, SERVICE)
    store.load()
    store.update(lambda h: history.add_action(h, w.clock() - 100, "scale", 3, "failed", None))
    w.kill(0)
    out = w.run()
    assert out.status == Status.WARNING and "circuit opens" in out.text, out.text


def test_reset_clears_an_unreadable_history(tmp_path):
    w = World(tmp_path)
    w.consul.kv.put(history.history_key(None, SERVICE), "garbage")
    out = w.run()
    assert out.status == Status.UNKNOWN and "corrupt history" in out.text
    out = w.run(services=(), reset=SERVICE)
    assert out.status == Status.OK and "unreadable history cleared" in out.text
    rec = w.records("reset")[-1]
    assert rec["cleared"]["value"] == "garbage"
    assert w.history() == history.parse(w.consul.kv.value(history.history_key(None, SERVICE)))
    assert keys.key(None, "history", SERVICE) in w.consul.kv.data


def test_all_audits_an_unchanged_noop_once(tmp_path):
    """Issue 14: the reconcile check (--all) writes a noop only when it says something new (or
    once an hour); runs for one service (watches, --service) keep auditing every noop."""
    w = World(tmp_path)
    w.up(3)
    for _ in range(3):
        w.run(services=(), all_=True)
    assert [r["decision"] for r in w.records()] == ["noop"]
    w.kill(0)
    w.run(services=(), all_=True)
    w.clock.advance(1.0)
    w.register_new()
    for _ in range(2):
        w.run(services=(), all_=True)
    assert [r["decision"] for r in w.records()] == ["noop", "heal", "noop"]
    w.run()
    assert [r["decision"] for r in w.records()] == ["noop", "heal", "noop", "noop"]


def test_a_drained_host_starts_nothing_until_undo(tmp_path):
    from consul_medic.handlers.service import drain_state
    w = World(tmp_path)
    w.up(3)
    w.kill(0)
    drain_state.write(w.consul, None, w.engine.info()["Name"], {"phase": "draining", "by": "ops"})
    out = w.run()
    rec = w.records()[-1]
    assert rec["decision"] == "hold" and rec["reason"].startswith("host ") and "medic-drain" in rec["reason"]
    assert rec["drained"] == w.engine.info()["Name"] and not w.scaled and out.status == Status.OK
    drain_state.clear(w.consul, None, w.engine.info()["Name"])
    out = w.run()
    assert "heal(3)" in out.text and len(w.scaled) == 1


def test_a_heal_after_a_rollout_starts_the_recorded_image(tmp_path, monkeypatch):
    """medic-rollout records the image it deployed; medic-heal's compose scaler then adds an override
    file setting it, so a heal never brings back the compose file's old image (dry run: the argv)."""
    from consul_medic.handlers.service import rollout_image
    monkeypatch.setenv("MEDIC_OVERRIDE_DIR", str(tmp_path / "overrides"))
    w = World(tmp_path)
    w.parts = w.parts._replace(scaler_factory=None)  # the production scaler: only its argv is looked at
    w.up(3)
    w.kill(0)
    out = w.run(dry_run=True)
    assert "heal(3)" in out.text and " -f " not in out.text.split("/nonexistent/compose.yml", 1)[1].split(" up ")[0]
    rollout_image.record_image(w.consul, None, SERVICE, "medic-demo:v2")
    out = w.run(dry_run=True)
    argv = w.records()[-1]["argv"]
    override = argv[argv.index("/nonexistent/compose.yml") + 2]
    assert argv[argv.index("/nonexistent/compose.yml") + 1] == "-f" and override.startswith(str(tmp_path))
    with open(override, encoding="utf-8") as f:
        assert json.load(f) == {"services": {"web": {"image": "medic-demo:v2"}}}
    assert argv[-6:] == ["up", "-d", "--no-recreate", "--scale", "web=3", "web"]


def test_pause_returns_once_no_earlier_run_can_act(tmp_path):
    """--pause takes the service lock once after writing the pause: a run that read 'not paused'
    and still holds the lock could act otherwise (seen in make chaos). A holder that stays (a
    rollout) is named, and the pause is in force either way."""
    w = World(tmp_path)
    w.up(3)
    out = w.run(services=(), pause=SERVICE, pause_for="1m")
    assert "changes nothing" in out.text and w.consul.kv.value(lock.lock_key(None, SERVICE)) is None
    w.run(services=(), resume=SERVICE)
    sid = w.consul.session.create()
    holder = json.dumps({"operation": "rollout", "host": os.uname().nodename, "pid": os.getpid(), "since": time.time()})
    assert w.consul.kv.put(lock.lock_key(None, SERVICE), holder, acquire=sid)
    t0 = w.clock.monotonic()
    out = w.run(services=(), pause=SERVICE, pause_for="1m")
    assert "still held by" in out.text and "rollout" in out.text and w.clock.monotonic() - t0 >= 20.0
    assert pause.read(w.consul, None, SERVICE, w.clock()) is not None
    assert [r for r in w.records("pause")][-1]["still_running"].startswith("the lock is still held")
