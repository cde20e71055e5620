"""Role tags (medic-tag): kept in KV, merged with the label tags on every registration.

Pure helpers (merge, change, retag, parse) and RoleWatch, the thread that follows the
roles prefix with a blocking query.
"""
import json

from . import keys
from .errors import ConsulError
from .reg_checks import build_check
from .reg_model import MAX_TAGS, META_REGISTRAR, check_type, tag_problem


def merge_tags(base, role=None):
    """Label tags minus the role's removals, plus its additions (order kept, no repeats)."""
    role = role or {}
    add, remove = list(role.get("add") or ()), set(role.get("remove") or ())
    out = [t for t in base if t not in remove and t not in add]
    out = list(dict.fromkeys(out))
    return tuple(out + [t for t in dict.fromkeys(add)])


def apply_role_change(role, add=(), remove=()):
    """A role record after `medic-tag --add ... --remove ...` (pure)."""
    role = role or {}
    new_add = [t for t in role.get("add") or () if t not in remove]
    new_remove = [t for t in role.get("remove") or () if t not in add]
    new_add += [t for t in add if t not in new_add]
    new_remove += [t for t in remove if t not in new_remove]
    return {"add": new_add, "remove": new_remove}


def apply_tag_change(tags, add=(), remove=()):
    """An instance's tags after --add/--remove (pure): same set as merge_tags of the new role."""
    out = [t for t in tags if t not in remove]
    return tuple(dict.fromkeys(out + list(add)))


AUTO_TAGGED = ("lan_ipv4", "wan_ipv4", "lan_ipv6", "wan_ipv6")


def retag(service, agent_checks, tags):
    """Re-registration body for an agent service with new `tags`, keeping its checks. Pure.

    `service` is GET /v1/agent/service/<id>, `agent_checks` GET /v1/agent/checks (values).
    Consul 1.8 has no in-place tag edit and does not show check definitions, so:
    a service this registrar built (Meta medic_registrar + check_* attributes) gets its
    check rebuilt from its Meta exactly as the registrar builds it (`replace` True: the
    check's copy of the tags follows); any other service is re-registered WITHOUT a
    check and without replace-existing-checks, which leaves its checks running untouched.
    Returns (body, replace). Raises ValueError for a service it cannot re-register safely.
    """
    if service.get("Kind") or service.get("Proxy") or service.get("Connect"):
        raise ValueError("service %s is a Connect proxy or native service: not re-registered"
                         % service.get("ID"))
    sid, meta = service["ID"], dict(service.get("Meta") or {})
    body = {"ID": sid, "Name": service["Service"], "Address": service.get("Address", ""),
            "Port": service.get("Port", 0), "Tags": list(tags), "Meta": meta,
            "EnableTagOverride": bool(service.get("EnableTagOverride"))}
    if service.get("Weights"):
        body["Weights"] = service["Weights"]
    tagged = {k: v for k, v in (service.get("TaggedAddresses") or {}).items() if k not in AUTO_TAGGED}
    if tagged:
        body["TaggedAddresses"] = tagged
    mine = {(c.get("CheckID"), c.get("Type")) for c in agent_checks if c.get("ServiceID") == sid}
    check = build_check(meta, body["Address"], body["Port"])[0] if meta.get(META_REGISTRAR) else None
    if check and mine == {("service:" + sid, check_type(check))}:
        check.pop("Status", None)  # the running check keeps its status
        body["Check"] = check
        return body, True
    return body, False


def parse_role(raw):
    """KV value -> {"add": [...], "remove": [...]}; raises ValueError when malformed."""
    if len(raw) > 64 * 1024:
        raise ValueError("larger than 64 KiB")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return role_from_value(data)


def role_from_value(data):
    """A decoded role record -> {"add": [...], "remove": [...]}; raises ValueError when malformed."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    out = {}
    for k in ("add", "remove"):
        v = data.get(k) or []
        if not isinstance(v, list) or not all(isinstance(t, str) and t.strip() for t in v):
            raise ValueError("%r must be a list of tags" % k)
        if len(v) > MAX_TAGS:
            raise ValueError("%r holds %d tags: at most %d" % (k, len(v), MAX_TAGS))
        for tag in v:
            if tag_problem(tag):
                raise ValueError(tag_problem(tag))
        out[k] = v
    return out


class RoleWatch:
    """Thread: a blocking query on the roles KV prefix; puts ("roles",) when it changes."""

    def __init__(self, settings, env, queue, stop, wait=30):
        from .lighthttp import Connection, key_path
        self.conn = Connection(settings._replace(timeout=settings.timeout + wait + 5))
        self.prefix, self.queue, self.stop, self.wait = keys.key(env, "roles") + "/", queue, stop, wait
        self.path = key_path("/v1/kv", self.prefix)
        import threading
        self.thread = threading.Thread(target=self._run, name="medic-register-roles", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        index, delay = None, 0.5
        while not self.stop.is_set():
            try:
                params = [("keys", None)]
                if index:
                    params += [("index", str(index)), ("wait", "%ds" % self.wait)]
                resp = self.conn.call("GET", self.path, params, ok=(200, 404))
                new = resp.index
                if index is not None and new and new != index:
                    self.queue.put(("roles",))
                index, delay = max(new or 1, 1), 0.5
            except ConsulError:
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
