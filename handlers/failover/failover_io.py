"""medic-failover's I/O: Consul (instances, the failover record, pause) and Redis (probe, promote,
replicate). Nothing here decides (failover_decide does).

KV: medic/<env>/failover/<service>  {"master": id, "address": "ip:port", "replid": the master's
    replication ID, "at": epoch, "by": host}

Instances pass the trust boundary (handlers/core/trust.py: address, port, ID) and membership
(handlers/service/members.py: the owner the spec names) before medic ever connects to them; the others
are returned as refusals. Redis is spoken to with AUTH (RedisAuth: an ACL user and a password read
from a file, never from argv) and TLS when configured.
"""
import json
import socket
import threading
import time
from collections import namedtuple

from ..consul import api
from ..core import keys, trust
from ..service import instances, members
from ..core.errors import MedicError
from .failover_decide import Node, Probe

REDIS_TIMEOUT = 1.0
MAX_SECRET = 4096


class RedisError(MedicError):
    kind = "redis"


class RedisAuth(namedtuple("RedisAuth", "username password tls cacert")):
    """How medic authenticates to Redis: nothing by default."""
    __slots__ = ()

    def __repr__(self):  # never the password
        return "RedisAuth(username=%r, password=%s, tls=%r)" % (self.username, "***" if self.password else None,
                                                               self.tls)


NO_AUTH = RedisAuth(None, None, False, None)


def read_secret(path):
    """A password file: a regular file of at most 4096 bytes, its first line. UsageError otherwise."""
    import os
    import stat

    from ..core.errors import UsageError
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UsageError("Redis password file %s: %s" % (path, e.strerror)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError("Redis password file %s: not a regular file" % path)
        raw = f.read(MAX_SECRET + 1)
    if len(raw) > MAX_SECRET:
        raise UsageError("Redis password file %s: larger than %d bytes" % (path, MAX_SECRET))
    lines = raw.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0]:
        raise UsageError("Redis password file %s: empty" % path)
    return lines[0]


def _client(address, port, timeout=REDIS_TIMEOUT, auth=NO_AUTH):
    import redis
    kw = {}
    if auth.password:
        kw.update(password=auth.password, username=auth.username or None)
    if auth.tls:
        kw.update(ssl=True, ssl_ca_certs=auth.cacert, ssl_cert_reqs="required")
    return redis.Redis(host=address, port=int(port), socket_timeout=timeout, socket_connect_timeout=timeout, **kw)


def probe(address, port, timeout=REDIS_TIMEOUT, auth=NO_AUTH):
    """INFO replication -> Probe, or None when Redis does not answer, refuses us, or says a role
    that is neither master nor slave."""
    import redis
    try:
        r = _client(address, port, timeout, auth)
        try:
            info = r.info("replication")
        finally:
            r.close()
    except (redis.RedisError, OSError, ValueError):
        return None
    role = info.get("role")
    try:
        if role == "slave":
            return Probe("slave", int(info.get("slave_repl_offset") or 0), str(info.get("master_host") or ""),
                         int(info.get("master_port") or 0), info.get("master_link_status"),
                         _id(info.get("master_replid")), _id(info.get("master_replid2")))
        if role == "master":
            return Probe("master", int(info.get("master_repl_offset") or 0), None, None, None,
                         _id(info.get("master_replid")), _id(info.get("master_replid2")))
    except (TypeError, ValueError):
        return None
    return None


def _id(v):
    """A replication ID as Redis reports it (40 hex digits); anything else is no ID."""
    s = str(v or "")
    return s if len(s) == 40 and all(c in "0123456789abcdef" for c in s) and s != "0" * 40 else None


def promote(address, port, auth=NO_AUTH):
    """REPLICAOF NO ONE, then check that Redis says master -> its new replication ID."""
    import redis
    try:
        r = _client(address, port, auth=auth)
        try:
            r.execute_command("REPLICAOF", "NO", "ONE")
            info = r.info("replication")
        finally:
            r.close()
    except (redis.RedisError, OSError) as e:
        raise RedisError("REPLICAOF NO ONE on %s:%s failed: %s" % (address, port, e)) from None
    if info.get("role") != "master":
        raise RedisError("%s:%s still says %s after REPLICAOF NO ONE" % (address, port, info.get("role")))
    return _id(info.get("master_replid"))


def replicate(address, port, master_address, master_port, auth=NO_AUTH):
    import redis
    try:
        r = _client(address, port, auth=auth)
        try:
            r.execute_command("REPLICAOF", master_address, str(master_port))
        finally:
            r.close()
    except (redis.RedisError, OSError) as e:
        raise RedisError("REPLICAOF %s %s on %s:%s failed: %s" % (master_address, master_port, address, port, e)) \
            from None


class Consul:
    """Reads and the record through one lighthttp connection."""

    def __init__(self, conn, env, service, owner=None, auth=NO_AUTH):
        self.conn, self.env, self.service = conn, env, service
        self.owner, self.auth = owner, auth
        self.record_key = keys.key(env, "failover", service)
        self.refused = []  # [trust.Refusal] of the last nodes(): failed the boundary, or not owned

    def nodes(self):
        """[Node] of the service's owned, well-formed instances: Consul's view, probed in parallel
        (passing instances only). Everything else is in self.refused and never contacted."""
        entries = self.conn.get_json(api.health_service(self.service))[1]
        good, self.refused = trust.entries(self.service, entries)
        good, foreign = members.split(good, self.owner)
        self.refused += [trust.Refusal(self.service, f.id, "owner", trust.printable(members.of(f.meta)),
                                       "not %s" % members.describe(self.owner), False) for f in foreign]
        insts = [(f, instances.role_of(f.tags), f.status == "passing") for f in good]
        probes = {}

        def run(f):
            probes[f.id] = probe(f.address, f.port, auth=self.auth)

        threads = [threading.Thread(target=run, args=(f,)) for f, _, passing in insts if passing]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [Node(f.id, f.address, f.port, role, passing, probes.get(f.id)) for f, role, passing in insts]

    def _get(self, key):
        raw = api.kv_read(self.conn, key) or b"null"
        try:
            return json.loads(raw)
        except ValueError:
            return {"malformed": True}

    def record(self):
        rec = self._get(self.record_key)
        return rec if isinstance(rec, dict) and rec.get("master") else None

    def write_record(self, rec):
        body = dict(rec, at=time.time(), by=socket.gethostname())
        api.kv_put(self.conn, self.record_key, json.dumps(body, sort_keys=True).encode())

    def paused(self, now=None):
        """The pause in force (handlers/service/pause.py's record, medic-heal --pause), else None. An
        unreadable record is a pause that says so, as for medic-heal."""
        from ..service import pause
        raw = api.kv_read(self.conn, pause.pause_key(self.env, self.service))
        return pause.active(pause.parse(raw), time.time() if now is None else now)
