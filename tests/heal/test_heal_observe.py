"""observe.match: Consul instances -> containers of this engine (pure, literal data)."""
from consul_medic.handlers.service.heal_model import Container
from consul_medic.handlers.consul.health import Instance
from consul_medic.handlers.service.observe import LocalContainer, match, parse_time
from consul_medic.handlers.spec.spec import Scale


def inst(iid, port, passing=True, meta=None, address="127.0.0.1", node="n1"):
    return Instance(iid, node, address, port, (), dict(meta or {}), passing, ())


def local(cid, name, state="running", ports=((("127.0.0.1"), 32001),)):
    return LocalContainer(Container(cid, name, state, 1.0, 2.0, None), set(ports))


def test_meta_match_first_then_port_fallback():
    cs = [local("A" * 64, "p-web-1", ports=[("127.0.0.1", 32001)]),
          local("B" * 64, "p-web-2", ports=[("0.0.0.0", 32002)])]
    o = match([inst("h:p-web-1:32001", 9999, meta={"medic_container_id": "A" * 64}),
               inst("legacy", 32002, passing=False)], cs)
    by = {c.name: c.passing for c in o.containers}
    assert by == {"p-web-1": True, "p-web-2": False} and o.remote == () and o.stale == 0


SCALE = Scale("compose", "p", "/c.yml", "web")


def test_other_hosts_are_remote_and_ghosts_of_this_host_count_for_nothing():
    cs = [local("A" * 64, "p-web-1")]
    mine = {"medic_compose_project": "p", "medic_compose_service": "web"}
    o = match([inst("other:p-web-1:32001", 32001, meta=dict(mine, medic_container_id="C" * 64,
                                                            medic_registrar="other"), address="10.0.0.2"),
               inst("me:p-web-3:32003", 32003, meta=dict(mine, medic_container_id="D" * 64, medic_registrar="me")),
               # another compose project on this host serving the same Consul service: counts, not ours
               inst("me:q-web-1:32004", 32004, meta={"medic_container_id": "E" * 64, "medic_registrar": "me",
                                                     "medic_compose_project": "q", "medic_compose_service": "web"})],
              cs, host="me", scale=SCALE)
    assert sorted(r.id for r in o.remote) == ["me:q-web-1:32004", "other:p-web-1:32001"] and o.stale == 1
    assert o.containers[0].passing is None


def test_port_fallback_never_matches_another_address():
    cs = [local("A" * 64, "p-web-1", ports=[("127.0.0.1", 32001)])]
    o = match([inst("x", 32001, address="10.0.0.7")], cs)
    assert len(o.remote) == 1 and o.containers[0].passing is None


def test_instance_of_exited_container_is_stale_and_unknown_state_is_named():
    cs = [local("A" * 64, "p-web-1", state="exited"), local("B" * 64, "p-web-2", state="zombie")]
    o = match([inst("i1", 1, meta={"medic_container_id": "A" * 64})], cs)
    assert o.stale == 1 and o.unknown == ("container p-web-2 in state 'zombie'",)


def test_any_passing_instance_makes_the_container_pass():
    cs = [local("A" * 64, "p-web-1")]
    m = {"medic_container_id": "A" * 64}
    o = match([inst("old-port", 1, passing=False, meta=m), inst("new-port", 2, meta=m)], cs)
    assert o.containers[0].passing is True


def test_parse_time():
    assert parse_time("0001-01-01T00:00:00Z") == 0.0
    assert parse_time("1970-01-01T00:00:10.5Z") == 10.5
    assert abs(parse_time("2026-11-27T04:33:12.123456789Z") - 1795753992.123456789) < 1e-3


def test_remote_instances_carry_their_start_time_from_meta():
    o = match([inst("h2:web-1:80", 80, passing=False, meta={"medic_started": "1700000000"}, node="h2"),
               inst("h3:web-1:80", 81, passing=False, meta={"medic_started": "soon"}, node="h3")], [])
    assert [(r.node, r.started) for r in o.remote] == [("h2", 1700000000.0), ("h3", 0.0)]


def test_killed_from_outside_is_told_from_a_crash():
    from consul_medic.handlers.service.observe import killed
    assert killed({"Status": "exited", "ExitCode": 137, "OOMKilled": False})       # docker kill
    assert killed({"Status": "exited", "ExitCode": 143})                           # docker stop
    assert not killed({"Status": "exited", "ExitCode": 137, "OOMKilled": True})    # OOM: its own failure
    assert not killed({"Status": "exited", "ExitCode": 1})                         # crashed
    assert not killed({"Status": "exited", "ExitCode": 139})                       # SIGSEGV
    assert not killed({"Status": "running", "ExitCode": 137})
    assert not killed({"Status": "exited", "ExitCode": "x"})


def test_an_instance_on_a_lost_or_maintained_node_is_never_remote_pending():
    from consul_medic.handlers.consul.health import Failing
    lost = Instance("h2:web-1:80", "h2", "127.0.0.2", 80, (), {"medic_started": "1700000000"}, False,
                    (Failing("serfHealth", "Serf Health Status", "critical"),))
    maint = Instance("h3:web-1:80", "h3", "127.0.0.3", 80, (), {"medic_started": "1700000000"}, False,
                     (Failing("_node_maintenance", "Node Maintenance Mode", "critical"),))
    sick = Instance("h4:web-1:80", "h4", "127.0.0.4", 80, (), {"medic_started": "1700000000"}, False,
                    (Failing("service:h4:web-1:80", "HTTP", "critical"),))
    retired = Instance("h5:web-1:80", "h5", "127.0.0.5", 80, (), {"medic_started": "1700000000"}, False,
                       (Failing("_service_maintenance:h5:web-1:80", "Service Maintenance Mode", "critical"),))
    o = match([lost, maint, sick, retired], [])
    assert [(r.node, r.started, r.down) for r in o.remote] == [
        ("h2", 0.0, True), ("h3", 0.0, True), ("h4", 1700000000.0, False), ("h5", 0.0, True)]
