"""medic-config: consul.d fragments from specs; deterministic, atomic, loaded by a real agent."""
import json
import os

import pytest

import support
import support_check as sc
from consul_medic.handlers.config import __main__ as config
from consul_medic.handlers.spec import spec
from consul_medic.handlers.core.errors import MedicError, SpecError

BIN = support.BIN


def plan(**kw):
    base = dict(bin_dir="/opt/medic/bin", specs_dir="/etc/medic/specs", env=None, audit_log=None,
                consul_addr=None, consul_timeout=None, mode="auto", reconcile_interval=30.0)
    base.update(kw)
    return config.Plan(**base)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIC_CACHE_DIR", str(tmp_path / "cache"))
    return str(tmp_path / "cache")


def load(tmp_path, *docs):
    d = str(tmp_path / "specs")
    for name, instances, extra in docs:
        sc.write_spec(d, name, instances, **extra)
    return spec.load_dir(d)


def test_script_mode_checks_and_watches(tmp_path):
    specs = load(tmp_path, ("b.example", 3, {"check": {"interval": "2s", "timeout": "1500ms",
                                                        "success_before_passing": 2, "failures_before_critical": 3}}),
                 ("a.example", 1, {}))
    p = plan(env="live", audit_log="/var/log/medic.jsonl", consul_addr="http://127.0.0.1:8501")
    docs = config.render(specs, p)
    assert sorted(docs) == ["medic-agent.json", "medic-service.json", "medic-watches.json"]
    assert docs["medic-agent.json"] == {"enable_local_script_checks": True}
    svc = docs["medic-service.json"]["service"]
    assert (svc["id"], svc["name"]) == ("medic", "medic")
    checks = {c["id"]: c for c in svc["checks"]}
    assert [c["id"] for c in svc["checks"]] == ["medic:a.example", "medic:b.example", "medic:reconcile"]
    common = ["--specs", "/etc/medic/specs", "--env", "live", "--consul-addr", "http://127.0.0.1:8501"]
    b = checks["medic:b.example"]
    assert b["args"] == ["/opt/medic/bin/medic-check", "b.example"] + common
    assert (b["interval"], b["timeout"], b["success_before_passing"], b["failures_before_critical"]) == \
        ("2s", "1500ms", 2, 3)
    a = checks["medic:a.example"]
    assert (a["interval"], a["timeout"]) == ("10s", "5s")
    assert "success_before_passing" not in a and "failures_before_critical" not in a and "ttl" not in a
    heal = ["/opt/medic/bin/medic-heal", "--specs", "/etc/medic/specs", "--env", "live",
            "--audit-log", "/var/log/medic.jsonl", "--consul-addr", "http://127.0.0.1:8501"]
    rec = checks["medic:reconcile"]
    assert rec["args"] == [heal[0], "--all"] + heal[1:]
    assert (rec["interval"], rec["timeout"]) == ("30s", "150s")
    assert docs["medic-watches.json"]["watches"] == [
        {"type": "checks", "stale": True, "args": heal[:1] + ["--changes"] + heal[1:]},
        {"type": "checks", "service": "medic", "args": ["/opt/medic/bin/medic-notify", "watch"] + heal[1:]},
        {"type": "keyprefix", "prefix": "medic/live/wake/", "stale": True, "args": heal},
    ]


def test_batch_mode_ttl_checks_and_one_batch_script_check(tmp_path):
    specs = load(tmp_path, ("a", 1, {"check": {"mode": "batch", "interval": "5s"}}),
                 ("b", 1, {"check": {"mode": "batch", "interval": "20s", "timeout": "8s"}}), ("c", 1, {}))
    checks = {c["id"]: c for c in config.render(specs, plan())["medic-service.json"]["service"]["checks"]}
    assert sorted(checks) == ["medic:a", "medic:b", "medic:batch", "medic:c", "medic:reconcile"]
    # rewritten unchanged every max(2 x the shortest interval, 5 min); TTL twice that
    assert checks["medic:a"] == {"id": "medic:a", "name": "medic count a", "ttl": "600s",
                                 "notes": checks["medic:a"]["notes"]}
    assert checks["medic:b"]["ttl"] == "600s" and "args" not in checks["medic:b"]
    assert "args" in checks["medic:c"] and "ttl" not in checks["medic:c"]  # script mode per spec
    bat = checks["medic:batch"]
    assert bat["args"] == ["/opt/medic/bin/medic-check", "--all", "--ttl", "--refresh", "300",
                           "--specs", "/etc/medic/specs"]
    assert (bat["interval"], bat["timeout"]) == ("5s", "8s")
    forced = {c["id"]: c for c in config.render(specs, plan(mode="batch"))["medic-service.json"]["service"]["checks"]}
    assert "ttl" in forced["medic:c"]
    forced = {c["id"]: c for c in config.render(specs, plan(mode="script"))["medic-service.json"]["service"]["checks"]}
    assert "medic:batch" not in forced and all("ttl" not in c for c in forced.values())


def test_rendering_is_deterministic(tmp_path):
    specs = load(tmp_path, *[("s%d" % i, 1, {}) for i in (3, 1, 2)])
    one = {n: config.dumps(d) for n, d in config.render(specs, plan()).items()}
    two = {n: config.dumps(d) for n, d in config.render(dict(reversed(list(specs.items()))), plan()).items()}
    assert one == two
    checks = [c["id"] for c in json.loads(one["medic-service.json"])["service"]["checks"]]
    assert checks == ["medic:reconcile", "medic:s1", "medic:s2", "medic:s3"]


def test_watches_are_a_constant_three_whatever_the_number_of_specs(tmp_path):
    """Each watch is a blocking connection of the agent to itself: Consul allows 200 per client
    address. 1 spec or 300: the same three watches; above SCRIPT_LIMIT specs --mode auto counts
    every spec with the one batch check (a script check per spec is a process per interval)."""
    few = config.render(load(tmp_path / "few", ("one", 1, {})), plan())
    many_specs = load(tmp_path / "many", *[("s%03d" % i, 1, {}) for i in range(300)])
    many = config.render(many_specs, plan())
    kinds = [(w["type"], w.get("service"), w.get("prefix")) for w in many["medic-watches.json"]["watches"]]
    assert kinds == [(w["type"], w.get("service"), w.get("prefix")) for w in few["medic-watches.json"]["watches"]]
    assert len(kinds) == 3
    checks = many["medic-service.json"]["service"]["checks"]
    assert sum(1 for c in checks if "args" in c) == 2  # medic:batch and medic:reconcile: two processes
    assert [c["id"] for c in checks if "args" in c] == ["medic:batch", "medic:reconcile"]
    assert all("ttl" in c for c in checks if c["id"] not in ("medic:batch", "medic:reconcile"))
    few_checks = few["medic-service.json"]["service"]["checks"]
    assert "args" in next(c for c in few_checks if c["id"] == "medic:one")  # small: per spec as it says


def test_reserved_service_names_are_refused(tmp_path):
    specs = load(tmp_path, ("reconcile", 1, {}))
    with pytest.raises(SpecError, match=r"reconcile\.json: \$\.service: 'reconcile' is reserved"):
        config.render(specs, plan())


def test_write_is_atomic_minimal_and_leaves_foreign_files_alone(tmp_path):
    out = str(tmp_path / "consul.d")
    os.makedirs(out)
    for name in ("00-agent.json", "medic-old.json", "notmedic-x.json"):
        with open(os.path.join(out, name), "w") as f:
            f.write("{}\n")
    files = {"medic-a.json": "{\"a\": 1}\n", "medic-b.json": "{\"b\": 2}\n"}
    assert config.write_dir(out, files) == (["medic-a.json", "medic-b.json"], [], ["medic-old.json"])
    ino = os.stat(os.path.join(out, "medic-a.json")).st_ino
    files["medic-b.json"] = "{\"b\": 3}\n"
    assert config.write_dir(out, files) == (["medic-b.json"], ["medic-a.json"], [])
    assert os.stat(os.path.join(out, "medic-a.json")).st_ino == ino  # unchanged: not rewritten
    assert sorted(os.listdir(out)) == ["00-agent.json", "medic-a.json", "medic-b.json", "notmedic-x.json"]


def cli(*args):
    return support.run_medic("medic-config", list(args), env=support.medic_env(MEDIC_CACHE_DIR="/tmp/medic-cfg-cache"))


def test_cli_writes_no_token_and_never_enable_script_checks(tmp_path):
    d = str(tmp_path / "specs")
    sc.write_spec(d, "tok.example", 2)
    out = str(tmp_path / "out")
    env = support.medic_env(CONSUL_HTTP_TOKEN="sekret-env-token", MEDIC_CACHE_DIR=str(tmp_path / "c"))
    r = support.run_medic("medic-config", ["--specs", d, "--out", out, "--token", "sekret-cli-token"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("MEDIC OK - %s: 3 fragments for 1 services (1 script, 0 batch): 3 written" % out)
    text = "".join(open(os.path.join(out, n)).read() for n in sorted(os.listdir(out)))
    assert "sekret" not in text and "--token" not in text and "\"token\"" not in text
    assert "enable_script_checks" not in text and '"enable_local_script_checks": true' in text
    # the agent needs no PATH: every executable is an absolute path next to this medic-config
    for w in json.load(open(os.path.join(out, "medic-watches.json")))["watches"]:
        assert w["args"][0].startswith(BIN + "/") and os.path.isabs(w["args"][0])


def test_cli_check_only_validates(tmp_path):
    d = str(tmp_path / "specs")
    sc.write_spec(d, "ok.example", 2)
    out = str(tmp_path / "out")
    r = cli("--specs", d, "--check", "--out", out)
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "MEDIC OK - 1 specs valid in %s" % d)
    assert not os.path.exists(out)
    bad = sc.write_spec(d, "bad.example", 0)
    for args in (("--check",), ("--out", out)):
        r = cli("--specs", d, *args)
        assert (r.returncode, r.stdout) == (
            3, "MEDIC UNKNOWN - spec: %s: $.instances: 0 is less than the minimum of 1\n" % bad)
    assert not os.path.exists(out)  # nothing written for an invalid spec set


def test_cli_usage_errors(tmp_path):
    d = str(tmp_path / "specs")
    sc.write_spec(d, "u.example", 1)
    r = cli("--specs", d, "--bin-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert (r.returncode, r.stdout) == (3, "MEDIC UNKNOWN - usage: --bin-dir %s: no medic-check there\n" % tmp_path)
    r = cli("--specs", d, "--reconcile-interval", "soon", "--out", str(tmp_path / "o"))
    assert r.returncode == 3 and "--reconcile-interval 'soon'" in r.stdout
    r = cli("--specs", d, "--mode", "fast")
    assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - usage: Invalid value for '--mode'")


@pytest.mark.consul
def test_consul_validate_passes_and_catches_a_bad_fragment(consul_bin, tmp_path):
    d = str(tmp_path / "specs")
    sc.write_spec(d, "v.example", 2, check={"mode": "batch"})
    sc.write_spec(d, "w.example", 2, check={"success_before_passing": 1})
    r = cli("--specs", d, "--out", str(tmp_path / "out"))
    assert r.returncode == 0 and r.stdout.splitlines()[0].endswith("consul validate passed"), r.stdout
    with pytest.raises(MedicError, match="consul validate rejected the fragments: .*bogus"):
        config.validate({"medic-x.json": json.dumps({"service": {"name": "m", "checks": [{"id": "x", "bogus": 1}]}})})


def wait_check(agent, cid, pred, what):
    return support.wait_for(lambda: (lambda c: c if c and pred(c) else None)(agent.api("/v1/agent/checks").get(cid)),
                            60, 0.3, what)


@pytest.mark.consul
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["script", "batch"])
def test_real_agent_runs_the_rendered_checks_and_watches(consul_factory, tmp_path, unique, mode):
    """Loaded into a real agent that also hosts the instances: the count check sits on
    service `medic`, goes critical on a shortfall, and the instances stay passing."""
    d, out, audit = str(tmp_path / "specs"), str(tmp_path / "consul.d"), str(tmp_path / "audit.jsonl")
    svc = "cfg-%s.example" % unique
    sc.write_spec(d, svc, 5, check={"interval": "1s", "timeout": "3s", "mode": mode}, heal={"enabled": False})
    agent = consul_factory(start=False, config_dirs=[out], env={"MEDIC_CACHE_DIR": str(tmp_path / "cache"),
                                                                "MEDIC_NOTIFY": "off"})
    r = cli("--specs", d, "--out", out, "--consul-addr", agent.addr, "--audit-log", audit,
            "--reconcile-interval", "1h")
    assert r.returncode == 0, r.stdout
    agent.start()
    for i in range(3):
        agent.register_ttl("%s-%d" % (svc, i), svc, port=8000 + i)

    c = wait_check(agent, "medic:" + svc, lambda c: c["Output"].startswith("MEDIC CRITICAL - %s 3/5" % svc),
                   "the count check to run")
    assert (c["Status"], c["ServiceID"], c["Type"]) == ("critical", "medic", "ttl" if mode == "batch" else "script")
    checks = agent.api("/v1/agent/checks")
    assert checks["medic:reconcile"]["ServiceID"] == "medic"
    assert ("medic:batch" in checks) == (mode == "batch")
    assert not [cid for cid, ch in checks.items() if cid.startswith("medic:") and not ch["ServiceID"]]  # no node checks
    passing = agent.api("/v1/health/service/%s?passing" % svc)
    assert len(passing) == 3  # a critical count check never takes the instances out of service

    for i in range(3, 5):
        agent.register_ttl("%s-%d" % (svc, i), svc, port=8000 + i)
    wait_check(agent, "medic:" + svc, lambda c: c["Status"] == "passing", "the count check to pass at 5/5")

    # the agent runs every rendered watch (each fires once at start): 3 watches (every check,
    # notify, the wake-up keyprefix), and the exact argv of the heal and notify handlers in
    # its log, whatever those handlers answer
    self_cfg = agent.api("/v1/agent/self")["DebugConfig"]
    assert len(self_cfg["Watches"]) == 3
    assert self_cfg["EnableLocalScriptChecks"] is True and self_cfg["EnableRemoteScriptChecks"] is False
    watches = json.load(open(os.path.join(out, "medic-watches.json")))["watches"]
    heal = "watch handler output: watch_handler=[%s]" % ", ".join(watches[0]["args"])
    notify = "watch handler output: watch_handler=[%s]" % ", ".join(watches[1]["args"])
    wake = "watch handler output: watch_handler=[%s]" % ", ".join(watches[2]["args"])
    assert watches[0]["args"][:4] == [BIN + "/medic-heal", "--changes", "--specs", d] and "--audit-log" in watches[0]["args"]
    assert watches[2]["args"] == [watches[0]["args"][0]] + watches[0]["args"][2:]
    support.wait_for(lambda: heal in agent.log_tail(100000) and wake in agent.log_tail(100000)
                     and notify in agent.log_tail(100000),
                     60, 0.5, "the agent to run the heal and notify watch handlers")
