"""One timer per node for the holds that end by themselves: no sleeping process per held service.

    schedule(directory, entry, parent, environ) -> pid   write the service's entry, make sure the
                                                         node's timer runs (start it, or wake it)
    main(argv)                                           the timer: `medic-heal --timer DIR --parent PID`

A hold that ends later than a run may wait (handlers/heal/healer.py) used to get a detached
`medic-heal --not-before AT` of its own, a sleeping Python process per held service. Now the
run writes one small entry file into a directory medic owns (`<state>/timer-<parent pid>/`,
the parent being the Consul agent that ran the handler) and at most ONE timer process per
agent sleeps until the earliest entry is due, then runs the deferred look in-process (imports
already paid: the look starts within milliseconds of the hold's end) and sleeps again.

    <dir>/timer.lock     flock held by the running timer; a scheduler that can take it knows
                         no timer runs and starts one
    <dir>/timer.pid      the timer's pid (SIGUSR1: "an entry changed, read the directory again"),
                         written by the timer once SIGUSR1 is blocked (before that, no signal)
    <dir>/<env>.<service>.json   {"at", "service", "env", "specs", "audit_log", "consul_addr",
                                  "consul_timeout"}: one per service, a later write replaces it

Lifetime: the timer exits when no entry is left (a scheduler writes its entry BEFORE it tries
the lock, the timer looks for entries AFTER it let go of the lock: one of the two always sees
the other), and within a second of its parent agent's exit (it compares the parent's pid and
start time): nothing medic starts outlives the agent it belongs to.
"""
import json
import os
import signal
import subprocess
import sys
import time

LOCK, PID = "timer.lock", "timer.pid"
POLL = 1.0          # the parent's liveness is checked at least this often
RUN_DEADLINE = 600.0  # one deferred look (as a medic-heal run)


def timer_dir(state_dir, parent):
    return os.path.join(state_dir, "timer-%d" % int(parent))


def _entry_name(env, service):
    from urllib.parse import quote
    return "%s.%s.json" % (quote(env or "default", safe=""), quote(service, safe=""))


def _start_time(pid):
    """The process's start time (clock ticks since boot, /proc), None when unknown."""
    try:
        with open("/proc/%d/stat" % int(pid), "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, started):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or _start_time(pid) == started


def _try_lock(directory):
    """An fd holding the directory's timer lock, or None when a timer holds it."""
    import fcntl
    fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _read_pid(directory):
    try:
        with open(os.path.join(directory, PID)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _write(path, doc):
    tmp = path + ".%d.tmp" % os.getpid()
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, sort_keys=True)
    os.replace(tmp, path)


def schedule(directory, entry, parent, environ, argv0):
    """Write the entry; start the timer if none runs (-> its pid), else wake it (-> its pid)."""
    os.makedirs(directory, mode=0o750, exist_ok=True)
    _write(os.path.join(directory, _entry_name(entry.get("env"), entry["service"])), entry)
    fd = _try_lock(directory)
    if fd is None:  # a timer runs: it reads the directory again now (no pid yet: it has not read it yet)
        pid = _read_pid(directory)
        if pid:
            try:
                os.kill(pid, signal.SIGUSR1)
            except OSError:
                pass
        return pid
    # the timer inherits the locked file description: no second timer can start in between
    from ..core import runtime
    try:
        try:
            os.unlink(os.path.join(directory, PID))  # the new timer writes it once it can take SIGUSR1
        except FileNotFoundError:
            pass
        argv = [runtime.sibling(argv0, "medic-heal"), "--timer", directory, "--parent", str(int(parent)),
                "--lock-fd", str(fd)]
        env = dict(environ, MEDIC_DEADLINE="%g" % RUN_DEADLINE, MEDIC_HOLD_WAIT="0")
        env.pop("CONSUL_INDEX", None)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env, start_new_session=True, close_fds=True, pass_fds=(fd,))
    finally:
        os.close(fd)
    return p.pid


def entries(directory):
    """[(path, entry)] of the readable entries (a broken one is removed)."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            float(doc["at"])
            str(doc["service"])
            out.append((path, doc))
        except (OSError, ValueError, KeyError, TypeError):
            try:
                os.unlink(path)
            except OSError:
                pass
    return out


def due(items, now):
    """The entries due at `now`, and the earliest time of the rest (None: no other). Pure."""
    ready = [(p, e) for p, e in items if float(e["at"]) <= now]
    later = [float(e["at"]) for p, e in items if float(e["at"]) > now]
    return ready, (min(later) if later else None)


def _take(path, entry):
    """Remove the entry if it is still this one (a newer write stays) -> True when taken."""
    try:
        with open(path, encoding="utf-8") as f:
            if json.load(f) != entry:
                return False
        os.unlink(path)
        return True
    except (OSError, ValueError):
        return False


def _look(entry, look):
    """The deferred look (`look(entry)`: medic-heal's run), in this process, under its own deadline."""
    from ..core.errors import DeadlineExceeded

    def alarm(signum, frame):
        raise DeadlineExceeded("deadline exceeded")

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, RUN_DEADLINE)
    try:
        look(entry)
    except BaseException as e:  # one look failing never ends the timer
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        sys.stderr.write("medic-heal timer: %s: %s: %s\n" % (entry.get("service"), type(e).__name__, e))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def serve(directory, parent, look, clock=time.time):
    """The timer's loop (holding the lock) -> when no entry is left or the parent is gone."""
    started = _start_time(parent)
    while True:
        if not _alive(parent, started):
            return "parent %d gone" % parent
        ready, nxt = due(entries(directory), clock())
        for path, entry in sorted(ready, key=lambda pe: float(pe[1]["at"])):
            if _take(path, entry):
                _look(entry, look)
        if ready:
            continue
        if nxt is None:
            return "no hold pending"
        signal.sigtimedwait({signal.SIGUSR1}, max(0.0, min(nxt - clock(), POLL)))


def main(argv, look):
    """`medic-heal --timer DIR --parent PID` -> exit status; `look(entry)` runs one deferred look."""
    try:
        directory, parent = argv[argv.index("--timer") + 1], int(argv[argv.index("--parent") + 1])
    except (ValueError, IndexError):
        sys.stdout.write("MEDIC UNKNOWN - usage: medic-heal --timer DIR --parent PID\n")
        return 3
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # before the pid is known: a wake-up, not a kill
    fd = int(argv[argv.index("--lock-fd") + 1]) if "--lock-fd" in argv else None  # held: handed over
    while True:
        fd = _try_lock(directory) if fd is None else fd
        if fd is None:
            return 0  # another timer serves this directory
        try:
            _write(os.path.join(directory, PID), os.getpid())
            why = serve(directory, parent, look)
        finally:
            os.close(fd)
            fd = None
        # let go, then look: an entry written while we held the lock is ours to serve
        if why != "no hold pending" or not entries(directory):
            return 0
