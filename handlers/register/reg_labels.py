"""registrator's conventions: one container's `docker inspect` data -> its Registrations. Pure.

SERVICE_NAME, SERVICE_TAGS, SERVICE_ID, SERVICE_IGNORE, per-port SERVICE_<port>_<KEY>
(beats SERVICE_<KEY> for that port), checks (reg_checks). Every other SERVICE_* key becomes
Meta, as registrator does. Service ID `<host>:<container>:<port>` (`:udp` for udp),
default name the image base name, `-<port>` appended when the container publishes several
ports and the name is not per-port. Only published ports.
"""
import calendar
import re
import time

from ..catalog.reg_checks import build_check
from ..catalog.reg_model import MAX_ID_LEN, MAX_META, MAX_PORTS, MAX_TAGS, META_CONTAINER, META_PROJECT, META_REGISTRAR, META_SERVICE, META_STARTED, MEDIC_META, RESERVED_ID_PREFIXES, RESERVED_IDS, RESERVED_NAMES, _META_KEY, Registration, Skip, split_tags, tag_problem
from ..catalog.reg_roles import merge_tags


def service_attrs(env, labels, port):
    """registrator's serviceMetaData: SERVICE_* from env then labels (labels win), per-port
    SERVICE_<port>_<KEY> beating SERVICE_<KEY>. Returns (attrs, keys that came per-port)."""
    pairs = []
    for kv in env or ():
        k, eq, v = str(kv).partition("=")
        if eq:
            pairs.append((k, v))
    pairs += list((labels or {}).items())
    generic, per_port = {}, {}
    for k, v in pairs:
        if not k.startswith("SERVICE_"):
            continue
        key = k[len("SERVICE_"):].lower()
        head, sep, rest = key.partition("_")
        if head.isdigit() and sep and rest:
            if head == str(port):
                per_port[rest] = v
        elif key:
            generic[key] = v
    attrs = dict(generic)
    attrs.update(per_port)
    return attrs, frozenset(per_port)


def _binding(bindings):
    """The binding to register: a specific IPv4 HostIp first, then a wildcard, then any."""
    def rank(b):
        ip = b.get("HostIp") or ""
        return (ip in WILDCARDS, ":" in ip)
    good = [b for b in bindings or () if str(b.get("HostPort") or "").isdigit()]
    return sorted(good, key=rank)[0] if good else None


WILDCARDS = ("", "0.0.0.0", "::")


def is_serving(inspect):
    state = inspect.get("State") or {}
    return bool(state.get("Running")) and not state.get("Paused") and not state.get("Restarting")


def started_epoch(inspect):
    """The engine's State.StartedAt ('2026-11-27T13:00:00.123456789Z') -> epoch seconds (int) or None."""
    raw = str((inspect.get("State") or {}).get("StartedAt") or "")
    try:
        at = calendar.timegm(time.strptime(raw[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return at if at > 0 else None


def _port_order(k):
    head = k.partition("/")[0]
    return (int(head) if head.isdigit() else 0, k)


def container_ip(inspect):
    ns = inspect.get("NetworkSettings") or {}
    if ns.get("IPAddress"):
        return ns["IPAddress"]
    for _, net in sorted((ns.get("Networks") or {}).items()):
        if (net or {}).get("IPAddress"):
            return net["IPAddress"]
    return None


def endpoints(inspect, opts):
    """[(port key '80/tcp', address or None, port, how)] the container offers, registrator's way:
    --internal: the container's own IP and every exposed or published container port;
    host network: every exposed port on the host address (--ip, else the host's);
    otherwise: each published port on its HostIp (a wildcard HostIp: --ip, else the host's)."""
    config = inspect.get("Config") or {}
    ports = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
    exposed = set(config.get("ExposedPorts") or {})
    mode = str((inspect.get("HostConfig") or {}).get("NetworkMode") or "")
    out = []
    if opts.internal:
        ip = container_ip(inspect)
        for key in sorted(exposed | set(ports), key=_port_order):
            head = key.partition("/")[0]
            if head.isdigit():
                out.append((key, ip, int(head), "internal"))
        return out
    if mode == "host":
        for key in sorted(exposed, key=_port_order):
            head = key.partition("/")[0]
            if head.isdigit():
                out.append((key, opts.ip or opts.fallback_ip, int(head), "host network"))
        return out
    for key in sorted(ports, key=_port_order):
        b = _binding(ports[key])
        if b is not None:
            host_ip = b.get("HostIp") or ""
            address = opts.ip or (host_ip if host_ip not in WILDCARDS else opts.fallback_ip)
            out.append((key, address, int(b["HostPort"]),
                        "published on %s" % (host_ip if host_ip not in WILDCARDS else "all addresses")))
    return out


def registrations(inspect, opts, roles=None, exited=False):
    """One container's inspect data -> ([Registration], [Skip]). Pure.

    `roles` maps service id -> role record (from KV). A container that is not running
    (or is paused) has no registrations, unless `exited` (kept by --deregister on-success).
    """
    roles = roles or {}
    cid = inspect.get("Id") or ""
    cname = (inspect.get("Name") or "").lstrip("/")
    who = cname or cid[:12]
    if not exited and not is_serving(inspect):
        return [], []
    config = inspect.get("Config") or {}
    env, labels = config.get("Env") or [], config.get("Labels") or {}
    image = str(config.get("Image") or "")
    default_name = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    offered = endpoints(inspect, opts)
    if not offered:
        return [], [Skip(who, cid[:12], "no published ports")]
    if len(offered) > MAX_PORTS:
        return [], [Skip(who, cid[:12], "%d ports: at most %d registrations per container" % (len(offered), MAX_PORTS),
                         "refuse")]
    group = len(offered) > 1
    meta_base = {META_CONTAINER: cid,
                 META_PROJECT: str(labels.get("com.docker.compose.project", ""))[:512],
                 META_SERVICE: str(labels.get("com.docker.compose.service", ""))[:512],
                 META_REGISTRAR: opts.registrar_id}
    started = started_epoch(inspect)
    if started is not None:
        meta_base[META_STARTED] = str(started)
    regs, skips = [], []
    for key, address, port, how in offered:
        port_s, _, proto = key.partition("/")
        proto = proto or "tcp"
        attrs, from_port = service_attrs(env, labels, port_s)
        sid_default = "%s:%s:%s" % (opts.hostname, cname, port_s) + (":udp" if proto == "udp" else "")
        if attrs.get("ignore"):
            skips.append(Skip(who, sid_default, "SERVICE_IGNORE set"))
            continue
        if opts.explicit and not attrs.get("name"):
            skips.append(Skip(who, sid_default, "--explicit: no SERVICE_NAME for this port"))
            continue
        name = attrs.get("name") or default_name
        if group and "name" not in from_port:
            name = "%s-%s" % (name, port_s)
        sid = attrs.get("id") or sid_default
        if attrs.get("id") and group and "id" not in from_port:
            sid = "%s:%s" % (sid, port_s)  # registrator would give every port the same ID
        why = ident_problem(sid, name, bool(attrs.get("id")))
        if why:
            skips.append(Skip(who, _printable(sid), why, "refuse" if name else "ignore"))
            continue
        if not address:
            skips.append(Skip(who, sid, "%s and no --ip given" % how if how != "internal"
                              else "--internal: the container has no IP address"))
            continue
        tags = split_tags(attrs.get("tags")) + tuple(t for t in opts.force_tags if t)
        if proto == "udp":
            tags += ("udp",)
        tags = merge_tags(tuple(dict.fromkeys(tags)), roles.get(sid))
        why = tags_problem(tags)
        if why:
            skips.append(Skip(who, sid, why, "refuse"))
            continue
        meta = {}
        for k, v in attrs.items():
            if k in ("id", "name", "tags") or k in MEDIC_META:
                continue
            if _META_KEY.match(k) and not k.startswith("consul-") and len(str(v)) <= 512:
                meta[k] = str(v)
            else:
                skips.append(Skip(who, sid, "attribute %r not valid as Consul Meta: left out" % _printable(k)))
        if len(meta) + len(meta_base) > MAX_META:
            skips.append(Skip(who, sid, "%d SERVICE_* attributes: Consul stores at most %d Meta pairs (%d are "
                              "medic's)" % (len(meta), MAX_META, len(meta_base)), "refuse"))
            continue
        meta.update(meta_base)
        check, refused = build_check(attrs, address, port)
        if refused:
            skips.append(Skip(who, sid, "check refused, registered with a critical check: " + refused, "refuse"))
        regs.append(Registration(sid, name, address, port, tags, tuple(sorted(meta.items())),
                                 tuple(sorted(check.items())) if check else None, cid))
    return regs, skips


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _printable(text, n=80):
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= n else text[:n] + "..."


def ident_problem(sid, name, custom_id=True):
    """Why a service ID / name is refused, or None: medic's and Consul's own names are reserved;
    names are DNS-friendly words; IDs printable ASCII without '/' or spaces, bounded."""
    if not name:
        return "no service name"
    if custom_id and (sid in RESERVED_IDS or sid.startswith(RESERVED_ID_PREFIXES)):
        return "service ID %r belongs to medic or Consul: refused" % sid
    if name.lower() in RESERVED_NAMES:
        return "service name %r is reserved (medic's or Consul's own service)" % name
    if not _NAME.match(name):
        return ("service name %r: letters, digits, '.', '_' and '-' only, at most 128 characters"
                % _printable(name))
    if len(sid) > MAX_ID_LEN or not all(33 <= ord(ch) < 127 for ch in sid) or "/" in sid:
        return ("service ID %r: printable ASCII without spaces or '/', at most %d characters"
                % (_printable(sid), MAX_ID_LEN))
    return None


def tags_problem(tags):
    if len(tags) > MAX_TAGS:
        return "%d tags: at most %d" % (len(tags), MAX_TAGS)
    for t in tags:
        if tag_problem(t):
            return tag_problem(t)
    return None


def desired(containers, opts, roles=None, exclude=(), exited=()):
    """The whole fleet -> ({service id: Registration}, [Skip]). Pure.

    `containers` is a list of inspect dicts; `exclude` holds container IDs being stopped;
    `exited` the IDs of exited containers kept registered (--deregister on-success).
    Two containers claiming one service ID: the first by container name keeps it.
    """
    out, skips = {}, []
    for c in sorted(containers, key=lambda c: ((c.get("Name") or ""), c.get("Id") or "")):
        if c.get("Id") in exclude:
            continue
        try:
            regs, s = registrations(c, opts, roles, exited=c.get("Id") in exited)
        except Exception as e:  # noqa: BLE001 boundary: one container's data never stops the fleet: refused, audited
            regs, s = [], [Skip((c.get("Name") or "").lstrip("/"), str(c.get("Id") or "")[:12],
                                "container data not understood (%s): not registered" % type(e).__name__, "refuse")]
        skips += s
        for r in regs:
            if r.id in out:
                skips.append(Skip((c.get("Name") or "").lstrip("/"), r.id, "duplicate service ID (already claimed "
                                  "by container %s)" % out[r.id].container_id[:12]))
                continue
            out[r.id] = r
    return out, skips
