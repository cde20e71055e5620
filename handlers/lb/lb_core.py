"""medic-lb's core: one render pass, and the watch loop around it.

    Renderer.once()     read Consul -> plan (never empty) -> render -> check, write, reload
                        -> last good state -> one audit record -> Outcome
    Renderer.watch()    render now, then again after every change Consul reports (blocking
                        queries on the catalog and the checks), bursts coalesced by wait min:max

Exit states: 0 rendered (written and reloaded, or unchanged); 1 a service had no passing
instance (kept its last good servers, or left out when it never had any) - alerted through
medic-notify when it starts; 2 the candidate failed --check-cmd (output not replaced) or
--reload-cmd failed; 3 bad input (template, options) or Consul unreachable.
"""
import queue as queue_mod
import threading
import time

from . import lb_apply, lb_render
from ..service import instances
from ..core import runtime
from ..core.errors import ConsulError, MedicError
from ..core.status import Outcome, Status


class Renderer:
    def __init__(self, settings, env, template, applier, state, selection, variables=None,
                 audit=None, alert=None, clock=time.monotonic):
        self.settings, self.env, self.template = settings, env, template
        self.applier, self.state, self.selection = applier, state, selection
        self.variables = dict(variables or {})
        self.audit, self.alert, self.clock = audit, alert, clock
        self.beat = None  # called at every turn of the watch loop (metrics.beat while exporting)
        self.refused = []

    def read(self):
        from ..consul.lighthttp import Connection
        with Connection(self.settings) as conn:
            reader = instances.Reader(conn)
            view = reader.view(**self.selection)
        self.refused = reader.refused
        return view

    def once(self):
        """One pass; returns an Outcome (raises MedicError only for bad input or Consul)."""
        t0 = self.clock()
        view = self.read()
        saved = self.state.load()
        refusals = self._refusals(set(saved.get("refused") or ()))
        p = lb_render.plan(view, saved["servers"], self.env)
        text = lb_render.render(self.template, p, self.variables)
        rec = {"kind": "lb", "out": self.applier.out, "services": len(p.services),
               "servers": sum(len(s.servers) for s in p.services),
               "kept": [n for n, _ in p.kept], "omitted": [n for n, _ in p.omitted]}
        degraded = [n for n, _ in p.kept] + [n for n, _ in p.omitted]
        # the last good servers: what the output now holds, plus earlier ones of services left out
        servers = dict(saved["servers"])
        servers.update(p.state)
        try:
            result = self.applier.apply(text, saved.get("reload_pending", False))
        except (lb_apply.ApplyError, OSError) as e:
            why = str(e) if isinstance(e, lb_apply.ApplyError) else "cannot write %s: %s" % (
                self.applier.out, e.strerror or e)
            if getattr(e, "written", False):  # the output is new, the server did not load it: retry next run
                self.state.save(servers, degraded, reload_pending=True, refused=refusals)
            self._audit(dict(rec, action="reject", reason=why, written=getattr(e, "written", False)))
            return Outcome(Status.CRITICAL, runtime.status_line(Status.CRITICAL, why))
        self.state.save(servers, degraded, refused=refusals)
        self._alert_new(degraded, set(saved["degraded"]), p)
        rec["recovered"] = sorted(set(saved["degraded"]) - set(degraded))
        if getattr(self.applier, "reload_seconds", None) is not None:
            rec["reload_seconds"] = round(self.applier.reload_seconds, 4)
        took = self.clock() - t0
        reasons = [r for _, r in p.kept + p.omitted] + refusals
        action = "write" if result.written else "unchanged"
        self._audit(dict(rec, action=action, changed=result.changed, reloaded=result.reloaded,
                         seconds=round(took, 4),
                         reason="; ".join([result.detail] + reasons)))
        summary = "%d service(s), %d server(s); %s (%.3f s)" % (rec["services"], rec["servers"],
                                                             result.detail, took)
        if reasons:
            return Outcome(Status.WARNING, runtime.status_line(Status.WARNING, "; ".join(reasons) + "; " + summary))
        return Outcome(Status.OK, runtime.status_line(Status.OK, summary))

    def _refusals(self, before):
        """What the trust boundary refused in this read -> [line] for the run's warning. A refusal
        not already in the state (`before`) gets one audit record (action `refuse`) and an alert."""
        from ..core import trust
        lines = [trust.describe(r) for r in self.refused]
        for r, line in zip(self.refused, lines):
            if line in before:
                continue
            self._audit({"kind": "lb", "action": "refuse", "service": r.service, "instance": r.id,
                         "field": r.field, "value": r.value, "reason": line})
            if self.alert is not None:
                self.alert({"kind": "warning", "service": r.service, "env": self.env, "action": "refuse",
                            "reason": line})
        return lines

    def _alert_new(self, degraded, before, p):
        if self.alert is None:
            return
        why = dict(p.kept + p.omitted)
        for name in degraded:
            if name not in before:
                self.alert({"kind": "warning", "service": name, "env": self.env, "action": "keep_last_good",
                            "reason": why[name], "live": 0})
        for name in sorted(before - set(degraded)):
            self.alert({"kind": "recovered", "service": name, "env": self.env, "action": "render",
                        "reason": "%s has passing instances again: upstream rendered from them" % name})

    def _audit(self, rec):
        if self.audit is not None:
            try:
                self.audit.write(rec)
            except OSError:
                pass

    def watch(self, stop, wait_min=0.2, wait_max=2.0, out=print, query_wait=30):
        """Render now and after every change until `stop` is set. Returns the last Outcome."""
        q = queue_mod.Queue()
        instances.Changes(self.settings, q, stop, wait=query_wait).start()
        last = self._pass(out)
        while not stop.is_set():
            if self.beat is not None:
                self.beat()
            try:
                item = q.get(timeout=0.5)
            except queue_mod.Empty:
                continue
            if item[0] == "error":
                out(runtime.status_line(Status.UNKNOWN, "consul: %s (retrying)" % item[2]))
                continue
            instances.coalesce(q, self.clock(), wait_min, wait_max, self.clock)
            if not stop.is_set():
                last = self._pass(out)
        return last

    def _pass(self, out):
        try:
            outcome = self.once()
        except (MedicError, ConsulError) as e:
            outcome = Outcome(Status.UNKNOWN, runtime.status_line(Status.UNKNOWN, "%s: %s" % (e.kind, e)))
        out(outcome.text)
        return outcome


def stop_on_signals():
    """An Event set by SIGTERM/SIGINT (the watch loop's way out)."""
    import signal
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def watch_until_signal(renderer, wait_min, wait_max):
    """--watch: run until SIGTERM/SIGINT; each pass prints its own status line."""
    def say(text):
        print(text, flush=True)

    stop = stop_on_signals()
    renderer.watch(stop, wait_min, wait_max, out=say)
    return Outcome(Status.OK, runtime.status_line(Status.OK, "stopped by signal"))
