"""Rolling update, the loop: observe -> plan (pure) -> run ONE step -> record -> again.

    Executor(driver, store, declared, ...).run(ref, abort=False, dry_run=False) -> Outcome

I/O comes in: `driver` (rollout_io.ComposeDriver or a test double), `store`
(rollout_state.Store), `lb` (rollout_io.LbFile or None), `paused()` -> reason or None,
`alert(reason, live)`, `audit(record)`, `out` (a Progress). The caller holds the service
lock for the whole run.

A new instance that does not pass within `deadline` (or exits) turns the rollout into a
rollback: the same loop, rolling to the old image; the failed container is retired first
(it never served). Old containers are stopped in the background once the LB dropped them,
so their stop timeout does not add to the rollout; the run waits for every stop at the end.
"""
import collections
import threading
import time

from . import rollout_ahead, rollout_monitor, rollout_state
from ..service import rollout_image
from ..replace import rollout_io, rollout_plan
from ..core import runtime
from ..core.errors import EngineError, MedicError
from ..core.status import Outcome, Status




class Executor:
    def __init__(self, driver, store, declared, service, out, audit=None, alert=None, paused=None, lb=None,
                 record=None, deadline=60.0, stop_timeout=None, lb_timeout=30.0, sleep=time.sleep,
                 clock=time.monotonic, monitor=0.0):
        self.d, self.store, self.declared, self.service = driver, store, int(declared), service
        self.record = record or (lambda ref: None)
        self.out, self.lb = out, lb
        self.audit = audit or (lambda rec: None)
        self.alert = alert or (lambda reason, live: None)
        self.paused = paused or (lambda: None)
        self.deadline, self.stop_timeout, self.lb_timeout = float(deadline), stop_timeout, float(lb_timeout)
        self.sleep, self.clock = sleep, clock
        self.watch = rollout_monitor.Watch(monitor, out, self._audit, clock, sleep)
        self.lb_grace = rollout_io.LB_GRACE
        self.stopping = {}  # container id -> thread
        self.ahead = rollout_ahead.Ahead(driver)
        self.stop_errors = []

    # -- the run ---------------------------------------------------------------------
    def run(self, ref, abort=False, dry_run=False):
        state = self.store.load()
        if abort:
            if state is None:
                return self._end(Status.OK, "no rollout in progress: nothing to abort")
            if dry_run:
                return self._end(Status.OK, "dry-run: would roll back to %s" % state["from_image"], dry=True)
            state.update(phase="rolling-back", reason="aborted by --abort")
            self.store.save(state)
            self._audit("abort", reason="rollout to %s aborted by --abort" % state["image"])
            return self._loop(state)
        target_id = self.d.image_id(ref)
        if state is not None and state["image_id"] != target_id and state["phase"] == "rolling":
            return self._refuse("a rollout to %s is in progress (step %d); re-run with --image %s to resume, "
                                "or --abort to roll back" % (state["image"], state["step"], state["image"]))
        why = self.paused()
        if why:
            return self._refuse("paused: %s" % why)
        view, details = self.d.view()
        if state is None:
            p = rollout_plan.plan(self.declared, view, target_id)
            if p.kind == "refuse":
                return self._refuse(p.reason)
            if p.kind == "done":
                return self._finish_done(ref, None, p.reason)
            from_ref, from_id = _from_image(view, details, target_id)
            state = rollout_state.new(ref, target_id, from_ref, from_id,
                                      [rollout_plan.describe(s, ref) for s in p.steps], rollout_image.by())
        else:
            if state["phase"] == "failed":
                state["phase"] = "rolling-back"  # a re-run tries the rollback again
            want = target_id if state["phase"] == "rolling" else state["from_image_id"]
            p = rollout_plan.plan(self.declared, view, want, resuming=True)
        lines = [rollout_plan.describe(s, ref if state["phase"] == "rolling" else state["from_image"])
                 for s in p.steps]
        if dry_run:
            head = "dry-run: %s: %s -> %s, %d step(s): %s" % (self.service, state["from_image"], state["image"],
                                                              len(lines), p.reason)
            return self._end(Status.OK, "\n".join([head] + ["  %d. %s" % (i + 1, s) for i, s in enumerate(lines)]),
                             dry=True)
        state["plan"] = lines
        self.store.save(state)
        self.out.total = len(lines)
        self.out.line("%s: %s %s -> %s: %s" % (self.service, "resuming" if state["step"] else "rolling",
                                               state["from_image"], state["image"], p.reason))
        return self._loop(state)

    def _loop(self, state):
        limit = 4 * self.declared + 20
        try:
            while limit > 0:
                limit -= 1
                rolling = state["phase"] == "rolling"
                ref, want = ((state["image"], state["image_id"]) if rolling
                             else (state["from_image"], state["from_image_id"]))
                prepared = self.ahead.ids(ref)
                view, details = self.d.view(set(self.stopping) | set(prepared))
                dead = self.watch.died(view, state["new"], ref) if rolling else None
                p = rollout_plan.plan(self.declared, view, want, resuming=True) if not dead else None
                if p is not None and p.kind == "done":
                    if rolling and self.watch.after_last_step(lambda: self.d.view(set(self.stopping))[0], state["new"]):
                        continue
                    break
                step = p.steps[0] if p is not None else None
                # a pause stops the run before a start, never between a start and its retire: a paused
                # service has its declared number of instances, not one more
                why = self.paused() if rolling and step is not None and step.kind == "start" else None
                if why:
                    self._wait_stops()
                    self.ahead.drop()
                    self.store.save(state)
                    return self._refuse("paused after %d step(s): %s; run again to resume" % (state["step"], why),
                                        changed=True)
                more = any(s.kind == "start" for s in (p.steps[1:] if p is not None else ()))
                ok, why = self._step(step, ref, want, state, details, prepared, more) if not dead else (False, dead)
                state["step"] += 1
                self.out.step_done()
                if not ok:
                    if rolling and state["from_image_id"] == "none":
                        state.update(phase="failed", reason=why)
                        self.store.save(state)
                        return self._fail(state, why + "; no old image to roll back to")
                    if not rolling:
                        state.update(phase="failed", reason=(state.get("reason") or "") + "; rollback: " + why)
                        self.store.save(state)
                        return self._fail(state, "rollback to %s failed too: %s" % (state["from_image"], why))
                    self.ahead.drop()
                    state.update(phase="rolling-back", reason=why)
                    self.store.save(state)
                    self.out.line("%s: %s; rolling back to %s" % (self.service, why, state["from_image"]))
                    self.alert("rollout to %s failed: %s; rolling back to %s"
                               % (state["image"], why, state["from_image"]), None)
                else:
                    self.store.save(state)
            else:
                raise EngineError("no convergence after %d steps" % (4 * self.declared + 20))
        except MedicError as e:
            self._wait_stops()
            self.ahead.drop()
            state.update(reason=str(e))
            try:
                self.store.save(state)
            except MedicError:
                pass
            return self._fail(state, "stopped at step %d: %s; run again to resume, or --abort"
                              % (state["step"] + 1, e))
        self._wait_stops()
        self.ahead.drop()
        if state["phase"] == "rolling":
            return self._finish_done(state["image"], state, "%d step(s)" % state["step"])
        self.store.clear()
        return self._fail(state, "rolled back to %s (%s)" % (state["from_image"], state.get("reason")), done=True)

    # -- one step --------------------------------------------------------------------
    def _step(self, step, ref, want, state, details, prepared=(), more=False):
        t0 = self.clock()
        text = rollout_plan.describe(step, ref)
        self.out.line("  step %d: %s" % (state["step"] + 1, text))
        ok, why, cid = True, None, step.container
        if step.kind == "remove":
            self.d.remove(step.container)
        elif step.kind == "start":
            try:
                cid = self._start(ref, prepared)
            except EngineError as e:
                ok, why = False, "starting an instance of %s failed: %s" % (ref, e)
            else:
                state["new"].append(cid)
                self.store.save(state)
                if more and hasattr(self.d, "create"):
                    self.ahead.create(ref)  # the next start's container is created while this one comes up
                ok, why = self._ready(cid, want)
        elif step.kind == "wait":
            ok, why = self._ready(cid, want)
        elif step.kind == "retire":
            self._retire(details[step.container])
            state["old"].append(step.container)
        self._audit("step", step=step.kind, container=cid, result="ok" if ok else "failed", reason=why or text,
                    image=ref, duration=round(self.clock() - t0, 3))
        if ok:
            self.out.line("  step %d: done in %.1f s" % (state["step"] + 1, self.clock() - t0))
        return ok, why

    def _start(self, ref, prepared):
        """Start the container created ahead for `ref`, else a new one."""
        self.ahead.forget()
        for cid in prepared:
            try:
                self.d.run([cid])
                return cid
            except EngineError:
                self.ahead.remove(cid)
        return self.d.start(ref)

    def _ready(self, cid, want):
        """Wait until the container serves (passing, not in maintenance) and, with an LB, is listed."""
        end = self.clock() + self.deadline
        while True:
            view, details = self.d.view(set(self.stopping))
            box = next((b for b in view.boxes if b.id == cid), None)
            if box is None or box.state not in rollout_plan.RUNNING:
                return False, "new instance %s %s" % (cid[:12], "is gone" if box is None else "exited (%s)"
                                                      % box.state)
            if rollout_plan.serving(box):
                if self.lb is None:
                    return True, None
                left = max(0.5, end - self.clock())
                if self.lb.wait(details[cid].addrs, True, left):
                    return True, None
                return False, "the load balancer output %s did not list %s within the deadline" % (
                    self.lb.path, ", ".join(details[cid].addrs))
            if self.clock() >= end:
                return False, "new instance %s did not pass within %.0f s" % (cid[:12], self.deadline)
            self.sleep(0.1)

    def _retire(self, detail):
        self.d.maintenance(detail, True)
        if self.lb is not None and detail.addrs and not self.lb.wait(detail.addrs, False, self.lb_timeout):
            raise EngineError("the load balancer output %s still lists %s after %.0f s"
                              % (self.lb.path, ", ".join(detail.addrs), self.lb_timeout))
        grace = self.lb_grace if self.lb is not None else 0.0
        t = threading.Thread(target=self._stop, args=(detail.id, grace), daemon=True)
        self.stopping[detail.id] = t
        t.start()

    def _stop(self, cid, grace=0.0):
        # the LB output no longer lists it; its server applies that on reload (asynchronous): a short grace
        self.sleep(grace)
        try:
            self.d.stop(cid, self.stop_timeout)
        except MedicError as e:
            self.stop_errors.append(str(e))

    def _wait_stops(self):
        for t in list(self.stopping.values()):
            t.join()
        self.stopping = {}

    # -- endings ---------------------------------------------------------------------
    def _finish_done(self, ref, state, reason):
        rec = self.record(ref)
        if state is not None:
            self.store.clear()
        text = "%s: now on %s: %s" % (self.service, ref, reason)
        if self.stop_errors:
            return self._end(Status.WARNING, text + "; but stopping old instances failed: " + self.stop_errors[0],
                             decision="done", image=rec)
        return self._end(Status.OK, text, decision="done", image=rec)

    def _refuse(self, reason, changed=False):
        return self._end(Status.WARNING, "%s: %s: %s" % (self.service, "stopped" if changed else "refused", reason),
                         decision="refuse")

    def _fail(self, state, reason, done=False):
        live = None
        try:
            view, _ = self.d.view()
            live = sum(1 for b in view.boxes if rollout_plan.serving(b)) + view.remote_passing
        except MedicError:
            pass
        self.alert(reason, live)
        text = "%s: rollout to %s FAILED: %s; %s/%d passing" % (self.service, state["image"], reason,
                                                                "?" if live is None else live, self.declared)
        return self._end(Status.CRITICAL, text, decision="rolled-back" if done else "failed")

    def _end(self, status, text, decision=None, dry=False, **extra):
        self.out.close()
        self._audit("end", decision=decision or ("dry-run" if dry else "done"), result=status.name.lower(),
                    reason=text, dry_run=dry, **extra)
        return Outcome(status, runtime.status_line(status, text.split("\n")[0]) +
                       ("\n" + text.split("\n", 1)[1] if "\n" in text else ""))

    def _audit(self, what, **rec):
        self.audit(dict(rec, kind="rollout", what=what, service=self.service))


def _from_image(view, details, target_id):
    """The image the service runs now: the most common one among its serving containers."""
    olds = collections.Counter((b.image, details[b.id].image_ref) for b in view.boxes
                               if b.image != target_id and b.state in rollout_plan.RUNNING)
    if not olds:
        return "none", "none"
    (img_id, ref), _ = olds.most_common(1)[0]
    return ref, img_id
