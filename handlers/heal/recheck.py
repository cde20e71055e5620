"""Looking again: every hold that ends by itself gets a fresh observe -> decide at its end, and
every run that found the lock held gets someone to look again once it is free.

    medic/<env>/dirty/<service>      {"at", "host", "pid"}: a run found the lock held by another
                                     heal run. The holder deletes the mark before each observe
                                     and reads it after it lets go: set -> it takes the lock and
                                     looks again (the marker tried the lock once more after
                                     marking, so one of the two always looks). While a holder
                                     waits for a short hold to end, a mark wakes it at once (a
                                     blocking query on the key).
    medic/<env>/deferred/<service>   {"at", "host", "pid"}: one deferred run is arranged for a
                                     hold that ends later than a run may wait: a detached
                                     `medic-heal --service NAME --not-before AT` (own session).
                                     At most one per service: a run arranges one only when none
                                     at or before its time is pending (alive on this host, or
                                     on another host and not overdue).
    medic/<env>/wake/<service>       written by medic-register when a container that was already
                                     deregistered finally exits; the keyprefix watch runs
                                     medic-heal, which deletes the key (CAS) once it looked.
                                     Also written by a deferred run that finds the heal holder
                                     on another host still holding HOLDER_CHECK s after a skipper
                                     saw it take the lock: every host's watch runs medic-heal,
                                     and the holder's own host frees it if its process is dead
                                     (a SIGKILLed holder; only its own host can compare the pid).

Marks are hints: failing to write or read one never stops a run (the reconcile check is the
safety net). `client` is a py-consul client or anything with the same kv.get/put/delete.
"""
import json
import os
import socket
import subprocess

from ..core import keys
from ..consul.lock import process_alive
from ..consul.consul_errors import failures as consul_failures
from ..core.errors import MedicError

OVERDUE = 30.0  # a deferred run this late is presumed gone
HOLDER_CHECK = 2.0  # a heal holder on another host still holding this long after it took the lock: its host looks


def dirty_key(env, service):
    return keys.key(env, "dirty", service)


def deferred_key(env, service):
    return keys.key(env, "deferred", service)


def wake_key(env, service):
    return keys.key(env, "wake", service)


def _me(at):
    return json.dumps({"at": at, "host": socket.gethostname(), "pid": os.getpid()})


def mark_dirty(client, env, service, now):
    try:
        client.kv.put(dirty_key(env, service), _me(now))
        return True
    except consul_failures():
        return False


def clear_dirty(client, env, service):
    try:
        client.kv.delete(dirty_key(env, service))
    except consul_failures():
        pass


def take_dirty(client, env, service):
    """True (and the mark removed) when a mark is set."""
    key = dirty_key(env, service)
    try:
        _, item = client.kv.get(key, consistency="consistent")
        if not item:
            return False
        client.kv.delete(key, cas=item["ModifyIndex"])
        return True
    except consul_failures():
        return False


def wait_dirty(client, env, service, until, clock, chunk=3.0):
    """Block until a dirty mark appears (True) or `until` passes (False): blocking queries on the
    mark's key, in chunks below the client's HTTP timeout."""
    key = dirty_key(env, service)
    index = None
    while True:
        remaining = until - clock()
        if remaining <= 0:
            return False
        try:
            if index is None:
                index, item = client.kv.get(key)
            else:
                index, item = client.kv.get(key, index=index, wait="%dms" % max(1, int(min(remaining, chunk) * 1000)))
        except consul_failures():
            return False
        if item:
            return True


def _record(item):
    try:
        doc = json.loads(item["Value"] or b"{}")
        return float(doc["at"]), str(doc.get("host") or ""), doc.get("pid")
    except (ValueError, TypeError, KeyError):
        return None


# what starting a deferred run raises: Popen's errors (TypeError: a None in argv or env), deferred
# runs off (RuntimeError), a MedicError of the run's own parts
_SPAWN_FAILURES = (OSError, ValueError, TypeError, subprocess.SubprocessError, MedicError, RuntimeError)


def arrange(client, env, service, at, spawn, now):
    """Arrange one deferred run at `at` -> a text for the audit record. `spawn(at)` starts it and
    returns its pid."""
    key = deferred_key(env, service)
    try:
        _, item = client.kv.get(key, consistency="consistent")
    except consul_failures() as e:
        return "no deferred run (cannot read %s: %s)" % (key, str(e).splitlines()[0][:100] if str(e) else e)
    rec = _record(item) if item else None
    if rec is not None:
        r_at, r_host, r_pid = rec
        pending = r_at >= now - OVERDUE and (r_host != socket.gethostname() or r_pid is None
                                              or process_alive(r_pid))
        if pending and r_at <= at + 1.0:
            return "a deferred run at %s is already arranged (%s pid %s)" % (_t(r_at), r_host, r_pid)
    try:
        if not client.kv.put(key, _me(at), cas=item["ModifyIndex"] if item else 0):
            return "a deferred run was arranged by another handler at the same moment"
        pid = spawn(at)
        client.kv.put(key, json.dumps({"at": at, "host": socket.gethostname(), "pid": pid}))
    except consul_failures() + _SPAWN_FAILURES as e:
        return "no deferred run (%s)" % (str(e).splitlines()[0][:150] if str(e) else type(e).__name__)
    return "deferred run at %s (pid %s)" % (_t(at), pid)


def _remote_heal_holder_since(holder):
    """The `since` of a heal holder on another host, else None."""
    if not holder or holder.get("operation") != "heal" or holder.get("host") in (None, "", socket.gethostname()):
        return None
    try:
        return float(holder["since"])
    except (KeyError, TypeError, ValueError):
        return None


def watch_holder(client, env, service, holder, now, spawn):
    """A run found the lock held by a heal run on another host: arrange one deferred run (at most
    one is pending per service) HOLDER_CHECK s after it took the lock (at once when that is past:
    a holder that exited with its lock held, its release refused during a leader election), that
    asks that host to look if the same holder still holds then -> a text for the audit record,
    or None (not a remote heal holder)."""
    since = _remote_heal_holder_since(holder)
    if since is None:
        return None  # ours: its pid was compared at once
    return arrange(client, env, service, max(since + HOLDER_CHECK, now + 0.2), spawn, now)


def ask_holder_host(client, env, service, holder, not_before, now):
    """In a deferred run (`not_before`): the heal holder on another host has held the lock since
    before this run was arranged for it -> write the wake key and say so, else None."""
    since = _remote_heal_holder_since(holder)
    if not_before is None or since is None or since > not_before - HOLDER_CHECK + 0.5:
        return None  # a holder newer than the one this run was arranged for
    try:
        client.kv.put(wake_key(env, service), json.dumps({"at": now, "host": socket.gethostname(), "pid": os.getpid(),
                                                          "why": "holder check", "holder": holder}))
    except consul_failures():
        return None
    return "holder on %s since %.1f s: asked every host to look (wake key); its own frees it if its process is dead" % (
        holder.get("host"), now - since)


def done(client, env, service, at):
    """A deferred run woke: remove its record (only if it is still its own)."""
    key = deferred_key(env, service)
    try:
        _, item = client.kv.get(key, consistency="consistent")
        rec = _record(item) if item else None
        if rec is not None and abs(rec[0] - at) < 0.001:
            client.kv.delete(key, cas=item["ModifyIndex"])
    except consul_failures():
        pass


def consume_wake(client, env, service, modify_index):
    """Delete a wake-up key this run looked at (CAS: a newer wake-up stays)."""
    try:
        client.kv.delete(wake_key(env, service), cas=int(modify_index))
    except consul_failures():
        pass


def _t(t):
    import time
    return time.strftime("%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (t % 1 * 1000)
