"""medic-register's first probe (handlers.reg_probe): a new check starts passing only when a probe
of its own target passed just now. Real loopback servers; the registrar with test doubles."""
import http.server
import socket
import threading
import time

import pytest

from consul_medic.handlers.register import reg_probe
from consul_medic.handlers.register import reg_registrar as core
from test_registrar import OPTS, FakeAgent, FakeEngine, container


@pytest.mark.parametrize("check, want", [
    ({"HTTP": "http://10.0.0.5:32768/health", "Interval": "1s"}, ("http", "GET", "10.0.0.5", 32768, "/health")),
    ({"HTTP": "http://10.0.0.5:8080", "Method": "head"}, ("http", "HEAD", "10.0.0.5", 8080, "/")),
    ({"HTTP": "http://[::1]:81/a?b=1"}, ("http", "GET", "::1", 81, "/a?b=1")),
    ({"TCP": "10.0.0.5:5432"}, ("tcp", "10.0.0.5", 5432)),
    ({"TCP": "[::1]:5432"}, ("tcp", "::1", 5432)),
    ({"HTTP": "https://10.0.0.5:443/"}, None),  # TLS: left to Consul
    ({"HTTP": "http://10.0.0.5:99999/"}, None),
    ({"GRPC": "10.0.0.5:9000"}, None),
    ({"TTL": "30s"}, None),
    ({"HTTP": "http://10.0.0.5:80/", "Status": "warning"}, None),  # SERVICE_CHECK_INITIAL_STATUS wins
    (None, None),
])
def test_what_is_probed(check, want):
    assert reg_probe.target(check) == want


@pytest.fixture
def server():
    """A loopback HTTP server answering with the status in `codes[0]`; `seen` records (method, path)."""
    state = {"code": 200, "seen": []}

    class H(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            state["seen"].append((self.command, self.path, self.headers.get("User-Agent")))
            self.send_response(state["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        do_GET = do_HEAD = _answer

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    state["port"] = srv.server_address[1]
    yield state
    srv.shutdown()
    srv.server_close()


def test_a_2xx_answer_passes_anything_else_leaves_it_to_consul(server):
    url = "http://127.0.0.1:%d/health" % server["port"]
    assert reg_probe.first_status({"HTTP": url}) == "passing"
    assert reg_probe.first_status({"HTTP": url, "Method": "HEAD"}) == "passing"
    assert server["seen"] == [("GET", "/health", "Consul Health Check"), ("HEAD", "/health", "Consul Health Check")]
    for code in (301, 429, 500, 503):
        server["code"] = code
        assert reg_probe.first_status({"HTTP": url}) is None, code


def test_nothing_listening_or_no_answer_is_no_status_within_the_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        assert reg_probe.first_status({"HTTP": "http://127.0.0.1:%d/" % port}) is None
        assert reg_probe.first_status({"TCP": "127.0.0.1:%d" % port}) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # accepts (the kernel does), never answers
        port = s.getsockname()[1]
        assert reg_probe.first_status({"TCP": "127.0.0.1:%d" % port}) == "passing"
        t0 = time.monotonic()
        assert reg_probe.first_status({"HTTP": "http://127.0.0.1:%d/" % port}, timeout=0.2) is None
        assert time.monotonic() - t0 < 1.0


def test_the_registrar_probes_new_registrations_only_and_says_so():
    c = container(labels={"SERVICE_CHECK_HTTP": "/health"})
    asked, answer = [], ["passing"]

    def probe(check):
        asked.append(check["HTTP"])
        return answer[0]
    records = []

    class Audit:
        def write(self, rec):
            records.append(rec)
    agent = FakeAgent()
    reg = core.Registrar(OPTS, agent, FakeEngine([c]), audit=Audit(), probe=probe)
    reg.resync()
    assert asked == ["http://127.0.0.1:32768/health"]
    assert agent.bodies[-1]["Check"]["Status"] == "passing"
    assert [r["first_probe"] for r in records if r["action"] == "register"] == ["passing"]
    # a change to a registration already there (new tags) is written without a probe, without a status
    c["Config"]["Labels"]["SERVICE_TAGS"] = "blue"
    reg.on_event({"Type": "container", "Action": "start", "Actor": {"ID": c["Id"], "Attributes": {}}})
    reg.sync_pending()
    assert len(asked) == 1 and "Status" not in agent.bodies[-1]["Check"]
    # a failed probe: no status (Consul's own first run decides)
    agent.svc.clear()
    answer[0] = None
    reg.resync()
    assert len(asked) == 2 and "Status" not in agent.bodies[-1]["Check"]


def test_without_a_probe_nothing_is_probed():
    agent = FakeAgent()
    core.Registrar(OPTS, agent, FakeEngine([container(labels={"SERVICE_CHECK_HTTP": "/health"})])).resync()
    assert "Status" not in agent.bodies[-1]["Check"]
