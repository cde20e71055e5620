"""Issue 10 against a real agent and the real engine: holds end by themselves, every trigger
reaches a decision, operator intent. (The same orchestration without Consul or Docker:
test_heal_orchestration.py.) No timed assertions: figures are printed, bounds are generous."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import support
import support_heal as sh

pytestmark = [pytest.mark.consul, pytest.mark.docker]


def ready(make_world, agent, n=3, **heal):
    h = {"grace": "20s", "cooldown": "8s"}
    h.update(heal)
    w = make_world(agent, heal=h)
    w.up(n)
    w.register()
    w.wait_passing(n)
    return w


def decisions(w):
    return [r["decision"] for r in w.records()]


def test_second_loss_after_a_restored_heal_is_healed_at_once(consul_agent, make_world):
    w = ready(make_world, consul_agent)
    w.kill(w.running()[0])
    assert "heal(3)" in w.heal("--service", w.service).stdout
    w.register()
    w.wait_passing(3)
    t0 = time.monotonic()
    w.kill(w.running()[1])  # a second loss well inside the 8 s cooldown
    r = w.heal("--service", w.service)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0 and "heal(3)" in r.stdout, r.stdout
    assert w.records()[-1]["settle"] == "restored" and len(w.scale_actions()) == 2
    print("second loss 1 run after a restored heal: kill -> healed in %.2f s" % elapsed)


def test_second_loss_inside_the_cooldown_of_an_unsettled_heal_is_healed_when_it_ends(consul_agent, make_world):
    """No watch and no reconcile: the one run that sees the cooldown keeps the lock, looks again at its end."""
    w = ready(make_world, consul_agent)
    w.kill(w.running()[0])
    r = w.heal("--service", w.service)
    assert "heal(3)" in r.stdout, r.stdout  # the restarted container is not registered: unsettled
    t_heal = time.time()
    time.sleep(1.0)
    w.kill(w.running()[1])
    r = w.heal("--service", w.service)
    assert r.returncode == 0 and "heal(3)" in r.stdout, r.stdout
    hold, heal = w.records()[-2:]
    assert hold["decision"] == "hold" and "cooldown" in hold["reason"]
    assert hold["recheck"].startswith("wait under the lock") and hold["until"] >= t_heal
    assert heal["decision"] == "heal" and len(w.scale_actions()) == 2
    assert len(w.running()) == 3
    print("loss inside the cooldown: healed %.2f s after the cooldown ended" % (
        time.time() - hold["until"] - (time.time() - _epoch(heal["time"]))))


def _epoch(iso):
    import datetime
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_sigkilled_holder_on_this_host_is_freed_at_once(consul_agent, make_world):
    w = ready(make_world, consul_agent)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, consul_agent.addr, w.service],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=support.ROOT))
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
    w.kill(w.running()[0])
    r = w.heal("--service", w.service)
    assert r.returncode == 0 and "heal(3)" in r.stdout, r.stdout
    unlock = w.records()[0]
    assert unlock["decision"] == "unlock" and unlock["holder"]["pid"] == holder.pid
    assert decisions(w) == ["unlock", "heal"]


HOLDER = """
import sys, time
from consul_medic.handlers.consul import lock, settings
st = settings.resolve(sys.argv[1])
lk = lock.ServiceLock(settings.make_client(st), None, sys.argv[2], "heal")
assert lk.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_failing_count_check_heals_the_service_it_counts(consul_agent, make_world):
    """The count check medic:<service> lives on service `medic`: a checks payload names `medic`."""
    w = ready(make_world, consul_agent)
    cid = "medic:" + w.service
    consul_agent.register("medic-" + w.project, "medic")  # stands in for medic-config's `medic` service
    consul_agent.api("/v1/agent/check/register", "PUT", {"ID": cid, "Name": "medic count", "TTL": "10m",
                                                          "ServiceID": "medic-" + w.project})
    try:
        w.kill(w.running()[2])
        consul_agent.api("/v1/agent/check/fail/%s?note=MEDIC+CRITICAL+-+2/3" % cid, "PUT")
        payload = [c for c in consul_agent.api("/v1/health/state/critical") if c["CheckID"] == cid]
        assert payload and payload[0]["ServiceName"] == "medic"
        r = w.heal(input=json.dumps(payload))
        assert r.returncode == 0 and "heal(3)" in r.stdout, r.stdout
        assert len(w.running()) == 3
    finally:
        consul_agent.deregister("medic-" + w.project)


def test_pause_resume_and_expiry(consul_agent, make_world):
    w = ready(make_world, consul_agent)
    r = w.heal("--pause", w.service, "--for", "12s", "--reason", "db migration")
    assert r.returncode == 0 and "paused by" in r.stdout and "db migration" in r.stdout, r.stdout
    w.kill(w.running()[0])
    # (MEDIC_HOLD_WAIT=0: answer at once; by default a run would wait under the lock for a pause that
    # ends within 15 s, and then heal: see the orchestration test)
    r = w.heal("--service", w.service, env=w.env(MEDIC_HOLD_WAIT="0"))
    assert r.returncode == 0 and ": hold: paused by" in r.stdout and len(w.running()) == 2, r.stdout
    r = w.heal("--all", env=w.env(MEDIC_HOLD_WAIT="0"))
    assert len(w.running()) == 2 and not w.scale_actions()
    st = support.run_medic("medic-status", ["--json", "--no-engine"], env=w.env())
    assert "db migration" in st.stdout, st.stdout
    until = [x for x in w.records() if x["decision"] == "pause"][0]["until"]
    time.sleep(max(0.0, until - time.time()) + 0.5)  # the pause expires by itself
    r = w.heal("--service", w.service)
    assert "heal(3)" in r.stdout, r.stdout
    w.register()
    w.wait_passing(3)
    r = w.heal("--pause", w.service)  # until --resume
    w.kill(w.running()[1])
    assert ": hold: paused by" in w.heal("--service", w.service).stdout
    r = w.heal("--resume", w.service)
    assert r.returncode == 0 and "resumed (was paused by" in r.stdout and "heal(3)" in r.stdout, r.stdout
    assert len(w.running()) == 3
    assert [d for d in decisions(w) if d in ("pause", "resume")] == ["pause", "pause", "resume"]


def test_a_run_that_finds_the_lock_held_makes_the_holder_look_again(consul_agent, make_world):
    """Run A holds on a cooldown and waits under the lock; the restarted container registers and a
    run B finds the lock held, marks the service dirty: A wakes at once, finds its heal restored,
    and heals the second loss long before the cooldown would have ended."""
    w = ready(make_world, consul_agent, cooldown="14s")
    w.kill(w.running()[0])
    assert "heal(3)" in w.heal("--service", w.service).stdout
    t_heal = time.time()
    w.kill(w.running()[1])
    a = subprocess.Popen([os.path.join(support.BIN, "medic-heal"), "--service", w.service], env=w.env(),
                         stdout=subprocess.PIPE, text=True)
    try:
        support.wait_for(lambda: any("cooldown" in (r.get("reason") or "") for r in w.records()), 30,
                         what="run A to hold on the cooldown")
        w.register()  # the restarted container registers (medic-register's part) ...
        w.wait_passing(2)
        support.wait_for(lambda: [c for c in w.containers() if c.status == "running"] and w.passing() >= 2, 30)
        time.sleep(1.5)  # ... and passes its check
        r = w.heal("--service", w.service)  # run B
        assert ": skip:" in r.stdout and "marked dirty" in r.stdout, r.stdout
        out, _ = a.communicate(timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
    recs = w.records()
    healed = [x for x in recs if x["decision"] == "heal"][-1]
    assert len(w.scale_actions()) == 2 and healed["settle"] == "restored"
    assert _epoch(healed["time"]) < t_heal + 14  # woken by the mark, not by the cooldown's end
    print("woken by a dirty mark: second heal %.1f s after the first (cooldown 14 s)"
          % (_epoch(healed["time"]) - t_heal))


@pytest.mark.slow
def test_a_hold_beyond_the_wait_bound_gets_one_deferred_run(consul_agent, make_world):
    w = ready(make_world, consul_agent)
    env = w.env(MEDIC_DEFER="on", MEDIC_HOLD_WAIT="0")  # every look at the pending hold: a deferred run
    w.kill(w.running()[0])
    assert "heal(3)" in w.heal("--service", w.service, env=env).stdout
    try:
        for _ in range(3):  # pending (grace 20 s > 15 s): one deferred run, however often we look
            r = w.heal("--service", w.service, env=env)
            assert ": hold:" in r.stdout and "pending" in r.stdout, r.stdout
        notes = [x["recheck"] for x in w.records("hold")]
        assert notes[0].startswith("deferred run at") and all("already arranged" in n for n in notes[1:]), notes
        until = w.records("hold")[0]["until"]
        ours = {y["pid"] for y in w.records()}  # the heal and the three looks of this test
        # the deferred run looks when the hold ends: the container never registered, so it is failing now
        # (or, when it woke just before the last action's grace ended, it holds once more and the next
        # deferred run it arranged decides)
        rec = support.wait_for(lambda: [x for x in w.records() if x.get("pid") not in ours
                                        and x["decision"] == "warn"], 90, 0.5,
                               what="the deferred run's decision")[0]
        assert _epoch(rec["time"]) >= until and "fail their checks past grace" in rec["reason"]
        print("deferred run decided %.2f s after the hold ended" % (_epoch(rec["time"]) - until))
    finally:
        sh.kill_deferred(consul_agent, w.service)


def test_an_agent_whose_node_is_not_in_the_catalog_is_named_not_a_lost_leader(consul_factory, tmp_path, unique):
    """After a monitoring-agent restart its node is missing from the catalog for a moment and a
    session fails with "rpc error ... Missing node registration": that is not a lost leader."""
    agent = consul_factory()
    w = sh.World(agent, None, tmp_path, unique)  # no engine needed: the lock is the first thing to fail
    agent.api("/v1/catalog/deregister", "PUT", {"Node": agent.node})
    r = w.heal("--service", w.service)
    if "not ready" not in r.stdout:  # anti-entropy re-registered the node in between: try once more
        agent.api("/v1/catalog/deregister", "PUT", {"Node": agent.node})
        r = w.heal("--service", w.service)
    assert r.returncode == 3, r.stdout
    assert "the local Consul agent is not ready (its node %s is not registered" % agent.node in r.stdout, r.stdout
    assert "leader" not in r.stdout.split("not ready")[0]
    (rec,) = [x for x in w.records() if x["decision"] == "error"][-1:]
    assert "not ready" in rec["reason"]


def test_killing_the_container_medic_just_restarted_is_a_loss_not_a_failed_heal(consul_agent, make_world):
    from consul_medic.handlers.core import audit
    from consul_medic.handlers.service import history
    from consul_medic.handlers.consul import settings
    w = ready(make_world, consul_agent)
    victim = w.running()[0]
    w.kill(victim)
    assert "heal(3)" in w.heal("--service", w.service).stdout
    support.wait_for(lambda: [c for c in w.running() if c.id == victim.id], 30, what="the restart")
    docker_exit = w.docker.containers.get(victim.id)
    docker_exit.kill()  # killed again before it ever passed (docker kill: exit 137)
    docker_exit.reload()
    assert docker_exit.attrs["State"]["ExitCode"] == 137
    r = w.heal("--service", w.service)
    assert r.returncode == 0 and "heal(3)" in r.stdout, r.stdout  # no backoff, no cooldown: healed at once
    client = settings.make_client(settings.resolve(consul_agent.addr))
    h = history.Store(client, None, w.service).load()
    assert [a.result for a in h.actions] == ["lost", "started"]
    assert w.records()[-1]["settle"] == "lost"
    assert not [n for n in audit.read(w.audit) if n.get("kind") == "notify" and n["event"]["kind"] == "heal_failed"]
