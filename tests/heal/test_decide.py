"""decide(): pure, literal data only. The arithmetic, every guard, and properties over random states."""
import pytest
from hypothesis import given, settings, strategies as st

from consul_medic.handlers.service import history as hist
from consul_medic.handlers.heal.decide import backoff_delay, consecutive_failures, decide
from consul_medic.handlers.service.heal_model import Action, Container, Decision, EMPTY_HISTORY, History, Observation, Remote
from consul_medic.handlers.spec.spec import HEAL_DEFAULTS, CHECK_DEFAULTS, CheckPolicy, HealPolicy, Scale, Spec

NOW = 1_000_000.0


def mkspec(instances=3, **heal):
    h = dict(HEAL_DEFAULTS, grace=30.0, cooldown=10.0, backoff_base=10.0, backoff_max=300.0,
             max_attempts=3, window=600.0)
    h.update(heal)
    return Spec("www", instances, Scale("compose", "p", "/c.yml", "web"), CheckPolicy(**CHECK_DEFAULTS),
                HealPolicy(**h), {}, None, None, "/s/www.json", ())


def c(name, state="running", age=100.0, passing=True):
    return Container("id-" + name, name, state, NOW - age - 1, NOW - age if state != "created" else 0.0, passing)


def obs(*containers, remote=(), unknown=()):
    return Observation(tuple(containers), tuple(remote), 0, tuple(unknown))


def up(n, passing=True, age=100.0):
    return [c("web-%d" % i, passing=passing, age=age) for i in range(1, n + 1)]


def act(age, result="started", target=3, kind="scale"):
    return Action(NOW - age, kind, target, result, None)


def H(*actions, epoch=0.0, circuit=None, suspects=()):
    return History(tuple(actions), epoch, circuit, tuple(suspects))


# -- the arithmetic -----------------------------------------------------------------------
def test_count_met_is_noop():
    d = decide(mkspec(), obs(*up(3)), EMPTY_HISTORY, NOW)
    assert d.kind == "noop" and d.target is None and "3/3 passing" in d.reason


def test_one_exited_heals_to_declared_and_lets_compose_restart_it():
    d = decide(mkspec(), obs(*up(2), c("web-3", "exited", passing=None)), EMPTY_HISTORY, NOW)
    assert (d.kind, d.target, d.remove) == ("heal", 3, ())  # compose restarts web-3 at --scale 3
    assert d.counts.stopped == 1 and d.counts.has == 2


def test_surplus_stopped_containers_are_removed_first():
    # compose would count 2 running + 3 stopped = 5 > 3 and remove the highest-numbered, running or not
    cs = up(2) + [c("web-3", "exited", age=50, passing=False), c("web-4", "dead", age=10, passing=None),
                  c("web-5", "exited", age=5, passing=None)]
    d = decide(mkspec(), obs(*cs), EMPTY_HISTORY, NOW)
    assert d.kind == "heal" and d.target == 3
    assert d.remove == ("id-web-4", "id-web-3")  # dead first, then the oldest exited


def test_four_declared_three_here_one_remote_critical():
    d = decide(mkspec(4), obs(*up(3), remote=[Remote("lost:web:80", "lost", False, 0.0, True)]), EMPTY_HISTORY, NOW)
    assert (d.kind, d.target) == ("heal", 4)  # its node is lost (serfHealth): made up at once
    assert d.counts.remote_passing == 0 and d.counts.passing == 3


def test_remote_passing_reduces_local_target():
    d = decide(mkspec(4), obs(*up(2), remote=[Remote("r1", "n2", True)]), EMPTY_HISTORY, NOW)
    assert (d.kind, d.target) == ("heal", 3)


def test_pending_is_not_missing():
    d = decide(mkspec(), obs(*up(2), c("web-3", age=2.0, passing=None)), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and "1 pending" in d.reason and d.counts.pending == 1


def test_pending_registered_but_critical_is_still_pending_within_grace():
    d = decide(mkspec(), obs(*up(2), c("web-3", age=2.0, passing=False)), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and d.counts.pending == 1


def test_just_created_container_is_pending():
    d = decide(mkspec(), obs(*up(2), c("web-3", "created", age=1.0, passing=None)), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and d.counts.pending == 1


def test_failing_past_grace_is_not_replaced_without_opt_in():
    d = decide(mkspec(), obs(*up(2), c("web-3", age=60.0, passing=False)), EMPTY_HISTORY, NOW)
    assert d.kind == "warn" and "replace_failing is off" in d.reason and d.target is None


def test_failing_replaced_one_at_a_time_with_opt_in():
    cs = up(1) + [c("web-2", age=60.0, passing=False), c("web-3", age=90.0, passing=None)]
    seen = [("id-web-2", NOW - 40), ("id-web-3", NOW - 35)]
    d = decide(mkspec(replace_failing=True), obs(*cs), H(suspects=seen), NOW)
    assert d.kind == "heal" and d.replace == "id-web-3" and d.target == 3  # the oldest failing one
    assert d.suspects == tuple(seen)


def test_failing_first_seen_is_only_suspected():
    # an agent restart starts every check critical: a long-running container looks failing
    # for a moment. First sighting: remember, hold; replace only after a whole grace period.
    cs = up(2) + [c("web-3", age=600.0, passing=False)]
    d = decide(mkspec(replace_failing=True), obs(*cs), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and "under watch" in d.reason and d.suspects == (("id-web-3", NOW),)
    d = decide(mkspec(replace_failing=True), obs(*cs), H(suspects=[("id-web-3", NOW - 10)]), NOW)
    assert d.kind == "hold"
    d = decide(mkspec(replace_failing=True), obs(*cs), H(suspects=[("id-web-3", NOW - 31)]), NOW)
    assert d.kind == "heal" and d.replace == "id-web-3"
    # once it passes again it is forgotten
    d = decide(mkspec(replace_failing=True), obs(*up(3)), H(suspects=[("id-web-3", NOW - 31)]), NOW)
    assert d.kind == "noop" and d.suspects == ()


def test_replace_waits_for_cooldown_of_an_unsettled_action():
    cs = up(2) + [c("web-3", age=60.0, passing=False)]
    d = decide(mkspec(replace_failing=True), obs(*cs), H(act(5, "started"), suspects=[("id-web-3", NOW - 50)]), NOW)
    assert d.kind == "hold" and "cooldown" in d.reason and d.until == NOW - 5 + 10.0


def test_dying_container_is_neither_present_nor_missing():
    d = decide(mkspec(), obs(*up(2), c("web-3", "removing", passing=False)), EMPTY_HISTORY, NOW)
    assert d.kind == "heal" and d.target == 3 and d.counts.dying == 1 and d.counts.has == 2


def test_local_instance_passing_in_consul_but_exited_in_engine_is_not_counted():
    # Consul has not noticed the death yet: the engine is the authority on its containers
    d = decide(mkspec(), obs(*up(2), c("web-3", "exited", passing=True)), EMPTY_HISTORY, NOW)
    assert d.kind == "heal" and d.counts.passing == 2


def test_more_than_declared_warns_never_scales_down_by_default():
    d = decide(mkspec(), obs(*up(5)), EMPTY_HISTORY, NOW)
    assert d.kind == "warn" and d.target is None


def test_scale_down_only_when_opted_in():
    d = decide(mkspec(scale_down=True), obs(*up(5)), EMPTY_HISTORY, NOW)
    assert (d.kind, d.target) == ("heal", 3)
    d = decide(mkspec(scale_down=True), obs(*up(5), c("web-9", age=1, passing=None)), EMPTY_HISTORY, NOW)
    assert d.kind == "warn"  # never while something is pending


def test_max_instances_caps_target():
    d = decide(mkspec(5, max_instances=5), obs(*up(1), remote=[Remote("r", "n", True)] * 3), EMPTY_HISTORY, NOW)
    assert d.target == 2


def test_unknown_state_holds():
    d = decide(mkspec(), obs(*up(1), unknown=["container x in state 'weird'"]), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and "unknown" in d.reason


def test_heal_disabled_holds():
    d = decide(mkspec(enabled=False), obs(*up(1)), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and "disabled" in d.reason


def test_nothing_to_add_here():
    # only remote instances are missing but the target is already met here (remote passing 0, target 3):
    # a stale remote instance can never make us exceed what is declared
    d = decide(mkspec(3), obs(*up(3), remote=[Remote("r", "n", False)]), EMPTY_HISTORY, NOW)
    assert d.kind == "noop"


# -- guards: cooldown, backoff, settling, circuit ------------------------------------------------
def test_cooldown_after_an_unsettled_action_ends_at_a_known_time():
    # the last action's container (age 100: not started by it) is not passing: not settled
    d = decide(mkspec(), obs(*up(2)), H(act(3, "started")), NOW)
    assert d.kind == "hold" and "cooldown" in d.reason and d.until == NOW - 3 + 10.0


def test_cooldown_after_a_failed_action_too():
    d = decide(mkspec(backoff_base=1.0), obs(*up(2)), H(act(3, "failed")), NOW)
    assert d.kind == "hold" and "cooldown" in d.reason and d.until == NOW + 7


def test_a_restored_action_does_not_hold_a_new_loss():
    """Issue 10: a second loss 1 s after a restored heal is healed at once (no cooldown)."""
    d = decide(mkspec(), obs(*up(2)), H(act(1, "restored")), NOW)
    assert (d.kind, d.target, d.until) == ("heal", 3, None)
    # the same, with the verdict reached in this very run: the restarted web-3 passes, web-1 is gone
    cs = [c("web-1", "exited", age=100, passing=None), c("web-2"), c("web-3", age=0.5)]
    d = decide(mkspec(), obs(*cs), H(act(1)), NOW)
    assert d.settle == "restored" and d.kind == "heal" and d.target == 3


def test_a_killed_restart_is_a_loss_not_a_failed_heal():
    """The container medic just restarted is killed from outside (exit 137): verdict 'lost', no
    backoff step, no cooldown; the loss is healed at once."""
    killed = c("web-3", "exited", age=1, passing=None)._replace(killed=True)
    d = decide(mkspec(), obs(*up(2), killed), H(act(2)), NOW)
    assert d.settle == "lost" and d.kind == "heal" and d.target == 3
    assert consecutive_failures((act(50, "failed"), act(2, "lost")), 0) == 1  # neutral
    # a crash of its own (exit 1, or OOM: killed=False) stays a failure
    crashed = c("web-3", "exited", age=1, passing=None)
    d = decide(mkspec(), obs(*up(2), crashed), H(act(2)), NOW)
    assert d.settle == "failed" and d.kind == "hold" and "backoff" in d.reason and d.until == NOW - 2 + 10.0


def test_every_hold_that_ends_by_itself_says_when():
    s = mkspec(replace_failing=True)
    d = decide(s, obs(*up(2), c("web-3", age=2.0, passing=None)), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and d.until == NOW - 2.0 + 30.0  # pending: grace after its start
    d = decide(s, obs(*up(2), c("web-3", age=60, passing=False)), H(suspects=[("id-web-3", NOW - 10)]), NOW)
    assert d.kind == "hold" and "under watch" in d.reason and d.until == NOW - 10 + 30.0
    h = H(act(300, "failed"), act(200, "failed"), act(100, "failed"), circuit=NOW - 50)
    d = decide(mkspec(max_attempts=3), obs(*up(1)), h, NOW)
    assert d.kind == "hold" and d.until == NOW - 50 + 600.0 and d.suspended
    d = decide(mkspec(enabled=False), obs(*up(2)), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and d.until is None and not d.suspended


# -- pending across hosts (Meta medic_started) ---------------------------------------------------
def test_remote_registered_not_passing_started_within_grace_is_pending():
    """Another host's healer just added a container: registered, not passing yet. This host must
    not add one too."""
    fresh = Remote("h2:web-4:80", "h2", False, NOW - 3.0)
    d = decide(mkspec(4), obs(*up(3), remote=[fresh]), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and "1 pending" in d.reason and d.counts.remote_pending == 1
    assert d.counts.target == 3 and d.until == NOW - 3.0 + 30.0


def test_remote_not_passing_past_grace_or_without_start_time_counts_for_nothing():
    seen_long_ago = H(suspects=[("h2:web-4:80", NOW - 31.0)])  # seen failing for a whole grace
    for r in (Remote("h2:web-4:80", "h2", False, NOW - 31.0), Remote("h2:web-4:80", "h2", False, 0.0),
              Remote("h2:web-4:80", "h2", False)):
        d = decide(mkspec(4), obs(*up(3), remote=[r]), seen_long_ago, NOW)
        assert (d.kind, d.target, d.counts.remote_pending) == ("heal", 4, 0), r


def test_two_healers_one_shortfall_one_container():
    """Host A healed first (its new container is registered on A, not passing yet); host B then
    observes: A's container is remote pending for B, so B holds."""
    spec = mkspec(2)
    a_new = Remote("a:web-2:80", "a", False, NOW - 0.5)
    d_b = decide(spec, obs(c("b-web-1"), remote=[a_new]), EMPTY_HISTORY, NOW)
    assert d_b.kind == "hold" and d_b.counts.target == 1 and d_b.counts.has == 1


def test_medic_started_is_parsed_defensively():
    from consul_medic.handlers.service.observe import meta_started
    assert meta_started({"medic_started": "1700000000.5"}) == 1700000000.5
    for bad in ({}, {"medic_started": "x"}, {"medic_started": "nan"}, {"medic_started": "inf"},
                {"medic_started": "-5"}, {"medic_started": "1e30"}, None, {"medic_started": ""}):
        assert meta_started(bad) == 0.0, bad


def test_backoff_doubles_to_cap():
    s = mkspec(backoff_base=10.0, backoff_max=60.0)
    assert [backoff_delay(s, n) for n in range(6)] == [0.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_backoff_followed_after_failures():
    s = mkspec(max_attempts=10)
    h = H(act(100, "failed"), act(15, "failed"))  # 2 consecutive failures -> 20 s
    d = decide(s, obs(*up(2)), h, NOW)
    assert d.kind == "hold" and "backoff" in d.reason
    d = decide(s, obs(*up(2)), H(act(100, "failed"), act(25, "failed")), NOW)
    assert d.kind == "heal"


def test_restored_resets_backoff():
    assert consecutive_failures((act(50, "failed"), act(40, "restored"), act(30, "failed")), 0) == 1


def test_settle_restored():
    d = decide(mkspec(), obs(*up(3)), H(act(5)), NOW)
    assert d.kind == "noop" and d.settle == "restored"


def test_settle_failed_after_grace():
    d = decide(mkspec(), obs(*up(2), c("web-3", age=40, passing=False)), H(act(40)), NOW)
    assert d.settle == "failed"


def test_settle_failed_early_when_started_container_is_gone():
    d = decide(mkspec(), obs(*up(2), c("web-3", "exited", age=1, passing=None)), H(act(2)), NOW)
    assert d.settle == "failed" and d.kind == "hold" and "backoff" in d.reason


def test_restored_then_a_new_loss_is_not_a_failure_of_the_last_action():
    # the heal 5 s ago restarted web-3 (now passing); web-1 died since: a new event
    cs = [c("web-1", "exited", age=100, passing=None), c("web-2"), c("web-3", age=4)]
    d = decide(mkspec(cooldown=1.0), obs(*cs), H(act(5)), NOW)
    assert d.settle == "restored" and d.kind == "heal" and d.target == 3


def test_unsettled_while_pending():
    d = decide(mkspec(), obs(*up(2), c("web-3", age=2, passing=None)), H(act(2)), NOW)
    assert d.settle is None and d.kind == "hold"


def test_circuit_opens_after_max_attempts_in_window():
    h = H(act(300, "failed"), act(200, "failed"), act(90))  # the 3rd settles as failed now
    d = decide(mkspec(max_attempts=3), obs(*up(1), c("web-2", "exited", passing=None)), h, NOW)
    assert d.settle == "failed" and d.circuit == "open" and d.kind == "hold"


def test_failures_outside_window_do_not_count():
    h = H(act(900, "failed"), act(800, "failed"), act(100))
    d = decide(mkspec(max_attempts=3), obs(*up(2)), h, NOW)
    assert d.circuit is None and d.kind == "heal"


def test_circuit_open_holds_until_window_passes():
    h = H(act(300, "failed"), act(200, "failed"), act(100, "failed"), circuit=NOW - 50)
    d = decide(mkspec(max_attempts=3), obs(*up(1)), h, NOW)
    assert d.kind == "hold" and "circuit open" in d.reason and "--reset www" in d.reason
    d = decide(mkspec(max_attempts=3, window=40.0), obs(*up(1)), h, NOW)
    assert d.circuit == "close" and d.kind == "heal"  # window passed: failures before it forgotten


def test_reset_closes_circuit_and_clears_backoff():
    h = H(act(30, "failed"), act(20, "failed"), act(11, "failed"), circuit=NOW - 10)
    h2 = hist.reset(h, NOW - 1)
    d = decide(mkspec(max_attempts=3), obs(*up(1)), h2, NOW)
    assert d.kind == "heal" and d.circuit is None


def test_history_apply_and_bounds():
    h = hist.add_action(EMPTY_HISTORY, NOW, "scale", 3, "started", 7)
    d = Decision("hold", None, "x", None, settle="failed", circuit="open")
    h2 = hist.apply(h, d, NOW + 1)
    assert h2.actions[-1].result == "failed" and h2.circuit == NOW + 1
    for i in range(200):
        h2 = hist.add_action(h2, NOW + i, "scale", 3, "failed", None)
    assert len(h2.actions) == hist.MAX_ACTIONS
    assert hist.parse(hist.dump(h2)) == h2


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"v": 2}', b'{"v": 1, "actions": [{"time": "x"}]}'])
def test_corrupt_history_is_an_error_not_a_reset(raw):
    from consul_medic.handlers.core.errors import ConsulError
    with pytest.raises(ConsulError, match="corrupt history"):
        hist.parse(raw)


# -- properties ------------------------------------------------------------------------------
STATES = ["running", "restarting", "paused", "created", "exited", "dead", "removing"]
containers_st = st.lists(st.builds(
    lambda i, state, age, passing: Container("id%d" % i, "web-%d" % i, state, NOW - age - 1, NOW - age, passing),
    st.integers(0, 10**6), st.sampled_from(STATES), st.floats(0, 10_000), st.sampled_from([True, False, None])),
    max_size=12, unique_by=lambda c: c.id)
remote_st = st.lists(st.builds(Remote, st.text(max_size=5), st.text(max_size=5), st.booleans()), max_size=6)
actions_st = st.lists(st.builds(lambda age, r, t: Action(NOW - age, "scale", t, r, None),
                                st.floats(0, 2000), st.sampled_from(["started", "restored", "failed"]),
                                st.integers(0, 20)), max_size=8).map(lambda a: tuple(sorted(a, key=lambda x: x.time)))
history_st = st.builds(History, actions_st, st.sampled_from([0.0, NOW - 500]),
                       st.sampled_from([None, NOW - 10, NOW - 5000]),
                       st.lists(st.tuples(st.integers(0, 10**6).map(lambda i: "id%d" % i),
                                          st.floats(NOW - 100, NOW)), max_size=5, unique_by=lambda t: t[0])
                       .map(lambda x: tuple(sorted(x))))
spec_st = st.builds(lambda n, sd, rf, ma: mkspec(n, scale_down=sd, replace_failing=rf, max_attempts=ma),
                    st.integers(1, 8), st.booleans(), st.booleans(), st.integers(1, 5))


@settings(max_examples=int(__import__("os").environ.get("HEAL_PROP_EXAMPLES", "400")), deadline=None)
@given(spec_st, containers_st, remote_st, history_st, st.lists(st.text(min_size=1, max_size=5), max_size=2))
def test_properties(spec, cs, remote, history, unknown):
    o = Observation(tuple(cs), tuple(remote), 0, tuple(unknown))
    d = decide(spec, o, history, NOW)
    assert d.kind in ("noop", "hold", "heal", "warn") and d.reason
    assert d == decide(spec, o, history, NOW)  # pure
    k = d.counts
    if unknown:
        assert d.kind != "heal"  # never heal on unknown
    if d.kind == "heal":
        kept = k.has - (1 if d.replace else 0)  # what runs here after a replacement's removal
        if d.replace is None:
            assert d.target == k.target <= spec.instances  # never above what is declared
        else:
            assert d.target <= max(k.target, kept)  # replacing never adds beyond declared
        if not spec.heal.scale_down:
            assert d.target >= kept  # never below what runs here unless opted in
            assert k.passing < k.declared
        if d.replace is None:
            assert d.target > k.has or spec.heal.scale_down
        else:
            assert spec.heal.replace_failing
            assert NOW - dict(history.suspects)[d.replace] >= spec.heal.grace  # confirmed failing only
        # after removals, compose's count (present + stopped left) never exceeds the target
        assert kept + k.stopped - len(d.remove) <= max(d.target, kept)
        assert history.circuit is None or NOW >= history.circuit + spec.heal.window
        if history.actions and d.settle not in ("restored", "lost") \
                and history.actions[-1].result not in ("restored", "lost"):
            assert NOW - history.actions[-1].time >= spec.heal.cooldown  # cooldown guards an unsettled action
    if d.kind == "hold" and d.until is not None:
        assert d.until > NOW or d.suspended or "backoff" in d.reason or "cooldown" in d.reason
    if d.circuit == "open":
        assert d.kind == "hold"
    if d.target is not None:
        assert d.kind == "heal"
