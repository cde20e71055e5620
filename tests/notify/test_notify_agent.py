"""The whole path on a real agent: a `checks` watch on medic's own `medic` service
runs `.venv/bin/medic-notify watch`; TTL checks `medic:<svc>` stand in for medic-check.

warning, critical, healed (medic-heal's event through alerts.emit) and passing give
exactly one message each on a real HTTP receiver and a command channel; 20
`consul reload`s in that steady state give none.
"""
import json
import os
import signal
import time

import pytest

import support
from consul_medic.handlers.core import alerts, audit
from consul_medic.handlers.consul import settings
from support_notify import Receiver, hook_argv, hook_messages, medic_output, write_spec

pytestmark = [pytest.mark.consul, pytest.mark.slow]

CONSUL_TOKEN = "agent-env-consul-token-5e5e"
HOOK_TOKEN = "hook-token-c0ffee-secret"


def test_one_message_per_transition_and_none_on_reload(consul_factory, tmp_path, unique):
    svc = "www-%s.example.com" % unique
    specs, hooks, audit_log = str(tmp_path / "specs"), str(tmp_path / "hooks"), str(tmp_path / "audit.jsonl")
    tok = tmp_path / "hook.token"
    tok.write_text(HOOK_TOKEN + "\n")
    with Receiver() as rx:
        notify_conf = tmp_path / "notify.json"
        notify_conf.write_text(json.dumps({"channels": [
            {"type": "webhook", "name": "rx", "url": rx.url + "/alerts", "token_file": str(tok), "timeout": "2s"},
            {"type": "command", "name": "sms", "argv": hook_argv(hooks)}]}))
        write_spec(specs, svc)
        write_spec(specs, "other-%s" % unique)  # a service with a spec whose check never ran

        agent = consul_factory(start=False, env={"CONSUL_HTTP_TOKEN": CONSUL_TOKEN, "MEDIC_AUDIT_LOG": audit_log})
        handler = [os.path.join(support.BIN, "medic-notify"), "watch", "--specs", specs,
                   "--notify-config", str(notify_conf), "--consul-addr", agent.addr]
        with open(os.path.join(agent.config_dir, "10-medic.json"), "w") as f:
            json.dump({"watches": [{"type": "checks", "service": "medic", "args": handler}],
                       "services": [{"name": "medic", "id": "medic", "port": 1, "checks": [
                           {"id": "medic:" + svc, "name": "medic " + svc, "ttl": "30m"},
                           {"id": "medic:other-" + unique, "name": "medic other", "ttl": "30m"},
                           {"id": "medic:reconcile", "name": "medic reconcile", "ttl": "30m"}]}]}, f)
        agent.start()

        def runs():
            return [r for r in audit.read(audit_log) if r.get("slot") == "medic:" + svc]

        def set_check(status, live, desired=3):
            verb = "/v1/agent/check/update/medic:" + svc
            agent.api(verb, "PUT", {"Status": status, "Output": medic_output(svc, status, live, desired)})

        def settle(n_messages, what):
            # delivered on both channels, and the run that sent them has written its audit record
            # (it writes after delivering: counting runs before that would count it as a replay)
            support.wait_for(lambda: rx.count() >= n_messages and len(hook_messages(hooks)) >= n_messages
                             and sum(1 for r in audit.read(audit_log)
                                     if r.get("service") == svc and r.get("result") == "sent") >= n_messages,
                             timeout=30, what=what)

        def reloads(n):
            before, sent = len(runs()), (rx.count(), len(hook_messages(hooks)))
            for _ in range(n):
                agent.reload()
                time.sleep(0.3)
            support.wait_for(lambda: len(runs()) >= before + n or rx.count() != sent[0], timeout=60,
                             what="the handler to run after each reload")
            time.sleep(2)
            assert (rx.count(), len(hook_messages(hooks))) == sent, [b["kind"] for b in rx.bodies()]
            replays = runs()[before:]
            assert all(r["result"] == "suppressed" and r["reason"].startswith(("unchanged", "stale:")) for r in replays), \
            [(r["result"], r["reason"]) for r in replays]  # a replay older than the notified index is "stale:"

        agent.api("/v1/agent/check/update/medic:reconcile", "PUT",
                  {"Status": "critical", "Output": "MEDIC CRITICAL - reconcile failed"})
        set_check("passing", 3)
        support.wait_for(lambda: any(r["reason"].startswith("unchanged") for r in runs()), what="first passing run")
        set_check("warning", 4)
        settle(1, "warning message")
        set_check("critical", 1)
        settle(2, "critical message")
        # steady state (a persisting critical, where a naive handler would repeat itself):
        # 20 reloads re-run the watch handler; nothing new goes out
        reloads(20)
        cfg = settings.resolve(consul_addr=agent.addr, token=CONSUL_TOKEN, environ={})
        os.environ["MEDIC_NOTIFY_CONFIG"] = str(notify_conf)
        try:
            assert alerts.emit({"kind": "healed", "service": svc, "live": 3, "desired": 3,
                                "action": "docker compose up --scale web=3", "reason": "2 of 3 missing",
                                "audit_ref": "heal-%s-1" % unique,
                                "details": {"instances": ["web-1", "web-2", "web-3"]}},
                               audit.AuditLog(audit_log, secrets=[CONSUL_TOKEN]), specs=specs, settings=cfg)
        finally:
            del os.environ["MEDIC_NOTIFY_CONFIG"]
        settle(3, "healed message")
        set_check("passing", 3)
        settle(4, "recovered message")
        time.sleep(2)
        assert [b["kind"] for b in rx.bodies()] == ["warning", "critical", "healed", "recovered"]
        assert [m["env"]["MEDIC_KIND"] for m in hook_messages(hooks)] == ["warning", "critical", "healed",
                                                                         "recovered"]
        assert [(b["live"], b["desired"]) for b in rx.bodies()] == [(4, 3), (1, 3), (3, 3), (3, 3)]
        assert rx.bodies()[2]["instances"] == ["web-1", "web-2", "web-3"]
        assert all(r["headers"]["Authorization"] == "Bearer " + HOOK_TOKEN for r in rx.requests)

        reloads(5)  # and once it passes again
        assert not [r for r in audit.read(audit_log) if r.get("service") in ("other-" + unique, "reconcile")]

        everything = [json.dumps(rx.bodies()), json.dumps(hook_messages(hooks)), open(audit_log).read(),
                      agent.log_tail(100000)]
        for text in everything:
            assert HOOK_TOKEN not in text and CONSUL_TOKEN not in text


def test_agent_restarts_send_nothing_new(consul_factory, tmp_path, unique):
    """A server agent with a data dir (KV and check state survive): restarting it
    re-runs the watch handler, which finds the stored state and stays quiet."""
    svc = "rst-%s.example.com" % unique
    specs, audit_log = str(tmp_path / "specs"), str(tmp_path / "audit.jsonl")
    with Receiver() as rx:
        notify_conf = tmp_path / "notify.json"
        notify_conf.write_text(json.dumps({"channels": [{"type": "webhook", "url": rx.url, "timeout": "2s"}]}))
        write_spec(specs, svc)
        # check_update_interval 0: output-only changes reach the catalog at once (default: up to 5 min)
        agent = consul_factory(start=False, dev=False, config={"server": True, "bootstrap_expect": 1,
                                                               "check_update_interval": "0s"},
                               env={"MEDIC_AUDIT_LOG": audit_log})
        handler = [os.path.join(support.BIN, "medic-notify"), "watch", "--specs", specs,
                   "--notify-config", str(notify_conf), "--consul-addr", agent.addr]
        with open(os.path.join(agent.config_dir, "10-medic.json"), "w") as f:
            json.dump({"watches": [{"type": "checks", "service": "medic", "args": handler}],
                       "services": [{"name": "medic", "id": "medic", "port": 1, "checks": [
                           {"id": "medic:" + svc, "name": "medic " + svc, "ttl": "30m"}]}]}, f)
        agent.start()

        def runs():
            return [r for r in audit.read(audit_log) if r.get("slot") == "medic:" + svc]

        def set_check(status, live):
            agent.api("/v1/agent/check/update/medic:" + svc, "PUT",
                      {"Status": status, "Output": medic_output(svc, status, live, 3)})

        set_check("passing", 3)  # (a TTL check starts critical without output; an output-only
        support.wait_for(lambda: runs(), what="the first run")  # change would wait for check_update_interval)
        set_check("critical", 1)
        support.wait_for(lambda: rx.count() == 1, timeout=30, what="the critical message")
        sent_at = len(runs())
        for i in range(3):
            before = len(runs())
            agent.kill(signal.SIGINT)  # a clean stop; the data dir stays
            agent.start()
            # the restarted agent's check is critical without output until medic-check first runs: ignored
            support.wait_for(lambda: [c for c in agent.api("/v1/health/checks/medic") if c["Output"] == ""],
                             what="the restarted agent's fresh check in the catalog")
            set_check("critical", 1)  # medic-check's first run after the restart: the same state
            support.wait_for(lambda: len(runs()) > before, timeout=60, what="the handler after restart %d" % i)
        time.sleep(2)
        assert [b["kind"] for b in rx.bodies()] == ["critical"]
        assert all(r["reason"].startswith("unchanged") for r in runs()[sent_at:]), runs()[sent_at:]
        set_check("passing", 3)
        support.wait_for(lambda: rx.count() == 2, timeout=30, what="the recovered message")
        assert [b["kind"] for b in rx.bodies()] == ["critical", "recovered"]
