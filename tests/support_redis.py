"""A real Redis world for medic-failover: medic-redis containers on a bridge network of the test's
own, published on that network's gateway address (reachable from the host AND from the other
containers, so REPLICAOF can use the registered address), registered by a real medic-register,
a Consul agent whose `service` watch runs medic-failover, nginx-stream rendered by medic-lb --watch,
and a client writing through nginx continuously."""
import json
import os
import signal
import subprocess
import threading
import time

import support
import support_lb
import support_register

REDIS_IMAGE = os.environ.get("MEDIC_REDIS_IMAGE", "medic-redis:latest")


def redis_image_available(client):
    try:
        client.images.get(REDIS_IMAGE)
        return True
    except Exception:
        subprocess.run(["bash", os.path.join(support.ROOT, "testbed", "build-redis-image.sh")], check=False)
    try:
        client.images.get(REDIS_IMAGE)
        return True
    except Exception:
        return False


class RedisWorld:
    def __init__(self, client, consul_factory, tmp, token):
        self.client, self.tmp, self.token = client, str(tmp), token
        self.service = "redis-lb-%s" % token
        self.audit_log = os.path.join(self.tmp, "audit.jsonl")
        self.net = support_lb.network(client, token)
        self.net.reload()
        self.gw = self.net.attrs["IPAM"]["Config"][0]["Gateway"]
        self.agent = consul_factory(start=False, env={"MEDIC_AUDIT_LOG": self.audit_log, "MEDIC_NOTIFY": "off"})
        watch = {"watches": [{"type": "service", "service": self.service, "args": [
            os.path.join(support.BIN, "medic-failover"), self.service, "--consul-addr", self.agent.addr]}]}
        with open(os.path.join(self.agent.config_dir, "10-failover.json"), "w") as f:
            json.dump(watch, f)
        self.agent.start()
        self.registrar = support_register.Daemon(self.agent.addr, token, resync=30,
                                                 audit_log=self.audit_log).start()
        self.nginx = self.lb = None
        self.containers = []

    # -- Redis containers -------------------------------------------------------------
    def run_redis(self, name):
        labels = {support_lb.LABEL: self.token, support_register.LABEL: self.token,
                  "SERVICE_NAME": self.service, "SERVICE_TAGS": "slave", "SERVICE_CHECK_TCP": "true",
                  "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s"}
        c = self.client.containers.run(REDIS_IMAGE, name="medic-lb-%s-%s" % (self.token, name), detach=True,
                                       labels=labels, network=self.net.name, ports={"6379/tcp": (self.gw, None)})
        self.containers.append(c)
        return c

    def instances(self):
        """[(id, address, port, tags, passing)] from Consul's health endpoint."""
        out = []
        for e in self.agent.api("/v1/health/service/" + self.service) or []:
            s = e["Service"]
            out.append((s["ID"], s["Address"], s["Port"], tuple(s.get("Tags") or ()),
                        all(c["Status"] == "passing" for c in e["Checks"])))
        return sorted(out)

    def tagged(self, tag):
        return [i for i in self.instances() if tag in i[3]]

    def redis(self, address, port, timeout=1.0):
        import redis
        return redis.Redis(host=address, port=port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def role(self, address, port):
        try:
            r = self.redis(address, port)
            try:
                return r.info("replication")
            finally:
                r.close()
        except Exception:
            return None

    def settled(self, n, timeout=60):
        """n passing instances, one tagged master and Redis master, the rest slaves linked to it."""
        def ok():
            insts = self.instances()
            if len(insts) != n or not all(i[4] for i in insts):
                return False
            masters = [i for i in insts if "master" in i[3]]
            if len(masters) != 1:
                return False
            m = masters[0]
            if (self.role(m[1], m[2]) or {}).get("role") != "master":
                return False
            for i in insts:
                if i is m:
                    continue
                info = self.role(i[1], i[2]) or {}
                if "slave" not in i[3] or info.get("role") != "slave" or info.get("master_port") != m[2] \
                        or info.get("master_link_status") != "up":
                    return False
            return m
        return support.wait_for(ok, timeout, 0.1, "%d redis instances settled" % n)

    # -- the load balancer ------------------------------------------------------------
    def start_lb(self):
        self.lb_port = support.free_port()
        out = os.path.join(self.tmp, "nginx-redis.conf")
        self.lb_conf = out
        self.nginx = support_lb.Nginx(self.tmp, out)
        args = [os.path.join(support.BIN, "medic-lb"), "--consul-addr", self.agent.addr, "--template", "nginx-stream",
                "--out", out, "--service", self.service, "--var", "listen=127.0.0.1:%d" % self.lb_port,
                "--var", "listen_%s=127.0.0.1:%d" % (self.service.replace("-", "_"), self.lb_port),
                "--var", "pid=%s" % os.path.join(self.tmp, "nginx.pid"), "--check-cmd", self.nginx.check_cmd()]
        env = support.medic_env(MEDIC_AUDIT_LOG=self.audit_log, MEDIC_NOTIFY="off")
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        self.nginx.start()
        self.lb = subprocess.Popen(args + ["--watch", "--wait", "0.05s:0.5s", "--reload-cmd", self.nginx.reload_cmd()],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        return self.lb_port

    def down(self):
        if self.lb is not None and self.lb.poll() is None:
            os.killpg(self.lb.pid, signal.SIGTERM)
            try:
                self.lb.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.lb.pid, signal.SIGKILL)
        if self.nginx is not None:
            self.nginx.stop()
        self.registrar.stop()
        support_lb.remove_containers(self.client, self.token)


class Writer(threading.Thread):
    """Writes w:<i> = i through the load balancer as fast as it is answered; records acked writes
    and the time of every success and failure."""

    def __init__(self, port, timeout=0.5):
        super().__init__(daemon=True)
        self.port, self.timeout = port, timeout
        self.stop = threading.Event()
        self.acked, self.events = [], []  # events: (monotonic, ok, i)
        self.errors = {}

    def run(self):
        import redis
        r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=self.timeout,
                        socket_connect_timeout=self.timeout)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                r.set("w:%d" % i, i)
                self.acked.append(i)
                self.events.append((time.monotonic(), True, i))
            except Exception as e:
                kind = type(e).__name__ + (": READONLY" if "READONLY" in str(e) else "")
                self.errors[kind] = self.errors.get(kind, 0) + 1
                self.events.append((time.monotonic(), False, i))
                try:
                    r.connection_pool.disconnect()
                except Exception:
                    pass
                time.sleep(0.01)
        r.close()

    def recovered_after(self, t):
        """Seconds from t to the first acked write after the last failure that followed t."""
        after = [e for e in self.events if e[0] >= t]
        fails = [e for e in after if not e[1]]
        if not fails:
            return None
        last_fail = fails[-1][0]
        ok = [e for e in after if e[1] and e[0] > last_fail]
        return ok[0][0] - t if ok else None


def failover(world, writer, victim, remaining, timeout=60):
    """Kill the master `victim` container; returns (seconds until writes succeed again, new master)."""
    t0 = time.monotonic()
    victim.kill()
    support.wait_for(lambda: [e for e in writer.events if e[0] > t0 and not e[1]], timeout, 0.01,
                     "a failed write after the kill")
    new = world.settled(remaining, timeout)
    support.wait_for(lambda: writer.events and writer.events[-1][1] and writer.events[-1][0] > t0
                     and writer.recovered_after(t0) is not None, timeout, 0.01, "writes succeeding again")
    return writer.recovered_after(t0), new
