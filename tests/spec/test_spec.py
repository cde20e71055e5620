"""Spec loading: validated once, frozen, one clear line per problem, cached."""
import json
import os

import pytest

from consul_medic.handlers.spec import spec as specmod
from consul_medic.handlers.core.errors import SpecError
from consul_medic.handlers.core import durations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASE = {"service": "www.example.com", "instances": 2,
        "scale": {"driver": "compose", "project": "web", "file": "compose.yml", "service": "web"}}


def write(d, name, doc):
    p = d / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIC_CACHE_DIR", str(tmp_path / "cache"))


def test_minimal_spec_gets_documented_defaults(tmp_path):
    s = specmod.load_file(write(tmp_path, "a.json", BASE))
    assert s.service == "www.example.com" and s.instances == 2
    assert s.scale.driver == "compose" and s.scale.file == str(tmp_path / "compose.yml")
    assert s.check.interval == 10.0 and s.check.timeout == 5.0 and s.check.mode == "script"
    assert s.heal.grace == 30.0 and s.heal.backoff_base == 10.0 and s.heal.backoff_max == 300.0
    assert s.heal.max_attempts == 5 and s.heal.scale_down is False and s.heal.replace_failing is False
    assert s.env is None and s.consul_addr is None


def test_spec_is_frozen(tmp_path):
    doc = dict(BASE, notify={"channels": [{"type": "log"}]})
    s = specmod.load_file(write(tmp_path, "a.json", doc))
    with pytest.raises(AttributeError):
        s.instances = 5
    with pytest.raises(TypeError):
        s.notify["x"] = 1
    assert isinstance(s.notify["channels"], tuple)


def test_environment_overrides(tmp_path):
    doc = dict(BASE, heal={"grace": "1m", "cooldown": "5s"},
               environments={"live": {"consul_addr": "http://127.0.0.3:8500", "instances": 4,
                                      "heal": {"grace": "90s"}}})
    p = write(tmp_path, "a.json", doc)
    base, live = specmod.load_file(p), specmod.load_file(p, env="live")
    assert (base.instances, base.heal.grace, base.heal.cooldown) == (2, 60.0, 5.0)
    assert (live.instances, live.heal.grace, live.heal.cooldown, live.consul_addr) == (4, 90.0, 5.0, "http://127.0.0.3:8500")
    assert specmod.load_file(p, env="other").instances == 2  # no overrides for an unknown env
    assert base.environments == ("live",)


@pytest.mark.parametrize("doc, where", [
    ("{not json", "$: not valid JSON"),
    (dict(BASE, instances=0), "$.instances: 0 is less than the minimum of 1"),
    (dict(BASE, instances="2"), "$.instances: '2' is not of type 'integer'"),
    ({k: v for k, v in BASE.items() if k != "scale"}, "$: 'scale' is a required property"),
    (dict(BASE, scale={"driver": "k8s"}), "$.scale: scale must be"),
    (dict(BASE, service="a;rm -rf /"), "$.service: 'a;rm -rf /' does not match"),
    (dict(BASE, heal={"grace": "soon"}), "$.heal.grace"),
    (dict(BASE, instancez=3), "$: Additional properties are not allowed ('instancez' was unexpected)"),
    (dict(BASE, heal={"max_instances": 1}), "$.heal.max_instances: 1 is below instances (2)"),
    (dict(BASE, environments={"live": {"instances": -1}}), "$.environments.live.instances"),
])
def test_invalid_spec_is_one_line_naming_file_and_path(tmp_path, doc, where):
    p = write(tmp_path, "bad.json", doc)
    with pytest.raises(SpecError) as e:
        specmod.load_file(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(p + ": "), msg
    assert where in msg, msg


def test_missing_spec_file_and_dir(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        specmod.load_file(str(tmp_path / "nope.json"))
    with pytest.raises(SpecError, match="does not exist"):
        specmod.load_dir(str(tmp_path / "nodir"))


def test_duplicate_service_is_an_error(tmp_path):
    write(tmp_path, "a.json", BASE)
    p2 = write(tmp_path, "b.json", dict(BASE, service="WWW.example.com"))
    with pytest.raises(SpecError) as e:
        specmod.load_dir(str(tmp_path))
    assert str(e.value).startswith(p2 + ": $.service: ") and "a.json" in str(e.value)


def test_find_by_file_name_or_scan(tmp_path):
    write(tmp_path, "www.example.com.json", BASE)
    write(tmp_path, "other.json", dict(BASE, service="api.example.com"))
    assert specmod.find(str(tmp_path), "www.example.com").service == "www.example.com"
    assert specmod.find(str(tmp_path), "api.example.com").path.endswith("other.json")
    with pytest.raises(SpecError, match="no spec declares service 'x'"):
        specmod.find(str(tmp_path), "x")


def test_validated_spec_is_cached_and_invalidated_on_change(tmp_path, monkeypatch):
    p = write(tmp_path, "a.json", BASE)
    specmod.load_file(p)
    calls = []
    monkeypatch.setattr(specmod, "validate_document", lambda doc, path: calls.append(path))
    assert specmod.load_file(p).instances == 2
    assert calls == []  # served from the cache: no validation
    write(tmp_path, "a.json", dict(BASE, instances=3))
    os.utime(p, ns=(1, 1))  # a different mtime even within one clock tick
    assert specmod.load_file(p).instances == 3
    assert calls == [p]


def test_cache_never_hides_an_invalid_edit(tmp_path):
    p = write(tmp_path, "a.json", BASE)
    specmod.load_file(p)
    write(tmp_path, "a.json", dict(BASE, instances=0))
    os.utime(p, ns=(2, 2))
    with pytest.raises(SpecError):
        specmod.load_file(p)


def test_a_specs_directory_is_served_from_one_cache_entry_until_any_file_changes(tmp_path, monkeypatch):
    d = tmp_path / "specs"
    d.mkdir()
    pa = write(d, "a.json", BASE)
    write(d, "b.json", dict(BASE, service="api.example.com"))
    assert sorted(specmod.load_dir(str(d))) == ["api.example.com", "www.example.com"]
    opened = []
    real_get = specmod.spec_cache.get
    monkeypatch.setattr(specmod.spec_cache, "get", lambda *a, **k: opened.append(k.get("prefix", "spec"))
                        or real_get(*a, **k))
    assert specmod.load_dir(str(d))["www.example.com"].instances == 2
    assert opened == ["dir"]  # one read for the directory, no per-file entry
    # an edit (new mtime), a new file and a removed file each miss the directory entry
    write(d, "a.json", dict(BASE, instances=3))
    os.utime(pa, ns=(3, 3))
    assert specmod.load_dir(str(d))["www.example.com"].instances == 3
    write(d, "c.json", dict(BASE, service="c.example.com"))
    assert "c.example.com" in specmod.load_dir(str(d))
    os.remove(str(d / "b.json"))
    assert sorted(specmod.load_dir(str(d))) == ["c.example.com", "www.example.com"]


def test_a_bad_file_fails_only_itself_and_is_never_cached_as_good(tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    write(d, "a.json", BASE)
    pb = write(d, "b.json", dict(BASE, service="api.example.com", instances=0))
    for _ in range(2):  # the second pass must not be served a cached "good" directory
        docs = dict(specmod.load_documents(str(d)))
        assert isinstance(docs[pb], SpecError) and not isinstance(docs[str(d / "a.json")], SpecError)
        with pytest.raises(SpecError, match="b.json"):
            specmod.load_dir(str(d))


def test_durations():
    assert specmod.parse_duration("1m30s") == 90.0
    assert specmod.parse_duration("500ms") == 0.5
    assert specmod.parse_duration(7) == 7.0
    assert durations.format_duration(90.0) == "90s" and durations.format_duration(0.25) == "250ms"


def test_shipped_example_specs_are_valid():
    specs = specmod.load_dir(os.path.join(ROOT, "specs"), use_cache=False)
    assert "www.example.com" in specs
    assert os.path.exists(specs["www.example.com"].scale.file)
