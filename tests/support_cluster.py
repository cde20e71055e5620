"""A real 3-server Consul cluster on loopback for the fault drills.

Servers on 127.0.0.2, 127.0.0.3, 127.0.0.4 (free ports, so the demo's fixed
ports stay free), `raft_multiplier` 1 as production guidance says, plus client
agents (each its own node, e.g. a second "host") joined to them.
"""
import time

from support import ConsulAgent, http_json


class Cluster:
    def __init__(self, servers=("127.0.0.2", "127.0.0.3", "127.0.0.4"), tag="c"):
        self.servers = []
        for i, ip in enumerate(servers):
            a = ConsulAgent(node="%s-server%d" % (tag, i + 1), dev=False, bind=ip,
                            config={"server": True, "bootstrap_expect": len(servers)})
            self.servers.append(a)
        joins = [s.serf_addr for s in self.servers]
        for a in self.servers:
            import json, os
            path = os.path.join(a.config_dir, "10-join.json")
            with open(path, "w") as f:
                json.dump({"retry_join": [j for j in joins if j != a.serf_addr],
                           "retry_interval": "1s"}, f)
        self.clients = []
        self.tag = tag

    def start(self, timeout=60):
        for a in self.servers:
            a.start(wait_leader=False)
        self.wait_leader(timeout)
        return self

    def add_client(self, node, bind="127.0.0.1", **kw):
        c = ConsulAgent(node=node, dev=False, bind=bind, join=self.servers[0].serf_addr, **kw)
        self.clients.append(c)
        c.start(wait_leader=True)
        return c

    def alive_servers(self):
        return [s for s in self.servers if s.proc and s.proc.poll() is None]

    def leader(self):
        """The server agent that is leader now, or None."""
        for s in self.alive_servers():
            try:
                addr = http_json(s.addr + "/v1/status/leader", timeout=1)
            except (OSError, ValueError):
                continue
            if addr:
                for cand in self.servers:
                    if addr == "%s:%d" % (cand.bind, cand.ports["server"]):
                        return cand
        return None

    def wait_leader(self, timeout=60, exclude=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ldr = self.leader()
            if ldr is not None and ldr is not exclude:
                return ldr
            time.sleep(0.1)
        raise AssertionError("no leader elected within %.0f s" % timeout)

    def kill_leader(self):
        """SIGKILL the leader; return (killed agent, seconds until another leader)."""
        old = self.wait_leader()
        old.kill()
        t0 = time.monotonic()
        new = self.wait_leader(exclude=old)
        return old, time.monotonic() - t0, new

    def stop(self):
        for a in self.clients + self.servers:
            a.stop()
