"""Prometheus metrics (docs/metrics.md): what medic's audit records say, counted.

    observe(samples, rec, prog, now)    one audit record -> counter/gauge/histogram changes (pure)
    Samples                             those values, mergeable and JSON-serialisable
    Textfile(prog, dir, state_dir)      short-lived handlers: add this run's changes to the
                                        executable's state file under flock, then write
                                        DIR/medic_<prog>.prom atomically (node_exporter's
                                        textfile collector reads it)
    serve(addr, prog)                   daemons: /metrics over HTTP from the process's own Samples

Every action and deliberate non-action already writes one audit record (audit.py); exporting
turns those records into numbers, so the metrics and the audit log can never disagree. Off
unless asked for (MEDIC_METRICS_TEXTFILE_DIR, or --metrics-addr on a daemon): this module is
imported only then, and prometheus_client only when a file is written or /metrics is asked.

Label values are bounded: executable names, decision and action kinds (fixed sets in the
code), and service names (one per spec or per Consul service medic handles). Never a
container ID, a host or a free-text reason.
"""
import json
import os
import threading
import time

from . import audit

MEDIC_DIR = "/var/lib/consul-medic"
TEXTFILE_ENV = "MEDIC_METRICS_TEXTFILE_DIR"
STATE_ENV = "MEDIC_METRICS_STATE_DIR"
HEAL_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# name -> (type, help, label names). Counters end in _total; durations are seconds.
METRICS = {
    "medic_build_info": ("gauge", "consul-medic's version (always 1)", ("executable", "version")),
    "medic_runs_total": ("counter", "Runs of an executable that ended, by exit state",
                         ("executable", "status")),
    "medic_last_run_timestamp_seconds": ("gauge", "When the executable last ran (handlers: the end of a run; "
                                         "daemons: the last turn of their loop)", ("executable",)),
    "medic_audit_records_total": ("counter", "Audit records written, by executable and record kind",
                                  ("executable", "kind")),
    # medic-heal, per service
    "medic_service_desired": ("gauge", "Instances the spec declares (at the last heal run)", ("env", "service")),
    "medic_service_passing": ("gauge", "Instances passing their checks (at the last heal run)", ("env", "service")),
    "medic_service_pending": ("gauge", "Instances started within heal.grace, not passing yet (at the last heal run)",
                              ("env", "service")),
    "medic_service_paused": ("gauge", "1 while medic-heal --pause is in force", ("env", "service")),
    "medic_service_circuit_open": ("gauge", "1 while the service's circuit is open (no heal action)",
                                   ("env", "service")),
    "medic_service_shortfall_since_timestamp_seconds": (
        "gauge", "Since when fewer instances pass than declared (0: the count is met)", ("env", "service")),
    "medic_service_heal_allowed_seconds": (
        "gauge", "How long the heal policy allows a shortfall: cooldown + grace + backoff_max", ("env", "service")),
    "medic_service_last_decision_timestamp_seconds": (
        "gauge", "When medic-heal last decided each kind (noop, heal, hold, skip, error, ...)",
        ("env", "service", "decision")),
    "medic_service_last_action_timestamp_seconds": ("gauge", "When medic-heal last started a scale or replace",
                                                    ("env", "service")),
    "medic_heal_decisions_total": ("counter", "medic-heal decisions", ("env", "service", "decision")),
    "medic_heal_attempts_total": ("counter", "Scale or replace commands run, by result (ok, failed)",
                                  ("env", "service", "result")),
    "medic_heal_outcomes_total": ("counter", "Verdicts on the last action (restored, failed, lost)",
                                  ("env", "service", "outcome")),
    "medic_heal_circuit_opened_total": ("counter", "Times a circuit opened", ("env", "service")),
    "medic_heal_time_to_heal_seconds": ("histogram", "From the heal action to the count restored",
                                        ("env", "service")),
    # medic-lb
    "medic_lb_renders_total": ("counter", "Render passes, by result (write, unchanged, reject)",
                               ("output", "result")),
    "medic_lb_writes_total": ("counter", "Output files replaced", ("output",)),
    "medic_lb_reloads_total": ("counter", "Reload commands run", ("output",)),
    "medic_lb_rejects_total": ("counter", "Candidates refused by --check-cmd, or reloads that failed",
                               ("output",)),
    "medic_lb_last_good_services": ("gauge", "Services with no passing instance: kept on their last good "
                                    "servers (kept) or left out (omitted)", ("output", "state")),
    "medic_lb_service_last_good": ("gauge", "1 while the service is served from its last good servers",
                                   ("output", "service")),
    "medic_lb_render_duration_seconds": ("histogram", "One render pass: read Consul, render, check, write, reload",
                                         ("output",)),
    "medic_lb_reload_duration_seconds": ("histogram", "The reload command", ("output",)),
    # medic-failover
    "medic_failover_decisions_total": ("counter", "medic-failover decisions, by action and result",
                                       ("env", "service", "action", "result")),
    "medic_failover_failovers_total": ("counter", "Replicas promoted to master", ("env", "service")),
    "medic_failover_holds_total": ("counter", "Failovers not done: lock held, paused, or no healthy replica",
                                   ("env", "service")),
    "medic_failover_split_brains_total": ("counter", "Two or more masters found (and resolved)",
                                          ("env", "service")),
    # medic-register
    "medic_register_events_total": ("counter", "Docker engine events handled", ()),
    "medic_register_registrations_total": ("counter", "Services registered with the agent", ()),
    "medic_register_deregistrations_total": ("counter", "Services deregistered from the agent", ()),
    "medic_register_resyncs_total": ("counter", "Full resyncs (engine listing against the agent)", ()),
    "medic_register_resync_differences_total": ("counter", "Registrations and deregistrations a full resync "
                                                "found missing", ()),
    "medic_register_refusals_total": ("counter", "Containers refused for hostile or invalid labels (refuse), "
                                      "left out (ignore), or refused by Consul (consul)", ("reason",)),
    # medic-rollout, medic-drain
    "medic_rollout_steps_total": ("counter", "Rollout steps, by step and result", ("service", "step", "result")),
    "medic_rollout_runs_total": ("counter", "Rollouts ended, by decision (done, refuse, failed, rolled-back, "
                                 "dry-run)", ("service", "decision")),
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


def _lv(value):
    return "" if value is None else str(value)[:200]


class Samples:
    """Counter, gauge and histogram values keyed by (name, ((label, value), ...)).

    Gauges carry how they merge: "set" replaces, "keep" sets only where nothing (or 0) is."""

    def __init__(self):
        self.counters, self.gauges, self.hists = {}, {}, {}

    @staticmethod
    def key(name, labels):
        return name, tuple(sorted((k, _lv(v)) for k, v in labels.items()))

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

    def value(self, name, **labels):
        k = self.key(name, labels)
        if k in self.counters:
            return self.counters[k]
        if k in self.gauges:
            return self.gauges[k][1]
        return self.hists.get(k)

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


# -- audit records -> samples (pure) ----------------------------------------------------
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
    result = _word(rec.get("result") or ("hold" if action == "hold" else "none"))
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


# -- the sinks ----------------------------------------------------------------------------
_ACTIVE = []  # the one sink of this process while exporting is on


def active():
    return _ACTIVE[0] if _ACTIVE else None


def inc(name, value=1.0, **labels):
    """Count something no audit record says (the registrar's events); nothing when exporting is off."""
    sink = active()
    if sink is not None:
        sink.update(lambda s: s.inc(name, value, **labels))


def beat():
    """A daemon's loop turned: its liveness gauge now; nothing when exporting is off."""
    sink = active()
    if sink is not None:
        sink.update(lambda s: s.set("medic_last_run_timestamp_seconds", time.time(), executable=sink.prog))


class _Sink:
    def __init__(self, prog):
        self.prog = prog
        self.samples = Samples()
        self._lock = threading.Lock()

    def update(self, fn):
        with self._lock:
            fn(self.samples)

    def record(self, rec):
        self.update(lambda s: observe(s, rec, self.prog))

    def install(self):
        _ACTIVE[:] = [self]
        audit.SINKS[:] = [self.record]
        return self

    def uninstall(self):
        if active() is self:
            _ACTIVE[:] = []
            audit.SINKS[:] = []


def state_dir(environ=None):
    """MEDIC_METRICS_STATE_DIR, else `metrics/` beside the audit log (medic's own directory)."""
    env = os.environ if environ is None else environ
    return os.path.abspath(env.get(STATE_ENV) or os.path.join(os.path.dirname(audit.audit_path(None, env)),
                                                              "metrics"))


def _safe_prog(prog):
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in (prog or "medic"))[:64]
    return name or "medic"


class Textfile(_Sink):
    """A short-lived handler's exporter: this run's changes, added at its end to the executable's
    state (flock: concurrent runs queue, none loses another's counts), then the whole state
    written as DIR/medic_<prog>.prom (a temporary file renamed over it)."""

    def __init__(self, prog, textfile_dir, state):
        super().__init__(prog)
        self.dir, self.state = os.path.abspath(textfile_dir), os.path.abspath(state)
        base = _safe_prog(prog)
        self.state_path = os.path.join(self.state, base + ".json")
        self.lock_path = os.path.join(self.state, base + ".lock")
        self.prom_path = os.path.join(self.dir, base.replace("-", "_") + ".prom")

    def flush(self, status_name, now=None):
        import fcntl

        now = time.time() if now is None else now
        delta = self.samples
        delta.inc("medic_runs_total", executable=self.prog, status=status_name)
        delta.set("medic_last_run_timestamp_seconds", now, executable=self.prog)
        os.makedirs(self.state, mode=0o750, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            total = _load(self.state_path).merge(delta)
            _write_atomic(self.state_path, json.dumps(total.to_json(), sort_keys=True).encode())
            write_textfile(self.prom_path, total, self.prog)
        finally:
            os.close(fd)
        self.samples = Samples()
        return total


def _load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return Samples.from_json(json.load(f))
    except (OSError, ValueError):
        return Samples()  # none yet, or unreadable: counting starts again (Prometheus sees a reset)


def _write_atomic(path, data):
    d = os.path.dirname(path)
    tmp = os.path.join(d, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_textfile(path, samples, prog):
    from prometheus_client import write_to_textfile
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_to_textfile(path, registry(samples, prog))


def registry(samples, prog, lock=None):
    """A prometheus_client registry whose one collector yields `samples` (read under `lock`)."""
    from prometheus_client import CollectorRegistry
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(samples, prog, lock))
    return reg


class _Collector:
    def __init__(self, samples, prog, lock=None):
        self.samples, self.prog, self.lock = samples, prog, lock

    def collect(self):
        if self.lock is None:
            return families(self.samples, self.prog)
        with self.lock:
            return families(self.samples, self.prog)


def families(samples, prog):
    """The metric families of `samples` (and medic_build_info), in METRICS order."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    from . import runtime

    rows = {}
    for (name, labels), v in samples.counters.items():
        rows.setdefault(name, []).append((labels, v))
    for (name, labels), (_, v) in samples.gauges.items():
        rows.setdefault(name, []).append((labels, v))
    for (name, labels), h in samples.hists.items():
        rows.setdefault(name, []).append((labels, h))
    rows["medic_build_info"] = [((("executable", prog), ("version", runtime.version())), 1.0)]
    out = []
    for name, (kind, text, _) in METRICS.items():
        if name not in rows:
            continue
        by_names = {}
        for labels, v in sorted(rows[name], key=lambda r: r[0]):
            by_names.setdefault(tuple(k for k, _ in labels), []).append(([lv for _, lv in labels], v))
        for names, values in by_names.items():
            if kind == "counter":
                fam = CounterMetricFamily(name[:-len("_total")], text, labels=names)
                for lv, v in values:
                    fam.add_metric(lv, v)
            elif kind == "gauge":
                fam = GaugeMetricFamily(name, text, labels=names)
                for lv, v in values:
                    fam.add_metric(lv, v)
            else:
                fam = HistogramMetricFamily(name, text, labels=names)
                buckets = HEAL_BUCKETS if name == "medic_heal_time_to_heal_seconds" else FAST_BUCKETS
                for lv, h in values:
                    cum = [("%g" % le, c) for le, c in zip(buckets, h["buckets"])] + [("+Inf", h["count"])]
                    fam.add_metric(lv, cum, h["sum"])
            out.append(fam)
    return out


class Served(_Sink):
    """A daemon's exporter: its own Samples, read by /metrics at every scrape."""

    def start(self, host, port):
        from prometheus_client import start_http_server
        res = start_http_server(port, addr=host, registry=registry(self.samples, self.prog, self._lock))
        self.server = res[0] if isinstance(res, tuple) else None
        return self


def parse_addr(text):
    """'127.0.0.1:9464', '[::1]:9464' or ':9464' -> (host, port); ValueError on anything else."""
    host, sep, port = str(text or "").rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("--metrics-addr %r: want HOST:PORT (127.0.0.1:9464)" % (text,))
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if any(c.isspace() or c in "/[]" for c in host):
        raise ValueError("--metrics-addr %r: not a host" % (text,))
    return host or "0.0.0.0", int(port)


def serve(addr, prog):
    """Serve /metrics for this daemon on addr (HOST:PORT); exporting through a textfile stops."""
    from .errors import UsageError
    try:
        host, port = parse_addr(addr)
    except ValueError as e:
        raise UsageError(str(e)) from None
    sink = Served(prog).install()
    sink.update(lambda s: s.set("medic_last_run_timestamp_seconds", time.time(), executable=prog))
    try:
        return sink.start(host, port)
    except OSError as e:
        sink.uninstall()
        raise UsageError("--metrics-addr %s: %s" % (addr, e.strerror or e)) from None


def start_textfile(prog, environ=None):
    """The textfile exporter when MEDIC_METRICS_TEXTFILE_DIR is set, else None."""
    env = os.environ if environ is None else environ
    d = (env.get(TEXTFILE_ENV) or "").strip()
    if not d:
        return None
    return Textfile(prog, d, state_dir(env)).install()


def finish(sink, status_name):
    """The end of a run: flush the textfile exporter (a daemon's /metrics ends with its process)."""
    if not isinstance(sink, Textfile) or active() is not sink:
        return
    try:
        sink.flush(status_name)
    except (OSError, ValueError) as e:
        import sys
        sys.stderr.write("%s: metrics not written to %s: %s\n" % (sink.prog, sink.prom_path,
                                                                  getattr(e, "strerror", None) or e))
    finally:
        sink.uninstall()
