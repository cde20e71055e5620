"""The `notify` section of specs/schema.json: spec files and the global notify file."""
import json

import pytest

from consul_medic.handlers.spec import spec
from consul_medic.handlers.core.errors import SpecError
from consul_medic.handlers.notify import notify_config

GOOD = {"enabled": True, "recovery": False, "remind_every": "30m", "kinds": ["critical", "circuit_open"],
        "channels": ["ops",
                     {"type": "webhook", "name": "hook", "url": "https://hooks.example.com/x", "token_file": "/etc/t",
                      "header": "X-Token", "token_prefix": "", "headers": {"X-Env": "live"}, "timeout": "5s",
                      "retries": 3, "backoff": "1s", "backoff_max": "10s", "max_time": "30s", "format": "short"},
                     {"type": "command", "argv": ["/usr/bin/zabbix_sender", "-k", "medic"], "env": {"A": "b"},
                      "kinds": ["warning"]},
                     {"type": "log", "path": "/var/log/medic-notify.log", "format": "json"}]}


def spec_doc(notify_section, env_notify=None):
    doc = {"service": "www.example.com", "instances": 3, "scale": {"driver": "swarm", "service": "web"},
           "notify": notify_section}
    if env_notify is not None:
        doc["environments"] = {"live": {"notify": env_notify}}
    return doc


def test_good_notify_section_in_spec_and_environment(tmp_path):
    p = tmp_path / "www.example.com.json"
    p.write_text(json.dumps(spec_doc(GOOD, {"channels": ["pager"], "remind_every": "5m"})))
    s = spec.load_file(str(p), use_cache=False)
    assert s.notify["remind_every"] == "30m" and len(s.notify["channels"]) == 4
    live = spec.load_file(str(p), env="live", use_cache=False)
    assert live.notify["channels"] == ("pager",) and live.notify["recovery"] is False


@pytest.mark.parametrize("section, where", [
    ({"channels": [{"type": "webhook"}]}, "$.notify.channels[0]: 'url' is a required property"),
    ({"channels": [{"type": "webhook", "url": "ftp://x"}]}, "$.notify.channels[0].url: 'ftp://x' does not match"),
    ({"channels": [{"type": "command", "argv": "sms +49"}]}, "$.notify.channels[0].argv: 'sms +49' is not of type"),
    ({"channels": [{"type": "log", "url": "http://x"}]}, "$.notify.channels[0]: Additional properties are not "
                                                         "allowed ('url' was unexpected)"),
    ({"channels": [{"type": "pigeon"}]}, "$.notify.channels[0].type"),
    ({"channels": ["bad name"]}, "$.notify.channels[0]: 'bad name' does not match"),
    ({"channels": [{"type": "webhook", "url": "http://x", "retries": -1}]}, "$.notify.channels[0].retries"),
    ({"kinds": ["paging"]}, "$.notify.kinds[0]"),
    ({"remind_every": "soon"}, "$.notify.remind_every"),
    ({"sms": True}, "$.notify"),
])
def test_bad_notify_section_names_the_field(section, where):
    with pytest.raises(SpecError) as e:
        spec.validate_document(spec_doc(section), "x.json")
    assert str(e.value).startswith("x.json: " + where), str(e.value)


def test_global_notify_file(tmp_path):
    assert notify_config.load_config(str(tmp_path / "missing.json")) == {}
    p = tmp_path / "notify.json"
    p.write_text(json.dumps(GOOD))
    assert notify_config.load_config(str(p))["remind_every"] == "30m"
    p.write_text(json.dumps({"channels": [{"type": "command", "argv": []}]}))
    with pytest.raises(SpecError, match=r"notify.json: \$.channels\[0\]"):
        notify_config.load_config(str(p))
    p.write_text("{")
    with pytest.raises(SpecError, match=r"notify.json: \$: not valid JSON"):
        notify_config.load_config(str(p))


def test_config_path_precedence():
    assert notify_config.config_path("/a", {"MEDIC_NOTIFY_CONFIG": "/b"}) == "/a"
    assert notify_config.config_path(None, {"MEDIC_NOTIFY_CONFIG": "/b"}) == "/b"
    assert notify_config.config_path(None, {}) == "/etc/consul-medic/notify.json"


@pytest.mark.parametrize("argv, line", [
    ([], "MEDIC UNKNOWN - usage: a command is needed: watch, event or sweep (see --help)"),
    (["page"], "MEDIC UNKNOWN - usage: No such command 'page'."),
    (["watch", "--bogus"], "MEDIC UNKNOWN - usage: No such option '--bogus'"),
    (["watch", "--specs", "/nonexistent-medic"],
     "MEDIC UNKNOWN - spec: /nonexistent-medic: specs directory does not exist"),
])
def test_cli_usage_errors_are_one_line_exit_3(argv, line):
    import support
    r = support.run_medic("medic-notify", argv, input="[]")
    assert r.returncode == 3 and r.stdout.startswith(line) and len(r.stdout.splitlines()) == 1, r.stdout
