"""Reading Consul's health answer: which instances of a service are live.

Pure functions over the JSON of `GET /v1/health/service/<name>` (each entry a
Node, a Service and the Checks that apply to it: node checks and the
instance's own). An instance is live when every one of those checks passes,
ignoring medic's own checks (CheckID `medic:...`). Maintenance mode is a
critical check (`_node_maintenance`, `_service_maintenance:<id>`), so a node or
instance in maintenance never counts.
"""
from collections import namedtuple

from ..core.errors import ConsulError

MEDIC_CHECK_PREFIX = "medic:"

Failing = namedtuple("Failing", "check_id name status")
Instance = namedtuple("Instance", "id node address port tags meta passing failing")
Instance.__doc__ = "One registered instance; `failing` lists the checks that are not passing."


def parse_instances(entries, service=None):
    """health/service entries -> [Instance], sorted by (node, id). Raises ConsulError on nonsense."""
    if not isinstance(entries, list):
        raise ConsulError("health answer for %s is not a list" % (service or "service"))
    out = []
    for e in entries:
        try:
            node, svc, checks = e["Node"], e["Service"], e.get("Checks") or []
            failing = []
            for c in checks:
                cid = c.get("CheckID", "")
                if cid.startswith(MEDIC_CHECK_PREFIX):
                    continue
                if c.get("Status") != "passing":
                    failing.append(Failing(cid, c.get("Name", ""), c.get("Status", "unknown")))
            out.append(Instance(svc["ID"], node["Node"], svc.get("Address") or node.get("Address", ""),
                                int(svc.get("Port") or 0), tuple(svc.get("Tags") or ()),
                                dict(svc.get("Meta") or {}), not failing, tuple(failing)))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise ConsulError("health answer for %s has an entry of unexpected shape" % (service or "service")) from None
    out.sort(key=lambda i: (i.node, i.id))
    return out


def passing_count(instances):
    return sum(1 for i in instances if i.passing)
