"""medic-config refuses a spec whose compose service builds from a Dockerfile (handlers/engine/compose_file.py)."""
import os
import shutil
import subprocess

import pytest

import support
import support_heal
from consul_medic.handlers.engine import compose_file


# -- pure ---------------------------------------------------------------------------
@pytest.mark.parametrize("svc,why", [
    ({"image": "repo/web:1"}, None),
    ({"build": {"context": "/src", "dockerfile": "Dockerfile"}}, "builds from a Dockerfile (build:)"),
    ({"image": "repo/web:1", "build": {"context": "/src"}}, "builds from a Dockerfile (build:)"),
    ({"ports": ["80"]}, "names no image:"),
])
def test_refusal(svc, why):
    got = compose_file.refusal({"services": {"web": svc}}, "web")
    assert (got is None) if why is None else (why in got)


def test_refusal_of_a_missing_service():
    assert "has no service 'web'" in compose_file.refusal({"services": {"api": {"image": "x"}}}, "web")
    assert "has no service" in compose_file.refusal({}, "web")


# -- medic-config with the real compose CLI --------------------------------------------
COMPOSE = """services:
  web:
%s
    ports:
      - "127.0.0.1::80"
  other:
    build: ./elsewhere
"""


@pytest.fixture
def compose_cli():
    ok = shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    support.require(ok, "the docker CLI with compose v2 (run `make testbed`)")


def _config(specs, tmp_path, *extra):
    return support.run_medic("medic-config", ["--specs", specs, "--out", str(tmp_path / "consul.d"),
                                              "--bin-dir", support.BIN] + list(extra),
                             env=support.medic_env(MEDIC_CACHE_DIR=""))


@pytest.mark.docker
@pytest.mark.parametrize("web,refused", [
    ("    image: ${SITE_TEST_IMAGE:-medic-demo:latest}", False),
    ("    build: .", True),
    ("    image: registry.example.com/web:1\n    build:\n      context: .", True),
])
def test_medic_config_refuses_a_built_service(compose_cli, tmp_path, unique, web, refused):
    cfile = tmp_path / "compose.yml"
    cfile.write_text(COMPOSE % web)
    specs = str(tmp_path / "specs")
    support_heal.write_spec(specs, "site-%s.example" % unique, "site%s" % unique, file=str(cfile))
    for extra in ([], ["--check"]):
        r = _config(specs, tmp_path, *extra)
        if refused:
            lines = r.stdout.strip().splitlines()
            assert r.returncode == 3 and len(lines) == 1, r.stdout + r.stderr
            assert lines[0].startswith("MEDIC UNKNOWN - spec: ") and "builds from a Dockerfile (build:)" in lines[0]
            assert "site-%s.example.json" % unique in lines[0]
            assert not os.path.exists(tmp_path / "consul.d"), "a refused spec rendered fragments"
        else:
            assert r.returncode == 0, r.stdout + r.stderr  # `other` builds, but medic does not scale it
            assert "not checked" not in r.stdout


@pytest.mark.docker
def test_medic_config_refuses_a_missing_compose_file(compose_cli, tmp_path, unique):
    specs = str(tmp_path / "specs")
    support_heal.write_spec(specs, "site-%s.example" % unique, "site%s" % unique, file=str(tmp_path / "nope.yml"))
    r = _config(specs, tmp_path, "--check")
    assert r.returncode == 3 and "docker compose cannot read it" in r.stdout and len(r.stdout.splitlines()) == 1
    assert "site-%s.example.json: $.scale.file: " % unique in r.stdout


def test_without_docker_cli_it_says_so(tmp_path, unique):
    specs = str(tmp_path / "specs")
    support_heal.write_spec(specs, "site-%s.example" % unique, "site%s" % unique, file=str(tmp_path / "c.yml"))
    env = support.medic_env(MEDIC_CACHE_DIR="")
    env["PATH"] = support.BIN  # no docker here
    r = support.run_medic("medic-config", ["--specs", specs, "--check"], env=env)
    assert r.returncode == 0 and "compose files not checked for build: (no docker CLI)" in r.stdout, r.stdout
