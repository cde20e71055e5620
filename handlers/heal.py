"""medic-heal: the guarded self-heal watch handler (docs/medic-heal.md).

    checks/service watch payload on stdin   -> which services to look at (never what to do)
    --service NAME (repeatable) | --all     -> the same, from a shell or the reconcile check
    --reset SERVICE                         -> close the circuit, clear backoff

Per service: lock (Consul session, non-blocking) -> observe fresh (Consul consistent
read, Docker engine) -> decide (pure) -> act (compose/Swarm, with a timeout) ->
remember (history in KV with CAS, one audit line). Exit: 0 handled, 1 an action
failed (or the circuit is open), 3 could not decide (nothing changed).
"""
import os
import sys
import time

from . import audit as audit_mod
from . import options, runtime
from .errors import MedicError, PayloadError, UsageError
from .status import Outcome, Status

DEADLINE = 600.0  # whole run; each compose command has its own spec.heal.command_timeout
ENGINE_TIMEOUT = 20.0
MAX_IGNORED_LISTED = 5
ALL = object()


def main():
    runtime.run(command=_command, prog="medic-heal", deadline=DEADLINE)


def _command():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--service", "services", multiple=True, metavar="NAME",
                  help="Heal this service (repeatable); stdin is not read.")
    @click.option("--all", "all_", is_flag=True, help="Reconcile every spec (the medic:reconcile check).")
    @click.option("--reset", metavar="SERVICE", help="Close SERVICE's circuit and clear its backoff.")
    @click.option("--dry-run", is_flag=True, help="Observe and decide; print the argv; change nothing.")
    @click.option("--audit-log", metavar="PATH", help="Audit log [env MEDIC_AUDIT_LOG].")
    @options.common
    def cmd(services, all_, reset, dry_run, audit_log, specs, env, consul_addr, token, token_file,
            consul_timeout, verbose):
        """Bring services back to their declared size, from freshly observed state."""
        conn = dict(consul_addr=consul_addr, token=token, token_file=token_file, timeout=consul_timeout)
        return run(services=services, all_=all_, reset=reset, dry_run=dry_run, audit_log=audit_log,
                   specs=specs, env=env, conn=conn, stdin=sys.stdin, environ=os.environ)

    return cmd


# -- selection --------------------------------------------------------------------
def _payload_names(stdin):
    from watches import PayloadError as WPayloadError
    from watches._common import read_stream
    from watches.detect import parse_any, services_named

    if stdin is None or stdin.isatty():
        raise UsageError("no payload: stdin is a terminal; use --service NAME, --all or a watch payload")
    try:
        kind, items = parse_any(read_stream(stdin))
    except WPayloadError as e:
        raise PayloadError(str(e)) from None
    if kind == "checks" and any(not c.service_name and c.status != "passing" for c in items):
        # a node check (serfHealth, node maintenance) failing: a host may be lost, with every
        # service on it; the payload cannot say which, so every spec is looked at
        return "checks (node check failing)", ALL
    return kind, services_named(kind, items)


def _index(environ):
    raw = (environ.get("CONSUL_INDEX") or "").strip()
    return int(raw) if raw.isdigit() else (raw[:40] or None)


def run(services=(), all_=False, reset=None, dry_run=False, audit_log=None, specs=None, env=None,
        conn=None, stdin=None, environ=None, engine_factory=None, scaler_factory=None, clock=time.time):
    """The whole run -> Outcome. I/O factories are injectable for tests."""
    from . import settings, spec as spec_mod

    environ = os.environ if environ is None else environ
    conn = conn or {}
    env = settings.environment(env, environ)
    modes = sum(1 for m in (bool(services), all_, bool(reset)) if m)
    if modes > 1:
        raise UsageError("use only one of --service, --all and --reset")
    index = _index(environ)
    payload_kind, named = None, ()
    if not modes:
        payload_kind, named = _payload_names(stdin)
        if named is ALL:
            all_, named = True, ()
    specs_dir = spec_mod.specs_dir(specs, environ)
    loaded = spec_mod.load_dir(specs_dir, env)
    tokens = [conn.get("token") or "", environ.get("CONSUL_HTTP_TOKEN", "")]
    log = audit_mod.AuditLog(audit_mod.audit_path(audit_log, environ), secrets=tokens)

    if reset:
        sp = _require(loaded, reset, specs_dir)
        return _reset(sp, env, _settings(sp, conn, environ), log, clock)
    if all_:
        chosen = list(loaded.values())
    elif services:
        chosen = [_require(loaded, s, specs_dir) for s in dict.fromkeys(services)]
    else:
        chosen = [loaded[n] for n in named if n in loaded]  # exact names only
        ignored = [n for n in named if n not in loaded]
        if ignored:
            _audit(log, {"service": None, "env": env, "index": index, "decision": "ignore", "dry_run": dry_run,
                         "reason": "no spec for %d service(s) named in the %s payload" % (len(ignored), payload_kind),
                         "ignored": [n[:130] for n in ignored[:MAX_IGNORED_LISTED]]})
        if not chosen:
            text = ("payload names no service" if not named else
                    "payload names %d service(s), none with a spec in %s: nothing to do" % (len(named), specs_dir))
            return Outcome(Status.OK, runtime.status_line(Status.OK, text))

    if not chosen:
        return Outcome(Status.OK, runtime.status_line(Status.OK, "no specs in %s: nothing to do" % specs_dir))
    engine = _LazyEngine(engine_factory)
    results = []
    if len(chosen) > 1:
        from . import triage
        chosen, quiet = triage.split(chosen, env, lambda sp: _settings(sp, conn, environ), engine, clock())
        for sp, reason in quiet:
            _audit(log, {"service": sp.service, "env": env, "index": index, "dry_run": dry_run, "decision": "noop",
                         "reason": reason, "triage": True, "result": None, "argv": None})
            results.append((sp.service, Status.OK, "%s: noop: %s" % (sp.service, reason)))
    for sp in chosen:
        results.append(heal_one(sp, env, conn, environ, log, index, dry_run, engine, scaler_factory, clock))
    engine.close()
    return _summarise(results, dry_run)


def _require(loaded, name, specs_dir):
    if name not in loaded:
        raise UsageError("no spec in %s declares service %r" % (specs_dir, name[:130]))
    return loaded[name]


def _settings(sp, conn, environ):
    from . import settings
    return settings.resolve(conn.get("consul_addr"), conn.get("token"), conn.get("token_file"),
                            conn.get("timeout"), spec_addr=sp.consul_addr, environ=environ)


class _LazyEngine:
    """One Docker client per run, made on first use (a noop from Consul alone never needs it... but
    every decision needs the engine's view, so in practice: once per run)."""

    def __init__(self, factory=None):
        self.factory, self.client = factory, None

    def get(self):
        if self.client is None:
            from . import observe
            self.client = (self.factory or (lambda: observe.engine_client(ENGINE_TIMEOUT)))()
        return self.client

    def close(self):
        if self.client is not None and hasattr(self.client, "close"):
            try:
                self.client.close()
            except Exception:
                pass


# -- one service --------------------------------------------------------------------
def heal_one(sp, env, conn, environ, log, index, dry_run, engine, scaler_factory=None, clock=time.time):
    """Lock, observe, decide, act, remember -> (service, Status, line). Never raises MedicError."""
    from . import lock, settings

    t0 = time.monotonic()
    rec = {"service": sp.service, "env": env, "index": index, "dry_run": dry_run}
    st = None
    try:
        st = _settings(sp, conn, environ)
        log.secrets = tuple(set(log.secrets) | ({st.token} if st.token else set()))
        client = settings.make_client(st)
        if dry_run:
            return _decide_act(sp, env, st, client, log, rec, dry_run, engine, scaler_factory, clock, t0)
        with lock.held(client, env, sp.service, "heal", renew_client=settings.make_client(st)) as got:
            if not got:
                holder = lock.ServiceLock(client, env, sp.service).holder() or {}
                reason = "another handler is on it (lock %s held by %s pid %s, %s)" % (
                    lock.lock_key(env, sp.service), holder.get("host", "?"), holder.get("pid", "?"),
                    holder.get("operation", "?"))
                rec.update(decision="skip", reason=reason, result=None, argv=None,
                           duration=round(time.monotonic() - t0, 3))
                _audit(log, rec)
                return sp.service, Status.OK, "%s: skip: %s" % (sp.service, reason)
            return _decide_act(sp, env, st, client, log, rec, dry_run, engine, scaler_factory, clock, t0)
    except MedicError as e:
        kind = "" if e.kind == "error" else e.kind + ": "
        why = kind + str(e)
        if e.kind == "consul" and st is not None:
            why = _leaderless(st, why) + why
        rec.update(decision="error", reason=why, result=None, argv=None,
                   duration=round(time.monotonic() - t0, 3))
        _audit(log, rec)
        return sp.service, Status.UNKNOWN, "%s: could not decide, nothing changed: %s" % (sp.service, why)


def _leaderless(st, error=""):
    """'no cluster leader (quorum lost?): ' when Consul answers but has no leader, else ''.

    A consistent read or a session needs a leader; without one they time out or fail
    with messages that do not say so. One short extra question names the cause.
    """
    from . import lighthttp
    from .errors import ConsulTimeout

    servers = "Consul servers do not answer (no cluster leader? quorum lost?): "
    try:
        with lighthttp.Connection(st._replace(timeout=min(st.timeout, 3.0))) as conn:
            resp = conn.request("GET", "/v1/status/leader", [("stale", None)])
            if resp.status != 200:
                return servers  # the local agent answers, but cannot reach a server that knows
            leader = resp.json()
    except ConsulTimeout:
        return servers
    except MedicError:
        return ""  # the agent itself is not there: the original error says so
    if not leader:
        return "no cluster leader (quorum lost?): "
    if "rpc error" in error or "No cluster leader" in error:
        # a leader is still named (the survivors have not noticed yet) but cannot be reached
        return "Consul servers unreachable (leader %s lost?): " % leader
    return ""


def _decide_act(sp, env, st, client, log, rec, dry_run, engine, scaler_factory, clock, t0):
    from . import alerts, decide, history, lighthttp, observe, scaler

    store = history.Store(client, env, sp.service)
    hist = store.load()
    with lighthttp.Connection(st) as conn:
        consul_index, obs = observe.observe(sp, conn, engine.get())
    now = clock()
    dec = decide.decide(sp, obs, hist, now)
    counts = dec.counts._asdict()
    rec.update(consul_index=consul_index, observed=counts, decision=dec.kind, target=dec.target,
               reason=dec.reason, settle=dec.settle, circuit=dec.circuit, stale=obs.stale,
               containers=[{"name": c.name, "state": c.state, "passing": c.passing} for c in obs.containers][:50])
    sc = (scaler_factory or scaler.for_spec)(sp, engine.get()) if dec.kind == "heal" else None
    argv = sc.argv(dec.target) if sc is not None else None
    rec["argv"] = argv
    event_base = {"service": sp.service, "env": env, "live": dec.counts.passing, "desired": dec.counts.declared}
    emit_kw = dict(audit=log, specs=os.path.dirname(sp.path) or None, env=env, settings=st)

    if dry_run:
        rec.update(result="dry-run", duration=round(time.monotonic() - t0, 3))
        _audit(log, rec)
        return sp.service, Status.OK, _line(sp, dec, argv, "dry-run: nothing changed")

    if dec.settle or dec.circuit or tuple(dec.suspects) != tuple(hist.suspects):
        store.update(lambda h: history.apply(h, dec, now))
        if dec.settle:
            alerts.emit(dict(event_base, kind="healed" if dec.settle == "restored" else "heal_failed",
                             action="heal", reason="last action %s: %s" % (dec.settle, dec.reason)), **emit_kw)
        if dec.circuit == "open":
            alerts.emit(dict(event_base, kind="circuit_open", action="hold", reason=dec.reason), **emit_kw)

    status, result = Status.OK, None
    if dec.kind == "heal":
        res = sc.scale(dec.target, remove=dec.remove, replace=dec.replace)
        result = "ok" if res.ok else "failed"
        rec.update(returncode=res.returncode, removed=res.removed, command_duration=round(res.duration, 3))
        try:
            store.update(lambda h: history.add_action(h, now, "replace" if dec.replace else "scale", dec.target,
                                                      "started" if res.ok else "failed", rec["index"]))
        except MedicError as e:
            # the action happened: say so (exit 1), never "nothing changed"; the next run's
            # fresh observation sees the new containers as pending either way
            rec["history_error"] = str(e)
            status = Status.WARNING
        if not res.ok:
            status = Status.WARNING
            rec["output"] = res.output
            alerts.emit(dict(event_base, kind="heal_failed", action="heal",
                             reason="%s failed: %s" % (" ".join(argv), (res.output or "").strip()[-300:])), **emit_kw)
    elif store.history.circuit is not None and dec.counts.passing < dec.counts.declared:
        status = Status.WARNING  # healing suspended by a crash loop: someone must look
    rec.update(result=result, duration=round(time.monotonic() - t0, 3))
    _audit(log, rec)
    last = ((rec.get("output") or "").strip().splitlines() or ["no output"])[-1]
    tail = "" if result is None else ("scaled in %.1f s" % rec["command_duration"] if result == "ok"
                                      else "FAILED: %s" % last[:200])
    return sp.service, status, _line(sp, dec, argv, tail)


def _line(sp, dec, argv, tail):
    text = "%s: %s%s: %s" % (sp.service, dec.kind, "(%d)" % dec.target if dec.target is not None else "", dec.reason)
    if argv:
        text += " [%s]" % " ".join(argv)
    return text + (" (%s)" % tail if tail else "")


def _reset(sp, env, st, log, clock):
    from . import history, settings

    client = settings.make_client(st)
    store = history.Store(client, env, sp.service)
    store.load()
    now = clock()
    store.update(lambda h: history.reset(h, now))
    try:
        client.kv.delete(history.circuit_key(env, sp.service))
    except Exception:
        pass
    _audit(log, {"service": sp.service, "env": env, "decision": "reset", "dry_run": False, "result": "ok",
                 "reason": "circuit closed, backoff and failure count cleared by --reset"})
    return Outcome(Status.OK, runtime.status_line(Status.OK, "%s: circuit closed, backoff cleared" % sp.service))


def _audit(log, rec):
    rec = dict(rec)
    rec.setdefault("kind", "heal")
    try:
        log.write(rec)
    except OSError as e:
        sys.stderr.write("medic-heal: cannot write audit log %s: %s\n" % (log.path, e.strerror or e))


def _summarise(results, dry_run):
    status = max((s for _, s, _ in results), default=Status.OK)
    worst = next(line for _, s, line in results if s == status)
    if len(results) == 1:
        first = worst
    else:
        kinds = {}
        for _, s, _ in results:
            kinds[s.name.lower()] = kinds.get(s.name.lower(), 0) + 1
        first = "%d services (%s); worst: %s" % (len(results), ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items())), worst)
    lines = [runtime.status_line(status, first)]
    if len(results) > 1:
        lines += [line for _, _, line in results]
    return Outcome(status, "\n".join(lines))
