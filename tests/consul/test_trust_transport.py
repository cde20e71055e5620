"""The transport refuses what could split a request (issue 23): a service ID with CR/LF registered in
a real Consul agent cannot pipeline a second request carrying the operator's token through
medic-rollout's / medic-drain's maintenance call; every path segment is quoted by handlers/consul/api.py."""
import socket

import pytest

from consul_medic.handlers.consul import api, lighthttp, settings
from consul_medic.handlers.replace import rollout_io
from consul_medic.handlers.core.errors import EngineError

pytestmark = [pytest.mark.consul]

SMUGGLE = "x?enable=true HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nDELETE /v1/kv/medic/?recurse"


@pytest.fixture
def agent(consul_factory):
    return consul_factory()


def _kv_present(agent):
    import urllib.error
    try:
        return agent.api("/v1/kv/medic/?keys") or []
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise


def _settings(agent, token="operator-secret"):
    return settings.resolve(agent.addr, token, None, 5)


def test_the_unquoted_id_was_a_real_smuggling_hole(agent):
    """What the old code sent (the ID appended as is): Consul runs the pipelined DELETE."""
    agent.api("/v1/kv/medic/a", "PUT", "1")
    host, port = agent.addr.split("//")[1].split(":")
    raw = ("PUT /v1/agent/service/maintenance/%s HTTP/1.1\r\nHost: %s:%s\r\nContent-Length: 0\r\n\r\n"
           % (SMUGGLE, host, port)).encode()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(raw)
        s.settimeout(2)
        try:
            while s.recv(65536):
                pass
        except socket.timeout:
            pass
    assert _kv_present(agent) == []


def test_a_crlf_service_id_cannot_smuggle_a_second_request(agent):
    agent.api("/v1/kv/medic/a", "PUT", "1")
    agent.api("/v1/kv/medic/b", "PUT", "2")
    odd = "web 1/x?enable=false#"
    for sid in (SMUGGLE, odd):
        agent.register(sid, "web-smuggle", port=8080)
        assert sid in agent.api("/v1/agent/services")  # Consul stored the hostile ID as it was given
    node = agent.node
    with lighthttp.Connection(_settings(agent)) as conn:
        drv = rollout_io.ComposeDriver(None, None, conn, timeout=5)
        # quoted, the CR/LF ID is one path segment; Consul answers 400 and nothing else happens
        with pytest.raises(EngineError, match="HTTP 400") as e:
            drv.maintenance(rollout_io.Detail("c1", "c1", "img", 0, [], [(node, SMUGGLE)]), True)
        assert "\n" not in str(e.value)
        # an odd ID that is not an attack reaches exactly its own instance
        detail = rollout_io.Detail("c2", "c2", "img", 0, [], [(node, odd)])
        assert drv.maintenance(detail, True) == 1
        checks = agent.api("/v1/agent/checks")
        assert [c["ServiceID"] for c in checks.values() if c["CheckID"].startswith("_service_maintenance:")] == [odd]
        assert drv.maintenance(detail, False) == 1

        # the transport itself refuses, whatever the caller builds
        for target in ("/v1/agent/service/maintenance/" + SMUGGLE, "/v1/kv/a b", "/v1/kv/a\x00", "/v1/kv/\u00e9",
                       "/v1/kv/a\tb"):
            with pytest.raises(lighthttp.UnsafeRequest, match="nothing sent"):
                conn.request("PUT", target)
        with pytest.raises(lighthttp.UnsafeRequest):
            conn.request("GET /v1/kv/medic/?recurse HTTP/1.1\r\n", "/v1/kv")
    assert sorted(_kv_present(agent)) == ["medic/a", "medic/b"]


def test_header_values_with_control_characters_are_refused_and_never_shown(agent):
    agent.api("/v1/kv/medic/a", "PUT", "1")
    s = _settings(agent)._replace(token="t\r\n\r\nDELETE /v1/kv/medic/?recurse HTTP/1.1\r\nX: y")
    with lighthttp.Connection(s) as conn:
        with pytest.raises(lighthttp.UnsafeRequest) as e:
            conn.request("GET", "/v1/agent/self")
    assert "X-Consul-Token" in str(e.value) and "DELETE" not in str(e.value)
    assert _kv_present(agent) == ["medic/a"]


def test_api_path_quotes_every_segment():
    assert api.service_maintenance("a/../b c\r\n") == "/v1/agent/service/maintenance/a%2F..%2Fb%20c%0D%0A"
    assert api.kv("medic/prod/pause/x y") == "/v1/kv/medic/prod/pause/x%20y"
    assert api.health_service("web") == "/v1/health/service/web"
