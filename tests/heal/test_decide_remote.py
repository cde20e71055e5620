"""decide() across hosts: a remote instance failing on a live node is its own host's business
first (literal data). Found by `make chaos` (agent_restart): a Consul agent restart starts every
check of that host critical until its first probe; the other hosts made up for those instances
at once and the service ran 8 of 6 (scale_down off) until someone looked."""
from consul_medic.handlers.heal.decide import decide
from consul_medic.handlers.service.heal_model import EMPTY_HISTORY, Remote
from consul_medic.handlers.service.heal_counts import suspects as remember

from test_decide import H, NOW, c, mkspec, obs, up

GRACE = 30.0  # mkspec's


def restarted_agent(node="h1", n=2, passing=False):
    """Instances of another host whose agent just restarted: registered, checks critical, old start."""
    return [Remote("%s:web-%d:80" % (node, i), node, passing, NOW - 3600.0) for i in range(1, n + 1)]


def test_instances_critical_on_a_live_node_are_watched_not_made_up():
    d = decide(mkspec(6), obs(*up(2), remote=restarted_agent() + restarted_agent("h2", passing=True)),
               EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and d.target is None, d.reason
    assert "2 instance(s) fail on other live hosts (node h1)" in d.reason and "2 failing elsewhere" in d.reason
    assert d.counts.remote_watched == 2 and d.counts.target == 2 and d.counts.has == 2
    assert d.until == NOW + GRACE  # the deferred look that makes them up if they still fail then
    assert dict(d.suspects) == {"h1:web-1:80": NOW, "h1:web-2:80": NOW}  # remembered (history)


def test_the_watch_keeps_its_first_sighting_and_makes_up_after_a_whole_grace():
    remote = restarted_agent() + restarted_agent("h2", passing=True)
    early = H(suspects=[("h1:web-1:80", NOW - 10.0), ("h1:web-2:80", NOW - 10.0)])
    d = decide(mkspec(6), obs(*up(2), remote=remote), early, NOW)
    assert d.kind == "hold" and d.until == NOW - 10.0 + GRACE and dict(d.suspects)["h1:web-1:80"] == NOW - 10.0
    late = H(suspects=[("h1:web-1:80", NOW - GRACE), ("h1:web-2:80", NOW - 10.0)])
    d = decide(mkspec(6), obs(*up(2), remote=remote), late, NOW)
    assert (d.kind, d.target) == ("heal", 3), d.reason  # one seen failing for a grace: made up; one still watched


def test_lost_nodes_and_maintenance_are_made_up_at_once():
    lost = [Remote("h1:web-%d:80" % i, "h1", False, 0.0, True) for i in (1, 2)]
    d = decide(mkspec(6), obs(*up(2), remote=lost + restarted_agent("h2", passing=True)), EMPTY_HISTORY, NOW)
    assert (d.kind, d.target) == ("heal", 4) and d.counts.remote_watched == 0 and d.suspects == ()


def test_a_watched_instance_that_passes_again_is_forgotten_and_nothing_is_done():
    prior = H(suspects=[("h1:web-1:80", NOW - 5.0), ("h1:web-2:80", NOW - 5.0)])
    d = decide(mkspec(6), obs(*up(2), remote=restarted_agent(passing=True) + restarted_agent("h2", passing=True)),
               prior, NOW)
    assert d.kind == "noop" and d.suspects == ()


def test_another_host_just_added_one_is_pending_not_watched():
    fresh = Remote("h1:web-3:80", "h1", False, NOW - 2.0)
    d = decide(mkspec(3), obs(*up(2), remote=[fresh]), EMPTY_HISTORY, NOW)
    assert d.kind == "hold" and d.counts.remote_pending == 1 and d.counts.remote_watched == 0 and d.suspects == ()


def test_hosts_sharing_one_history_keep_each_others_first_sightings():
    """Host A remembers its failing container (by container ID); host B sees it as a remote
    instance (by instance ID). Neither may erase the other's entry, or a clock restarts forever."""
    spec = mkspec(3)
    a_failing = c("a-web-1", passing=False, age=100.0)
    a_view = obs(a_failing, *up(1))
    hist = H(suspects=[("h1:a-web-1:80", NOW - 8.0)])  # written by host B
    d_a = decide(spec, a_view, hist, NOW)
    assert dict(d_a.suspects) == {"id-a-web-1": NOW, "h1:a-web-1:80": NOW - 8.0}
    b_view = obs(*up(1), remote=[Remote("h1:a-web-1:80", "h1", False, NOW - 100.0),
                                 Remote("h1:a-web-2:80", "h1", True)])
    d_b = decide(spec, b_view, H(suspects=d_a.suspects), NOW + 1.0)
    assert dict(d_b.suspects) == {"id-a-web-1": NOW, "h1:a-web-1:80": NOW - 8.0}
    # an entry nobody can judge any more (the container was replaced and removed) ages out after 2 grace
    gone = remember(spec, obs(*up(3)), {"id-old": NOW - 2 * GRACE - 1.0, "id-young": NOW - 1.0}, [], NOW)
    assert dict(gone) == {"id-young": NOW - 1.0}


def test_a_local_replacement_is_not_delayed_by_a_watched_remote():
    spec = mkspec(4, replace_failing=True)
    sick = c("web-1", passing=False, age=100.0)
    hist = H(suspects=[("id-web-1", NOW - GRACE - 1.0)])
    d = decide(spec, obs(sick, *up(2), remote=restarted_agent(n=1)), hist, NOW)
    assert d.kind == "heal" and d.replace == "id-web-1", d.reason
