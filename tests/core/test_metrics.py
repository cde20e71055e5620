"""Metrics (docs/metrics.md): audit records counted (pure, literal records), the textfile exporter
under concurrent real handler runs, /metrics of the daemons, and nothing of it on medic-check's path."""
import ast
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import support
from consul_medic.handlers.core import audit, metrics, metrics_export
from consul_medic.handlers.core.errors import UsageError

ROOT = support.ROOT


def parse(text):
    """{(name, frozenset(labels)): value} of an exposition text."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples, name, **labels):
    key = metrics.Samples.key(name, labels)
    if key in samples.counters:
        return samples.counters[key]
    return samples.gauges[key][1] if key in samples.gauges else samples.hists.get(key)


SVC = {"env": "default", "service": "www"}


# -- audit records -> samples ----------------------------------------------------------------
def test_a_heal_and_its_restore_are_counted_with_counts_gauges_and_time_to_heal():
    s = metrics.Samples()
    metrics.observe(s, {"kind": "heal", "service": "www", "env": None, "decision": "heal", "argv": ["docker"],
                        "result": "ok", "observed": {"declared": 3, "passing": 2, "pending": 0},
                        "circuit_open": False, "heal_allowed": 45.0}, "medic-heal", now=100.0)
    metrics.observe(s, {"kind": "heal", "service": "www", "env": None, "decision": "hold", "reason": "pending",
                        "observed": {"declared": 3, "passing": 2, "pending": 1}}, "medic-heal", now=105.0)
    assert val(s, "medic_service_shortfall_since_timestamp_seconds", **SVC) == 100.0  # since the first, kept
    metrics.observe(s, {"kind": "heal", "service": "www", "decision": "noop", "settle": "restored",
                        "heal_seconds": 7.5, "observed": {"declared": 3, "passing": 3, "pending": 0}},
                    "medic-heal", now=110.0)
    assert val(s, "medic_heal_attempts_total", result="ok", **SVC) == 1
    assert val(s, "medic_heal_decisions_total", decision="hold", **SVC) == 1
    assert val(s, "medic_heal_outcomes_total", outcome="restored", **SVC) == 1
    assert val(s, "medic_service_desired", **SVC) == 3 and val(s, "medic_service_passing", **SVC) == 3
    assert val(s, "medic_service_shortfall_since_timestamp_seconds", **SVC) == 0
    assert val(s, "medic_service_last_action_timestamp_seconds", **SVC) == 100.0
    assert val(s, "medic_service_last_decision_timestamp_seconds", decision="noop", **SVC) == 110.0
    assert val(s, "medic_service_heal_allowed_seconds", **SVC) == 45.0
    metrics.observe(s, {"service": "www", "decision": "heal", "argv": ["x"], "result": "failed",
                        "observed": {"declared": 3, "passing": 1}}, "medic-heal", now=120.0)
    assert val(s, "medic_service_shortfall_since_timestamp_seconds", **SVC) == 120.0
    metrics.observe(s, {"service": "www", "decision": "noop", "triage": True}, "medic-heal", now=130.0)
    assert val(s, "medic_service_shortfall_since_timestamp_seconds", **SVC) == 0  # settled by triage
    h = val(s, "medic_heal_time_to_heal_seconds", **SVC)
    assert (h["count"], h["sum"]) == (1, 7.5) and h["buckets"][:4] == [0, 0, 0, 1]  # le 1, 2, 5, 10
    assert val(s, "medic_audit_records_total", executable="medic-heal", kind="heal") == 5


def test_circuit_pause_and_dry_runs():
    s = metrics.Samples()
    metrics.observe(s, {"service": "www", "decision": "hold", "circuit": "open", "circuit_open": True,
                        "observed": {"declared": 3, "passing": 0}}, "medic-heal", now=1.0)
    metrics.observe(s, {"service": "www", "decision": "hold", "paused": True}, "medic-heal", now=2.0)
    metrics.observe(s, {"service": "www", "decision": "heal", "dry_run": True, "argv": ["x"], "result": "dry-run"},
                    "medic-heal", now=3.0)
    assert val(s, "medic_heal_circuit_opened_total", **SVC) == 1
    assert val(s, "medic_service_circuit_open", **SVC) == 1
    assert val(s, "medic_service_paused", **SVC) == 1
    assert val(s, "medic_heal_decisions_total", decision="heal", **SVC) is None  # a dry run changes nothing


def test_label_values_stay_bounded():
    s = metrics.Samples()
    metrics.observe(s, {"service": "www", "decision": "made-up"}, "medic-heal", now=1.0)
    metrics.observe(s, {"kind": "rollout", "what": "step", "service": "www", "step": "a b/../c", "result": "x"},
                    "medic-rollout")
    assert val(s, "medic_heal_decisions_total", decision="other", **SVC) == 1
    assert val(s, "medic_rollout_steps_total", service="www", step="other", result="other") == 1
    labels = {lv for (_, ls) in s.counters for _, lv in ls}
    assert not any("/" in v or " " in v for v in labels)


def test_lb_failover_register_rollout_and_drain_records():
    s = metrics.Samples()
    out = {"output": "/etc/nginx/medic.conf"}
    metrics.observe(s, dict(out="/etc/nginx/medic.conf", kind="lb", action="write", changed=True, reloaded=True,
                            seconds=0.02, reload_seconds=0.004, kept=["a"], omitted=["b"], recovered=["c"]), "medic-lb")
    metrics.observe(s, dict(out="/etc/nginx/medic.conf", kind="lb", action="reject", written=False), "medic-lb")
    assert val(s, "medic_lb_renders_total", result="write", **out) == 1
    assert val(s, "medic_lb_writes_total", **out) == 1 and val(s, "medic_lb_reloads_total", **out) == 1
    assert val(s, "medic_lb_rejects_total", **out) == 1
    assert val(s, "medic_lb_service_last_good", service="a", **out) == 1
    assert val(s, "medic_lb_service_last_good", service="c", **out) == 0
    assert val(s, "medic_lb_last_good_services", state="omitted", **out) == 1
    assert val(s, "medic_lb_reload_duration_seconds", **out)["count"] == 1

    for action, result in (("failover", "done"), ("split_brain", "done"), ("hold", None), ("failover", "failed")):
        metrics.observe(s, {"kind": "failover", "service": "redis", "env": "default", "action": action,
                            "result": result, "seen": []}, "medic-failover")
    metrics.observe(s, {"kind": "failover", "service": "redis", "env": "default", "action": "hold",
                        "reason": "lock held by heal"}, "medic-failover")
    r = {"env": "default", "service": "redis"}
    assert val(s, "medic_failover_failovers_total", **r) == 1
    assert val(s, "medic_failover_split_brains_total", **r) == 1
    assert val(s, "medic_failover_holds_total", **r) == 2
    assert val(s, "medic_failover_decisions_total", action="hold", result="no-replica", **r) == 1
    assert val(s, "medic_failover_decisions_total", action="hold", result="waiting", **r) == 1
    assert val(s, "medic_failover_decisions_total", action="failover", result="failed", **r) == 1

    for rec in ({"action": "register"}, {"action": "register"}, {"action": "deregister"}, {"action": "refuse"},
                {"action": "refused"}, {"action": "resync", "registered": 2, "deregistered": 1}):
        metrics.observe(s, dict(rec, kind="register"), "medic-register")
    assert val(s, "medic_register_registrations_total") == 2
    assert val(s, "medic_register_deregistrations_total") == 1
    assert val(s, "medic_register_refusals_total", reason="refuse") == 1
    assert val(s, "medic_register_refusals_total", reason="consul") == 1
    assert val(s, "medic_register_resync_differences_total") == 3

    for rec in ({"what": "step", "step": "start-new", "result": "ok"}, {"what": "end", "decision": "rolled-back"},
                {"what": "end", "decision": "failed"}, {"what": "end", "decision": "done"}):
        metrics.observe(s, dict(rec, kind="rollout", service="www"), "medic-rollout")
    assert val(s, "medic_rollout_steps_total", service="www", step="start-new", result="ok") == 1
    assert val(s, "medic_rollout_failures_total", service="www") == 2
    assert val(s, "medic_rollout_rollbacks_total", service="www") == 1
    metrics.observe(s, {"kind": "drain", "what": "step", "step": "stop", "result": "failed"}, "medic-drain")
    metrics.observe(s, {"kind": "drain", "what": "end", "decision": "failed", "result": "critical"}, "medic-drain")
    assert val(s, "medic_drain_steps_total", step="stop", result="failed") == 1
    assert val(s, "medic_drain_failures_total") == 1


def test_merge_adds_counters_and_keeps_the_first_shortfall():
    total = metrics.Samples()
    total.inc("medic_runs_total", executable="medic-heal", status="ok")
    total.keep("medic_service_shortfall_since_timestamp_seconds", 100.0, **SVC)
    delta = metrics.Samples()
    delta.inc("medic_runs_total", 2, executable="medic-heal", status="ok")
    delta.keep("medic_service_shortfall_since_timestamp_seconds", 200.0, **SVC)
    total = metrics.Samples.from_json(json.loads(json.dumps(total.merge(delta).to_json())))
    assert val(total, "medic_runs_total", executable="medic-heal", status="ok") == 3
    assert val(total, "medic_service_shortfall_since_timestamp_seconds", **SVC) == 100.0


def test_every_metric_follows_the_naming_conventions_and_is_documented():
    with open(os.path.join(ROOT, "docs", "metrics.md"), encoding="utf-8") as f:
        doc = f.read()
    for name, (kind, text, labels) in metrics.METRICS.items():
        assert name.startswith("medic_") and (name.endswith("_total") == (kind == "counter")), name
        assert not any(w in name for w in ("_ms", "_milliseconds", "_minutes")), name
        assert not {"container", "container_id", "id", "host", "reason_text"} & set(labels), name
        assert "`%s`" % name in doc, "%s is not in docs/metrics.md" % name
    with open(os.path.join(ROOT, "deploy", "prometheus", "medic-rules.yml"), encoding="utf-8") as f:
        for alert in [line.split(":", 1)[1].strip() for line in f if line.strip().startswith("- alert:")]:
            assert "`%s`" % alert in doc, "alert %s is not in docs/metrics.md" % alert


# -- the textfile exporter, real processes -----------------------------------------------------
def test_concurrent_handler_runs_lose_no_count_and_write_one_whole_file(tmp_path):
    textfile, state = tmp_path / "textfile", tmp_path / "state"
    env = support.medic_env(MEDIC_METRICS_TEXTFILE_DIR=str(textfile), MEDIC_METRICS_STATE_DIR=str(state),
                            MEDIC_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    argv = [os.path.join(support.BIN, "medic-heal"), "--specs", str(tmp_path / "none"), "--all"]
    n = 8
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              preexec_fn=lambda: os.umask(0o077)) for _ in range(n)]
    for p in procs:
        assert p.wait(60) == 3 and not p.stderr.read()
    with open(textfile / "medic_heal.prom", encoding="utf-8") as f:
        got = parse(f.read())
    assert got[("medic_runs_total", frozenset({("executable", "medic-heal"), ("status", "unknown")}))] == n
    assert got[("medic_build_info", frozenset({("executable", "medic-heal"), ("version", "0.1.0")}))] == 1
    last = got[("medic_last_run_timestamp_seconds", frozenset({("executable", "medic-heal")}))]
    assert time.time() - 60 < last <= time.time()
    assert sorted(os.listdir(textfile)) == ["medic_heal.prom"]  # no temporary file left beside it
    assert os.stat(textfile / "medic_heal.prom").st_mode & 0o777 == 0o644  # node_exporter is another user
    assert sorted(os.listdir(state)) == ["medic-heal.json", "medic-heal.lock"]


def test_an_unwritable_textfile_dir_says_so_and_keeps_the_exit_state(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = support.medic_env(MEDIC_METRICS_TEXTFILE_DIR=str(blocker / "sub"), MEDIC_AUDIT_LOG=str(tmp_path / "a.jsonl"))
    r = support.run_medic("medic-heal", ["--specs", str(tmp_path / "none"), "--all"], env=env)
    assert r.returncode == 3 and "metrics not written" in r.stderr


def test_medic_check_never_imports_the_exporter(tmp_path):
    """The hot path: with exporting asked for, medic-check imports neither prometheus_client nor
    the metrics modules, and writes nothing."""
    env = support.medic_env(MEDIC_METRICS_TEXTFILE_DIR=str(tmp_path))
    r = subprocess.run([os.path.join(support.BIN, "python"), "-X", "importtime",
                        os.path.join(support.BIN, "medic-check"), "www.example.com", "--specs",
                        str(tmp_path / "none")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stdout
    assert "handlers.core.runtime" in r.stderr  # -X importtime did list the imports
    assert "prometheus_client" not in r.stderr and "handlers.core.metrics" not in r.stderr
    assert os.listdir(tmp_path) == []


def test_no_module_imports_prometheus_client_at_module_level():
    for f in os.listdir(os.path.join(ROOT, "handlers")):
        if f.endswith(".py"):
            with open(os.path.join(ROOT, "handlers", f), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in tree.body:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not any(n.startswith("prometheus_client") for n in names), f


# -- /metrics of a daemon -------------------------------------------------------------------------
def scrape(addr):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=5) as r:
        return parse(r.read().decode())


def test_served_metrics_count_audit_records_as_they_are_written(tmp_path):
    addr = "127.0.0.1:%d" % support.free_port()
    sink = metrics_export.serve(addr, "medic-register")
    try:
        log = audit.AuditLog(str(tmp_path / "audit.jsonl"))
        log.write({"kind": "register", "action": "register"})
        metrics_export.inc("medic_register_events_total")
        got = scrape(addr)
        assert got[("medic_register_registrations_total", frozenset())] == 1
        assert got[("medic_register_events_total", frozenset())] == 1
        log.write({"kind": "register", "action": "deregister"})
        assert scrape(addr)[("medic_register_deregistrations_total", frozenset())] == 1
    finally:
        sink.stop()
    assert audit.SINKS == [] and metrics_export.active() is None


@pytest.mark.parametrize("addr", ["9464", "127.0.0.1:", "127.0.0.1:99999", "a b:1", "[::1:9"])
def test_bad_metrics_addr_is_a_usage_error(addr):
    with pytest.raises(UsageError):
        metrics_export.serve(addr, "medic-lb")
    assert metrics_export.active() is None


def test_metrics_addr_goes_with_watch(tmp_path):
    r = support.run_medic("medic-lb", ["--template", "nginx-http", "--out", str(tmp_path / "x.conf"), "--service",
                                       "www", "--metrics-addr", "127.0.0.1:1", "--consul-addr", "127.0.0.1:1"])
    assert r.returncode == 3 and "--metrics-addr goes with --watch" in r.stdout


@pytest.mark.consul
def test_medic_lb_watch_serves_renders_and_last_good(consul_agent, tmp_path, unique):
    """A real agent: one passing instance rendered, then its check fails and medic-lb keeps it as
    the last good server; /metrics says both."""
    name = "lbm-%s" % unique
    sid = name + "-1"
    consul_agent.api("/v1/agent/service/register", "PUT", {"ID": sid, "Name": name, "Address": "127.0.0.1",
                                                           "Port": 8080, "Check": {"TTL": "60s"}})
    consul_agent.api("/v1/agent/check/pass/service:" + sid, "PUT")
    addr = "127.0.0.1:%d" % support.free_port()
    out = str(tmp_path / "lb.conf")
    p = subprocess.Popen([os.path.join(support.BIN, "medic-lb"), "--template", "nginx-http", "--out", out,
                          "--service", name, "--watch", "--wait", "0.05s:0.2s", "--metrics-addr", addr,
                          "--consul-addr", consul_agent.addr, "--audit-log", str(tmp_path / "audit.jsonl")],
                         env=support.medic_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    key = frozenset({("output", out), ("service", name)})
    try:
        support.wait_for(lambda: _try(scrape, addr).get(("medic_lb_renders_total", frozenset(
            {("output", out), ("result", "write")}))), 20, what="a render on /metrics")
        consul_agent.api("/v1/agent/check/fail/service:" + sid, "PUT")
        support.wait_for(lambda: _try(scrape, addr).get(("medic_lb_service_last_good", key)) == 1, 20,
                         what="medic_lb_service_last_good 1")
        got = scrape(addr)
        assert got[("medic_last_run_timestamp_seconds", frozenset({("executable", "medic-lb")}))] > time.time() - 5
        assert got[("medic_lb_render_duration_seconds_count", frozenset({("output", out)}))] >= 2
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.stderr.read()
        consul_agent.api("/v1/agent/service/deregister/" + sid, "PUT")


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError:
        return {}


