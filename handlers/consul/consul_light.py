"""The KV and session calls medic-heal makes, py-consul's way, over the light transport.

medic-heal's lock, history, pause, marks and deferred runs speak py-consul's interface
(`client.kv.get/put/delete`, `client.session.create/renew/destroy`). Importing py-consul
(and requests) costs ~140 ms of CPU per run, on the path from a lost container to its
restart and on every run that only finds the lock held. This client answers the same
calls, with the same return values, through `lighthttp` (one keep-alive connection, the
same settings: address, TLS, token, auth, timeout). Errors are ConsulError (the token
never in them); callers catch consul_errors.failures() (either client's).

    client = consul_light.Client(settings)
    index, item = client.kv.get(key, consistency="consistent")   # item["Value"] is bytes or None
"""
import base64
import json

from . import api, lighthttp
from ..core.errors import ConsulError


def _kv_path(key):
    return api.kv(str(key))


def _true(resp):
    return resp.body.strip() == b"true"


def _body(value):
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


class _KV:
    def __init__(self, conn):
        self.conn = conn

    def get(self, key, index=None, wait=None, consistency=None, recurse=False, **_):
        params = []
        if index is not None:
            params.append(("index", str(index)))
        if wait:
            params.append(("wait", str(wait)))
        if consistency in ("consistent", "stale"):
            params.append((consistency, None))
        if recurse:
            params.append(("recurse", None))
        resp = self.conn.call("GET", _kv_path(key), params or None, ok=(200, 404))
        idx = resp.headers.get("x-consul-index")
        if resp.status == 404:
            return idx, None
        items = resp.json()
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise ConsulError("KV %s: Consul answered an unexpected shape" % key)
        for item in items:
            item["Value"] = base64.b64decode(item["Value"]) if item.get("Value") else None
        return idx, (items if recurse else items[0])

    def put(self, key, value, cas=None, flags=None, acquire=None, release=None, **_):
        params = [(k, str(v)) for k, v in (("cas", cas), ("flags", flags), ("acquire", acquire),
                                            ("release", release)) if v is not None]
        return _true(self.conn.call("PUT", _kv_path(key), params or None, _body(value)))

    def delete(self, key, recurse=None, cas=None, **_):
        params = [("cas", str(int(cas)))] if cas is not None else []
        if recurse:
            params.append(("recurse", None))
        return _true(self.conn.call("DELETE", _kv_path(key), params or None))


class _Session:
    def __init__(self, conn):
        self.conn = conn

    def create(self, name=None, node=None, checks=None, lock_delay=15, behavior="release", ttl=None, **_):
        body = {"LockDelay": "%ds" % int(lock_delay), "Behavior": behavior}
        if name:
            body["Name"] = name
        if node:
            body["Node"] = node
        if checks is not None:
            body["Checks"] = list(checks)
        if ttl:
            body["TTL"] = "%ds" % int(ttl)
        doc = self.conn.call("PUT", api.session("create"), None, json.dumps(body).encode()).json()
        if not isinstance(doc, dict) or not doc.get("ID"):
            raise ConsulError("session create: Consul answered an unexpected shape")
        return doc["ID"]

    def renew(self, session_id, **_):
        resp = self.conn.call("PUT", api.session("renew", session_id), ok=(200, 404))
        if resp.status == 404:
            return None
        doc = resp.json()
        return doc[0] if isinstance(doc, list) and doc else None

    def destroy(self, session_id, **_):
        return _true(self.conn.call("PUT", api.session("destroy", session_id)))


class Client:
    """kv and session, py-consul's calls, over one lighthttp connection. Not thread-safe: the
    lock's renewals use a Client of their own."""

    def __init__(self, settings):
        self.settings = settings
        self.token = settings.token
        self.conn = lighthttp.Connection(settings)
        self.kv = _KV(self.conn)
        self.session = _Session(self.conn)

    def close(self):
        self.conn.close()
