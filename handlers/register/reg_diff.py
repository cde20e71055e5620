"""Desired registrations vs what the agent holds -> Ops; Docker events -> effects. Pure."""
from ..catalog.reg_model import META_CONTAINER, META_REGISTRAR, Diff, Op, Skip

# signals `docker kill -s` sends without meaning "stop serving" (reload, log rotation, ...)
BENIGN_SIGNALS = frozenset({"0", "1", "10", "12", "17", "18", "23", "28", "HUP", "USR1", "USR2", "CHLD",
                            "CONT", "URG", "WINCH", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGCONT",
                            "SIGURG", "SIGWINCH"})
REGISTER_ACTIONS = frozenset({"start", "unpause", "rename"})
DEREGISTER_ACTIONS = frozenset({"die", "stop", "kill", "destroy", "pause", "oom"})


def owned(service, registrar_id):
    return ((service.get("Meta") or {}).get(META_REGISTRAR) == registrar_id)


def _differences(reg, svc, agent_checks):
    why = []
    if svc.get("Service") != reg.name:
        why.append("name %s -> %s" % (svc.get("Service"), reg.name))
    if svc.get("Address") != reg.address or svc.get("Port") != reg.port:
        why.append("address %s:%s -> %s:%s" % (svc.get("Address"), svc.get("Port"), reg.address, reg.port))
    if sorted(set(svc.get("Tags") or ())) != sorted(set(reg.tags)):
        why.append("tags %s -> %s" % (",".join(svc.get("Tags") or ()), ",".join(reg.tags)))
    if (svc.get("Meta") or {}) != dict(reg.meta):
        cur = svc.get("Meta") or {}
        changed = sorted(k for k in set(cur) | set(dict(reg.meta)) if cur.get(k) != dict(reg.meta).get(k))
        why.append("meta %s" % ",".join(changed))
    want = {("service:" + reg.id, reg.check_type)} if reg.check else set()
    have = {(c.get("CheckID"), c.get("Type")) for c in agent_checks}
    if want != have:
        why.append("checks %s -> %s" % (",".join(sorted(t or "?" for _, t in have)) or "none",
                                        reg.check_type or "none"))
    return why


def diff(want, services, checks, registrar_id, scope=None):
    """Desired {id: Registration} vs the agent's services and checks -> Diff(ops, unchanged). Pure.

    `services` is GET /v1/agent/services, `checks` GET /v1/agent/checks. The agent does not
    show check definitions (Consul 1.8: `Definition` is empty), so a check is compared by
    ID and type; its target and timings follow from Address, Port and the check_* Meta,
    which are compared. `scope` (a set of container IDs) limits the diff to those
    containers' services; None means the whole fleet (ghost removal included).
    Only services owned by `registrar_id` are ever written: a wanted ID the agent holds for
    someone else (another registrar, a config file, medic itself) is refused (`Diff.refused`).
    """
    by_service = {}
    for c in (checks or {}).values():
        if c.get("ServiceID"):
            by_service.setdefault(c["ServiceID"], []).append(c)
    ops, unchanged, refused = [], 0, []
    for sid in sorted(want):
        reg, svc = want[sid], services.get(sid)
        if svc is not None and not owned(svc, registrar_id):  # whatever the scope: audited once
            other = (svc.get("Meta") or {}).get(META_REGISTRAR)
            refused.append(Skip(reg.container_id[:12], sid, "service ID %s is already registered %s: not ours, "
                                "never overwritten" % (sid, "by registrar %r" % other if other
                                                       else "outside medic-register (by hand or config)"),
                                "refuse"))
            continue
        if scope is not None and reg.container_id not in scope:
            continue
        if svc is None:
            ops.append(Op("register", sid, reg, "new: container %s" % reg.container_id[:12]))
            continue
        why = _differences(reg, svc, by_service.get(sid, ()))
        if why:
            ops.append(Op("register", sid, reg, "; ".join(why)))
        else:
            unchanged += 1
    for sid in sorted(services):
        svc = services[sid]
        if sid in want or not owned(svc, registrar_id):
            continue
        cid = (svc.get("Meta") or {}).get(META_CONTAINER, "")
        if scope is not None and cid not in scope:
            continue
        ops.append(Op("deregister", sid, None, "container %s not serving" % cid[:12]))
    return Diff(ops, unchanged, tuple(refused))


def event_exit_code(event):
    """The exit code of a `die` event (Actor.Attributes.exitCode), or None."""
    raw = str(((event.get("Actor") or {}).get("Attributes") or {}).get("exitCode", ""))
    return int(raw) if raw.lstrip("-").isdigit() else None


def event_action(event):
    return str(event.get("Action") or event.get("status") or "").split(":")[0].strip()


def event_effect(event):
    """A Docker event -> ("register" | "deregister" | None, container id). Pure."""
    if event.get("Type", "container") != "container":
        return None, None
    action = event_action(event)
    actor = event.get("Actor") or {}
    cid = actor.get("ID") or event.get("id")
    if action in REGISTER_ACTIONS:
        return "register", cid
    if action == "kill":
        sig = str((actor.get("Attributes") or {}).get("signal", "")).upper()
        return (None if sig in BENIGN_SIGNALS else "deregister"), cid
    if action in DEREGISTER_ACTIONS:
        return "deregister", cid
    return None, cid


def matches(labels, filters):
    """Container labels against --filter KEY or KEY=VALUE (all must match). Pure."""
    labels = labels or {}
    for f in filters:
        k, eq, v = f.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True
