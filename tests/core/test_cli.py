"""The CLI every executable shares through runtime/options (issue 14): -h, --help, --version,
help without paths into the source tree, the --token warning, bounded token files."""
import configparser
import json
import os

import pytest

import support
from consul_medic.handlers.consul import settings
from consul_medic.handlers.core.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scripts():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    return sorted(line.split("=")[0].strip()
                  for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines())


SCRIPTS = _scripts()
PLUGINS = {"medic-check"}  # monitoring-plugins convention: --help and --version exit 3 (UNKNOWN)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_version_and_h_everywhere(script):
    want = 3 if script in PLUGINS else 0
    env = support.medic_env()
    for flag in ("-h", "--help"):
        r = support.run_medic(script, [flag], env=env)
        assert r.returncode == want, (flag, r.stdout, r.stderr)
        assert "Usage: %s" % script in r.stdout and "Exit states:" in r.stdout
        assert "docs/" not in r.stdout and ".md" not in r.stdout, r.stdout  # no path a user does not have
    r = support.run_medic(script, ["--version"], env=env)
    assert r.returncode == want and r.stdout.startswith("%s (consul-medic) " % script), r.stdout


def test_token_on_the_command_line_warns_once_on_stderr(tmp_path):
    r = support.run_medic("medic-status", ["--token", "cli-secret-123", "--specs", str(tmp_path), "--no-engine"],
                          env=support.medic_env(CONSUL_HTTP_ADDR="127.0.0.1:%d" % support.free_port(),
                                                MEDIC_CONSUL_TIMEOUT="1"))
    assert r.stderr.count("--token is visible to other users") == 1, r.stderr
    assert "cli-secret-123" not in r.stdout + r.stderr


def test_token_file_from_dev_zero_fails_fast_one_line(tmp_path):
    with pytest.raises(UsageError, match="larger than 4096 bytes"):
        settings.resolve(token_file="/dev/zero", environ={})
    (tmp_path / "www.example.com.json").write_text(json.dumps(
        {"service": "www.example.com", "instances": 1,
         "scale": {"driver": "compose", "project": "p", "file": "c.yml", "service": "web"}}))
    r = support.run_medic("medic-check", ["--specs", str(tmp_path), "--token-file", "/dev/zero", "www.example.com"],
                          env=support.medic_env(), timeout=30)
    assert r.returncode == 3 and len(r.stdout.splitlines()) == 1 and "larger than 4096 bytes" in r.stdout, r.stdout


def test_token_file_limits(tmp_path):
    f = tmp_path / "tok"
    f.write_text("t" * 4096)
    assert len(settings.resolve(token_file=str(f), environ={}).token) == 4096
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        settings.resolve(token_file=str(f), environ={})
    with pytest.raises(UsageError, match="cannot read token file"):
        settings.resolve(token_file=str(tmp_path), environ={})  # a directory
