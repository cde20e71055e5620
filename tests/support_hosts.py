"""Several Docker hosts on this machine (testbed/hosts.sh), for the multi-host drills and chaos.

A `Hosts` is N extra Docker engines, each with its own Consul client agent on
127.0.0.(10+k) joined to a given cluster, and its own medic-register pointed at that
engine and that agent (k = offset + index: test_hosts uses 20, hosts2 30, `make chaos` 0, so they
never share a bridge, an address or a cgroup). With `specs`, each host's agent loads a
consul.d that medic-config rendered for it: its watches run medic-heal against its own
engine (DOCKER_HOST), the topology of docs/topology.md.

The fixture `hosts2` (module scope) brings up 2 hosts around a throwaway Consul server
and tears everything down even when a test fails; a failure to start skips locally and
fails under CI=true (support.require).
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import support

SCRIPT = os.path.join(support.ROOT, "testbed", "hosts.sh")
COMPOSE_TEMPLATE = os.path.join(support.ROOT, "testbed", "hosts", "compose.yml")


def hosts_available():
    """(ok, what is missing): root, dockerd, consul, cgroup v2 with cgroup.kill, the first engine, the image."""
    if os.geteuid() != 0:
        return False, "root (a second dockerd)"
    for exe in ("dockerd", "consul", "docker"):
        if shutil.which(exe) is None:
            return False, "the %s binary (run `make testbed`)" % exe
    if not any(os.path.exists(p) for p in ("/sys/fs/cgroup/cgroup.kill", "/sys/fs/cgroup/unified/cgroup.procs",
                                           "/sys/fs/cgroup/cgroup.controllers")):
        return False, "a cgroup v2 hierarchy (cgroup.kill)"
    r = subprocess.run(["docker", "image", "inspect", support.DEMO_IMAGE], capture_output=True)
    if r.returncode != 0:
        return False, "the demo image %s on the first engine (run `make testbed`)" % support.DEMO_IMAGE
    return True, ""


def write_compose(path, service, environment=None):
    """The testbed's multi-host compose file with this test's Consul service name (and container env,
    e.g. DEMO_START_DELAY: a container that starts serving only after that many seconds)."""
    with open(COMPOSE_TEMPLATE) as f:
        text = f.read()
    text = text.replace("${MEDIC_HOSTS_SERVICE:-www.example.com}", service)
    if environment:
        text += "    environment:\n" + "".join('      %s: "%s"\n' % kv for kv in sorted(environment.items()))
    with open(path, "w") as f:
        f.write(text)
    return path


class Hosts:
    def __init__(self, n, join, specs=None, offset=20, state_dir=None, reconcile="30s", resync=5, env=None):
        self.n, self.join, self.specs, self.offset = n, join, specs, offset
        self.dir = state_dir or tempfile.mkdtemp(prefix="medic-hosts-")
        self.env = support.medic_env(MEDIC_HOSTS_DIR=self.dir, MEDIC_HOSTS_OFFSET=offset, MEDIC_HOSTS_JOIN=join,
                                     MEDIC_HOSTS_SPECS=specs or "", MEDIC_HOSTS_RECONCILE=reconcile,
                                     MEDIC_HOSTS_RESYNC=resync, MEDIC_NOTIFY="off", **(env or {}))
        self._clients = {}

    # -- the script --------------------------------------------------------------
    def sh(self, *args, check=True, timeout=180):
        r = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("hosts.sh %s exited %d: %s" % (" ".join(args), r.returncode, r.stderr[-2000:]))
        return r

    def up(self):
        self.sh("up", str(self.n))
        return self

    def down(self):
        """Tear down every host; raises when anything is left behind."""
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        r = self.sh("down", check=False)
        left = self.leftovers()
        shutil.rmtree(self.dir, ignore_errors=True)
        if r.returncode != 0 or left:
            raise AssertionError("hosts.sh down left things behind: %s %s" % (left, r.stderr[-1000:]))

    def leftovers(self):
        """What of ours still exists: bridges, cgroups, processes in them, mounts."""
        out = []
        for h in range(1, self.n + 1):
            k = self.offset + h
            if os.path.exists("/sys/class/net/medicbr%d" % k):
                out.append("bridge medicbr%d" % k)
            for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                if os.path.isdir(os.path.join(root, "medic-host%d" % k)):
                    out.append("cgroup %s/medic-host%d" % (root, k))
        with open("/proc/self/mountinfo") as f:
            out += ["mount " + line.split()[4] for line in f if self.dir + "/" in line]
        return out

    def lose(self, i):
        self.sh("lose", str(i))
        c = self._clients.pop(i, None)
        if c:
            c.close()

    def restore(self, i):
        self.sh("restore", str(i))

    # -- reading -----------------------------------------------------------------
    def state(self):
        with open(os.path.join(self.dir, "hosts.json")) as f:
            return json.load(f)

    def host(self, i):
        return next(h for h in self.state()["hosts"] if h["index"] == i)

    def indexes(self):
        return [h["index"] for h in self.state()["hosts"]]

    def docker_env(self, i, **extra):
        return dict(os.environ, DOCKER_HOST=self.host(i)["docker_host"], **extra)

    def docker(self, i):
        import docker
        if i not in self._clients:
            self._clients[i] = docker.DockerClient(base_url=self.host(i)["docker_host"], timeout=30)
        return self._clients[i]

    def compose(self, i, project, file, *args, check=True):
        r = subprocess.run(["docker", "compose", "-p", project, "-f", file, *args], capture_output=True, text=True,
                           env=self.docker_env(i), timeout=120)
        if check:
            assert r.returncode == 0, r.stderr
        return r

    def running(self, i, project):
        """IDs of the project's running web containers on host i ([] when its engine is down)."""
        if self.host(i)["lost"]:
            return []
        flt = {"label": ["com.docker.compose.project=%s" % project, "com.docker.compose.service=web"],
               "status": "running"}
        try:
            return sorted(c.id for c in self.docker(i).containers.list(filters=flt))
        except Exception:
            return []

    def running_per_host(self, project):
        return {i: len(self.running(i, project)) for i in self.indexes()}

    def heal_records(self, service, i=None):
        from consul_medic.handlers.core import audit
        out = []
        for h in self.state()["hosts"]:
            if i is not None and h["index"] != i:
                continue
            for r in audit.read(h["audit_log"]):
                if r.get("kind", "heal") == "heal" and r.get("service") == service:
                    out.append(dict(r, _host=h["index"]))
        return sorted(out, key=lambda r: r.get("time", ""))

    def scale_actions(self, service, i=None):
        return [r for r in self.heal_records(service, i) if r.get("decision") == "heal" and not r.get("dry_run")]

    def agent_logs(self):
        return {h["index"]: h["agent_log"] for h in self.state()["hosts"]}


def passing(agent_addr, service):
    try:
        entries = support.http_json(agent_addr + "/v1/health/service/%s" % service, timeout=5) or []
    except OSError:
        return -1
    return sum(1 for e in entries if all(c["Status"] == "passing" for c in e["Checks"]))


def start_or_require(hosts):
    """hosts.up(), or skip (locally) / fail (CI=true) with what went wrong; torn down on failure."""
    ok, what = hosts_available()
    support.require(ok, what)
    try:
        return hosts.up()
    except Exception as e:
        try:
            hosts.down()
        except Exception:
            pass
        support.require(False, "a second Docker engine (testbed/hosts.sh up: %s)" % str(e)[-500:])


def wait_settled(hosts, agent_addr, service, project, n, quiet=4.0, timeout=120):
    """n instances passing, n containers running over all hosts, and for `quiet` s no new heal decision
    other than noop/skip/hold-on-pending."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        per = hosts.running_per_host(project)
        last = (passing(agent_addr, service), per)
        if last[0] == n and sum(per.values()) == n:
            before = len(hosts.scale_actions(service))
            time.sleep(quiet)
            per2 = hosts.running_per_host(project)
            if (len(hosts.scale_actions(service)) == before and passing(agent_addr, service) == n
                    and per2 == per):
                return per
        time.sleep(0.3)
    raise AssertionError("%s did not settle at %d: (passing, running per host) = %r" % (service, n, last))


def wait_quiet(hosts, agent_addr, service, project, quiet=5.0, timeout=120):
    """Whatever the count: every running container passes, and for `quiet` s no scale action and no
    change. For drills that must fail with the count they ended at, not with a timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        per = hosts.running_per_host(project)
        last = (passing(agent_addr, service), per)
        if last[0] == sum(per.values()):
            before = len(hosts.scale_actions(service))
            time.sleep(quiet)
            if (len(hosts.scale_actions(service)) == before and hosts.running_per_host(project) == per
                    and passing(agent_addr, service) == last[0]):
                return per
        time.sleep(0.3)
    raise AssertionError("%s did not come to rest: (passing, running per host) = %r" % (service, last))


@pytest.fixture(scope="module")
def hosts2(consul_bin, request):
    """2 hosts joined to a throwaway Consul server, no medic watches (tests add specs via Hosts)."""
    server = support.ConsulAgent(node="medic-hosts-server", dev=False,
                                 config={"server": True, "bootstrap_expect": 1}).start()
    hosts = Hosts(2, server.serf_addr, offset=30)
    try:
        start_or_require(hosts)
        yield server, hosts
    finally:
        try:
            hosts.down()
        finally:
            server.stop()
