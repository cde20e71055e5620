"""Tell a `checks` payload from a `service` payload, for handlers fed by either."""
from . import PayloadError, checks, service
from ._common import decode


def parse_any(data):
    """-> ("checks", tuple[Check]) or ("service", tuple[Entry]); [] parses as ("empty", ())."""
    doc = decode(data)
    if not isinstance(doc, list):
        raise PayloadError("$: a watch payload is a list, got %s" % type(doc).__name__)
    if not doc:
        return "empty", ()
    first = doc[0]
    if isinstance(first, dict) and "Service" in first and isinstance(first.get("Service"), dict):
        return "service", service.from_json(doc)
    return "checks", checks.from_json(doc)


def services_named(kind, items):
    return checks.service_names(items) if kind == "checks" else service.service_names(items) if kind == "service" else ()
