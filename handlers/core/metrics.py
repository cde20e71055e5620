"""Prometheus metrics (docs/metrics.md): what medic's audit records say, counted. Pure.

    METRICS                             every metric: type, help, label names
    observe(samples, rec, prog, now)    one audit record -> counter/gauge/histogram changes
    Samples                             those values, mergeable and JSON-serialisable

Every action and deliberate non-action already writes one audit record (audit.py); exporting
turns those records into numbers, so the metrics and the audit log cannot disagree. How they
leave the process (a node_exporter textfile, /metrics of a daemon) is metrics_export.py.

Label values are bounded: executable names, decision and action kinds (fixed sets in the
code), and service names (one per spec or per Consul service medic handles). Never a
container ID, a host or a free-text reason.
"""
import time

HEAL_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# name -> (type, help, label names). Counters end in _total; durations are seconds.
SVC = ("env", "service")
METRICS = {
    "medic_build_info": ("gauge", "consul-medic's version (always 1)", ("executable", "version")),
    "medic_runs_total": ("counter", "Runs of an executable that ended, by exit state", ("executable", "status")),
    "medic_last_run_timestamp_seconds": ("gauge", "Last run: a handler's end, a daemon's loop turn", ("executable",)),
    "medic_audit_records_total": ("counter", "Audit records, by record kind", ("executable", "kind")),
    "medic_service_desired": ("gauge", "Instances the spec declares", SVC),
    "medic_service_passing": ("gauge", "Instances passing their checks", SVC),
    "medic_service_pending": ("gauge", "Started within heal.grace, not passing yet", SVC),
    "medic_service_paused": ("gauge", "1 while medic-heal --pause is in force", SVC),
    "medic_service_circuit_open": ("gauge", "1 while the service's circuit is open (no heal action)", SVC),
    "medic_service_shortfall_since_timestamp_seconds": ("gauge", "Since when fewer pass than declared (0: met)", SVC),
    "medic_service_heal_allowed_seconds": ("gauge", "cooldown + grace + backoff_max of the spec", SVC),
    "medic_service_last_decision_timestamp_seconds": ("gauge", "When medic-heal last decided each kind",
        SVC + ("decision",)),
    "medic_service_last_action_timestamp_seconds": ("gauge", "When medic-heal last started a scale or replace", SVC),
    "medic_heal_decisions_total": ("counter", "medic-heal decisions", SVC + ("decision",)),
    "medic_heal_attempts_total": ("counter", "Scale or replace commands run", ("env", "service", "result")),
    "medic_heal_outcomes_total": ("counter", "Verdicts on the last action", ("env", "service", "outcome")),
    "medic_heal_circuit_opened_total": ("counter", "Times a circuit opened", SVC),
    "medic_heal_time_to_heal_seconds": ("histogram", "From the heal action to the count restored", SVC),
    "medic_lb_renders_total": ("counter", "Render passes, by result", ("output", "result")),
    "medic_lb_writes_total": ("counter", "Output files replaced", ("output",)),
    "medic_lb_reloads_total": ("counter", "Reload commands run", ("output",)),
    "medic_lb_rejects_total": ("counter", "Candidates refused by --check-cmd, or reloads that failed", ("output",)),
    "medic_lb_last_good_services": ("gauge", "Services without a passing instance, kept or omitted",
        ("output", "state")),
    "medic_lb_service_last_good": ("gauge", "1 while served from last good servers", ("output", "service")),
    "medic_lb_render_duration_seconds": ("histogram", "One render pass, reload included", ("output",)),
    "medic_lb_reload_duration_seconds": ("histogram", "The reload command", ("output",)),
    "medic_failover_decisions_total": ("counter", "medic-failover decisions", ("env", "service", "action", "result")),
    "medic_failover_failovers_total": ("counter", "Replicas promoted to master", SVC),
    "medic_failover_holds_total": ("counter", "Failovers not done (lock, pause, no replica)", SVC),
    "medic_failover_split_brains_total": ("counter", "Two or more masters found (and resolved)", SVC),
    "medic_register_events_total": ("counter", "Docker engine events handled", ()),
    "medic_register_registrations_total": ("counter", "Services registered with the agent", ()),
    "medic_register_deregistrations_total": ("counter", "Services deregistered from the agent", ()),
    "medic_register_resyncs_total": ("counter", "Full resyncs (engine listing against the agent)", ()),
    "medic_register_resync_differences_total": ("counter", "Changes a full resync found missing", ()),
    "medic_register_refusals_total": ("counter", "Registrations refused (labels: refuse, ignore; Consul: consul)",
        ("reason",)),
    "medic_rollout_steps_total": ("counter", "Rollout steps, by step and result", ("service", "step", "result")),
    "medic_rollout_runs_total": ("counter", "Rollouts ended, by decision", ("service", "decision")),
    "medic_rollout_failures_total": ("counter", "Rollouts that failed (rolled back or not)", ("service",)),
    "medic_rollout_rollbacks_total": ("counter", "Rollouts rolled back", ("service",)),
    "medic_drain_steps_total": ("counter", "Drain steps, by step and result", ("step", "result")),
    "medic_drain_runs_total": ("counter", "Drains ended, by decision", ("decision",)),
    "medic_drain_failures_total": ("counter", "Drains that ended in a failure", ()),
}

HEAL_DECISIONS = ("noop", "heal", "hold", "skip", "error", "reset", "pause", "resume", "unlock", "ignore")
_WORDS = frozenset(("ok", "failed", "done", "write", "unchanged", "reject", "kept", "omitted", "restored", "lost",
                    "refuse", "ignore", "consul", "dry-run", "rolled-back", "abort", "warning", "critical",
                    "unknown", "noop", "repair", "retag", "bootstrap", "failover", "split_brain", "hold"))


def _word(value, allowed=_WORDS):
    """A label value from a fixed set; anything else is 'other' (a bounded label stays bounded)."""
    v = str(value or "none")
    return v if v in allowed or v == "none" else "other"


def _step(value):
    """Rollout and drain step kinds: short identifiers from the plan code."""
    v = str(value or "none")
    return v if len(v) <= 32 and v.replace("-", "").replace("_", "").isalnum() else "other"


class Samples:
    """Counter, gauge and histogram values keyed by (name, ((label, value), ...)).

    Gauges carry how they merge: "set" replaces, "keep" sets only where nothing (or 0) is."""

    def __init__(self):
        self.counters, self.gauges, self.hists = {}, {}, {}

    @staticmethod
    def key(name, labels):
        return name, tuple(sorted((k, "" if v is None else str(v)[:200]) for k, v in labels.items()))

    def inc(self, name, value=1.0, **labels):
        k = self.key(name, labels)
        self.counters[k] = self.counters.get(k, 0.0) + value

    def set(self, name, value, **labels):
        self.gauges[self.key(name, labels)] = ("set", float(value))

    def keep(self, name, value, **labels):
        k = self.key(name, labels)
        if k not in self.gauges or self.gauges[k][1] == 0:
            self.gauges[k] = ("keep", float(value))

    def observe(self, name, value, **labels):
        k = self.key(name, labels)
        buckets = HEAL_BUCKETS if name == "medic_heal_time_to_heal_seconds" else FAST_BUCKETS
        h = self.hists.setdefault(k, {"buckets": [0] * len(buckets), "sum": 0.0, "count": 0})
        for i, le in enumerate(buckets):
            if value <= le:
                h["buckets"][i] += 1
        h["sum"] += value
        h["count"] += 1

    def merge(self, delta):
        """Add another run's changes to these (counters and histograms add up, gauges per their op)."""
        for k, v in delta.counters.items():
            self.counters[k] = self.counters.get(k, 0.0) + v
        for k, (op, v) in delta.gauges.items():
            if op == "set" or k not in self.gauges or self.gauges[k][1] == 0:
                self.gauges[k] = ("set", v)
        for k, h in delta.hists.items():
            mine = self.hists.setdefault(k, {"buckets": [0] * len(h["buckets"]), "sum": 0.0, "count": 0})
            mine["buckets"] = [a + b for a, b in zip(mine["buckets"], h["buckets"])]
            mine["sum"] += h["sum"]
            mine["count"] += h["count"]
        return self

    def to_json(self):
        def rows(d):
            return [[name, [list(p) for p in labels], v] for (name, labels), v in sorted(d.items())]
        return {"v": 1, "counters": rows(self.counters), "gauges": rows(self.gauges), "hists": rows(self.hists)}

    @classmethod
    def from_json(cls, doc):
        s = cls()
        if not isinstance(doc, dict) or doc.get("v") != 1:
            return s
        for attr in ("counters", "gauges", "hists"):
            target = getattr(s, attr)
            for name, labels, v in doc.get(attr) or ():
                if name in METRICS:
                    target[(name, tuple(tuple(p) for p in labels))] = tuple(v) if attr == "gauges" else v
        return s


def heal_facts(sp, hist, dec, now):
    """What a heal record adds for the metrics: the circuit after this decision, the shortfall the
    policy allows, and the time from the action to its count restored."""
    facts = {"circuit_open": dec.circuit == "open" or (hist.circuit is not None and dec.circuit != "close"),
             "heal_allowed": sp.heal.cooldown + sp.heal.grace + sp.heal.backoff_max}
    if dec.settle == "restored" and hist.actions:
        facts["heal_seconds"] = round(max(0.0, now - hist.actions[-1].time), 3)
    return facts


def observe(s, rec, prog, now=None):
    """Count one audit record into Samples `s`."""
    now = time.time() if now is None else now
    kind = rec.get("kind") or "heal"
    s.inc("medic_audit_records_total", executable=prog, kind=_step(kind))
    fn = _BY_KIND.get(kind)
    if fn is not None:
        fn(s, rec, now)
    return s


def _heal(s, rec, now):
    decision = rec.get("decision")
    if not decision or rec.get("dry_run"):
        return
    d = _word(decision, HEAL_DECISIONS)
    svc = {"env": rec.get("env") or "default", "service": rec.get("service") or ""}
    s.inc("medic_heal_decisions_total", **dict(svc, decision=d))
    if not rec.get("service"):
        return
    s.set("medic_service_last_decision_timestamp_seconds", now, **dict(svc, decision=d))
    if rec.get("argv") and rec.get("result") in ("ok", "failed"):
        s.inc("medic_heal_attempts_total", **dict(svc, result=rec["result"]))
        s.set("medic_service_last_action_timestamp_seconds", now, **svc)
    if rec.get("settle") in ("restored", "failed", "lost"):
        s.inc("medic_heal_outcomes_total", **dict(svc, outcome=rec["settle"]))
    if rec.get("heal_seconds") is not None:
        s.observe("medic_heal_time_to_heal_seconds", float(rec["heal_seconds"]), **svc)
    if rec.get("circuit") == "open":
        s.inc("medic_heal_circuit_opened_total", **svc)
    if rec.get("paused"):
        s.set("medic_service_paused", 1, **svc)
    counts = rec.get("observed")
    if isinstance(counts, dict):
        desired, passing = counts.get("declared"), counts.get("passing")
        s.set("medic_service_paused", 0, **svc)
        if desired is not None:
            s.set("medic_service_desired", desired, **svc)
        if passing is not None:
            s.set("medic_service_passing", passing, **svc)
        if counts.get("pending") is not None:
            s.set("medic_service_pending", counts["pending"], **svc)
        if desired is not None and passing is not None:
            if passing < desired:
                s.keep("medic_service_shortfall_since_timestamp_seconds", now, **svc)
            else:
                s.set("medic_service_shortfall_since_timestamp_seconds", 0, **svc)
    if rec.get("triage") and d == "noop":  # settled by triage: count met, nothing pending (triage.py)
        s.set("medic_service_shortfall_since_timestamp_seconds", 0, **svc)
        s.set("medic_service_pending", 0, **svc)
    if rec.get("circuit_open") is not None:
        s.set("medic_service_circuit_open", 1 if rec["circuit_open"] else 0, **svc)
    if rec.get("heal_allowed") is not None:
        s.set("medic_service_heal_allowed_seconds", rec["heal_allowed"], **svc)


def _lb(s, rec, now):
    out = {"output": rec.get("out") or ""}
    action = _word(rec.get("action"))
    s.inc("medic_lb_renders_total", **dict(out, result=action))
    if action == "reject":
        s.inc("medic_lb_rejects_total", **out)
        if rec.get("written"):
            s.inc("medic_lb_writes_total", **out)
        return
    if rec.get("changed"):
        s.inc("medic_lb_writes_total", **out)
    if rec.get("reloaded"):
        s.inc("medic_lb_reloads_total", **out)
    if rec.get("seconds") is not None:
        s.observe("medic_lb_render_duration_seconds", float(rec["seconds"]), **out)
    if rec.get("reload_seconds") is not None:
        s.observe("medic_lb_reload_duration_seconds", float(rec["reload_seconds"]), **out)
    kept, omitted = list(rec.get("kept") or ()), list(rec.get("omitted") or ())
    s.set("medic_lb_last_good_services", len(kept), **dict(out, state="kept"))
    s.set("medic_lb_last_good_services", len(omitted), **dict(out, state="omitted"))
    for name in kept + omitted:
        s.set("medic_lb_service_last_good", 1, **dict(out, service=name))
    for name in rec.get("recovered") or ():
        s.set("medic_lb_service_last_good", 0, **dict(out, service=name))


def _failover(s, rec, now):
    svc = {"env": rec.get("env") or "default", "service": rec.get("service") or ""}
    action = _word(rec.get("action"))
    # a hold: no healthy replica (decided on what it saw) or waiting (lock held, paused)
    result = ("no-replica" if "seen" in rec else "waiting") if action == "hold" else _word(rec.get("result"))
    s.inc("medic_failover_decisions_total", **dict(svc, action=action, result=result))
    if action == "hold":
        s.inc("medic_failover_holds_total", **svc)
    elif action == "failover" and rec.get("result") == "done":
        s.inc("medic_failover_failovers_total", **svc)
    elif action == "split_brain" and rec.get("result") == "done":
        s.inc("medic_failover_split_brains_total", **svc)


def _register(s, rec, now):
    action = rec.get("action")
    if action == "register":
        s.inc("medic_register_registrations_total")
    elif action == "deregister":
        s.inc("medic_register_deregistrations_total")
    elif action == "resync":
        s.inc("medic_register_resyncs_total")
        s.inc("medic_register_resync_differences_total",
              float(rec.get("registered") or 0) + float(rec.get("deregistered") or 0))
    elif action in ("refuse", "ignore"):
        s.inc("medic_register_refusals_total", reason=action)
    elif action == "refused":
        s.inc("medic_register_refusals_total", reason="consul")


def _rollout(s, rec, now):
    svc = {"service": rec.get("service") or ""}
    if rec.get("what") == "step":
        s.inc("medic_rollout_steps_total", **dict(svc, step=_step(rec.get("step")), result=_word(rec.get("result"))))
    elif rec.get("what") == "end":
        decision = _word(rec.get("decision"))
        s.inc("medic_rollout_runs_total", **dict(svc, decision=decision))
        if decision in ("failed", "rolled-back"):
            s.inc("medic_rollout_failures_total", **svc)
        if decision == "rolled-back":
            s.inc("medic_rollout_rollbacks_total", **svc)


def _drain(s, rec, now):
    if rec.get("what") == "step":
        s.inc("medic_drain_steps_total", step=_step(rec.get("step")), result=_word(rec.get("result")))
    elif rec.get("what") == "end":
        s.inc("medic_drain_runs_total", decision=_step(rec.get("decision")))
        if rec.get("result") in ("critical", "unknown") or rec.get("decision") == "failed":
            s.inc("medic_drain_failures_total")


_BY_KIND = {"heal": _heal, "lb": _lb, "failover": _failover, "register": _register, "rollout": _rollout,
            "drain": _drain}
