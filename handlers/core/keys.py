"""The Consul KV layout medic shares between monitoring nodes and executables.

    medic/<env>/lock/<service>          session lock: heal, rolling update, drain, failover
    medic/<env>/history/<service>       bounded JSON list of heal actions (time, result, index)
    medic/<env>/circuit/<service>       open circuit marker (crash loop), cleared by --reset
    medic/<env>/notify/<service>/<id>   last notified state per check (medic-notify)
    medic/<env>/roles/<service-id>      dynamic role tags (medic-tag)
    medic/<env>/pause/<service>         medic-heal --pause: every handler holds (handlers/service/pause.py)
    medic/<env>/dirty/<service>         a run found the lock held: the holder looks again (handlers/heal/recheck.py)
    medic/<env>/deferred/<service>      the one pending deferred medic-heal run (handlers/heal/recheck.py)
    medic/<env>/wake/<service>          medic-register's wake-up key; medic-heal deletes it once seen
    medic/<env>/storm/fleet             fleet-wide backoff after a correlated failure (handlers/heal/heal_storm.py)

<env> is the selected environment, or "default" when none is selected.
"""
PREFIX = "medic"


def key(env, kind, *parts):
    for p in parts:
        if not p or "/" in p or p in (".", ".."):
            raise ValueError("bad KV key part %r" % (p,))
    return "/".join((PREFIX, env or "default", kind) + tuple(parts))


def wake_prefix(env):
    """The prefix of every wake-up key of `env` (the keyprefix watch's prefix)."""
    return key(env, "wake", "x")[:-1]
