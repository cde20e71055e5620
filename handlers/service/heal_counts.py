"""Counting one service's instances for medic-heal: a pure function of (spec, observation, now,
first-seen times). decide.py explains the arithmetic; this module does it.

    container classes (this engine, the spec's compose/Swarm service):
      passing   running and at least one of its Consul instances passes
      pending   running/restarting (or just created) for less than grace, not passing
      failing   running/restarting/paused for grace or longer, not passing
      stopped   exited, dead, or created long ago (compose counts these in --scale
                and restarts them)
      dying     removing: neither present nor missing
    remote      Consul instances that belong to no local container (another host):
      passing   counts
      pending   registered, not passing, started (Meta medic_started) less than grace
                ago: another host's healer just added it
      watched   not passing on a live node (no failing serfHealth, no maintenance), first
                seen failing less than grace ago: its own host's medic answers for it (an
                agent restart starts every check critical until its first probe; a check
                flaps). Made up here only once seen failing for a whole grace, as a local
                failing container is replaced only then.
      the rest  (down nodes, maintenance, watched past grace) count for nothing
"""
from .heal_model import RUNNING, STOPPED, Counts


def remote_pending(spec, remote, now):
    """Remote instances registered, not passing, started less than grace ago (Meta medic_started)."""
    return [r for r in remote if not r.passing and not r.down and r.started > 0
            and now - r.started < spec.heal.grace and r.started <= now + spec.heal.grace]


def remote_suspects(spec, remote, now):
    """Remote instances failing on a live node that are not pending: their host's medic's business first."""
    pending = {r.id for r in remote_pending(spec, remote, now)}
    return [r for r in remote if not r.passing and not r.down and r.id not in pending]


def remote_watched(spec, remote, now, seen):
    """The remote suspects first seen failing (`seen`: id -> epoch) less than grace ago."""
    return [r for r in remote_suspects(spec, remote, now) if now - seen.get(r.id, now) < spec.heal.grace]


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


def classify(spec, obs, now, seen=None):
    """Observation -> Counts. `seen`: first-seen-failing times (id -> epoch) of remote suspects;
    None: every remote suspect is first seen now (watched)."""
    n = {"passing": 0, "pending": 0, "failing": 0, "stopped": 0, "dying": 0}
    for c in obs.containers:
        n[container_class(c, now, spec.heal.grace)] += 1
    lp, pending, failing, stopped, dying = n["passing"], n["pending"], n["failing"], n["stopped"], n["dying"]
    rp = sum(1 for r in obs.remote if r.passing)
    rpend = len(remote_pending(spec, obs.remote, now))
    rwatch = len(remote_watched(spec, obs.remote, now, seen or {}))
    declared = spec.instances
    target = max(0, declared - rp - rpend - rwatch)
    cap = spec.heal.max_instances
    if cap is not None:
        target = min(target, max(0, cap - rp - rpend - rwatch))
    has = lp + pending + failing
    return Counts(declared, lp + rp, lp, rp, pending, failing, stopped, dying, has, target, rpend, rwatch)


def suspects(spec, obs, prior, failing, now):
    """What to remember as first seen failing -> ((id, epoch), ...), sorted.

    Local failing containers (by container ID) and remote suspects (by instance ID) keep the
    time they were first seen. Several hosts share one history: an entry this observation
    cannot judge (another host's container, an instance that is local there) is kept as it
    was, for at most 2 x grace, so no host restarts another's clock."""
    out = {c.id: prior.get(c.id, now) for c in failing}
    out.update((r.id, prior.get(r.id, now)) for r in remote_suspects(spec, obs.remote, now))
    known = {c.id for c in obs.containers} | {r.id for r in obs.remote}
    for k, t in prior.items():
        if k not in known and k not in out and now - t < 2 * spec.heal.grace:
            out[k] = t
    return tuple(sorted(out.items()))
