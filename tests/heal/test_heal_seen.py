"""heal_seen: which services changed in the cluster-wide checks payload and concern this node (pure)."""
from consul_medic.handlers.heal import heal_seen
from consul_medic.watches.checks import Check


def chk(node, svc, sid, status="passing", cid=None):
    return Check(node, cid or "service:" + sid, "", status, "out", sid, svc, (), 1)


def node_check(node, status="passing"):
    return Check(node, "serfHealth", "", status, "", "", "", (), 1)


def count(node, target, status="passing"):
    return Check(node, "medic:" + target, "", status, "", "medic", "medic", (), 1)


def base():
    return [node_check("h1"), node_check("h2"), chk("h1", "a", "a-1"), chk("h1", "a", "a-2"),
            chk("h2", "b", "b-1"), chk("h1", "c", "c-1"), chk("h2", "c", "c-2"), count("h1", "a"),
            count("h1", "batch"), count("h2", "b")]


def diff(before, after, node="h1"):
    return heal_seen.changed(heal_seen.summarise(before, node), heal_seen.summarise(after, node))[0]


def test_nothing_known_means_look_at_everything():
    assert heal_seen.changed(None, heal_seen.summarise(base(), "h1")) == (None, {})
    prev = heal_seen.summarise(base(), "h2")
    assert heal_seen.changed(prev, heal_seen.summarise(base(), "h1"))[0] is None  # another node's state


def test_the_same_payload_again_names_nothing_whatever_the_output():
    again = [c._replace(output="changed text") for c in base()]
    assert diff(base(), again) == []


def test_a_lost_instance_here_names_its_service_only():
    after = [c for c in base() if c.service_id != "a-2"]
    assert diff(base(), after) == ["a"]


def test_a_change_on_another_host_is_its_business():
    after = [c._replace(status="critical") if c.service_id == "b-1" else c for c in base()]
    assert diff(base(), after, node="h1") == []
    assert diff(base(), after, node="h2") == ["b"]


def test_a_service_with_no_instance_left_anywhere_concerns_every_host():
    after = [c for c in base() if c.service_name != "b"]
    assert diff(base(), after, node="h1") == ["b"]


def test_host_loss_names_the_services_that_ran_there():
    after = [c._replace(status="critical") if c.check_id == "serfHealth" and c.node == "h2" else c for c in base()]
    assert diff(base(), after, node="h1") == ["b", "c"]


def test_this_nodes_count_check_names_its_service():
    after = [c._replace(status="critical") if c.check_id == "medic:a" else c for c in base()]
    assert diff(base(), after) == ["a"]
    after = [c._replace(status="critical") if c.check_id in ("medic:b", "medic:batch") else c for c in base()]
    assert diff(base(), after) == []  # another node's count check; the batch check names nothing


def test_save_and_load_forget_the_undecided(tmp_path):
    st = heal_seen.summarise(base(), "h1")
    assert heal_seen.save(str(tmp_path), "live", st, forget=["a"])
    back = heal_seen.load(str(tmp_path), "live")
    assert "a" not in back["services"] and "a" not in back["counts"] and "c" in back["services"]
    assert heal_seen.changed(back, st)[0] == ["a"]  # the next payload names it again
    assert heal_seen.load(str(tmp_path), "other") is None
