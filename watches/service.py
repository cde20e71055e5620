"""The `service` watch payload: the health/service list for ONE service.

    [{"Node": {"Node": "n1", "Address": "127.0.0.1", ...},
      "Service": {"ID": "web-1", "Service": "www.example.com", "Tags": [], "Address": "",
                  "Port": 32768, "Meta": {...}},
      "Checks": [{...check as in watches.checks...}]}, ...]

An empty list is valid: the service has no instances left.
"""
from collections import namedtuple

from ..handlers.core.errors import PayloadError
from ._common import decode, field, str_list, str_map
from .checks import from_json as checks_from_json

Entry = namedtuple("Entry", "node node_address service_id service_name address port tags meta checks")


def parse(data):
    """Payload bytes/str -> tuple of Entry. Raises PayloadError naming the JSON path."""
    return from_json(decode(data))


def from_json(doc):
    if not isinstance(doc, list):
        raise PayloadError("$: a service watch payload is a list, got %s" % type(doc).__name__)
    out = []
    for i, e in enumerate(doc):
        p = "$[%d]" % i
        node = field(e, "Node", dict, p)
        svc = field(e, "Service", dict, p)
        checks_raw = field(e, "Checks", list, p, [], False)
        try:
            checks = checks_from_json(checks_raw)
        except PayloadError as err:
            raise PayloadError(str(err).replace("$", p + ".Checks", 1)) from None
        port = field(svc, "Port", int, p + ".Service", 0, False)
        out.append(Entry(field(node, "Node", str, p + ".Node"), field(node, "Address", str, p + ".Node", "", False),
                         field(svc, "ID", str, p + ".Service"), field(svc, "Service", str, p + ".Service"),
                         field(svc, "Address", str, p + ".Service", "", False), port,
                         str_list(svc, "Tags", p + ".Service"), str_map(svc, "Meta", p + ".Service"), checks))
    return tuple(out)


def service_names(entries):
    return tuple(sorted({e.service_name for e in entries}))
