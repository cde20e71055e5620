"""The hot path's HTTP client, against a real Consul agent and a scripted socket peer."""
import socket
import threading

import pytest

from consul_medic.handlers.consul import lighthttp, settings
from consul_medic.handlers.core.errors import ConsulError


class Peer:
    """A one-connection TCP server that records the request and sends canned bytes."""

    def __init__(self, reply=None, delay_forever=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.request = b""
        self.reply, self.delay_forever = reply, delay_forever
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        while b"\r\n\r\n" not in self.request:
            self.request += conn.recv(4096)
        if self.delay_forever:
            threading.Event().wait(3)
        elif self.reply is not None:
            conn.sendall(self.reply)
        conn.close()

    def settings(self, **kw):
        return settings.resolve(consul_addr="127.0.0.1:%d" % self.port, environ={}, **kw)


def test_sends_token_header_and_decodes_chunked():
    body = b'[{"a": 1}]'
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 42\r\n\r\n"
             + b"4\r\n" + body[:4] + b"\r\n" + b"%x\r\n" % (len(body) - 4) + body[4:] + b"\r\n0\r\n\r\n")
    peer = Peer(reply)
    with lighthttp.Connection(peer.settings(token="tok-123")) as c:
        index, data, _ = c.get_json("/v1/health/service/www.example.com", [("stale", None)])
    assert (index, data) == (42, [{"a": 1}])
    assert b"GET /v1/health/service/www.example.com?stale HTTP/1.1\r\n" in peer.request
    assert b"X-Consul-Token: tok-123\r\n" in peer.request


def test_error_status_is_consul_error_without_token():
    peer = Peer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 31\r\n\r\nACL not found for tok-secret-99")
    with pytest.raises(ConsulError) as e:
        lighthttp.Connection(peer.settings(token="tok-secret-99")).get_json("/v1/kv/x")
    assert "permission denied (ACL)" in str(e.value)
    assert "tok-secret-99" not in str(e.value)


def test_timeout_is_consul_error():
    peer = Peer(delay_forever=True)
    with pytest.raises(ConsulError, match="did not answer"):
        lighthttp.Connection(peer.settings(timeout=0.3)).get_json("/v1/agent/self")


def test_connection_refused_is_consul_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    unused = s.getsockname()[1]
    s.close()
    with pytest.raises(ConsulError, match="cannot connect to Consul at http://127.0.0.1:%d" % unused):
        lighthttp.Connection(settings.resolve(consul_addr="127.0.0.1:%d" % unused, environ={})).get_json("/")


def test_garbage_is_consul_error():
    peer = Peer(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ConsulError, match="not HTTP"):
        lighthttp.Connection(peer.settings()).get_json("/")


def test_quoting():
    assert lighthttp.path_with_query("/v1/x", [("filter", 'a == "b c"'), ("stale", None)]) == \
        "/v1/x?filter=a%20%3D%3D%20%22b%20c%22&stale"


@pytest.mark.consul
def test_keep_alive_against_real_agent(consul_agent):
    s = settings.resolve(consul_addr=consul_agent.addr, environ={})
    with lighthttp.Connection(s) as c:
        for i in range(5):
            c.call("PUT", "/v1/kv/medic-test/lighthttp", body=b"v%d" % i)
        index, data, headers = c.get_json("/v1/kv/medic-test/lighthttp")
        sock = c._sock
    assert index and data[0]["Key"] == "medic-test/lighthttp"
    assert sock is not None  # one connection served all six requests


class Sequence:
    """A keep-alive server that answers each request with the next canned reply."""

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        buf = b""
        while self.replies:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            self.requests.append(head.split(b"\r\n")[0])
            conn.sendall(self.replies.pop(0))
        conn.close()


def _status(code, body=b"[]", extra=b""):
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (code, len(body), extra, body)


def test_rate_limited_answers_are_retried_with_backoff():
    peer = Sequence([_status(429), _status(503, extra=b"Retry-After: 1\r\n"), _status(200, b'{"ok": 1}')])
    slept = []
    st = settings.resolve(consul_addr="127.0.0.1:%d" % peer.port, environ={})
    with lighthttp.Connection(st) as c:
        resp = c.request("GET", "/v1/kv/x", sleep=slept.append)
    assert resp.status == 200 and resp.json() == {"ok": 1}
    assert len(peer.requests) == 3 and 0.1 <= slept[0] <= 0.15 and slept[1] == 1.0


def test_rate_limiting_that_does_not_end_is_an_error_after_the_retries():
    peer = Sequence([_status(429)] * (lighthttp.RETRIES + 1))
    st = settings.resolve(consul_addr="127.0.0.1:%d" % peer.port, environ={})
    with pytest.raises(ConsulError, match="rate limited"):
        lighthttp.Connection(st).call("GET", "/v1/kv/x")
    assert len(peer.requests) == lighthttp.RETRIES + 1
