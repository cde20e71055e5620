"""medic-failover's I/O: Consul (instances, the failover record, pause) and Redis (probe, promote,
replicate). Nothing here decides (failover_decide does).

KV: medic/<env>/failover/<service>  {"master": id, "address": "ip:port", "at": epoch, "by": host}
"""
import base64
import json
import socket
import threading
import time

from . import keys, lb_view
from .errors import MedicError
from .failover_decide import Node, Probe
from .lighthttp import api_path, key_path

REDIS_TIMEOUT = 1.0


class RedisError(MedicError):
    kind = "redis"


def _client(address, port, timeout=REDIS_TIMEOUT):
    import redis
    return redis.Redis(host=address, port=int(port), socket_timeout=timeout, socket_connect_timeout=timeout)


def probe(address, port, timeout=REDIS_TIMEOUT):
    """INFO replication -> Probe, or None when Redis does not answer."""
    import redis
    try:
        r = _client(address, port, timeout)
        try:
            info = r.info("replication")
        finally:
            r.close()
    except (redis.RedisError, OSError):
        return None
    role = info.get("role")
    if role == "slave":
        return Probe("slave", int(info.get("slave_repl_offset") or 0), str(info.get("master_host") or ""),
                     int(info.get("master_port") or 0), info.get("master_link_status"), info.get("master_replid"))
    return Probe("master", int(info.get("master_repl_offset") or 0), None, None, None, info.get("master_replid"))


def promote(address, port):
    """REPLICAOF NO ONE, then check that Redis says master."""
    import redis
    try:
        r = _client(address, port)
        try:
            r.execute_command("REPLICAOF", "NO", "ONE")
            role = r.info("replication").get("role")
        finally:
            r.close()
    except (redis.RedisError, OSError) as e:
        raise RedisError("REPLICAOF NO ONE on %s:%s failed: %s" % (address, port, e)) from None
    if role != "master":
        raise RedisError("%s:%s still says %s after REPLICAOF NO ONE" % (address, port, role))


def replicate(address, port, master_address, master_port):
    import redis
    try:
        r = _client(address, port)
        try:
            r.execute_command("REPLICAOF", master_address, str(master_port))
        finally:
            r.close()
    except (redis.RedisError, OSError) as e:
        raise RedisError("REPLICAOF %s %s on %s:%s failed: %s" % (master_address, master_port, address, port, e)) \
            from None


class Consul:
    """Reads and the record through one lighthttp connection."""

    def __init__(self, conn, env, service):
        self.conn, self.env, self.service = conn, env, service
        self.record_key = keys.key(env, "failover", service)

    def nodes(self):
        """[Node] of the service: Consul's view, probed in parallel (passing instances only)."""
        insts = lb_view.instances(self.service, self.conn.get_json(
            api_path("/v1/health/service", self.service))[1])
        probes = {}

        def run(i):
            probes[i.id] = probe(i.address, i.port)

        threads = [threading.Thread(target=run, args=(i,)) for i in insts if i.passing]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [Node(i.id, i.address, i.port, i.role, i.passing, probes.get(i.id)) for i in insts]

    def _get(self, key):
        resp = self.conn.call("GET", key_path("/v1/kv", key), ok=(200, 404))
        if resp.status == 404:
            return None
        raw = base64.b64decode((resp.json() or [{}])[0].get("Value") or b"") or b"null"
        try:
            return json.loads(raw)
        except ValueError:
            return {"malformed": True}

    def record(self):
        rec = self._get(self.record_key)
        return rec if isinstance(rec, dict) and rec.get("master") else None

    def write_record(self, rec):
        body = dict(rec, at=time.time(), by=socket.gethostname())
        self.conn.call("PUT", key_path("/v1/kv", self.record_key), None,
                       json.dumps(body, sort_keys=True).encode())

    def paused(self, now=None):
        """The pause in force (handlers/pause.py's record, medic-heal --pause), else None. An
        unreadable record is a pause that says so, as for medic-heal."""
        from . import pause
        resp = self.conn.call("GET", key_path("/v1/kv", pause.pause_key(self.env, self.service)),
                              ok=(200, 404))
        raw = None if resp.status == 404 else base64.b64decode((resp.json() or [{}])[0].get("Value") or b"")
        return pause.active(pause.parse(raw), time.time() if now is None else now)
