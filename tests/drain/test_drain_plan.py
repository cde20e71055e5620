"""drain_plan: literal host and service states in, steps out (pure)."""
from consul_medic.handlers.drain.drain_plan import HostState, ServiceState, plan_drain, plan_undo
from consul_medic.handlers.replace.rollout_plan import Box

IMG = "sha256:img"


def box(name, passing=True, state="running"):
    return Box("id-" + name, name, IMG, state, passing, False, False)


def hosts(*nodes, down=()):
    return [HostState(n, n not in down) for n in nodes]


def svc(name, declared, **per_node):
    return ServiceState(name, declared, tuple((node, box("%s-%s-%d" % (name, node, i)))
                                              for node, k in per_node.items() for i in range(k)))


def kinds(p):
    return [(s.kind, s.service, s.node, s.count) for s in p.steps]


def test_drain_host_with_three_replacements_spread_over_two_hosts():
    p = plan_drain("h1", hosts("h1", "h2", "h3"), [svc("web", 3, h1=3)])
    assert p.kind == "drain"
    assert kinds(p) == [("start", "web", "h2", 2), ("start", "web", "h3", 1), ("maintenance", None, "h1", 0),
                        ("stop", "web", "h1", 3)]
    assert p.steps[-1].containers == ("id-web-h1-0", "id-web-h1-1", "id-web-h1-2")


def test_replacements_only_for_what_the_others_do_not_already_carry():
    p = plan_drain("h1", hosts("h1", "h2", "h3"), [svc("web", 4, h1=2, h2=1, h3=1)])
    assert kinds(p) == [("start", "web", "h2", 1), ("start", "web", "h3", 1), ("maintenance", None, "h1", 0),
                        ("stop", "web", "h1", 2)]


def test_surplus_on_the_host_needs_no_replacement():
    p = plan_drain("h1", hosts("h1", "h2"), [svc("web", 2, h1=1, h2=2)])
    assert kinds(p) == [("maintenance", None, "h1", 0), ("stop", "web", "h1", 1)]


def test_lost_or_maintained_hosts_get_nothing():
    p = plan_drain("h1", hosts("h1", "h2", "h3", down=("h3",)), [svc("web", 3, h1=3)])
    assert [s.node for s in p.steps if s.kind == "start"] == ["h2"] and p.steps[0].count == 3


def test_no_other_host_refuses():
    p = plan_drain("h1", hosts("h1", "h2", down=("h2",)), [svc("web", 3, h1=3)])
    assert p.kind == "refuse" and "no other eligible host" in p.reason and p.steps == ()


def test_empty_host_just_goes_into_maintenance():
    p = plan_drain("h1", hosts("h1", "h2"), [svc("web", 3, h2=3)])
    assert kinds(p) == [("maintenance", None, "h1", 0)]


def test_unknown_host_refused():
    assert plan_drain("nope", hosts("h1", "h2"), []).kind == "refuse"


def test_several_services_start_everything_before_any_stop():
    p = plan_drain("h1", hosts("h1", "h2"), [svc("b", 2, h1=1, h2=1), svc("a", 1, h1=1)])
    ks = [s.kind for s in p.steps]
    assert ks == ["start", "start", "maintenance", "stop", "stop"]
    assert [s.service for s in p.steps if s.kind == "stop"] == ["a", "b"]


def test_undo_without_rebalance_only_leaves_maintenance():
    p = plan_undo("h1", hosts("h1", "h2", "h3"), [svc("web", 3, h2=2, h3=1)])
    assert kinds(p) == [("unmaintenance", None, "h1", 0)]


def test_undo_with_rebalance_moves_the_fair_share_back():
    p = plan_undo("h1", hosts("h1", "h2", "h3"), [svc("web", 3, h2=2, h3=1)], rebalance=True)
    assert kinds(p) == [("unmaintenance", None, "h1", 0), ("start", "web", "h1", 1), ("retire", "web", "h2", 1)]
    assert p.steps[2].containers == ("id-web-h2-0",)


def test_undo_rebalance_of_a_balanced_service_does_nothing():
    p = plan_undo("h1", hosts("h1", "h2"), [svc("web", 2, h1=1, h2=1)], rebalance=True)
    assert kinds(p) == [("unmaintenance", None, "h1", 0)]
