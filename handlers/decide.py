"""Deciding what to do for one service: a pure function of (spec, observation, history, now).

No I/O here. `observe` builds the Observation, `history` the History; `heal` acts on
the Decision. Every Decision carries a reason.

The arithmetic (per service, `now` in epoch seconds, grace = spec.heal.grace):

    container classes (this engine, the spec's compose/Swarm service):
      passing   running and at least one of its Consul instances passes
      pending   running/restarting (or just created) for less than grace, not passing
      failing   running/restarting/paused for grace or longer, not passing
      stopped   exited, dead, or created long ago (compose counts these in --scale
                and restarts them, see `remove` below)
      dying     removing: neither present nor missing
    remote      passing Consul instances that belong to no local container
                (another host); a remote instance registered, not yet passing and
                started (Meta medic_started) less than grace ago is remote pending
                (another host's healer added it); other failing remote instances
                count for nothing

    passing  = local passing + remote passing
    has      = local passing + pending + failing   (what the engine already runs)
    target   = declared - remote passing - remote pending   (capped by heal.max_instances)

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
from collections import namedtuple

KINDS = ("noop", "hold", "heal", "warn")
RUNNING = ("running", "restarting")
STOPPED = ("exited", "dead")
KNOWN_STATES = ("running", "restarting", "paused", "created", "exited", "dead", "removing")

Container = namedtuple("Container", "id name state created started passing killed")
Container.__new__.__defaults__ = (False,)
Container.__doc__ = """One engine container (or Swarm task) of the service.

state: Docker State.Status; created/started: epoch seconds (0 = never);
passing: True (a Consul instance of it passes), False (registered, not passing),
None (no Consul instance of it); killed: it exited from a signal sent from outside
(exit 137/143, not OOM-killed): a loss, not a crash."""

Remote = namedtuple("Remote", "id node passing started")
Remote.__new__.__defaults__ = (0.0,)
Remote.__doc__ = """A Consul instance that maps to no container of this engine; started: the
container's start time from Meta medic_started (epoch seconds, 0 = unknown)."""

Observation = namedtuple("Observation", "containers remote stale unknown")
Observation.__doc__ = """Fresh state of one service: containers (tuple of Container), remote
(tuple of Remote), stale (Consul instances whose local container is not running),
unknown (tuple of reasons the state cannot be trusted; any makes decide hold)."""

Action = namedtuple("Action", "time kind target result index")
Action.__doc__ = """One past action: kind 'scale' | 'replace'; result 'started' (command ok,
not yet verified) | 'restored' | 'failed'."""

History = namedtuple("History", "actions epoch circuit suspects")
History.__new__.__defaults__ = ((),)
History.__doc__ = """What medic remembers of a service: actions (oldest first), epoch (failures
before it are forgotten: --reset, or a circuit that closed), circuit (time it opened or None),
suspects ((container id, first seen failing), ...): a container is replaced only once it has
been seen failing for a whole grace period, so a healthy container whose instance is briefly
missing or critical (agent restart: checks start critical; a -dev agent's reload drops
API-registered services; a registrar re-registering) is never replaced."""
EMPTY_HISTORY = History((), 0.0, None, ())

Counts = namedtuple("Counts", "declared passing local_passing remote_passing pending failing stopped dying has target "
                             "remote_pending")
Counts.__new__.__defaults__ = (0,)

Decision = namedtuple("Decision", "kind target reason counts remove replace settle circuit suspects until suspended")
Decision.__new__.__defaults__ = (None, None, (), None, None, None, (), None, False)
Decision.__doc__ = """kind: noop|hold|heal|warn; target: scale target (heal) or None; reason: text;
counts: Counts; remove: ids of stopped containers to remove before scaling;
replace: id of the failing container to replace (heal only); settle: 'restored' |
'failed' | None, the verdict on the last action; circuit: 'open' | 'close' | None, a
transition to record (and alert on); suspects: the failing containers with the time each was
first seen failing (to remember); until: when this hold ends by itself (epoch seconds), None
when nothing but a change can end it; suspended: healing is suspended (open circuit) while the
count is short: someone must look (exit 1)."""


def remote_pending(spec, remote, now):
    """Remote instances registered, not passing, started less than grace ago (Meta medic_started)."""
    return [r for r in remote if not r.passing and r.started > 0 and now - r.started < spec.heal.grace
            and r.started <= now + spec.heal.grace]


def container_class(c, now, grace):
    """'passing' | 'pending' | 'failing' | 'stopped' | 'dying' for one container."""
    if c.state in RUNNING:
        if c.passing is True:
            return "passing"
        return "pending" if now - c.started < grace else "failing"
    if c.state == "paused":
        return "failing"  # present (compose counts it) but serves nothing
    if c.state == "created":
        return "pending" if now - c.created < grace else "stopped"
    if c.state in STOPPED:
        return "stopped"
    return "dying"  # removing (or unknown, which obs.unknown already names)


def classify(spec, obs, now):
    """Observation -> Counts (see the module docstring)."""
    n = {"passing": 0, "pending": 0, "failing": 0, "stopped": 0, "dying": 0}
    for c in obs.containers:
        n[container_class(c, now, spec.heal.grace)] += 1
    lp, pending, failing, stopped, dying = n["passing"], n["pending"], n["failing"], n["stopped"], n["dying"]
    rp = sum(1 for r in obs.remote if r.passing)
    rpend = len(remote_pending(spec, obs.remote, now))
    declared = spec.instances
    target = max(0, declared - rp - rpend)
    cap = spec.heal.max_instances
    if cap is not None:
        target = min(target, max(0, cap - rp - rpend))
    has = lp + pending + failing
    return Counts(declared, lp + rp, lp, rp, pending, failing, stopped, dying, has, target, rpend)


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
    counts = classify(spec, obs, now)
    settle = _settle(spec, obs, counts, history, now)
    actions = _effective(history, settle)
    epoch = history.epoch
    circuit_event = None
    prior = dict(history.suspects)
    failing = [c for c in obs.containers if container_class(c, now, spec.heal.grace) == "failing"]
    suspects = tuple(sorted((c.id, prior.get(c.id, now)) for c in failing))

    def d(kind, reason, target=None, **kw):
        return Decision(kind, target, reason, counts, settle=settle, circuit=kw.pop("circuit", circuit_event),
                        suspects=suspects, **kw)

    def guarded(blocked, fmt):
        why, until = blocked
        return d("hold", fmt % why, until=until)

    summary = "%d/%d passing (%d here, %d elsewhere; %d pending, %d failing, %d stopped)" % (
        counts.passing, counts.declared, counts.local_passing, counts.remote_passing,
        counts.pending + counts.remote_pending, counts.failing, counts.stopped)

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
        if counts.failing:
            if not spec.heal.replace_failing:
                return d("warn", "%d container(s) run but fail their checks past grace; replace_failing is off: %s"
                         % (counts.failing, summary))
            confirmed = [c for c in failing if now - dict(suspects)[c.id] >= spec.heal.grace]
            if not confirmed:
                seen = max(now - t for _, t in suspects)
                return d("hold", "%d failing container(s) under watch: replaced once seen failing for %.0f s "
                         "(%.1f s so far): %s" % (len(failing), spec.heal.grace, seen, summary),
                         until=min(t for _, t in suspects) + spec.heal.grace)
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
