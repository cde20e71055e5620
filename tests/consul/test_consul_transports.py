"""Both Consul client paths (py-consul via settings.make_client, and lighthttp) honour the same
settings: IPv6 addresses, CONSUL_HTTP_AUTH, CONSUL_CAPATH, CONSUL_TLS_SERVER_NAME (issue 14).
Real agents where cheap (a dev agent on ::1, a dev agent with TLS from `consul tls`)."""
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import support
from consul_medic.handlers.consul import lighthttp, settings
from consul_medic.handlers.core.errors import ConsulError, UsageError


# -- parsing (unit) -------------------------------------------------------------------
@pytest.mark.parametrize("raw,addr,host", [
    ("[::1]:8500", "http://[::1]:8500", "::1"),
    ("https://[fd00::2]:8501", "https://[fd00::2]:8501", "fd00::2"),
    ("[::1]", "http://[::1]:8500", "::1"),
    ("127.0.0.1:8500", "http://127.0.0.1:8500", "127.0.0.1"),
])
def test_ipv6_addresses_parse_and_print_in_brackets(raw, addr, host):
    s = settings.resolve(consul_addr=raw, environ={})
    assert (s.addr, s.host, s.netloc.startswith("[") == (":" in host)) == (addr, host, True)
    assert settings.make_client(s).http.base_uri == addr


def test_http_auth_parsing_and_redaction():
    s = settings.resolve(environ={"CONSUL_HTTP_AUTH": "ops:pa55-w0rd"})
    assert s.http_auth == ("ops", "pa55-w0rd") and "pa55-w0rd" not in repr(s)
    assert s.redact("x pa55-w0rd y") == "x <redacted> y" and s.basic_auth_header() == "Basic b3BzOnBhNTUtdzByZA=="
    with pytest.raises(UsageError):
        settings.resolve(environ={"CONSUL_HTTP_AUTH": ":nouser"})


def test_capath_and_server_name_checked(tmp_path):
    s = settings.resolve(environ={"CONSUL_CAPATH": str(tmp_path), "CONSUL_TLS_SERVER_NAME": "server.dc1.consul"})
    assert (s.capath, s.tls_server_name) == (str(tmp_path), "server.dc1.consul")
    with pytest.raises(UsageError, match="CONSUL_CAPATH"):
        settings.resolve(environ={"CONSUL_CAPATH": str(tmp_path / "nope")})
    with pytest.raises(UsageError, match="CONSUL_TLS_SERVER_NAME"):
        settings.resolve(environ={"CONSUL_TLS_SERVER_NAME": "bad name/\n"})


# -- basic auth on the wire: a real local HTTP server records what both clients send -------------
@pytest.fixture
def recorder():
    seen = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Consul-Index", "1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "127.0.0.1:%d" % srv.server_address[1], seen
    srv.shutdown()
    srv.server_close()


def test_both_clients_send_basic_auth_and_token(recorder):
    addr, seen = recorder
    s = settings.resolve(consul_addr=addr, token="tok-1", environ={"CONSUL_HTTP_AUTH": "ops:pw"})
    settings.make_client(s).kv.get("x")
    with lighthttp.Connection(s) as c:
        c.get_json("/v1/kv/x")
    assert [h.get("Authorization") for h in seen] == ["Basic b3BzOnB3"] * 2
    assert [h.get("X-Consul-Token") for h in seen] == ["tok-1"] * 2


# -- IPv6 against a real agent ---------------------------------------------------------------------
def _has_ipv6_loopback():
    import socket
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.consul
def test_ipv6_agent_through_both_clients(consul_factory):
    support.require(_has_ipv6_loopback(), "an IPv6 loopback (::1)")
    agent = consul_factory(config={"addresses": {"http": "127.0.0.1 ::1"}})
    s = settings.resolve(consul_addr="[::1]:%d" % agent.ports["http"], environ={})
    client = settings.make_client(s)
    assert client.kv.put("medic/test-ipv6/k", "v") is True
    with lighthttp.Connection(s) as c:
        _, items, _ = c.get_json("/v1/kv/medic/test-ipv6/k")
        assert items[0]["Key"] == "medic/test-ipv6/k"
        assert c.get_json("/v1/status/leader")[1]


# -- TLS: CA directory and server name, against a real agent with certificates from `consul tls` ----
@pytest.fixture
def tls_agent(consul_factory, tmp_path):
    support.require(shutil.which("openssl") is not None, "openssl (CA directory hashing)")
    certs = tmp_path / "certs"
    certs.mkdir()
    run = lambda *a: subprocess.run(["consul", "tls"] + list(a), cwd=str(certs), check=True,  # noqa: E731
                                    capture_output=True, env=support.medic_env())
    run("ca", "create")
    run("cert", "create", "-server")
    capath = tmp_path / "capath"
    capath.mkdir()
    shutil.copy(str(certs / "consul-agent-ca.pem"), str(capath / "ca.pem"))
    subprocess.run(["openssl", "rehash", str(capath)], check=True, capture_output=True)
    agent = consul_factory(start=False)
    https = support.free_port()
    with open(os.path.join(agent.config_dir, "10-tls.json"), "w") as f:
        json.dump({"ports": {"https": https}, "ca_file": str(certs / "consul-agent-ca.pem"),
                   "cert_file": str(certs / "dc1-server-consul-0.pem"),
                   "key_file": str(certs / "dc1-server-consul-0-key.pem"),
                   "verify_incoming": False, "verify_outgoing": False}, f)
    agent.start()
    return agent, https, str(capath)


@pytest.mark.consul
def test_tls_capath_and_server_name_in_both_clients(tls_agent):
    agent, https, capath = tls_agent
    env = {"CONSUL_CAPATH": capath, "CONSUL_TLS_SERVER_NAME": "server.dc1.consul"}
    # by IP, checked against the server name: the right one verifies, a wrong one fails in both clients
    s = settings.resolve(consul_addr="https://127.0.0.1:%d" % https, environ=env)
    assert settings.make_client(s).status.leader()
    with lighthttp.Connection(s) as c:
        assert c.get_json("/v1/status/leader")[1]
    wrong = settings.resolve(consul_addr="https://127.0.0.1:%d" % https,
                             environ=dict(env, CONSUL_TLS_SERVER_NAME="other.example"))
    with pytest.raises(ConsulError, match="TLS handshake"):
        with lighthttp.Connection(wrong) as c:
            c.get_json("/v1/status/leader")
    with pytest.raises(Exception, match="(?i)hostname|certificate"):
        settings.make_client(wrong).status.leader()
    no_ca = settings.resolve(consul_addr="https://127.0.0.1:%d" % https,
                             environ={"CONSUL_TLS_SERVER_NAME": "server.dc1.consul"})
    with pytest.raises(ConsulError, match="TLS handshake"):  # the CA directory is what makes it trusted
        with lighthttp.Connection(no_ca) as c:
            c.get_json("/v1/status/leader")


# -- consul_errors: an agent that restarted moments ago (error path: a local server plays it) ----------
def test_explain_names_an_agent_whose_node_is_not_registered_yet():
    from consul_medic.handlers.consul import consul_errors
    answers = {"/v1/status/leader": '"127.0.0.1:8300"', "/v1/agent/self": '{"Config": {"NodeName": "mon-1"}}',
               "/v1/catalog/node/mon-1": "null"}

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = answers.get(self.path.split("?")[0], "{}").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        st = settings.resolve(consul_addr="127.0.0.1:%d" % srv.server_address[1], environ={})
        why = consul_errors.explain(st, "rpc error making call: Missing node registration")
        assert why.startswith("the local Consul agent is not ready (its node mon-1 is not registered"), why
        answers["/v1/catalog/node/mon-1"] = '{"Node": {"Node": "mon-1"}}'
        assert consul_errors.cause(st, "rpc error: x") == consul_errors.LEADER_LOST % "127.0.0.1:8300"
        answers["/v1/status/leader"] = '""'
        assert consul_errors.cause(st, "timeout") == consul_errors.NO_LEADER
    finally:
        srv.shutdown()
        srv.server_close()
