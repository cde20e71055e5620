"""The `checks` watch payload: a JSON list of health checks.

    [{"Node": "n1", "CheckID": "service:web-1", "Name": "...", "Status": "critical",
      "Notes": "", "Output": "...", "ServiceID": "web-1", "ServiceName": "www.example.com",
      "ServiceTags": [], "CreateIndex": 10, "ModifyIndex": 42}, ...]

A node-level check has an empty ServiceID/ServiceName.
"""
from collections import namedtuple

from ..handlers.core.errors import PayloadError
from ._common import decode, field, str_list

STATUSES = ("passing", "warning", "critical", "maintenance")

Check = namedtuple("Check", "node check_id name status output service_id service_name service_tags modify_index")


def parse(data):
    """Payload bytes/str -> tuple of Check. Raises PayloadError naming the JSON path."""
    doc = decode(data)
    return from_json(doc)


def from_json(doc):
    if not isinstance(doc, list):
        raise PayloadError("$: a checks watch payload is a list, got %s" % type(doc).__name__)
    out = []
    for i, c in enumerate(doc):
        p = "$[%d]" % i
        status = field(c, "Status", str, p)
        if status not in STATUSES:
            raise PayloadError("%s.Status: unknown status %r" % (p, status[:40]))
        out.append(Check(field(c, "Node", str, p), field(c, "CheckID", str, p), field(c, "Name", str, p, "", False),
                         status, field(c, "Output", str, p, "", False), field(c, "ServiceID", str, p, "", False),
                         field(c, "ServiceName", str, p, "", False), str_list(c, "ServiceTags", p),
                         field(c, "ModifyIndex", int, p, 0, False)))
    return tuple(out)


def service_names(checks):
    """The distinct service names the checks belong to (node checks name none), sorted."""
    return tuple(sorted({c.service_name for c in checks if c.service_name}))
