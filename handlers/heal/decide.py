"""Deciding what to do for one service: a pure function of (spec, observation, history, now).

No I/O here. `observe` builds the Observation, `history` the History; `heal` acts on
the Decision. Every Decision carries a reason.

The arithmetic (per service, `now` in epoch seconds, grace = spec.heal.grace; the classes of
containers and remote instances are in heal_counts.py):

    passing  = local passing + remote passing
    has      = local passing + pending + failing   (what the engine already runs)
    target   = declared - remote passing - remote pending - remote watched
               (capped by heal.max_instances)

So target = has + (what is missing in Consul beyond pending and failing), and it can
never exceed `declared`: a replayed payload, a container that has not registered
yet, or Consul and the engine read a moment apart cannot make it larger. Local
instances whose container is not running (Consul has not noticed yet) are not
counted as passing: the engine is the authority on its own containers.

Decision kinds: noop (count met), hold (wait: pending, cooldown, backoff, circuit,
unknown, disabled, paused, another operation), heal (scale to target, or replace one
failing container), warn (more than declared, or failing containers that the spec does
not let us replace). Every hold that ends by itself says when (`Decision.until`): the
caller looks again then.

Verdicts on the last action: restored (one of its containers passes, or the count is
met), failed (nothing it started passes within grace, or all it started crashed), lost
(what it started was killed from outside: exit 137/143 without OOM; a loss, not a failed
heal, so no backoff step and no heal_failed alert). Cooldown guards only an action that
has not settled ('started') or failed; backoff and the circuit count only 'failed'.
"""
from ..service.heal_model import RUNNING, EMPTY_HISTORY, Decision
from ..service.heal_counts import classify, container_class, remote_pending, remote_watched, suspects as _suspects


def backoff_delay(spec, failures):
    """Delay after `failures` consecutive failed attempts: base doubling to max (0 when none)."""
    if failures <= 0:
        return 0.0
    return min(spec.heal.backoff_base * (2 ** min(failures - 1, 60)), spec.heal.backoff_max)


def _settle(spec, obs, counts, history, now):
    """The verdict on the last action if it is still unverified, else None.

    The containers the action (re)started are those started at or after its time: one of
    them passing means it worked (a later loss is a new event, not its failure); all of
    them stopped again means it failed at once (a crash loop)."""
    if not history.actions:
        return None
    last = history.actions[-1]
    if last.result != "started":
        return None
    if counts.passing >= counts.declared:
        return "restored"
    grace = spec.heal.grace
    mine = [container_class(c, now, grace) for c in obs.containers if c.started >= last.time]
    if "passing" in mine:
        return "restored"
    killed = any(c.killed for c in obs.containers if c.started >= last.time)
    if mine and all(k in ("stopped", "dying") for k in mine):
        return "lost" if killed else "failed"  # killed from outside, or crashed
    if now - last.time >= grace:
        return "lost" if killed else "failed"
    return None


def _effective(history, settle):
    """History with the settle verdict applied to the last action."""
    if settle is None:
        return history.actions
    return history.actions[:-1] + (history.actions[-1]._replace(result=settle),)


def failures_in_window(spec, actions, epoch, now):
    return sum(1 for a in actions
               if a.result == "failed" and a.time >= epoch and now - a.time <= spec.heal.window)


def consecutive_failures(actions, epoch):
    n = 0
    for a in reversed(actions):
        if a.time < epoch or a.result == "restored":
            break
        if a.result == "failed":
            n += 1
    return n


def _stopped_to_remove(obs, counts, target, now, grace):
    """Compose counts stopped containers in --scale and restarts them; when more exist than
    the target leaves room for, it removes the highest-numbered ones, running or not.
    So remove the surplus stopped ones first: dead before exited, oldest first."""
    surplus = counts.has + counts.stopped - target
    if surplus <= 0:
        return ()
    stopped = [c for c in obs.containers if container_class(c, now, grace) == "stopped"]
    stopped.sort(key=lambda c: (c.state != "dead", c.started or c.created, c.id))
    return tuple(c.id for c in stopped[:surplus])


def decide(spec, obs, history, now):
    """-> Decision. Pure: the same arguments always give the same Decision."""
    history = history or EMPTY_HISTORY
    failing = [c for c in obs.containers if container_class(c, now, spec.heal.grace) == "failing"]
    suspects = _suspects(spec, obs, dict(history.suspects), failing, now)
    seen = dict(suspects)
    counts = classify(spec, obs, now, seen)
    settle = _settle(spec, obs, counts, history, now)
    actions = _effective(history, settle)
    epoch = history.epoch
    circuit_event = None

    def d(kind, reason, target=None, **kw):
        return Decision(kind, target, reason, counts, settle=settle, circuit=kw.pop("circuit", circuit_event),
                        suspects=suspects, **kw)

    def guarded(blocked, fmt):
        why, until = blocked
        return d("hold", fmt % why, until=until)

    summary = "%d/%d passing (%d here, %d elsewhere; %d pending, %d failing, %d stopped)" % (
        counts.passing, counts.declared, counts.local_passing, counts.remote_passing,
        counts.pending + counts.remote_pending, counts.failing, counts.stopped)
    if counts.remote_watched:
        summary += "; %d failing elsewhere, under watch" % counts.remote_watched

    if obs.unknown:
        return d("hold", "state unknown, not acting: " + "; ".join(obs.unknown))

    # the circuit: open while failures pile up, closed after a window or --reset
    if history.circuit is not None:
        if now < history.circuit + spec.heal.window:
            if counts.passing >= counts.declared:
                return d("noop", "count met; circuit open since a crash loop (medic-heal --reset %s): %s"
                         % (spec.service, summary))
            return d("hold", "circuit open (%d failed attempts); no action until %.0f s from now "
                     "or medic-heal --reset %s: %s" % (
                         failures_in_window(spec, actions, epoch, history.circuit + 1e-9) or spec.heal.max_attempts,
                         history.circuit + spec.heal.window - now, spec.service, summary),
                     until=history.circuit + spec.heal.window, suspended=True)
        circuit_event, epoch = "close", now
    fails = failures_in_window(spec, actions, epoch, now)
    if history.circuit is None and fails >= spec.heal.max_attempts and counts.passing < counts.declared:
        return d("hold", "circuit opens: %d failed attempts within %.0f s: %s"
                 % (fails, spec.heal.window, summary), circuit="open", until=now + spec.heal.window,
                 suspended=True)

    if counts.passing > counts.declared:
        if (spec.heal.scale_down and spec.heal.enabled and counts.local_passing > 0
                and counts.pending == 0 and counts.failing == 0 and counts.stopped == 0
                and counts.target < counts.has):
            blocked = _guard(spec, actions, epoch, now)
            if blocked:
                return guarded(blocked, "more than declared, scale-down waits: %s: " + summary)
            return d("heal", "more than declared, scale_down is on: %s -> %d here" % (summary, counts.target),
                     target=counts.target)
        return d("warn", "more than declared (scale_down is off): " + summary)
    if counts.passing == counts.declared:
        note = "; %d failing container(s) ignored" % counts.failing if counts.failing else ""
        return d("noop", "count met: " + summary + note)

    # a shortfall
    if not spec.heal.enabled:
        return d("hold", "heal disabled in the spec: " + summary)
    if counts.target <= counts.has:
        if counts.pending or counts.remote_pending:
            return d("hold", "waiting for %d pending container(s) (started < %.0f s ago): %s"
                     % (counts.pending + counts.remote_pending, spec.heal.grace, summary),
                     until=_pending_ends(spec, obs, history, now))
        if counts.remote_watched and not counts.failing:
            watched = remote_watched(spec, obs.remote, now, seen)
            return d("hold", "%d instance(s) fail on other live hosts (node %s): their own medic answers for "
                     "them; made up here once seen failing for %.0f s: %s" % (
                         len(watched), ", ".join(sorted({r.node for r in watched})), spec.heal.grace, summary),
                     until=min(seen[r.id] for r in watched) + spec.heal.grace)
        if counts.failing:
            if not spec.heal.replace_failing:
                return d("warn", "%d container(s) run but fail their checks past grace; replace_failing is off: %s"
                         % (counts.failing, summary))
            confirmed = [c for c in failing if now - seen[c.id] >= spec.heal.grace]
            if not confirmed:
                first = min(seen[c.id] for c in failing)
                return d("hold", "%d failing container(s) under watch: replaced once seen failing for %.0f s "
                         "(%.1f s so far): %s" % (len(failing), spec.heal.grace, now - first, summary),
                         until=first + spec.heal.grace)
            blocked = _guard(spec, actions, epoch, now)
            if blocked:
                return guarded(blocked, "replace waits: %s: " + summary)
            victim = sorted(confirmed, key=lambda c: (c.started, c.id))[0]
            # one out, one in; never so low that compose would remove another container
            target = max(counts.target, counts.has - 1)
            return d("heal", "replace failing container %s (one at a time): %s" % (victim.name, summary),
                     target=target, replace=victim.id,
                     remove=_stopped_to_remove(obs, counts._replace(has=counts.has - 1), target, now,
                                               spec.heal.grace))
        return d("hold", "shortfall but nothing to add here (target %d, engine has %d): %s"
                 % (counts.target, counts.has, summary))
    blocked = _guard(spec, actions, epoch, now)
    if blocked:
        return guarded(blocked, "%s: " + summary)
    return d("heal", "%s -> scale to %d here" % (summary, counts.target), target=counts.target,
             remove=_stopped_to_remove(obs, counts, counts.target, now, spec.heal.grace))


def _pending_ends(spec, obs, history, now):
    """When the earliest pending container (here or remote) leaves 'pending', or the last
    unsettled action is judged: the moment a fresh look can decide differently."""
    grace = spec.heal.grace
    ends = [(c.started if c.state in RUNNING else c.created) + grace for c in obs.containers
            if container_class(c, now, grace) == "pending"]
    ends += [r.started + grace for r in remote_pending(spec, obs.remote, now)]
    if history.actions and history.actions[-1].result == "started":
        ends.append(history.actions[-1].time + grace)
    ends = [t for t in ends if t > now]
    return min(ends) if ends else None


def _guard(spec, actions, epoch, now):
    """Why an action must wait now and until when: (reason, until), or None.

    Backoff follows consecutive failed attempts (a crash loop); cooldown guards only an
    action that has not settled yet ('started') or failed: once it is restored (or lost to an
    outside kill), a new loss is healed at once."""
    if not actions:
        return None
    last = actions[-1]
    since = now - last.time
    fails = consecutive_failures(actions, epoch)
    delay = backoff_delay(spec, fails)
    if fails and since < delay and delay >= spec.heal.cooldown:
        return ("backoff: %d failed attempt(s), next in %.1f s (delay %.0f s)" % (fails, delay - since, delay),
                last.time + delay)
    if last.result in ("started", "failed") and since < spec.heal.cooldown:
        return ("cooldown: last action %.1f s ago, %s (cooldown %.0f s)" % (
            since, "not settled yet" if last.result == "started" else "failed", spec.heal.cooldown),
                last.time + spec.heal.cooldown)
    return None
