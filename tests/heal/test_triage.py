"""Triage: a service is settled without a lock only when nothing about it is uncertain (pure)."""
from consul_medic.handlers.heal import decide, triage
from consul_medic.handlers.spec.spec import CheckPolicy, HealPolicy, Scale, Spec, CHECK_DEFAULTS, HEAL_DEFAULTS
from consul_medic.handlers.service import heal_model

NOW = 1_000_000.0
SPEC = Spec("www.example.com", 2, Scale("compose", "p", "/c.yml", "web"), CheckPolicy(**CHECK_DEFAULTS),
            HealPolicy(**dict(HEAL_DEFAULTS, grace=30.0)), {}, None, None, "/s.json", ())


def c(i, state="running", passing=True, started=NOW - 3600):
    return heal_model.Container("c%d" % i, "p-web-%d" % i, state, started, started, passing)


def obs(containers, remote=(), stale=0, unknown=()):
    return heal_model.Observation(tuple(containers), tuple(remote), stale, tuple(unknown))


def test_healthy_service_is_settled():
    assert triage.settled(SPEC, obs([c(1), c(2)]), heal_model.EMPTY_HISTORY, NOW)


def test_count_met_with_remote_instances_is_settled():
    assert triage.settled(SPEC, obs([c(1)], [heal_model.Remote("r", "host2", True)]), heal_model.EMPTY_HISTORY, NOW)


def test_anything_uncertain_goes_to_the_full_path():
    h = heal_model.EMPTY_HISTORY
    assert not triage.settled(SPEC, obs([c(1)]), h, NOW)                                   # short
    assert not triage.settled(SPEC, obs([c(1), c(2), c(3)]), h, NOW)                       # over
    assert not triage.settled(SPEC, obs([c(1), c(2, passing=False)], [heal_model.Remote("r", "h", True)]), h, NOW)
    assert not triage.settled(SPEC, obs([c(1), c(2), c(3, state="exited", passing=None)]), h, NOW)  # stopped
    assert not triage.settled(SPEC, obs([c(1), c(2)], stale=1), h, NOW)                    # Consul behind
    assert not triage.settled(SPEC, obs([c(1), c(2)], unknown=("odd",)), h, NOW)
    assert not triage.settled(SPEC, obs([c(1), c(2)]), None, NOW)                          # corrupt history


def test_an_unverified_last_action_goes_to_the_full_path():
    """The full path must record the verdict (and send the 'healed' event)."""
    h = heal_model.History((heal_model.Action(NOW - 5, "scale", 2, "started", 7),), 0.0, None, ())
    assert not triage.settled(SPEC, obs([c(1), c(2)]), h, NOW)


def test_a_circuit_transition_goes_to_the_full_path():
    """Triage mirrors decide(): whenever decide would record a transition, the full path runs."""
    for opened in (NOW - 10, NOW - 10_000):
        h = heal_model.History((), 0.0, opened, ())
        d = decide.decide(SPEC, obs([c(1), c(2)]), h, NOW)
        assert triage.settled(SPEC, obs([c(1), c(2)]), h, NOW) == (d.kind == "noop" and d.circuit is None)
    old = heal_model.History((), 0.0, NOW - 10_000, ())  # opened longer ago than the window
    assert decide.decide(SPEC, obs([c(1), c(2)]), old, NOW).circuit == "close"
    assert not triage.settled(SPEC, obs([c(1), c(2)]), old, NOW)


def test_the_prefetched_reads_are_the_reads_and_are_used_once(consul_agent):
    """Real agent behind a counting proxy: the prefetch makes triage's two reads, split uses them
    (no read of its own), a second take or other settings read for themselves."""
    import pytest
    import support_check as sc
    from consul_medic.handlers.consul import settings
    from consul_medic.handlers.core.errors import ConsulError
    proxy = sc.CountingProxy("127.0.0.1", consul_agent.ports["http"])
    try:
        st = settings.resolve(proxy.addr)
        pf = triage.Prefetch(st, "default")
        nodes, hists = pf.take(st)
        # (only Consul API paths: the shared agent's HTTP checks of old containers may hit a reused port)
        assert [r[1].split("?")[0] for r in proxy.requests if r[1].startswith("/v1/")] == [
            "/v1/internal/ui/nodes", "/v1/kv/medic/default/history/"]
        assert any(n.get("Node") == consul_agent.node for n in nodes) and isinstance(hists, dict)
        assert pf.take(st) is None  # taken once: a later group reads fresh
        assert triage.Prefetch(st, "default").take(settings.resolve(consul_agent.addr)) is None  # another address
    finally:
        proxy.close()
    dead = settings.resolve("127.0.0.1:1", timeout=1)
    with pytest.raises(ConsulError):
        triage.Prefetch(dead, "default").take(dead)  # the thread's failure is the caller's, as a direct read's
