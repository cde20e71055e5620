"""The registrar's decisions, pure: inspect data -> registrations, desired vs agent -> ops."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import reg_diff as rdiff
from handlers import reg_labels as labels
from handlers import reg_loop as loop
from handlers import reg_model as model
from handlers import reg_registrar as core
from handlers import reg_roles as roles

CID = "c0ffee" + "0" * 58
OPTS = model.Options("host1", registrar_id="reg1")


def container(name="web1", image="registry.local:5000/team/medic-demo:1.2", env=None, labels=None,
              ports=None, running=True, paused=False, cid=CID):
    if ports is None:
        ports = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}]}
    return {"Id": cid, "Name": "/" + name,
            "State": {"Running": running, "Paused": paused, "Restarting": False},
            "Config": {"Image": image, "Env": env, "Labels": labels or {}},
            "NetworkSettings": {"Ports": ports}}


def one(c, opts=OPTS, roles=None):
    regs, skips = labels.registrations(c, opts, roles)
    assert len(regs) == 1, (regs, skips)
    return regs[0]


# ---------------------------------------------------------------- conventions
def test_defaults_image_base_name_id_address_port_and_meta():
    reg = one(container(labels={"com.docker.compose.project": "p1", "com.docker.compose.service": "web"}))
    assert (reg.id, reg.name, reg.address, reg.port, reg.tags) == ("host1:web1:80", "medic-demo", "127.0.0.1",
                                                                   32768, ())
    assert dict(reg.meta) == {"medic_container_id": CID, "medic_compose_project": "p1",
                              "medic_compose_service": "web", "medic_registrar": "reg1"}
    assert reg.check is None and reg.container_id == CID


def test_compose_meta_is_empty_string_when_absent():
    meta = dict(one(container()).meta)
    assert meta["medic_compose_project"] == "" and meta["medic_compose_service"] == ""


def test_the_demo_compose_labels():
    labels = {"SERVICE_NAME": "www.example.com", "SERVICE_TAGS": "demo", "SERVICE_CHECK_HTTP": "/cgi-bin/health",
              "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s"}
    reg = one(container(labels=labels))
    assert (reg.name, reg.tags) == ("www.example.com", ("demo",))
    assert dict(reg.check) == {"HTTP": "http://127.0.0.1:32768/cgi-bin/health", "Interval": "1s", "Timeout": "1s"}
    body = reg.body()
    assert body["Check"]["HTTP"].endswith(":32768/cgi-bin/health")
    assert body["Meta"]["check_http"] == "/cgi-bin/health"  # registrator: other attrs become Meta


def test_labels_win_over_env_and_port_keys_over_generic():
    c = container(env=["SERVICE_NAME=from-env", "SERVICE_TAGS=e1", "PATH=/bin", "SERVICE_80_TAGS=p80-env"],
                  labels={"SERVICE_NAME": "from-label"})
    reg = one(c)
    assert reg.name == "from-label"
    assert reg.tags == ("p80-env",)


def test_several_ports_suffix_name_unless_per_port_name():
    ports = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1080"}],
             "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1443"}],
             "9000/tcp": None}  # exposed, not published: not registered
    c = container(labels={"SERVICE_NAME": "shop", "SERVICE_443_NAME": "shop-tls"}, ports=ports)
    regs, _ = labels.registrations(c, OPTS)
    assert [(x.id, x.name, x.port) for x in regs] == [("host1:web1:80", "shop-80", 1080),
                                                      ("host1:web1:443", "shop-tls", 1443)]


def test_udp_port_id_and_tag():
    c = container(ports={"53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]}, labels={"SERVICE_TAGS": "dns"})
    reg = one(c)
    assert (reg.id, reg.tags) == ("host1:web1:53:udp", ("dns", "udp"))


def test_service_id_override_and_group_gets_port_suffix():
    assert one(container(labels={"SERVICE_ID": "custom"})).id == "custom"
    ports = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1"}], "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "2"}]}
    regs, _ = labels.registrations(container(labels={"SERVICE_ID": "custom"}, ports=ports), OPTS)
    assert [x.id for x in regs] == ["custom:80", "custom:81"]


def test_ignore_whole_container_and_one_port():
    regs, skips = labels.registrations(container(labels={"SERVICE_IGNORE": "true"}), OPTS)
    assert regs == [] and skips[0].reason == "SERVICE_IGNORE set"
    ports = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1"}], "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "2"}]}
    regs, skips = labels.registrations(container(labels={"SERVICE_81_IGNORE": "1"}, ports=ports), OPTS)
    assert [x.id for x in regs] == ["host1:web1:80"] and skips[0].what == "host1:web1:81"


def test_not_running_paused_or_unpublished_registers_nothing():
    assert labels.registrations(container(running=False), OPTS) == ([], [])
    assert labels.registrations(container(paused=True), OPTS) == ([], [])
    regs, skips = labels.registrations(container(ports={"80/tcp": None}), OPTS)
    assert regs == [] and skips[0].reason == "no published ports"


def test_address_ip_option_host_ip_wildcard_fallback():
    wild = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "7"}, {"HostIp": "::", "HostPort": "7"}]}
    assert one(container(), model.Options("h", ip="10.1.2.3")).address == "10.1.2.3"
    assert one(container(ports=wild), model.Options("h", fallback_ip="192.0.2.9")).address == "192.0.2.9"
    regs, skips = labels.registrations(container(ports=wild), model.Options("h"))
    assert regs == [] and "no --ip" in skips[0].reason
    mixed = {"80/tcp": [{"HostIp": "::", "HostPort": "9"}, {"HostIp": "127.0.0.1", "HostPort": "8"}]}
    assert one(container(ports=mixed), model.Options("h")).port == 8


@pytest.mark.parametrize("labels, check", [
    ({"SERVICE_CHECK_HTTP": "/h"}, {"HTTP": "http://127.0.0.1:32768/h", "Interval": "10s"}),
    ({"SERVICE_CHECK_HTTPS": "/h", "SERVICE_CHECK_TLS_SKIP_VERIFY": "true"},
     {"HTTP": "https://127.0.0.1:32768/h", "Interval": "10s", "TLSSkipVerify": True}),
    ({"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_INTERVAL": "3s", "SERVICE_CHECK_TIMEOUT": "1s"},
     {"TCP": "127.0.0.1:32768", "Interval": "3s", "Timeout": "1s"}),
    ({"SERVICE_CHECK_TTL": "30s", "SERVICE_CHECK_DEREGISTER_AFTER": "5m"},
     {"TTL": "30s", "DeregisterCriticalServiceAfter": "5m"}),
    ({"SERVICE_CHECK_HTTP": "/h", "SERVICE_CHECK_HTTP_METHOD": "HEAD", "SERVICE_CHECK_INITIAL_STATUS": "passing"},
     {"HTTP": "http://127.0.0.1:32768/h", "Interval": "10s", "Method": "HEAD", "Status": "passing"}),
    ({"SERVICE_CHECK_SCRIPT": "/bin/true"}, None),  # script checks: not supported (RCE)
])
def test_checks(labels, check):
    reg = one(container(labels=labels))
    assert (dict(reg.check) if reg.check else None) == check


def test_ipv6_check_target_is_bracketed():
    reg = one(container(labels={"SERVICE_CHECK_TCP": "1"}), model.Options("h", ip="fd00::5"))
    assert (reg.address, dict(reg.check)["TCP"]) == ("fd00::5", "[fd00::5]:32768")


def test_bad_check_duration_drops_the_check_with_a_reason():
    regs, skips = labels.registrations(container(labels={"SERVICE_CHECK_HTTP": "/h", "SERVICE_CHECK_INTERVAL": "soon"}),
                                  OPTS)
    assert regs[0].check is None and "Interval 'soon'" in skips[0].reason


def test_meta_keys_consul_rejects_are_left_out_and_medic_keys_cannot_be_spoofed():
    regs, skips = labels.registrations(container(labels={"SERVICE_BAD.KEY": "x", "SERVICE_MEDIC_REGISTRAR": "evil",
                                                    "SERVICE_OWNER": "team-a"}), OPTS)
    meta = dict(regs[0].meta)
    assert "bad.key" not in meta and meta["owner"] == "team-a" and meta["medic_registrar"] == "reg1"
    assert any("bad.key" in s.reason for s in skips)


def test_force_tags_and_roles_merge():
    opts = model.Options("host1", "reg1", force_tags=("dc1",))
    roles = {"host1:web1:80": {"add": ["master"], "remove": ["slave"]}}
    reg = one(container(labels={"SERVICE_TAGS": "redis,slave"}), opts, roles)
    assert reg.tags == ("redis", "dc1", "master")


def test_desired_first_by_name_keeps_a_duplicate_id():
    a = container(name="a", cid="a" * 64, labels={"SERVICE_ID": "same"})
    b = container(name="b", cid="b" * 64, labels={"SERVICE_ID": "same"})
    want, skips = labels.desired([b, a], OPTS)
    assert want["same"].container_id == "a" * 64 and "duplicate" in skips[0].reason
    want, _ = labels.desired([a, b], OPTS, exclude={"a" * 64})
    assert want["same"].container_id == "b" * 64


# ---------------------------------------------------------------- diff
def agent_view(regs, registrar_id="reg1"):
    services, checks = {}, {}
    for reg in regs:
        b = reg.body()
        meta = dict(b["Meta"], medic_registrar=registrar_id)
        services[reg.id] = {"ID": reg.id, "Service": reg.name, "Address": reg.address, "Port": reg.port,
                            "Tags": list(reversed(reg.tags)), "Meta": meta, "Weights": {"Passing": 1, "Warning": 1},
                            "EnableTagOverride": False}
        if reg.check:
            checks["service:" + reg.id] = {"CheckID": "service:" + reg.id, "ServiceID": reg.id,
                                           "Type": reg.check_type, "Status": "passing", "Definition": {}}
    return services, checks


DEMO = {"SERVICE_NAME": "www", "SERVICE_TAGS": "demo,x", "SERVICE_CHECK_HTTP": "/h"}


def test_diff_unchanged_fleet_writes_nothing():
    want, _ = labels.desired([container(labels=DEMO)], OPTS)
    services, checks = agent_view(want.values())
    assert rdiff.diff(want, services, checks, "reg1") == model.Diff([], 1)


def test_diff_registers_new_and_changed():
    want, _ = labels.desired([container(labels=DEMO)], OPTS)
    assert [(o.action, o.reason[:3]) for o in rdiff.diff(want, {}, {}, "reg1").ops] == [("register", "new")]
    services, checks = agent_view(want.values())
    services["host1:web1:80"]["Port"] = 1
    services["host1:web1:80"]["Tags"] = ["demo"]
    (op,), unchanged = rdiff.diff(want, services, checks, "reg1")
    assert op.action == "register" and "address" in op.reason and "tags demo -> demo,x" in op.reason
    services, checks = agent_view(want.values())
    checks["service:host1:web1:80"]["Type"] = "tcp"
    assert "checks tcp -> http" in rdiff.diff(want, services, checks, "reg1").ops[0].reason
    services, _ = agent_view(want.values())
    assert "checks none -> http" in rdiff.diff(want, services, {}, "reg1").ops[0].reason


def test_diff_removes_only_own_ghosts_and_respects_scope():
    want, _ = labels.desired([container(labels=DEMO)], OPTS)
    ghosts, gchecks = agent_view(labels.desired([container(name="old", cid="d" * 64)], OPTS)[0].values())
    foreign, _ = agent_view(labels.desired([container(name="other", cid="e" * 64)], OPTS)[0].values(), "reg2")
    manual = {"manual": {"ID": "manual", "Service": "x", "Meta": {}}}
    services, checks = agent_view(want.values())
    services.update(ghosts)
    services.update(foreign)
    services.update(manual)
    ops = rdiff.diff(want, services, checks, "reg1").ops
    assert [(o.action, o.service_id) for o in ops] == [("deregister", "host1:old:80")]
    assert rdiff.diff(want, services, checks, "reg1", scope={CID}).ops == []
    assert len(rdiff.diff(want, services, checks, "reg1", scope={"d" * 64}).ops) == 1


def test_diff_takes_over_a_service_of_another_registrar_with_the_same_id():
    want, _ = labels.desired([container(labels=DEMO)], OPTS)
    services, checks = agent_view(want.values(), registrar_id="reg0")
    (op,), _ = rdiff.diff(want, services, checks, "reg1")
    assert op.action == "register" and op.reason.startswith("taking over from registrar 'reg0'")


# ---------------------------------------------------------------- events, filters
@pytest.mark.parametrize("action, attrs, effect", [
    ("start", {}, "register"), ("unpause", {}, "register"), ("rename", {}, "register"),
    ("die", {}, "deregister"), ("stop", {}, "deregister"), ("destroy", {}, "deregister"),
    ("pause", {}, "deregister"), ("kill", {"signal": "9"}, "deregister"), ("kill", {"signal": "15"}, "deregister"),
    ("kill", {"signal": "1"}, None), ("kill", {"signal": "SIGHUP"}, None),
    ("health_status: healthy", {}, None), ("exec_start: sh", {}, None), ("create", {}, None),
])
def test_event_effect(action, attrs, effect):
    ev = {"Type": "container", "Action": action, "Actor": {"ID": "abc", "Attributes": attrs}}
    assert rdiff.event_effect(ev) == (effect, "abc")


def test_label_filters():
    assert rdiff.matches({"a": "1", "b": "2"}, ["a", "b=2"])
    assert not rdiff.matches({"a": "1"}, ["a=2"]) and not rdiff.matches({}, ["a"]) and rdiff.matches(None, [])


# ---------------------------------------------------------------- roles and re-tagging
def test_role_records():
    assert roles.parse_role(b'{"add": ["master"]}') == {"add": ["master"], "remove": []}
    for bad in (b"[]", b'{"add": "master"}', b'{"add": [""]}', b"nope"):
        with pytest.raises(ValueError):
            roles.parse_role(bad)
    role = roles.apply_role_change(None, add=("master",), remove=("slave",))
    assert role == {"add": ["master"], "remove": ["slave"]}
    assert roles.apply_role_change(role, add=("slave",), remove=("master",)) == {"add": ["slave"], "remove": ["master"]}


tag = st.sampled_from(["master", "slave", "a", "b", "c"])
tags = st.lists(tag, max_size=4, unique=True)


@given(tags, tags, tags, tags)
def test_medic_tag_and_registrar_agree_on_the_tag_set(label, old_add, add, remove):
    """medic-tag edits the agent's current tags; the registrar merges labels with the new
    role: both must give the same set, or a resync would flip the tags back."""
    remove = [t for t in remove if t not in add]
    old_role = {"add": old_add, "remove": []}
    current = roles.merge_tags(tuple(label), old_role)
    by_tag = roles.apply_tag_change(current, add, remove)
    by_registrar = roles.merge_tags(tuple(label), roles.apply_role_change(old_role, add, remove))
    assert set(by_tag) == set(by_registrar)
    assert len(set(by_tag)) == len(by_tag)


def test_retag_rebuilds_the_registrars_check_from_meta():
    reg = one(container(labels=DEMO))
    services, checks = agent_view([reg])
    body, replace = roles.retag(services[reg.id], checks.values(), ("demo", "master"))
    assert replace and body["Check"] == dict(reg.check) and body["Tags"] == ["demo", "master"]
    assert body["Meta"] == dict(reg.meta) and (body["Address"], body["Port"]) == (reg.address, reg.port)


def test_retag_leaves_checks_it_cannot_rebuild_untouched():
    svc = {"ID": "x1", "Service": "x", "Address": "10.0.0.1", "Port": 5, "Tags": ["a"], "Meta": {}}
    chk = [{"CheckID": "c1", "ServiceID": "x1", "Type": "script"}]
    body, replace = roles.retag(svc, chk, ("a", "master"))
    assert not replace and "Check" not in body
    reg = one(container(labels=DEMO))
    services, checks = agent_view([reg])
    checks["extra"] = {"CheckID": "extra", "ServiceID": reg.id, "Type": "ttl"}
    assert roles.retag(services[reg.id], checks.values(), ("m",))[1] is False
    with pytest.raises(ValueError):
        roles.retag(dict(svc, Kind="connect-proxy"), [], ("a",))


def test_registration_body_is_json():
    json.dumps(one(container(labels=DEMO)).body())


# ---------------------------------------------------------------- the loop, with injected I/O
class FakeAgent:
    def __init__(self):
        self.svc, self.fail, self.calls = {}, False, 0

    def _io(self):
        self.calls += 1
        if self.fail:
            from handlers.errors import ConsulError
            raise ConsulError("cannot connect to Consul at fake")

    def roles(self):
        self._io()
        return {}, []

    def services(self):
        self._io()
        return {k: dict(v) for k, v in self.svc.items()}

    def checks(self):
        self._io()
        return {}

    def register(self, body, replace_checks=True):
        self._io()
        self.svc[body["ID"]] = {"ID": body["ID"], "Service": body["Name"], "Address": body["Address"],
                                "Port": body["Port"], "Tags": body["Tags"], "Meta": body["Meta"]}

    def deregister(self, sid):
        self._io()
        self.svc.pop(sid, None)


class FakeEngine:
    def __init__(self, containers):
        self.by_id = {c["Id"]: c for c in containers}
        outer = self

        class Api:
            def containers(self, filters=None):
                return [{"Id": i} for i in outer.by_id]

            def inspect_container(self, cid):
                import docker
                if cid not in outer.by_id:
                    raise docker.errors.NotFound("no such container")
                return outer.by_id[cid]
        self.api = Api()


def test_a_change_made_while_consul_fails_is_kept_and_applied_later():
    a = container(name="a", cid="a" * 64)
    b = container(name="b", cid="b" * 64)
    agent, engine = FakeAgent(), FakeEngine([a])
    reg = core.Registrar(OPTS, agent, engine)
    reg.resync()
    assert list(agent.svc) == ["host1:a:80"]
    agent.fail = True
    engine.by_id = {b["Id"]: b}
    for action, cid in (("die", a["Id"]), ("start", b["Id"])):
        reg.on_event({"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": {}}})
        with pytest.raises(Exception):
            reg.sync_pending()
    assert reg.pending == {a["Id"], b["Id"]}
    agent.fail = False
    reg.sync_pending()
    assert list(agent.svc) == ["host1:b:80"] and not reg.pending


def test_no_busy_loop_while_the_engine_is_away():
    import queue
    import threading
    ticks = []

    def clock():
        import time
        ticks.append(1)
        return time.monotonic()

    def no_engine():
        raise OSError("engine gone")
    reg = core.Registrar(OPTS, FakeAgent(), FakeEngine([]), clock=clock)
    stop, q = threading.Event(), queue.Queue()
    threading.Timer(1.5, lambda: (stop.set(), q.put(("stop",)))).start()
    loop.serve(reg, no_engine, stop, q, resync_every=0.3)
    assert len(ticks) < 100, "the loop spun %d times in 1.5 s" % len(ticks)
