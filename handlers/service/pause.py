"""Operator intent: "hands off SERVICE" (docs/medic-heal.md, Pause).

    medic/<env>/pause/<service>   {"until": epoch|null, "reason": str, "by": str, "at": epoch}

`medic-heal --pause SERVICE [--for DURATION] [--reason TEXT]` writes it, `--resume`
deletes it. Every handler that would change a service reads it first and holds with
"paused by X: reason (until T)". A pause with `until` expires by itself: past that time
`read` returns None (the record stays until the next --pause/--resume; it says nothing
any more). A record that does not parse is honoured as a pause (the operator meant
something) and names itself: `--resume` clears it.

`client` is a py-consul client (or anything with the same kv.get/put/delete).
"""
import getpass
import json
import socket
import time
from collections import namedtuple

from ..core import keys
from ..core.errors import ConsulError
from ..consul.consul_errors import failures as consul_failures

MAX_REASON = 300

Pause = namedtuple("Pause", "until reason by at")
Pause.__doc__ = "until: epoch seconds or None (until --resume); reason, by: text; at: when it was set."


def pause_key(env, service):
    return keys.key(env, "pause", service)


def parse(raw):
    """KV value -> Pause (a corrupt record is a pause that says so), or None for no value."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        until = doc.get("until")
        until = None if until is None else float(until)
        if until is not None and not until == until:
            raise ValueError("until is NaN")
        return Pause(until, str(doc.get("reason") or "")[:MAX_REASON], str(doc.get("by") or "?")[:100],
                     float(doc.get("at") or 0.0))
    except (ValueError, TypeError, AttributeError):
        return Pause(None, "unreadable pause record (medic-heal --resume clears it)", "?", 0.0)


def active(p, now):
    """The pause if it is in force at `now`, else None."""
    if p is None or (p.until is not None and p.until <= now):
        return None
    return p


def read(client, env, service, now):
    """-> Pause in force, or None. Raises ConsulError when Consul cannot say."""
    key = pause_key(env, service)
    try:
        _, item = client.kv.get(key, consistency="consistent")
    except consul_failures() as e:
        raise ConsulError("cannot read KV %s: %s" % (key, _reason(e))) from None
    return active(parse(item["Value"] if item else None), now)


def set(client, env, service, until=None, reason="", by=None, now=None):  # noqa: A001 (the agreed name)
    """Pause `service` until `until` (None: until --resume) -> the Pause written."""
    now = time.time() if now is None else now
    p = Pause(until, " ".join(str(reason or "").split())[:MAX_REASON], by or default_by(), now)
    key = pause_key(env, service)
    try:
        ok = client.kv.put(key, json.dumps(p._asdict(), sort_keys=True))
    except consul_failures() as e:
        raise ConsulError("cannot write KV %s: %s" % (key, _reason(e))) from None
    if not ok:
        raise ConsulError("Consul refused to write KV %s" % key)
    return p


def clear(client, env, service):
    """Remove the pause -> the Pause that was there (even an expired one), or None."""
    key = pause_key(env, service)
    try:
        _, item = client.kv.get(key, consistency="consistent")
        client.kv.delete(key)
    except consul_failures() as e:
        raise ConsulError("cannot delete KV %s: %s" % (key, _reason(e))) from None
    return parse(item["Value"] if item else None)


def describe(p):
    """'paused by ops@h1: db migration (until 2026-11-27T14:00:00Z)'."""
    until = "until --resume" if p.until is None else "until %s" % iso(p.until)
    return "paused by %s: %s (%s)" % (p.by, p.reason or "no reason given", until)


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def default_by():
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name, no passwd entry, no pwd module
        user = "?"
    return "%s@%s" % (user, socket.gethostname())


def _reason(e):
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
