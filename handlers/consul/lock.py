"""The per-service operation lock: a Consul session lock on medic/<env>/lock/<service>.

Healing, and later rolling updates, host drains and failovers, take the same lock,
so they never fight. Acquisition is non-blocking: if someone holds it, the caller
records "another handler is on it" and stops. The session has a TTL (renewed in the
background while held) and behavior=release, so a handler that crashes or hangs
frees the lock within about 2 x TTL (Consul's TTL grace); the lock is released in
`finally` on every normal path. lock-delay is 0: a released lock is free at once.

The holder writes {"operation", "host", "pid", "since"} as the lock's value. A holder
on THIS host whose process is gone (no such pid, a zombie, or a pid reused by a process
started after `since`) is dead: `free_if_dead()` destroys its session at once instead of
waiting for the TTL.

    with lock.held(client, env, service, "heal") as got:
        if not got: ...  # another handler is on it
"""
import contextlib
import json
import os
import socket
import threading
import time

from ..core import keys
from ..core.errors import ConsulError
from .consul_errors import failures

DEFAULT_TTL = 15  # seconds; Consul's minimum is 10
RELEASE_RETRY = 8.0  # a release Consul refuses (a leader election) is tried again this long
RELEASE_RETRY_STEP = 0.25


def lock_key(env, service):
    return keys.key(env, "lock", service)


class ServiceLock:
    def __init__(self, client, env, service, operation="heal", ttl=DEFAULT_TTL, renew_client=None):
        self.client = client
        self.renew_client = renew_client or client
        self.key = lock_key(env, service)
        self.operation = operation
        self.ttl = max(10, int(ttl))
        self.session = None
        self._stop = threading.Event()
        self._thread = None

    def holder(self):
        """Who holds the lock (the JSON value written by the holder), or None."""
        item = self._item()
        if not item or not item.get("Session"):
            return None
        return _holder_doc(item)

    def _item(self):
        try:
            _, item = self.client.kv.get(self.key)
        except failures():
            return None
        return item

    def free_if_dead(self, host=None):
        """Destroy the session of a holder that died on this host -> the dead holder's record, or None."""
        item = self._item()
        if not item or not item.get("Session"):
            return None
        doc = _holder_doc(item)
        if doc.get("host") != (host or socket.gethostname()) or process_alive(doc.get("pid"), doc.get("since")):
            return None
        try:
            self.client.session.destroy(item["Session"])
        except failures():
            return None
        return doc

    def acquire(self):
        """Try once. True when held; False when someone else holds it."""
        info = json.dumps({"operation": self.operation, "host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.time()})
        try:
            self.session = self.client.session.create(
                name="medic-%s %s" % (self.operation, self.key), behavior="release",
                ttl=self.ttl, lock_delay=0)
            ok = self.client.kv.put(self.key, info, acquire=self.session)
        except failures() as e:
            self._destroy()
            raise ConsulError("cannot take lock %s: %s" % (self.key, _reason(e))) from None
        if not ok:
            self._destroy()
            return False
        self._thread = threading.Thread(target=self._renew, name="medic-lock-renew", daemon=True)
        self._thread.start()
        return True

    def _renew(self):
        while not self._stop.wait(self.ttl / 3.0):
            try:
                self.renew_client.session.renew(self.session)
            except failures():
                pass  # the next renewal may succeed; the TTL bounds the damage

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.session is None:
            return
        try:
            self.client.kv.put(self.key, None, release=self.session)
        except failures():
            pass  # destroying the session releases it too; failing that, the TTL does
        self._destroy(RELEASE_RETRY)

    def _destroy(self, retry_for=0.0):
        """Destroy the session; when Consul cannot (no leader for a moment), try again for up to
        `retry_for` s: a holder that exits with its lock held blocks every other run until its own
        host frees it or the TTL ends."""
        sid, self.session = self.session, None
        deadline = time.monotonic() + retry_for
        while sid:
            try:
                self.client.session.destroy(sid)
                return
            except failures():
                if time.monotonic() >= deadline:
                    return
                time.sleep(RELEASE_RETRY_STEP)


@contextlib.contextmanager
def held(client, env, service, operation="heal", ttl=DEFAULT_TTL, renew_client=None):
    """Context manager: yields True when the lock is held (released on exit), else False."""
    lk = ServiceLock(client, env, service, operation, ttl, renew_client)
    got = lk.acquire()
    try:
        yield got
    finally:
        if got:
            lk.release()


def _holder_doc(item):
    try:
        doc = json.loads(item.get("Value") or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def process_alive(pid, since=None):
    """Is `pid` a live process on this host that started no later than `since` (epoch)?

    A zombie is dead. A pid we cannot judge (not an int, no /proc) counts as alive:
    freeing a live holder's lock would let two handlers act."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
        if fields[0] in ("Z", "X"):
            return False
        if since is not None:
            started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            if started > float(since) + 2.0:
                return False  # the pid was reused by a later process
    except (OSError, ValueError, IndexError):
        return True
    return True


def _boot_time():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise ValueError("no btime")


def _reason(e):
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
