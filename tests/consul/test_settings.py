"""Consul connection settings: precedence, TLS, and the token never shown."""
import pytest
import responses

from consul_medic.handlers.consul import settings
from consul_medic.handlers.core.errors import UsageError


def test_defaults():
    s = settings.resolve(environ={})
    assert (s.addr, s.token, s.timeout) == ("http://127.0.0.1:8500", None, 5.0)


def test_address_precedence():
    env = {"CONSUL_HTTP_ADDR": "10.9.9.9:8500"}
    assert settings.resolve(environ=env).addr == "http://10.9.9.9:8500"
    assert settings.resolve(spec_addr="https://consul.live:8501", environ=env).addr == "https://consul.live:8501"
    assert settings.resolve(consul_addr="127.0.0.5:9", spec_addr="x:1", environ=env).addr == "http://127.0.0.5:9"
    assert settings.resolve(environ={"CONSUL_HTTP_ADDR": "h:8501", "CONSUL_HTTP_SSL": "true"}).addr == "https://h:8501"


@pytest.mark.parametrize("bad", ["ftp://h:1", "h:notaport", "h:99999", "http://", "http://h:1/path"])
def test_bad_address_is_usage_error(bad):
    with pytest.raises(UsageError):
        settings.resolve(consul_addr=bad, environ={})


def test_token_precedence(tmp_path):
    f_flag, f_env = tmp_path / "flag", tmp_path / "env"
    f_flag.write_text("from-flag-file\n")
    f_env.write_text("from-env-file")
    env = {"CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_TOKEN_FILE": str(f_env)}
    assert settings.resolve(token="explicit", token_file=str(f_flag), environ=env).token == "explicit"
    assert settings.resolve(token_file=str(f_flag), environ=env).token == "from-flag-file"
    assert settings.resolve(environ=env).token == "from-env"
    assert settings.resolve(environ={"CONSUL_HTTP_TOKEN_FILE": str(f_env)}).token == "from-env-file"
    assert settings.resolve(environ={}).token is None


def test_unreadable_token_file_names_file_not_content(tmp_path):
    with pytest.raises(UsageError) as e:
        settings.resolve(token_file=str(tmp_path / "missing"), environ={})
    assert "missing" in str(e.value)


def test_token_never_in_repr():
    s = settings.resolve(token="s3cr3t-token", environ={})
    assert "s3cr3t-token" not in repr(s) and "s3cr3t-token" not in str(s)
    assert s.redact("header X-Consul-Token: s3cr3t-token") == "header X-Consul-Token: <redacted>"


def test_tls_settings():
    env = {"CONSUL_CACERT": "/ca.pem", "CONSUL_CLIENT_CERT": "/c.pem", "CONSUL_CLIENT_KEY": "/k.pem",
           "CONSUL_HTTP_SSL_VERIFY": "false"}
    s = settings.resolve(consul_addr="https://h:8501", environ=env)
    assert (s.cacert, s.client_cert, s.client_key, s.verify) == ("/ca.pem", "/c.pem", "/k.pem", False)
    with pytest.raises(UsageError):
        settings.resolve(environ={"CONSUL_CLIENT_CERT": "/c.pem"})


def test_py_consul_client_uses_our_token_not_env(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token")
    s = settings.resolve(token="flag-token")
    c = settings.make_client(s)
    assert c.token == "flag-token"
    assert c.http.connections_timeout == 5.0


@responses.activate
def test_py_consul_client_sends_token_and_timeout():
    seen = {}

    def cb(request):
        seen["token"] = request.headers.get("X-Consul-Token")
        return (200, {"X-Consul-Index": "7"}, '[{"Key": "k", "Value": null}]')

    responses.add_callback(responses.GET, "http://127.0.0.9:8500/v1/kv/k", callback=cb)
    c = settings.make_client(settings.resolve(consul_addr="127.0.0.9:8500", token="tok", environ={}))
    index, data = c.kv.get("k")
    assert (index, data["Key"]) == ("7", "k")
    assert seen["token"] == "tok"


def test_environment_selector():
    assert settings.environment(None, {"MEDIC_ENV": "live"}) == "live"
    assert settings.environment("test", {"MEDIC_ENV": "live"}) == "test"
    assert settings.environment(None, {}) is None
    with pytest.raises(UsageError):
        settings.environment("a;b", {})
