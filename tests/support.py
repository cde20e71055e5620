"""Test support: real Consul agents, the real Docker engine, and how to require them.

Nothing here is mocked. A component that is missing makes a test skip locally and
FAIL under CI=true, so CI can never pass by skipping the real-system tests.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
DEMO_IMAGE = os.environ.get("MEDIC_DEMO_IMAGE", "medic-demo:latest")


def in_ci():
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(ok, what):
    """Skip locally, fail in CI, when a real component is missing."""
    if ok:
        return
    if in_ci():
        pytest.fail("CI=true and %s is missing: the real-system tests must run" % what, pytrace=False)
    pytest.skip("%s is missing" % what)


_GIVEN = set()  # ports this process handed out: never twice (the kernel may offer a closed one again)


def free_port(host="127.0.0.1"):
    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free port on %s that this test run has not handed out already" % host)


def http_json(url, method="GET", body=None, token=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("X-Consul-Token", token)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw.strip() else None


def medic_env(**extra):
    """Environment for running medic-* executables as subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "MEDIC_"))}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    # the testbed's agent is 1.8.7 (no DisableRedirects): the suite's scenarios need HTTP check semantics
    # (a sick /cgi-bin/health); tests/register/test_trust_checks.py runs medic-register's default (the TCP fallback)
    env["MEDIC_HTTP_CHECKS_MAY_REDIRECT"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


class ConsulAgent:
    """A throwaway `consul agent` on loopback with free ports and a temp data dir.

    dev=True runs `-dev` (server, in-memory, leader at once). Pass join= to make a
    client agent of another agent's cluster, bind= for a 127.0.0.x address of its own.
    """

    def __init__(self, node=None, dev=True, bind="127.0.0.1", config=None, config_dirs=(), join=None,
                 env=None):
        self.bind = bind
        self.node = node or "medic-test-%d" % free_port()
        self.dir = tempfile.mkdtemp(prefix="medic-consul-")
        self.ports = {"http": free_port(bind), "serf_lan": free_port(bind), "serf_wan": free_port(bind),
                      "server": free_port(bind), "dns": -1, "grpc": -1}
        conf = {"node_name": self.node, "bind_addr": bind, "client_addr": bind, "advertise_addr": bind,
                "ports": self.ports, "enable_local_script_checks": True, "disable_update_check": True,
                "log_level": "DEBUG", "performance": {"raft_multiplier": 1}}
        if not dev:
            conf["data_dir"] = os.path.join(self.dir, "data")
        if join:
            conf["retry_join"] = [join]
        conf.update(config or {})
        self.config_dir = os.path.join(self.dir, "config")
        os.makedirs(self.config_dir)
        with open(os.path.join(self.config_dir, "00-test.json"), "w") as f:
            json.dump(conf, f)
        self.args = ["consul", "agent", "-config-dir", self.config_dir] + (["-dev"] if dev else [])
        for d in config_dirs:
            self.args += ["-config-dir", d]
        self.env = medic_env(**(env or {}))
        self.proc = None
        self.logfile = os.path.join(self.dir, "agent.log")

    @property
    def addr(self):
        return "http://%s:%d" % (self.bind, self.ports["http"])

    @property
    def serf_addr(self):
        return "%s:%d" % (self.bind, self.ports["serf_lan"])

    def start(self, wait_leader=True):
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        self.wait_ready(wait_leader)
        return self

    def wait_ready(self, wait_leader=True, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("consul exited %s: %s" % (self.proc.returncode, self.log_tail()))
            try:
                if not wait_leader:
                    http_json(self.addr + "/v1/agent/self", timeout=1)
                    return
                if http_json(self.addr + "/v1/status/leader", timeout=1):
                    # the agent's own node must be in the catalog before tests register
                    if http_json(self.addr + "/v1/catalog/node/" + self.node, timeout=1):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("consul at %s not ready: %s" % (self.addr, self.log_tail()))

    def log_tail(self, n=20):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def api(self, path, method="GET", body=None, token=None):
        return http_json(self.addr + path, method, body, token)

    def reload(self, attempts=5):
        """`consul reload`; a busy agent may answer that a reload is still in progress: try again."""
        for i in range(attempts):
            p = subprocess.run(["consul", "reload", "-http-addr=" + self.addr], capture_output=True, text=True,
                               env=self.env, timeout=30)
            if p.returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError("consul reload failed %d times: %s" % (attempts, (p.stderr or p.stdout).strip()[-300:]))

    def register(self, service_id, name, port=80, address="127.0.0.1", tags=(), meta=None, check=None):
        body = {"ID": service_id, "Name": name, "Port": port, "Address": address, "Tags": list(tags),
                "Meta": meta or {}}
        if check:
            body["Check"] = check
        self.api("/v1/agent/service/register", "PUT", body)

    def register_ttl(self, service_id, name, status="passing", **kw):
        """An instance whose health the test sets: TTL check `service:<id>`."""
        self.register(service_id, name, check={"TTL": "10m", "Status": status}, **kw)
        self.set_ttl(service_id, status)

    def set_ttl(self, service_id, status, output=""):
        verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        self.api("/v1/agent/check/%s/service:%s?note=%s" % (verb, service_id, output), "PUT")

    def deregister(self, service_id):
        self.api("/v1/agent/service/deregister/" + service_id, "PUT")

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def consul_available():
    return shutil.which("consul") is not None


def docker_client_or_none():
    try:
        import docker
        c = docker.from_env(timeout=20)
        c.ping()
        return c
    except Exception:
        return None


def compose_available():
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def wait_for(predicate, timeout=20.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))


def run_medic(cmd, args=(), input=None, env=None, timeout=120):
    """Run an installed medic-* executable; returns CompletedProcess (text)."""
    return subprocess.run([os.path.join(BIN, cmd)] + list(args), input=input, capture_output=True,
                          text=True, env=env or medic_env(), timeout=timeout)


def ensure_docker0():
    """Put the first engine's default bridge back if something deleted it while the engine runs.

    On this machine kind, docker0 has been seen deleted mid-session (while other engines of the
    multi-host testbed came and went); every `docker run` on the default network then fails with
    "could not find bridge docker0". Returns what it did, or None when docker0 was there.
    """
    if os.path.exists("/sys/class/net/docker0") or os.geteuid() != 0 or not shutil.which("ip"):
        return None
    try:
        out = subprocess.run(["docker", "network", "inspect", "bridge", "-f",
                              '{{index .Options "com.docker.network.bridge.name"}} '
                              '{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}'],
                             capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) < 2 or out[0] != "docker0":
        return None
    subnet = out[1]
    gateway = out[2] if len(out) > 2 else subnet.rsplit(".", 1)[0] + ".1"
    prefix = subnet.split("/")[1]
    for argv in (["ip", "link", "add", "docker0", "type", "bridge"],
                 ["ip", "addr", "add", "%s/%s" % (gateway, prefix), "dev", "docker0"],
                 ["ip", "link", "set", "docker0", "up"]):
        subprocess.run(argv, capture_output=True, timeout=10)
    return "docker0 was missing: re-created with %s/%s" % (gateway, prefix)


# Lines of an agent's log that say Consul refused medic or a handler failed (issue 22's zero).
REFUSED = ("Connection reset", "not reachable", "Failed to run watch handler", "too many connections",
           "connection refused", "EOF")


def agent_refusals(logfile, since=0):
    """Refused or failed handler lines of an agent's log from byte `since`; not those of an agent on
    its way out: a handler that meets its own agent's shutdown (between the agent's "Caught:
    signal=..." and its next start) fails rightly with 3, and one that got the stop signal itself
    (a signal to the agent's process group reaches its handlers too) says `signal: interrupt`."""
    try:
        with open(logfile, errors="replace") as f:
            f.seek(since)
            text = f.read()
    except OSError:
        return []
    out, stopping = [], False
    for ln in text.splitlines():
        if "Caught" in ln and "signal" in ln:
            stopping = True
        elif "Consul agent running" in ln:
            stopping = False
        elif not stopping and any(p in ln for p in REFUSED) and not re.search(
                r'error="signal: (interrupt|terminated)"', ln):
            out.append(ln[:120] + " ... " + ln[-300:] if len(ln) > 420 else ln)
    return out
