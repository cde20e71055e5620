"""Channels against a real local HTTP receiver and real subprocesses."""
import json
import time

import pytest
import responses

from consul_medic.handlers.notify import channels, notify_message
from support_notify import Receiver, hook_argv, hook_messages

SECRET = "s3cr3t-webhook-token-9f2c"
MSG = {"kind": "critical", "service": "www.example.com", "env": "live", "state": "critical", "previous": "passing",
       "live": 1, "desired": 3, "action": "heal", "reason": "2 of 3 missing", "audit_ref": "r1",
       "check": "medic:www.example.com", "reminder": False, "source": "watch", "time": 1.0, "host": "mon1"}
DOC = notify_message.document(MSG)


@pytest.fixture
def token_file(tmp_path):
    p = tmp_path / "token"
    p.write_text(SECRET + "\n")
    return str(p)


def fast(ch, **kw):
    base = {"timeout": 1, "retries": 3, "backoff": 0.05, "backoff_max": 0.2, "max_time": 10}
    base.update(ch)
    base.update(kw)
    return base


def test_webhook_posts_json_with_header_token(token_file):
    with Receiver() as rx:
        ch = fast({"type": "webhook", "name": "ops", "url": rx.url + "/hook/T0/B0", "token_file": token_file})
        r = channels.send_one(ch, MSG, DOC)
        assert r.ok and r.attempts == 1 and r.error is None
        (req,) = rx.requests
        assert req["path"] == "/hook/T0/B0"
        assert req["headers"]["Authorization"] == "Bearer " + SECRET
        assert json.loads(req["body"]) == json.loads(notify_message.dumps(DOC))
        assert SECRET not in req["body"]


def test_webhook_custom_header_and_short_format(token_file):
    with Receiver() as rx:
        ch = fast({"type": "webhook", "url": rx.url, "token_file": token_file, "header": "X-Hook-Token",
                   "format": "short"})
        assert channels.send_one(ch, MSG, DOC).ok
        (req,) = rx.requests
        assert req["headers"]["X-Hook-Token"] == SECRET and "Authorization" not in req["headers"]
        assert json.loads(req["body"]) == {"text": notify_message.short_text(MSG)}


def test_webhook_500_is_retried_with_backoff():
    with Receiver(script=[500, 503]) as rx:
        pauses = []
        r = channels.send_one(fast({"type": "webhook", "url": rx.url}), MSG, DOC,
                              sleep=lambda s: (pauses.append(s), time.sleep(s)))
        assert r.ok and r.attempts == 3 and rx.count() == 3 and r.retried == ["HTTP 500", "HTTP 503"]
        assert pauses == [0.05, 0.1]  # exponential backoff between attempts


def test_backoff_is_capped_and_bounded_by_max_time():
    pauses, clock = [], [0.0]
    ch = {"type": "webhook", "retries": 10, "backoff": 1, "backoff_max": 4, "max_time": 20}

    def once(remaining):
        clock[0] += 1  # each attempt takes 1 s
        return False, "HTTP 503", True

    def sleep(s):
        pauses.append(s)
        clock[0] += s

    ok, attempts, error, retried = channels._attempts(ch, once, sleep, lambda: clock[0])
    assert not ok and pauses == [1, 2, 4, 4] and attempts == 5 and "gave up: max_time 20s" in error
    assert retried == ["HTTP 503"] * 4
    assert clock[0] <= 20


def test_webhook_that_keeps_failing_gives_up_after_its_retries():
    with Receiver(default=500) as rx:
        r = channels.send_one(fast({"type": "webhook", "url": rx.url, "retries": 2}), MSG, DOC)
        assert not r.ok and r.attempts == 3 and r.error == "HTTP 500" and rx.count() == 3


def test_webhook_4xx_is_not_retried():
    with Receiver(default=404) as rx:
        r = channels.send_one(fast({"type": "webhook", "url": rx.url}), MSG, DOC)
        assert not r.ok and r.attempts == 1 and r.error == "HTTP 404"


def test_webhook_timeout_is_retried_within_max_time():
    with Receiver(default="hang", hang_seconds=5) as rx:
        r = channels.send_one(fast({"type": "webhook", "url": rx.url, "timeout": 0.3, "retries": 10,
                                    "max_time": 1.5}), MSG, DOC)
        # max_time ends it, not the 11 attempts retries allow (the budget arithmetic itself is
        # tested with a fake clock in test_backoff_is_capped_and_bounded_by_max_time)
        assert not r.ok and "timeout after" in r.error and "gave up: max_time 1.5s" in r.error
        assert 2 <= r.attempts < 11 and rx.count() == r.attempts
        assert r.retried and all(e.startswith("timeout after ") for e in r.retried)


def test_webhook_errors_never_show_the_url_path_or_token(token_file):
    url = "http://127.0.0.1:1/services/T00/B00/%s" % SECRET
    r = channels.send_one(fast({"type": "webhook", "url": url, "token_file": token_file, "retries": 1}), MSG, DOC)
    assert not r.ok and r.attempts == 2 and "ConnectionError" in r.error
    assert SECRET not in r.error and "T00" not in r.error
    assert channels.origin(url) == "http://127.0.0.1:1"
    assert set(channels.secrets([{"type": "webhook", "url": url, "token_file": token_file}])) == {SECRET, url}


def test_webhook_unreadable_token_file_does_not_send(tmp_path):
    with Receiver() as rx:
        r = channels.send_one(fast({"type": "webhook", "url": rx.url, "token_file": str(tmp_path / "none")}),
                              MSG, DOC)
        assert not r.ok and "token_file unreadable" in r.error and rx.count() == 0


@responses.activate
def test_webhook_connection_reset_is_retried():
    import requests
    responses.add(responses.POST, "http://hooks.invalid/x", body=requests.exceptions.ConnectionError("reset"))
    responses.add(responses.POST, "http://hooks.invalid/x", json={}, status=200)
    r = channels.send_one(fast({"type": "webhook", "url": "http://hooks.invalid/x"}), MSG, DOC)
    assert r.ok and r.attempts == 2


def test_command_channel_stdin_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "consul-secret-token-77")
    monkeypatch.setenv("MEDIC_SOMETHING_ELSE", "x")
    out = str(tmp_path / "hook")
    r = channels.send_one(fast({"type": "command", "argv": hook_argv(out), "env": {"SMS_TO": "+100"}}), MSG, DOC)
    assert r.ok and r.attempts == 1
    (m,) = hook_messages(out)
    assert m["stdin"] == notify_message.short_text(MSG) + "\n"
    env = m["env"]
    assert env["MEDIC_KIND"] == "critical" and env["MEDIC_SERVICE"] == "www.example.com"
    assert env["MEDIC_LIVE"] == "1" and env["MEDIC_DESIRED"] == "3" and env["MEDIC_ENV"] == "live"
    assert env["MEDIC_MESSAGE"] == notify_message.short_text(MSG) and env["SMS_TO"] == "+100"
    assert "CONSUL_HTTP_TOKEN" not in env and "MEDIC_SOMETHING_ELSE" not in env
    assert "consul-secret-token-77" not in json.dumps(m)


def test_command_channel_json_format(tmp_path):
    out = str(tmp_path / "hook")
    assert channels.send_one(fast({"type": "command", "argv": hook_argv(out), "format": "json"}), MSG, DOC).ok
    (m,) = hook_messages(out)
    assert json.loads(m["stdin"])["kind"] == "critical"


def test_command_channel_failure_is_retried(tmp_path):
    out = str(tmp_path / "hook")
    r = channels.send_one(fast({"type": "command", "argv": hook_argv(out, exit_code=2), "retries": 2}), MSG, DOC)
    assert not r.ok and r.attempts == 3 and r.error == "exit 2: hook failing on purpose"
    assert len(hook_messages(out)) == 3


def test_command_channel_timeout_kills_it(tmp_path):
    out = str(tmp_path / "hook")
    start = time.monotonic()
    r = channels.send_one(fast({"type": "command", "argv": hook_argv(out, sleep=30), "timeout": 0.5,
                                "retries": 0}), MSG, DOC)
    assert not r.ok and r.error == "timeout after 0.5s" and time.monotonic() - start < 10
    time.sleep(0.2)
    assert hook_messages(out) == []  # killed before it wrote (hook_messages is [] without the directory)


def test_command_channel_missing_program_is_not_retried(tmp_path):
    r = channels.send_one(fast({"type": "command", "argv": [str(tmp_path / "nope")]}), MSG, DOC)
    assert not r.ok and r.attempts == 1 and r.error.startswith("cannot run nope")


def test_log_channel(tmp_path):
    p = tmp_path / "sub" / "notify.log"
    assert channels.send_one({"type": "log", "path": str(p)}, MSG, DOC).ok
    assert channels.send_one({"type": "log", "path": str(p), "format": "json"}, MSG, DOC).ok
    lines = p.read_text().splitlines()
    assert lines[0] == notify_message.short_text(MSG) and json.loads(lines[1])["service"] == "www.example.com"


def test_send_all_runs_channels_in_parallel_and_filters_kinds(tmp_path):
    with Receiver(default="hang", hang_seconds=5) as slow, Receiver() as rx:
        chs = [fast({"type": "webhook", "name": "slow", "url": slow.url, "timeout": 3, "retries": 0}),
               fast({"type": "webhook", "name": "fast", "url": rx.url}),
               {"type": "log", "name": "never", "path": str(tmp_path / "l"), "kinds": ["circuit_open"]}]
        results = channels.send_all(chs, MSG, DOC)
        assert [(r.channel, r.ok) for r in results] == [("slow", False), ("fast", True)]
        # the fast channel was served while the slow one still waited for its 3 s timeout
        assert rx.count() == 1 and rx.requests[0]["time"] < slow.requests[0]["time"] + 3
        assert not (tmp_path / "l").exists()


@pytest.mark.parametrize("reason", ["disk\x00full", "x" * (5 * 1024 * 1024)], ids=["nul", "5MB"])
def test_command_channel_survives_hostile_reason(tmp_path, reason):
    """A NUL (exec refuses it in the environment) or a 5 MB reason (E2BIG): sanitised and cut, still sent."""
    from consul_medic.handlers.notify import notify_rules
    alert = notify_rules.AlertState("www.example.com", "heal", "heal_failed", "heal_failed", 1, 3, None,
                                    "heal", reason, "r1", (), {}, "event")
    verdict = notify_rules.Verdict(True, "heal_failed", {}, "none -> heal_failed", False)
    msg = notify_message.message(alert, verdict, "live", now=1.0, host="mon1")
    out = str(tmp_path / "hook")
    for fmt in ("short", "json"):
        r = channels.send_one(fast({"type": "command", "argv": hook_argv(out), "format": fmt}), msg,
                              notify_message.document(msg, alert))
        assert r.ok, r.error
    first, second = hook_messages(out)
    assert "\x00" not in first["env"]["MEDIC_REASON"] and len(first["env"]["MEDIC_REASON"]) <= notify_message.ENV_MAX
    assert json.loads(second["stdin"])["reason"].startswith(reason[:10].replace("\x00", " "))
    assert len(json.loads(second["stdin"])["reason"]) <= notify_message.REASON_MAX
