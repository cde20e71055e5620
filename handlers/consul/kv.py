"""Consul KV, the one way: read a JSON value with its ModifyIndex, and check-and-set.

Every read-modify-write of a medic key goes through `cas_update`: read the value
and its ModifyIndex, compute the new value, write it with `cas=<index>`, and on a
lost race (another run or node wrote in between) read again and recompute, a
bounded number of times. Consistent reads: a key decides what we do.

    cas_update(client, key, fn, attempts=5) -> the value now stored

`fn(current)` gets the decoded JSON (None when the key is absent, an `Unreadable`
when the stored bytes are not JSON) and returns the new value, or `KEEP` to write
nothing. `client` is either a py-consul client from `settings.make_client` or a
`lighthttp.Connection` (the light transport of the hot paths): same interface, same
semantics. The token is scrubbed from every error.
"""
import json
import random
import time

from ..core.errors import ConsulError
from .consul_errors import failures

KEEP = object()  # returned by fn: leave the key as it is


class Unreadable:
    """A stored value that is not JSON (or not UTF-8): callers treat it as unknown."""
    __slots__ = ("raw", "why")

    def __init__(self, raw, why):
        self.raw, self.why = raw, why

    def __repr__(self):
        return "Unreadable(%s)" % self.why


class CasConflict(ConsulError):
    """The key kept changing under us for every attempt."""


def _reason(client, e):
    text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    st = getattr(client, "settings", None)
    if st is not None:
        return st.redact(text)
    token = getattr(client, "token", None)
    return text.replace(token, "<redacted>") if token else text


def _light(client):
    """A lighthttp.Connection (it has no `.kv`): speak the KV API through it."""
    return not hasattr(client, "kv")


def _light_items(conn, key, params):
    """The KV entries the light transport reads at `key` (None on 404), Values base64-decoded, as
    py-consul hands them over."""
    import base64
    from .api import kv
    resp = conn.call("GET", kv(key), params, ok=(200, 404))
    if resp.status == 404:
        return None
    items = resp.json()
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConsulError("KV %s: Consul answered an unexpected shape" % key)
    return [dict(i, Value=base64.b64decode(i["Value"]) if i.get("Value") else None) for i in items]


def _light_get(conn, key):
    items = _light_items(conn, key, [("consistent", None)])
    if items is None:
        return None
    if not items:
        raise ConsulError("KV %s: Consul answered an unexpected shape" % key)
    return items[0]


def _light_put(conn, key, body, cas):
    from .api import kv
    params = [("cas", str(int(cas)))] if cas is not None else None
    resp = conn.call("PUT", kv(key), params, body.encode("utf-8"))
    return resp.body.strip() == b"true"


def decode(raw):
    """Stored bytes -> JSON value, or Unreadable (never raises)."""
    if raw is None:
        return None
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return Unreadable(raw, "not JSON: %s" % str(e)[:80])


def read(client, key):
    """-> (value, ModifyIndex); (None, 0) when absent. Raises ConsulError."""
    try:
        item = _light_get(client, key) if _light(client) else client.kv.get(key, consistency="consistent")[1]
    except failures() as e:
        raise ConsulError("cannot read KV %s: %s" % (key, _reason(client, e))) from None
    if not item:
        return None, 0
    return decode(item.get("Value")), int(item["ModifyIndex"])


def read_prefix(client, prefix):
    """Every key under `prefix` in one consistent recursive read -> {key: (value, ModifyIndex)}
    ({} when none). For a run that would otherwise read one key per service. Raises ConsulError."""
    try:
        if _light(client):
            items = _light_items(client, prefix, [("recurse", None), ("consistent", None)]) or []
        else:
            items = client.kv.get(prefix, recurse=True, consistency="consistent")[1] or []
    except failures() as e:
        raise ConsulError("cannot read KV %s: %s" % (prefix, _reason(client, e))) from None
    if not isinstance(items, list):
        raise ConsulError("KV %s: Consul answered an unexpected shape" % prefix)
    return {i["Key"]: (decode(i.get("Value")), int(i["ModifyIndex"])) for i in items
            if isinstance(i, dict) and "Key" in i and "ModifyIndex" in i}


def put(client, key, value, cas=None):
    """Write JSON `value`; with `cas` only if the key is still at that ModifyIndex (0: absent).
    -> True when written. Raises ConsulError."""
    body = json.dumps(value, sort_keys=True, default=str)
    try:
        return _light_put(client, key, body, cas) if _light(client) else bool(client.kv.put(key, body, cas=cas))
    except failures() as e:
        raise ConsulError("cannot write KV %s: %s" % (key, _reason(client, e))) from None


def cas_update(client, key, fn, attempts=5, pause=(0.005, 0.05), sleep=time.sleep, known=None):
    """Read-modify-write `key` with check-and-set; -> the value now stored.

    Retries a lost race up to `attempts` times with a short jittered pause (so a burst
    of writers to one key all get through); raises CasConflict when every attempt lost.
    `known` (value, ModifyIndex), from a read_prefix, stands for the first read: when it is
    stale the write loses its check-and-set and the next attempt reads the key.
    """
    for attempt in range(max(1, attempts)):
        current, index = known if (attempt == 0 and known is not None) else read(client, key)
        new = fn(current)
        if new is KEEP:
            return current
        if put(client, key, new, cas=index):
            return new
        sleep(random.uniform(*pause))
    raise CasConflict("KV %s: gave up after %d check-and-set conflicts (the key kept changing)" % (key, attempts))
