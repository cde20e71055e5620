"""Consul's HTTP API as medic uses it: every path is built here, and quoted one way.

No module outside handlers/consul/ writes a `/v1/...` path (tests/system/test_architecture.py checks).
A caller names the endpoint and passes its query parameters:

    conn.get_json(api.health_service(name), [("stale", None)])
    api.kv_read(conn, key, consistent=True)   -> bytes | None   (absent: None)
    api.kv_list(conn, prefix)                 -> [(key, bytes | None)]
    api.kv_put(conn, key, data, cas=None)     -> bool            (False: a lost check-and-set)

Quoting: `segment()` %-encodes everything but RFC 3986's unreserved characters, so a service
ID, a node name or a key part can never end the path, add a query or start a new line; a KV
key keeps its `/` separators and quotes each part. Consul decodes the path before routing.

Reads fail closed: any answer but 200 (and 404 where "absent" means something) is a
ConsulError naming the call, never a value: a decision or a displayed state is never taken
from a refused or broken read.
"""
from .lighthttp import quote as segment

CATALOG_SERVICES = "/v1/catalog/services"
AGENT_SERVICES = "/v1/agent/services"
AGENT_CHECKS = "/v1/agent/checks"
AGENT_SELF = "/v1/agent/self"
AGENT_REGISTER = "/v1/agent/service/register"
NODE_MAINTENANCE = "/v1/agent/maintenance"
# An internal API (the web UI's node dump): used only with the fallback handlers/consul/nodedump.py names.
INTERNAL_NODES = "/v1/internal/ui/nodes"
# Internal too (Consul >= 1.7): the permission probe of handlers/consul/acl.py, which reads 404 as "no probe".
INTERNAL_AUTHORIZE = "/v1/internal/acl/authorize"


def health_service(service):
    return "/v1/health/service/" + segment(service)


def health_node(node):
    return "/v1/health/node/" + segment(node)


def health_state(state="any"):
    return "/v1/health/state/" + segment(state)


def agent_service(service_id):
    return "/v1/agent/service/" + segment(service_id)


def agent_deregister(service_id):
    return "/v1/agent/service/deregister/" + segment(service_id)


def check_update(check_id):
    return "/v1/agent/check/update/" + segment(check_id)


def service_maintenance(service_id):
    return "/v1/agent/service/maintenance/" + segment(service_id)


def kv(key):
    """The path of a KV key (or prefix: a trailing `/` stays)."""
    return "/v1/kv/" + "/".join(segment(part) for part in key.split("/"))


def session(op, session_id=None):
    """`create`, `renew`/`destroy` (with an ID), `info`."""
    return "/v1/session/%s%s" % (op, "/" + segment(session_id) if session_id else "")


def next_index(previous, answered):
    """The index of a blocking query's next call, by Consul's rules: one that went backwards (an
    agent restarted, a snapshot restored) starts again from 0; one below 1 counts as 1; no index in
    the answer keeps the previous one."""
    if answered is None:
        return previous
    answered = int(answered)  # py-consul hands the X-Consul-Index header over as text
    if previous is not None and answered < int(previous):
        return 0
    return max(answered, 1)


def _fail(method, path, resp, conn):
    from ..core.errors import ConsulError
    text = resp.body[:200].decode("utf-8", "replace").strip().splitlines()
    detail = conn.settings.redact(text[0] if text else "")
    what = {403: "permission denied (ACL)", 429: "rate limited", 500: "server error"}.get(
        resp.status, "HTTP %d" % resp.status)
    raise ConsulError("Consul %s %s: %s%s" % (method, path, what, ": " + detail if detail else ""))


def kv_read(conn, key, consistent=False):
    """The raw value of one key; None when it is absent (404) or empty."""
    import base64
    params = [("consistent", None)] if consistent else None
    path = kv(key)
    resp = conn.request("GET", path, params)
    if resp.status == 404:
        return None
    if resp.status != 200:
        _fail("GET", path, resp, conn)
    items = resp.json() or ()
    value = items[0].get("Value") if items else None
    return base64.b64decode(value) if value else None


def kv_list(conn, prefix, consistent=False):
    """[(key, raw value or None)] of every key under `prefix` (one recursive read); [] when none."""
    import base64
    params = [("recurse", None)] + ([("consistent", None)] if consistent else [])
    path = kv(prefix)
    resp = conn.request("GET", path, params)
    if resp.status == 404:
        return []
    if resp.status != 200:
        _fail("GET", path, resp, conn)
    return [(e.get("Key", ""), base64.b64decode(e["Value"]) if e.get("Value") else None)
            for e in resp.json() or ()]


def kv_put(conn, key, data, cas=None):
    """Write `data` (bytes); with `cas`, only over that ModifyIndex. -> Consul's true/false."""
    params = [("cas", str(int(cas)))] if cas is not None else None
    resp = conn.call("PUT", kv(key), params, data)
    return resp.body.strip() == b"true"


def kv_delete(conn, key, cas=None, recurse=False):
    params = ([("cas", str(int(cas)))] if cas is not None else []) + ([("recurse", None)] if recurse else [])
    resp = conn.call("DELETE", kv(key), params or None, ok=(200, 404))
    return resp.status == 404 or resp.body.strip() in (b"true", b"")
