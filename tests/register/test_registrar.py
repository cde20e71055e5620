"""The registrar's decisions, pure: inspect data -> registrations, desired vs agent -> ops."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_medic.handlers.register import reg_diff as rdiff
from consul_medic.handlers.register import reg_labels as labels
from consul_medic.handlers.register import reg_loop as loop
from consul_medic.handlers.catalog import reg_model as model
from consul_medic.handlers.register import reg_registrar as core
from consul_medic.handlers.catalog import reg_roles as roles

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
    ({"SERVICE_CHECK_GRPC": "true", "SERVICE_CHECK_GRPC_USE_TLS": "1", "SERVICE_CHECK_TLS_SKIP_VERIFY": "1"},
     {"GRPC": "127.0.0.1:32768", "GRPCUseTLS": True, "TLSSkipVerify": True, "Interval": "10s"}),
    ({"SERVICE_CHECK_HTTPS": "/h", "SERVICE_CHECK_HTTPS_METHOD": "POST"},
     {"HTTP": "https://127.0.0.1:32768/h", "Interval": "10s", "Method": "POST"}),
])
def test_checks(labels, check):
    reg = one(container(labels=labels))
    assert (dict(reg.check) if reg.check else None) == check


def test_ipv6_check_target_is_bracketed():
    reg = one(container(labels={"SERVICE_CHECK_TCP": "1"}), model.Options("h", ip="fd00::5"))
    assert (reg.address, dict(reg.check)["TCP"]) == ("fd00::5", "[fd00::5]:32768")


@pytest.mark.parametrize("attrs, why", [
    ({"SERVICE_CHECK_HTTP": "/h", "SERVICE_CHECK_INTERVAL": "soon"}, "Interval 'soon'"),
    ({"SERVICE_CHECK_HTTP": "/h", "SERVICE_CHECK_INTERVAL": "99999h"}, "longer than 24h"),
    ({"SERVICE_CHECK_TCP": "1", "SERVICE_CHECK_TIMEOUT": "1e999s"}, "not a duration"),
    ({"SERVICE_CHECK_SCRIPT": "/bin/true"}, "SERVICE_CHECK_SCRIPT: script checks are not supported"),
    ({"SERVICE_CHECK_CMD": "/bin/true"}, "SERVICE_CHECK_CMD: script checks are not supported"),
    ({"SERVICE_CHECK_HTTP": "@127.0.0.9:18693/ssrf"}, "must start with '/'"),
    ({"SERVICE_CHECK_HTTP": "//127.0.0.9:18693/ssrf"}, "could name another host"),
    ({"SERVICE_CHECK_HTTPS": "/x@127.0.0.9/"}, "contains '@'"),
    ({"SERVICE_CHECK_HTTP": "/redirect?to=http://127.0.0.9/"}, "contains a scheme"),
    ({"SERVICE_CHECK_HTTP": "/a b"}, "printable URL path"),
    ({"SERVICE_CHECK_HTTP": "/h", "SERVICE_CHECK_HTTP_METHOD": "GET\r\nX: y"}, "HTTP method"),
    ({"SERVICE_CHECK_TTL": "5s", "SERVICE_CHECK_INITIAL_STATUS": "fine"}, "initial status"),
])
def test_a_refused_check_registers_a_critical_check_saying_why(attrs, why):
    """Never dropped silently (which would count as passing): a TTL check, critical, with the reason."""
    regs, skips = labels.registrations(container(labels=attrs), OPTS)
    check = dict(regs[0].check)
    assert (check["TTL"], check["Status"], regs[0].check_type) == ("720h", "critical", "ttl")
    assert why in check["Notes"] and check["Notes"].startswith("medic-register refused this check: ")
    assert [s.action for s in skips] == ["refuse"] and why in skips[0].reason
    assert "127.0.0.9" not in json.dumps(regs[0].body()["Check"].get("HTTP", ""))


def test_every_check_targets_the_container_address_and_port():
    for attrs in ({"SERVICE_CHECK_HTTP": "/x"}, {"SERVICE_CHECK_HTTPS": "/x"}, {"SERVICE_CHECK_TCP": "127.0.0.9:1"},
                  {"SERVICE_CHECK_GRPC": "127.0.0.9:1"}):
        check = dict(one(container(labels=attrs)).check)
        target = check.get("HTTP") or check.get("TCP") or check.get("GRPC")
        assert target.split("//")[-1].startswith("127.0.0.1:32768"), target


@pytest.mark.parametrize("attrs, why", [
    ({"SERVICE_ID": "medic", "SERVICE_NAME": "x"}, "belongs to medic or Consul"),
    ({"SERVICE_ID": "medic:reconcile"}, "belongs to medic or Consul"),
    ({"SERVICE_NAME": "medic"}, "reserved"),
    ({"SERVICE_NAME": "Consul"}, "reserved"),
    ({"SERVICE_NAME": "web front"}, "letters, digits"),
    ({"SERVICE_NAME": "web\nfront"}, "letters, digits"),
    ({"SERVICE_NAME": "web\u200ffront"}, "letters, digits"),
    ({"SERVICE_NAME": "w" * 300}, "at most 128"),
    ({"SERVICE_ID": "a b"}, "printable ASCII"),
    ({"SERVICE_ID": "x" * 300}, "printable ASCII"),
    ({"SERVICE_TAGS": ",".join("t%d" % i for i in range(100))}, "100 tags"),
    ({"SERVICE_TAGS": "ok,bad\u200etag"}, "printable"),
    ({"SERVICE_TAGS": "x" * 300}, "at most 255"),
    ({"SERVICE_K%d" % i: "v" for i in range(70)}, "at most 64 Meta pairs"),
])
def test_hostile_names_tags_and_meta_are_refused(attrs, why):
    regs, skips = labels.registrations(container(labels=attrs), OPTS)
    assert regs == [] and skips[-1].action == "refuse" and why in skips[-1].reason, skips
    assert all(ch.isprintable() for ch in skips[-1].reason)


def test_started_at_becomes_meta_medic_started():
    c = container()
    c["State"]["StartedAt"] = "2026-11-27T13:00:00.123456789Z"
    assert dict(one(c).meta)["medic_started"] == "1795784400"
    c["State"]["StartedAt"] = "0001-01-01T00:00:00Z"
    assert "medic_started" not in dict(one(c).meta)


def test_host_network_internal_and_explicit():
    c = container(ports={})
    c["HostConfig"] = {"NetworkMode": "host"}
    c["Config"]["ExposedPorts"] = {"8080/tcp": {}}
    reg = one(c, model.Options("h", fallback_ip="192.0.2.9"))
    assert (reg.address, reg.port) == ("192.0.2.9", 8080)
    regs, skips = labels.registrations(c, model.Options("h"))
    assert regs == [] and "host network and no --ip" in skips[0].reason
    i = container()
    i["NetworkSettings"]["Networks"] = {"n1": {"IPAddress": "172.30.0.5"}}
    i["Config"]["ExposedPorts"] = {"80/tcp": {}}
    reg = one(i, model.Options("h", internal=True))
    assert (reg.address, reg.port) == ("172.30.0.5", 80)
    regs, skips = labels.registrations(container(), model.Options("h", explicit=True))
    assert regs == [] and "--explicit" in skips[0].reason
    assert one(container(labels={"SERVICE_NAME": "w"}), model.Options("h", explicit=True)).name == "w"


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
    (op,), unchanged, _ = rdiff.diff(want, services, checks, "reg1")
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


def test_diff_never_overwrites_a_service_id_it_does_not_own():
    want, _ = labels.desired([container(labels=DEMO)], OPTS)
    services, checks = agent_view(want.values(), registrar_id="reg0")
    d = rdiff.diff(want, services, checks, "reg1")
    assert d.ops == [] and "by registrar 'reg0'" in d.refused[0].reason and d.refused[0].action == "refuse"
    services["host1:web1:80"]["Meta"] = {}
    d = rdiff.diff(want, services, checks, "reg1", scope=set())
    assert d.ops == [] and "outside medic-register" in d.refused[0].reason


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
    deep = b"[" * 100000 + b"]" * 100000
    hostile = (json.dumps({"add": ["x\u200fy"]}).encode(), json.dumps({"add": ["t" * 300]}).encode(),
               json.dumps({"remove": ["t%d" % i for i in range(100)]}).encode(), deep, b"\xff\xfe")
    for bad in (b"[]", b'{"add": "master"}', b'{"add": [""]}', b"nope") + hostile:
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
        self.refuse, self.tried, self.wakes, self.failed, self.bodies = {}, [], [], [], []

    def _io(self):
        self.calls += 1
        if self.fail:
            from consul_medic.handlers.core.errors import ConsulError
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
        if body["ID"] in self.refuse:
            from consul_medic.handlers.register.reg_agent import Refused
            raise Refused("Consul PUT /v1/agent/service/register: HTTP 400: Invalid service", self.refuse[body["ID"]])
        self.tried.append(body["ID"])
        self.bodies.append(body)
        self.svc[body["ID"]] = {"ID": body["ID"], "Service": body["Name"], "Address": body["Address"],
                                "Port": body["Port"], "Tags": body["Tags"], "Meta": body["Meta"]}

    def deregister(self, sid):
        self._io()
        self.svc.pop(sid, None)

    def fail_check(self, check_id, output):
        self._io()
        self.failed.append((check_id, output))

    def put_wake(self, service, record):
        self._io()
        self.wakes.append((service, record))
        return "medic/default/wake/" + service


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


def _ev(action, cid, **attrs):
    return {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": attrs}}


def test_a_refused_registration_is_retried_alone_on_its_own_schedule():
    now = [100.0]
    bad, good = container(name="bad", cid="b" * 64), container(name="good", cid="g" * 64)
    agent, engine = FakeAgent(), FakeEngine([bad, good])
    agent.refuse["host1:bad:80"] = 400
    reg = core.Registrar(OPTS, agent, engine, clock=lambda: now[0])
    reg.resync()
    assert list(agent.svc) == ["host1:good:80"] and reg.retry["host1:bad:80"][:2] == [1, 102.0]
    assert reg.next_retry(after=now[0]) == 102.0 and reg.stats["refused"] == 1
    # another container comes and goes meanwhile: handled at once, the refused one not retried early
    other = container(name="other", cid="o" * 64)
    engine.by_id[other["Id"]] = other
    reg.on_event(_ev("start", other["Id"]))
    reg.sync_pending()
    assert "host1:other:80" in agent.svc and reg.stats["refused"] == 1
    engine.by_id.pop(good["Id"])
    reg.on_event(_ev("die", good["Id"]))
    reg.sync_pending()
    assert "host1:good:80" not in agent.svc
    now[0] = 102.5                              # due: tried again alone, refused again, backoff doubles
    assert reg.due_retries(now[0]) == 1
    reg.sync_pending()
    assert reg.retry["host1:bad:80"][:2] == [2, 106.5] and reg.stats["refused"] == 2
    agent.refuse.clear()                        # e.g. the ACL was fixed
    now[0] = 107.0
    reg.due_retries(now[0])
    reg.sync_pending()
    assert "host1:bad:80" in agent.svc and reg.retry == {}


def test_a_refused_check_is_set_critical_with_its_reason():
    c = container(name="s", cid="s" * 64, labels={"SERVICE_CHECK_SCRIPT": "curl x"})
    agent = FakeAgent()
    core.Registrar(OPTS, agent, FakeEngine([c])).resync()
    ((check_id, output),) = agent.failed
    assert check_id == "service:host1:s:80" and "SERVICE_CHECK_SCRIPT" in output


def test_exit_after_deregistration_at_the_stop_signal_writes_the_wake_key():
    c = container(name="w", cid="w" * 64, labels={"SERVICE_NAME": "web"})
    agent, engine = FakeAgent(), FakeEngine([c])
    reg = core.Registrar(OPTS, agent, engine, wall=lambda: 1795784400.5)
    reg.resync()
    reg.on_event(_ev("kill", c["Id"], signal="15", name="w"))
    reg.sync_pending()
    assert agent.svc == {} and agent.wakes == []         # deregistered at the signal: Consul changed
    engine.by_id.pop(c["Id"])
    reg.on_event(_ev("kill", c["Id"], signal="9", name="w"))  # the stop timeout ran out
    reg.on_event(_ev("die", c["Id"], exitCode="0", name="w"))
    reg.sync_pending()
    ((service, rec),) = agent.wakes                      # the exit changes nothing in Consul: wake medic-heal
    assert service == "web" and rec["at"] == 1795784400 and rec["container"] == c["Id"]
    assert "exited (code 0) after it was deregistered" in rec["why"]
    d = container(name="d", cid="d" * 64)                # a crash: the deregistration itself is the news
    engine.by_id[d["Id"]] = d
    reg.on_event(_ev("start", d["Id"]))
    reg.sync_pending()
    engine.by_id.pop(d["Id"])
    reg.on_event(_ev("die", d["Id"], exitCode="1"))
    reg.sync_pending()
    assert len(agent.wakes) == 1


def test_deregister_on_success_keeps_a_failed_container_registered():
    c = container(name="f", cid="f" * 64)
    agent, engine = FakeAgent(), FakeEngine([c])
    reg = core.Registrar(model.Options("host1", "reg1", deregister="on-success"), agent, engine)
    reg.resync()
    reg.on_event(_ev("oom", c["Id"]))
    reg.on_event(_ev("die", c["Id"], exitCode="137"))
    reg.sync_pending()
    assert "host1:f:80" in agent.svc                     # kept: its failing check tells
    reg.on_event(_ev("destroy", c["Id"]))
    reg.sync_pending()
    assert agent.svc == {}
    engine.by_id[c["Id"]] = c
    reg.on_event(_ev("start", c["Id"]))
    reg.sync_pending()
    reg.on_event(_ev("die", c["Id"], exitCode="0"))      # success: deregistered as always
    reg.sync_pending()
    assert agent.svc == {}


def test_one_container_whose_data_breaks_the_conventions_never_stops_the_fleet():
    odd = container(name="odd", cid="0" * 64)
    odd["Config"]["Labels"] = ["SERVICE_NAME=x"]              # a list, not a map: the conventions cannot read it
    want, skips = labels.desired([odd, container(name="ok", cid="1" * 64)], OPTS)
    assert list(want) == ["host1:ok:80"]
    assert skips[0].action == "refuse" and "not understood" in skips[0].reason


# ---------------------------------------------------------------- fuzz: hostile labels
_keys = st.sampled_from(["SERVICE_NAME", "SERVICE_ID", "SERVICE_TAGS", "SERVICE_CHECK_HTTP", "SERVICE_CHECK_HTTPS",
                         "SERVICE_CHECK_TCP", "SERVICE_CHECK_GRPC", "SERVICE_CHECK_TTL", "SERVICE_CHECK_INTERVAL",
                         "SERVICE_CHECK_TIMEOUT", "SERVICE_CHECK_HTTP_METHOD", "SERVICE_CHECK_INITIAL_STATUS",
                         "SERVICE_CHECK_SCRIPT", "SERVICE_80_NAME", "SERVICE_80_ID", "SERVICE_MEDIC_REGISTRAR",
                         "SERVICE_80_CHECK_HTTP", "SERVICE_X"]) | st.text(min_size=1, max_size=20).map(
                             lambda s: "SERVICE_" + s)
_values = st.text(max_size=80) | st.sampled_from(["@127.0.0.9:1/x", "//127.0.0.9/", "/ok", "medic", "1e999s",
                                                  "1s", "http://127.0.0.9/", "a\u200fb", "x\ny"])


@given(st.dictionaries(_keys, _values, max_size=12))
def test_fuzz_hostile_labels_never_escape_the_rules(attrs):
    """Whatever the labels: no exception, and every registration keeps the invariants."""
    regs, skips = labels.registrations(container(labels=attrs), OPTS)
    assert all(s.reason.isprintable() for s in skips)
    for reg in regs:
        assert labels.ident_problem(reg.id, reg.name, custom_id=True) is None
        assert labels.tags_problem(reg.tags) is None and len(reg.meta) <= 64
        assert dict(reg.meta)["medic_registrar"] == "reg1"
        check = dict(reg.check or ())
        target = check.get("HTTP") or check.get("TCP") or check.get("GRPC")
        if target:
            authority = target.split("//", 1)[-1].split("/", 1)[0]
            assert authority == "127.0.0.1:32768", target
        elif check:
            assert check.get("TTL")


class ListAudit:
    def __init__(self):
        self.recs = []

    def write(self, rec):
        self.recs.append(rec)


def test_routine_resyncs_that_change_nothing_are_audited_only_as_an_hourly_summary():
    now = [0.0]
    audit = ListAudit()
    reg = core.Registrar(OPTS, FakeAgent(), FakeEngine([container()]), audit=audit, clock=lambda: now[0])
    reg.resync("initial resync")                                  # always recorded
    for _ in range(5):
        now[0] += 30
        reg.resync("periodic resync")                             # quiet
    resyncs = [r["reason"] for r in audit.recs if r["action"] == "resync"]
    assert resyncs == ["initial resync: applied the differences"]
    reg.agent.svc.clear()
    reg.resync("periodic resync")                                 # it changed something: recorded
    assert audit.recs[-1]["reason"] == "periodic resync: applied the differences"
    now[0] += 3600
    reg.resync("periodic resync")                                 # an hour of quiet: one summary
    assert audit.recs[-1]["reason"] == ("periodic resync: nothing differs, nothing written (1 routine resyncs "
                                        "changed nothing since the last record)")
    assert [r["action"] for r in audit.recs] == ["register", "resync", "register", "resync", "resync"]


def test_a_container_publishing_a_port_range_is_refused_not_registered_by_the_hundred():
    ports = {"%d/tcp" % p: [{"HostIp": "127.0.0.1", "HostPort": str(p + 20000)}] for p in range(1000, 1200)}
    regs, skips = labels.registrations(container(ports=ports), OPTS)
    assert regs == [] and skips[0].action == "refuse" and "200 ports: at most 128" in skips[0].reason


def test_without_a_leader_the_dead_are_deregistered_and_medic_heal_started_registrations_wait():
    """KV (role records, wake-up keys) needs a leader; the agent's own endpoints do not."""
    from consul_medic.handlers.core.errors import ConsulError
    a, b = container(name="a", cid="a" * 64), container(name="b", cid="b" * 64)

    class Leaderless(FakeAgent):
        leaderless = False

        def roles(self):
            if self.leaderless:
                raise ConsulError("Consul GET /v1/kv/medic/default/roles/: server error: No cluster leader")
            return super().roles()

        def put_wake(self, service, record):
            if self.leaderless:
                raise ConsulError("Consul PUT /v1/kv/medic/default/wake/x: HTTP 500: No cluster leader")
            return super().put_wake(service, record)
    agent, engine, started = Leaderless(), FakeEngine([a]), []
    reg = core.Registrar(OPTS, agent, engine, fallback=lambda name, rec: started.append(name) or 99)
    reg.resync()
    agent.leaderless = True
    engine.by_id = {b["Id"]: b}
    reg.on_event(_ev("kill", a["Id"], signal="9", name="a"))
    reg.on_event(_ev("die", a["Id"], exitCode="137", name="a"))
    reg.on_event(_ev("start", b["Id"]))
    with pytest.raises(ConsulError):
        reg.sync_pending()
    assert list(agent.svc) == [] and started == ["medic-demo"]  # a deregistered, medic-heal started; b waits
    assert reg.pending == {a["Id"], b["Id"]}                # kept: the loop retries with backoff
    agent.leaderless = False
    reg.sync_pending()
    assert list(agent.svc) == ["host1:b:80"] and len(agent.wakes) == 1 and started == ["medic-demo"]


def test_an_engine_event_tries_consul_at_once_instead_of_waiting_out_the_backoff():
    """After a failed converge the loop backs off (0.2 s, doubling to 5 s); news from the engine (a
    replacement started by a heal) is tried at once. The registrar's clock runs 10x slow here, so
    the first backoff is 2 s of real time and the test ends after 1.2 s."""
    import queue
    import threading
    import time
    a, b = container(name="a", cid="a" * 64), container(name="b", cid="b" * 64)
    agent = FakeAgent()
    agent.fail = True
    reg = core.Registrar(OPTS, agent, FakeEngine([a, b]), clock=lambda: time.monotonic() / 10)

    def no_engine():
        raise OSError("engine gone")  # events come through the queue below
    stop, q = threading.Event(), queue.Queue()
    q.put(("event", _ev("start", a["Id"])))  # fails: Consul down, backoff starts
    threading.Timer(0.3, lambda: (setattr(agent, "fail", False), q.put(("event", _ev("start", b["Id"]))))).start()
    threading.Timer(1.2, lambda: (stop.set(), q.put(("stop",)))).start()
    loop.serve(reg, no_engine, stop, q, resync_every=0)
    assert sorted(agent.svc) == ["host1:a:80", "host1:b:80"]
