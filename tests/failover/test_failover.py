"""medic-failover's pure decision, with literal data."""
from consul_medic.handlers.failover.failover_decide import Node, Probe, decide

M = Probe("master", 100, None, None, None, "R1")


def rep(offset, host="10.0.0.1", port=7001, link="up", replid="R1"):
    return Probe("slave", offset, host, port, link, replid)


def node(i, port, tag, probe, passing=True):
    return Node(i, "10.0.0.1", port, tag, passing, probe)


def test_healthy_pair_is_a_noop():
    d = decide([node("a", 7001, "master", M), node("b", 7002, "slave", rep(100))],
               {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"})
    assert (d.action, d.master, d.promote, d.retag_slave, d.replicate, d.record, d.alert) == (
        "noop", "a", None, (), (), None, False)
    # a record without the master's replication ID (written before it was kept) is completed
    d = decide([node("a", 7001, "master", M), node("b", 7002, "slave", rep(100))],
               {"master": "a", "address": "10.0.0.1:7001"})
    assert d.action == "repair" and d.record == {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"}


def test_master_lost_promotes_the_replica_with_the_highest_offset():
    nodes = [node("b", 7002, "slave", rep(90, link="down")), node("c", 7003, "slave", rep(95, link="down")),
             node("d", 7004, "slave", rep(95, link="down"))]
    d = decide(nodes, {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"})
    assert d.action == "failover" and d.master == "c" and d.promote == "c"   # tie 95/95 -> lowest id
    assert d.retag_slave == ("a",)                                          # the lost master, in KV
    assert d.replicate == ("b", "d")
    assert d.record == {"master": "c", "address": "10.0.0.1:7003", "replid": None}  # failover_core: the new ID
    assert d.alert and "master a lost: promote replica c (offset 95" in d.reason


def test_failing_or_unreachable_replicas_are_not_candidates():
    nodes = [node("b", 7002, "slave", rep(99), passing=False), node("c", 7003, "slave", None),
             node("d", 7004, "slave", rep(10))]
    d = decide(nodes, {"master": "a", "replid": "R1"})
    assert d.master == "d"


def test_no_healthy_replica_does_nothing_but_alert():
    # a fresh empty instance (heal's replacement) is standalone: never promoted over lost data
    nodes = [node("b", 7002, "slave", rep(99), passing=False),
             node("n", 7005, "slave", Probe("master", 0, None, None, None))]
    d = decide(nodes, {"master": "a"})
    assert (d.action, d.master, d.promote, d.retag_slave, d.replicate, d.record, d.alert) == (
        "hold", None, None, (), (), None, True)
    assert d.reason == "master a lost and no healthy replica (n standalone): nothing promoted"


def test_returning_old_master_is_tagged_slave_and_made_a_replica():
    # the old master comes back: it still believes it is master, with its own data
    nodes = [node("a", 7001, "slave", Probe("master", 80, None, None, None)),
             node("c", 7003, "master", M), node("b", 7002, "slave", rep(100, port=7003))]
    d = decide(nodes, {"master": "c", "address": "10.0.0.1:7003"})
    assert d.action == "repair" and d.master == "c" and d.promote is None
    assert d.replicate == ("a",) and d.retag_slave == ()


def test_old_master_coming_back_still_tagged_master_is_demoted():
    nodes = [node("a", 7001, "master", Probe("master", 80, None, None, None)),
             node("c", 7003, "master", Probe("master", 120, None, None, None))]
    d = decide(nodes, {"master": "c", "address": "10.0.0.1:7003"})
    assert d.action == "split_brain" and d.master == "c"
    assert d.retag_slave == ("a",) and d.replicate == ("a",) and d.alert


def test_split_brain_without_record_keeps_the_highest_offset():
    nodes = [node("a", 7001, "master", Probe("master", 80, None, None, None)),
             node("b", 7002, "master", Probe("master", 120, None, None, None))]
    d = decide(nodes, None)
    assert d.master == "b" and d.retag_slave == ("a",)


def test_master_restarted_empty_is_replaced_before_replicas_resync():
    nodes = [node("a", 7001, "master", Probe("master", 0, None, None, None, "R2")),
             node("b", 7002, "slave", rep(500, link="down")), node("c", 7003, "slave", rep(480, link="down"))]
    d = decide(nodes, {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"})
    assert d.action == "failover" and d.master == "b" and d.promote == "b"
    assert d.retag_slave == ("a",) and d.replicate == ("a", "c") and d.alert
    assert "master a came back with offset 0, behind replica b at 500" in d.reason


def test_a_replica_probed_after_a_busy_master_is_not_a_restart():
    # same replication ID: the replica's offset was read a moment after the master's
    nodes = [node("a", 7001, "master", Probe("master", 100, None, None, None, "R1")),
             node("b", 7002, "slave", rep(130))]
    d = decide(nodes, {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"})
    assert d.action == "noop" and d.master == "a"


def test_a_failing_instance_tagged_master_is_retagged_too():
    nodes = [node("a", 7001, "master", None, passing=False), node("c", 7003, "master", M)]
    d = decide(nodes, {"master": "c", "address": "10.0.0.1:7003"})
    assert d.master == "c" and d.retag_slave == ("a",) and d.replicate == ()


def test_bootstrap_without_record_picks_highest_offset_then_lowest_id():
    nodes = [node("b", 7002, "slave", Probe("master", 0, None, None, None)),
             node("a", 7001, "slave", Probe("master", 0, None, None, None))]
    d = decide(nodes, None)
    assert d.action == "bootstrap" and d.master == "a" and d.promote is None
    assert d.replicate == ("b",) and not d.alert
    assert d.record == {"master": "a", "address": "10.0.0.1:7001", "replid": None}


def test_new_untagged_instance_becomes_tagged_replica():
    nodes = [node("a", 7001, "master", M), node("n", 7009, None, Probe("master", 0, None, None, None))]
    d = decide(nodes, {"master": "a", "address": "10.0.0.1:7001"})
    assert d.action == "repair" and d.retag_slave == ("n",) and d.replicate == ("n",)


def test_recorded_master_untagged_is_retagged_not_failed_over():
    nodes = [node("a", 7001, "slave", M), node("b", 7002, "slave", rep(100))]
    d = decide(nodes, {"master": "a", "address": "10.0.0.1:7001"})
    assert d.action == "retag" and d.master == "a" and d.promote is None and d.replicate == ()


def test_nothing_live_and_no_record_holds():
    d = decide([node("a", 7001, "slave", None)], None)
    assert d.action == "hold" and d.alert


def test_redis_example_spec_is_valid():
    import os

    from consul_medic.handlers.spec import spec
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "specs", "examples",
                        "redis.example.com.json")
    s = spec.load_file(path, use_cache=False)
    assert s.service == "redis.example.com" and s.instances == 3
    assert os.path.exists(s.scale.file)


def test_an_impostor_claiming_a_replica_with_a_huge_offset_and_another_history_is_never_promoted():
    rogue = Node("evil", "10.0.0.66", 6379, "slave", True, Probe("slave", 10 ** 12, "10.0.0.66", 1, "up", "EVIL"))
    # the master is lost: only the replica sharing the recorded history may be promoted
    d = decide([node("b", 7002, "slave", rep(90, link="down")), rogue],
               {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"})
    assert d.action == "failover" and d.promote == "b" and "evil" in d.replicate
    # only impostors: nothing promoted, alerted
    d = decide([rogue], {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"})
    assert (d.action, d.promote, d.alert) == ("hold", None, True)
    assert "no replica shares its replication ID R1: refused evil (replication ID EVIL)" in d.reason
    # no replication ID recorded: no way to tell, nothing promoted
    d = decide([node("b", 7002, "slave", rep(90))], {"master": "a", "address": "10.0.0.1:7001"})
    assert d.action == "hold" and "no replication ID is recorded" in d.reason
    # the master is alive: a replica 'ahead' with another history is not a sign of a restart
    d = decide([node("a", 7001, "master", M), rogue], {"master": "a", "address": "10.0.0.1:7001", "replid": "R1"})
    assert d.action == "repair" and d.master == "a" and d.promote is None and d.replicate == ("evil",)


def test_a_replica_whose_previous_id_is_the_masters_may_be_promoted():
    # a replica that already moved on (PSYNC after a failover) keeps the old ID as master_replid2
    moved = Probe("slave", 50, "10.0.0.1", 7001, "down", "R9", "R1")
    d = decide([node("b", 7002, "slave", moved)], {"master": "a", "replid": "R1"})
    assert d.action == "failover" and d.promote == "b"
