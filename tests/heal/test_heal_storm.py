"""A correlated failure is one event (handlers/heal/heal_storm.py): pure parts, then the whole
orchestration on tests/fakes.py (no Consul, no Docker)."""
import os

import pytest

import fakes
import support_heal as sh
from consul_medic.handlers.core import audit
from consul_medic.handlers.heal import heal_storm, healing
from consul_medic.handlers.engine.scaler import Result
from consul_medic.handlers.core.status import Status


def test_signature_takes_out_what_differs_per_service():
    a = heal_storm.signature("Pulling\nError: pull access denied for img-p001, repository 1f3a9c8e7d6b5a4c", ["p001"])
    b = heal_storm.signature("Error: pull access denied for img-p017, repository 9e8d7c6b5a4f3e2d", ["p017"])
    assert a == b == "Error: pull access denied for img-<svc>, repository <id>"


def test_correlated_needs_most_heals_failing_the_same_way():
    same = [("s%d" % i, "image missing") for i in range(3)]
    assert heal_storm.correlated(same, 3) == "image missing"
    assert heal_storm.correlated(same, 10) is None  # 3 of 10: not most
    assert heal_storm.correlated(same[:2], 2) is None  # too few to tell
    assert heal_storm.correlated(same + [("x", "other")], 4) is None  # 3 of 4 < 80 %


def test_backoff_doubles_while_storms_follow_each_other_with_jitter():
    until, level = heal_storm.backoff(None, 1000.0, 0.0)
    assert (until, level) == (1000.0 + heal_storm.BASE, 0)
    until2, level2 = heal_storm.backoff({"until": until, "level": level}, until + 5, 1.0)
    assert level2 == 1 and until2 == pytest.approx(until + 5 + 2 * heal_storm.BASE * (1 + heal_storm.JITTER))
    assert heal_storm.backoff({"until": 0.0, "level": 5}, 1e6, 0.0)[1] == 0  # long ago: starts over


class FailingScaler(fakes.RecordingScaler):
    def scale(self, n, remove=(), replace=None):
        self.calls.append(n)
        return Result(False, self.argv(n), 1, "Error response from daemon: pull access denied for img-%s"
                      % self.scale_spec.project, 0.1, [])


def test_three_hundred_failing_at_once_is_one_event(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIC_NOTIFY", "off")  # alerts are audited (kind notify), no child
    clock = fakes.Clock()
    consul, engine = fakes.FakeConsul(clock), fakes.FakeEngine(clock)
    scalers = []

    def scaler(sp, e):
        scalers.append(FailingScaler(sp.scale))
        return scalers[-1]

    specs, log = str(tmp_path / "specs"), str(tmp_path / "audit.jsonl")
    n = 300
    for i in range(n):
        sh.write_spec(specs, "s%03d.example" % i, "p%03d" % i, instances=1, file="/nonexistent/compose.yml")
    parts = healing.Parts(lambda: engine, scaler, consul, lambda sp, at: os.getpid(), clock, clock.monotonic,
                          clock.sleep)

    def run():
        return healing.run(all_=True, specs=specs, audit_log=log, conn={"consul_addr": "http://127.0.0.1:1"},
                           environ={"MEDIC_CACHE_DIR": ""}, parts=parts)

    out = run()
    recs = audit.read(log)
    heals = [r for r in recs if r.get("kind") == "heal" and r.get("decision") == "heal"]
    summary = [r for r in recs if r.get("kind") == "heal" and r.get("skipped")]
    assert len(scalers) == heal_storm.STORM_MIN and len(heals) == heal_storm.STORM_MIN
    assert len(summary) == 1 and summary[0]["skipped"] == n - heal_storm.STORM_MIN
    assert "correlated failure" in summary[0]["reason"] and "pull access denied" in summary[0]["reason"]
    emits = [r for r in recs if r.get("kind") == "notify" and r["event"]["kind"] == "heal_failed"]
    assert len(emits) == 1 and len(emits[0]["event"]["details"]["services"]) == heal_storm.STORM_MIN
    assert out.status == Status.UNKNOWN
    assert heal_storm.read(consul(None).client, None, clock()) is not None

    size = len(recs)
    clock.advance(5.0)
    run()  # inside the fleet-wide backoff: nothing acted, ONE record for the run
    recs = audit.read(log)[size:]
    assert len(scalers) == heal_storm.STORM_MIN
    assert [r.get("skipped") for r in recs if r.get("kind") == "heal"] == [n]
    assert "fleet-wide backoff until" in recs[-1]["reason"]


def test_consul_down_writes_one_record_per_run_not_one_per_service(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIC_NOTIFY", "off")
    clock = fakes.Clock()
    engine = fakes.FakeEngine(clock)
    specs, log = str(tmp_path / "specs"), str(tmp_path / "audit.jsonl")
    for i in range(50):
        sh.write_spec(specs, "d%02d.example" % i, "q%02d" % i, instances=1, file="/nonexistent/compose.yml")
    parts = healing.Parts(lambda: engine, None, None, lambda sp, at: os.getpid(), clock, clock.monotonic, clock.sleep)
    healing.run(all_=True, specs=specs, audit_log=log, conn={"consul_addr": "http://127.0.0.1:1", "timeout": 1},  # closed
                environ={"MEDIC_CACHE_DIR": "", "MEDIC_DEADLINE": "60"}, parts=parts)
    recs = [r for r in audit.read(log) if r.get("kind") == "heal"]
    assert [r["decision"] for r in recs] == ["error"] * healing.ERRORS_IN_ROW + ["hold"], recs
    assert recs[-1]["skipped"] == 50 - healing.ERRORS_IN_ROW and "consul failed for 2 services" in recs[-1]["reason"]
