"""What every service of one medic-heal run shares, built once (handlers/heal/healing.py uses it).

    Parts          the injectable I/O: engine, scaler, Consul access, deferred-run spawner, clocks
    ConsulAccess   one Consul address: py-consul clients (lock, history, pause, marks) and the
                   consistent health read (light transport: start-up counts toward time to heal)
    Run            environment, audit log (an unchanged --all noop is audited once an hour), settings
                   and Consul access per service, the engine made on first use, the scaler,
                   alerts, and how a deferred run is started (argv list, own session)
"""
import os
import subprocess
import sys
import time
from collections import namedtuple

from ..core import runtime
from ..engine.engine import failures as engine_failures
from .healer import WAIT_BOUND

DEADLINE = 600.0  # whole run; each compose command has its own spec.heal.command_timeout
ENGINE_TIMEOUT = 20.0
LEADER_WAIT = 15.0  # a run that lost the Consul leader waits this long for a new one, then tries once more
NOOP_SUMMARY = 3600.0  # --all: an unchanged noop is audited again after this long
AUDIT_TAIL = 256 * 1024  # how much of the audit log's end --all reads to find each service's last record

_NO_ADDR = namedtuple("NoAddr", "consul_addr")(None)  # a spec that names no Consul address
Parts = namedtuple("Parts", "engine_factory scaler_factory consul_factory spawn clock monotonic sleep")
Parts.__new__.__defaults__ = (None, None, None, None, time.time, time.monotonic, time.sleep)


class ConsulAccess:
    """One Consul address: a client for the lock, history, pause, marks (py-consul's calls over
    the light transport: consul_light), a second one for the lock's renewals, and the
    consistent health read. No py-consul import on medic-heal's path: start-up counts."""

    def __init__(self, st):
        from ..consul import consul_light
        self.st = st
        self.client = consul_light.Client(st)
        self.renew_client = consul_light.Client(st)

    def instances(self, service):
        from ..consul import lighthttp
        from ..service import observe
        with lighthttp.Connection(self.st) as conn:
            return observe.consul_instances(conn, service)


class LazyEngine:
    """One engine client per run, made on first use."""

    def __init__(self, factory=None):
        self.factory, self.client = factory, None

    def get(self):
        if self.client is None:
            from ..service import observe
            self.client = (self.factory or (lambda: observe.engine_client(ENGINE_TIMEOUT)))()
        return self.client

    def close(self):
        if self.client is not None and hasattr(self.client, "close"):
            try:
                self.client.close()
            except engine_failures():
                pass


class Run:
    """What every service of one run shares."""

    def __init__(self, env, conn, environ, log, index, dry_run, parts, specs_dir):
        self.env, self.conn, self.environ, self.log = env, conn, environ, log
        self.index, self.dry_run, self.parts, self.specs_dir = index, dry_run, parts, specs_dir
        self.clock, self.monotonic = parts.clock, parts.monotonic
        self.engine = LazyEngine(parts.engine_factory)
        self.deadline = self.monotonic() + _deadline(environ)
        self.single = True
        self.not_before = None  # a deferred run: the time it was arranged for
        self._retried = False  # after_election: once per run
        self.quiet_noops = False  # --all: audit a noop only when it says something new
        self._last = None
        self.hold_wait = _seconds(environ, "MEDIC_HOLD_WAIT", WAIT_BOUND)
        self.defer = (environ.get("MEDIC_DEFER") or "on").strip().lower() not in ("off", "0", "false", "no")
        self._settings, self._consul = {}, {}
        self.prefetch = None  # triage.Prefetch of a run naming many services

    def start_prefetch(self):
        """Start triage's Consul reads for the default address (a spec without consul_addr)."""
        from . import triage
        self.prefetch = triage.Prefetch(self.settings(_NO_ADDR), self.env)

    def settings(self, sp):
        if sp.consul_addr not in self._settings:  # the spec's address is the only per-service input
            from ..consul import settings
            c = self.conn
            st = settings.resolve(c.get("consul_addr"), c.get("token"), c.get("token_file"), c.get("timeout"),
                                  spec_addr=sp.consul_addr, environ=self.environ)
            if st.token:
                self.log.secrets = tuple(set(self.log.secrets) | {st.token})
            self._settings[sp.consul_addr] = st
        return self._settings[sp.consul_addr]

    def after_election(self, st, key="medic"):
        """A run that failed for want of a leader waits for one (at most LEADER_WAIT s, within its
        deadline) and may try once more -> True, else False."""
        if self._retried or self.dry_run:
            return False
        from ..consul import consul_errors
        self._retried = True
        left = min(LEADER_WAIT, self.deadline - self.monotonic() - 5.0)
        return left > 0 and consul_errors.wait_for_leader(st, left, self.monotonic, self.parts.sleep, key=key)

    def consul(self, st):
        if st not in self._consul:
            self._consul[st] = (self.parts.consul_factory or ConsulAccess)(st)
        return self._consul[st]

    def scaler(self, sp, client=None):
        """The service's scaler; a compose service gets the override of the image medic-rollout
        recorded (rollout_image.compose_files), so a heal starts what the last rollout deployed."""
        from ..engine import scaler
        if self.parts.scaler_factory is not None:
            return self.parts.scaler_factory(sp, self.engine.get())
        extra = ()
        if sp.scale.driver == "compose" and client is not None:
            from ..service import rollout_image
            extra = rollout_image.compose_files(client, self.env, sp)
        return scaler.for_spec(sp, self.engine.get(), extra_files=extra)

    def audit(self, rec):
        t0 = rec.pop("_t0", None)
        if t0 is not None and "duration" not in rec:
            rec["duration"] = round(self.monotonic() - t0, 3)
        if self.quiet_noops and rec.get("decision") == "noop" and self.unchanged(rec):
            return
        write_audit(self.log, rec)

    def unchanged(self, rec):
        """True when this service's last audit record is a noop with the same reason, written less
        than NOOP_SUMMARY ago (read once per run from the end of the audit log)."""
        if self._last is None:
            self._last = last_records(self.log.path)
        prev = self._last.get((rec.get("env"), rec.get("service")))
        if not prev or prev.get("decision") != "noop" or prev.get("reason") != rec.get("reason"):
            return False
        return 0 <= time.time() - _epoch(prev.get("time")) < NOOP_SUMMARY  # audit times are wall-clock

    def alert(self, sp, dec, kind, reason, action="heal"):
        from ..core import alerts
        counts = dec.counts
        alerts.emit({"service": sp.service, "env": self.env, "live": counts.passing if counts else None,
                     "desired": counts.declared if counts else sp.instances, "kind": kind, "action": action,
                     "reason": reason}, audit=self.log, specs=os.path.dirname(sp.path) or None, env=self.env,
                    settings=self.settings(sp))

    def spawn(self, sp, at):
        """Start the deferred run (detached, own session) -> its pid."""
        if not self.defer:
            raise RuntimeError("deferred runs are off (MEDIC_DEFER=off)")
        if self.parts.spawn is not None:
            return self.parts.spawn(sp, at)
        from . import healer
        argv = [runtime.sibling(sys.argv[0], "medic-heal"), "--service", sp.service, "--not-before", "%.3f" % at,
                "--specs", self.specs_dir, "--audit-log", self.log.path]
        if self.env:
            argv += ["--env", self.env]
        if self.conn.get("consul_addr"):
            argv += ["--consul-addr", self.conn["consul_addr"]]
        if self.conn.get("timeout") is not None:
            argv += ["--consul-timeout", "%g" % self.conn["timeout"]]
        env = healer.child_env(self.environ, self.settings(sp), at - self.clock(), DEADLINE)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env, start_new_session=True, close_fds=True)
        return p.pid


def last_records(path, tail=AUDIT_TAIL):
    """{(env, service): last kind-heal record} from the end of the audit log ({} when unreadable)."""
    from ..core import audit
    return {(rec.get("env"), rec["service"]): rec for rec in audit.tail(path, tail)
            if rec.get("kind") == "heal" and rec.get("service")}


def _epoch(iso):
    import calendar
    try:
        base, _, frac = str(iso).rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))
    except ValueError:
        return 0.0


def _deadline(environ):
    return _seconds(environ, "MEDIC_DEADLINE", DEADLINE) or DEADLINE


def _seconds(environ, name, default):
    """A number of seconds from the environment (finite, >= 0), else the default."""
    try:
        v = float(environ.get(name) or default)
        return v if 0 <= v < 1e7 else default
    except ValueError:
        return default


def write_audit(log, rec):
    rec = dict({"kind": "heal"}, **rec)
    try:
        log.write(rec)
    except OSError as e:
        sys.stderr.write("medic-heal: cannot write audit log %s: %s\n" % (log.path, e.strerror or e))
