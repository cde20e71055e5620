"""medic-register's core: Docker containers -> Consul agent services.

Deciding is separate from doing:

  registrations(inspect, opts, role)  PURE: one container's `docker inspect` data -> the
                                      Registrations it should have (registrator's conventions)
  desired(containers, opts, roles)    PURE: the whole fleet -> {service id: Registration}
  diff(desired, services, checks, registrar_id, scope)
                                      PURE: desired vs what the agent holds -> Ops
  Registrar                           I/O: the engine (docker SDK), the agent (lighthttp),
                                      the event loop, resyncs, retries; one audit line per op

Conventions (gliderlabs/registrator's, from container env vars AND labels; labels win):
SERVICE_NAME, SERVICE_TAGS, SERVICE_ID, SERVICE_IGNORE, per-port SERVICE_<port>_<KEY>
(beats SERVICE_<KEY> for that port), checks SERVICE_CHECK_HTTP/_HTTPS/_TCP/_TTL with
_INTERVAL (10s), _TIMEOUT, _DEREGISTER_AFTER, _INITIAL_STATUS, _HTTP_METHOD. Every other
SERVICE_* key becomes Meta, as registrator does. Service ID `<host>:<container>:<port>`
(`:udp` for udp), default name the image base name, `-<port>` appended when the container
publishes several ports and the name is not per-port. Only published ports.

Ownership: every registration carries Meta `medic_registrar` (this registrar's identity),
`medic_container_id`, `medic_compose_project`, `medic_compose_service`. Only services whose
`medic_registrar` is ours are ever deregistered.

Role tags (medic-tag) live in KV at keys.key(env, "roles", service_id) as
{"add": [...], "remove": [...]} and are merged with the label tags on every registration.
"""
import json
import re
import time
from collections import namedtuple

from . import keys
from .errors import ConsulError, EngineError

META_CONTAINER = "medic_container_id"
META_PROJECT = "medic_compose_project"
META_SERVICE = "medic_compose_service"
META_REGISTRAR = "medic_registrar"
MEDIC_META = (META_CONTAINER, META_PROJECT, META_SERVICE, META_REGISTRAR)

DEFAULT_INTERVAL = "10s"
# signals `docker kill -s` sends without meaning "stop serving" (reload, log rotation, ...)
BENIGN_SIGNALS = frozenset({"0", "1", "10", "12", "17", "18", "23", "28", "HUP", "USR1", "USR2", "CHLD",
                            "CONT", "URG", "WINCH", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGCONT",
                            "SIGURG", "SIGWINCH"})
REGISTER_ACTIONS = frozenset({"start", "unpause", "rename"})
DEREGISTER_ACTIONS = frozenset({"die", "stop", "kill", "destroy", "pause", "oom"})

_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


class Options(namedtuple("Options", "hostname registrar_id ip fallback_ip force_tags")):
    """What shapes every registration. `ip` (--ip) beats the published HostIp; `fallback_ip`
    is used for ports published on a wildcard address (0.0.0.0 / ::)."""
    __slots__ = ()

    def __new__(cls, hostname, registrar_id=None, ip=None, fallback_ip=None, force_tags=()):
        return super().__new__(cls, hostname, registrar_id or hostname, ip or None, fallback_ip or None,
                               tuple(force_tags))


class Registration(namedtuple("Registration", "id name address port tags meta check container_id")):
    """One desired agent service. `meta` and `check` are sorted tuples of (key, value)."""
    __slots__ = ()

    def body(self):
        """The JSON body of PUT /v1/agent/service/register."""
        b = {"ID": self.id, "Name": self.name, "Address": self.address, "Port": self.port,
             "Tags": list(self.tags), "Meta": dict(self.meta)}
        if self.check:
            b["Check"] = dict(self.check)
        return b

    @property
    def check_type(self):
        return check_type(dict(self.check)) if self.check else None


Skip = namedtuple("Skip", "container what reason")          # a deliberate non-action
Op = namedtuple("Op", "action service_id registration reason")  # "register" | "deregister"
Diff = namedtuple("Diff", "ops unchanged")


# ---------------------------------------------------------------- pure: conventions
def split_tags(raw):
    """'a, b,,a' -> ('a', 'b'): comma-separated, trimmed, empty and repeated ones dropped."""
    out = []
    for t in str(raw or "").split(","):
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return tuple(out)


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


def check_type(check):
    """'http' | 'tcp' | 'ttl' for a registration check dict (Consul's agent Type names)."""
    if check.get("HTTP"):
        return "http"
    if check.get("TCP"):
        return "tcp"
    if check.get("TTL"):
        return "ttl"
    return None


def build_check(attrs, address, port):
    """registrator's buildCheck (HTTP, HTTPS, TCP, TTL) from attrs; None without a check.

    Script checks (SERVICE_CHECK_SCRIPT / _CMD) are deliberately not supported: they need
    `enable_script_checks`, which is remote code execution (see docs/medic-register.md).
    """
    c = {}
    if ":" in str(address):  # IPv6
        address = "[%s]" % address
    if attrs.get("check_initial_status"):
        c["Status"] = attrs["check_initial_status"]
    if attrs.get("check_http"):
        c["HTTP"] = "http://%s:%d%s" % (address, port, attrs["check_http"])
    elif attrs.get("check_https"):
        c["HTTP"] = "https://%s:%d%s" % (address, port, attrs["check_https"])
        if str(attrs.get("check_tls_skip_verify", "")).lower() in ("1", "true", "yes"):
            c["TLSSkipVerify"] = True
    elif attrs.get("check_ttl"):
        c["TTL"] = attrs["check_ttl"]
    elif attrs.get("check_tcp"):
        c["TCP"] = "%s:%d" % (address, port)
    else:
        return None
    if "HTTP" in c or "TCP" in c:
        c["Interval"] = attrs.get("check_interval") or DEFAULT_INTERVAL
        if attrs.get("check_timeout"):
            c["Timeout"] = attrs["check_timeout"]
    if "HTTP" in c and attrs.get("check_http_method"):
        c["Method"] = attrs["check_http_method"]
    if attrs.get("check_deregister_after"):
        c["DeregisterCriticalServiceAfter"] = attrs["check_deregister_after"]
    return c


def _check_problem(check):
    for k in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
        if k in check and not _DURATION.match(str(check[k])):
            return "%s %r is not a duration like 10s" % (k, check[k])
    if check.get("Status") and check["Status"] not in ("passing", "warning", "critical"):
        return "initial status %r is not passing, warning or critical" % check["Status"]
    return None


def merge_tags(base, role=None):
    """Label tags minus the role's removals, plus its additions (order kept, no repeats)."""
    role = role or {}
    add, remove = list(role.get("add") or ()), set(role.get("remove") or ())
    out = [t for t in base if t not in remove and t not in add]
    out = list(dict.fromkeys(out))
    return tuple(out + [t for t in dict.fromkeys(add)])


def apply_role_change(role, add=(), remove=()):
    """A role record after `medic-tag --add ... --remove ...` (pure)."""
    role = role or {}
    new_add = [t for t in role.get("add") or () if t not in remove]
    new_remove = [t for t in role.get("remove") or () if t not in add]
    new_add += [t for t in add if t not in new_add]
    new_remove += [t for t in remove if t not in new_remove]
    return {"add": new_add, "remove": new_remove}


def apply_tag_change(tags, add=(), remove=()):
    """An instance's tags after --add/--remove (pure): same set as merge_tags of the new role."""
    out = [t for t in tags if t not in remove]
    return tuple(dict.fromkeys(out + list(add)))


AUTO_TAGGED = ("lan_ipv4", "wan_ipv4", "lan_ipv6", "wan_ipv6")


def retag(service, agent_checks, tags):
    """Re-registration body for an agent service with new `tags`, keeping its checks. Pure.

    `service` is GET /v1/agent/service/<id>, `agent_checks` GET /v1/agent/checks (values).
    Consul 1.8 has no in-place tag edit and does not show check definitions, so:
    a service this registrar built (Meta medic_registrar + check_* attributes) gets its
    check rebuilt from its Meta exactly as the registrar builds it (`replace` True: the
    check's copy of the tags follows); any other service is re-registered WITHOUT a
    check and without replace-existing-checks, which leaves its checks running untouched.
    Returns (body, replace). Raises ValueError for a service it cannot re-register safely.
    """
    if service.get("Kind") or service.get("Proxy") or service.get("Connect"):
        raise ValueError("service %s is a Connect proxy or native service: not re-registered"
                         % service.get("ID"))
    sid, meta = service["ID"], dict(service.get("Meta") or {})
    body = {"ID": sid, "Name": service["Service"], "Address": service.get("Address", ""),
            "Port": service.get("Port", 0), "Tags": list(tags), "Meta": meta,
            "EnableTagOverride": bool(service.get("EnableTagOverride"))}
    if service.get("Weights"):
        body["Weights"] = service["Weights"]
    tagged = {k: v for k, v in (service.get("TaggedAddresses") or {}).items() if k not in AUTO_TAGGED}
    if tagged:
        body["TaggedAddresses"] = tagged
    mine = {(c.get("CheckID"), c.get("Type")) for c in agent_checks if c.get("ServiceID") == sid}
    check = build_check(meta, body["Address"], body["Port"]) if meta.get(META_REGISTRAR) else None
    if check and mine == {("service:" + sid, check_type(check))}:
        check.pop("Status", None)  # the running check keeps its status
        body["Check"] = check
        return body, True
    return body, False


def parse_role(raw):
    """KV value -> {"add": [...], "remove": [...]}; raises ValueError when malformed."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    out = {}
    for k in ("add", "remove"):
        v = data.get(k) or []
        if not isinstance(v, list) or not all(isinstance(t, str) and t.strip() for t in v):
            raise ValueError("%r must be a list of tags" % k)
        out[k] = v
    return out


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


def owned(service, registrar_id):
    return ((service.get("Meta") or {}).get(META_REGISTRAR) == registrar_id)


def _differences(reg, svc, agent_checks):
    why = []
    if svc.get("Service") != reg.name:
        why.append("name %s -> %s" % (svc.get("Service"), reg.name))
    if svc.get("Address") != reg.address or svc.get("Port") != reg.port:
        why.append("address %s:%s -> %s:%s" % (svc.get("Address"), svc.get("Port"), reg.address, reg.port))
    if sorted(set(svc.get("Tags") or ())) != sorted(set(reg.tags)):
        why.append("tags %s -> %s" % (",".join(svc.get("Tags") or ()), ",".join(reg.tags)))
    if (svc.get("Meta") or {}) != dict(reg.meta):
        cur = svc.get("Meta") or {}
        changed = sorted(k for k in set(cur) | set(dict(reg.meta)) if cur.get(k) != dict(reg.meta).get(k))
        why.append("meta %s" % ",".join(changed))
    want = {("service:" + reg.id, reg.check_type)} if reg.check else set()
    have = {(c.get("CheckID"), c.get("Type")) for c in agent_checks}
    if want != have:
        why.append("checks %s -> %s" % (",".join(sorted(t or "?" for _, t in have)) or "none",
                                        reg.check_type or "none"))
    return why


def diff(want, services, checks, registrar_id, scope=None):
    """Desired {id: Registration} vs the agent's services and checks -> Diff(ops, unchanged). Pure.

    `services` is GET /v1/agent/services, `checks` GET /v1/agent/checks. The agent does not
    show check definitions (Consul 1.8: `Definition` is empty), so a check is compared by
    ID and type; its target and timings follow from Address, Port and the check_* Meta,
    which are compared. `scope` (a set of container IDs) limits the diff to those
    containers' services; None means the whole fleet (ghost removal included).
    Only services owned by `registrar_id` are ever deregistered.
    """
    by_service = {}
    for c in (checks or {}).values():
        if c.get("ServiceID"):
            by_service.setdefault(c["ServiceID"], []).append(c)
    ops, unchanged = [], 0
    for sid in sorted(want):
        reg = want[sid]
        if scope is not None and reg.container_id not in scope:
            continue
        svc = services.get(sid)
        if svc is None:
            ops.append(Op("register", sid, reg, "new: container %s" % reg.container_id[:12]))
            continue
        why = _differences(reg, svc, by_service.get(sid, ()))
        if not owned(svc, registrar_id):
            why.insert(0, "taking over from registrar %r" % (svc.get("Meta") or {}).get(META_REGISTRAR))
        if why:
            ops.append(Op("register", sid, reg, "; ".join(why)))
        else:
            unchanged += 1
    for sid in sorted(services):
        svc = services[sid]
        if sid in want or not owned(svc, registrar_id):
            continue
        cid = (svc.get("Meta") or {}).get(META_CONTAINER, "")
        if scope is not None and cid not in scope:
            continue
        ops.append(Op("deregister", sid, None, "container %s not serving" % cid[:12]))
    return Diff(ops, unchanged)


def event_effect(event):
    """A Docker event -> ("register" | "deregister" | None, container id). Pure."""
    if event.get("Type", "container") != "container":
        return None, None
    action = str(event.get("Action") or event.get("status") or "").split(":")[0].strip()
    actor = event.get("Actor") or {}
    cid = actor.get("ID") or event.get("id")
    if action in REGISTER_ACTIONS:
        return "register", cid
    if action == "kill":
        sig = str((actor.get("Attributes") or {}).get("signal", "")).upper()
        return (None if sig in BENIGN_SIGNALS else "deregister"), cid
    if action in DEREGISTER_ACTIONS:
        return "deregister", cid
    return None, cid


def matches(labels, filters):
    """Container labels against --filter KEY or KEY=VALUE (all must match). Pure."""
    labels = labels or {}
    for f in filters:
        k, eq, v = f.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


# ---------------------------------------------------------------- I/O: the agent
class Agent:
    """The local Consul agent, through one lighthttp connection (not thread-safe)."""

    def __init__(self, settings, env):
        from .lighthttp import Connection
        self.conn = Connection(settings)
        self.prefix = keys.key(env, "roles") + "/"

    def services(self):
        return self.conn.get_json("/v1/agent/services")[1] or {}

    def checks(self):
        return self.conn.get_json("/v1/agent/checks")[1] or {}

    def roles(self):
        """{service id: role} from KV; malformed records are returned as errors, not raised."""
        resp = self.conn.call("GET", "/v1/kv/" + self.prefix, [("recurse", None)], ok=(200, 403, 404))
        if resp.status == 404:
            return {}, []
        if resp.status == 403:  # a token without key:read: register anyway, say so
            return {}, [(self.prefix, "permission denied (ACL): role tags not applied")]
        roles, bad = {}, []
        import base64
        for e in resp.json() or ():
            sid = e["Key"][len(self.prefix):]
            if not sid or "/" in sid:
                continue
            try:
                roles[sid] = parse_role(base64.b64decode(e.get("Value") or b"") or b"{}")
            except ValueError as ex:
                bad.append((e["Key"], str(ex)))
        return roles, bad

    def register(self, body, replace_checks=True):
        params = [("replace-existing-checks", "true")] if replace_checks else None
        self.conn.call("PUT", "/v1/agent/service/register", params, body)

    def deregister(self, service_id):
        from urllib.parse import quote
        self.conn.call("PUT", "/v1/agent/service/deregister/" + quote(service_id, safe=":@"), ok=(200, 404))

    def close(self):
        self.conn.close()


# ---------------------------------------------------------------- I/O: the engine
def docker_client(timeout):
    """docker.from_env (DOCKER_HOST honoured) with an explicit timeout."""
    import docker
    try:
        return docker.from_env(timeout=timeout)
    except Exception as e:
        raise EngineError("cannot reach the Docker engine: %s" % e) from None


def _engine_error(e):
    return EngineError("Docker engine: %s" % (str(e).splitlines()[0] if str(e) else type(e).__name__))


class Registrar:
    """Keeps the agent's services equal to the running containers' published ports.

    State in memory: the inspect data of every serving container (`self.containers`),
    the container IDs whose change is not yet applied (`self.pending`) and whether a
    full listing / full converge is due. A failed Consul call keeps all of it, so a
    change is never lost: it is applied when the agent answers again.
    """

    STOPPING_GRACE = 60.0  # a container that got a fatal signal stays unregistered this long

    def __init__(self, opts, agent, engine, audit=None, filters=(), log=None, clock=time.monotonic):
        self.opts, self.agent, self.engine = opts, agent, engine
        self.audit, self.filters, self.log = audit, tuple(filters), log or (lambda msg: None)
        self.clock = clock
        self.containers = {}     # id -> inspect
        self.stopping = {}       # id -> clock() of the fatal kill
        self.pending = set()     # container ids with unapplied changes
        self.pending_full = False
        self.stats = {"register": 0, "deregister": 0, "unchanged": 0, "skipped": 0}
        self._skips_seen, self._skips_now = set(), set()

    # -- recording
    def record(self, rec):
        rec = dict({"kind": "register", "registrar": self.opts.registrar_id}, **rec)
        if self.audit is not None:
            try:
                self.audit.write(rec)
            except OSError as e:
                self.log("audit log: %s" % e)

    # -- engine side
    def list_containers(self):
        """Full listing: re-inspect every running container (matching --filter)."""
        import docker
        try:
            summaries = self.engine.api.containers(filters={"label": list(self.filters)} if self.filters else None)
        except Exception as e:
            raise _engine_error(e) from None
        fresh = {}
        for s in summaries:
            try:
                data = self.engine.api.inspect_container(s["Id"])
            except docker.errors.NotFound:
                continue
            except Exception as e:
                raise _engine_error(e) from None
            if is_serving(data) and matches((data.get("Config") or {}).get("Labels"), self.filters):
                fresh[data["Id"]] = data
        self.pending |= set(self.containers) ^ set(fresh)
        self.containers = fresh
        self.pending_full = True

    def on_event(self, event):
        """Apply one Docker event to the in-memory state; returns the container id touched."""
        effect, cid = event_effect(event)
        if not cid or effect is None:
            return None
        labels = dict((event.get("Actor") or {}).get("Attributes") or {})
        if effect == "deregister":
            self.containers.pop(cid, None)
            if str(event.get("Action", "")).startswith("kill"):
                self.stopping[cid] = self.clock()
            else:
                self.stopping.pop(cid, None)
            self.pending.add(cid)
            return cid
        if self.filters and not matches(labels, self.filters):
            return None
        import docker
        self.stopping.pop(cid, None)
        try:
            data = self.engine.api.inspect_container(cid)
        except docker.errors.NotFound:
            data = None
        except Exception as e:
            self.pending.add(cid)
            raise _engine_error(e) from None
        if data and is_serving(data) and matches((data.get("Config") or {}).get("Labels"), self.filters):
            self.containers[cid] = data
        else:
            self.containers.pop(cid, None)
        self.pending.add(cid)
        return cid

    # -- consul side
    def converge(self, scope=None):
        """Diff the desired state against the agent and apply the difference.

        scope None: the whole fleet (ghosts removed); else a set of container IDs.
        Raises ConsulError with the pending state intact when the agent fails.
        """
        now = self.clock()
        self.stopping = {c: t for c, t in self.stopping.items() if now - t < self.STOPPING_GRACE}
        roles, bad_roles = self.agent.roles()
        services, checks = self.agent.services(), self.agent.checks()
        want, skips = desired(list(self.containers.values()), self.opts, roles, exclude=set(self.stopping))
        d = diff(want, services, checks, self.opts.registrar_id, scope)
        self._skips_now = set()
        for key, why in bad_roles:
            self._note_skip(("role", key, why), {"action": "ignore", "key": key, "reason": "role record: " + why})
        for s in skips:
            self._note_skip(s, {"action": "ignore", "container": s.container, "service_id": s.what,
                                "reason": s.reason})
        self._skips_seen &= self._skips_now  # forget what no longer applies
        for op in d.ops:
            if op.action == "register":
                self.agent.register(op.registration.body())
                self.record({"action": "register", "service_id": op.service_id, "service": op.registration.name,
                              "address": "%s:%d" % (op.registration.address, op.registration.port),
                              "tags": list(op.registration.tags), "container": op.registration.container_id,
                              "reason": op.reason})
            else:
                self.agent.deregister(op.service_id)
                self.record({"action": "deregister", "service_id": op.service_id,
                              "service": (services.get(op.service_id) or {}).get("Service"), "reason": op.reason})
            self.stats[op.action] += 1
            self.log("%s %s (%s)" % (op.action, op.service_id, op.reason))
        self.stats["unchanged"] = d.unchanged
        return d

    def _note_skip(self, key, rec):
        """Audit a deliberate non-action once (not again on every resync while it lasts)."""
        key = tuple(key)
        self._skips_now.add(key)
        if key in self._skips_seen:
            return
        self._skips_seen.add(key)
        self.stats["skipped"] += 1
        self.record(rec)

    def sync_pending(self, allow_full=True):
        """Apply what is pending. After a fresh listing (`allow_full`): the whole fleet, ghosts
        included; otherwise only the containers touched (and known), never a ghost removal
        decided from a stale listing. Returns (Diff or None, was it full)."""
        if self.pending_full and allow_full:
            d = self.converge(None)
            self.pending_full = False
            self.pending.clear()
            return d, True
        if self.pending_full:
            self.pending |= set(self.containers)
            self.pending_full = False
        if self.pending:
            scope = set(self.pending)
            d = self.converge(scope)
            self.pending -= scope
            return d, False
        return None, False

    def record_resync(self, d, why):
        regs = sum(1 for o in d.ops if o.action == "register")
        deregs = len(d.ops) - regs
        self.record({"action": "resync", "containers": len(self.containers), "registered": regs,
                      "deregistered": deregs, "unchanged": d.unchanged,
                      "reason": "%s: %s" % (why, "applied the differences" if d.ops
                                            else "nothing differs, nothing written")})

    def resync(self, why="resync"):
        """One full resync: list the engine, converge the fleet. Raises on failure."""
        self.list_containers()
        d, _ = self.sync_pending()
        self.record_resync(d, why)
        return d


# ---------------------------------------------------------------- I/O: the daemon loop
class EventPump:
    """Thread: follows the engine's container events into a queue; reconnects with backoff.

    Puts ("connected",) after each (re)subscription, BEFORE any event of that stream, so
    the loop resyncs with nothing missed between the listing and the stream; ("lost", why)
    when the stream ends or fails; ("event", dict) for each event.
    """

    def __init__(self, make_client, queue, stop, filters=(), backoff=(0.2, 5.0)):
        self.make_client, self.queue, self.stop, self.filters = make_client, queue, stop, tuple(filters)
        self.backoff = backoff
        self.stream = None
        import threading
        self.thread = threading.Thread(target=self._run, name="medic-register-events", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        s = self.stream
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    def _run(self):
        delay = self.backoff[0]
        while not self.stop.is_set():
            client = None
            try:
                client = self.make_client()
                client.ping()
                filters = {"type": ["container"]}
                if self.filters:
                    filters["label"] = list(self.filters)
                self.stream = client.events(decode=True, filters=filters)
                self.queue.put(("connected",))
                delay = self.backoff[0]
                for ev in self.stream:
                    if self.stop.is_set():
                        break
                    self.queue.put(("event", ev))
                if not self.stop.is_set():
                    self.queue.put(("lost", "event stream ended"))
            except Exception as e:
                if not self.stop.is_set():
                    self.queue.put(("lost", str(e).splitlines()[0] if str(e) else type(e).__name__))
            finally:
                self.stream = None
                if client is not None:
                    try:
                        client.close()
                    except Exception:
                        pass
            self.stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])


class RoleWatch:
    """Thread: a blocking query on the roles KV prefix; puts ("roles",) when it changes."""

    def __init__(self, settings, env, queue, stop, wait=30):
        from .lighthttp import Connection
        self.conn = Connection(settings._replace(timeout=settings.timeout + wait + 5))
        self.prefix, self.queue, self.stop, self.wait = keys.key(env, "roles") + "/", queue, stop, wait
        import threading
        self.thread = threading.Thread(target=self._run, name="medic-register-roles", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        index, delay = None, 0.5
        while not self.stop.is_set():
            try:
                params = [("keys", None)]
                if index:
                    params += [("index", str(index)), ("wait", "%ds" % self.wait)]
                resp = self.conn.call("GET", "/v1/kv/" + self.prefix, params, ok=(200, 404))
                new = resp.index
                if index is not None and new and new != index:
                    self.queue.put(("roles",))
                index, delay = max(new or 1, 1), 0.5
            except ConsulError:
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)


def serve(registrar, make_client, stop, queue, resync_every=30.0, role_watch=None, log=None, filters=()):
    """The daemon loop: events, periodic resync, retries with backoff, until `stop` is set.

    Put ("stop",) on `queue` after setting `stop` to wake the loop at once (signal handlers).
    """
    import queue as queue_mod
    log = log or (lambda msg: None)
    pump = EventPump(make_client, queue, stop, filters).start()
    if role_watch is not None:
        role_watch.start()
    clock = registrar.clock
    need_list, list_at, consul_at = False, 0.0, 0.0
    list_delay = consul_delay = 0.2
    next_resync = clock() + resync_every if resync_every else float("inf")
    consul_down = engine_down = False
    why = "initial resync"
    try:
        while not stop.is_set():
            now = clock()
            deadlines = [next_resync]
            if need_list and not engine_down:  # while the engine is away, its reconnect wakes us
                deadlines.append(list_at)
            if registrar.pending or registrar.pending_full:
                deadlines.append(consul_at)
            items = []
            try:
                items.append(queue.get(timeout=min(max(0.0, min(deadlines) - now), 3600.0)))
                while True:
                    items.append(queue.get_nowait())
            except queue_mod.Empty:
                pass
            for item in items:
                kind = item[0]
                if kind == "connected":
                    need_list, list_at = True, 0.0
                    if engine_down:
                        log("engine: event stream reconnected: full resync")
                        registrar.record({"action": "engine", "reason": "event stream reconnected: full resync"})
                        why = "resync after reconnect"
                    engine_down = False
                elif kind == "lost":
                    if not engine_down:
                        log("engine: %s: reconnecting with backoff" % item[1])
                        registrar.record({"action": "engine", "reason": "event stream lost: %s" % item[1]})
                    engine_down = True
                elif kind == "event":
                    try:
                        registrar.on_event(item[1])
                    except EngineError as e:
                        log(str(e))
                        need_list, list_at = True, clock() + list_delay
                elif kind == "roles":
                    registrar.pending_full = True
            if stop.is_set():
                break
            now = clock()
            if now >= next_resync:
                need_list, list_at, next_resync = True, 0.0, now + resync_every
                why = "periodic resync"
            if need_list and now >= list_at and not engine_down:
                try:
                    registrar.list_containers()
                    need_list, list_delay = False, 0.2
                except EngineError as e:
                    log(str(e))
                    list_at, list_delay = now + list_delay, min(list_delay * 2, 5.0)
            if (registrar.pending or registrar.pending_full) and now >= consul_at:
                try:
                    d, full = registrar.sync_pending(allow_full=not need_list)
                    if full:
                        registrar.record_resync(d, why)
                        why = "resync"
                    if consul_down:
                        log("consul: the agent answers again: converged")
                        registrar.record({"action": "consul", "reason": "the agent answers again: converged"})
                    consul_down, consul_delay = False, 0.2
                except ConsulError as e:
                    if not consul_down:
                        log("%s: retrying with backoff, changes kept" % e)
                        registrar.record({"action": "consul", "reason": "%s: retrying, changes kept" % e})
                    consul_down = True
                    consul_at, consul_delay = now + consul_delay, min(consul_delay * 2, 5.0)
    finally:
        stop.set()
        pump.close()
    return registrar
