"""Draining a Docker host, the run: observe every host -> plan (pure) -> run the steps.

    Drainer(hosts, specs, out, ...).drain(node) / .undo(node, rebalance) -> Outcome

I/O comes in: `hosts` = {node: Host(node, conn, drivers, eligible)} where `drivers` maps a
service to its rollout_io.ComposeDriver on that host's engine and `conn` talks to that
host's Consul agent; `record(node, doc|None)` writes/deletes the drain record
(medic/<env>/drain/<node>); `image(service)` -> the recorded image reference or None;
`lb` (rollout_io.LbFile) or None. The caller holds the locks of the services involved.
"""
import threading
import time
from collections import namedtuple

from . import drain_plan
from ..replace import rollout_io
from ..replace import rollout_plan
from ..core import runtime
from ..core.errors import EngineError, MedicError
from ..core.status import Outcome, Status
from ..consul import api

Host = namedtuple("Host", "node conn drivers eligible")


class Drainer:
    def __init__(self, hosts, specs, out, audit=None, alert=None, record=None, image=None, lb=None,
                 deadline=60.0, stop_timeout=None, lb_timeout=30.0, sleep=time.sleep, clock=time.monotonic):
        self.hosts, self.specs, self.out, self.lb = hosts, specs, out, lb
        self.audit = audit or (lambda rec: None)
        self.alert = alert or (lambda reason: None)
        self.record = record or (lambda node, doc: None)
        self.image = image or (lambda service: None)
        self.deadline, self.stop_timeout, self.lb_timeout = float(deadline), stop_timeout, float(lb_timeout)
        self.sleep, self.clock = sleep, clock

    # -- observing -------------------------------------------------------------------
    def observe(self):
        """-> ([HostState], [ServiceState], {(node, container id): rollout_io.Detail})."""
        states, details = [], {}
        for sp in self.specs:
            boxes = []
            for node, h in sorted(self.hosts.items()):
                drv = h.drivers.get(sp.service)
                if drv is None:
                    continue  # that host's engine did not answer: nothing of it can be seen or moved
                view, det = drv.view()
                boxes += [(node, b) for b in view.boxes]
                details.update({(node, cid): d for cid, d in det.items()})
            states.append(drain_plan.ServiceState(sp.service, sp.instances, tuple(boxes)))
        hs = [drain_plan.HostState(n, h.eligible) for n, h in sorted(self.hosts.items())]
        return hs, states, details

    # -- the runs --------------------------------------------------------------------
    def drain(self, node, dry_run=False):
        t0 = self.clock()
        hs, states, details = self.observe()
        p = drain_plan.plan_drain(node, hs, states)
        if p.kind == "refuse":
            return self._end(Status.WARNING, "%s: drain refused: %s" % (node, p.reason), "refuse")
        lines = [drain_plan.describe(s) for s in p.steps]
        if dry_run:
            return self._end(Status.OK, "\n".join(["dry-run: drain %s: %s" % (node, p.reason)] +
                                                  ["  %d. %s" % (i + 1, ln) for i, ln in enumerate(lines)]),
                             "dry-run")
        self.record(node, {"phase": "draining", "plan": lines})
        self.out.total = len(p.steps)
        self.out.line("drain %s: %s" % (node, p.reason))
        stopped = []
        try:
            for i, step in enumerate(p.steps):
                self._run_step(i, step, details, stopped)
        except MedicError as e:
            self.alert("drain of %s stopped: %s" % (node, e))
            return self._end(Status.CRITICAL, "%s: drain FAILED at a step: %s; the node stays as it is "
                             "(run again, or --undo)" % (node, e), "failed")
        left = self._left(node)
        took = self.clock() - t0
        if left:
            return self._end(Status.WARNING, "%s: drained, but %d container(s) still run: %s"
                             % (node, len(left), ", ".join(left[:5])), "drained")
        self.record(node, {"phase": "drained", "plan": lines})
        return self._end(Status.OK, "%s: empty, in maintenance: safe to upgrade (%d stopped, %.1f s)"
                         % (node, len(stopped), took), "drained", seconds=round(took, 3))

    def undo(self, node, rebalance=False, dry_run=False):
        hs, states, details = self.observe()
        p = drain_plan.plan_undo(node, hs, states, rebalance)
        lines = [drain_plan.describe(s) for s in p.steps]
        if dry_run:
            return self._end(Status.OK, "\n".join(["dry-run: undo %s: %s" % (node, p.reason)] +
                                                  ["  %d. %s" % (i + 1, ln) for i, ln in enumerate(lines)]),
                             "dry-run")
        self.out.total = len(p.steps)
        try:
            for i, step in enumerate(p.steps):
                self._run_step(i, step, details, [])
        except MedicError as e:
            return self._end(Status.CRITICAL, "%s: undo FAILED: %s" % (node, e), "failed")
        self.record(node, None)
        return self._end(Status.OK, "%s: %s" % (node, p.reason), "undone")

    # -- steps -----------------------------------------------------------------------
    def _run_step(self, i, step, details, stopped):
        t0 = self.clock()
        self.out.line("  step %d: %s" % (i + 1, drain_plan.describe(step)))
        h = self.hosts[step.node]
        if step.kind == "start":
            drv = h.drivers[step.service]
            try:
                new = drv.start(self.image(step.service), count=step.count)
            except EngineError as e:
                raise EngineError("starting %s on %s: %s" % (step.service, step.node, e)) from None
            new = [new] if isinstance(new, str) else new
            self._wait_serving(drv, new, step)
        elif step.kind in ("maintenance", "unmaintenance"):
            on = step.kind == "maintenance"
            params = [("enable", "true" if on else "false")] + ([("reason", "medic-drain")] if on else [])
            h.conn.call("PUT", api.NODE_MAINTENANCE, params)
            if on and self.lb is not None:
                addrs = [a for (n, _), d in details.items() if n == step.node for a in d.addrs]
                if addrs and not self.lb.wait(addrs, False, self.lb_timeout):
                    raise EngineError("the LB output %s still lists %s" % (self.lb.path, ", ".join(addrs)))
                self.sleep(rollout_io.LB_GRACE)  # the server applies the new output on reload
        elif step.kind == "stop":
            self._stop_all(h.drivers[step.service], step.containers, stopped)
        elif step.kind == "retire":
            drv = h.drivers[step.service]
            for cid in step.containers:
                d = details[(step.node, cid)]
                drv.maintenance(d, True, reason="medic-drain: rebalancing")
                if self.lb is not None and d.addrs and not self.lb.wait(d.addrs, False, self.lb_timeout):
                    raise EngineError("the LB output %s still lists %s" % (self.lb.path, ", ".join(d.addrs)))
            self._stop_all(drv, step.containers, stopped)
        self.audit({"kind": "drain", "what": "step", "step": step.kind, "node": step.node, "service": step.service,
                    "count": step.count, "containers": list(step.containers), "result": "ok",
                    "duration": round(self.clock() - t0, 3)})
        self.out.line("  step %d: done in %.1f s" % (i + 1, self.clock() - t0))
        self.out.step_done()

    def _wait_serving(self, drv, new, step):
        end = self.clock() + self.deadline
        while True:
            view, det = drv.view()
            boxes = {b.id: b for b in view.boxes}
            gone = [c for c in new if c not in boxes or boxes[c].state not in rollout_plan.RUNNING]
            if gone:
                raise EngineError("new instance(s) of %s on %s exited: %s" % (step.service, step.node,
                                                                             ", ".join(c[:12] for c in gone)))
            if all(rollout_plan.serving(boxes[c]) for c in new):
                addrs = [a for c in new for a in det[c].addrs]
                if self.lb is None or self.lb.wait(addrs, True, max(0.5, end - self.clock())):
                    return
                raise EngineError("the LB output %s did not list %s in time" % (self.lb.path, ", ".join(addrs)))
            if self.clock() >= end:
                raise EngineError("new instance(s) of %s on %s did not pass within %.0f s"
                                  % (step.service, step.node, self.deadline))
            self.sleep(0.1)

    def _stop_all(self, drv, cids, stopped):
        errors = []

        def stop(cid):
            try:
                drv.stop(cid, self.stop_timeout)
                stopped.append(cid)
            except MedicError as e:
                errors.append(str(e))
        threads = [threading.Thread(target=stop, args=(c,), daemon=True) for c in cids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise EngineError(errors[0])

    def _left(self, node):
        h = self.hosts[node]
        out = []
        for drv in h.drivers.values():
            view, _ = drv.view()
            out += [b.name for b in view.boxes if b.state in rollout_plan.RUNNING]
        return out

    def _end(self, status, text, decision, **extra):
        self.out.close()
        self.audit(dict({"kind": "drain", "what": "end", "decision": decision, "result": status.name.lower(),
                         "reason": text.split("\n")[0]}, **extra))
        first, _, rest = text.partition("\n")
        return Outcome(status, runtime.status_line(status, first) + ("\n" + rest if rest else ""))
