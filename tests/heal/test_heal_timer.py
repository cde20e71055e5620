"""The node's one timer for holds (handlers/heal/heal_timer.py): real processes, no Consul needed."""
import os
import subprocess
import time

import support
from consul_medic.handlers.heal import heal_timer


def timers(directory):
    """Pids of live timer processes serving `directory`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/stat" % pid, "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        if b"--timer" in argv and directory.encode() in argv:
            out.append(int(pid))
    return out


def entry(tmp_path, service, at):
    # a spec directory with no spec: the look itself fails (usage), which never ends the timer
    return {"at": at, "service": service, "env": None, "specs": str(tmp_path / "nospecs"),
            "audit_log": str(tmp_path / "audit.jsonl"), "consul_addr": "127.0.0.1:1", "consul_timeout": 1}


def test_due_is_pure():
    items = [("a", {"at": 5.0}), ("b", {"at": 10.0}), ("c", {"at": 12.0})]
    assert heal_timer.due(items, 10.0) == ([("a", {"at": 5.0}), ("b", {"at": 10.0})], 12.0)
    assert heal_timer.due(items[:1], 10.0) == ([("a", {"at": 5.0})], None)


def test_many_holds_one_timer_which_exits_when_they_are_served(tmp_path):
    (tmp_path / "nospecs").mkdir()
    parent = subprocess.Popen(["sleep", "60"])
    d = heal_timer.timer_dir(str(tmp_path / "state"), parent.pid)
    env = dict(os.environ, MEDIC_TIMER_PARENT=str(parent.pid))
    argv0 = os.path.join(support.BIN, "medic-heal")
    try:
        now = time.time()
        pids = {heal_timer.schedule(d, entry(tmp_path, "s%02d.example" % i, now + 1.5 + i * 0.05), parent.pid, env,
                                    argv0) for i in range(20)}
        # 20 holds: one process (a scheduler that finds it starting gets no pid yet: None)
        assert len(pids - {None}) == 1 and timers(d) == list(pids - {None}), (pids, timers(d))
        support.wait_for(lambda: not heal_timer.entries(d), 30, 0.1, "every hold served")
        support.wait_for(lambda: not timers(d), 10, 0.1, "the timer to exit with nothing pending")
    finally:
        for pid in timers(d):
            os.kill(pid, 9)
        parent.kill()
        parent.wait()


def test_the_timer_dies_with_its_agent(tmp_path):
    parent = subprocess.Popen(["sleep", "60"])
    d = heal_timer.timer_dir(str(tmp_path / "state"), parent.pid)
    env = dict(os.environ, MEDIC_TIMER_PARENT=str(parent.pid))
    try:
        heal_timer.schedule(d, entry(tmp_path, "late.example", time.time() + 600), parent.pid, env,
                            os.path.join(support.BIN, "medic-heal"))
        support.wait_for(lambda: timers(d), 10, 0.1, "the timer")
        parent.kill()
        parent.wait()
        t0 = time.monotonic()
        support.wait_for(lambda: not timers(d), 5, 0.05, "the timer to follow its agent")
        assert time.monotonic() - t0 < heal_timer.POLL + 1.5
        assert heal_timer.entries(d)  # the hold is left to the reconcile check of the next agent
    finally:
        for pid in timers(d):
            os.kill(pid, 9)
        if parent.poll() is None:
            parent.kill()
            parent.wait()


