"""Which services a medic-heal run looks at: from a watch payload (never what to do).

    checks payload     the services its checks belong to; a failing node check (a host may be
                       lost) -> every spec; medic's own count check `medic:<service>` (it lives
                       on the `medic` service, so the payload names `medic`) -> <service>;
                       `medic:batch` -> every spec; `medic:reconcile` -> nothing
    service payload    the service it lists ([] names nothing: the service watch passes
                       --service NAME for that reason)
    keyprefix payload  medic/<env>/wake/<service> keys (written by medic-register when a
                       container that was already deregistered finally exits) -> <service>,
                       with the key's ModifyIndex so the run can consume the key with CAS
"""
from collections import namedtuple

from ..core import keys
from ..core.errors import PayloadError

MEDIC_SERVICE = "medic"  # medic-config's SERVICE_ID (not imported: config is an executable)
COUNT_PREFIX = "medic:"

Selection = namedtuple("Selection", "kind names all_ wake")
Selection.__doc__ = """kind: payload type; names: service names (tuple, sorted); all_: look at every
spec; wake: {service: ModifyIndex} of wake-up keys to consume once handled."""


def from_stream(stdin, env, keep=None):
    """Read a watch payload from stdin -> Selection. Raises PayloadError. `keep` (a list): a checks
    payload's parsed checks are appended to it (heal_seen compares them with the last run's)."""
    from ...watches._common import read_stream

    return from_bytes(read_stream(stdin), env, keep)


def from_bytes(data, env, keep=None):
    """Payload bytes -> Selection. Pure. Raises watches.PayloadError."""
    from ...watches import checks, keyprefix, service
    from ...watches._common import decode

    doc = decode(data)
    if keyprefix.looks_like(doc):
        wake = keyprefix.names_under(keyprefix.from_json(doc), keys.wake_prefix(env))
        return Selection("keyprefix", tuple(sorted(wake)), False, wake)
    if not isinstance(doc, list):
        raise PayloadError("$: a watch payload is a list, got %s" % type(doc).__name__)
    if not doc:
        return Selection("empty", (), False, {})
    first = doc[0]
    if isinstance(first, dict) and isinstance(first.get("Service"), dict):
        return Selection("service", service.service_names(service.from_json(doc)), False, {})
    items = checks.from_json(doc)
    if keep is not None:
        keep.extend(items)
    return from_checks(items)


def from_checks(items):
    """Checks -> Selection (see the module docstring)."""
    names, all_ = set(), False
    for c in items:
        count = c.check_id.startswith(COUNT_PREFIX) and MEDIC_SERVICE in (c.service_name, c.service_id)
        if count:
            target = c.check_id[len(COUNT_PREFIX):]
            if target == "batch":
                all_ = all_ or c.status != "passing"
            elif target and target != "reconcile":
                names.add(target)
        elif not c.service_name:
            # a node check (serfHealth, node maintenance) failing: a host may be lost, with every
            # service on it; the payload cannot say which, so every spec is looked at
            all_ = all_ or c.status != "passing"
        else:
            names.add(c.service_name)
    kind = "checks (node check failing)" if all_ else "checks"
    return Selection(kind, tuple(sorted(names)), all_, {})
