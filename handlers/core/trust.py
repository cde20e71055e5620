"""The trust boundary: every value that comes out of Consul (a registration anyone with the
registrar's rights may have written) and goes into a load-balancer template, a Redis command or a
request is checked here, once. PURE.

    address(v)          an IPv4/IPv6 literal or a host name by RFC 1123 grammar -> Checked
    port(v)             an integer 1..65535 (a bool or "80x" is not) -> int
    service_name(v)     a DNS-style name: 1-127 of A-Za-z0-9._- not starting with . or - -> Checked
    token(v, what)      an ID, tag or node name: 1-256 printable ASCII characters, none of
                        whitespace, control characters or the config languages' special
                        characters ; { } # " ' ` \\ $ -> Checked (an instance ID: no '/' either)
    entries(name, health_entries)  -> (good [Fields], refused [Refusal])
    server_ok(server)   a last-good server record (medic-lb's state file) still valid?
    finalize(value)     the Jinja `finalize` of medic-lb's environment (see below)

An instance whose ID, address, port or node fails is refused as a whole (left out, never
rendered, probed or sent a command); a tag that fails is dropped from the instance (the role
tags master/slave always pass) and said in the refusal list with `dropped=True`.

`Checked` marks a str that passed one of these checks. The templates see only Checked values,
ints and text the template itself wrote; `finalize` enforces that for any template, a user's
own included: Checked, int, float and bool pass; any other str passes only when it holds no
control character and none of the special characters above; anything else (a list, a dict,
an object) is refused with TemplateRefused, and nothing is written.
"""
import ipaddress
import re
from collections import namedtuple

MAX_TOKEN = 256
MAX_NAME = 127
MAX_HOST = 253
SPECIAL = set(";{}#\"'`\\$")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,126}$")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

Refusal = namedtuple("Refusal", "service id field value reason dropped")
# an instance's checked fields; meta is Consul's map as given (never printed, only compared)
Fields = namedtuple("Fields", "id address port tags node status meta")


class Checked(str):
    """A str that passed the boundary."""
    __slots__ = ()


class Refused(ValueError):
    def __init__(self, field, value, reason):
        super().__init__("%s %s: %s" % (field, printable(value), reason))
        self.field, self.value, self.reason = field, value, reason


class TemplateRefused(ValueError):
    pass


def printable(v, limit=80):
    """A value as it can be shown in one line of output or audit (repr, cut)."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _text(v, field):
    if not isinstance(v, str):
        raise Refused(field, v, "not a string")
    return v


def address(v, field="address"):
    s = _text(v, field)
    if not s:
        raise Refused(field, v, "empty")
    if len(s) > MAX_HOST:
        raise Refused(field, v, "longer than %d characters" % MAX_HOST)
    if s.isascii():
        try:
            ipaddress.ip_address(s)
            return Checked(s)
        except ValueError:
            pass
        labels = s.split(".")
        if all(_LABEL.match(lb) for lb in labels) and not labels[-1].isdigit():
            return Checked(s)
    raise Refused(field, v, "not an IP address nor a host name")


def port(v, field="port"):
    if isinstance(v, bool):
        raise Refused(field, v, "not an integer")
    if isinstance(v, str):
        if not (v.isascii() and v.isdigit() and len(v) <= 5):
            raise Refused(field, v, "not an integer")
        v = int(v)
    if not isinstance(v, int):
        raise Refused(field, v, "not an integer")
    if not 1 <= v <= 65535:
        raise Refused(field, v, "outside 1..65535")
    return int(v)


def service_name(v, field="service"):
    s = _text(v, field)
    if not _NAME.match(s) or not s.isascii() or ".." in s or s.endswith("."):
        raise Refused(field, v, "not a service name (1-%d of A-Za-z0-9._-, not starting with . or -)" % MAX_NAME)
    return Checked(s)


def token(v, field="id"):
    s = _text(v, field)
    if not s:
        raise Refused(field, v, "empty")
    if len(s) > MAX_TOKEN:
        raise Refused(field, v, "longer than %d characters" % MAX_TOKEN)
    bad = [c for c in s if not ("\x21" <= c <= "\x7e") or c in SPECIAL]
    if bad:
        raise Refused(field, v, "holds %s (whitespace, control, non-ASCII or one of %s)"
                      % (printable(bad[0]), "".join(sorted(SPECIAL))))
    return Checked(s)


def safe_text(s):
    """Plain text a template may print: no control character, none of SPECIAL (spaces allowed)."""
    return isinstance(s, str) and not any(c < " " or "\x7f" <= c <= "\x9f" or c in SPECIAL or c in "\u2028\u2029"
                                          for c in s)


def finalize(value):
    if isinstance(value, (Checked, int, float)):
        return value
    if isinstance(value, str):
        if safe_text(value):
            return value
        raise TemplateRefused("template output %s: holds a control or special character (%s)"
                              % (printable(value), "".join(sorted(SPECIAL))))
    if value is None:
        raise TemplateRefused("template output None")
    if type(value).__name__.endswith("Undefined"):
        str(value)  # Jinja's StrictUndefined raises here, naming what the template asked for
    raise TemplateRefused("template output of type %s: only checked values, numbers and plain text are "
                          "printed" % type(value).__name__)


def _status(checks):
    states = [c.get("Status") for c in checks or () if isinstance(c, dict)]
    for s in ("critical", "warning"):
        if s in states:
            return s
    return "passing"


def entry(name, e):
    """One health entry -> (Fields, [Refusal of a dropped tag]); raises Refused."""
    if not isinstance(e, dict):
        raise Refused("entry", e, "not an object")
    svc, node = e.get("Service") or {}, e.get("Node") or {}
    if not isinstance(svc, dict) or not isinstance(node, dict):
        raise Refused("entry", e, "Service/Node not objects")
    sid = token(svc.get("ID") or name, "id")
    if "/" in sid:  # an ID is a KV key part (roles, medic-tag) and one path segment: medic-register refuses it too
        raise Refused("id", sid, "holds '/'")
    addr = address(svc.get("Address") or node.get("Address") or "", "address")
    p = port(svc.get("Port"), "port")
    node_name = token(node.get("Node") or "-", "node")
    raw_tags = svc.get("Tags") or ()
    if not isinstance(raw_tags, (list, tuple)):
        raise Refused("tags", raw_tags, "not a list")
    meta = svc.get("Meta") or {}
    if not isinstance(meta, dict):
        raise Refused("meta", meta, "not an object")
    tags, dropped = [], []
    for t in raw_tags:
        try:
            tags.append(token(t, "tag"))
        except Refused as err:
            dropped.append(Refusal(name, sid, "tag", printable(t), err.reason, True))
    return Fields(sid, addr, p, tuple(tags), node_name, _status(e.get("Checks")), meta), dropped


def entries(name, health_entries):
    """Health entries of one service -> ([Fields] that passed, [Refusal])."""
    good, refused = [], []
    for e in health_entries or ():
        try:
            fields, dropped = entry(name, e)
        except Refused as err:
            svc = (e.get("Service") if isinstance(e, dict) else None) or {}
            sid = svc.get("ID") if isinstance(svc, dict) else None
            try:
                shown = token(sid)
            except Refused:
                shown = printable(sid)
            refused.append(Refusal(name, shown, err.field, printable(err.value), err.reason, False))
            continue
        good.append(fields)
        refused.extend(dropped)
    return good, refused


def server_ok(s):
    """A server record from medic-lb's state file (written by an older version, or edited) is
    rendered again only when its fields still pass."""
    try:
        token(s["id"], "id")
        address(s["address"])
        port(s["port"])
        token(s.get("node") or "-", "node")
        for t in s.get("tags") or ():
            token(t, "tag")
        if s.get("role") not in (None, "master", "slave") or not isinstance(s.get("priority"), int):
            return False
    except (Refused, KeyError, TypeError, AttributeError):
        return False
    return True


def checked_server(s):
    """A server record that passed server_ok, its strings marked Checked."""
    out = dict(s)
    for k in ("id", "address", "node"):
        if isinstance(out.get(k), str):
            out[k] = Checked(out[k])
    out["tags"] = [Checked(t) for t in out.get("tags") or ()]
    if out.get("role"):
        out["role"] = Checked(out["role"])
    return out


def describe(r):
    """One line for a refusal."""
    what = "tag dropped" if r.dropped else "instance left out"
    return "%s: %s %s: %s %s %s" % (r.service, what, r.id, r.field, r.value, r.reason)
