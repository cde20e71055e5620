"""medic-heal on bad input and broken surroundings: documented exit code, one clear line,
no action, no corrupted state. Real Consul agent; the engine is never needed to refuse."""
import io
import json
import os
import pty

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import fakes
import support
import support_heal as sh
from consul_medic.handlers.heal import __main__ as heal
from consul_medic.handlers.core import keys, runtime
from consul_medic.handlers.consul import lock as lockmod
from consul_medic.handlers.core.status import Status

pytestmark = pytest.mark.consul


@pytest.fixture
def world(consul_agent, tmp_path, unique):
    # no docker needed: the spec points at a compose file, nothing here may ever run it
    return sh.World(consul_agent, None, tmp_path, unique)


def one_line(r):
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    return lines[0]


def no_action(world):
    assert [r for r in sh.heal_records(world.audit) if r.get("argv")] == []
    try:
        world.agent.api("/v1/kv/" + keys.key(None, "history", world.service))
        raise AssertionError("history was written")
    except Exception as e:
        assert "404" in str(e)


@pytest.mark.parametrize("payload, msg", [
    ("", "payload: payload is empty"),
    ("not json", "payload: payload is not JSON"),
    ('{"Service": "x"}', "payload: $: a watch payload is a list, got dict"),
    ("[1, 2]", "payload: $[0]: expected an object"),
    (json.dumps([{"Node": "n", "CheckID": "c", "Status": "exploded", "ServiceName": "x"}]), "unknown status"),
    (b"\xff\xfe".decode("latin-1"), "payload"),
])
def test_bad_payload_exit_3_one_line_no_action(world, payload, msg):
    r = world.heal(input=payload)
    assert r.returncode == 3, r.stdout
    line = one_line(r)
    assert line.startswith("MEDIC UNKNOWN - payload: ") and msg in line
    no_action(world)


def test_ten_megabyte_payload(world):
    big = "[" + ",".join(['{"Node":"n","CheckID":"c","Status":"passing","ServiceName":"x"}'] * 200000) + "]"
    assert len(big) > 10 * 1024 * 1024
    r = world.heal(input=big)
    assert r.returncode == 3 and "payload larger than" in one_line(r)
    no_action(world)


@pytest.mark.parametrize("name", ["unknown.service", "a;rm -rf /", "$(touch /tmp/pwned)", "../../etc/passwd",
                                  "x" * 5000, "www\nMEDIC OK - fake"])
def test_unknown_and_hostile_names_in_payload_are_ignored(world, name, tmp_path):
    check = {"Node": "n1", "CheckID": "service:x", "Name": "x", "Status": "critical", "ServiceID": "x",
             "ServiceName": name}
    r = world.heal(input=json.dumps([check]))
    assert r.returncode == 0, r.stdout
    assert "none with a spec" in one_line(r)
    (rec,) = sh.heal_records(world.audit)
    assert rec["decision"] == "ignore" and rec["ignored"] == [name[:130]] and rec.get("argv") is None
    assert not os.path.exists("/tmp/pwned")
    no_action(world)


def test_hostile_service_option_is_a_usage_error(world):
    r = world.heal("--service", "a;rm -rf /")
    assert r.returncode == 3 and one_line(r).startswith("MEDIC UNKNOWN - usage: no spec in")
    no_action(world)


def test_empty_list_payload_names_nothing(world):
    r = world.heal(input="[]")
    assert r.returncode == 0 and "payload names no service" in one_line(r)


def test_tty_stdin_without_service_is_a_usage_error(world):
    master, slave = pty.openpty()
    try:
        import subprocess
        p = subprocess.run([os.path.join(support.BIN, "medic-heal")], stdin=slave, capture_output=True, text=True,
                           env=world.env(), timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == 3 and p.stdout.startswith("MEDIC UNKNOWN - usage: no payload: stdin is a terminal")


def test_conflicting_modes(world):
    r = world.heal("--all", "--reset", world.service)
    assert r.returncode == 3 and "only one of" in one_line(r)


def test_bad_spec_exit_3_names_the_file(world):
    with open(world.spec_path) as f:
        doc = json.load(f)
    doc["instances"] = "three"
    with open(world.spec_path, "w") as f:
        json.dump(doc, f)
    r = world.heal("--service", world.service)
    assert r.returncode == 3
    line = one_line(r)
    assert line.startswith("MEDIC UNKNOWN - spec: ") and world.spec_path in line and "$.instances" in line
    no_action(world)


def test_consul_down_exit_3(world):
    dead = "http://127.0.0.1:%d" % support.free_port()
    r = world.heal("--service", world.service, "--consul-addr", dead, "--consul-timeout", "1")
    assert r.returncode == 3, r.stdout
    line = one_line(r)
    assert "could not decide, nothing changed: " in line and "consul: cannot take lock" in line, line
    (rec,) = sh.heal_records(world.audit)
    assert rec["decision"] == "error" and rec.get("argv") is None


def test_engine_down_exit_3_and_lock_released(world, tmp_path):
    r = world.heal("--service", world.service, env=world.env(DOCKER_HOST="unix://%s/dead.sock" % tmp_path))
    assert r.returncode == 3, r.stdout
    assert "engine: cannot reach the Docker engine at unix://" in one_line(r)
    no_action(world)
    # the lock was released in finally: a fresh lock is free
    from consul_medic.handlers.consul import settings
    client = settings.make_client(settings.resolve(world.agent.addr))
    with lockmod.held(client, None, world.service) as got:
        assert got


def test_lock_held_elsewhere_is_recorded_and_exit_0(world):
    from consul_medic.handlers.consul import settings
    client = settings.make_client(settings.resolve(world.agent.addr))
    with lockmod.held(client, None, world.service, "rolling-update") as got:
        assert got
        r = world.heal("--service", world.service)
    assert r.returncode == 0, r.stdout
    assert "another handler is on it" in one_line(r) and "rolling-update" in r.stdout
    (rec,) = sh.heal_records(world.audit)
    assert rec["decision"] == "skip" and rec.get("argv") is None


def test_lock_is_exclusive_and_session_released(consul_agent, unique):
    from consul_medic.handlers.consul import settings
    client = settings.make_client(settings.resolve(consul_agent.addr))
    a = lockmod.ServiceLock(client, "test", "svc-" + unique)
    b = lockmod.ServiceLock(client, "test", "svc-" + unique)
    assert a.acquire() and not b.acquire()
    sid = a.session
    a.release()
    assert b.acquire()
    b.release()
    sessions = [s["ID"] for s in consul_agent.api("/v1/session/list")]
    assert sid not in sessions and b.session is None


def test_corrupt_history_exit_3_and_left_alone(world):
    key = keys.key(None, "history", world.service)
    world.agent.api("/v1/kv/" + key, "PUT", "garbage")
    r = world.heal("--service", world.service)
    assert r.returncode == 3 and "corrupt history" in one_line(r)
    from consul_medic.handlers.consul import settings
    client = settings.make_client(settings.resolve(world.agent.addr))
    assert client.kv.get(key)[1]["Value"] == b'"garbage"'
    # issue 15: --reset clears a history it cannot read (audited with what it held)
    r = world.heal("--reset", world.service)
    assert r.returncode == 0 and "unreadable history cleared" in one_line(r), r.stdout
    (rec,) = sh.heal_records(world.audit, decision="reset")
    assert rec["cleared"]["value"] == '"garbage"' and "corrupt history" in rec["cleared"]["error"]
    r = world.heal("--service", world.service, "--dry-run", env=world.env(DOCKER_HOST="unix:///nonexistent"))
    assert "corrupt" not in r.stdout and "engine: cannot reach" in r.stdout, r.stdout  # past the history now


def test_reset_clears_circuit(world):
    from consul_medic.handlers.service import history
    from consul_medic.handlers.consul import settings
    client = settings.make_client(settings.resolve(world.agent.addr))
    store = history.Store(client, None, world.service)
    store.load()
    store.update(lambda h: history.apply(history.add_action(h, 100.0, "scale", 3, "failed", None),
                                         heal_decision_open(), 200.0))
    assert client.kv.get(history.circuit_key(None, world.service))[1] is not None
    r = world.heal("--reset", world.service)
    assert r.returncode == 0 and "circuit closed" in one_line(r)
    store.load()
    assert store.history.circuit is None and store.history.epoch > 200.0
    assert client.kv.get(history.circuit_key(None, world.service))[1] is None
    assert [x["decision"] for x in sh.heal_records(world.audit)] == ["reset"]


def heal_decision_open():
    from consul_medic.handlers.service.heal_model import Decision
    return Decision("hold", None, "test", None, circuit="open")


# -- a property over random payloads: in process, a fake engine, a recording scaler ----------------
class _FakeAPI:
    def containers(self, all=True, filters=None):
        return []


class _FakeEngine:
    api = _FakeAPI()


names = st.one_of(st.just("SPEC"), st.text(max_size=20), st.sampled_from(["a;rm -rf /", "", "../x", "SPEC "]))
check_obj = st.fixed_dictionaries({"Node": st.text(max_size=5), "CheckID": st.text(max_size=5),
                                   "Status": st.sampled_from(["passing", "critical", "warning", "x"]),
                                   "ServiceName": names}, optional={"ModifyIndex": st.integers()})
payloads = st.one_of(
    st.binary(max_size=200),
    st.lists(check_obj, max_size=5).map(json.dumps),
    st.lists(st.fixed_dictionaries({"Node": st.fixed_dictionaries({"Node": st.text(max_size=5)}),
                                    "Service": st.fixed_dictionaries({"ID": st.text(max_size=5),
                                                                      "Service": names}),
                                    "Checks": st.lists(check_obj, max_size=2)}), max_size=3).map(json.dumps),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=10).map(json.dumps),
)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads)
def test_random_payloads(world, payload):
    calls = []

    def factory(sp, engine):
        calls.append(sp.service)
        return fakes.RecordingScaler(sp.scale)

    data = payload.replace("SPEC", world.service) if isinstance(payload, str) else payload
    stdin = io.TextIOWrapper(io.BytesIO(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data))
    out = runtime.execute(fast=lambda argv: heal.run(
        stdin=stdin, specs=world.specs, audit_log=world.audit, conn={"consul_addr": world.agent.addr},
        environ={"MEDIC_CACHE_DIR": "", "MEDIC_DEFER": "off"}, engine_factory=_FakeEngine, scaler_factory=factory),
        argv=[])
    assert out.status in (Status.OK, Status.WARNING, Status.UNKNOWN)
    assert len(out.text.splitlines()) == 1
    assert set(calls) <= {world.service}  # a payload name reaches a command only if it is a spec's service


def test_payload_naming_the_spec_reaches_the_scaler_once(world):
    """The positive control for the property above: the same path does act when it should."""
    calls = []

    def factory(sp, engine):
        calls.append(sp.service)
        return fakes.RecordingScaler(sp.scale)

    payload = json.dumps([{"Node": "n", "CheckID": "c", "Status": "critical", "ServiceName": world.service},
                          {"Node": "n", "CheckID": "d", "Status": "critical", "ServiceName": "a;rm -rf /"}])
    # the fake engine never shows the containers the scaler "started": only the cooldown (longer than
    # a run waits under the lock) keeps the replay from acting again; no deferred run in a test
    sh.write_spec(world.specs, world.service, world.project, heal={"cooldown": "60s"})
    run = lambda: runtime.execute(fast=lambda argv: heal.run(
        stdin=io.TextIOWrapper(io.BytesIO(payload.encode())), specs=world.specs, audit_log=world.audit,
        conn={"consul_addr": world.agent.addr},
        environ={"MEDIC_CACHE_DIR": "", "CONSUL_INDEX": "42", "MEDIC_DEFER": "off"},
        engine_factory=_FakeEngine, scaler_factory=factory), argv=[])
    out = run()
    assert out.status == Status.OK and calls == [world.service], out.text
    assert "heal(3)" in out.text and "--scale web=3" in out.text
    out = run()  # the replay: cooldown/pending guards, no second action
    assert calls == [world.service] and ": hold:" in out.text
    recs = sh.heal_records(world.audit)
    assert [r["decision"] for r in recs if r["service"] == world.service] == ["heal", "hold"]
    assert recs[1]["index"] == 42 and recs[1]["observed"]["declared"] == 3


def test_failing_node_check_looks_at_every_spec(world):
    """A lost host shows in a checks watch as its serfHealth going critical, naming no service."""
    calls = []

    def factory(sp, engine):
        calls.append(sp.service)
        return fakes.RecordingScaler(sp.scale)

    payload = json.dumps([{"Node": "lost", "CheckID": "serfHealth", "Name": "Serf Health Status",
                           "Status": "critical", "ServiceID": "", "ServiceName": ""}])
    out = runtime.execute(fast=lambda argv: heal.run(
        stdin=io.TextIOWrapper(io.BytesIO(payload.encode())), specs=world.specs, audit_log=world.audit,
        conn={"consul_addr": world.agent.addr}, environ={"MEDIC_CACHE_DIR": "", "MEDIC_DEFER": "off"},
        engine_factory=_FakeEngine, scaler_factory=factory), argv=[])
    assert out.status == Status.OK and calls == [world.service], out.text


def test_all_with_no_specs(tmp_path):
    (tmp_path / "empty").mkdir()
    out = runtime.execute(fast=lambda argv: heal.run(all_=True, specs=str(tmp_path / "empty"),
                                                     audit_log=str(tmp_path / "a.jsonl"), environ={}), argv=[])
    assert out.status == Status.OK and "no specs" in out.text


def test_token_never_reaches_output_or_audit(world):
    secret = "7b1e1a3c-0000-4000-8000-5ec2e75ec2e7"
    r = world.heal("--service", world.service, "--token", secret, env=world.env(
        DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert r.returncode == 3
    assert secret not in r.stdout + r.stderr
    with open(world.audit) as f:
        assert secret not in f.read()


@pytest.mark.slow
def test_a_crashed_holder_frees_the_lock_by_session_ttl(world):
    """A handler killed while holding the lock: its session is never renewed nor destroyed."""
    from consul_medic.handlers.consul import settings
    client = settings.make_client(settings.resolve(world.agent.addr))
    sid = client.session.create(name="crashed medic-heal", behavior="release", ttl=10, lock_delay=0)
    assert client.kv.put(lockmod.lock_key(None, world.service), '{"operation": "heal", "pid": 1}', acquire=sid)
    r = world.heal("--service", world.service, env=world.env(DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert r.returncode == 0 and "another handler is on it" in r.stdout
    # Consul invalidates the session within 2 x TTL; then the next run gets past the lock
    # (and here stops at the dead engine, which proves it did)
    def past_lock():
        r = world.heal("--service", world.service, env=world.env(DOCKER_HOST="unix:///nonexistent/docker.sock"))
        return r.returncode == 3 and "engine: cannot reach" in r.stdout
    support.wait_for(past_lock, timeout=40, interval=1.0, what="the crashed holder's session to expire")


@pytest.mark.parametrize("argv", [
    [],
    ["--specs", "/s", "--consul-addr", "127.0.0.1:8500", "--env", "live", "--token-file", "/t", "--audit-log", "/a"],
    ["--all", "--specs=/s", "--consul-timeout", "2.5", "-v"],
    ["--service", "www.example.com", "--dry-run"],
])
def test_the_handlers_plain_argv_skips_click_with_the_same_meaning(argv, monkeypatch):
    """medic-heal's fast path (no click import) hands run() exactly what the click command does."""
    from consul_medic.handlers.core.status import Outcome
    seen = []
    monkeypatch.setattr(heal, "run", lambda **kw: seen.append(kw) or Outcome(Status.OK, "MEDIC OK - x"))
    assert heal._fast(list(argv)) is not None
    runtime.execute(command=heal._command, fast=None, argv=list(argv))
    assert len(seen) == 2
    fast, slow = seen
    fast["services"], slow["services"] = tuple(fast["services"]), tuple(slow["services"])
    slow = {k: v for k, v in slow.items() if k in fast or v}  # click's other modes: all None/False
    assert fast == slow


@pytest.mark.parametrize("argv", [["--pause", "x"], ["--resume", "x"], ["--reset", "x"], ["--help"],
                                  ["--service", "a", "--service", "b"], ["--not-before", "1", "--service", "a"],
                                  ["--bogus"], ["--consul-timeout", "soon"], ["stray"]])
def test_anything_else_goes_to_click(argv, monkeypatch):
    monkeypatch.setattr(heal, "run", lambda **kw: pytest.fail("the fast path ran %r" % (argv,)))
    assert heal._fast(list(argv)) is None
