"""The whole self-heal loop on throwaway parts, for the drills and the bench.

A `Stack` is: a Consul agent (server with a data dir, so `consul reload` keeps
API-registered services, as on a real node) loading the consul.d that
`medic-config` renders from a spec; the real `medic-register` daemon following the
engine (filtered to this stack's containers); a compose project of the demo
image whose labels name a unique Consul service. The agent runs medic's count
check, reconcile check and watches exactly as in production.
"""
import json
import os
import signal
import subprocess
import time

import support
import support_heal
import support_register
from consul_medic.handlers.core import audit

COMPOSE_TEMPLATE = """services:
  web:
    image: {image}
    ports:
      - "127.0.0.1::80"
    labels:
      SERVICE_NAME: {service}
      SERVICE_CHECK_HTTP: /cgi-bin/health
      SERVICE_CHECK_INTERVAL: {check_interval}
      SERVICE_CHECK_TIMEOUT: 1s
      {label}: "{token}"
"""


def write_compose(path, service, token, image=support.DEMO_IMAGE, check_interval="1s"):
    with open(path, "w") as f:
        f.write(COMPOSE_TEMPLATE.format(image=image, service=service, label=support_register.LABEL, token=token,
                                        check_interval=check_interval))
    return path


class Stack:
    def __init__(self, workdir, unique, instances=3, heal=None, reconcile="30s", agent=None, consul_factory=None,
                 agent_kw=None, check_interval="1s", name="s", registrar_extra=()):
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.token = "%s%s" % (name, unique)
        self.service = "www-%s.e2e" % self.token
        self.project = "medice2e%s" % self.token
        self.compose_file = write_compose(os.path.join(self.dir, "compose.yml"), self.service, self.token,
                                          check_interval=check_interval)
        self.specs = os.path.join(self.dir, "specs")
        h = {"grace": "15s", "cooldown": "2s", "backoff_base": "2s", "backoff_max": "8s", "max_attempts": 3}
        h.update(heal or {})
        self.heal_policy, self.instances = h, instances
        self.write_spec()
        self.audit = os.path.join(self.dir, "audit.jsonl")
        self.consul_d = os.path.join(self.dir, "consul.d")
        kw = {"dev": False, "config": {"server": True, "bootstrap_expect": 1}}
        kw.update(agent_kw or {})
        self.agent = agent or consul_factory(start=False, config_dirs=[self.consul_d], **kw)
        self.reconcile = reconcile
        self.registrar = None
        self.registrar_extra = tuple(registrar_extra)

    # -- bring up ----------------------------------------------------------------
    def write_spec(self, **heal):
        support_heal.write_spec(self.specs, self.service, self.project, instances=self.instances,
                                heal=dict(self.heal_policy, **heal), file=self.compose_file)

    def render(self):
        r = support.run_medic("medic-config", ["--specs", self.specs, "--out", self.consul_d, "--audit-log",
                                               self.audit, "--consul-addr", self.agent.addr,
                                               "--reconcile-interval", self.reconcile])
        assert r.returncode == 0, r.stdout + r.stderr
        return self

    def start(self, replicas=None, wait=True):
        """Agent, registrar, and `replicas` containers brought up by the test. Healing is off while
        the test composes them: the agent's watches run medic-heal as it starts (and a run that
        finds no leader yet waits for one), which would scale 0 to the declared count at the same
        moment (two `compose up`s of one project: a container name conflict)."""
        if replicas:
            self.write_spec(enabled=False)
        self.render()
        if self.agent.proc is None:
            self.agent.start()
        self.registrar = support_register.Daemon(self.agent.addr, self.token, registrar_id="reg-" + self.token,
                                                 resync=5, audit_log=os.path.join(self.dir, "register.jsonl"),
                                                 extra=self.registrar_extra)
        self.registrar.start()
        if replicas:
            self.compose("up", "-d", "--scale", "web=%d" % replicas, "web")
            self.write_spec()  # healing on: the containers exist (pending until they pass)
        if wait and replicas:
            self.wait_passing(replicas, 60)
        return self

    def stop(self):
        """Hands off first (pause medic for the service, stop its deferred run, wait for a heal in flight),
        then down; nothing of the stack's containers may run afterwards."""
        support_heal.quiesce(self.agent, self.service)
        if self.registrar is not None:
            self.registrar.stop()
        self.compose("down", "-t", "0", "--remove-orphans", check=False)
        left = self.container_ids(running_only=False)
        assert not left, "%s: containers left after down (a handler brought them back?): %s" % (self.service, left)

    # -- observe -------------------------------------------------------------------
    def compose(self, *args, check=True):
        r = subprocess.run(["docker", "compose", "-p", self.project, "-f", self.compose_file, *args],
                           capture_output=True, text=True, timeout=120)
        if check:
            assert r.returncode == 0, r.stderr
        return r

    def container_ids(self, running_only=True):
        args = ["ps", "-q"] + (["--status", "running"] if running_only else ["-a"]) + ["web"]
        return sorted(self.compose(*args, check=False).stdout.split())

    def passing(self):
        try:
            entries = self.agent.api("/v1/health/service/%s" % self.service)
        except OSError:
            return -1
        return sum(1 for e in entries if all(c["Status"] == "passing" for c in e["Checks"]))

    def wait_passing(self, n, timeout=60):
        return support.wait_for(lambda: self.passing() == n, timeout, what="%d passing of %s" % (n, self.service))

    def settled(self, n, quiet=3.0, timeout=90, local=None):
        """Wait until n pass, `local` (default n) run here, and for `quiet` s medic-heal decided only noop/skip."""
        local = n if local is None else local
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.passing() == n and len(self.container_ids()) == local:
                count = len(self.busy_records())
                time.sleep(quiet)
                if len(self.busy_records()) == count and self.passing() == n:
                    return
            time.sleep(0.2)
        raise AssertionError("%s did not settle at %d: passing %d, running %d"
                             % (self.service, n, self.passing(), len(self.container_ids())))

    def records(self, decision=None):
        return [r for r in audit.read(self.audit) if r.get("kind", "heal") == "heal"
                and r.get("service") == self.service and (decision is None or r.get("decision") == decision)]

    def busy_records(self):
        """Runs that did more than find the count met (or the lock taken)."""
        return [r for r in self.records() if r.get("decision") not in ("noop", "skip")]

    def scale_actions(self):
        return [r for r in self.records("heal") if not r.get("dry_run")]

    def kill(self, n=1):
        victims = self.container_ids()[:n]
        subprocess.run(["docker", "kill", *victims], capture_output=True, check=True, timeout=60)
        return victims

    def reload(self):
        self.agent.reload()

    def restart_agent(self):
        """Stop the agent (SIGINT, graceful) and start it again on the same data dir and config."""
        self.agent.kill(signal.SIGINT)
        self.agent.start()

    def lock_holder(self):
        try:
            items = self.agent.api("/v1/kv/medic/default/lock/%s" % self.service)
        except OSError:
            return None
        return items[0].get("Session") if items else None

    def heal(self, *args):
        env = support.medic_env(MEDIC_AUDIT_LOG=self.audit)
        return support.run_medic("medic-heal", ["--specs", self.specs, "--consul-addr", self.agent.addr, *args],
                                 env=env)


def children_of(pid):
    """PIDs whose parent is pid (from /proc; no psutil)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(name))
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def dump(obj):
    return json.dumps(obj, indent=1, default=str)
