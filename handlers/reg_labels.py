"""registrator's conventions: one container's `docker inspect` data -> its Registrations. Pure.

SERVICE_NAME, SERVICE_TAGS, SERVICE_ID, SERVICE_IGNORE, per-port SERVICE_<port>_<KEY>
(beats SERVICE_<KEY> for that port), checks (reg_checks). Every other SERVICE_* key becomes
Meta, as registrator does. Service ID `<host>:<container>:<port>` (`:udp` for udp),
default name the image base name, `-<port>` appended when the container publishes several
ports and the name is not per-port. Only published ports.
"""
from .reg_checks import _check_problem, build_check
from .reg_model import (META_CONTAINER, META_PROJECT, META_REGISTRAR, META_SERVICE, MEDIC_META, _META_KEY,
                        Registration, Skip, split_tags)
from .reg_roles import merge_tags


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
        return (ip in ("", "0.0.0.0", "::"), ":" in ip)
    good = [b for b in bindings or () if str(b.get("HostPort") or "").isdigit()]
    return sorted(good, key=rank)[0] if good else None


def is_serving(inspect):
    state = inspect.get("State") or {}
    return bool(state.get("Running")) and not state.get("Paused") and not state.get("Restarting")


def registrations(inspect, opts, roles=None):
    """One container's inspect data -> ([Registration], [Skip]). Pure.

    `roles` maps service id -> role record (from KV). A container that is not running
    (or is paused) has no registrations.
    """
    roles = roles or {}
    cid = inspect.get("Id") or ""
    cname = (inspect.get("Name") or "").lstrip("/")
    who = cname or cid[:12]
    if not is_serving(inspect):
        return [], []
    config = inspect.get("Config") or {}
    env, labels = config.get("Env") or [], config.get("Labels") or {}
    image = str(config.get("Image") or "")
    default_name = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    ports = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
    published = []
    for key in sorted(ports, key=lambda k: (int(k.partition("/")[0]) if k.partition("/")[0].isdigit() else 0, k)):
        b = _binding(ports[key])
        if b is not None:
            published.append((key, b))
    if not published:
        return [], [Skip(who, cid[:12], "no published ports")]
    group = len(published) > 1
    meta_base = {META_CONTAINER: cid,
                 META_PROJECT: labels.get("com.docker.compose.project", ""),
                 META_SERVICE: labels.get("com.docker.compose.service", ""),
                 META_REGISTRAR: opts.registrar_id}
    regs, skips = [], []
    for key, binding in published:
        port_s, _, proto = key.partition("/")
        proto = proto or "tcp"
        attrs, from_port = service_attrs(env, labels, port_s)
        sid_default = "%s:%s:%s" % (opts.hostname, cname, port_s) + (":udp" if proto == "udp" else "")
        if attrs.get("ignore"):
            skips.append(Skip(who, sid_default, "SERVICE_IGNORE set"))
            continue
        name = attrs.get("name") or default_name
        if group and "name" not in from_port:
            name = "%s-%s" % (name, port_s)
        sid = attrs.get("id") or sid_default
        if attrs.get("id") and group and "id" not in from_port:
            sid = "%s:%s" % (sid, port_s)  # registrator would give every port the same ID
        if not name or "/" in sid:
            skips.append(Skip(who, sid, "no service name" if not name else "service ID contains '/'"))
            continue
        host_ip = binding.get("HostIp") or ""
        address = opts.ip or (host_ip if host_ip not in ("", "0.0.0.0", "::") else opts.fallback_ip)
        if not address:
            skips.append(Skip(who, sid, "published on %s and no --ip given" % (host_ip or "all addresses")))
            continue
        port = int(binding["HostPort"])
        tags = split_tags(attrs.get("tags")) + tuple(t for t in opts.force_tags if t)
        if proto == "udp":
            tags += ("udp",)
        tags = merge_tags(tuple(dict.fromkeys(tags)), roles.get(sid))
        meta = {}
        for k, v in attrs.items():
            if k in ("id", "name", "tags") or k in MEDIC_META:
                continue
            if _META_KEY.match(k) and not k.startswith("consul-") and len(str(v)) <= 512:
                meta[k] = str(v)
            else:
                skips.append(Skip(who, sid, "attribute %r not valid as Consul Meta: left out" % k))
        meta.update(meta_base)
        check = build_check(attrs, address, port)
        if check:
            problem = _check_problem(check)
            if problem:
                skips.append(Skip(who, sid, "check left out: " + problem))
                check = None
        regs.append(Registration(sid, name, address, port, tags, tuple(sorted(meta.items())),
                                 tuple(sorted(check.items())) if check else None, cid))
    return regs, skips


def desired(containers, opts, roles=None, exclude=()):
    """The whole fleet -> ({service id: Registration}, [Skip]). Pure.

    `containers` is a list of inspect dicts; `exclude` holds container IDs being stopped.
    Two containers claiming one service ID: the first by container name keeps it.
    """
    out, skips = {}, []
    for c in sorted(containers, key=lambda c: ((c.get("Name") or ""), c.get("Id") or "")):
        if c.get("Id") in exclude:
            continue
        regs, s = registrations(c, opts, roles)
        skips += s
        for r in regs:
            if r.id in out:
                skips.append(Skip((c.get("Name") or "").lstrip("/"), r.id,
                                  "duplicate service ID (already claimed by container %s)" % out[r.id].container_id[:12]))
                continue
            out[r.id] = r
    return out, skips
