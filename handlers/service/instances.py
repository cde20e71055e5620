"""medic-lb's view of Consul: which services, and their instances with health and role.

    select(catalog, names, prefix, tag)   PURE: the service names to render
    instances(name, health_entries)       PURE: GET /v1/health/service/<name> -> [Instance]
    Reader                                I/O: one lighthttp connection, consistent reads
    changes(settings, queue, stop)        I/O: blocking queries that say "something changed"

An instance passes when every one of its checks (node and service) is passing, as
Consul's `?passing` filter means it. Its role is its `master` or `slave` tag (medic-tag /
medic-register keep those), and its priority follows the F5 pools of the seed platform:
master 10, slave 9, anything else 10 - but 8 in a service where some instance has a role, so
an untagged instance (anyone may register one) never shares the master's priority.

Every instance passes the trust boundary (handlers/core/trust.py) and, when a spec names the
service's owner, membership (handlers/service/members.py) first; the others are refusals.
"""
import threading
import time
from collections import namedtuple

from ..core.errors import ConsulError
from ..consul import api

ROLES = ("master", "slave")
PRIORITY = {"master": 10, "slave": 9}
DEFAULT_PRIORITY = 10
UNTAGGED_AMONG_ROLES = 8

Instance = namedtuple("Instance", "id address port tags role node passing priority status")


def role_of(tags):
    """'master' or 'slave' from the tags ('master' wins if both are present), else None."""
    for r in ROLES:
        if r in tags:
            return r
    return None


def select(catalog, names=(), prefix=None, tag=None):
    """Service names to render, sorted. `catalog` is GET /v1/catalog/services ({name: [tags]}).

    With `names`, exactly those (a named service absent from Consul is still selected, so the
    renderer keeps its last good servers). `prefix` and `tag` filter the catalog; all given
    filters must match. Consul's own `consul` service is never selected by a filter.
    """
    if names:
        return sorted(set(names))
    out = []
    for name, tags in catalog.items():
        if name == "consul":
            continue
        if prefix and not name.startswith(prefix):
            continue
        if tag and tag not in (tags or ()):
            continue
        out.append(name)
    return sorted(out)


def instances(name, entries):
    """Health entries of one service -> [Instance] that passed the trust boundary (handlers/core/trust.py),
    sorted by (address, port, id); the refused ones are left out (checked_instances returns them)."""
    return checked_instances(name, entries)[0]


def checked_instances(name, entries, owner=None):
    """-> ([Instance] sorted by (address, port, id), [trust.Refusal]); `owner` (members.Owner):
    only that owner's instances count, the others are refused."""
    from . import members
    from ..core import trust
    good, refused = trust.entries(name, entries)
    good, foreign = members.split(good, owner)
    refused += [trust.Refusal(name, f.id, "owner", trust.printable(members.of(f.meta)),
                              "not %s" % members.describe(owner), False) for f in foreign]
    roles = [role_of(f.tags) for f in good]
    untagged = UNTAGGED_AMONG_ROLES if any(roles) else DEFAULT_PRIORITY
    out = [Instance(f.id, f.address, f.port, f.tags, role, f.node, f.status == "passing",
                    PRIORITY.get(role, untagged), f.status) for f, role in zip(good, roles)]
    return sorted(out, key=lambda i: (i.address, i.port, i.id)), refused


class Reader:
    """Consul reads for one render: the catalog, then each selected service's health."""

    def __init__(self, conn):
        self.conn = conn
        self.refused = []  # [trust.Refusal] of the last view()

    def catalog(self):
        return self.conn.get_json(api.CATALOG_SERVICES)[1] or {}

    def health(self, name):
        return self.conn.get_json(api.health_service(name))[1] or []

    def view(self, names=(), prefix=None, tag=None, owners=None):
        """{service name: [Instance]} for the selected services; what the trust boundary or
        membership (`owners`: {name: members.Owner}) refused is in self.refused."""
        from ..core import trust
        self.refused, out = [], {}
        for name in select(self.catalog(), names, prefix, tag):
            try:
                name = trust.service_name(name)
            except trust.Refused as e:
                self.refused.append(trust.Refusal(trust.printable(name), "-", "service", trust.printable(name),
                                                  e.reason, False))
                continue
            good, refused = checked_instances(name, self.health(name), (owners or {}).get(name))
            out[name] = good
            self.refused.extend(refused)
        return out


class Changes:
    """Blocking queries on the catalog and on every check; each answer with a new index puts
    ("change", what, index) on `queue`. The answers' content is never used: the renderer
    re-reads Consul, so a replayed or partial answer can do no harm."""

    PATHS = (api.CATALOG_SERVICES, api.health_state("any"))

    def __init__(self, settings, queue, stop, wait=30):
        self.settings = settings._replace(timeout=settings.timeout + wait + wait / 16.0 + 1)
        self.queue, self.stop, self.wait = queue, stop, wait
        self.threads = [threading.Thread(target=self._run, args=(p,), daemon=True, name="medic-lb " + p)
                        for p in self.PATHS]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _run(self, path):
        from ..consul.lighthttp import Connection
        index, backoff, lost = None, 0.2, False
        with Connection(self.settings) as conn:
            while not self.stop.is_set():
                params = [("wait", "%ds" % self.wait)] + ([("index", str(index))] if index else [])
                try:
                    resp = conn.call("GET", path, params)
                except ConsulError as e:
                    self.queue.put(("error", path, str(e)))
                    # the agent may come back restarted, its index lower than ours: a query on
                    # the old index would block a whole `wait` on an agent that has moved on
                    index, lost = None, True
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                new = resp.index
                if new is None:
                    self.stop.wait(1)
                    continue
                if (index is not None and new != index) or lost:
                    self.queue.put(("change", path, new))   # after an outage: whatever changed meanwhile
                    lost = False
                index = api.next_index(index, new) or None  # backwards: the query starts again


def coalesce(queue, first_at, wait_min, wait_max, clock=time.monotonic):
    """After a first change at `first_at`, drain `queue` until it has been quiet for `wait_min`
    or `wait_max` has passed since the first change (consul-template's `wait`). Returns the
    number of further events drained."""
    import queue as queue_mod
    n, last = 0, first_at
    while True:
        now = clock()
        left = min(last + wait_min, first_at + wait_max) - now
        if left <= 0:
            return n
        try:
            queue.get(timeout=left)
        except queue_mod.Empty:
            return n
        n += 1
        last = clock()
