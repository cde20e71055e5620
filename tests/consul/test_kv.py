"""The Consul access layer's KV helper (check-and-set) and failure explanations, on a real agent."""
import threading

import pytest

from consul_medic.handlers.consul import consul_errors, kv, settings

pytestmark = pytest.mark.consul


@pytest.fixture(params=["py-consul", "lighthttp"])
def client(request, consul_agent):
    """Both transports of the access layer, through the same kv interface."""
    st = settings.resolve(consul_agent.addr, environ={})
    if request.param == "py-consul":
        yield settings.make_client(st)
    else:
        from consul_medic.handlers.consul import lighthttp
        with lighthttp.Connection(st) as conn:
            yield conn


def test_cas_update_creates_updates_and_keeps(client, unique):
    key = "medic/test-kv/%s/counter with space" % unique
    assert kv.read(client, key) == (None, 0)
    assert kv.cas_update(client, key, lambda cur: {"n": 1}) == {"n": 1}
    assert kv.cas_update(client, key, lambda cur: {"n": cur["n"] + 1}) == {"n": 2}
    value, index = kv.read(client, key)
    assert value == {"n": 2} and index > 0
    assert kv.cas_update(client, key, lambda cur: kv.KEEP) == {"n": 2}
    assert kv.read(client, key)[1] == index  # KEEP wrote nothing


def test_cas_update_concurrent_writers_all_count(client, unique, consul_agent):
    key = "medic/test-kv/%s/race" % unique
    errors = []

    def bump():
        try:
            kv.cas_update(client_of_own(), key, lambda cur: {"n": (cur or {}).get("n", 0) + 1}, attempts=50)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def client_of_own():  # one connection per thread (lighthttp's is not thread-safe)
        return settings.make_client(settings.resolve(consul_agent.addr, environ={}))

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and kv.read(client, key)[0] == {"n": 8}


def test_cas_update_gives_up_with_a_clear_error(client, unique):
    key = "medic/test-kv/%s/busy" % unique
    kv.put(client, key, {"n": 0})

    def meddle(cur):  # someone else writes between our read and our write, every time
        kv.put(client, key, {"n": cur["n"] + 100})
        return {"n": cur["n"] + 1}

    with pytest.raises(kv.CasConflict, match=r"gave up after 3 check-and-set conflicts"):
        kv.cas_update(client, key, meddle, attempts=3, pause=(0, 0))


def test_unreadable_value_is_handed_over_not_raised(client, unique, consul_agent):
    key = "medic/test-kv/%s/garbage" % unique
    settings.make_client(settings.resolve(consul_agent.addr, environ={})).kv.put(key, b"\xff{not json")
    value, _ = kv.read(client, key)
    assert isinstance(value, kv.Unreadable) and "not JSON" in value.why
    assert kv.cas_update(client, key, lambda cur: {"fixed": True}) == {"fixed": True}


def test_read_prefix_is_one_read_and_a_stale_known_value_loses_its_cas(client, unique):
    prefix = "medic/test-kv/%s/many/" % unique
    assert kv.read_prefix(client, prefix) == {}
    for i in range(3):
        kv.put(client, prefix + "s%d" % i, {"n": i})
    settings_client = client if hasattr(client, "kv") else None
    if settings_client is not None:
        settings_client.kv.put(prefix + "raw", b"\xff{")
    known = kv.read_prefix(client, prefix)
    assert {k: v for k, (v, _) in known.items() if not isinstance(v, kv.Unreadable)} == \
        {prefix + "s%d" % i: {"n": i} for i in range(3)}
    assert all(idx > 0 for _, idx in known.values())
    kv.put(client, prefix + "s0", {"n": 10})                       # someone writes after the read
    seen = []
    assert kv.cas_update(client, prefix + "s0", lambda cur: seen.append(cur) or {"n": cur["n"] + 1},
                         known=known[prefix + "s0"]) == {"n": 11}   # the stale first try lost, the re-read won
    assert seen == [{"n": 0}, {"n": 10}]
    assert kv.cas_update(client, prefix + "new", lambda cur: {"n": 1}, known=(None, 0)) == {"n": 1}
    assert kv.cas_update(client, prefix + "s1", lambda cur: {"n": 5}, known=(None, 0)) == {"n": 5}  # not absent
    assert kv.read(client, prefix + "s1")[0] == {"n": 5}


def test_explain_names_an_absent_agent_and_acl_denials():
    from support import free_port
    st = settings.resolve("127.0.0.1:%d" % free_port(), environ={})
    assert consul_errors.explain(st, "connection refused").startswith("Consul agent not reachable at http://127.0.0.1:")
    assert consul_errors.explain(st, "Consul GET /v1/kv/x: permission denied (ACL)").startswith("ACL denied")
    # the lighthttp text already says it: no second prefix
    text = "cannot connect to Consul at x: refused"
    assert consul_errors.explain(st, text) == text


def test_explain_adds_nothing_when_the_cluster_is_fine(consul_agent):
    st = settings.resolve(consul_agent.addr, environ={})
    assert consul_errors.explain(st, "something else") == "something else"
    assert consul_errors.cause(st, "rpc error: x").startswith("Consul servers unreachable (leader ")


def test_a_named_leader_that_does_not_answer_is_not_a_leader(consul_agent):
    """wait_for_leader asks for a consistent read, not for a name: right after a leader died, the
    survivors still name it (stand-in server below), and a retry then failed again at once."""
    import http.server
    import time

    class Survivor(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'"127.0.0.2:8300"' if self.path.startswith("/v1/status/leader") else b"No cluster leader"
            self.send_response(200 if self.path.startswith("/v1/status/leader") else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Survivor)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        st = settings.resolve("127.0.0.1:%d" % srv.server_address[1], timeout=1)
        t0 = time.monotonic()
        assert consul_errors.wait_for_leader(st, 0.6, time.monotonic, time.sleep, step=0.1,
                                             key="medic/default/lock/x") is False
        assert time.monotonic() - t0 >= 0.5
    finally:
        srv.shutdown()
        srv.server_close()
    real = settings.resolve(consul_agent.addr)
    assert consul_errors.wait_for_leader(real, 5, time.monotonic, time.sleep, key="medic/default/lock/x") is True
