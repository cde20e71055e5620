"""Triage for runs that name many services (`medic-heal --all`, a big checks payload).

Locking, a consistent health read and a history read per service cost ~5 Consul
requests each: 5,000 for 1,000 specs on every reconcile. Triage reads everything
once instead, a constant 2 Consul requests per Consul address plus 1 engine listing:

    GET /v1/internal/ui/nodes          every node's services and checks (default consistency,
                                       served by the leader: not behind the watch that fired)
    GET /v1/kv/medic/<env>/history/?recurse   every service's history
    GET /containers/json?all=1         every compose container of this engine (one list call)

and runs the same pure `decide()` per service. The two Consul reads start in a thread as
soon as the payload is parsed (`Prefetch`), so Consul builds its node dump while the
specs load; a group whose address is not the prefetched one reads its own. A service is settled here only when
nothing about it is uncertain: the count is met, every local container is running
and passing, none is pending, failing, stopped or stale, and decide() says a plain
noop with no history transition. Everything else (and every Swarm spec, and any
service triage could not read) goes to the full path: lock, fresh consistent
observation, decide, act. Triage never acts, so a wrong "needs work" only costs a
full run; a "settled" needs every condition above.
"""
import threading

from . import decide
from ..consul import health, lighthttp, nodedump
from ..service import history, observe
from ..core.errors import ConsulError, EngineError, MedicError
from ..service import heal_counts, heal_model
from ..consul import api
from ..engine.engine import failures as engine_failures


def engine_index(client):
    """One list call -> {(project, service): [LocalContainer]} (start time not known: see below)."""
    try:
        summaries = client.api.containers(all=True, filters={"label": observe.COMPOSE_PROJECT})
    except engine_failures() as e:
        raise EngineError("Docker engine: listing containers failed: %s" % e) from None
    out = {}
    for s in summaries:
        labels = s.get("Labels") or {}
        if labels.get(observe.COMPOSE_ONEOFF, "False") == "True":
            continue
        key = (labels.get(observe.COMPOSE_PROJECT), labels.get(observe.COMPOSE_SERVICE))
        ports = {(p.get("IP") or "0.0.0.0", int(p["PublicPort"])) for p in s.get("Ports") or () if p.get("PublicPort")}
        created = float(s.get("Created") or 0)
        name = ((s.get("Names") or ["/"])[0]).lstrip("/")
        # StartedAt is not in the list answer; `created` stands in. It is only ever used
        # for containers that are running AND passing, whose class does not depend on it.
        c = heal_model.Container(s["Id"], name, s.get("State") or "unknown", created, created, None)
        out.setdefault(key, []).append(observe.LocalContainer(c, ports))
    return out


def histories(conn, env):
    """{service: History} of every service with a history (one recursive KV read)."""
    prefix = history.history_key(env, "x")[:-1]
    out = {}
    for key, raw in api.kv_list(conn, prefix):
        try:
            out[key[len(prefix):]] = history.parse(raw, key)
        except ConsulError:
            out[key[len(prefix):]] = None  # corrupt: the full path will say so
    return out


def settled(sp, obs, hist, now):
    """True when the service certainly needs nothing (see the module docstring). Pure."""
    if hist is None or obs.unknown or obs.stale:
        return False
    counts = heal_counts.classify(sp, obs, now)
    if counts.passing != sp.instances or counts.pending or counts.failing or counts.stopped or counts.dying:
        return False
    if any(c.state != "running" or c.passing is not True for c in obs.containers):
        return False
    d = decide.decide(sp, obs, hist, now)
    return (d.kind == "noop" and d.settle is None and d.circuit is None
            and tuple(d.suspects) == tuple(hist.suspects))


def _read(st, env):
    """One Consul address's (node dump, {service: History})."""
    with lighthttp.Connection(st) as conn:
        _, nodes, _ = conn.get_json(nodedump.NODES_PATH)
        return nodes, histories(conn, env)


class Prefetch:
    """`_read` for the run's default Consul settings, started now in a thread."""

    def __init__(self, st, env):
        self.settings, self._out = st, None
        self._thread = threading.Thread(target=self._run, args=(st, env), daemon=True, name="triage-prefetch")
        self._thread.start()

    def _run(self, st, env):
        try:
            self._out = _read(st, env)
        except Exception as e:  # noqa: BLE001 relay: the thread's failure, whatever it is, is raised in the main thread (take)
            self._out = e

    def take(self, st):
        """The prefetched reads if `st` is what was fetched, else None. Raises what the read raised."""
        if st != self.settings:
            return None
        self._thread.join(st.timeout * 2 + 1)
        out, self._out = self._out, None
        if out is None:
            raise ConsulError("Consul at %s: the triage read did not finish" % st.addr)
        if isinstance(out, BaseException):
            raise out
        self.settings = None  # taken once
        return out


def split(specs, env, settings_for, engine, now, prefetch=None):
    """[Spec] -> (needs_work [Spec], settled [(Spec, reason)]). Never raises MedicError:
    whatever triage cannot read goes to the full path."""
    compose = [sp for sp in specs if sp.scale.driver == "compose"]
    needs = [sp for sp in specs if sp.scale.driver != "compose"]
    done = []
    if not compose:
        return needs, done
    try:
        client = engine.get()
        local = engine_index(client)
        host = observe.engine_host(client)
    except MedicError:
        return specs, []
    by_addr = {}
    for sp in compose:
        by_addr.setdefault(settings_for(sp).addr, []).append(sp)
    for group in by_addr.values():
        try:
            st = settings_for(group[0])
            nodes, hists = (prefetch and prefetch.take(st)) or _read(st, env)
            entries = nodedump.entries_by_service(nodes, {sp.service.lower() for sp in group})
        except MedicError:
            needs.extend(group)
            continue
        for sp in group:
            try:
                instances = health.parse_instances(entries.get(sp.service.lower(), []), sp.service)
                instances = [i for i in instances if i.id]  # same shape as health/service
                obs = observe.match(instances, local.get((sp.scale.project, sp.scale.service), []), host, sp.scale)
                hist = hists.get(sp.service, history.parse(None))
                if settled(sp, obs, hist, now):
                    done.append((sp, "count met: %d/%d passing, every container here running and passing "
                                     "(triage: no lock needed)" % (sp.instances, sp.instances)))
                else:
                    needs.append(sp)
            except MedicError:
                needs.append(sp)
    return needs, done
