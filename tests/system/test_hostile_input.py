"""Hostile and broken input where it enters the arch-owned modules (issue 15): durations, env values,
payload depth, spec files that are not regular files, corrupt JSON numbers. docs/hostile-input.md
lists each case with its outcome."""
import json
import os

import pytest

import support
from consul_medic.handlers.core import durations, runtime
from consul_medic.handlers.consul import settings
from consul_medic.handlers.spec import spec as specmod
from consul_medic.handlers.core.errors import PayloadError, SpecError, UsageError
from consul_medic.watches import _common, checks

SPEC = {"service": "www.example.com", "instances": 2,
        "scale": {"driver": "compose", "project": "p", "file": "compose.yml", "service": "web"}}


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1, -0.5, 1e30, 10 ** 400, "Infinity", "NaN",
                                   "99999999999999999999h", "-5s", "5", "s", "1..5s", "", True, None, "1h" * 40])
def test_bad_durations_refused(value):
    with pytest.raises(ValueError):
        durations.parse_duration(value, "heal.grace")


@pytest.mark.parametrize("value,seconds", [("1m30s", 90.0), ("500ms", 0.5), (0, 0.0), ("720h", 2592000.0),
                                           (2592000, 2592000.0), ("1.5s", 1.5)])
def test_good_durations(value, seconds):
    assert durations.parse_duration(value) == seconds


def write_spec(tmp_path, raw, name="www.example.com.json"):
    d = tmp_path / "specs"
    d.mkdir(exist_ok=True)
    (d / name).write_text(raw)
    return str(d / name)


@pytest.mark.parametrize("grace,where", [
    ("1e999", "not valid JSON"),  # Infinity as a JSON number
    ("Infinity", "not valid JSON"), ("NaN", "not valid JSON"),
    ("-5", "$.heal.grace"), ("1e12", "$.heal.grace"),
    ('"99999999999999999999h"', "$.heal.grace"),  # schema: at most 9 digits per part
    ('"999999999h"', "$.heal.grace: 3.6e+12 s is more than the limit"),  # the parser's sum
])
def test_spec_durations_schema_and_parser_agree(tmp_path, monkeypatch, grace, where):
    monkeypatch.setenv("MEDIC_CACHE_DIR", "")
    raw = json.dumps(SPEC)[:-1] + ', "heal": {"grace": %s}}' % grace
    path = write_spec(tmp_path, raw)
    with pytest.raises(SpecError) as e:
        specmod.load_file(path)
    assert str(e.value).startswith(path) and where in str(e.value), str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_fifo_spec_file_is_refused_without_blocking(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIC_CACHE_DIR", "")
    d = tmp_path / "specs"
    d.mkdir()
    os.mkfifo(str(d / "www.example.com.json"))  # nobody ever writes to it: reading would block forever
    with pytest.raises(SpecError, match="not a regular file"):
        specmod.load_dir(str(d))


def test_fifo_spec_via_medic_config_is_one_line_exit_3(tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    os.mkfifo(str(d / "a.json"))
    r = support.run_medic("medic-config", ["--check", "--specs", str(d)], env=support.medic_env(MEDIC_DEADLINE="20"),
                          timeout=60)
    assert r.returncode == 3 and "not a regular file" in r.stdout and len(r.stdout.splitlines()) == 1, r.stdout


def test_deep_payload_is_one_payload_error():
    deep = "[" * 100000 + "]" * 100000
    with pytest.raises(PayloadError, match="nested too deeply"):
        checks.parse(deep)
    with pytest.raises(PayloadError, match="not JSON"):
        _common.decode("[NaN]")


def test_deep_payload_through_an_executable_is_exit_3(tmp_path):
    (tmp_path / "specs").mkdir()
    r = support.run_medic("medic-notify", ["watch", "--specs", str(tmp_path / "specs")],
                          input="[" * 100000 + "]" * 100000, env=support.medic_env())
    want = "MEDIC UNKNOWN - payload: checks watch: payload is nested too deeply"
    assert r.returncode == 3 and r.stdout.startswith(want), r.stdout + r.stderr
    assert "RecursionError" not in r.stdout + r.stderr


@pytest.mark.parametrize("raw", ["-5", "0", "inf", "nan", "1e400", "soon", "99999999999999999999"])
def test_bad_env_seconds_refused(raw):
    with pytest.raises(UsageError) as e:
        durations.env_seconds({"MEDIC_DEADLINE": raw}, "MEDIC_DEADLINE", 30.0)
    assert str(e.value).startswith("MEDIC_DEADLINE")
    with pytest.raises(UsageError, match="MEDIC_CONSUL_TIMEOUT"):
        settings.resolve(environ={"MEDIC_CONSUL_TIMEOUT": raw})


def test_env_seconds_default_and_good_values():
    assert durations.env_seconds({}, "X", 30.0) == 30.0
    assert durations.env_seconds({"X": " 2.5 "}, "X", 30.0) == 2.5
    assert settings.resolve(environ={"MEDIC_CONSUL_TIMEOUT": "7"}).timeout == 7.0
    with pytest.raises(UsageError, match="Consul timeout"):
        settings.resolve(timeout=float("inf"), environ={})


@pytest.mark.parametrize("raw", ["-5", "inf", "nan", "x"])
def test_bad_medic_deadline_is_one_line_exit_3(raw):
    for exe in ("medic-status", "medic-config"):
        r = support.run_medic(exe, ["--help"], env=support.medic_env(MEDIC_DEADLINE=raw))
        assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - MEDIC_DEADLINE"), r.stdout
        assert len(r.stdout.splitlines()) == 1


def test_deadline_parser_in_process(monkeypatch):
    monkeypatch.setenv("MEDIC_DEADLINE", "-5")
    with pytest.raises(UsageError):
        runtime._deadline(30.0)


@pytest.mark.parametrize("field,value,where", [
    ("service", "x" * 300000, "$.service"),
    ("service", "www example.com", "$.service"),
    ("service", "www\u202eexample.com", "$.service"),  # a right-to-left mark
    ("service", "www\nexample.com", "$.service"),
    ("file", "comp\u0000ose.yml", "$.scale.file"),
    ("file", "/" + "a" * 5000, "$.scale.file"),
])
def test_names_and_paths_within_limits(tmp_path, monkeypatch, field, value, where):
    monkeypatch.setenv("MEDIC_CACHE_DIR", "")
    doc = json.loads(json.dumps(SPEC))
    if field == "file":
        doc["scale"]["file"] = value
    else:
        doc[field] = value
    path = write_spec(tmp_path, json.dumps(doc))
    with pytest.raises(SpecError) as e:
        specmod.load_file(path)
    assert ": %s" % where in str(e.value) and len(str(e.value)) < 600, str(e.value)[:300]


def test_relative_argv0_and_log_paths_do_not_follow_the_working_directory(tmp_path, monkeypatch):
    from consul_medic.handlers.core import alerts, audit
    trap = tmp_path / "medic-notify"
    trap.write_text("#!/bin/sh\nexit 0\n")
    trap.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    exe = alerts.notify_exe(argv0="medic-heal", executable=os.path.join(support.ROOT, ".venv", "bin", "python"))
    assert os.path.isabs(exe) and exe != str(trap), exe  # not the file in the working directory
    assert alerts.notify_argv(specs="specs")[2:4] == ["--specs", str(tmp_path / "specs")]
    assert audit.audit_path("rel/audit.jsonl", {}) == str(tmp_path / "rel" / "audit.jsonl")
    assert audit.audit_path(None, {"MEDIC_AUDIT_LOG": "a.jsonl"}) == str(tmp_path / "a.jsonl")
