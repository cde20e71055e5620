"""Replays and races: an agent whose watches call medic-heal, `consul reload` x 50, and ten
handlers on the same shortfall at once. Real agent, real engine, demo image."""
import json
import os
import subprocess
import time

import pytest

import support
import support_heal as sh

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]


def watching_agent(consul_factory, tmp_path, unique):
    """An agent whose service and checks watches call medic-heal (what medic-config renders)."""
    service = "heal-%s.example" % unique
    # a real server with a data dir (not -dev): API-registered services persist across reloads
    agent = consul_factory(start=False, dev=False, config={"server": True, "bootstrap_expect": 1},
                           env={"MEDIC_NOTIFY": "off", "MEDIC_CACHE_DIR": "", "MEDIC_DEFER": "off"})
    args = [os.path.join(support.BIN, "medic-heal"), "--specs", str(tmp_path / "specs"),
            "--audit-log", str(tmp_path / "audit.jsonl"), "--consul-addr", agent.addr]
    with open(os.path.join(agent.config_dir, "10-watches.json"), "w") as f:
        json.dump({"watches": [{"type": "service", "service": service, "args": args + ["--service", service]},
                               {"type": "checks", "service": service, "args": args}]}, f)
    return agent.start()


def settle(w, quiet=3.0, timeout=180):
    """Wait until no handler has written to the audit log for `quiet` seconds."""
    deadline = time.time() + timeout
    last = -1
    stable_since = time.time()
    while time.time() < deadline:
        n = len(sh.heal_records(w.audit))
        if n != last:
            last, stable_since = n, time.time()
        elif time.time() - stable_since >= quiet:
            return n
        time.sleep(0.2)
    raise AssertionError("handlers still running after %d s" % timeout)


def test_fifty_reloads_of_a_healthy_service_cause_no_action(consul_factory, make_world, tmp_path, unique):
    agent = watching_agent(consul_factory, tmp_path, unique)
    w = make_world(agent)
    w.up(3)
    w.register()
    w.wait_passing(3)
    n0 = settle(w)
    before = sorted(c.id for c in w.running())
    for _ in range(50):
        agent.reload()
        time.sleep(0.1)
    n1 = settle(w, quiet=5.0)
    runs = sh.heal_records(w.audit)[n0:]
    assert len(runs) >= 25, "the reloads fired the watches (%d handler runs)" % len(runs)
    # (the agent's first watch firings may heal before the test's own `compose up`: the spec
    # declares 3 and nothing runs yet, a real outage at start-up; only the reload phase counts)
    assert [r for r in runs if r["decision"] == "heal"] == []
    # (on a -dev agent a reload also drops API-registered services: running containers then show
    # as pending or failing, never as missing, so nothing is added there either)
    assert {r["decision"] for r in runs} <= {"noop", "skip", "hold", "warn"}, [
        (r["decision"], r["reason"]) for r in runs if r["decision"] not in ("noop", "skip", "hold", "warn")]
    assert sorted(c.id for c in w.running()) == before
    kinds = {}
    for r in runs:
        kinds[r["decision"]] = kinds.get(r["decision"], 0) + 1
    print("50 reloads: %d handler runs %s, 0 actions" % (n1 - n0, kinds))


def test_replays_right_after_a_heal_cause_no_extra_action(consul_factory, make_world, tmp_path, unique):
    agent = watching_agent(consul_factory, tmp_path, unique)
    w = make_world(agent)
    w.up(3)
    w.register()
    w.wait_passing(3)
    settle(w)
    base = len(w.scale_actions())  # see above: a start-up heal may precede the test's compose up
    gone = w.running()[0]
    t0 = time.monotonic()
    gone.remove(force=True)  # the container is gone: compose must create a new one
    # the check goes critical, the watches fire, medic-heal heals on its own
    support.wait_for(lambda: len(w.scale_actions()) == base + 1, timeout=60, what="the watch-driven heal")
    support.wait_for(lambda: len(w.running()) == 3, timeout=30, what="3 running")
    print("container removed -> check critical -> watch -> healed: %.1f s" % (time.monotonic() - t0))
    # the new container is up but not registered: replays and the still-critical check
    for _ in range(10):
        agent.reload()
        time.sleep(0.1)
    settle(w, quiet=4.0)
    assert len(w.scale_actions()) == base + 1
    assert any(r["decision"] == "hold" and "pending" in r["reason"] for r in w.records())
    w.register()
    w.wait_passing(3)
    for _ in range(5):
        agent.reload()
        time.sleep(0.1)
    settle(w, quiet=4.0)
    assert len(w.scale_actions()) == base + 1 and len(w.running()) == 3


def test_ten_concurrent_runs_one_action(consul_agent, make_world):
    w = make_world(consul_agent)
    w.up(3)
    w.register()
    w.wait_passing(3)
    w.running()[1].kill()
    env = w.env()
    procs = [subprocess.Popen([os.path.join(support.BIN, "medic-heal"), "--service", w.service],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(10)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    recs = w.records()
    # every run wrote at least one record; a holder that found a dirty mark looked again (one more)
    assert len({r["pid"] for r in recs}) == 10 and len(recs) >= 10
    assert len(w.scale_actions()) == 1, [r["decision"] for r in recs]
    assert {r["decision"] for r in recs} <= {"heal", "skip", "hold"}
    assert len(w.running()) == 3
