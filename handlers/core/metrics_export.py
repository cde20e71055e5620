"""Exporting the metrics (docs/metrics.md): off unless asked for.

    start_textfile(prog) / finish()     short-lived handlers (runtime.run, when
                                        MEDIC_METRICS_TEXTFILE_DIR is set): this run's changes are
                                        added at its end to the executable's state file under
                                        flock, then DIR/medic_<prog>.prom is written atomically
                                        for node_exporter's textfile collector
    serve(addr, prog)                   daemons (--metrics-addr): /metrics over HTTP from the
                                        process's own Samples
    inc(), beat()                       what no audit record says (engine events, a loop's turn)

Records reach the exporter through audit.SINKS. This module is imported only when exporting is
on, and prometheus_client only when a file is written or /metrics is served.
"""
import json
import os
import threading
import time

from . import audit
from .metrics import FAST_BUCKETS, HEAL_BUCKETS, METRICS, Samples, observe

TEXTFILE_ENV = "MEDIC_METRICS_TEXTFILE_DIR"
STATE_ENV = "MEDIC_METRICS_STATE_DIR"


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
    """A temporary file beside `path` (not *.prom: node_exporter skips it), 0644 whatever the umask
    (node_exporter runs as another user), renamed over `path`."""
    d = os.path.dirname(path)
    tmp = os.path.join(d, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_textfile(path, samples, prog):
    from prometheus_client import generate_latest
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomic(path, generate_latest(registry(samples, prog)))


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


def _version():
    try:
        from importlib.metadata import version
        return version("consul-medic")
    except (ImportError, ValueError, LookupError):  # PackageNotFoundError is an ImportError
        return "unknown"


def families(samples, prog):
    """The metric families of `samples` (and medic_build_info), in METRICS order."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    rows = {}
    for (name, labels), v in samples.counters.items():
        rows.setdefault(name, []).append((labels, v))
    for (name, labels), (_, v) in samples.gauges.items():
        rows.setdefault(name, []).append((labels, v))
    for (name, labels), h in samples.hists.items():
        rows.setdefault(name, []).append((labels, h))
    rows["medic_build_info"] = [((("executable", prog), ("version", _version())), 1.0)]
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

    def stop(self):
        if getattr(self, "server", None) is not None:
            self.server.shutdown()
            self.server.server_close()
        self.uninstall()


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
