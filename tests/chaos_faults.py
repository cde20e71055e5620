"""The fault types of `make chaos` (tests/chaos.py) and how one fault is judged.

Each fault returns a Fault: when it began (epoch, for the audit), when its recovery clock
starts (monotonic), its budget (detection + 3 s; a graceful stop: its stop timeout + 3 s;
after a pause: resume + 3 s), and how many scale actions it may cause. `run()` then waits
until the declared count passes and runs again, waits 3 s more (a late over-deploy shows),
and counts the scale actions in the audit logs of every host.
"""
import base64
import json
import os
import random  # noqa: F401  (rng is a random.Random)
import signal
import subprocess
import threading
import time
from collections import namedtuple

import support_chaos
from support_chaos import SERVICE, wait

# reap: processes the fault started that may outlive the recovery; waited for once it is measured
Fault = namedtuple("Fault", "t0 clock budget expected notes reap")
Fault.__new__.__defaults__ = ((), ())
STOP_TIMEOUT = 10.0  # docker stop's default
SLACK = 3.0
RECOVERY_TIMEOUT = 90.0
QUIET = 3.0


def steady(stack, timeout=0.0):
    """The declared count passes in Consul and runs on the live engines (at `timeout` s at most)."""
    def ok():
        return (stack.passing() == stack.declared
                and sum(len(v) for v in stack.running_per_host(stack.alive()).values()) == stack.declared)
    return ok() or bool(timeout and wait(ok, timeout))


def victims(stack, rng, n=1, host=None):
    pool = [(i, cid) for i, ids in stack.running_per_host([host] if host else stack.alive()).items() for cid in ids]
    rng.shuffle(pool)
    return pool[:n]


def docker(stack, i, *args, timeout=60):
    return subprocess.run(["docker", *args], env=stack.docker_env(i), capture_output=True, text=True, timeout=timeout)


def kill(stack, targets):
    threads = [threading.Thread(target=docker, args=(stack, i, "kill", cid)) for i, cid in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def heal_by_hand(stack, i):
    return subprocess.Popen([os.path.join(support_chaos.BIN, "medic-heal"), "--service", SERVICE],
                            env=stack.heal_env(i), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the faults ----------------------------------------------------------------------
def f_kill1(stack, checker, rng):
    t0, c0 = time.time(), time.monotonic()
    kill(stack, victims(stack, rng, 1))
    return Fault(t0, c0, SLACK, (1,))


def f_kill2(stack, checker, rng):
    t0, c0 = time.time(), time.monotonic()
    kill(stack, victims(stack, rng, 2))
    return Fault(t0, c0, SLACK, (1, 2))  # one action, or one per host that lost one


def f_second_loss_in_cooldown(stack, checker, rng):
    t0 = time.time()
    kill(stack, victims(stack, rng, 1))
    steady(stack, RECOVERY_TIMEOUT)
    time.sleep(rng.uniform(0.2, 1.0))  # the cooldown (5 s) still runs
    c0 = time.monotonic()
    kill(stack, victims(stack, rng, 1))
    return Fault(t0, c0, SLACK, (2,))


def f_docker_stop(stack, checker, rng):
    (i, cid), = victims(stack, rng, 1)
    t0, c0 = time.time(), time.monotonic()
    with checker.lock:
        checker.in_flight += 1
    try:
        docker(stack, i, "stop", cid)
    finally:
        with checker.lock:
            checker.in_flight -= 1
    return Fault(t0, c0, STOP_TIMEOUT + SLACK, (1,))


def f_concurrent5(stack, checker, rng):
    t0, c0 = time.time(), time.monotonic()
    kill(stack, victims(stack, rng, 1))
    procs = [heal_by_hand(stack, rng.choice(stack.alive())) for _ in range(5)]
    # a run that found the lock held marks the service dirty and the holder looks again before it lets go:
    # the five may run on after the count is back, which is not part of the recovery
    return Fault(t0, c0, SLACK, (1,), (), tuple(procs))


# Faults that lose no container: the clock starts once the fault is done (the reload returned,
# the agent answers again); recovery is how long the count stays disturbed after it.
def f_consul_reload(stack, checker, rng):
    t0 = time.time()
    for addr in [support_chaos.MONITOR] + [h["consul_addr"] for h in stack.hosts() if not h["lost"]]:
        subprocess.run(["consul", "reload", "-http-addr=" + addr], capture_output=True, timeout=30)
    return Fault(t0, time.monotonic(), SLACK, (0,))


def f_agent_restart(stack, checker, rng):
    """A host's agent (the one running that host's medic watches) restarts; its containers run on."""
    i = rng.choice(stack.alive())
    t0 = time.time()
    stack.sh("hosts.sh", "restart-agent", str(i))
    return Fault(t0, time.monotonic(), SLACK, (0,), ("host %d" % i,))


def _pid(stack, name):
    try:
        with open(os.path.join(stack.dir, "consul", name, "pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def f_monitor_restart(stack, checker, rng):
    t0 = time.time()
    pid = _pid(stack, "monitor")
    if pid:
        os.kill(pid, signal.SIGINT)
        wait(lambda: not os.path.exists("/proc/%d" % pid), 20)
    stack.sh("consul.sh", "up", "cluster")
    return Fault(t0, time.monotonic(), SLACK, (0,))


def leader():
    try:
        addr = support_chaos.http_json("http://127.0.0.2:8500/v1/status/leader", timeout=1) or ""
    except (OSError, ValueError):
        addr = ""
    for i in (2, 3, 4):
        if addr.startswith("127.0.0.%d:" % i):
            return "server%d" % i
    return None


def f_leader_kill(stack, checker, rng):
    old = leader()
    t0, c0 = time.time(), time.monotonic()
    pid = _pid(stack, old) if old else None
    if pid:
        os.kill(pid, signal.SIGKILL)
    kill(stack, victims(stack, rng, 1))

    def new_leader():
        for i in (2, 3, 4):
            if "server%d" % i == old:
                continue
            try:
                a = support_chaos.http_json("http://127.0.0.%d:8500/v1/status/leader" % i, timeout=1)
            except (OSError, ValueError):
                continue
            if a and not a.startswith("127.0.0.%s:" % (old or "x")[-1:]):
                return a
        return None
    wait(new_leader, 30)
    elected = time.monotonic() - c0
    return Fault(t0, c0, elected + SLACK, (1,), ("%s killed, new leader after %.1f s" % (old, elected),))


def after_leader_kill(stack):
    stack.sh("consul.sh", "up", "cluster")  # the killed server back (idempotent: the others are left alone)


def _lock_holder(since):
    """(pid, host) of the medic-heal holding the service's lock that took it at or after `since`
    (epoch), else None. The hosts share this machine's PID namespace."""
    try:
        item = support_chaos.http_json(support_chaos.MONITOR + "/v1/kv/medic/default/lock/" + SERVICE, timeout=1)
    except (OSError, ValueError):
        return None
    if not item or not item[0].get("Session") or not item[0].get("Value"):
        return None
    try:
        doc = json.loads(base64.b64decode(item[0]["Value"]))
        if doc.get("operation") == "heal" and float(doc.get("since", 0)) >= since:
            return int(doc["pid"]), doc.get("host")
    except (ValueError, TypeError, KeyError):
        return None
    return None


def f_heal_sigkill(stack, checker, rng):
    """A container killed, and the medic-heal that took the lock for it SIGKILLed while it holds it
    (mid-run: observe, decide or act). The lock stays held by a dead process until it is freed."""
    t0, c0 = time.time(), time.monotonic()
    kill(stack, victims(stack, rng, 1))
    holder = wait(lambda: _lock_holder(t0 - 0.5), 15, interval=0.002)
    note = "no medic-heal took the lock within 15 s"
    if holder:
        try:
            os.kill(holder[0], signal.SIGKILL)
            note = "medic-heal %d on %s SIGKILLed while holding the lock" % holder
        except ProcessLookupError:
            note = "medic-heal %d on %s finished before it could be killed" % holder
    return Fault(t0, c0, SLACK, (0, 1), (note,))  # the killed run writes no audit record


def f_host_lost(stack, checker, rng):
    # a host that runs none of the instances costs nothing when lost (and expects no action):
    # lose one that runs some (seed 1 once drew a host with 0 of 6)
    alive = stack.alive()
    running = stack.running_per_host(alive)
    i = rng.choice([h for h in alive if running.get(h)] or alive)
    t0, c0 = time.time(), time.monotonic()
    stack.sh("hosts.sh", "lose", str(i))
    stack.forget(i)
    wait(lambda: stack.passing() < stack.declared, 60)
    detect = time.monotonic() - c0
    return Fault(t0, c0, detect + SLACK, (1,), ("host %d lost, detected after %.1f s" % (i, detect),), )


def after_host_lost(stack):
    for h in stack.hosts():
        if h["lost"]:
            stack.sh("hosts.sh", "restore", str(h["index"]))


def pause_supported():
    r = subprocess.run([os.path.join(support_chaos.BIN, "medic-heal"), "--help"], capture_output=True, text=True)
    return "--pause" in r.stdout and "--resume" in r.stdout


def f_pause_resume(stack, checker, rng):
    i = rng.choice(stack.alive())
    heal = [os.path.join(support_chaos.BIN, "medic-heal")]
    subprocess.run(heal + ["--pause", SERVICE, "--for", "30s", "--reason", "chaos"], env=stack.heal_env(i),
                   capture_output=True, timeout=60)
    t0 = time.time()
    kill(stack, victims(stack, rng, 1))
    time.sleep(5)
    acted = stack.scale_actions(t0)
    held = stack.passing() < stack.declared
    c0 = time.monotonic()  # --resume looks at the service at once: the clock runs from the call
    subprocess.run(heal + ["--resume", SERVICE], env=stack.heal_env(i), capture_output=True, timeout=60)
    notes = () if (not acted and held) else ("acted while paused: %d action(s), held %s" % (len(acted), held),)
    return Fault(t0, c0, SLACK, (1,), notes)


def available(stack, notes):
    faults = {"kill1": f_kill1, "kill2": f_kill2, "second_loss_in_cooldown": f_second_loss_in_cooldown,
              "docker_stop": f_docker_stop, "concurrent_handlers5": f_concurrent5, "consul_reload": f_consul_reload,
              "agent_restart": f_agent_restart, "monitor_restart": f_monitor_restart, "leader_kill": f_leader_kill,
              "heal_sigkill": f_heal_sigkill, "host_lost_restored": f_host_lost}
    if pause_supported():
        faults["pause_resume"] = f_pause_resume
    else:
        notes.append("medic-heal has no --pause/--resume here: fault type pause_resume skipped")
    return faults


AFTER = {"leader_kill": after_leader_kill, "host_lost_restored": after_host_lost}


def run(name, fn, stack, checker, rng):
    """One fault, judged -> result dict (type, recovery_s, budget_s, actions, violations, notes)."""
    violations = []
    if not steady(stack, 60):
        violations.append({"kind": "not_steady_before", "detail": (stack.passing(), stack.running_per_host())})
        reset(stack)
    f = fn(stack, checker, rng)
    ok = steady(stack, RECOVERY_TIMEOUT)
    recovery = time.monotonic() - f.clock if ok else None
    for p in f.reap:
        p.wait(120)
    after = AFTER.get(name)
    restored = None
    if after:
        after(stack)
        c1 = time.monotonic()
        restored = time.monotonic() - c1 if steady(stack, RECOVERY_TIMEOUT) else None
    time.sleep(QUIET)
    actions = stack.scale_actions(f.t0)
    if recovery is None:
        violations.append({"kind": "no_recovery", "detail": "not back to %d passing within %.0f s"
                           % (stack.declared, RECOVERY_TIMEOUT)})
    elif f.budget is not None and recovery > f.budget:
        violations.append({"kind": "slow_recovery", "detail": "%.2f s > budget %.2f s" % (recovery, f.budget)})
    if len(actions) not in f.expected:
        violations.append({"kind": "scale_actions", "detail": "%d action(s), expected %s: %s" % (
            len(actions), "/".join(map(str, f.expected)),
            [(a["_host"], a["observed"]["has"], a["target"], a["reason"][:80]) for a in actions])})
    if any(n.startswith("acted while paused") for n in f.notes):
        violations.append({"kind": "acted_while_paused", "detail": f.notes[0]})
    if after and restored is None:
        violations.append({"kind": "no_recovery_after_restore", "detail": name})
    if not steady(stack):
        reset(stack)
    return {"type": name, "time": f.t0, "recovery_s": recovery, "budget_s": f.budget, "actions": len(actions),
            "restore_s": restored, "violations": violations, "notes": list(f.notes), "timeline": timeline(stack, f.t0)}


def timeline(stack, t0, limit=25):
    """What medic-heal decided on every host after the fault: (s after it, host, decision, reason)."""
    return [(round(r["_t"] - t0, 2), r["_host"], r.get("decision"), (r.get("reason") or "")[:110])
            for r in stack.heal_records(t0) if r.get("decision") not in ("ignore", None)][:limit]


def reset(stack):
    """Back to the declared count by hand (after a violation), so the next fault starts clean."""
    after_host_lost(stack)
    alive = stack.alive()
    for n, i in enumerate(alive):
        want = stack.declared // len(alive) + (1 if n < stack.declared % len(alive) else 0)
        stack.compose(i, "up", "-d", "--no-recreate", "--scale", "web=%d" % want, "web", check=False)
    steady(stack, 60)
