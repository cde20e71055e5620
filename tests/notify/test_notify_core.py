"""medic-notify's pure part: transitions, policy, messages. Literal data, no I/O."""
import json

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from consul_medic.handlers.notify import notify_message as message_mod, notify_rules as core
from consul_medic.handlers.spec.spec import HEAL_DEFAULTS, HealPolicy
from consul_medic.watches import checks as checks_payload

OUT_CRIT = "MEDIC CRITICAL - www.example.com 1/3 passing | passing=1;;;0 desired=3;;;0\nmore"
OUT_WARN = "MEDIC WARNING - www.example.com 4/3 passing | passing=4;;;0 desired=3;;;0"
OUT_OK = "MEDIC OK - www.example.com 3/3 passing | passing=3;;;0 desired=3;;;0"
POLICY = core.Policy(True, True, None, core.KINDS, ({"type": "log", "name": "log"},))


def chk(status, output, check_id="medic:www.example.com", node="n1", index=10):
    return checks_payload.from_json([{"Node": node, "CheckID": check_id, "Status": status, "Output": output,
                                      "ServiceID": "medic", "ServiceName": "medic", "ModifyIndex": index}])[0]


def obs_of(status, output, index=10):
    return core.observe_checks([chk(status, output, index=index)], {"www.example.com"})["www.example.com"]


def test_parse_output():
    assert core.parse_output(OUT_CRIT) == ("MEDIC CRITICAL - www.example.com 1/3 passing", 1, 3)
    assert core.parse_output("MEDIC WARNING - x 4/3 passing") == ("MEDIC WARNING - x 4/3 passing", 4, 3)
    assert core.parse_output("MEDIC UNKNOWN - consul: refused") == ("MEDIC UNKNOWN - consul: refused", None, None)
    assert core.parse_output("") == ("", None, None)


def test_observe_checks_filters_and_aggregates():
    payload = [chk("critical", OUT_CRIT, node="n1", index=12), chk("passing", OUT_OK, node="n2", index=15),
               chk("critical", "MEDIC CRITICAL - x", check_id="medic:reconcile"),
               chk("critical", OUT_CRIT, check_id="medic:no-spec"),
               chk("critical", "", check_id="medic:fresh"),  # has not run yet: Consul's initial critical
               chk("critical", OUT_CRIT, check_id="serfHealth")]
    got = core.observe_checks(payload, {"www.example.com", "fresh"})
    assert list(got) == ["www.example.com"]
    o = got["www.example.com"]
    # two monitoring nodes: the worst status, the newest index
    assert (o.slot, o.state, o.kind, o.live, o.desired, o.index) == \
        ("medic:www.example.com", "critical", "critical", 1, 3, 15)
    assert [c["node"] for c in o.checks] == ["n1", "n2"]


def test_transitions_only():
    now = 1000.0
    d = core.judge(None, obs_of("warning", OUT_WARN, 10), now, POLICY)
    assert d.send and d.kind == "warning" and d.record["state"] == "warning" and d.record["index"] == 10
    rec = d.record
    # the same payload again (consul reload, second node): nothing
    d2 = core.judge(rec, obs_of("warning", OUT_WARN, 10), now + 5, POLICY)
    assert not d2.send and d2.record is None and "unchanged" in d2.reason
    # newer index, same state (output changed): nothing, index remembered
    d3 = core.judge(rec, obs_of("warning", OUT_WARN, 11), now + 6, POLICY)
    assert not d3.send and d3.record["index"] == 11
    d4 = core.judge(d3.record, obs_of("critical", OUT_CRIT, 12), now + 7, POLICY)
    assert d4.send and d4.kind == "critical" and d4.reason == "warning -> critical"
    d5 = core.judge(d4.record, obs_of("passing", OUT_OK, 13), now + 8, POLICY)
    assert d5.send and d5.kind == "recovered"


def test_never_notified_passing_says_nothing_and_writes_nothing():
    d = core.judge(None, obs_of("passing", OUT_OK), 1.0, POLICY)
    assert not d.send and d.record is None


def test_stale_payload_is_ignored():
    rec = {"state": "passing", "index": 20, "since": 1.0, "sent": 1.0}
    d = core.judge(rec, obs_of("critical", OUT_CRIT, 19), 5.0, POLICY)
    assert not d.send and d.record is None and d.reason.startswith("stale")
    # same index but a different state: a heal event has overtaken that payload
    d = core.judge(rec, obs_of("critical", OUT_CRIT, 20), 5.0, POLICY)
    assert not d.send and d.reason.startswith("stale")


def test_reminders():
    pol = POLICY._replace(remind_every=600.0)
    rec = core.judge(None, obs_of("critical", OUT_CRIT), 1000.0, pol).record
    assert not core.judge(rec, obs_of("critical", OUT_CRIT), 1599.0, pol).send
    d = core.judge(rec, obs_of("critical", OUT_CRIT), 1600.0, pol)
    assert d.send and d.reminder and d.record["sent"] == 1600.0 and d.record["since"] == 1000.0
    assert not core.judge(d.record, obs_of("critical", OUT_CRIT), 1700.0, pol).send
    # no reminders for a state that is fine
    ok = core.judge(rec, obs_of("passing", OUT_OK, 11), 1601.0, pol).record
    assert not core.judge(ok, obs_of("passing", OUT_OK, 11), 9999.0, pol).send


def test_recovery_off_and_kind_filter_still_record_the_state():
    d = core.judge({"state": "critical", "index": 1}, obs_of("passing", OUT_OK, 2), 5.0,
                    POLICY._replace(recovery=False))
    assert not d.send and d.record["state"] == "passing" and "off" in d.reason
    d = core.judge(None, obs_of("warning", OUT_WARN), 5.0, POLICY._replace(kinds=("critical",)))
    assert not d.send and d.record["state"] == "warning"
    d = core.judge(None, obs_of("warning", OUT_WARN), 5.0, POLICY._replace(enabled=False))
    assert not d.send and d.record["state"] == "warning"


def ev(kind, **kw):
    base = {"kind": kind, "service": "www.example.com", "env": "live", "live": 1, "desired": 3,
            "action": "scale web to 3", "reason": "2 of 3 missing", "audit_ref": "r1"}
    base.update(kw)
    return core.observe_event(base)


def test_heal_events():
    d = core.judge(None, ev("healed"), 1.0, POLICY)
    assert d.send and d.record["state"] == "healed" and d.record["ref"] == "r1"
    assert not core.judge(d.record, ev("healed"), 2.0, POLICY).send  # the same heal twice
    assert core.judge(d.record, ev("healed", audit_ref="r2"), 3.0, POLICY).send  # a new heal
    c = core.judge(d.record, ev("circuit_open", audit_ref="r3"), 4.0, POLICY)
    assert c.send and c.kind == "circuit_open"
    # medic-heal holding on an open circuit every run: one page, not one per run
    assert not core.judge(c.record, ev("circuit_open", audit_ref="r4"), 5.0, POLICY).send
    f = core.judge(c.record, ev("heal_failed"), 6.0, POLICY)
    assert f.send and not core.judge(f.record, ev("heal_failed", audit_ref="r5"), 7.0, POLICY).send


def test_a_reset_circuit_that_opens_again_is_news():
    c1 = core.judge(None, ev("circuit_open")._replace(circuit="1700000000.0"), 1.0, POLICY)
    assert c1.send and c1.record["circuit"] == "1700000000.0"
    again = core.judge(c1.record, ev("circuit_open")._replace(circuit="1700000000.0"), 2.0, POLICY)
    assert not again.send  # the same circuit, told twice
    c2 = core.judge(c1.record, ev("circuit_open")._replace(circuit="1700000900.0"), 3.0, POLICY)
    assert c2.send and c2.reason.startswith("a new open circuit") and c2.record["circuit"] == "1700000900.0"
    # a page sent before the marker was readable: learn the identity, do not page again
    plain = core.judge(None, ev("circuit_open"), 1.0, POLICY).record
    learn = core.judge(plain, ev("circuit_open")._replace(circuit="5.0"), 2.0, POLICY)
    assert not learn.send and learn.record["circuit"] == "5.0"


def test_check_events_share_the_watch_slot():
    o = ev("critical")
    assert (o.slot, o.state, o.index) == ("medic:www.example.com", "critical", None)
    rec = core.judge(None, obs_of("critical", OUT_CRIT, 10), 1.0, POLICY).record
    assert not core.judge(rec, o, 2.0, POLICY).send  # the watch already told
    assert ev("recovered").state == "passing"


@pytest.mark.parametrize("event, msg", [
    ([], "$: an event is a JSON object"),
    ({"kind": "exploded", "service": "a"}, "$.kind"),
    ({"kind": "healed"}, "$.service"),
    ({"kind": "healed", "service": "a/b"}, "$.service"),
    ({"kind": "healed", "service": "a", "live": "1"}, "$.live"),
    ({"kind": "healed", "service": "a", "details": []}, "$.details"),
])
def test_bad_events(event, msg):
    with pytest.raises(ValueError) as e:
        core.observe_event(event)
    assert msg in str(e.value)


def test_policy_merging():
    g = {"remind_every": "30m", "channels": [{"type": "webhook", "name": "ops", "url": "http://x/y"},
                                             {"type": "log", "name": "file", "path": "/tmp/x"}]}
    p = core.policy(g, None)
    assert p.remind_every == 1800.0 and [c["name"] for c in p.channels] == ["ops", "file"]
    p = core.policy(g, {"recovery": False, "channels": ["ops", {"type": "command", "argv": ["sms"]}]})
    assert not p.recovery and [c["name"] for c in p.channels] == ["ops", "command1"]
    assert core.policy({}, {}).channels == ({"type": "log", "name": "log"},)
    with pytest.raises(ValueError, match="no channel named 'pager'"):
        core.policy(g, {"channels": ["pager"]})


def msg_of(**kw):
    m = {"kind": "critical", "service": "www.example.com", "env": "live", "live": 1, "desired": 3,
         "action": "heal", "reason": "2 of 3 missing", "reminder": False}
    m.update(kw)
    return m


def test_short_text():
    assert message_mod.short_text(msg_of()) == "MEDIC CRITICAL live www.example.com 1/3 action: heal - 2 of 3 missing"
    assert message_mod.short_text(msg_of(kind="circuit_open", env=None, live=None, reminder=True)) == \
        "MEDIC CIRCUIT OPEN (reminder) www.example.com ?/3 action: heal - 2 of 3 missing"
    long = message_mod.short_text(msg_of(service="s" * 127, reason="r" * 500))
    assert len(long) <= 160 and "1/3 action: heal" in long and "..." in long


@hsettings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(core.KINDS), service=st.text(min_size=1, max_size=127),
       env=st.none() | st.text(max_size=40),
       live=st.none() | st.integers(0, 10 ** 6), desired=st.none() | st.integers(0, 10 ** 6),
       action=st.none() | st.text(max_size=300), reason=st.none() | st.text(max_size=500), reminder=st.booleans())
def test_short_text_always_fits_an_sms(kind, service, env, live, desired, action, reason, reminder):
    text = message_mod.short_text(dict(kind=kind, service=service, env=env, live=live, desired=desired, action=action,
                                reason=reason, reminder=reminder))
    assert len(text) <= 160
    assert all(32 <= ord(c) < 127 for c in text)
    assert text.startswith("MEDIC ")


def test_document_and_env_vars():
    o = ev("heal_failed", details={"instances": [{"id": "web-1", "status": "critical"}],
                                   "failing_checks": [{"check_id": "service:web-1", "output": "503"}],
                                   "decision": "heal(3)", "compose_exit": 1})
    d = core.judge(None, o, 1700000000.0, POLICY)
    m = message_mod.message(o, d, "live", None, None, 1700000000.0, "mon1")
    doc = message_mod.document(m, o)
    assert doc["kind"] == "heal_failed" and doc["time"] == "2023-11-14T22:13:20Z"
    assert doc["instances"] == [{"id": "web-1", "status": "critical"}]
    assert doc["checks"] == [{"check_id": "service:web-1", "output": "503"}]
    assert doc["decision"] == "heal(3)" and doc["details"] == {"compose_exit": 1}
    assert doc["short"] == message_mod.short_text(m) and json.loads(message_mod.dumps(doc))["audit_ref"] == "r1"
    envs = message_mod.env_vars(m)
    assert envs["MEDIC_KIND"] == "heal_failed" and envs["MEDIC_LIVE"] == "1" and envs["MEDIC_MESSAGE"] == doc["short"]
    assert all(isinstance(v, str) for v in envs.values())


def test_default_action():
    heal = HealPolicy(**HEAL_DEFAULTS)

    class S:
        pass
    s = S()
    s.heal = heal
    assert message_mod.default_action("critical", s) == "heal"
    assert message_mod.default_action("warning", s) == "none: a human must look"
    s.heal = heal._replace(enabled=False)
    assert message_mod.default_action("critical", s) == "none (heal disabled)"


@hsettings(max_examples=300, deadline=None)
@given(states=st.lists(st.sampled_from(core.STATES), min_size=1, max_size=30),
       replays=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=30))
def test_one_message_per_transition_whatever_the_replays(states, replays):
    """A payload sequence in index order, with replays of any earlier payload (consul
    reload, a second node, out-of-order delivery) mixed in: exactly one message per
    change of state, none for a replay."""
    payloads = [obs_of(s, {"passing": OUT_OK, "warning": OUT_WARN, "critical": OUT_CRIT}[s], index=i + 1)
                for i, s in enumerate(states)]
    stream = []
    for i, p in enumerate(payloads):
        stream.append((p, True))
        stream += [(payloads[min(j, i)], False) for at, j in replays if at == i]
    record, sent, now = None, [], 1000.0
    for p, fresh in stream:
        now += 1
        d = core.judge(record, p, now, POLICY)
        if d.record is not None:
            record = d.record
        if d.send:
            assert fresh, "a replay sent a message: %r" % (p,)
            sent.append(d.kind)
    expected, last = [], "passing"
    for s in states:
        if s != last:
            expected.append({"passing": "recovered"}.get(s, s))
        last = s
    assert sent == expected


def test_a_run_of_many_services_is_one_message_per_kind_and_channels():
    v = lambda kind, send=True, reminder=False: core.Verdict(send, kind, {}, "new", reminder)  # noqa: E731
    other = POLICY._replace(channels=({"type": "webhook", "name": "hook", "url": "http://127.0.0.1:1/x"},))
    items = [(None, POLICY, v("critical")), (None, POLICY, v("critical")), (None, other, v("critical")),
             (None, POLICY, v("critical", send=False)), (None, POLICY, v("critical")),
             (None, POLICY, v("recovered")), (None, POLICY, v("critical", reminder=True))]
    assert message_mod.batches(items) == [[0, 1, 4], [2], [5], [6]]
    assert message_mod.batches(items[:2]) == [[0], [1]]          # below GROUP_MIN: one message each

    names = ["www.site%03d.example" % i for i in range(25)]
    built = [(msg_of(service=n, live=0, desired=2), {"service": n}) for n in names]
    msg, doc = message_mod.grouped(built)
    assert (msg["service"], msg["live"], msg["desired"], msg["action"]) == ("25 services", 0, 50, "heal")
    assert msg["reason"].startswith("www.site000.example, www.site001.example") and msg["reason"].endswith("(+5 more)")
    assert [d["service"] for d in doc["services"]] == names and doc["short"].startswith("MEDIC CRITICAL live 25 services 0/50")
    assert len(doc["short"]) <= 160
    env = message_mod.env_vars(msg)
    assert env["MEDIC_SERVICE"] == "25 services" and env["MEDIC_SERVICES"].split("\n") == names
    mixed, _ = message_mod.grouped(built[:2] + [(msg_of(service="x", live=None, action="none"), {})])
    assert mixed["live"] is None and mixed["action"] == "various"
    many = message_mod.env_vars(message_mod.grouped([(msg_of(service="s%05d." % i + "x" * 60), {})
                                                     for i in range(500)])[0])["MEDIC_SERVICES"]
    assert len(many) <= message_mod.ENV_MAX and many.endswith("more)")
