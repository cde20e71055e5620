"""medic-heal's run: which services, in which mode; then one healer per service (docs/medic-heal.md).

    run(...) -> Outcome      modes: a watch payload on stdin | services | all_ | reset | pause |
                             resume; not_before (a deferred run) sleeps until then first

`Run` (heal_context.py) is what every service of one run shares. Every I/O part is
injectable (`Parts`), so the whole orchestration runs against fakes in tests/fakes.py.
"""
import os
import time

from ..core import audit as audit_mod
from ..core import runtime
from ..core.errors import UsageError
from .heal_context import Parts, Run, write_audit
from ..core.status import Outcome, Status

MAX_IGNORED_LISTED = 5
ERRORS_IN_ROW = 2  # Consul or the engine failing for this many services in a row ends the run (one record)

def _index(environ):
    raw = (environ.get("CONSUL_INDEX") or "").strip()
    return int(raw) if raw.isdigit() else (raw[:40] or None)


def run(*, services=(), all_=False, reset=None, pause=None, resume=None, pause_for=None, reason=None,
        not_before=None, dry_run=False, audit_log=None, specs=None, env=None, conn=None, stdin=None, environ=None,
        engine_factory=None, scaler_factory=None, clock=time.time, parts=None, changes=False):
    """The whole run -> Outcome."""
    from . import heal_admin, heal_select, healer
    from ..consul import settings
    from ..spec import spec as spec_mod

    environ = os.environ if environ is None else environ
    parts = parts or Parts(engine_factory, scaler_factory, clock=clock)
    env = settings.environment(env, environ)
    modes = sum(1 for m in (bool(services), all_, bool(reset), bool(pause), bool(resume)) if m)
    if modes > 1:
        raise UsageError("use only one of --service, --all, --reset, --pause and --resume")
    if (pause_for or reason) and not pause:
        raise UsageError("--for and --reason go with --pause")
    if not_before is not None and not services:
        raise UsageError("--not-before goes with --service")
    sel, seen = None, None
    if changes and modes:
        raise UsageError("--changes goes with a checks watch payload on stdin")
    if not modes:
        if stdin is None or stdin.isatty():
            raise UsageError("no payload: stdin is a terminal; use --service NAME, --all or a watch payload")
        items = [] if changes else None
        sel = heal_select.from_stream(stdin, env, items)
        all_ = sel.all_
        if changes and (sel.kind == "empty" or sel.kind.startswith("checks")):
            sel, seen = None, items
    if not_before is not None:
        _sleep_until(parts, not_before)
    specs_dir = spec_mod.specs_dir(specs, environ)
    tokens = [(conn or {}).get("token") or "", environ.get("CONSUL_HTTP_TOKEN", "")]
    log = audit_mod.AuditLog(audit_mod.audit_path(audit_log, environ), secrets=tokens)
    ctx = Run(env, conn or {}, environ, log, _index(environ), dry_run, parts, specs_dir)
    ctx.not_before = not_before
    if seen is not None:
        from . import heal_changes
        seen = heal_changes.Changes(ctx, seen, audit_mod.audit_path(audit_log, environ))
        all_, services = seen.all_, seen.names
        if not all_ and not services:
            seen.save([])
            return Outcome(Status.OK, runtime.status_line(Status.OK, seen.summary()))
    if all_ or (sel is not None and len(sel.names) > 1):  # a triage run: its Consul reads start now
        ctx.start_prefetch()
    loaded = spec_mod.load_dir(specs_dir, env)

    if reset:
        return heal_admin.reset(ctx, _require(loaded, reset, specs_dir))
    if pause:
        return heal_admin.pause(ctx, _require(loaded, pause, specs_dir), pause_for, reason)
    if resume:
        sp = _require(loaded, resume, specs_dir)
        lines = [heal_admin.resume(ctx, sp)]
        return _summarise([healer.heal_service(ctx, sp)], lines)
    if all_:
        chosen = list(loaded.values())
    elif seen is not None:
        chosen = [loaded[s] for s in services if s in loaded]
    elif services:
        chosen = [_require(loaded, s, specs_dir) for s in dict.fromkeys(services)]
        if not_before is not None:
            from . import recheck
            for sp in chosen:
                recheck.done(ctx.consul(ctx.settings(sp)).client, env, sp.service, not_before)
    else:
        chosen = _named(ctx, sel, loaded, specs_dir)
        if not chosen:
            text = ("payload names no service" if not sel.names else
                    "payload names %d service(s), none with a spec in %s: nothing to do" % (len(sel.names), specs_dir))
            return Outcome(Status.OK, runtime.status_line(Status.OK, text))
    if not chosen:
        if seen is not None:
            seen.save([])
            return Outcome(Status.OK, runtime.status_line(Status.OK, seen.summary() + ", none with a spec"))
        return Outcome(Status.OK, runtime.status_line(Status.OK, "no specs in %s: nothing to do" % specs_dir))
    results = []
    ctx.single = len(chosen) == 1 and seen is None  # a --changes run never blocks the one checks watch
    ctx.quiet_noops = bool(all_)
    if len(chosen) > 1:
        chosen, quiet = _triage(ctx, chosen)
        results += quiet
        ctx.grouped = []
    results += _heal_each(ctx, chosen, sel, env)
    ctx.engine.close()
    if seen is not None:
        seen.save([r.service for r in results if r.status == Status.UNKNOWN])
    return _summarise(results)


def _heal_each(ctx, chosen, sel, env):
    """One healer per service, bounded: a fleet-wide backoff (heal_storm.py) holds every action; a
    correlated failure, or Consul or the engine failing for ERRORS_IN_ROW services in a row, ends
    the run with ONE record for the services it did not look at (not one per service per attempt)."""
    from . import heal_storm, healer, recheck

    results, skipped, why, in_row, marker = [], [], None, 0, None
    storm = None
    if chosen and not ctx.dry_run:
        storm = heal_storm.read(ctx.consul(ctx.settings(chosen[0])).client, env, ctx.clock())
    if storm:
        why = "fleet-wide backoff until %s after a correlated failure (%s)" % (
            recheck._t(float(storm["until"])), storm.get("why"))
    for sp in chosen:
        if why:
            skipped.append(sp)
            continue
        r = healer.heal_service(ctx, sp)
        results.append(r)
        if sel is not None and sp.service in sel.wake:
            recheck.consume_wake(ctx.consul(ctx.settings(sp)).client, env, sp.service, sel.wake[sp.service])
        failed = r.status == Status.UNKNOWN and ctx.last_error and ctx.last_error[0] in ("consul", "engine")
        in_row = in_row + 1 if failed else 0
        if in_row >= ERRORS_IN_ROW:
            why = "%s failed for %d services in a row: %s" % (ctx.last_error[0], in_row, ctx.last_error[1][:200])
            continue
        attempts = sum(1 for x in results if x.decision is not None and x.decision.kind == "heal")
        sig = None if ctx.dry_run else heal_storm.correlated(ctx.failures, attempts)
        if sig:
            import random
            marker = heal_storm.write(ctx.consul(ctx.settings(sp)).client, env, sig,
                                      [s for s, _ in ctx.failures], ctx.clock(), random.random())
            why = "correlated failure: %d of %d heals failed the same way (%s); fleet-wide backoff%s" % (
                len(ctx.failures), attempts, sig,
                " until %s" % recheck._t(marker["until"]) if marker else " (marker not written)")
    if skipped:
        names = [sp.service for sp in skipped]
        write_audit(ctx.log, {"service": None, "env": ctx.env, "index": ctx.index, "decision": "hold",
                              "dry_run": ctx.dry_run, "reason": "%d service(s) not looked at this run: %s"
                              % (len(names), why), "skipped": len(names), "services": names[:heal_storm.LISTED]})
        results += [healer.Result(n, Status.UNKNOWN, "%s: not looked at: %s" % (n, why), None) for n in names]
    if ctx.grouped is not None:
        ctx.flush_alerts(" (%s)" % why if marker else "")
    return results


def _sleep_until(parts, at):
    # import what a run needs first, so the start-up cost is paid before the hold ends
    for mod in ("consul", "docker", "consul_medic.handlers.spec.spec", "consul_medic.handlers.heal.healer",
                "consul_medic.handlers.service.observe"):
        try:
            __import__(mod)
        except ImportError:
            pass
    delay = at - parts.clock()
    if delay > 0:
        parts.sleep(delay)


def _named(ctx, sel, loaded, specs_dir):
    chosen = [loaded[n] for n in sel.names if n in loaded]  # exact names only
    ignored = [n for n in sel.names if n not in loaded]
    if ignored:
        write_audit(ctx.log, {"service": None, "env": ctx.env, "index": ctx.index, "decision": "ignore",
                              "dry_run": ctx.dry_run, "reason": "no spec for %d service(s) named in the %s payload"
                              % (len(ignored), sel.kind), "ignored": [n[:130] for n in ignored[:MAX_IGNORED_LISTED]]})
    return chosen


def _triage(ctx, chosen):
    from . import healer, triage
    needs, quiet = triage.split(chosen, ctx.env, ctx.settings, ctx.engine, ctx.clock(), ctx.prefetch)
    out = []
    for sp, reason in quiet:
        ctx.audit({"service": sp.service, "env": ctx.env, "index": ctx.index, "dry_run": ctx.dry_run,
                   "decision": "noop", "reason": reason, "triage": True, "result": None, "argv": None})
        out.append(healer.Result(sp.service, Status.OK, "%s: noop: %s" % (sp.service, reason), None))
    return needs, out


def _require(loaded, name, specs_dir):
    if name not in loaded:
        raise UsageError("no spec in %s declares service %r" % (specs_dir, name[:130]))
    return loaded[name]


def _summarise(results, before=()):
    status = max((r.status for r in results), default=Status.OK)
    worst = next(r.line for r in results if r.status == status)
    if len(results) == 1:
        first = worst
    else:
        kinds = {}
        for r in results:
            kinds[r.status.name.lower()] = kinds.get(r.status.name.lower(), 0) + 1
        tally = ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items()))
        first = "%d services (%s); worst: %s" % (len(results), tally, worst)
    lines = [runtime.status_line(status, first)] + [runtime.status_line(Status.OK, b) for b in before]
    if len(results) > 1:
        lines += [r.line for r in results]
    return Outcome(status, "\n".join(lines))
