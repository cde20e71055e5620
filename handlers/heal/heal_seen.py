"""Which services changed: one cluster-wide `checks` watch instead of a watch per service.

medic-config renders ONE `checks` watch (every check, any state) for medic-heal, run as
`medic-heal --changes`. Its payload is every check in the cluster; this module compares it
with what the previous run of this node saw and names only the services that changed AND
concern this node:

    a service's instance checks changed (a status, an instance gone or added) and it has,
    or had, an instance on this node, or has none left anywhere        -> that service
    a node check (serfHealth, node maintenance) of another node changed -> the services with
                                                                          instances on that node
    this node's count check medic:<service> changed                     -> <service>, when it has
                                                                          an instance here or none
                                                                          anywhere

Check output is not compared (only node, service ID, check ID, status). A service that
lives only on other nodes is their business: each node reacts to its own engine, plus host
loss (docs/topology.md, docs/scale.md). The reconcile check stays the safety net.

State: `seen-<env>.json` in medic's state directory (MEDIC_STATE_DIR, else `state/` beside the
audit log): {"node": this agent's node name, "services": {name: [nodes, digest]},
"nodes": {node: status}, "counts": {service: status}}, written atomically. No state (first
run after the agent started, or the file lost): every spec is triaged (constant Consul
requests, handlers/heal/triage.py). A service whose run could not decide is left out of the
saved state, so the next payload names it again.
"""
import hashlib
import json
import os
import tempfile

COUNT_PREFIX = "medic:"
MEDIC_SERVICE = "medic"
STATE_VERSION = 1


def state_dir(audit_path, environ):
    """medic's own state directory: MEDIC_STATE_DIR, else `state/` beside the audit log."""
    return environ.get("MEDIC_STATE_DIR") or os.path.join(os.path.dirname(audit_path), "state")


def _worst(a, b):
    order = {"passing": 0, "warning": 1, "maintenance": 2, "critical": 3}
    return a if order.get(a, 3) >= order.get(b, 3) else b


def summarise(checks, node):
    """Checks (watches.checks.Check) -> the state this module keeps. Pure."""
    services, nodes, counts = {}, {}, {}
    for c in checks:
        if c.service_name == MEDIC_SERVICE and c.check_id.startswith(COUNT_PREFIX):
            target = c.check_id[len(COUNT_PREFIX):]
            if c.node == node and target not in ("batch", "reconcile"):
                counts[target] = c.status
            continue
        if not c.service_name:
            nodes[c.node] = _worst(c.status, nodes.get(c.node, "passing"))
            continue
        services.setdefault(c.service_name, []).append((c.node, c.service_id, c.check_id, c.status))
    out = {}
    for name, items in services.items():
        items.sort()
        digest = hashlib.blake2b(repr(items).encode(), digest_size=8).hexdigest()
        out[name] = [sorted({i[0] for i in items}), digest]
    return {"v": STATE_VERSION, "node": node, "services": out, "nodes": nodes, "counts": counts}


def changed(prev, cur):
    """(names [sorted], why {name: reason}) of the services that changed and concern this node. Pure.
    `prev` None: nothing is known -> (None, {}): the caller looks at every spec."""
    if not prev or prev.get("v") != STATE_VERSION or prev.get("node") != cur.get("node"):
        return None, {}
    node = cur.get("node")
    ps, cs = prev.get("services") or {}, cur["services"]
    pn, cn = prev.get("nodes") or {}, cur["nodes"]
    pc, cc = prev.get("counts") or {}, cur["counts"]
    why = {}

    def nodes_of(name):
        return set((ps.get(name) or [[]])[0]) | set((cs.get(name) or [[]])[0])

    def here_or_nowhere(name):
        on = nodes_of(name)
        return node is None or node in on or not (cs.get(name) or [[]])[0]

    for name in set(ps) | set(cs):
        if (ps.get(name) or [None, None])[1] != (cs.get(name) or [None, None])[1] and here_or_nowhere(name):
            why[name] = "its checks changed"
    lost = {n for n in set(pn) | set(cn) if pn.get(n) != cn.get(n) and n != node}
    if lost:
        for name, (on, _) in list(cs.items()) + list(ps.items()):
            if lost & set(on) and name not in why:
                why[name] = "node %s changed state" % sorted(lost & set(on))[0]
    for name in set(pc) | set(cc):
        if pc.get(name) != cc.get(name) and name not in why and here_or_nowhere(name):
            why[name] = "count check %s" % (cc.get(name) or "gone")
    return sorted(why), why


def _path(directory, env):
    return os.path.join(directory, "seen-%s.json" % (env or "default"))


def load(directory, env):
    """The last saved state, or None (never saved, unreadable)."""
    try:
        with open(_path(directory, env), encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def save(directory, env, state, forget=()):
    """Write the state atomically, without the services in `forget` (their run could not decide).
    -> True, or False when it cannot be written (the next run then triages every spec)."""
    if forget:
        state = dict(state, services={k: v for k, v in state["services"].items() if k not in forget},
                     counts={k: v for k, v in state["counts"].items() if k not in forget})
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".seen.", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, separators=(",", ":"), sort_keys=True)
        os.replace(tmp, _path(directory, env))
        return True
    except OSError:
        return False
