"""Real traffic through a real nginx, whose configuration `medic-lb --watch` renders from
Consul, while medic-rollout replaces a 3-instance service (tests and `make bench`).

    measure_rollout(sick=False) -> {"exit", "duration_s", "requests", "failed", "baseline_s", ...}

Everything is its own: a Consul agent on free loopback ports, medic-register filtered to
this run's label, a compose project `roll<token>`, image variants committed from the demo
image, nginx on a free 127.0.0.1 port, medic-lb. The client sends requests only to that
nginx (loopback), one after the other, bounded by count and time. All is removed at the end.
"""
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import support
import support_heal as sh
import support_rollout as srl


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available():
    return os.path.exists(nginx_bin())


def medic_lb():
    """The venv's medic-lb (MEDIC_LB_BIN overrides it, e.g. to try another build)."""
    return os.environ.get("MEDIC_LB_BIN") or os.path.join(support.BIN, "medic-lb")


def medic_lb_available():
    return os.path.exists(medic_lb())


class Client(threading.Thread):
    """GET / with Host: <service> against nginx until stopped (or max_requests / max_seconds)."""

    def __init__(self, port, host_header, max_requests=100000, max_seconds=600.0, pause=0.005):
        super().__init__(daemon=True)
        self.port, self.host_header = port, host_header
        self.max_requests, self.max_seconds, self.pause = max_requests, max_seconds, pause
        self.ok, self.failed, self.failures, self.bodies = 0, 0, [], set()
        self._halt = threading.Event()

    def run(self):
        """One new connection per request and no retry: a failure is a failure. (A keep-alive
        connection that nginx closes on reload can race a request sent on it; clients retry those,
        this one would count it, so it does not keep connections.)"""
        t0 = time.monotonic()
        while not self._halt.is_set() and self.ok + self.failed < self.max_requests \
                and time.monotonic() - t0 < self.max_seconds:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/", headers={"Host": self.host_header, "Connection": "close"})
                r = conn.getresponse()
                body = r.read()
                if r.status == 200:
                    self.ok += 1
                    self.bodies.add(body[:200])
                else:
                    self.failed += 1
                    self.failures.append((round(time.monotonic() - t0, 3), "HTTP %d" % r.status))
            except (OSError, http.client.HTTPException) as e:
                self.failed += 1
                self.failures.append((round(time.monotonic() - t0, 3), "%s: %s" % (type(e).__name__, e)))
            finally:
                conn.close()
            time.sleep(self.pause)

    def stop(self):
        self._halt.set()
        self.join(30)
        return self


class Proxy:
    """nginx (daemon off, own prefix) + `medic-lb --watch` rendering its config for one service."""

    def __init__(self, workdir, agent_addr, service, audit_log):
        self.dir, self.service = workdir, service
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        self.conf = os.path.join(workdir, "nginx.conf")
        self.port = support.free_port()
        self.env = support.medic_env(CONSUL_HTTP_ADDR=agent_addr, MEDIC_AUDIT_LOG=audit_log, MEDIC_NOTIFY="off")
        self.nginx = self.lb = None

    def lb_argv(self, mode):
        ng = [nginx_bin(), "-p", self.dir + "/"]
        return [medic_lb(), mode, "--template", "nginx-http", "--out", self.conf,
                "--service", self.service, "--wait", "0.1s:1s",
                "--var", "listen=127.0.0.1:%d" % self.port, "--var", "pid=%s/nginx.pid" % self.dir,
                "--var", "error_log=%s/error.log" % self.dir,
                "--check-cmd", " ".join(ng + ["-t", "-q", "-c", "{}"])] + (
                    ["--reload-cmd", " ".join(ng + ["-c", self.conf, "-s", "reload"])] if mode == "--watch" else [])

    def start(self):
        r = subprocess.run(self.lb_argv("--once"), env=self.env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or not os.path.exists(self.conf):
            raise RuntimeError("medic-lb --once: %s %s" % (r.stdout, r.stderr))
        self._nlog = open(os.path.join(self.dir, "nginx.out"), "ab")
        self.nginx = subprocess.Popen([nginx_bin(), "-p", self.dir + "/", "-c", self.conf, "-g", "daemon off;"],
                                      stdout=self._nlog, stderr=subprocess.STDOUT, start_new_session=True)
        self._llog = open(os.path.join(self.dir, "medic-lb.out"), "ab")
        self.lb = subprocess.Popen(self.lb_argv("--watch"), env=self.env, stdout=self._llog,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        support.wait_for(lambda: self.get() == 200, timeout=30, what="nginx answering 200")
        return self

    def get(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/", headers={"Host": self.service})
            s = c.getresponse().status
            c.close()
            return s
        except OSError:
            return None

    def stop(self):
        for p in (self.lb, self.nginx):
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait(5)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        pass
        for f in (getattr(self, "_nlog", None), getattr(self, "_llog", None)):
            if f is not None:
                f.close()


def start_to_passing(w, image):
    """Seconds from `docker run` of `image` (registered like the service's instances) to passing."""
    import support_register as sr
    name = "%s-probe" % w.project
    svc = "%s-probe" % w.service
    t0 = time.monotonic()
    c = sr.run_container(w.docker, w.token, name, image=image,
                         labels={"SERVICE_NAME": svc, "SERVICE_CHECK_HTTP": "/cgi-bin/health",
                                 "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s"},
                         network=w.project + "_default")  # the engine may have no default bridge
    try:
        support.wait_for(lambda: sh.passing(w.agent, svc) == 1, timeout=60, interval=0.02, what="probe passing")
        return time.monotonic() - t0
    finally:
        c.remove(force=True)


def _epoch(iso):
    """'2026-11-27T13:01:02.345Z' -> epoch seconds."""
    import calendar
    base, _, frac = iso.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + (float("0." + frac) if frac else 0.0)


def bench_rows(Row):
    """Rows for `make bench` (tests/bench.py `rollout_traffic`): a rollout of 3 under traffic, and a
    rollout to an image that never passes."""
    m = measure_rollout()
    rows = [Row("rollout_3_s", round(m.get("steps_s", m["duration_s"]), 2), "s",
                "<= %.1f" % m["target_s"],
                "3 instances to a new image under traffic (n=1): first step -> last old instance out of the LB; "
                "target 3 x (start to first passing check %.2f s + 1 s); the run exits after the last graceful "
                "stop: %.1f s (the demo's httpd is PID 1 and ignores SIGTERM: 10 s)"
                % (m["start_to_passing_s"], m["duration_s"])),
            Row("rollout_failed_requests", m["failed"], "", "0",
                "%d requests through nginx (medic-lb --watch) during that rollout, exit %d"
                % (m["requests"], m["exit"]))]
    s = measure_rollout(sick=True, deadline="6")
    rows.append(Row("rollout_never_passing", "exit %d, %d old passing, %d failed" % (s["exit"], s["passing"],
                                                                                   s["failed"]),
                    "", "exit != 0, 3, 0",
                    "rollout to an image whose health check fails (--deadline 6 s): rolled back; %d requests "
                    "through nginx in %.1f s" % (s["requests"], s["duration_s"])))
    return rows


def measure_rollout(sick=False, deadline="10"):
    """One rollout of 3 instances under traffic -> figures (dict). Cleans up everything."""
    import docker
    client = docker.from_env(timeout=120)
    unique = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="medic-roll-")
    agent = support.ConsulAgent(node="medic-roll-" + unique).start()
    import pathlib
    w = srl.RollWorld(agent, client, pathlib.Path(tmp), unique)
    proxy, traffic = None, None
    try:
        w.start(3)
        image = w.variant("sick", sick=True) if sick else w.variant("v2", page="release two " + unique)
        baseline = None if sick else start_to_passing(w, image)
        proxy = Proxy(os.path.join(tmp, "lb"), agent.addr, w.service, w.audit).start()
        traffic = Client(proxy.port, w.service)
        traffic.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        r = w.rollout("--image", image, "--lb-output", proxy.conf, "--deadline", deadline, timeout=600)
        took = time.monotonic() - t0
        time.sleep(1.0)
        traffic.stop()
        try:
            w.wait_passing(3, timeout=30)
        except AssertionError:
            pass  # reported below as the passing count
        out = {"exit": r.returncode, "duration_s": took, "requests": traffic.ok + traffic.failed,
               "failed": traffic.failed, "failures": traffic.failures[:10], "stdout": r.stdout[-3000:],
               "passing": w.passing(), "passing_images": w.passing_images(), "image": image,
               "old_image": support.DEMO_IMAGE, "bodies": len(traffic.bodies),
               "containers": sorted((c.name, c.status, c.attrs["Config"]["Image"]) for c in w.containers())}
        steps = w.records("step")
        if steps:
            first, last = _epoch(steps[0]["time"]) - steps[0]["duration"], _epoch(steps[-1]["time"])
            out["steps_s"] = last - first  # first step's start -> the last step done (old one out of the LB)
        if baseline is not None:
            out["start_to_passing_s"] = baseline
            out["target_s"] = 3 * (baseline + 1.0)
        return out
    finally:
        if traffic is not None and traffic.is_alive():
            traffic.stop()
        if proxy is not None:
            proxy.stop()
        w.down()
        agent.stop()
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
