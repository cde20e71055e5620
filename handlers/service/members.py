"""Who is a member of a spec's service (docs/hostile-input.md, Membership). PURE.

    owner(spec)             -> Owner(project, service), or None when any instance counts
    owned(meta, own)        -> True when an instance's Consul Meta names that owner
    split(items, own)       -> (owned, foreign): items with a `.meta` mapping

Anyone who can register a service can register it under a spec's service name. By default
an instance counts for medic (heal counts, the load balancer of --from-specs, failover) only
when medic-register put the owner the spec names in its Meta: the compose project and service
(`medic_compose_project`, `medic_compose_service`, from the container's compose labels; a
container's labels cannot forge them). The spec widens it on purpose with
`"membership": "any"`; a swarm spec has no compose owner and counts every instance.
"""
from collections import namedtuple

from ..catalog.reg_model import META_PROJECT, META_SERVICE

Owner = namedtuple("Owner", "project service")
MODES = ("owner", "any")


def owner(spec):
    if spec is None or getattr(spec, "membership", "owner") == "any":
        return None
    sc = spec.scale
    if getattr(sc, "driver", None) != "compose" or not sc.project or not sc.service:
        return None
    return Owner(sc.project, sc.service)


def owned(meta, own):
    if own is None:
        return True
    meta = meta if isinstance(meta, dict) else {}
    return meta.get(META_PROJECT) == own.project and meta.get(META_SERVICE) == own.service


def split(items, own):
    mine, foreign = [], []
    for i in items:
        (mine if owned(getattr(i, "meta", None), own) else foreign).append(i)
    return mine, foreign


def of(meta):
    """'project/service' an instance's Meta claims, for a refusal line."""
    meta = meta if isinstance(meta, dict) else {}
    return "%s/%s" % (str(meta.get(META_PROJECT, "-"))[:64], str(meta.get(META_SERVICE, "-"))[:64])


def counted(spec, instances):
    """The instances that count for `spec` (its owner's, or all with membership any)."""
    own = owner(spec)
    return list(instances) if own is None else split(instances, own)[0]


def describe(own):
    return "any instance" if own is None else "compose project %s service %s" % own
