"""The multi-host demo stack for `make chaos` (tests/chaos.py): what it is, how to look at it.

  testbed/consul.sh up cluster   3 servers on 127.0.0.2-4, the monitoring agent on 127.0.0.1:8500
                                 (no medic consul.d: in this topology the hosts heal, docs/topology.md)
  testbed/hosts.sh up 3          3 Docker engines, each with its Consul agent (127.0.0.11-13) loading
                                 the consul.d medic-config rendered for it, and its medic-register
  the service                    www.example.com, 6 instances, 2 per host at the start, the demo
                                 spec's heal policy, compose file testbed/hosts/compose.yml

Everything lives under .testbed/chaos (MEDIC_TESTBED_DIR); `down()` removes it all and
`leftovers()` says what, if anything, is still there.
"""
import json
import os
import shutil
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
MONITOR = "http://127.0.0.1:8500"
SERVICE, PROJECT = "www.example.com", "medicchaos"
HEAL = {"grace": "15s", "cooldown": "5s", "backoff_base": "10s", "backoff_max": "5m", "max_attempts": 5,
        "window": "10m", "command_timeout": "60s"}


def http_json(url, method="GET", timeout=3):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw.strip() else None


def parse_time(iso):
    import datetime
    return datetime.datetime.fromisoformat(iso).timestamp()


class Stack:
    def __init__(self, state_dir=None, hosts=3, per_host=2, heal=None):
        self.dir = state_dir or os.path.join(ROOT, ".testbed", "chaos")
        self.n, self.per_host = hosts, per_host
        self.declared = hosts * per_host
        self.heal = dict(HEAL, **(heal or {}))
        self.specs = os.path.join(self.dir, "specs")
        self.compose_file = os.path.join(ROOT, "testbed", "hosts", "compose.yml")
        self.monitor_d = os.path.join(self.dir, "monitor.d")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "MEDIC_", "DOCKER_HOST"))}
        env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), MEDIC_TESTBED_DIR=self.dir,
                   MEDIC_CONSUL_D=self.monitor_d, MEDIC_HOSTS_SPECS=self.specs, MEDIC_HOSTS_JOIN="127.0.0.2",
                   MEDIC_HOSTS_OFFSET="0", MEDIC_HOSTS_LOG_LEVEL="DEBUG", MEDIC_HOSTS_RESTART_CONTAINERS="0",
                   MEDIC_HOSTS_SERVICE=SERVICE, MEDIC_NOTIFY="off")
        self.env = env
        self._clients = {}

    # -- up / down ---------------------------------------------------------------
    def sh(self, script, *args, check=True, timeout=180):
        r = subprocess.run(["bash", os.path.join(ROOT, "testbed", script), *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("%s %s exited %d: %s" % (script, " ".join(args), r.returncode, r.stderr[-1500:]))
        return r

    def write_spec(self, enabled=True):
        doc = {"service": SERVICE, "instances": self.declared,
               "scale": {"driver": "compose", "project": PROJECT, "file": self.compose_file, "service": "web"},
               "check": {"interval": "2s", "timeout": "2s"}, "heal": dict(self.heal, enabled=enabled)}
        path = os.path.join(self.specs, SERVICE + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(path + ".tmp", path)

    def up(self, wait_steady):
        """The stack with 2 containers per host. Healing is off (spec heal.enabled false) while the
        hosts' containers are started by hand, so no healer adds one between one host's compose and
        the next; it is switched on once the count passes (wait_steady(timeout) -> bool)."""
        os.makedirs(self.monitor_d, exist_ok=True)
        os.makedirs(self.specs, exist_ok=True)
        self.write_spec(enabled=False)
        self.sh("consul.sh", "up", "cluster")
        self.sh("hosts.sh", "up", str(self.n))
        for i in self.indexes():
            self.compose(i, "up", "-d", "--no-recreate", "--scale", "web=%d" % self.per_host, "web")
        if not wait_steady(120):
            raise RuntimeError("the stack did not reach %d passing" % self.declared)
        self.write_spec(enabled=True)
        return self

    def down(self):
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        errors = []
        for script in ("hosts.sh", "consul.sh"):
            try:
                r = self.sh(script, "down", check=False)
                if r.returncode != 0:
                    errors.append("%s down: %s" % (script, r.stderr[-500:]))
            except Exception as e:
                errors.append("%s down: %s" % (script, e))
        if not errors:
            for d in (self.specs, self.monitor_d):
                shutil.rmtree(d, ignore_errors=True)
            try:
                os.rmdir(self.dir)
            except OSError:
                pass
        return errors

    def leftovers(self):
        """What of the stack still exists: agents, engines, registrars, bridges, cgroups, mounts, state."""
        out = []
        for k in range(1, self.n + 1):
            if os.path.exists("/sys/class/net/medicbr%d" % k):
                out.append("bridge medicbr%d" % k)
            for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                if os.path.isdir(os.path.join(root, "medic-host%d" % k)):
                    out.append("cgroup %s/medic-host%d" % (root, k))
        with open("/proc/self/mountinfo") as f:
            out += ["mount " + line.split()[4] for line in f if self.dir + "/" in line]
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/cmdline" % name, "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if self.dir in cmd and int(name) != os.getpid():
                    out.append("process %s: %s" % (name, cmd[:120]))
        if os.path.exists(os.path.join(self.dir, "hosts")) or os.path.exists(os.path.join(self.dir, "consul")):
            out.append("state under " + self.dir)
        return out

    # -- hosts -------------------------------------------------------------------
    def state(self):
        with open(os.path.join(self.dir, "hosts", "hosts.json")) as f:
            return json.load(f)

    def hosts(self):
        return self.state()["hosts"]

    def indexes(self):
        return [h["index"] for h in self.hosts()]

    def host(self, i):
        return next(h for h in self.hosts() if h["index"] == i)

    def alive(self):
        return [h["index"] for h in self.hosts() if not h["lost"]]

    def docker_env(self, i):
        return dict(self.env, DOCKER_HOST=self.host(i)["docker_host"])

    def heal_env(self, i):
        h = self.host(i)
        return dict(self.env, DOCKER_HOST=h["docker_host"], CONSUL_HTTP_ADDR=h["consul_addr"], MEDIC_SPECS=self.specs,
                    MEDIC_AUDIT_LOG=h["audit_log"])

    def compose(self, i, *args, check=True):
        r = subprocess.run(["docker", "compose", "-p", PROJECT, "-f", self.compose_file, *args], capture_output=True,
                           text=True, env=self.docker_env(i), timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError("compose on host %d: %s" % (i, r.stderr[-500:]))
        return r

    def client(self, i):
        import docker
        if i not in self._clients:
            self._clients[i] = docker.APIClient(base_url=self.host(i)["docker_host"], timeout=5)
        return self._clients[i]

    def forget(self, i):
        c = self._clients.pop(i, None)
        if c:
            c.close()

    def running(self, i):
        """IDs of the running web containers on host i ([] when its engine does not answer)."""
        flt = {"label": ["com.docker.compose.project=%s" % PROJECT, "com.docker.compose.service=web"],
               "status": "running"}
        try:
            return [c["Id"] for c in self.client(i).containers(filters=flt)]
        except Exception:
            self.forget(i)
            return []

    def running_per_host(self, hosts=None):
        return {i: self.running(i) for i in (hosts or self.indexes())}

    def passing(self):
        try:
            return len(http_json(MONITOR + "/v1/health/service/%s?passing&stale" % SERVICE) or [])
        except (OSError, ValueError):
            return -1

    # -- logs --------------------------------------------------------------------
    def audit_paths(self):
        out = []
        for h in self.hosts():
            out += [h["audit_log"], h["register_log"]]
        return out

    def heal_records(self, since=0.0):
        out = []
        for h in self.hosts():
            for rec in read_jsonl(h["audit_log"])[0]:
                if rec.get("kind", "heal") == "heal" and rec.get("service") == SERVICE:
                    t = parse_time(rec["time"])
                    if t >= since:
                        out.append(dict(rec, _host=h["index"], _t=t))
        return sorted(out, key=lambda r: r["_t"])

    def scale_actions(self, since=0.0, until=None):
        return [r for r in self.heal_records(since) if r.get("decision") == "heal" and not r.get("dry_run")
                and (until is None or r["_t"] < until)]

    def log_files(self):
        files = [os.path.join(self.dir, "consul", n, "log") for n in ("monitor", "server2", "server3", "server4")]
        for h in self.hosts():
            files += [h["agent_log"], os.path.join(h["dir"], "register.log"), os.path.join(h["dir"], "dockerd.log")]
        return [f for f in files if os.path.exists(f)]

    def save_logs(self, dest):
        """Copy the logs and audit logs aside before down() removes them."""
        os.makedirs(dest, exist_ok=True)
        for f in self.log_files() + self.audit_paths():
            if os.path.exists(f):
                rel = os.path.relpath(f, self.dir).replace(os.sep, "_")
                shutil.copy(f, os.path.join(dest, rel))


def read_jsonl(path):
    """(records, bad lines) of a JSON-lines file; a missing file is empty."""
    recs, bad = [], []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    bad.append("%s:%d: %s" % (path, n, line[:200]))
    except FileNotFoundError:
        pass
    return recs, bad


def tracebacks(path):
    """Lines of a log that start or carry a Python traceback, or a medic executable's crash line
    (`MEDIC UNKNOWN - internal error: ...`: runtime's boundary caught an unexpected exception)."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for n, line in enumerate(f, 1):
                if "Traceback (most recent call last)" in line or " - internal error: " in line:
                    out.append("%s:%d: %s" % (path, n, line.strip()[:300]))
    except FileNotFoundError:
        pass
    return out


def wait(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return None
