"""Registrar: the engine's serving containers kept equal to the agent's services.

I/O: the engine (docker SDK) and the agent (reg_agent) are passed in; the decisions are
reg_labels.desired and reg_diff.diff; one audit record per action or deliberate non-action.
"""
import time

from .errors import EngineError
from .reg_diff import diff, event_effect, matches
from .reg_labels import desired, is_serving


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
