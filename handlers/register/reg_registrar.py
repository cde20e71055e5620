"""Registrar: the engine's serving containers kept equal to the agent's services.

I/O: the engine (docker SDK) and the agent (reg_agent) are passed in; the decisions are
reg_labels.desired and reg_diff.diff; one audit record per action or deliberate non-action.
"""
import time

from ..core.errors import ConsulError, EngineError
from ..engine.engine import failures as engine_failures, not_found
from .reg_agent import Refused
from ..catalog.reg_checks import is_refused
from .reg_diff import diff, event_action, event_effect, event_exit_code, matches
from .reg_labels import desired, is_serving, registrations
from ..catalog.reg_model import META_CONTAINER
from .reg_wake import Wakes


def _engine_error(e):
    return EngineError("Docker engine: %s" % (str(e).splitlines()[0] if str(e) else type(e).__name__))


class Registrar:
    """Keeps the agent's services equal to the running containers' published ports.

    State in memory: the inspect data of every serving container (`self.containers`),
    the container IDs whose change is not yet applied (`self.pending`) and whether a
    full listing / full converge is due. A failed Consul call keeps all of it, so a
    change is never lost: it is applied when the agent answers again. A request Consul
    refuses (reg_agent.Refused) is audited and retried for that service alone, with its
    own backoff (`self.retry`), while every other container goes on.
    """

    STOPPING_GRACE = 60.0  # a container that got a fatal signal stays unregistered this long
    RETRY_FIRST, RETRY_MAX = 2.0, 300.0  # backoff of a refused request, per service ID

    def __init__(self, opts, agent, engine, audit=None, filters=(), log=None, clock=time.monotonic,
                 wall=time.time, probe=None, fallback=None):
        self.opts, self.agent, self.engine, self.probe = opts, agent, engine, probe  # probe: reg_probe
        self.audit, self.filters, self.log = audit, tuple(filters), log or (lambda msg: None)
        self.clock, self.wall = clock, wall
        self.containers = {}     # id -> inspect
        self.stopping = {}       # id -> (clock() of the fatal kill, service names it had)
        self.exited = {}         # id -> last serving inspect (--deregister on-success, non-zero exit)
        self.pending = set()     # container ids with unapplied changes
        self.pending_full = False
        self.retry = {}          # service id -> [attempts, clock() of the next try, container id]
        self.wakes = Wakes(agent, self.record, wall, fallback)  # medic/<env>/wake/ keys (reg_wake)
        self.stats = {"register": 0, "deregister": 0, "unchanged": 0, "skipped": 0, "refused": 0, "wake": 0}
        self._skips_seen, self._skips_now = set(), set()
        self._quiet, self._summary_at = 0, clock()

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
        try:
            summaries = self.engine.api.containers(filters={"label": list(self.filters)} if self.filters else None)
        except engine_failures() as e:
            raise _engine_error(e) from None
        fresh = {}
        for s in summaries:
            try:
                data = self.engine.api.inspect_container(s["Id"])
            except not_found():
                continue
            except engine_failures() as e:
                raise _engine_error(e) from None
            if is_serving(data) and matches((data.get("Config") or {}).get("Labels"), self.filters):
                fresh[data["Id"]] = data
        for cid in list(self.exited):  # kept only while the exited container exists and is not serving
            try:
                gone = cid in fresh or is_serving(self.engine.api.inspect_container(cid))
            except not_found():
                gone = True
            except engine_failures() as e:
                raise _engine_error(e) from None
            if gone:
                self.exited.pop(cid)
        self.pending |= set(self.containers) ^ set(fresh)
        self.containers = fresh
        self.pending_full = True

    def _names(self, cid):
        data = self.containers.get(cid) or self.exited.get(cid)
        try:
            return sorted({r.name for r in registrations(data, self.opts)[0]}) if data else []
        except Exception:  # noqa: BLE001 boundary: reg_labels.desired refused this data whatever it raised: no names
            return []

    def on_event(self, event):
        """Apply one Docker event to the in-memory state; returns the container id touched."""
        effect, cid = event_effect(event)
        if not cid or effect is None:
            return None
        action = event_action(event)
        labels = dict((event.get("Actor") or {}).get("Attributes") or {})
        if effect == "deregister":
            if action == "die" and cid in self.stopping:
                # deregistered at its stop signal; its exit changes nothing in Consul: wake medic-heal
                code = event_exit_code(event)
                for name in self.stopping[cid][1]:
                    self.wakes.add(name, cid, "container %s exited (code %s) after it was deregistered at "
                                   "its stop signal" % (labels.get("name") or cid[:12], code))
            if self.opts.deregister == "on-success" and cid not in self.stopping:
                if action == "die" and (event_exit_code(event) or 0) != 0 and cid in self.containers:
                    self.exited[cid] = self.containers.pop(cid)  # kept registered: its check tells
                    return cid
                if (action in ("stop", "oom") and cid in self.exited) or (action == "oom" and cid in self.containers):
                    return None  # the die event (its exit code) decides
            if action.startswith("kill"):  # a second kill (SIGKILL after the stop timeout) keeps the first's
                self.stopping[cid] = (self.clock(), self.stopping.get(cid, (0, self._names(cid)))[1])
            else:
                self.stopping.pop(cid, None)
            self.containers.pop(cid, None)
            if action == "destroy":
                self.exited.pop(cid, None)
            self.pending.add(cid)
            return cid
        if self.filters and not matches(labels, self.filters):
            return None
        self.stopping.pop(cid, None)
        self.exited.pop(cid, None)
        try:
            data = self.engine.api.inspect_container(cid)
        except not_found():
            data = None
        except engine_failures() as e:
            self.pending.add(cid)
            raise _engine_error(e) from None
        if data and is_serving(data) and matches((data.get("Config") or {}).get("Labels"), self.filters):
            self.containers[cid] = data
        else:
            self.containers.pop(cid, None)
        self.pending.add(cid)
        return cid

    # -- consul side
    def next_retry(self, after=float("-inf")):
        """clock() of the earliest retry of a refused request later than `after`, or None."""
        return min((r[1] for r in self.retry.values() if r[1] > after), default=None)

    def due_retries(self, now=None):
        """Mark the containers whose refused request is due as pending; returns how many."""
        now = self.clock() if now is None else now
        due = {r[2] for r in self.retry.values() if r[1] <= now}
        self.pending |= due
        return len(due)

    def converge(self, scope=None):
        """Diff the desired state against the agent and apply the difference.

        scope None: the whole fleet (ghosts removed); else a set of container IDs.
        Raises ConsulError with the pending state intact when the agent fails (down);
        a request the agent refuses is audited and retried on its own (per service).
        """
        now = self.clock()
        self.stopping = {c: v for c, v in self.stopping.items() if now - v[0] < self.STOPPING_GRACE}
        try:
            roles, bad_roles, lost = self.agent.roles() + (None,)
        except ConsulError as e:  # KV needs a leader; the agent's own endpoints below do not
            roles, bad_roles, lost = {}, [], e
        services, checks = self.agent.services(), self.agent.checks()
        fleet = list(self.containers.values()) + list(self.exited.values())
        want, skips = desired(fleet, self.opts, roles, exclude=set(self.stopping), exited=set(self.exited))
        d = diff(want, services, checks, self.opts.registrar_id, scope)
        self._skips_now = set()
        for key, why in bad_roles:
            self._note_skip(("role", key, why), {"action": "ignore", "key": key, "reason": "role record: " + why})
        for s in list(skips) + list(d.refused):
            self._note_skip(s, {"action": s.action, "container": s.container, "service_id": s.what,
                                "reason": s.reason})
        self._skips_seen &= self._skips_now  # forget what no longer applies
        wanted = {op.service_id for op in d.ops}
        for sid in [s for s in self.retry if s not in wanted and (scope is None or self.retry[s][2] in scope)]:
            self.retry.pop(sid)  # no longer wanted (container gone, labels changed, done by hand)
        # without the role records only deregistrations (and wake-ups) go now: a registration
        # without its role tags would flap them; the loop retries the whole converge (raised below)
        for op in [o for o in d.ops if not lost or o.action == "deregister"]:
            r = self.retry.get(op.service_id)
            if r is not None and now < r[1]:
                continue  # refused before: waits for its own retry time
            try:
                self._apply(op, services)
            except Refused as e:
                self._refused(op, e, now, services)
                continue
            self.retry.pop(op.service_id, None)
            self.stats[op.action] += 1
            self.log("%s %s (%s)" % (op.action, op.service_id, op.reason))
        self.wakes.flush()
        self.stats["wake"] = self.wakes.written
        if lost:
            raise lost
        self.stats["unchanged"] = d.unchanged
        return d

    def _apply(self, op, services):
        if op.action == "register":
            reg, body = op.registration, op.registration.body()
            # a new registration's check starts passing only if one probe of it passed just now
            first = self.probe(body.get("Check")) if self.probe and op.service_id not in services else None
            if first:
                body["Check"]["Status"] = first
            self.agent.register(body)
            self.record({"action": "register", "service_id": op.service_id, "service": reg.name,
                         "address": "%s:%d" % (reg.address, reg.port), "tags": list(reg.tags),
                         "container": reg.container_id, "reason": op.reason, "first_probe": first})
            check = dict(reg.check or ())
            if is_refused(check):
                self.agent.fail_check("service:" + reg.id, check["Notes"])
        else:
            self.agent.deregister(op.service_id)
            self.record({"action": "deregister", "service_id": op.service_id,
                         "service": (services.get(op.service_id) or {}).get("Service"), "reason": op.reason})

    def _refused(self, op, err, now, services):
        cid = op.registration.container_id if op.registration else \
            ((services.get(op.service_id) or {}).get("Meta") or {}).get(META_CONTAINER, "")
        attempts = (self.retry.get(op.service_id) or [0])[0] + 1
        delay = min(self.RETRY_FIRST * 2 ** (attempts - 1), self.RETRY_MAX)
        self.retry[op.service_id] = [attempts, now + delay, cid]
        self.stats["refused"] += 1
        msg = "%s refused: %s; this service alone is retried in %gs (attempt %d), the others go on" % (
            op.action, err, delay, attempts)
        self.log("%s %s" % (op.service_id, msg))
        self.record({"action": "refused", "service_id": op.service_id, "container": cid, "status": err.status,
                     "attempt": attempts, "retry_in": delay, "reason": msg})

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

    QUIET_WHY = ("periodic resync", "resync")  # full resyncs that are routine, not an event
    SUMMARY_EVERY = 3600.0  # a routine resync that changed nothing is audited once an hour, as a summary

    def record_resync(self, d, why):
        """Audit a full resync. One that wrote something, the first one and the one after an
        engine reconnect are always recorded; routine ones that changed nothing only as an
        hourly summary (the log says each one at -v), so a quiet fleet does not fill the log."""
        regs = sum(1 for o in d.ops if o.action == "register")
        deregs, what = len(d.ops) - regs, "applied the differences" if d.ops else "nothing differs, nothing written"
        self.log("%s: %d registered, %d deregistered, %d unchanged, %d refused: %s"
                 % (why, regs, deregs, d.unchanged, len(self.retry), what))
        now = self.clock()
        if not d.ops and why in self.QUIET_WHY:
            self._quiet += 1
            if now - self._summary_at < self.SUMMARY_EVERY:
                return
            what = "%s (%d routine resyncs changed nothing since the last record)" % (what, self._quiet)
        self._quiet, self._summary_at = 0, now
        self.record({"action": "resync", "containers": len(self.containers), "registered": regs,
                     "deregistered": deregs, "unchanged": d.unchanged, "refused": len(self.retry),
                     "reason": "%s: %s" % (why, what)})

    def resync(self, why="resync"):
        """One full resync: list the engine, converge the fleet. Raises on failure."""
        self.list_containers()
        d, _ = self.sync_pending()
        self.record_resync(d, why)
        return d
