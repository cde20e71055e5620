"""medic-heal's operator commands: --reset, --pause, --resume (docs/medic-heal.md). Each is audited."""
import math

from ..core import runtime
from ..core.errors import UsageError
from ..core.status import Outcome, Status
from ..consul.consul_errors import failures as consul_failures

MAX_PAUSE = 30 * 86400.0  # --for longer than 30 days: pause without --for (until --resume)


def reset(ctx, sp):
    """Close the circuit, forget failures; a history that does not parse is replaced."""
    from ..service import history

    consul = ctx.consul(ctx.settings(sp))
    store = history.Store(consul.client, ctx.env, sp.service)
    store.load(tolerate_corrupt=True)
    now = ctx.clock()
    store.update(lambda h: history.reset(h, now))
    try:
        consul.client.kv.delete(history.circuit_key(ctx.env, sp.service))
    except consul_failures():
        pass
    rec = {"service": sp.service, "env": ctx.env, "decision": "reset", "dry_run": False, "result": "ok",
           "reason": "circuit closed, backoff and failure count cleared by --reset"}
    text = "%s: circuit closed, backoff cleared" % sp.service
    if store.corrupt is not None:
        rec.update(reason="an unreadable history was replaced by an empty one by --reset", cleared=store.corrupt)
        text = "%s: unreadable history cleared (was: %s)" % (sp.service, store.corrupt["error"])
    ctx.audit(rec)
    return Outcome(Status.OK, runtime.status_line(Status.OK, text))


def parse_for(raw):
    """--for DURATION -> seconds (finite, > 0, at most 30 days). Raises UsageError."""
    from ..spec import spec
    try:
        value = spec.parse_duration(raw.strip())
    except (ValueError, AttributeError, TypeError):
        value = None
    if value is None or not math.isfinite(value) or not 0 < value <= MAX_PAUSE:
        raise UsageError("--for %r: use a duration such as 30m or 2h (at most 30 days)" % (raw,))
    return value


def pause(ctx, sp, pause_for=None, reason=None):
    from ..service import pause as pause_mod

    seconds = parse_for(pause_for) if pause_for else None
    now = ctx.clock()
    client = ctx.consul(ctx.settings(sp)).client
    p = pause_mod.set(client, ctx.env, sp.service, None if seconds is None else now + seconds, reason or "", now=now)
    text = pause_mod.describe(p)
    busy = _quiesce(ctx, sp)
    ctx.audit({"service": sp.service, "env": ctx.env, "decision": "pause", "dry_run": False, "result": "ok",
               "reason": text, "until": p.until, "by": p.by, "still_running": busy})
    tail = ("; %s: it stops at its next look" % busy) if busy else "; medic changes nothing of it until then"
    return Outcome(Status.OK, runtime.status_line(Status.OK, "%s: %s%s" % (sp.service, text, tail)))


PAUSE_WAIT = 20.0  # how long --pause waits for a run that started before it


def _quiesce(ctx, sp):
    """After the pause is written, take the service lock once (then let it go): a run that began
    before the pause and still holds the lock may otherwise act on what it read before. Returns
    None when no earlier run can act any more, else who still holds the lock (a rollout, say)."""
    from ..consul import lock

    consul = ctx.consul(ctx.settings(sp))
    lk = lock.ServiceLock(consul.client, ctx.env, sp.service, "pause", renew_client=consul.renew_client)
    end = ctx.monotonic() + PAUSE_WAIT
    while True:
        if lk.acquire():
            lk.release()
            return None
        lk.free_if_dead()
        if ctx.monotonic() >= end:
            h = lk.holder() or {}
            return "the lock is still held by %s pid %s (%s)" % (h.get("host", "?"), h.get("pid", "?"),
                                                                h.get("operation", "?"))
        ctx.parts.sleep(0.2)


def resume(ctx, sp):
    """Remove the pause -> a line for the output (the caller then looks at the service at once)."""
    from ..service import pause as pause_mod

    old = pause_mod.clear(ctx.consul(ctx.settings(sp)).client, ctx.env, sp.service)
    active = pause_mod.active(old, ctx.clock())
    reason = ("resumed (was %s)" % pause_mod.describe(old)) if active else "resumed (it was not paused)"
    ctx.audit({"service": sp.service, "env": ctx.env, "decision": "resume", "dry_run": False, "result": "ok",
               "reason": reason})
    return "%s: %s; looking at it now" % (sp.service, reason)
