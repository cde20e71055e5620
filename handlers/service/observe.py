"""Fresh observation of one service: Consul (consistent read) and the Docker engine.

Nothing here trusts a watch payload. Consul is read first, the engine second: a
container that appears in between shows as pending (the engine started it, Consul
does not know it yet); one that dies in between shows as stopped (the engine is the
authority on its own containers). Both orders err towards doing less.

Mapping Consul instances to containers: Service Meta `medic_container_id` (full ID,
written by medic-register) first; else the instance's address:port against the
container's published ports. Instances registered for this engine's host (Meta
`medic_registrar` or ID `<host>:...`) whose container is gone are ghosts and count for
nothing. All other instances that map to no container here are remote (another host)
and count for their own health.
"""
import calendar

from ..consul import health
from .heal_model import Container, Observation, Remote, KNOWN_STATES
from ..core.errors import ConsulError, EngineError
from ..consul import api
from ..engine.engine import failures as engine_failures, not_found as engine_not_found

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_time(raw):
    """Docker's RFC 3339 timestamp (nanoseconds, Z) -> epoch seconds; 0.0 for 'never'."""
    if not raw or raw.startswith("0001-01-01"):
        return 0.0
    if isinstance(raw, (int, float)):
        return float(raw)
    s = raw.strip()
    if s.endswith("Z"):
        s = s[:-1]
    base, _, frac = s.partition(".")
    import time as _t
    t = calendar.timegm(_t.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac[:9]) if frac and frac.isdigit() else 0.0)


# -- Consul ----------------------------------------------------------------------
def consul_instances(conn, service):
    """Consistent read of /v1/health/service/<name> -> (index, [health.Instance])."""
    index, body, _ = conn.get_json(api.health_service(service), [("consistent", None)])
    from ..consul import acl  # site: an answer ACLs may have filtered is never "0 instances"
    acl.require(conn, acl.service_read(service))
    return index, health.parse_instances(body, service)


# -- engine ----------------------------------------------------------------------
def engine_client(timeout=10.0):
    """A Docker engine client that answered a ping: the light one (handlers/engine/engine.py: HTTP
    over DOCKER_HOST's unix:// or tcp://), or the docker SDK's where the light one cannot go."""
    from ..engine import engine
    return engine.connect(timeout=timeout)


class LocalContainer:
    """A container as the engine reports it, plus its published ports."""
    __slots__ = ("container", "ports")

    def __init__(self, container, ports):
        self.container, self.ports = container, ports


def _ports(attrs):
    out = set()
    for bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).values():
        for b in bindings or ():
            try:
                out.add((b.get("HostIp") or "0.0.0.0", int(b.get("HostPort"))))
            except (TypeError, ValueError):
                pass
    return out


def compose_containers(client, scale):
    """Every container (any state) of the compose project/service, inspected."""
    flt = {"label": ["%s=%s" % (COMPOSE_PROJECT, scale.project), "%s=%s" % (COMPOSE_SERVICE, scale.service)]}
    try:
        summaries = client.api.containers(all=True, filters=flt)
        out = []
        for s in summaries:
            if (s.get("Labels") or {}).get(COMPOSE_ONEOFF, "False") == "True":
                continue  # `compose run` one-offs are not replicas
            try:
                attrs = client.api.inspect_container(s["Id"])
            except engine_not_found():
                continue  # removed between list and inspect
            out.append(_from_attrs(attrs))
        return out
    except EngineError:
        raise
    except engine_failures() as e:
        raise EngineError("Docker engine: listing containers of %s/%s failed: %s"
                          % (scale.project, scale.service, _reason(e))) from None


def _from_attrs(attrs):
    st = attrs.get("State") or {}
    status = st.get("Status") or "unknown"
    if st.get("Dead"):
        status = "dead"
    c = Container(attrs["Id"], (attrs.get("Name") or "").lstrip("/"), status,
                  parse_time(attrs.get("Created")), parse_time(st.get("StartedAt")), None, killed(st))
    return LocalContainer(c, _ports(attrs))


KILL_EXIT_CODES = (137, 143)  # 128 + SIGKILL, 128 + SIGTERM


def killed(state):
    """True when the engine says the container was stopped by a signal from outside (docker kill,
    docker stop, a host's kill): exit 137/143 and not OOM-killed. An OOM kill, a non-zero exit of
    its own or a crash signal (SIGSEGV 139, SIGABRT 134) is the container's own failure."""
    if (state.get("Status") or "") not in ("exited", "dead") or state.get("OOMKilled"):
        return False
    try:
        return int(state.get("ExitCode")) in KILL_EXIT_CODES
    except (TypeError, ValueError):
        return False


def meta_started(meta):
    """Meta medic_started (epoch seconds, written by medic-register) -> float, 0.0 when absent or bad."""
    raw = (meta or {}).get("medic_started")
    try:
        t = float(raw)
    except (TypeError, ValueError):
        return 0.0
    return t if t == t and 0 < t < 1e11 else 0.0  # not NaN, not infinite, a plausible epoch


_TASK_STATES = {"running": "running", "new": "created", "pending": "created", "assigned": "created",
                "accepted": "created", "preparing": "created", "ready": "created", "starting": "created",
                "complete": "exited", "failed": "exited", "shutdown": "exited", "rejected": "exited",
                "orphaned": "exited", "remove": "removing"}


def swarm_containers(client, scale):
    """Tasks of a Swarm service that should run, as containers (Swarm spreads them)."""
    try:
        svc = client.services.get(scale.service)
        tasks = svc.tasks(filters={"desired-state": "running"})
    except engine_failures() as e:
        raise EngineError("Swarm service %s: %s" % (scale.service, _reason(e))) from None
    out = []
    for t in tasks:
        status = t.get("Status") or {}
        cid = (status.get("ContainerStatus") or {}).get("ContainerID") or t.get("ID")
        ts = parse_time(status.get("Timestamp"))
        state = _TASK_STATES.get(status.get("State"), "unknown")
        ports = {("0.0.0.0", int(p["PublishedPort"])) for p in ((t.get("Spec") or {}).get("Endpoint") or {}).get("Ports") or ()
                 if p.get("PublishedPort")}
        out.append(LocalContainer(Container(cid, "%s.%s" % (scale.service, t.get("Slot", "")), state,
                                            parse_time(t.get("CreatedAt")), ts, None), ports))
    return out


def engine_containers(client, scale):
    if scale.driver == "swarm":
        return swarm_containers(client, scale)
    return compose_containers(client, scale)


# -- the mapping -------------------------------------------------------------------
def engine_host(client):
    """The engine's host name (docker info Name), or None when the engine does not say."""
    try:
        return client.info().get("Name") or None
    except engine_failures() + (AttributeError,):  # AttributeError: an info answer that is not an object
        return None


def match(instances, local, host=None, scale=None):
    """Consul instances + local containers -> Observation (pure).

    `host`: this engine's host name; `scale`: the spec's compose scale. An instance that
    says it was registered on this host (Meta medic_registrar == host, or an ID `<host>:...`)
    for a container of this very compose project and service (Meta medic_compose_project /
    medic_compose_service), whose container the engine no longer has, is a ghost of a
    removed container: neither passing nor remote. Containers of other projects that serve
    the same Consul service stay remote: they count, but are not ours to scale."""
    by_id = {lc.container.id: lc for lc in local}
    by_port = {}
    for lc in local:
        for host_ip, port in lc.ports:
            by_port.setdefault(port, []).append((host_ip, lc))
    verdict = {}  # container id -> passing?
    remote, stale, unknown = [], 0, []
    for inst in instances:
        lc = None
        cid = inst.meta.get("medic_container_id")
        if cid:
            lc = by_id.get(cid)
        if lc is None and not cid:
            for host_ip, cand in by_port.get(inst.port, ()):
                if inst.address == host_ip or (host_ip in ("0.0.0.0", "::", "") and inst.address in LOOPBACK):
                    lc = cand
                    break
        if lc is None:
            if cid and _ghost(inst, host, scale):
                stale += 1  # registered on this host, container gone: Consul has not noticed yet
                continue
            # an instance whose node is lost (serfHealth) or in maintenance, or that is in maintenance
            # itself, can never come to pass by itself: neither pending nor watched (heal_counts.py)
            down = _down(inst)
            remote.append(Remote(inst.id, inst.node, inst.passing, 0.0 if down else meta_started(inst.meta), down))
            continue
        c = lc.container
        if c.state not in ("running", "restarting"):
            stale += 1  # Consul has not noticed yet; the engine is the authority
        verdict[c.id] = verdict.get(c.id, False) or inst.passing
    containers = []
    for lc in local:
        c = lc.container
        if c.state not in KNOWN_STATES:
            unknown.append("container %s in state %r" % (c.name, c.state))
        containers.append(c._replace(passing=verdict.get(c.id)))
    containers.sort(key=lambda c: (c.name, c.id))
    return Observation(tuple(containers), tuple(remote), stale, tuple(unknown))


def _ghost(inst, host, scale):
    if not host or scale is None or scale.driver != "compose":
        return False
    m = inst.meta
    return ((m.get("medic_registrar") == host or inst.id.startswith(host + ":"))
            and m.get("medic_compose_project") == scale.project and m.get("medic_compose_service") == scale.service)


def observe(spec, conn, engine):
    """Read Consul, then the engine -> (consul index, Observation)."""
    return observe_with(spec, lambda service: consul_instances(conn, service), engine)


def observe_with(spec, read_instances, engine):
    """The same, with Consul's answer from `read_instances(service) -> (index, [Instance])`."""
    index, instances = read_instances(spec.service)
    local = engine_containers(engine, spec.scale)
    host = engine_host(engine) if spec.scale.driver == "compose" else None
    return index, match(instances, local, host, spec.scale)


NODE_CHECKS = ("serfHealth", "_node_maintenance")
SERVICE_MAINTENANCE = "_service_maintenance:"


def _down(inst):
    return any(f.check_id in NODE_CHECKS or f.check_id.startswith(SERVICE_MAINTENANCE) for f in inst.failing)


def _reason(e):
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


__all__ = ["observe", "match", "engine_client", "engine_containers", "consul_instances", "parse_time",
           "ConsulError"]
