"""The shipped rules under promtool, and a real Prometheus scraping medic (docs/metrics.md):
node_exporter's textfile collector for the handlers the Consul agent runs, /metrics of the
medic-register daemon. A real container kill and heal shows in Prometheus' HTTP API, and the
shipped MedicCircuitOpen rule fires on an open circuit and resolves after --reset."""
import json
import os
import subprocess
import time

import pytest

import support
import support_prometheus as prom
from support_e2e import Stack


def _promtool(*args):
    r = subprocess.run([prom.binary("promtool"), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_shipped_rules_pass_promtool_check():
    out = _promtool("check", "rules", prom.RULES)
    assert "SUCCESS" in out


def test_shipped_rules_fire_and_resolve_as_their_tests_say():
    out = _promtool("test", "rules", prom.RULE_TESTS)
    assert "SUCCESS" in out


def test_example_prometheus_config_is_valid():
    _promtool("check", "config", prom.EXAMPLE)


def test_a_rule_test_that_expects_the_wrong_thing_fails(tmp_path):
    """promtool really evaluates the rules: a test expecting no alert on an open circuit fails."""
    bad = tmp_path / "bad.test.yml"
    bad.write_text("rule_files: [%s]\nevaluation_interval: 30s\ntests:\n  - interval: 30s\n    input_series:\n"
                   "      - series: 'medic_service_circuit_open{env=\"default\",service=\"www\"}'\n"
                   "        values: '1 1 1'\n    alert_rule_test:\n      - eval_time: 1m\n"
                   "        alertname: MedicCircuitOpen\n        exp_alerts: []\n" % json.dumps(prom.RULES))
    r = subprocess.run([prom.binary("promtool"), "test", "rules", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "MedicCircuitOpen" in r.stdout + r.stderr


@pytest.mark.consul
@pytest.mark.docker
@pytest.mark.slow
def test_prometheus_sees_a_kill_healed_and_the_circuit_rule_fires(consul_factory, demo_image, compose, tmp_path,
                                                                   unique):
    textfile = str(tmp_path / "textfile")
    os.makedirs(textfile)
    reg_addr = "127.0.0.1:%d" % support.free_port()
    stack = Stack(tmp_path, unique, consul_factory=consul_factory,
                  agent_kw={"env": {"MEDIC_METRICS_TEXTFILE_DIR": textfile}},
                  registrar_extra=["--metrics-addr", reg_addr])
    ne = prom.node_exporter(str(tmp_path), textfile)
    server = None
    try:
        ne.start()
        server = prom.prometheus(str(tmp_path), {"node": [ne.addr], "medic-register": [reg_addr]}).start()
        stack.start(replicas=3)
        stack.settled(3)
        svc = '{service="%s"}' % stack.service
        stack.kill(1)
        stack.settled(3)
        assert len(stack.scale_actions()) >= 1, stack.records()
        # the heal, as the agent's watch ran it, through node_exporter's textfile collector
        prom.wait_query(server.url, 'medic_heal_attempts_total{service="%s",result="ok"}' % stack.service,
                        lambda r: r and r[0][1] >= 1, what="the heal attempt in Prometheus")
        prom.wait_query(server.url, 'medic_heal_outcomes_total{service="%s",outcome="restored"}' % stack.service,
                        lambda r: r and r[0][1] >= 1, what="the restored verdict in Prometheus")
        prom.wait_query(server.url, "medic_service_passing" + svc, lambda r: r and r[0][1] == 3)
        prom.wait_query(server.url, "medic_heal_time_to_heal_seconds_count" + svc, lambda r: r and r[0][1] >= 1)
        # the registrar daemon's own /metrics: the kill's engine events and the re-registration
        prom.wait_query(server.url, 'medic_register_events_total{job="medic-register"}', lambda r: r and r[0][1] > 0)
        prom.wait_query(server.url, 'medic_register_registrations_total{job="medic-register"}',
                        lambda r: r and r[0][1] >= 4, what="3 registrations and the healed one")
        prom.wait_query(server.url, 'medic_last_run_timestamp_seconds{executable="medic-heal"}',
                        lambda r: r and time.time() - r[0][1] < 60)
        assert not prom.alerts(server.url, "MedicCircuitOpen")

        # an open circuit (as a crash loop leaves it in the history), then medic-heal looks
        doc = {"v": 1, "epoch": 0.0, "circuit": time.time(), "suspects": {}, "actions": []}
        stack.agent.api("/v1/kv/medic/default/history/%s" % stack.service, "PUT", doc)
        env = support.medic_env(MEDIC_AUDIT_LOG=stack.audit, MEDIC_METRICS_TEXTFILE_DIR=textfile)
        args = ["--specs", stack.specs, "--consul-addr", stack.agent.addr]
        r = support.run_medic("medic-heal", args + ["--service", stack.service], env=env)
        assert "circuit open" in r.stdout, r.stdout + r.stderr
        firing = support.wait_for(lambda: [a for a in prom.alerts(server.url, "MedicCircuitOpen")
                                           if a["state"] == "firing" and a["labels"]["service"] == stack.service],
                                  30, interval=0.5, what="MedicCircuitOpen firing")
        assert firing[0]["labels"]["severity"] == "critical"
        # --reset closes it; the next run says so and the alert resolves
        r = support.run_medic("medic-heal", args + ["--reset", stack.service], env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        r = support.run_medic("medic-heal", args + ["--service", stack.service], env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        support.wait_for(lambda: not prom.alerts(server.url, "MedicCircuitOpen"), 30, interval=0.5,
                         what="MedicCircuitOpen resolved")
    finally:
        try:
            stack.stop()
        finally:
            if server is not None:
                server.stop()
            ne.stop()
