"""HTTP checks built from labels (issue 23): Consul's checker follows redirects, so a container could
point its check at the host's loopback or a metadata address. Where the agent supports it the check
gets DisableRedirects; on this testbed's Consul 1.8.7 medic-register takes the fallback, a TCP check on
the same address and port, and says so in the check's Notes and the audit log. Real agent, a real
redirecting HTTP server and a listener standing for the host's private endpoint."""
import http.server
import json
import socket
import threading
import time

import pytest

import support
from consul_medic.handlers.catalog import reg_checks, reg_model
from consul_medic.handlers.register import reg_labels

pytestmark = [pytest.mark.consul]


@pytest.mark.parametrize("version,ok", [("1.8.7", False), ("1.9.16", False), ("1.9.17", True), ("1.10.9", False),
                                        ("1.10.10", True), ("1.11.4", False), ("1.11.5", True), ("1.15.2+ent", True),
                                        ("", False), (None, False), ("x", False)])
def test_which_agents_can_disable_redirects(version, ok):
    assert reg_checks.redirects_can_be_disabled(version) is ok


def _inspect(labels):
    return {"Id": "c" * 64, "Name": "/web-1", "Config": {"Image": "demo", "Labels": labels, "Env": []},
            "State": {"Running": True, "StartedAt": "2026-12-03T09:00:00Z"},
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}]}}}


def test_label_http_checks_per_mode():
    labels = {"SERVICE_NAME": "web", "SERVICE_CHECK_HTTP": "/health", "SERVICE_CHECK_INTERVAL": "2s"}
    for mode, kind in (("disable-redirects", "HTTP"), ("tcp", "TCP"), ("follow", "HTTP")):
        regs, skips = reg_labels.registrations(_inspect(labels), reg_model.Options("h", http_checks=mode))
        check = dict(regs[0].check)
        assert kind in check and check["Interval"] == "2s"
        assert check.get("DisableRedirects") is (True if mode == "disable-redirects" else None)
        if mode == "tcp":
            assert check["TCP"] == "127.0.0.1:32768" and "Method" not in check
            assert check["Notes"].startswith("medic-register: SERVICE_CHECK_HTTP /health taken as a TCP check")
            assert [(s.action, s.reason) for s in skips] == [("fallback", check["Notes"])]
        else:
            assert skips == []


class _Counter:
    """A listener standing for something only the host may reach (127.0.0.9)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.9", 0))
        self.sock.listen(16)
        self.port, self.hits = self.sock.getsockname()[1], 0
        self.sock.settimeout(0.2)
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            try:
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhost-only-token")
            finally:
                c.close()

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()


def _redirector(target):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _checks(agent, sid):
    return [c for c in agent.api("/v1/agent/checks").values() if c["ServiceID"] == sid]


def test_a_redirecting_check_cannot_reach_the_host_on_consul_1_8(consul_factory):
    agent = consul_factory()
    counter = _Counter()
    srv = _redirector("http://127.0.0.9:%d/secret" % counter.port)
    port = srv.server_address[1]
    try:
        assert not reg_checks.redirects_can_be_disabled(agent.api("/v1/agent/self")["Config"]["Version"])
        # what a label made before: Consul follows the redirect to the host-only endpoint
        follow, _ = reg_checks.build_check({"check_http": "/x", "check_interval": "1s"}, "127.0.0.1", port, "follow")
        agent.api("/v1/agent/service/register", "PUT", {"ID": "web-follow", "Name": "web", "Port": port,
                                                       "Address": "127.0.0.1", "Check": follow})
        support.wait_for(lambda: counter.hits > 0, 20, what="the redirect followed to 127.0.0.9")
        assert "host-only-token" in _checks(agent, "web-follow")[0]["Output"]
        agent.deregister("web-follow")
        time.sleep(1.5)
        before = counter.hits

        tcp, refused = reg_checks.build_check({"check_http": "/x", "check_interval": "1s"}, "127.0.0.1", port, "tcp")
        assert refused is None
        agent.api("/v1/agent/service/register", "PUT", {"ID": "web-tcp", "Name": "web", "Port": port,
                                                       "Address": "127.0.0.1", "Check": tcp})
        support.wait_for(lambda: [c["Status"] for c in _checks(agent, "web-tcp")] == ["passing"], 20,
                         what="the TCP fallback passing")
        time.sleep(3)
        (c,) = _checks(agent, "web-tcp")
        assert counter.hits == before and "host-only-token" not in c["Output"]
        assert c["Notes"].startswith("medic-register: SERVICE_CHECK_HTTP /x taken as a TCP check")
    finally:
        srv.shutdown()
        counter.close()


@pytest.mark.docker
def test_medic_register_says_the_fallback_it_takes(consul_factory, docker_client, tmp_path, unique):
    agent = consul_factory()
    audit = tmp_path / "audit.jsonl"
    env = support.medic_env(MEDIC_HTTP_CHECKS_MAY_REDIRECT="")
    r = support.run_medic("medic-register", ["--once", "--consul-addr", agent.addr, "--filter", "medic.test.trust=" +
                                             unique, "--allow-loopback-ip", "--audit-log", str(audit)], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = [json.loads(ln) for ln in open(audit)]
    (fb,) = [x for x in recs if x.get("action") == "fallback"]
    assert "Consul 1.8.7 cannot turn off redirects" in fb["reason"] and "TCP checks" in fb["reason"]
