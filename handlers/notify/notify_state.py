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

    def key(self, service, slot):
        return keys.key(self.env, "notify", service, slot)

    def update(self, service, slot, fn, attempts):
        """kv.cas_update on the slot's key: fn(current) -> new record or kv.KEEP."""
        return kv.cas_update(self.client, self.key(service, slot), fn, attempts=attempts)

    def circuit_opened(self, service):
        """When medic-heal's open-circuit marker (`keys.key(env, "circuit", service)`,
        `{"opened": ...}`) says the circuit opened, or None: tells one crash loop from the next."""
        try:
            opened, _ = kv.read(self.client, keys.key(self.env, "circuit", service))
        except ConsulError:
            return None  # a marker only: without it, the state alone decides
        return str(opened.get("opened")) if isinstance(opened, dict) and opened.get("opened") is not None else None


