"""The one place that builds Consul paths: every segment quoted one way, nothing can end the path."""
from hypothesis import given, strategies as st

from consul_medic.handlers.consul import api

BUILDERS = (api.health_service, api.health_node, api.agent_service, api.agent_deregister, api.check_update,
            api.service_maintenance)


def test_paths():
    assert api.health_service("www.example.com") == "/v1/health/service/www.example.com"
    assert api.kv("medic/live/lock/www.example.com") == "/v1/kv/medic/live/lock/www.example.com"
    assert api.kv("medic/live/roles/") == "/v1/kv/medic/live/roles/"
    assert api.agent_deregister("host1:web-1:8080") == "/v1/agent/service/deregister/host1%3Aweb-1%3A8080"
    assert api.session("renew", "a b") == "/v1/session/renew/a%20b"


def test_a_smuggling_id_stays_one_segment():
    sid = "web-1\r\n\r\nDELETE /v1/kv/medic/?recurse HTTP/1.1\r\nX: y"
    path = api.service_maintenance(sid)
    assert path.count("/") == 5 and not any(c in path for c in "\r\n ?#")


@given(st.text())
def test_no_segment_escapes(s):
    for build in BUILDERS:
        path = build(s)
        tail = path[len(build("")):]
        assert "/" not in tail and "?" not in tail and "#" not in tail
        assert all(0x21 <= ord(c) < 0x7f for c in path)
    assert all(0x21 <= ord(c) < 0x7f for c in api.kv(s))


def test_blocking_index_rules():
    assert api.next_index(None, 42) == 42
    assert api.next_index(42, 57) == 57
    assert api.next_index(57, 12) == 0          # went backwards: start again
    assert api.next_index(None, 0) == 1         # never below 1
    assert api.next_index(7, None) == 7         # no index in the answer: keep ours
    assert api.next_index("57", "12") == 0 and api.next_index(None, "42") == 42  # py-consul: text
