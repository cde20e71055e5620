"""Changing an instance's role tags in place: medic-tag's core, also used by medic-failover.

The role is recorded in Consul KV (keys.key(env, "roles", SERVICE_ID), {"add": [...],
"remove": [...]}, compare-and-set through kv.cas_update) so medic-register merges it with
the label tags on every registration and resync; then the instance is re-registered on the
agent with the new tags, keeping its checks. Returns an Outcome; never exits.
"""
import json

from ..core import audit as audit_mod, runtime
from ..core.status import Outcome, Status

CAS_ATTEMPTS = 5


def run(s, env, service_id, add, remove, audit_log=None):
    """Apply the role change; returns an Outcome. The agent through one lighthttp connection,
    the role through the access layer's check-and-set (kv.cas_update)."""

    from ..core import keys
    from ..consul import kv, settings
    from . import reg_roles
    from ..core.errors import ConsulError, UsageError
    from ..consul import api
    from ..consul.lighthttp import Connection

    both = sorted(set(add) & set(remove))
    if both:
        raise UsageError("tag %s is both added and removed" % ",".join(both))
    try:
        key = keys.key(env, "roles", service_id)
    except ValueError:
        raise UsageError("service ID %r: must be non-empty and contain no '/'" % service_id) from None
    client = settings.make_client(s)
    with Connection(s) as c:
        resp = c.call("GET", api.agent_service(service_id), ok=(200, 404))
        service = resp.json() if resp.status == 200 else None
        if not add and not remove:
            role, _ = _role(kv.read(client, key)[0])
            tags = ",".join(service.get("Tags") or ()) if service else "(not registered on this agent)"
            return Outcome(Status.OK, runtime.status_line(Status.OK, "%s tags %s; role %s" % (
                service_id, tags, json.dumps(role or {}, sort_keys=True))))
        body = replace = None
        if service is not None:
            new_tags = reg_roles.apply_tag_change(service.get("Tags") or (), add, remove)
            try:
                body, replace = reg_roles.retag(service, c.get_json(api.AGENT_CHECKS)[1].values(), new_tags)
            except ValueError as e:
                raise UsageError(str(e)) from None
        # 1. the role, compare-and-set: the registrar's source of truth survives restarts
        notes = [""]

        def change(current):
            role, notes[0] = _role(current)
            return reg_roles.apply_role_change(role, add, remove)
        new_role = kv.cas_update(client, key, change, attempts=CAS_ATTEMPTS)
        note = notes[0]
        rec = {"kind": "tag", "action": "retag", "service_id": service_id, "add": list(add),
               "remove": list(remove), "role": new_role, "key": key}
        # 2. the instance, re-registered with the same checks
        if service is None:
            audit_mod.write_or_skip(audit_log, dict(rec, action="record", reason="not registered on this agent: role recorded only"))
            return Outcome(Status.WARNING, runtime.status_line(Status.WARNING, (
                "%s is not registered on the agent at %s: role recorded at %s, applied when the registrar "
                "registers it") % (service_id, s.addr, key)))
        if sorted(set(body["Tags"])) == sorted(set(service.get("Tags") or ())):
            audit_mod.write_or_skip(audit_log, dict(rec, tags=body["Tags"], reason="tags already as asked: agent not written"))
            return Outcome(Status.OK, runtime.status_line(Status.OK, "%s tags %s unchanged; role recorded at %s%s"
                                                          % (service_id, ",".join(body["Tags"]), key, note)))
        params = [("replace-existing-checks", "true")] if replace else None
        c.call("PUT", api.AGENT_REGISTER, params, body)
        after = c.get_json(api.agent_service(service_id))[1]
        if sorted(set(after.get("Tags") or ())) != sorted(set(body["Tags"])):
            raise ConsulError("agent shows tags %s after re-registration, not %s"
                              % (after.get("Tags"), body["Tags"]))
        how = "check rebuilt from its Meta" if replace else "checks left running untouched"
        audit_mod.write_or_skip(audit_log, dict(rec, tags=body["Tags"], reason="re-registered with new tags (%s)" % how))
        return Outcome(Status.OK, runtime.status_line(Status.OK, "%s tags %s (%s); role recorded at %s%s" % (
            service_id, ",".join(body["Tags"]), how, key, note)))


def _role(value):
    """A KV value as kv.read decodes it -> (role or None, note for the output)."""
    from ..consul import kv
    from . import reg_roles
    if value is None:
        return None, ""
    if isinstance(value, kv.Unreadable):
        return None, " (replaced a malformed record: %s)" % value.why
    try:
        return reg_roles.role_from_value(value), ""
    except ValueError as e:
        return None, " (replaced a malformed record: %s)" % e
