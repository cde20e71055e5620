"""Consul ACLs: the least-privilege policy per role, and the permission probe.

Consul 1.8 with `default_policy = "deny"` does not refuse a read the token may not
make: it FILTERS. `GET /v1/health/service/web` answers `200 []` to a token without
`service:read` on web, exactly as it would for a service with no instance (no header
says so; `X-Consul-Results-Filtered-By-ACLs` came in a later Consul). Read as data,
that empty answer is "0 instances": a CRITICAL check, alerts lost, healthy
containers replaced. So every answer that ACLs may have shortened is checked:

  POST /v1/internal/acl/authorize   [{"Resource": "service", "Segment": "web", "Access": "read"}, ...]
      -> [{..., "Allow": true|false}]   needs no privilege (Consul >= 1.7, the web UI's endpoint);
      401 "ACL support disabled"  -> ACLs are off: nothing is filtered;
      403 "ACL not found"         -> the token itself is unknown;
      404/405 (older Consul)      -> fallback: `GET /v1/agent/health/service/name/<svc>` answers
                                     403 without service:read; `GET /v1/catalog/nodes` is never
                                     empty for a token with node read (the agent's own node is in it).

A denied permission raises `AclDenied` (a ConsulError: one line, exit 3, nothing
changed). Filtering only ever HIDES instances, so an answer at or above the declared
count needs no probe: medic-check asks only when it would say CRITICAL (no extra
request on the OK path); medic-heal and medic-status ask on every observation.

Node read is asked for the empty prefix (`node_prefix ""`): the question "may this
token read every node?", since an instance on a node the token cannot read vanishes
just like one of a service it cannot read.

`policy(role, ...)` renders the HCL rules (Consul 1.8 syntax) for `medic-config
--acl-policy ROLE[@NODE]`.
"""
from .errors import ConsulError, UsageError

AUTHORIZE_PATH = "/v1/internal/acl/authorize"
ROLES = ("monitor", "registrar", "reader")
MEDIC_SERVICE = "medic"


class AclDenied(ConsulError):
    """The token may not read (or write) what the answer depends on."""
    kind = "acl"


# -- permissions (pure) ----------------------------------------------------------------
def service_read(service):
    """What an answer about `service`'s instances depends on."""
    return [("service", service, "read"), ("node", "", "read")]


def notify_needs(env):
    """medic-notify: medic's own checks (service `medic` on any node) and its state keys."""
    return [("service", MEDIC_SERVICE, "read"), ("node", "", "read"),
            ("key", "%s/notify/" % kv_prefix(env), "write")]


def kv_prefix(env):
    return "medic/%s" % (env or "default")


def describe(perm):
    resource, segment, access = perm
    if resource == "node" and segment == "":
        return "node:%s on every node" % access
    return "%s:%s on %s" % (resource, access, segment or "*")


# -- the probe -------------------------------------------------------------------------
def denied(conn, perms):
    """[(resource, segment, access)] -> the ones the connection's token is denied. One request."""
    body = [{"Resource": r, "Segment": s, "Access": a} for r, s, a in perms]
    resp = conn.request("POST", AUTHORIZE_PATH, body=body)
    if resp.status == 401 and "disabled" in _first_line(resp).lower():
        return []  # "ACL support disabled": nothing is ever filtered
    if resp.status == 403:
        raise AclDenied("Consul rejects the token (%s): %s" % (_source(conn), _first_line(resp)))
    if resp.status in (404, 405):
        return _denied_fallback(conn, perms)
    if resp.status != 200:
        raise ConsulError("Consul POST %s: HTTP %d" % (AUTHORIZE_PATH, resp.status))
    answers = resp.json()
    if not isinstance(answers, list) or len(answers) != len(perms):
        raise ConsulError("Consul POST %s: unexpected answer" % AUTHORIZE_PATH)
    return [p for p, a in zip(perms, answers) if not (isinstance(a, dict) and a.get("Allow") is True)]


def _denied_fallback(conn, perms):
    """Consul without the authorize endpoint: probe reads that are refused (403) or never empty."""
    from .lighthttp import api_path

    out = []
    for perm in perms:
        resource, segment, access = perm
        if resource == "service" and access == "read":
            resp = conn.request("GET", api_path("/v1/agent/health/service/name", segment), [("format", "text")])
            if resp.status == 403:
                out.append(perm)
        elif resource == "node" and access == "read" and segment == "":
            resp = conn.request("GET", "/v1/catalog/nodes", [("stale", None)])
            if resp.status == 403 or (resp.status == 200 and not resp.json()):
                out.append(perm)
        # anything else (KV, sessions): a refused write or read answers 403 by itself
    return out


WHY = "Consul hides what a token may not read instead of refusing it, so the answer cannot be trusted"


def require(conn, perms, why=WHY):
    """Raise AclDenied (one line) when the token lacks any of `perms`."""
    missing = denied(conn, perms)
    if missing:
        raise AclDenied("token (%s) lacks %s: %s (rules: medic-config --acl-policy ROLE)"
                        % (_source(conn), ", ".join(describe(p) for p in missing), why))


def require_settings(st, perms, why=WHY):
    """`require` over a fresh light connection built from ConsulSettings. Only a denial raises:
    an unreachable Consul is left to the caller's own reads, which say so (and audit it)."""
    from .lighthttp import Connection

    try:
        with Connection(st) as conn:
            require(conn, perms, why)
    except AclDenied:
        raise
    except ConsulError:
        pass


def _source(conn):
    st = conn.settings
    return "from %s" % st.token_source if st.token else "none given: anonymous"


def _first_line(resp):
    text = resp.body[:200].decode("utf-8", "replace").strip().splitlines()
    return text[0] if text else "HTTP %d" % resp.status


# -- policies (pure) ---------------------------------------------------------------------
def _rule(kind, name, access, note=None):
    tail = "  # " + note if note else ""
    return '%s "%s" { policy = "%s" }%s' % (kind, name, access, tail)


def policy(role, services, envs, node):
    """HCL rules (Consul 1.8) for `role`, the spec services and the environments' KV prefixes."""
    if role not in ROLES:
        raise UsageError("--acl-policy %r: roles are %s" % (role, ", ".join(ROLES)))
    services = sorted(set(services))
    envs = sorted(set(e or "default" for e in envs)) or ["default"]
    head = ["# consul-medic ACL policy, role %r (Consul 1.8 HCL), from medic-config --acl-policy" % role,
            "# services: %s; KV: %s" % (", ".join(services) or "(none)",
                                          ", ".join("medic/%s/" % e for e in envs)),
            "# Regenerate and `consul acl policy update` after adding a spec."]
    rules = []
    if role == "monitor":
        head.append("# medic-check, medic-heal, medic-notify, medic-status on the monitoring node %s" % node)
        rules.append(_rule("node_prefix", "", "read", "instances on every node; a lost host's node check"))
        rules.append(_rule("service", MEDIC_SERVICE, "write",
                           "medic's own checks medic:<service>: read by medic-notify, TTL updates in batch mode"))
        rules += [_rule("service", s, "read") for s in services]
        rules.append(_rule("session", node, "write", "medic-heal's lock sessions on this node"))
        for e in envs:
            rules.append(_rule("key_prefix", "medic/%s/" % e, "read", "image, roles, and the kinds below"))
            for kind, what in (("lock", "service locks"), ("history", "heal history"),
                               ("circuit", "open-circuit markers"), ("notify", "last notified states"),
                               ("pause", "medic-heal --pause/--resume"), ("dirty", "look-again marks"),
                               ("deferred", "deferred heal runs"), ("wake", "wake-up keys, deleted once seen")):
                rules.append(_rule("key_prefix", "medic/%s/%s/" % (e, kind), "write", what))
    elif role == "registrar":
        head.append("# medic-register next to the Docker engine on node %s" % node)
        rules.append(_rule("node", node, "read", "its own node"))
        rules += [_rule("service", s, "write", "register/deregister its containers") for s in services]
        for e in envs:
            rules.append(_rule("key_prefix", "medic/%s/roles/" % e, "read", "dynamic role tags (medic-tag)"))
            rules.append(_rule("key_prefix", "medic/%s/wake/" % e, "write", "wake-up keys for medic-heal"))
    else:  # reader
        head.append("# medic-status (read-only), any node")
        rules.append(_rule("node_prefix", "", "read"))
        rules.append(_rule("service", MEDIC_SERVICE, "read"))
        rules += [_rule("service", s, "read") for s in services]
        rules += [_rule("key_prefix", "medic/%s/" % e, "read") for e in envs]
    return "\n".join(head) + "\n" + "\n".join(rules) + "\n"


def parse_role(raw, default_node):
    """'monitor' or 'monitor@node1' -> (role, node)."""
    role, _, node = (raw or "").partition("@")
    role, node = role.strip().lower(), (node.strip() or default_node)
    if role not in ROLES:
        raise UsageError("--acl-policy %r: roles are %s (optionally ROLE@NODE)" % (raw, ", ".join(ROLES)))
    if not node or '"' in node or any(c.isspace() for c in node):
        raise UsageError("--acl-policy %r: bad node name" % raw)
    return role, node


def policy_outcome(raw, specs, env):
    """medic-config --acl-policy: the rules for the loaded specs, printed as they are (pipe into a file)."""
    import socket

    from .status import Outcome, Status

    role, node = parse_role(raw, socket.gethostname())
    envs = [env] if env else sorted({e for s in specs.values() for e in s.environments} | {"default"})
    return Outcome(Status.OK, policy(role, [s.service for s in specs.values()], envs, node))


def recheck(st, services, connection_factory=None):
    """Batch mode: {name: service} whose count came out short -> {name: UNKNOWN Outcome} for
    those whose answer ACLs may have filtered. One request for all of them."""
    from .lighthttp import Connection
    from .runtime import status_line
    from .status import Outcome, Status

    perms = [("node", "", "read")] + [("service", s, "read") for s in sorted(set(services.values()))]
    try:
        with (connection_factory or Connection)(st) as conn:
            missing = set(denied(conn, perms))
            source = _source(conn)
    except ConsulError as e:
        line = status_line(Status.UNKNOWN, "%s: %s" % (e.kind, e))
        return {name: Outcome(Status.UNKNOWN, line) for name in services}
    out = {}
    for name, service in services.items():
        lacks = [p for p in (("service", service, "read"), ("node", "", "read")) if p in missing]
        if lacks:
            out[name] = Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, "acl: token (%s) lacks %s: %s" % (
                source, ", ".join(describe(p) for p in lacks), WHY)))
    return out
