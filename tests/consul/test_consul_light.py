"""consul_light answers medic-heal's KV and session calls exactly as py-consul does (real agent)."""
import threading
import time
import uuid

import pytest

from consul_medic.handlers.consul import consul_light, lock, settings
from consul_medic.handlers.core.errors import ConsulError

pytestmark = pytest.mark.consul


@pytest.fixture
def pair(consul_agent):
    st = settings.resolve(consul_agent.addr)
    light, heavy = consul_light.Client(st), settings.make_client(st)
    yield light, heavy
    light.close()


def both(pair, fn):
    light, heavy = pair
    return fn(light), fn(heavy)


def test_kv_get_put_delete_cas_as_py_consul(pair):
    light, heavy = pair
    for client in (light, heavy):
        key = "medic/test-light/%s/a b/ü" % uuid.uuid4().hex  # spaces and non-ASCII quoted
        assert client.kv.get(key, consistency="consistent")[1] is None
        assert client.kv.put(key, '{"x": 1}', cas=0) is True
        assert client.kv.put(key, '{"x": 2}', cas=0) is False  # exists
        _, item = client.kv.get(key, consistency="consistent")
        assert item["Value"] == b'{"x": 1}' and item["Key"] == key
        assert client.kv.put(key, '{"x": 3}', cas=item["ModifyIndex"]) is True
        assert client.kv.delete(key, cas=item["ModifyIndex"]) is False  # stale index
        assert client.kv.put(key, None) is True and client.kv.get(key)[1]["Value"] is None
        assert client.kv.delete(key) is True and client.kv.get(key)[1] is None
    # the same view of one key, both ways
    key = "medic/test-light/%s" % uuid.uuid4().hex
    heavy.kv.put(key, "v")
    (li, litem), (hi, hitem) = both(pair, lambda c: c.kv.get(key, consistency="consistent"))
    assert int(li) == int(hi) and litem == hitem


def test_blocking_get_returns_on_a_change(pair):
    light, heavy = pair
    key = "medic/test-light/%s" % uuid.uuid4().hex
    index, _ = light.kv.get(key)
    threading.Timer(0.3, lambda: heavy.kv.put(key, "woken")).start()
    t0 = time.monotonic()
    _, item = light.kv.get(key, index=index, wait="3000ms")
    assert item and item["Value"] == b"woken" and time.monotonic() - t0 < 2.9


def test_sessions_and_the_lock_over_the_light_client(consul_agent, pair):
    light, heavy = pair
    sid = light.session.create(name="medic-test", behavior="release", ttl=10, lock_delay=0)
    info = heavy.session.info(sid)[1]
    assert info["Behavior"] == "release" and info["TTL"] == "10s" and info["LockDelay"] == 0
    assert light.session.renew(sid)["ID"] == sid
    key = "medic/test-light/%s" % uuid.uuid4().hex
    assert light.kv.put(key, "held", acquire=sid) is True
    assert heavy.kv.get(key)[1]["Session"] == sid
    assert light.session.destroy(sid) is True and light.session.renew(sid) is None
    assert heavy.kv.get(key)[1].get("Session") is None  # behavior=release
    # the service lock itself, taken with light clients, is seen held by py-consul's
    st = settings.resolve(consul_agent.addr)
    lk = lock.ServiceLock(consul_light.Client(st), None, "light-%s" % uuid.uuid4().hex,
                          renew_client=consul_light.Client(st))
    assert lk.acquire()
    try:
        other = lock.ServiceLock(heavy, None, lk.key.rsplit("/", 1)[1])
        assert not other.acquire() and other.holder()["operation"] == "heal"
    finally:
        lk.release()
    assert heavy.kv.get(lk.key)[1].get("Session") is None


def test_errors_are_consul_errors_without_the_token(consul_factory):
    agent = consul_factory()
    st = settings.resolve(agent.addr, token="s3cr3t-token-value")
    client = consul_light.Client(st)
    agent.stop()
    with pytest.raises(ConsulError) as e:
        client.kv.get("medic/x")
    assert "s3cr3t" not in str(e.value)


def test_consul_errors_failures_names_what_either_client_raises(consul_agent):
    """What `except consul_errors.failures()` catches: a refusal and an unreachable agent, from
    py-consul and from the light client alike; nothing else."""
    from consul_medic.handlers.consul import consul_errors
    from support import free_port

    st = settings.resolve(consul_agent.addr)
    too_big = "x" * (600 * 1024)  # over Consul's 512 KiB value limit: HTTP 413
    gone = settings.resolve("127.0.0.1:%d" % free_port(), timeout=1)
    raised = {}
    for make in (settings.make_client, consul_light.Client):
        for s, call in ((st, lambda c: c.kv.put("medic-test/too-big-%s" % uuid.uuid4().hex, too_big)),
                        (gone, lambda c: c.kv.get("medic-test/x"))):
            with pytest.raises(consul_errors.failures()) as e:
                call(make(s))
            raised[make, s is gone] = e.value
    # py-consul's own exceptions, not ConsulError: the tuple is what makes them caught
    assert type(raised[settings.make_client, False]).__module__ == "consul.exceptions"
    assert isinstance(raised[settings.make_client, True], OSError)  # requests' ConnectionError
    assert all(isinstance(raised[consul_light.Client, g], ConsulError) for g in (False, True))
    assert not isinstance(ValueError("x"), consul_errors.failures())
