"""medic-drain on the multi-host testbed (testbed/hosts.sh), with real traffic through nginx.

    measure_drain() -> {"exit", "stdout", "empty_s", "requests", "failed", "per_host", ...}

A throwaway Consul server, 3 hosts (engines + client agents + medic-register, offset 40:
127.0.0.51-53, bridges medicbr41-43), a 3-instance compose service all on host 1, nginx
rendered by medic-lb --watch from the server agent, a client sending requests through it
while host 1 is drained, then `--undo --rebalance`. Everything is torn down at the end.
"""
import json
import os
import shutil
import tempfile
import time
import uuid

import support
import support_heal as sh
import support_hosts as shs
import support_rollout_traffic as srt

OFFSET = 40


class DrainWorld:
    def __init__(self, tmp, unique):
        self.unique, self.tmp = unique, tmp
        self.service = "roll-drain-%s.example" % unique
        self.project = "rolldrain%s" % unique
        self.specs = os.path.join(tmp, "specs")
        self.audit = os.path.join(tmp, "audit.jsonl")
        self.file = shs.write_compose(os.path.join(tmp, "compose.yml"), self.service)
        sh.write_spec(self.specs, self.service, self.project, 3, file=self.file)
        self.server = self.hosts = None

    def up(self):
        self.server = support.ConsulAgent(node="medic-roll-drain-" + self.unique, dev=False,
                                          config={"server": True, "bootstrap_expect": 1}).start()
        self.hosts = shs.Hosts(3, self.server.serf_addr, offset=OFFSET)
        shs.start_or_require(self.hosts)
        return self

    @property
    def hosts_file(self):
        return os.path.join(self.hosts.dir, "hosts.json")

    def node(self, i):
        return self.hosts.host(i)["node"]

    def env(self, **extra):
        return support.medic_env(CONSUL_HTTP_ADDR=self.server.addr, MEDIC_SPECS=self.specs,
                                 MEDIC_AUDIT_LOG=self.audit, MEDIC_NOTIFY="off", MEDIC_CACHE_DIR="",
                                 MEDIC_HOSTS_FILE=self.hosts_file, **extra)

    def drain(self, *args, timeout=300):
        return support.run_medic("medic-drain", list(args), env=self.env(), timeout=timeout)

    def per_host(self):
        return self.hosts.running_per_host(self.project)

    def passing(self):
        return shs.passing(self.server.addr, self.service)

    def node_maintenance(self, i):
        checks = support.http_json(self.server.addr + "/v1/health/node/" + self.node(i)) or []
        return any(c["CheckID"] == "_node_maintenance" for c in checks)

    def kv(self, kind, name):
        import base64
        try:
            items = support.http_json(self.server.addr + "/v1/kv/medic/default/%s/%s" % (kind, name))
        except OSError:
            return None
        return json.loads(base64.b64decode(items[0]["Value"])) if items else None

    def down(self):
        try:
            if self.hosts is not None:
                for i in self.hosts.indexes():
                    self.hosts.compose(i, self.project, self.file, "down", "-t", "0", check=False)
                self.hosts.down()
        finally:
            if self.server is not None:
                self.server.stop()


def measure_drain(undo=True):
    unique = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="medic-roll-drain-")
    w = DrainWorld(tmp, unique)
    proxy = traffic = None
    try:
        w.up()
        w.hosts.compose(1, w.project, w.file, "up", "-d", "--scale", "web=3", "web")
        support.wait_for(lambda: w.passing() == 3, timeout=90, what="3 passing on host 1")
        proxy = srt.Proxy(os.path.join(tmp, "lb"), w.server.addr, w.service, w.audit).start()
        traffic = srt.Client(proxy.port, w.service)
        traffic.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        r = w.drain(w.node(1), "--lb-output", proxy.conf)
        took = time.monotonic() - t0
        out = {"exit": r.returncode, "stdout": r.stdout + r.stderr, "drain_s": took, "per_host": w.per_host(),
               "passing": w.passing(), "maintenance": w.node_maintenance(1), "record": w.kv("drain", w.node(1))}
        ends = [x for x in _records(w.audit) if x.get("kind") == "drain" and x.get("what") == "end"]
        out["empty_s"] = ends[-1].get("seconds") if ends else None
        if undo:
            r2 = w.drain("--undo", w.node(1), "--rebalance", "--lb-output", proxy.conf)
            out.update(undo_exit=r2.returncode, undo_stdout=r2.stdout + r2.stderr, undo_per_host=w.per_host(),
                       undo_maintenance=w.node_maintenance(1), undo_record=w.kv("drain", w.node(1)))
            support.wait_for(lambda: w.passing() == 3, timeout=60, what="3 passing after the undo")
            out["undo_passing"] = w.passing()
        time.sleep(1.0)
        traffic.stop()
        out.update(requests=traffic.ok + traffic.failed, failed=traffic.failed, failures=traffic.failures[:10])
        return out
    finally:
        if traffic is not None and traffic.is_alive():
            traffic.stop()
        if proxy is not None:
            proxy.stop()
        w.down()
        shutil.rmtree(tmp, ignore_errors=True)


def _records(path):
    from consul_medic.handlers.core import audit
    try:
        return audit.read(path)
    except OSError:
        return []


def bench_rows(Row):
    m = measure_drain(undo=False)
    return [Row("drain_failed_requests", m["failed"], "", "0",
                "medic-drain of a host with 3 instances (2 other hosts), %d requests through nginx "
                "(medic-lb --watch), exit %d" % (m["requests"], m["exit"])),
            Row("drain_time_to_empty_s", round(m["empty_s"] or m["drain_s"], 2), "s", "<= 10 + stop timeouts",
                "replacements passing on the other hosts, node maintenance, LB drop, graceful stops (the demo "
                "ignores SIGTERM: 10 s stop timeout); n=1")]
