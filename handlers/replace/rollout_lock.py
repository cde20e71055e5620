"""The per-service lock for rollout and drain: `lock.held`, waiting out a heal run.

A medic-heal run holds the service lock for about a second; a rollout or a drain that
finds it held by "heal" tries again for up to `patience` seconds. Any other holder (a
rollout, a drain, a failover): not ours to wait for, the caller refuses.
"""
import time

from ..consul import lock


def held(client, env, service, operation, renew_client=None, patience=10.0, sleep=time.sleep):
    """A context manager yielding True when held (released on exit), else False."""
    end = time.monotonic() + patience
    while True:
        cm = lock.held(client, env, service, operation, renew_client=renew_client)
        if cm.__enter__():
            return _Entered(cm, True)
        cm.__exit__(None, None, None)
        holder = lock.ServiceLock(client, env, service).holder() or {}
        if holder.get("operation") != "heal" or time.monotonic() >= end:
            return _Entered(None, False)
        sleep(0.5)


def holder_text(client, env, service):
    h = lock.ServiceLock(client, env, service).holder() or {}
    return "lock %s held by %s pid %s (%s)" % (lock.lock_key(env, service), h.get("host", "?"), h.get("pid", "?"),
                                               h.get("operation", "?"))


class _Entered:
    def __init__(self, cm, got):
        self.cm, self.got = cm, got

    def __enter__(self):
        return self.got

    def __exit__(self, *exc):
        if self.cm is not None:
            return self.cm.__exit__(*exc)
        return False
