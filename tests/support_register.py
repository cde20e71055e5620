"""Test support for medic-register / medic-tag: the daemon as a subprocess, labelled
containers, agent views, the 100-container measurement and the engine restart.

Every container a test starts carries the label `medic.test=<token>` and every daemon
runs with `--filter medic.test=<token>`, so concurrent tests (and other engineers'
containers on the shared engine) never enter each other's registrations.
"""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

import support

LABEL = "medic.test"


class Daemon:
    """`medic-register` in daemon mode against one agent, filtered to one test's containers."""

    def __init__(self, agent_addr, token, registrar_id=None, resync=30, extra=(), audit_log=None, env=None):
        self.addr, self.token = agent_addr, token
        self.registrar_id = registrar_id or "reg-" + token
        self.audit_log = audit_log or os.path.join(tempfile.mkdtemp(prefix="medic-reg-"), "audit.jsonl")
        self.args = [os.path.join(support.BIN, "medic-register"), "-v", "--consul-addr", agent_addr,
                     "--filter", "%s=%s" % (LABEL, token), "--registrar-id", self.registrar_id,
                     "--resync", str(resync), "--audit-log", self.audit_log] + list(extra)
        if not any(a.startswith("--ip") or a == "--allow-loopback-ip" for a in extra):
            self.args.append("--allow-loopback-ip")  # this test machine's host name resolves to 127.x
        self.env = support.medic_env(**(env or {}))
        self.proc = None
        self.out = None

    def start(self):
        self.errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.errfile, env=self.env,
                                     text=True, start_new_session=True)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal the daemon and return (exit code, stdout)."""
        if self.proc is None:
            return None, ""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=10)
        self.out = out
        return self.proc.returncode, out

    def resyncs(self):
        """The full resyncs this daemon logged (at -v every one is logged; the audit log keeps
        only those that changed something, the first and an hourly summary)."""
        return [ln for ln in self.stderr().splitlines() if "resync: " in ln and " registered, " in ln]

    def records(self, action=None):
        from consul_medic.handlers.core import audit
        return [r for r in audit.read(self.audit_log) if action is None or r.get("action") == action]


def network_for(client, token):
    """The test token's own bridge network (created once): tests never depend on the engine's
    default bridge, which a neighbour on the shared machine may have broken."""
    name = "medic-reg-net-" + token
    with _NETWORK_LOCK:  # parallel run_container calls must not create it twice (names are not unique)
        if not client.networks.list(names=[name]):
            client.networks.create(name, driver="bridge", labels={LABEL: token})
    return name


_NETWORK_LOCK = threading.Lock()


def run_container(client, token, name, labels=None, ports=(80,), env=None, image=None, **kw):
    """A detached demo container labelled for `token`, ports published as 127.0.0.1::<port>,
    on the token's own network (unless network_mode/network is given)."""
    labels = dict(labels or {})
    labels[LABEL] = token
    if "network_mode" not in kw and "network" not in kw:
        kw["network"] = network_for(client, token)
    return client.containers.run(image or support.DEMO_IMAGE, name=name, detach=True, labels=labels,
                                 ports={"%s/tcp" % p: ("127.0.0.1", None) for p in ports},
                                 environment=env or {}, **kw)


def remove_containers(client, token):
    """Remove every container and network of this test token (ours only, by label)."""
    for c in client.containers.list(all=True, filters={"label": "%s=%s" % (LABEL, token)}):
        try:
            c.remove(force=True)
        except Exception:
            pass
    for n in client.networks.list(filters={"label": "%s=%s" % (LABEL, token)}):
        try:
            n.remove()
        except Exception:
            pass


def published_port(client, cid, port=80):
    data = client.api.inspect_container(cid)
    return int(data["NetworkSettings"]["Ports"]["%d/tcp" % port][0]["HostPort"])


def services(agent):
    return agent.api("/v1/agent/services") or {}


def checks_of(agent, service_id):
    return {k: v for k, v in (agent.api("/v1/agent/checks") or {}).items() if v.get("ServiceID") == service_id}


def index_of(agent, path):
    """X-Consul-Index of a GET (e.g. /v1/catalog/services, /v1/health/service/<name>)."""
    with urllib.request.urlopen(agent.addr + path, timeout=5) as r:
        return int(r.headers["X-Consul-Index"])


def owned_ids(agent, registrar_id):
    return sorted(k for k, v in services(agent).items()
                  if (v.get("Meta") or {}).get("medic_registrar") == registrar_id)


def service_id(container_name, port=80, host=None):
    import socket
    return "%s:%s:%d" % (host or socket.gethostname(), container_name, port)


def measure_register_100(n=100, timeout=300.0, workers=10, detail=None):
    """Seconds from starting `n` labelled containers at once until the registrar has
    registered all of them (own Consul agent, own daemon, everything cleaned up).

    For tests/bench.py (`register_100_s`). Raises AssertionError on timeout.
    """
    import concurrent.futures

    import docker
    client = docker.from_env(timeout=120)
    token = uuid.uuid4().hex[:8]
    agent = support.ConsulAgent(node="medic-bench-" + token).start()
    daemon = Daemon(agent.addr, token, resync=60).start()
    try:
        support.wait_for(lambda: daemon.records("resync"), timeout=60, what="the registrar's initial resync")
        names = ["medic-r100-%s-%03d" % (token, i) for i in range(n)]
        t0 = time.monotonic()

        def start(name):
            run_container(client, token, name, labels={"SERVICE_NAME": "r100-" + token})
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(start, names))
        started = time.monotonic() - t0
        want = {service_id(nm) for nm in names}

        def all_there():
            return want <= set(services(agent))
        support.wait_for(all_there, timeout=timeout, interval=0.05, what="%d registrations" % n)
        total = time.monotonic() - t0
        if detail is not None:
            detail.update(started_s=started, after_last_start_s=total - started, n=n)
        return total
    finally:
        daemon.stop()
        remove_containers(client, token)
        agent.stop()
        client.close()


# ---------------------------------------------------------------- the shared engine
def engine_answers(timeout=10):
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def dockerd_pid():
    try:
        with open("/var/run/docker.pid") as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def restart_engine(stop_timeout=120, start_timeout=180):
    """Stop dockerd (SIGTERM, wait until it is gone), start it again exactly as
    testbed/install.sh does (idempotent: starts dockerd when none answers), wait for
    `docker info`. DISRUPTIVE: every test on this machine loses its containers.

    The engine is always started again, even when stopping it timed out or failed.
    Returns the seconds dockerd took to stop.
    """
    pid = dockerd_pid()
    if pid is None:
        raise RuntimeError("no dockerd pid in /var/run/docker.pid: not restarting an engine we cannot find")
    t0 = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + stop_timeout
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("dockerd %d did not stop within %d s" % (pid, stop_timeout))
        stopped = time.monotonic() - t0
    finally:
        r = subprocess.run(["bash", os.path.join(support.ROOT, "testbed", "install.sh")], capture_output=True,
                           text=True, timeout=start_timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError("testbed/install.sh failed: %s" % r.stderr[-2000:])
        support.wait_for(engine_answers, timeout=start_timeout, interval=0.5, what="docker info after restart")
    return stopped


def dump(obj):
    return json.dumps(obj, indent=1, sort_keys=True)


class Stopwatch(threading.Thread):
    """Polls `predicate` as fast as it can from the moment it starts; `.seconds` when true."""

    def __init__(self, predicate, timeout=30.0, interval=0.01):
        super().__init__(daemon=True)
        self.predicate, self.timeout, self.interval = predicate, timeout, interval
        self.t0 = time.monotonic()
        self.seconds = None

    def run(self):
        while time.monotonic() - self.t0 < self.timeout:
            try:
                if self.predicate():
                    self.seconds = time.monotonic() - self.t0
                    return
            except OSError:
                pass
            time.sleep(self.interval)


class EngineProxy:
    """A Unix-socket forwarder to the real engine socket, to cut a registrar's engine
    connections (its event stream included) without touching the shared engine."""

    def __init__(self, path, target="/var/run/docker.sock"):
        self.path, self.target = path, target
        self.listener, self.conns, self.lock = None, [], threading.Lock()

    def start(self):
        import socket
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()
        return self

    def _accept(self, listener):
        import socket
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        import socket
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        """Refuse new connections and cut every open one."""
        import socket
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if os.path.exists(self.path):
            os.unlink(self.path)
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
