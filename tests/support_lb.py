"""Test support for medic-lb / medic-failover: real nginx and HAProxy processes on free loopback
ports, demo containers that say who they are, registered in a real Consul agent."""
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import support

LABEL = "medic.test.lb"


def nginx_available():
    return shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx")


def haproxy_available():
    return shutil.which("haproxy") is not None or os.path.exists("/usr/sbin/haproxy")


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def haproxy_bin():
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


class Nginx:
    """`nginx -p DIR -c CONF -g 'daemon off;'`; reload with `nginx -p DIR -c CONF -s reload`."""

    def __init__(self, workdir, conf):
        self.dir, self.conf = str(workdir), str(conf)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.proc = None

    def argv(self, *extra):
        return [nginx_bin(), "-p", self.dir + "/", "-c", self.conf] + list(extra)

    def check_cmd(self):
        return " ".join([nginx_bin(), "-t", "-q", "-p", self.dir + "/", "-c", "{}"])

    def reload_cmd(self):
        return " ".join(self.argv("-s", "reload"))

    def start(self):
        self._log = open(os.path.join(self.dir, "nginx.out"), "ab")
        self.proc = subprocess.Popen(self.argv("-g", "daemon off;"), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError("nginx exited %s: %s" % (self.proc.returncode, self.log()))
        return self

    def log(self):
        try:
            with open(os.path.join(self.dir, "nginx.out"), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if getattr(self, "_log", None):
            self._log.close()


def get(url, host=None, timeout=5):
    """(status, body) of one GET; status 0 when the connection failed."""
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def network(client, token):
    """A bridge network of this test's own (never the default bridge: other tests may disturb it)."""
    name = "medic-lb-%s" % token
    try:
        return client.networks.get(name)
    except Exception:
        return client.networks.create(name, driver="bridge", labels={LABEL: token})


def run_demo(client, token, name, image=None, command=None, port=80, **kw):
    """A demo container (httpd on 80, published on 127.0.0.1::80) whose /who says its name."""
    c = client.containers.run(image or support.DEMO_IMAGE, command, name=name, detach=True, labels={LABEL: token},
                              ports={"%d/tcp" % port: ("127.0.0.1", None)}, network=network(client, token).name,
                              **kw)
    if image is not None:
        c.reload()
        return c, int(c.attrs["NetworkSettings"]["Ports"]["%d/tcp" % port][0]["HostPort"])
    c.exec_run(["sh", "-c", "echo %s > /www/who" % name])
    c.reload()
    port = int(c.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
    return c, port


def remove_containers(client, token):
    """Remove this test's containers and its network (ours only, by label)."""
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


def register_http(agent, service_id, name, port, tags=(), interval="1s"):
    """Register an instance with a real HTTP check on it (status starts critical)."""
    agent.register(service_id, name, port=port, tags=tags,
                   check={"HTTP": "http://127.0.0.1:%d/who" % port, "Interval": interval, "Timeout": "1s",
                          "Status": "critical"})


def passing_ids(agent, name):
    return sorted(e["Service"]["ID"] for e in agent.api("/v1/health/service/%s?passing=1" % name))
