"""medic-notify as an executable against a real Consul agent (KV state with CAS)."""
import json
import os
import subprocess
import time

import pytest

import support
from consul_medic.handlers.core import alerts, audit, keys
from consul_medic.handlers.consul import settings
from support_notify import Receiver, check, hook_argv, hook_messages, kv_record, write_spec

pytestmark = pytest.mark.consul

CONSUL_TOKEN = "consul-acl-token-4b1d-secret"
HOOK_TOKEN = "webhook-header-token-77ae-secret"


@pytest.fixture
def world(tmp_path, consul_agent, unique):
    """A spec dir with one service notifying a real receiver and a command hook."""
    rx = Receiver().__enter__()
    tok = tmp_path / "hook.token"
    tok.write_text(HOOK_TOKEN)
    svc = "svc-%s.example.com" % unique
    hooks = str(tmp_path / "hook")
    notify = {"channels": [{"type": "webhook", "name": "rx", "url": rx.url + "/in/" + HOOK_TOKEN[:8],
                            "token_file": str(tok), "timeout": "2s", "retries": 2, "backoff": "100ms"},
                           {"type": "command", "name": "sms", "argv": hook_argv(hooks)}]}
    write_spec(str(tmp_path / "specs"), svc, notify)

    class W:
        pass
    w = W()
    w.rx, w.svc, w.hooks, w.tmp, w.agent = rx, svc, hooks, tmp_path, consul_agent
    w.specs = str(tmp_path / "specs")
    w.audit = str(tmp_path / "audit.jsonl")
    w.env = support.medic_env(CONSUL_HTTP_ADDR=consul_agent.addr, CONSUL_HTTP_TOKEN=CONSUL_TOKEN,
                              MEDIC_AUDIT_LOG=w.audit, MEDIC_NOTIFY_CONFIG=str(tmp_path / "none.json"))

    def watch(*checks, args=()):
        return support.run_medic("medic-notify", ["watch", "--specs", w.specs] + list(args),
                                 input=json.dumps(list(checks)), env=w.env)

    def event(ev, args=()):
        return support.run_medic("medic-notify", ["event", "--specs", w.specs] + list(args),
                                 input=json.dumps(ev), env=w.env)
    w.watch, w.event = watch, event
    yield w
    rx.__exit__(None, None, None)


def kinds(w):
    return [b["kind"] for b in w.rx.bodies()]


def hook_kinds(w):
    return [m["env"]["MEDIC_KIND"] for m in hook_messages(w.hooks)] if os.path.isdir(w.hooks) else []


def test_transitions_replays_and_state_in_kv(world):
    w = world
    r = w.watch(check(w.svc, "passing", 3, index=5))
    assert r.returncode == 0, r.stdout + r.stderr
    assert kinds(w) == [] and kv_record(w.agent, keys.key(None, "notify", w.svc, "medic:" + w.svc)) is None

    r = w.watch(check(w.svc, "warning", 4, index=6))
    assert r.returncode == 0 and "1 message(s) sent" in r.stdout, r.stdout
    for _ in range(3):  # replays (consul reload re-runs the handler with the same payload)
        assert "0 message(s) sent" in w.watch(check(w.svc, "warning", 4, index=6)).stdout
    w.watch(check(w.svc, "critical", 1, index=7))
    w.watch(check(w.svc, "critical", 1, index=7))
    w.watch(check(w.svc, "warning", 4, index=6))  # stale, out of order: ignored
    w.watch(check(w.svc, "passing", 3, index=9))
    assert kinds(w) == ["warning", "critical", "recovered"]
    assert hook_kinds(w) == ["warning", "critical", "recovered"]

    stored = kv_record(w.agent, keys.key(None, "notify", w.svc, "medic:" + w.svc))
    assert stored["state"] == "passing" and stored["index"] == 9 and stored["previous"] == "critical"

    crit = w.rx.bodies()[1]
    assert (crit["service"], crit["live"], crit["desired"], crit["action"], crit["previous"]) == \
        (w.svc, 1, 3, "heal", "warning")
    assert crit["checks"][0]["output"].startswith("MEDIC CRITICAL - ")
    sms = hook_messages(w.hooks)[1]
    assert sms["stdin"].strip() == crit["short"] and len(crit["short"]) <= 160

    recs = [r for r in audit.read(w.audit) if r.get("slot") == "medic:" + w.svc]
    assert [r["result"] for r in recs].count("sent") == 3
    assert any(r["reason"].startswith("stale") for r in recs)
    assert sum(r["reason"].startswith("unchanged") for r in recs) >= 4


def test_heal_events_and_circuit(world):
    w = world
    base = {"service": w.svc, "live": 1, "desired": 3, "action": "scale web to 3", "reason": "2 of 3 missing"}
    w.watch(check(w.svc, "critical", 1, index=20))
    w.event(dict(base, kind="critical"))  # medic-heal saw the same critical: already told
    w.event(dict(base, kind="healed", audit_ref="a1"))
    w.event(dict(base, kind="healed", audit_ref="a1"))  # duplicate delivery
    w.event(dict(base, kind="circuit_open", audit_ref="a2", reason="5 attempts in 10m"))
    w.event(dict(base, kind="circuit_open", audit_ref="a3", reason="5 attempts in 10m"))
    w.watch(check(w.svc, "passing", 3, index=25))
    w.event(dict(base, kind="circuit_open", audit_ref="a4"))  # a new crash loop after recovery is news
    assert kinds(w) == ["critical", "healed", "circuit_open", "recovered", "circuit_open"]
    assert hook_kinds(w) == kinds(w)
    # medic-heal's marker medic/<env>/circuit/<service> {"opened": t}: --reset deletes it, a new
    # crash loop writes a new one; that is a new page even though the service never passed between
    marker = "/v1/kv/" + keys.key(None, "circuit", w.svc)
    w.agent.api(marker, "PUT", {"opened": 1000.0})
    w.event(dict(base, kind="circuit_open"))  # the same circuit (a4), now identified: no page
    w.event(dict(base, kind="circuit_open"))
    w.agent.api(marker, "DELETE")
    w.agent.api(marker, "PUT", {"opened": 2000.0})
    w.event(dict(base, kind="circuit_open"))
    assert kinds(w) == ["critical", "healed", "circuit_open", "recovered", "circuit_open", "circuit_open"]


def test_two_nodes_racing_send_once(world):
    """Two monitoring nodes run the handler on the same transition at the same moment:
    check-and-set lets exactly one of them send."""
    w = world
    payload = json.dumps([check(w.svc, "critical", 0, index=30, node="mon1"),
                          check(w.svc, "critical", 0, index=31, node="mon2")])
    procs = [subprocess.Popen([os.path.join(support.BIN, "medic-notify"), "watch", "--specs", w.specs],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=w.env)
             for _ in range(6)]
    for p in procs:
        p.stdin.write(payload)
        p.stdin.close()
    outs = [p.stdout.read() for p in procs]
    for p in procs:
        assert p.wait(60) == 0
    assert kinds(w) == ["critical"], outs
    assert sum("1 message(s) sent" in o for o in outs) == 1


def test_channel_failure_is_audited_and_state_kept(world, tmp_path):
    w = world
    bad = {"channels": [{"type": "webhook", "name": "down", "url": "http://127.0.0.1:1/x", "retries": 1,
                         "backoff": "50ms"}]}
    svc = w.svc.replace("svc-", "bad-")
    write_spec(w.specs, svc, bad)
    r = w.watch(check(svc, "critical", 0, index=40))
    assert r.returncode == 1 and "1 channel failure(s)" in r.stdout.splitlines()[0], r.stdout
    (rec,) = [x for x in audit.read(w.audit) if x.get("service") == svc]
    assert rec["result"] == "channel_failed" and rec["channels"][0]["attempts"] == 2
    assert rec["failed"][0].startswith("down: ConnectionError")
    # claimed before sending: a replay does not resend (at most once per transition)
    assert "0 message(s) sent" in w.watch(check(svc, "critical", 0, index=40)).stdout


def test_bad_input_is_one_line_and_no_action(world):
    w = world
    r = w.watch()
    assert r.returncode == 0 and "0 service(s)" in r.stdout  # [] is a valid, empty payload
    r = support.run_medic("medic-notify", ["watch", "--specs", w.specs], input="{", env=w.env)
    assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - payload: checks watch: payload is not JSON")
    r = w.event({"kind": "exploded", "service": w.svc})
    assert r.returncode == 3 and "$.kind" in r.stdout and len(r.stdout.splitlines()) == 1
    cfg = w.tmp / "notify.json"
    cfg.write_text(json.dumps({"channels": [{"type": "webhook"}]}))
    r = w.watch(check(w.svc, "critical", 0), args=["--notify-config", str(cfg)])
    assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - spec: %s: $.channels[0]" % cfg), r.stdout
    assert kinds(w) == []


def test_consul_down_sends_nothing_and_audits(world):
    w = world
    env = dict(w.env, CONSUL_HTTP_ADDR="http://127.0.0.1:%d" % support.free_port(), MEDIC_CONSUL_TIMEOUT="1")
    r = support.run_medic("medic-notify", ["watch", "--specs", w.specs],
                          input=json.dumps([check(w.svc, "critical", 0)]), env=env)
    assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - consul: cannot read KV medic/default/notify/")
    assert kinds(w) == [] and hook_kinds(w) == []
    (rec,) = audit.read(w.audit)
    assert rec["result"] == "error" and rec["decision"] == "none"


def test_global_config_and_named_channels(world, tmp_path):
    w = world
    cfg = tmp_path / "notify.json"
    logf = tmp_path / "notify.log"
    cfg.write_text(json.dumps({"remind_every": "1h", "channels": [{"type": "log", "name": "file", "path": str(logf)},
                                                                  {"type": "webhook", "name": "rx", "url": w.rx.url}]}))
    svc = w.svc.replace("svc-", "glob-")
    write_spec(w.specs, svc, {"channels": ["file"], "kinds": ["critical"]})
    w.watch(check(svc, "warning", 4, index=50), args=["--notify-config", str(cfg)])
    w.watch(check(svc, "critical", 1, index=51), args=["--notify-config", str(cfg)])
    assert logf.read_text().splitlines() == ["MEDIC CRITICAL %s 1/3 action: heal - %s 1/3 passing"
                                             % (svc, svc)]
    assert kinds(w) == []  # the spec chose the file channel only


def test_secrets_never_appear(world):
    w = world
    w.watch(check(w.svc, "critical", 1, index=60))
    w.event({"kind": "healed", "service": w.svc, "live": 3, "desired": 3, "action": "scale", "reason": "ok",
             "audit_ref": "z"})
    # a failing webhook whose error might echo its URL
    write_spec(w.specs, w.svc.replace("svc-", "sec-"),
               {"channels": [{"type": "webhook", "url": "http://127.0.0.1:1/hooks/" + HOOK_TOKEN, "retries": 0,
                              "token_file": str(w.tmp / "hook.token")}]})
    r = w.watch(check(w.svc.replace("svc-", "sec-"), "critical", 1, index=61), args=["-v"])
    assert w.rx.count() == 2
    assert w.rx.requests[0]["headers"]["Authorization"] == "Bearer " + HOOK_TOKEN  # it was used...
    seen = [json.dumps(w.rx.bodies()), json.dumps(hook_messages(w.hooks)), open(w.audit).read(), r.stdout, r.stderr]
    for text in seen:  # ...and never shown
        assert HOOK_TOKEN not in text and CONSUL_TOKEN not in text


def test_emit_returns_at_once_with_a_hanging_webhook(world, tmp_path):
    """alerts.emit (what medic-heal calls) hands over and returns; the hanging webhook is
    retried by the detached medic-notify and its failure audited."""
    w = world
    with Receiver(default="hang", hang_seconds=20) as hang:
        svc = w.svc.replace("svc-", "hang-")
        write_spec(w.specs, svc, {"channels": [{"type": "webhook", "name": "hang", "url": hang.url, "timeout": "1s",
                                                "retries": 2, "backoff": "100ms"}]})
        cfg = settings.resolve(consul_addr=w.agent.addr, token=CONSUL_TOKEN, environ={})
        log = audit.AuditLog(w.audit, secrets=[CONSUL_TOKEN])
        old = dict(os.environ)
        os.environ.update({"MEDIC_NOTIFY_CONFIG": str(tmp_path / "none.json")})
        try:
            start = time.monotonic()
            ok = alerts.emit({"kind": "heal_failed", "service": svc, "live": 0, "desired": 3, "action": "scale",
                              "reason": "compose exit 1", "audit_ref": "h1"}, log, specs=w.specs, settings=cfg)
            took = time.monotonic() - start
        finally:
            os.environ.clear()
            os.environ.update(old)
        assert ok
        assert took < hang.hang_seconds / 4  # returned long before the webhook could even time out once
        recs = support.wait_for(lambda: [r for r in audit.read(w.audit) if r.get("service") == svc
                                         and r.get("result") == "channel_failed"], timeout=60, what="audited failure")
        assert hang.count() == 3 and recs[0]["channels"][0]["attempts"] == 3
        assert "timeout after 1s" in recs[0]["failed"][0]
        emitted = [r for r in audit.read(w.audit) if r.get("step") == "emit"]
        assert emitted and emitted[0]["handed_over"] is True
        assert CONSUL_TOKEN not in open(w.audit).read()


def test_emit_never_raises(tmp_path, monkeypatch):
    log = audit.AuditLog(str(tmp_path / "a.jsonl"))
    assert alerts.emit({"kind": "exploded", "service": "x"}, log) is False
    assert alerts.emit("not a dict", log) is False
    assert alerts.emit({"kind": "healed", "service": "x", "details": {"when": object()}}, log,
                       settings="not settings") is False  # a caller's bug is audited, not raised
    monkeypatch.setenv("MEDIC_NOTIFY", "off")
    assert alerts.emit({"kind": "healed", "service": "x"}, log) is True
    recs = audit.read(log.path)
    assert [r["handed_over"] for r in recs] == [False, False, False, True]
    assert [r["kind"] for r in recs] == ["notify"] * 4
    assert "unknown event kind 'exploded'" in recs[0]["error"] and recs[3]["reason"].startswith("MEDIC_NOTIFY=off")
    assert recs[3]["disabled"] is True and not recs[0]["disabled"]


def test_many_services_with_a_hanging_webhook_share_one_budget(world):
    """Claims are sequential, sends parallel: every service's first attempt reaches the
    hanging webhook before the first attempt's timeout has run out."""
    w = world
    with Receiver(default="hang", hang_seconds=20) as hang:
        names = [w.svc.replace("svc-", "par%d-" % i) for i in range(4)]
        for i, n in enumerate(names):  # each its own channel: four messages (the same channels would be one)
            write_spec(w.specs, n, {"channels": [{"type": "webhook", "url": "%s/%d" % (hang.url, i), "timeout": "4s",
                                                  "retries": 0}]})
        r = w.watch(*[check(n, "critical", 0, index=70) for n in names])
        assert r.returncode == 1 and "4 message(s) sent, 4 channel failure(s)" in r.stdout, r.stdout
        times = sorted(x["time"] for x in hang.requests)
        assert len(times) == 4 and times[-1] - times[0] < 4


def test_many_services_going_critical_at_once_are_one_message_per_channel(world):
    """A storm in one payload: one webhook message and one SMS naming every service, one state
    and one audit record per service, and a replay sends nothing."""
    w = world
    names = [w.svc.replace("svc-", "storm%d-" % i) for i in range(6)]
    notify = {"channels": [{"type": "webhook", "name": "rx", "url": w.rx.url + "/storm", "timeout": "2s"},
                           {"type": "command", "name": "sms", "argv": hook_argv(w.hooks)}]}
    for n in names:
        write_spec(w.specs, n, notify)
    payload = [check(n, "critical", 0, index=80 + i) for i, n in enumerate(names)]
    r = w.watch(*payload)
    assert r.returncode == 0 and "6 service(s), 6 message(s) sent" in r.stdout, r.stdout
    (body,) = w.rx.bodies()
    assert body["service"] == "6 services" and sorted(d["service"] for d in body["services"]) == sorted(names)
    assert (body["live"], body["desired"]) == (0, 18) and body["short"].startswith("MEDIC CRITICAL 6 services 0/18")
    (sms,) = hook_messages(w.hooks)
    assert sms["env"]["MEDIC_SERVICES"].split("\n") == sorted(names) and len(sms["stdin"].strip()) <= 160
    recs = [x for x in audit.read(w.audit) if x.get("kind") == "notification"]
    assert sorted(x["service"] for x in recs) == sorted(names)
    assert all(x["grouped"] == 6 and x["result"] == "sent" for x in recs)
    for n in names:
        assert kv_record(w.agent, keys.key(None, "notify", n, "medic:" + n))["state"] == "critical"
    assert "0 message(s) sent" in w.watch(*payload).stdout and len(w.rx.bodies()) == 1
    replay = [x for x in audit.read(w.audit) if x.get("kind") == "notification"][len(recs):]
    assert len(replay) == 1 and replay[0]["unchanged"] == 6 and sorted(replay[0]["services"]) == sorted(names), replay


def test_sweep_sends_due_reminders_from_consul_state(world, unique):
    """`sweep` reads medic's checks from Consul itself: a persisting critical gets one
    reminder per remind_every, not one per run."""
    w = world
    svc = w.svc.replace("svc-", "rem-")
    write_spec(w.specs, svc, {"remind_every": "2s", "channels": [{"type": "webhook", "url": w.rx.url}]})
    medic_service = "medic-" + unique
    w.agent.api("/v1/agent/service/register", "PUT", {
        "ID": medic_service, "Name": medic_service, "Port": 1,
        "Check": {"CheckID": "medic:" + svc, "Name": "medic " + svc, "TTL": "10m", "Status": "passing"}})
    # (a status change syncs to the catalog at once; an output-only change waits for check_update_interval)
    try:
        w.agent.api("/v1/agent/check/update/medic:" + svc, "PUT", {
            "Status": "critical", "Output": "MEDIC CRITICAL - %s 1/3 passing | passing=1;;;0 desired=3;;;0" % svc})
        support.wait_for(lambda: [c for c in w.agent.api("/v1/health/checks/" + medic_service)
                                  if c["Output"].startswith("MEDIC")], what="the check in the catalog")
        args = ["sweep", "--specs", w.specs, "--medic-service", medic_service]
        r = support.run_medic("medic-notify", args, env=w.env)
        assert r.returncode == 0 and "1 message(s) sent" in r.stdout, r.stdout + r.stderr
        assert "0 message(s) sent" in support.run_medic("medic-notify", args, env=w.env).stdout
        time.sleep(2.5)
        assert "1 message(s) sent" in support.run_medic("medic-notify", args, env=w.env).stdout
        bodies = w.rx.bodies()
        assert [(b["kind"], b["reminder"]) for b in bodies] == [("critical", False), ("critical", True)]
        assert bodies[1]["short"].startswith("MEDIC CRITICAL (reminder) ")
    finally:
        w.agent.deregister(medic_service)


def test_a_burst_of_distinct_heals_all_get_through(world):
    """Many writers to one state key at once: CAS conflicts are retried, none is lost."""
    w = world
    procs = []
    for i in range(8):
        p = subprocess.Popen([os.path.join(support.BIN, "medic-notify"), "event", "--specs", w.specs],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=w.env)
        p.stdin.write(json.dumps({"kind": "healed", "service": w.svc, "audit_ref": "burst-%d" % i}))
        p.stdin.close()
        procs.append(p)
    for p in procs:
        assert p.wait(60) == 0, p.stdout.read()
    assert sorted(b["audit_ref"] for b in w.rx.bodies()) == ["burst-%d" % i for i in range(8)]


def test_environment_selects_overrides_and_kv_namespace(world, tmp_path):
    w = world
    svc = w.svc.replace("svc-", "env-")
    logf = tmp_path / "live.log"
    write_spec(w.specs, svc, {"channels": [{"type": "webhook", "url": w.rx.url}]},
               environments={"live": {"notify": {"channels": [{"type": "log", "path": str(logf)}]}}})
    w.watch(check(svc, "critical", 1, index=80), args=["--env", "live"])
    assert w.rx.count() == 0 and logf.read_text().startswith("MEDIC CRITICAL live %s 1/3" % svc)
    assert kv_record(w.agent, keys.key("live", "notify", svc, "medic:" + svc))["state"] == "critical"
    assert kv_record(w.agent, keys.key(None, "notify", svc, "medic:" + svc)) is None
    w.watch(check(svc, "critical", 1, index=80))  # no environment: its own state, its own channels
    assert [b["env"] for b in w.rx.bodies()] == [None]


def test_webhook_500_retried_then_delivered_and_audited(world):
    w = world
    with Receiver(script=[500, 502]) as flaky:
        svc = w.svc.replace("svc-", "flaky-")
        write_spec(w.specs, svc, {"channels": [{"type": "webhook", "name": "flaky", "url": flaky.url,
                                                "backoff": "100ms", "retries": 3}]})
        r = w.watch(check(svc, "warning", 4, index=90))
        assert r.returncode == 0, r.stdout
        assert flaky.count() == 3 and [json.loads(x["body"])["kind"] for x in flaky.requests] == ["warning"] * 3
        (rec,) = [x for x in audit.read(w.audit) if x.get("service") == svc]
        assert rec["result"] == "sent" and rec["channels"][0]["attempts"] == 3 and rec["channels"][0]["ok"]
        assert rec["channels"][0]["retried"] == ["HTTP 500", "HTTP 502"]


def test_event_for_a_service_without_spec_uses_the_global_file(world, tmp_path):
    w = world
    cfg = tmp_path / "notify.json"
    cfg.write_text(json.dumps({"channels": [{"type": "webhook", "url": w.rx.url}]}))
    r = w.event({"kind": "circuit_open", "service": "nospec-" + w.svc, "reason": "crash loop"},
                args=["--notify-config", str(cfg)])
    assert r.returncode == 0 and "spec not used: " in r.stdout, r.stdout
    assert kinds(w) == ["circuit_open"]
    (rec,) = [x for x in audit.read(w.audit) if x.get("service") == "nospec-" + w.svc]
    assert rec["note"].startswith("spec not used: ") and rec["result"] == "sent"


@pytest.mark.parametrize("stored", [b'{"state": 5, "index": "x"}', b"\xffgarbage", b"[1, 2]"],
                         ids=["wrong-types", "garbage", "not-object"])
def test_unreadable_record_is_unknown_said_once_and_replaced(world, stored):
    w = world
    key = keys.key(None, "notify", w.svc, "medic:" + w.svc)
    client = settings.make_client(settings.resolve(w.agent.addr, environ={}))
    client.kv.put(key, stored)
    r = w.watch(check(w.svc, "critical", 0, index=20))
    assert r.returncode == 0 and "1 message(s) sent" in r.stdout and "stored record unreadable" in r.stdout, r.stdout
    assert kinds(w) == ["critical"]
    assert kv_record(w.agent, key)["state"] == "critical"  # overwritten with CAS
    r = w.watch(check(w.svc, "critical", 0, index=21))
    assert "0 message(s) sent" in r.stdout and "unreadable" not in r.stdout, r.stdout  # said once
    recs = [x for x in audit.read(w.audit) if x.get("kind") == "notification"]
    assert [bool(x.get("unreadable")) for x in recs] == [True, False]
