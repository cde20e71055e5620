"""Rolling update of a Swarm service: the engine's own rolling update, driven through the SDK.

    SwarmRoll(engine, service, out, ...).run(ref) -> Outcome

The semantics of `docker service update --image REF --update-parallelism 1
--update-order start-first --update-failure-action rollback --update-monitor DEADLINE`:
one task at a time, the new task started before the old one stops, a task that fails
within the monitor period rolls the whole service back (rollback also one at a time,
start-first). Swarm keeps the update's state itself, so a killed run resumes by running
again: the service already names the image, and the run only waits for Swarm to finish.
A new task counts as up when it runs (or, when the image has a HEALTHCHECK, when it is
healthy): Swarm does not consult Consul or the LB output.
"""
import time

from ..core import runtime
from ..core.errors import EngineError
from ..core.status import Outcome, Status
from ..engine.engine import failures as engine_failures, swarm_update

DONE = ("completed",)
ROLLED_BACK = ("rollback_completed",)
STUCK = ("paused", "rollback_paused")


def image_of(svc_attrs):
    img = (((svc_attrs.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image") or ""
    return img.split("@", 1)[0]  # Swarm pins the digest: repo:tag@sha256:...


class SwarmRoll:
    def __init__(self, engine, service_name, out, audit=None, alert=None, paused=None, record=None, deadline=60.0,
                 timeout=1800.0, sleep=time.sleep, clock=time.monotonic):
        self.engine, self.name, self.out = engine, service_name, out
        self.audit = audit or (lambda rec: None)
        self.alert = alert or (lambda reason, live: None)
        self.paused = paused or (lambda: None)
        self.record = record or (lambda ref: None)
        self.deadline, self.timeout, self.sleep, self.clock = float(deadline), float(timeout), sleep, clock

    def _service(self):
        try:
            return self.engine.services.get(self.name)
        except engine_failures() as e:
            raise EngineError("Swarm service %s: %s" % (self.name, str(e).splitlines()[0][:200])) from None

    def run(self, ref, dry_run=False, abort=False):
        svc = self._service()
        current = image_of(svc.attrs)
        status = (svc.attrs.get("UpdateStatus") or {}).get("State")
        if abort:
            return self._end(Status.WARNING, "%s: --abort is for compose rollouts; Swarm rolls back by itself "
                             "(docker service rollback)" % self.name, "refuse")
        if dry_run:
            return self._end(Status.OK, "dry-run: %s: Swarm rolling update %s -> %s, one task at a time, start-first, "
                             "rollback on failure (monitor %.0f s)" % (self.name, current, ref, self.deadline),
                             "dry-run")
        if current != ref or status in ROLLED_BACK:
            why = self.paused()
            if why:
                return self._end(Status.WARNING, "%s: refused: paused: %s" % (self.name, why), "refuse")
            if current == ref and status in ROLLED_BACK:
                return self._end(Status.CRITICAL, "%s: Swarm already rolled %s back; fix the image first"
                                 % (self.name, ref), "rolled-back")
            cfg = dict(parallelism=1, order="start-first", delay=0, monitor=int(self.deadline * 1e9))
            try:
                swarm_update(svc, ref, dict(cfg, failure_action="rollback"), dict(cfg, failure_action="pause"))
            except engine_failures() as e:
                raise EngineError("Swarm: updating %s failed: %s" % (self.name, str(e).splitlines()[0][:200])) \
                    from None
            self.out.line("%s: Swarm rolling update %s -> %s started" % (self.name, current, ref))
            self.audit({"kind": "rollout", "what": "step", "step": "swarm-update", "service": self.name,
                        "image": ref, "from": current, "result": "ok"})
        return self._wait(ref, current)

    def _wait(self, ref, old):
        end, last = self.clock() + self.timeout, None
        while True:
            svc = self._service()
            st = svc.attrs.get("UpdateStatus") or {}
            state = st.get("State")
            if state != last:
                self.out.line("  swarm: %s%s" % (state or "no update running", ": " + st["Message"]
                                                  if st.get("Message") else ""))
                last = state
            if state in DONE or (state is None and image_of(svc.attrs) == ref):
                self.record(ref)
                return self._end(Status.OK, "%s: now on %s (Swarm rolling update)" % (self.name, ref), "done")
            if state in ROLLED_BACK:
                why = "Swarm rolled %s back to %s: %s" % (ref, image_of(svc.attrs), st.get("Message") or "")
                self.alert(why, None)
                return self._end(Status.CRITICAL, "%s: rollout to %s FAILED: %s" % (self.name, ref, why),
                                 "rolled-back")
            if state in STUCK or self.clock() >= end:
                why = "Swarm update %s: %s" % (state or "not finished", st.get("Message") or "")
                self.alert(why, None)
                return self._end(Status.CRITICAL, "%s: rollout to %s stopped: %s" % (self.name, ref, why), "failed")
            self.sleep(0.5)

    def _end(self, status, text, decision):
        self.out.close()
        self.audit({"kind": "rollout", "what": "end", "service": self.name, "decision": decision,
                    "result": status.name.lower(), "reason": text, "driver": "swarm"})
        return Outcome(status, runtime.status_line(status, text))
