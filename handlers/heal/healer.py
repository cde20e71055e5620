"""One service, one medic-heal run: lock -> observe -> decide -> act -> record.

    heal_service(run, spec) -> Result

1. lock     the service's Consul session lock (non-blocking). Held by another heal run: mark
            the service dirty (recheck.py) and try once more; the holder looks again before it
            lets go. Held by a dead process on this host: its session is destroyed at once.
            Held by a rollout, failover or drain: hold "rollout in progress", look again later.
2. observe  the pause (an operator's "hands off" ends here), the history, Consul
            (consistent) and the engine, fresh.
3. decide   decide.decide(): pure.
4. act      the scaler, only for a heal.
5. record   history (CAS) and ONE audit record per round, built at the end from values
            that no longer change.

A hold that ends by itself (Decision.until) is looked at again at its end: a run that handles
one service keeps the lock and waits (at most WAIT_BOUND, woken early by a dirty mark);
otherwise it arranges one deferred run. The exit state comes from the Decision and the act.
"""
from collections import namedtuple

from ..core.errors import MedicError
from ..core.status import Status

WAIT_BOUND = 15.0   # a hold ending within this is waited for under the lock (one-service runs;
                    # MEDIC_HOLD_WAIT overrides, 0 = never wait: always a deferred run)
MAX_ROUNDS = 6      # observe -> decide rounds per service per run
MAX_DEFER = 3600.0  # a hold ending later than this is left to the reconcile check
DEFER_SLACK = 0.2   # a deferred run starts this long after the hold's end
OPERATIONS = {"rollout": "rollout in progress", "failover": "failover in progress", "drain": "drain in progress"}

Result = namedtuple("Result", "service status line decision")
Round = namedtuple("Round", "decision status obs consul_index argv res history_error extra")
Round.__new__.__defaults__ = (None, None, None, None, None, None)
Round.__doc__ = """What one round saw, decided and did: final values, from which `_record` builds the
round's one audit record. obs/consul_index: the observation (None for a pause or a held lock);
res: the scaler's Result (None: no action); extra: fields only some rounds have."""


def heal_service(run, sp):
    """-> Result. Never raises MedicError: a failure is an 'error' record and UNKNOWN."""
    from ..consul import consul_errors, lock
    from . import recheck

    t0 = run.monotonic()
    st = None
    try:
        st = run.settings(sp)
        consul = run.consul(st)
        if run.dry_run:
            return _finish(run, sp, consul, _round(run, sp, consul), t0, waited=False)
        result = None
        for _ in range(MAX_ROUNDS):
            lk = lock.ServiceLock(consul.client, run.env, sp.service, "heal", renew_client=consul.renew_client)
            got = lk.acquire()
            if not got:
                dead = lk.free_if_dead()
                if dead is not None:
                    run.audit(_base(run, sp, t0, decision="unlock", reason=(
                        "freed the lock of a dead holder on this host (pid %s, %s, since %s)"
                        % (dead.get("pid"), dead.get("operation"), dead.get("since"))), holder=dead))
                    got = lk.acquire()
            holder = None
            if not got:
                holder = lk.holder() or {}
                if holder.get("operation") not in OPERATIONS:
                    # mark first, then try once more: either the holder reads the mark after it lets
                    # go, or it had let go already and this run takes the lock
                    recheck.mark_dirty(consul.client, run.env, sp.service, run.clock())
                    got = lk.acquire()
            if not got:
                return result or _held(run, sp, consul, holder, t0)
            try:
                result = _rounds(run, sp, consul, t0)
            finally:
                lk.release()
            if not recheck.take_dirty(consul.client, run.env, sp.service):
                break
        return result
    except MedicError as e:
        why = ("" if e.kind == "error" else e.kind + ": ") + str(e)
        if e.kind == "consul" and st is not None:
            why = consul_errors.cause(st, why) + why
        run.audit(_base(run, sp, t0, decision="error", reason=why, result=None, argv=None))
        run.last_error = (e.kind, why)
        if consul_errors.leader_lost(why) and run.after_election(st, lock.lock_key(run.env, sp.service)):
            return heal_service(run, sp)  # once per run: the trigger still needs a decision
        return Result(sp.service, Status.UNKNOWN, "%s: could not decide, nothing changed: %s" % (sp.service, why),
                      None)


def _held(run, sp, consul, holder, t0):
    """The lock is held by someone alive: say so; someone looks again once it is free (a dirty mark
    for a heal holder, a deferred run for a rollout, failover or drain)."""
    from . import decide
    from ..consul import lock

    op = holder.get("operation", "?")
    where = "lock %s held by %s pid %s, %s" % (lock.lock_key(run.env, sp.service), holder.get("host", "?"),
                                               holder.get("pid", "?"), op)
    if op in OPERATIONS:
        dec = decide.Decision("hold", None, "%s (%s)" % (OPERATIONS[op], where), None,
                              until=run.clock() + WAIT_BOUND)
        return _finish(run, sp, consul, Round(dec, Status.OK, extra={"holder": holder}), t0, waited=False)
    reason = "another handler is on it (%s); marked dirty: it looks again before it lets go" % where
    note = _holder_check(run, sp, consul, holder)
    reason += "; " + note if note else ""
    run.audit(_base(run, sp, t0, decision="skip", reason=reason, result=None, argv=None))
    return Result(sp.service, Status.OK, "%s: skip: %s" % (sp.service, reason), None)


def _holder_check(run, sp, consul, holder):
    """A heal holder on another host: make sure its host looks if it still holds HOLDER_CHECK s on."""
    from . import recheck
    if run.dry_run or not run.defer:
        return None
    if run.not_before is not None:
        note = recheck.ask_holder_host(consul.client, run.env, sp.service, holder, run.not_before, run.clock())
        if note:
            return note
    return recheck.watch_holder(consul.client, run.env, sp.service, holder, run.clock(), lambda t: run.spawn(sp, t))


def _rounds(run, sp, consul, t0):
    """Observe -> decide -> act rounds under the lock while a short hold ends."""
    from . import recheck

    result = None
    for i in range(MAX_ROUNDS):
        recheck.clear_dirty(consul.client, run.env, sp.service)  # the observe below covers any mark
        rnd = _round(run, sp, consul)
        dec = rnd.decision
        wait = _wait_for(run, dec) if i < MAX_ROUNDS - 1 else None
        result = _finish(run, sp, consul, rnd, t0, waited=wait is not None)
        if wait is None:
            return result
        recheck.wait_dirty(consul.client, run.env, sp.service, dec.until, run.clock)
        t0 = run.monotonic()
    return result


def _wait_for(run, dec):
    """Seconds to wait under the lock for this hold to end, or None."""
    if dec.kind != "hold" or dec.until is None or not run.single:
        return None
    left = dec.until - run.clock()
    if left <= 0 or left > run.hold_wait or run.monotonic() + left + 5.0 > run.deadline:
        return None
    return left


def _round(run, sp, consul):
    """Pause, history, observe, decide, act -> Round."""
    from . import decide
    from ..service import history, observe, pause
    from ..core import metrics

    now = run.clock()
    p = pause.read(consul.client, run.env, sp.service, now)
    if p is not None:
        return Round(decide.Decision("hold", None, pause.describe(p), None, until=p.until), Status.OK,
                     extra={"paused": True})
    drained = _drained(run, sp, consul)
    if drained is not None:
        return Round(decide.Decision("hold", None, drained[1], None), Status.OK, extra={"drained": drained[0]})
    store = history.Store(consul.client, run.env, sp.service)
    hist = store.load()
    consul_index, obs = observe.observe_with(sp, consul.instances, run.engine.get())
    now = run.clock()
    dec = decide.decide(sp, obs, hist, now)
    facts = metrics.heal_facts(sp, hist, dec, now)
    sc = run.scaler(sp, consul.client) if dec.kind == "heal" else None
    argv = sc.argv(dec.target) if sc is not None else None
    if run.dry_run:
        return Round(dec, Status.OK, obs, consul_index, argv)
    _bookkeeping(run, sp, store, hist, dec, now)
    if dec.kind != "heal":
        return Round(dec, Status.WARNING if dec.suspended else Status.OK, obs, consul_index, extra=facts)
    res = sc.scale(dec.target, remove=dec.remove, replace=dec.replace)
    history_error = None
    try:
        store.update(lambda h: history.add_action(h, now, "replace" if dec.replace else "scale", dec.target,
                                                  "started" if res.ok else "failed", run.index))
    except MedicError as e:
        # the action happened: say so (exit 1), never "nothing changed"; the next run's
        # fresh observation sees the new containers as pending either way
        history_error = str(e)
    if not res.ok:
        run.failed_heal(sp, res.output)
        run.alert(sp, dec, "heal_failed", "%s failed: %s" % (" ".join(argv), (res.output or "").strip()[-300:]))
    status = Status.WARNING if (not res.ok or history_error or dec.suspended) else Status.OK
    return Round(dec, status, obs, consul_index, res.argv or argv, res, history_error, facts)


def _drained(run, sp, consul):
    """(node, reason) while medic-drain drains this engine's host (its node's drain record), else None:
    nothing is started on a host being emptied; the other hosts make up the shortfall."""
    from ..service import drain_state, observe
    if sp.scale.driver != "compose":
        return None
    node = observe.engine_host(run.engine.get())
    doc = drain_state.read(consul.client, run.env, node) if node else None
    if doc is None:
        return None
    return node, "host %s is %s by medic-drain (%s): nothing is started on it; medic-drain --undo ends it" % (
        node, doc.get("phase") or "drained", doc.get("by") or "?")


def _record(run, sp, t0, rnd, recheck_note):
    """The round's one audit record, from its final values."""
    dec, obs, res = rnd.decision, rnd.obs, rnd.res
    rec = _base(run, sp, t0, decision=dec.kind, reason=dec.reason, target=dec.target, argv=rnd.argv,
                until=dec.until, recheck=recheck_note,
                result="dry-run" if run.dry_run and obs is not None else
                (None if res is None else "ok" if res.ok else "failed"))
    if obs is not None:
        rec.update(consul_index=rnd.consul_index, observed=dec.counts._asdict(), settle=dec.settle,
                   circuit=dec.circuit, stale=obs.stale,
                   containers=[{"name": c.name, "state": c.state, "passing": c.passing} for c in obs.containers][:50])
    if res is not None:
        rec.update(returncode=res.returncode, removed=res.removed, command_duration=round(res.duration, 3))
        if not res.ok:
            rec["output"] = res.output
    if rnd.history_error:
        rec["history_error"] = rnd.history_error
    rec.update(rnd.extra or {})
    return rec


def _bookkeeping(run, sp, store, hist, dec, now):
    """History transitions (verdict, circuit, suspects) and the alerts they mean."""
    from ..service import history

    if not (dec.settle or dec.circuit or tuple(dec.suspects) != tuple(hist.suspects)):
        return
    store.update(lambda h: history.apply(h, dec, now))
    if dec.settle in ("restored", "failed"):  # 'lost': killed from outside, a loss, not news of the heal
        run.alert(sp, dec, "healed" if dec.settle == "restored" else "heal_failed",
                  "last action %s: %s" % (dec.settle, dec.reason))
    if dec.circuit == "open":
        run.alert(sp, dec, "circuit_open", dec.reason, action="hold")


def _finish(run, sp, consul, rnd, t0, waited):
    """Arrange the look at the hold's end, write the round's one record -> Result."""
    from . import recheck

    dec = rnd.decision
    recheck_note = None
    if dec.kind == "hold" and dec.until is not None and not run.dry_run:
        left = dec.until - run.clock()
        if waited:
            recheck_note = "wait under the lock until the hold ends (%.1f s)" % left
        elif left > MAX_DEFER:
            recheck_note = "hold ends in %.0f s: left to the reconcile check" % left
        elif not run.defer:
            recheck_note = "deferred runs are off (MEDIC_DEFER=off): left to the watches and the reconcile check"
        else:
            at = max(dec.until, run.clock()) + DEFER_SLACK
            recheck_note = recheck.arrange(consul.client, run.env, sp.service, at, lambda t: run.spawn(sp, t),
                                           run.clock())
    rec = _record(run, sp, t0, rnd, recheck_note)
    run.audit(rec)
    return Result(sp.service, rnd.status, _line(sp, dec, rec), dec)


def _base(run, sp, t0, **fields):
    rec = {"service": sp.service, "env": run.env, "index": run.index, "dry_run": run.dry_run, "_t0": t0}
    rec.update(fields)
    return rec


def _line(sp, dec, rec):
    text = "%s: %s%s: %s" % (sp.service, dec.kind, "(%d)" % dec.target if dec.target is not None else "", dec.reason)
    if rec.get("argv"):
        text += " [%s]" % " ".join(rec["argv"])
    result = rec.get("result")
    if result == "dry-run":
        tail = "dry-run: nothing changed"
    elif result == "ok":
        tail = "scaled in %.1f s" % rec["command_duration"]
    elif result == "failed":
        tail = "FAILED: %s" % ((rec.get("output") or "").strip().splitlines() or ["no output"])[-1][:200]
    else:
        tail = ""
    return text + (" (%s)" % tail if tail else "")


def child_env(environ, st, delay, deadline):
    """The environment of a deferred run: the token travels here, never on its argv."""
    env = dict(environ)
    if st is not None and st.token:
        env["CONSUL_HTTP_TOKEN"] = st.token
        env.pop("CONSUL_HTTP_TOKEN_FILE", None)
    env["MEDIC_DEADLINE"] = "%.0f" % (max(0.0, delay) + deadline)
    env.pop("CONSUL_INDEX", None)
    return env
