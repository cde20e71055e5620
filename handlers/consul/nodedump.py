"""Reading Consul's node dump (pure): every node with its services and checks in one answer.

`GET /v1/internal/ui/nodes` is the endpoint Consul's web UI uses (Internal.NodeDump).
It is an internal API, verified on Consul 1.8.7 (it answers on agents with the UI
disabled too). `entries_by_service` turns it into the shape of
`/v1/health/service/<name>`, so the same parser (`health.parse_instances`) judges
both. Used by the batch check (`handlers/check/batch.py`) and heal's triage.
"""
from . import api
from ..core.errors import ConsulError

NODES_PATH = api.INTERNAL_NODES


def entries_by_service(nodes, wanted=None):
    """A node dump -> {service name (lower case): [health entries]}.

    Each entry has the shape of `/v1/health/service/<name>`: Node, Service and the
    Checks that apply to the instance (the node's checks, ServiceID "", and its own).
    `wanted` (a set of lower-case names) limits the work to the services we judge.
    """
    if not isinstance(nodes, list):
        raise ConsulError("%s answer is not a list" % NODES_PATH)
    out = {}
    try:
        for n in nodes:
            services = n.get("Services") or ()
            if not services:
                continue
            node = {"Node": n["Node"], "Address": n.get("Address", "")}
            by_sid = {}
            for c in n.get("Checks") or ():
                sid = c.get("ServiceID") or ""
                if sid in by_sid:
                    by_sid[sid].append(c)
                else:
                    by_sid[sid] = [c]
            node_checks = by_sid.get("", [])
            for s in services:
                key = s["Service"].lower()
                if wanted is not None and key not in wanted:
                    continue
                entry = {"Node": node, "Service": s, "Checks": node_checks + by_sid.get(s["ID"], [])}
                if key in out:
                    out[key].append(entry)
                else:
                    out[key] = [entry]
    except (KeyError, TypeError, AttributeError):
        raise ConsulError("%s answer has an entry of unexpected shape" % NODES_PATH) from None
    return out
