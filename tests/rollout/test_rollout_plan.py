"""rollout_plan.plan: literal views in, steps out (pure)."""
import pytest

from consul_medic.handlers.replace.rollout_plan import Box, View, plan, serving

OLD, NEW = "sha256:old", "sha256:new"


def box(name, image=OLD, state="running", passing=True, maintenance=False, retiring=False):
    return Box("id-" + name, name, image, state, passing, maintenance, retiring)


def kinds(p):
    return [(s.kind, s.name) for s in p.steps]


def test_three_old_passing_roll_one_at_a_time():
    p = plan(3, View((box("w1"), box("w2"), box("w3")), 0), NEW)
    assert p.kind == "roll"
    assert kinds(p) == [("start", None), ("retire", "w1"), ("start", None), ("retire", "w2"),
                        ("start", None), ("retire", "w3")]


@pytest.mark.parametrize("declared,n", [(1, 1), (2, 2), (5, 5)])
def test_never_fewer_serving_than_declared(declared, n):
    boxes = tuple(box("w%d" % i) for i in range(n))
    p = plan(declared, View(boxes, 0), NEW)
    cap, most = n, n
    for s in p.steps:
        if s.kind == "start":
            cap += 1
        elif s.kind == "retire":
            cap -= 1
        assert cap >= declared
        most = max(most, cap)
    assert most == declared + 1 and cap == declared


def test_all_on_target_is_done():
    p = plan(3, View((box("w1", NEW), box("w2", NEW), box("w3", NEW)), 0), NEW)
    assert p.kind == "done" and p.steps == ()


def test_fresh_rollout_of_a_short_service_is_refused():
    p = plan(3, View((box("w1"), box("w2"), box("w3", passing=False)), 0), NEW)
    assert p.kind == "refuse" and "2/3 passing" in p.reason


def test_remote_instances_count_towards_capacity():
    # 4 declared: 2 here, 2 passing elsewhere; the 2 here roll one at a time
    p = plan(4, View((box("w1"), box("w2")), 2), NEW)
    assert kinds(p) == [("start", None), ("retire", "w1"), ("start", None), ("retire", "w2")]


def test_surplus_retires_without_starting():
    # killed after the new one passed, before the old one was retired
    p = plan(3, View((box("w1"), box("w2"), box("w3"), box("w4", NEW)), 0), NEW, resuming=True)
    assert kinds(p) == [("retire", "w1"), ("start", None), ("retire", "w2"), ("start", None), ("retire", "w3")]


def test_resume_waits_for_a_started_new_instance_first():
    p = plan(3, View((box("w1"), box("w2"), box("w3"), box("w4", NEW, passing=None)), 0), NEW, resuming=True)
    assert kinds(p)[:2] == [("wait", "w4"), ("retire", "w1")]


def test_resume_with_an_old_one_in_maintenance_retires_it_first_then_refills():
    view = View((box("w1", passing=False, maintenance=True), box("w2"), box("w3"), box("w4", NEW)), 0)
    p = plan(3, view, NEW, resuming=True)
    assert kinds(p) == [("retire", "w1"), ("start", None), ("retire", "w2"), ("start", None), ("retire", "w3")]


def test_resume_short_of_capacity_starts_first():
    # killed after maintenance + stop of w1 but before its replacement: 2 serve
    p = plan(3, View((box("w2"), box("w3")), 0), NEW, resuming=True)
    assert kinds(p)[0] == ("start", None)
    assert kinds(p) == [("start", None), ("start", None), ("retire", "w2"), ("start", None), ("retire", "w3")]


def test_exited_containers_are_removed_first_and_retiring_ones_ignored():
    view = View((box("w0", state="exited", passing=None), box("w1", retiring=True), box("w2", NEW),
                 box("w3"), box("w4")), 0)
    p = plan(3, view, NEW, resuming=True)
    assert kinds(p) == [("remove", "w0"), ("start", None), ("retire", "w3"), ("start", None), ("retire", "w4")]


def test_rollback_is_planning_to_the_old_image():
    # the new instance never passed; two old serve, one replaced already
    view = View((box("w2"), box("w3"), box("w4", NEW), box("w5", NEW, passing=False)), 0)
    p = plan(3, view, OLD, resuming=True)
    # the failed new one goes first (it never served), then the replaced one is put back
    assert kinds(p) == [("retire", "w5"), ("start", None), ("retire", "w4")]


def test_serving_excludes_maintenance_failing_and_stopped():
    assert serving(box("a"))
    assert not serving(box("a", maintenance=True))
    assert not serving(box("a", passing=False))
    assert not serving(box("a", passing=None))
    assert not serving(box("a", state="exited"))
    assert not serving(box("a", retiring=True))


def test_compose_override_is_json_yaml_for_the_spec_service(tmp_path):
    import json
    from collections import namedtuple

    from consul_medic.handlers.service import rollout_image
    Scale = namedtuple("Scale", "driver project file service")
    Spec = namedtuple("Spec", "service scale")
    sp = Spec("www.example.com", Scale("compose", "demo", "/x/compose.yml", "web"))
    path = rollout_image.compose_override(sp, "medic-demo:v2", directory=str(tmp_path))
    assert json.load(open(path)) == {"services": {"web": {"image": "medic-demo:v2"}}}
    assert rollout_image.compose_override(sp, "medic-demo:v2", directory=str(tmp_path)) == path  # stable
    assert rollout_image.compose_override(sp, "medic-demo:v3", directory=str(tmp_path)) != path
    assert rollout_image.with_tag("medic-demo") == "medic-demo:latest"
    assert rollout_image.with_tag("reg:5000/team/app") == "reg:5000/team/app:latest"
    assert rollout_image.with_tag("reg:5000/team/app:1.2") == "reg:5000/team/app:1.2"
    with pytest.raises(Exception):
        rollout_image.check_ref("-rm")
    with pytest.raises(Exception):
        rollout_image.check_ref("a b")
