"""Where medic-notify remembers what it last said: one Consul KV record per (service, slot).

    medic/<env>/notify/<service>/<slot>   {"state", "since", "sent", "index", "ref", ...}

Written only through `kv.cas_update` (check-and-set, bounded retries). A record it
cannot read is handed to the caller as unknown (`kv.Unreadable` or a wrong shape,
see notify_rules.readable), so one corrupt key never stops the alerts of a service.
"""

from ..core import keys
from ..consul import kv
from ..core.errors import ConsulError


class AlertStore:
    """Last notified state per (service, slot) in Consul KV."""

    def __init__(self, client, cfg, env):
        self.client, self.cfg, self.env = client, cfg, env
        self.known = None  # {key: (value, ModifyIndex)} of one read_prefix, or None

    def key(self, service, slot):
        return keys.key(self.env, "notify", service, slot)

    def prefetch(self):
        """Every slot's record in one read (a run over many services then costs one read and a
        write per change, not a read per service). A failed read leaves the per-key reads."""
        try:
            self.known = kv.read_prefix(self.client, keys.key(self.env, "notify") + "/")
        except ConsulError:
            self.known = None

    def update(self, service, slot, fn, attempts):
        """kv.cas_update on the slot's key: fn(current) -> new record or kv.KEEP."""
        key = self.key(service, slot)
        known = None if self.known is None else self.known.pop(key, (None, 0))
        return kv.cas_update(self.client, key, fn, attempts=attempts, known=known)

    def circuit_opened(self, service):
        """When medic-heal's open-circuit marker (`keys.key(env, "circuit", service)`,
        `{"opened": ...}`) says the circuit opened, or None: tells one crash loop from the next."""
        try:
            opened, _ = kv.read(self.client, keys.key(self.env, "circuit", service))
        except ConsulError:
            return None  # a marker only: without it, the state alone decides
        return str(opened.get("opened")) if isinstance(opened, dict) and opened.get("opened") is not None else None


