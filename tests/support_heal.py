"""Test helpers for medic-heal: compose projects of the demo image, registering their
containers in Consul the way medic-register does, specs, audit reading.

`register_containers` stands in for medic-register (issue 5) until it lands: each
running container of a compose service becomes one Consul instance with ID
`<host>:<container-name>:<port>`, Meta medic_container_id / medic_compose_project /
medic_compose_service / medic_registrar, and an HTTP check on /cgi-bin/health (1 s).
"""
import json
import os
import socket
import subprocess

import support

COMPOSE_FILE = os.path.join(support.ROOT, "testbed", "demo", "compose.yml")


def write_spec(dirpath, service, project, instances=3, heal=None, file=COMPOSE_FILE, name=None, **extra):
    """A spec file for a compose service `web` of `project`; returns its path."""
    h = {"grace": "20s", "cooldown": "1s", "backoff_base": "1s", "backoff_max": "4s",
         "max_attempts": 3, "window": "10m", "command_timeout": "60s"}
    h.update(heal or {})
    doc = {"service": service, "instances": instances,
           "scale": {"driver": "compose", "project": project, "file": file, "service": "web"},
           "check": {"interval": "1s", "timeout": "1s"}, "heal": h}
    doc.update(extra)
    os.makedirs(dirpath, exist_ok=True)
    path = os.path.join(dirpath, (name or service) + ".json")
    with open(path + ".tmp", "w") as f:  # a heal running now reads the old spec or the new, never half
        json.dump(doc, f)
    os.replace(path + ".tmp", path)
    return path


def compose_argv(project, file=COMPOSE_FILE):
    return ["docker", "compose", "-p", project, "-f", file]


def compose_env(**extra):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def compose_up(project, n, env=None, file=COMPOSE_FILE):
    subprocess.run(compose_argv(project, file) + ["up", "-d", "--scale", "web=%d" % n, "web"], check=True,
                   capture_output=True, env=env or compose_env(), timeout=120)


def compose_down(project, file=COMPOSE_FILE):
    subprocess.run(compose_argv(project, file) + ["down", "-t", "0", "--remove-orphans"], capture_output=True,
                   timeout=120)


def containers(docker_client, project, all_=True):
    """The project's web containers (docker SDK objects), sorted by name."""
    flt = {"label": ["com.docker.compose.project=%s" % project, "com.docker.compose.service=web"]}
    return sorted(docker_client.containers.list(all=all_, filters=flt), key=lambda c: c.name)


def running(docker_client, project):
    return [c for c in containers(docker_client, project) if c.status == "running"]


def published_port(container, private="80/tcp"):
    container.reload()
    ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for b in ports.get(private) or ():
        return b["HostIp"] or "127.0.0.1", int(b["HostPort"])
    return None


def register_container(agent, service, container, project, interval="1s", host=None):
    """Register one container like medic-register does; returns the service ID (None if no port)."""
    hp = published_port(container)
    if hp is None:
        return None
    ip, port = hp
    host = host or socket.gethostname()
    sid = "%s:%s:%d" % (host, container.name, port)
    agent.register(sid, service, port=port, address=ip, tags=("demo",),
                   meta={"medic_container_id": container.id, "medic_compose_project": project,
                         "medic_compose_service": "web", "medic_registrar": host},
                   check={"HTTP": "http://%s:%d/cgi-bin/health" % (ip, port), "Interval": interval,
                          "Timeout": "1s"})
    return sid


def register_containers(agent, service, docker_client, project):
    """Register every running container of the project; returns the service IDs."""
    return [sid for sid in (register_container(agent, service, c, project) for c in running(docker_client, project))
            if sid]


def register_remote(agent, service, node, status="critical", port=18080, address="10.254.0.9", lost=False,
                    project="elsewhere"):
    """An instance on another node (catalog registration); `lost`: that node's serfHealth is critical
    too (the host is gone), else only the instance's own check has `status`. It counts for the spec
    when `project` is the spec's compose project (the medic-register of that host wrote it).
    A live node gets no serfHealth check (medic reads a node as live unless one fails): the leader
    reaps a catalog node with a serfHealth check that is no serf member at its next reconcile
    (every 60 s), which took a live remote away in the middle of a test."""
    sid = "%s:web:%d" % (node, port)
    checks = [{"CheckID": "service:" + sid, "Name": "remote", "ServiceID": sid, "Status": status}]
    if lost:
        checks.append({"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "critical"})
    agent.api("/v1/catalog/register", "PUT", {
        "Node": node, "Address": address,
        "Service": {"ID": sid, "Service": service, "Port": port, "Address": address,
                    "Meta": {"medic_container_id": "f" * 64, "medic_compose_project": project,
                             "medic_compose_service": "web"}},
        "Checks": checks})
    return sid


def passing(agent, service):
    entries = agent.api("/v1/health/service/%s" % service) or []
    return sum(1 for e in entries if all(c["Status"] == "passing" for c in e["Checks"]))


def health_payload(agent, service):
    """The JSON a `service` watch hands its handler (identical shape to /v1/health/service)."""
    return json.dumps(agent.api("/v1/health/service/%s" % service))


def checks_payload(agent, service):
    """The JSON a `checks` watch with service= hands its handler (/v1/health/checks/<service>)."""
    return json.dumps(agent.api("/v1/health/checks/%s" % service))


def heal_records(path, service=None, decision=None):
    from consul_medic.handlers.core import audit
    return [r for r in audit.read(path) if r.get("kind") == "heal"
            and (service is None or r.get("service") == service)
            and (decision is None or r.get("decision") == decision)]


def heal_env(agent, specs, audit_log, **extra):
    """Environment of a test's medic-heal. Deferred runs (detached children that outlive the test)
    are off unless a test turns them on (MEDIC_DEFER="on") and reaps them (`kill_deferred`)."""
    extra.setdefault("MEDIC_DEFER", "off")
    return support.medic_env(CONSUL_HTTP_ADDR=agent.addr, MEDIC_SPECS=specs, MEDIC_AUDIT_LOG=audit_log,
                             MEDIC_NOTIFY="off", MEDIC_CACHE_DIR="", **extra)


def pause(agent, service, reason="test teardown", env=None):
    """What `medic-heal --pause SERVICE` writes (handlers/service/pause.py), through the agent's HTTP API."""
    import time
    from consul_medic.handlers.service import pause as pause_mod
    body = {"until": None, "reason": reason, "by": "tests", "at": time.time()}
    return agent.api("/v1/kv/" + pause_mod.pause_key(env, service), "PUT", body)


def quiesce(agent, service, env=None, timeout=60):
    """Pause medic for `service`, stop its deferred run, and wait until no handler holds its lock.
    A dead agent has no handlers left: nothing to wait for."""
    import time
    from consul_medic.handlers.consul import lock
    try:
        pause(agent, service, env=env)
    except Exception:
        return
    kill_deferred(agent, service, env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            items = agent.api("/v1/kv/" + lock.lock_key(env, service)) or []
        except Exception as e:
            if "404" in str(e):
                return
            return
        if not items or not items[0].get("Session"):
            return
        time.sleep(0.2)


def kill_deferred(agent, service, env=None):
    """Stop the deferred medic-heal run arranged for `service` (its pid is in KV), if any."""
    import base64
    import signal
    from consul_medic.handlers.heal import recheck
    try:
        items = agent.api("/v1/kv/" + recheck.deferred_key(env, service)) or []
        pid = json.loads(base64.b64decode(items[0]["Value"])).get("pid")
    except Exception:
        return None
    try:
        with open("/proc/%d/cmdline" % int(pid), "rb") as f:
            if b"medic-heal" not in f.read():
                return None
        os.kill(int(pid), signal.SIGTERM)
    except (OSError, TypeError, ValueError):
        return None
    return pid


class World:
    """One test's service: a Consul agent, a compose project of the demo image, a spec dir, an audit log."""

    def __init__(self, agent, docker_client, tmp_path, unique, instances=3, heal=None, file=COMPOSE_FILE):
        self.agent, self.docker, self.tmp = agent, docker_client, tmp_path
        self.service = "heal-%s.example" % unique
        self.project = "heal%s" % unique
        self.file = file
        self.specs = str(tmp_path / "specs")
        self.audit = str(tmp_path / "audit.jsonl")
        self.spec_path = write_spec(self.specs, self.service, self.project, instances, heal, file=file)

    def env(self, **extra):
        return heal_env(self.agent, self.specs, self.audit, **extra)

    def up(self, n):
        compose_up(self.project, n, file=self.file)

    def down(self):
        """Hands off first (pause, wait for a heal in flight), then down; nothing of it may run after."""
        quiesce(self.agent, self.service)
        compose_down(self.project, file=self.file)
        if self.docker is not None:
            left = [c.name for c in self.containers()]
            assert not left, "still there after compose down (a handler brought them back?): %s" % left

    def containers(self, all_=True):
        return containers(self.docker, self.project, all_)

    def running(self):
        return running(self.docker, self.project)

    def kill(self, container):
        """`docker kill` one container and deregister its instance, as medic-register does on the
        engine's die event: a restart of the same container (same ID) is not registered until
        the registrar says so, even when the engine happens to publish it on the same port."""
        hp = published_port(container)
        container.kill()
        if hp:
            sid = "%s:%s:%d" % (socket.gethostname(), container.name, hp[1])
            self.agent.api("/v1/agent/service/deregister/" + sid, "PUT")

    def register(self):
        """Register running containers not yet registered (what medic-register will do)."""
        have = {e["Service"]["ID"] for e in (self.agent.api("/v1/health/service/%s" % self.service) or [])}
        out = []
        for c in self.running():
            hp = published_port(c)
            if hp and "%s:%s:%d" % (socket.gethostname(), c.name, hp[1]) not in have:
                out.append(register_container(self.agent, self.service, c, self.project))
        return out

    def passing(self):
        return passing(self.agent, self.service)

    def wait_passing(self, n, timeout=30):
        return support.wait_for(lambda: self.passing() >= n, timeout=timeout, what="%d passing" % n)

    def heal(self, *args, input=None, env=None):
        return support.run_medic("medic-heal", list(args), input=input, env=env or self.env())

    def records(self, decision=None):
        return heal_records(self.audit, self.service, decision)

    def scale_actions(self):
        return [r for r in self.records("heal") if not r.get("dry_run")]
