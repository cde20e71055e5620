"""`make install PREFIX=...`: its own virtualenv, isolated from other `handlers` packages; the shipped
systemd units pass `systemd-analyze verify` (docs/production.md)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import support

EXECUTABLES = ("medic-check", "medic-config", "medic-heal", "medic-notify", "medic-register",
               "medic-status", "medic-tag")
UNITS = ("medic-register.service", "medic-notify-sweep.service", "medic-notify-sweep.timer")
DECOY = "raise SystemExit('DECOY %s imported instead of consul-medic')\n"


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONSUL_", "MEDIC_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    support.require(shutil.which("python3") is not None, "python3")
    where = str(tmp_path_factory.mktemp("site-install") / "opt-consul-medic")
    r = subprocess.run(["make", "-s", "install", "PREFIX=" + where, "PYTHON=" + sys.executable],
                       cwd=support.ROOT, capture_output=True, text=True, timeout=600, env=_clean_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    yield where
    shutil.rmtree(where, ignore_errors=True)


def _decoys(tmp_path):
    """A `handlers` + `watches` that would win if anything but our venv were on sys.path: one on
    PYTHONPATH, one in a user site (PYTHONUSERBASE), one in ANOTHER virtualenv that is activated."""
    pp = tmp_path / "pythonpath"
    user = tmp_path / "userbase"
    usersite = user / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    other = tmp_path / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(other)], check=True, timeout=120)
    other_site = next((other / "lib").glob("python*/site-packages"))
    for base in (pp, usersite, other_site):
        for pkg in ("handlers", "watches"):
            (base / pkg).mkdir(parents=True, exist_ok=True)
            (base / pkg / "__init__.py").write_text(DECOY % pkg)
    env = _clean_env(PYTHONPATH=str(pp), PYTHONUSERBASE=str(user), VIRTUAL_ENV=str(other),
                     PATH=str(other / "bin") + os.pathsep + os.environ.get("PATH", ""))
    return env, other


@pytest.mark.slow
def test_install_layout_and_isolated_interpreter(prefix):
    for exe in EXECUTABLES:
        path = os.path.join(prefix, "bin", exe)
        assert os.access(path, os.X_OK), exe
        with open(path) as f:
            assert f.readline().strip() == "#!%s/bin/python -I" % prefix, exe
    site = subprocess.run([os.path.join(prefix, "bin", "python"), "-I", "-c",
                           "import importlib.util, sys, consul_medic.handlers as h; print(h.__file__); print(sys.flags.no_user_site);"
                           " print(sum(importlib.util.find_spec(n) is not None for n in ('handlers', 'watches', 'specs')))"],
                          capture_output=True, text=True, timeout=60, env=_clean_env())
    where, no_user, generic = site.stdout.split()
    assert where.startswith(prefix + "/lib/") and "/site-packages/consul_medic/handlers/" in where and no_user == "1"
    assert generic == "0"  # no top-level `handlers`, `watches` or `specs` claimed in site-packages
    with open(os.path.join(prefix, "pyvenv.cfg")) as f:
        assert "include-system-site-packages = false" in f.read()
    for doc in ("README.md", "LICENSE", "production.md", "medic-register.md"):
        assert os.path.isfile(os.path.join(prefix, "share", "doc", "consul-medic", doc)), doc


@pytest.mark.slow
def test_every_executable_starts(prefix):
    for exe in EXECUTABLES:
        r = subprocess.run([os.path.join(prefix, "bin", exe), "--help"], capture_output=True, text=True,
                           timeout=60, env=_clean_env())
        assert r.returncode in (0, 3) and "Usage:" in r.stdout, (exe, r.returncode, r.stdout, r.stderr)


@pytest.mark.slow
def test_decoy_handlers_packages_do_not_shadow_ours(prefix, tmp_path):
    env, other = _decoys(tmp_path)
    # the decoys are real: a non-isolated interpreter of ANY venv picks them up
    for py in (os.path.join(prefix, "bin", "python"), str(other / "bin" / "python")):
        r = subprocess.run([py, "-c", "import handlers"], capture_output=True, text=True, timeout=60, env=env,
                           cwd=str(tmp_path))
        assert r.returncode != 0 and "DECOY handlers" in r.stderr, (py, r.stderr)
    # ours, run by name from PATH (the other venv's bin comes first) and by full path, still works
    specs = tmp_path / "specs"
    specs.mkdir()
    examples = os.path.join(prefix, "share", "consul-medic", "examples")
    with open(os.path.join(examples, "www.example.com.json.example")) as f:
        doc = json.load(f)
    doc["scale"]["file"] = str(tmp_path / "compose.yml")
    (specs / "www.example.com.json").write_text(json.dumps(doc))
    shutil.copy(os.path.join(examples, "compose.yml.example"), tmp_path / "compose.yml")
    env["PATH"] = env["PATH"] + os.pathsep + os.path.join(prefix, "bin")
    for exe in ("medic-config", os.path.join(prefix, "bin", "medic-config")):
        r = subprocess.run([exe, "--specs", str(specs), "--check"], capture_output=True, text=True,
                           timeout=60, env=env, cwd=str(tmp_path))
        assert r.returncode == 0 and "1 specs valid" in r.stdout, (exe, r.stdout, r.stderr)
    r = subprocess.run([os.path.join(prefix, "bin", "medic-check"), "www.example.com", "--specs", str(specs),
                        "--consul-addr", "127.0.0.1:%d" % support.free_port()],
                       capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert r.returncode == 3 and "cannot connect to Consul" in r.stdout and "DECOY" not in r.stdout + r.stderr


@pytest.mark.slow
def test_examples_are_data_not_a_working_install(prefix):
    site = next(iter(os.scandir(os.path.join(prefix, "lib")))).path
    installed_specs = os.path.join(site, "site-packages", "consul_medic", "specs")
    assert sorted(os.listdir(installed_specs)) == ["schema.json"]
    ex = os.path.join(prefix, "share", "consul-medic", "examples")
    assert sorted(os.listdir(ex)) == ["compose.yml.example", "www.example.com.json.example"]
    for name in os.listdir(ex):
        with open(os.path.join(ex, name)) as f:
            text = f.read()
        assert "testbed" not in text and "EXAMPLE ONLY" in text
    with open(os.path.join(ex, "www.example.com.json.example")) as f:
        assert os.path.isabs(json.load(f)["scale"]["file"])


@pytest.mark.slow
def test_installed_units_verify(prefix):
    support.require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd)")
    units = os.path.join(prefix, "share", "consul-medic", "systemd")
    paths = [os.path.join(units, u) for u in UNITS]
    for p in paths:
        with open(p) as f:
            text = f.read()
        assert "/opt/consul-medic/" not in text  # the install's PREFIX, whose executables exist
    r = subprocess.run(["systemd-analyze", "verify"] + paths, capture_output=True, text=True, timeout=120,
                       env=_clean_env(SYSTEMD_LOG_LEVEL="notice"))
    noise = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
    assert r.returncode == 0 and not noise, r.stdout + r.stderr


def test_install_refuses_a_prefix_that_is_not_ours(tmp_path):
    target = tmp_path / "usr-local"
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "something").write_text("keep me")
    r = subprocess.run(["bash", os.path.join(support.ROOT, "deploy", "install.sh"), str(target)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "refusing" in r.stderr
    assert sorted(os.listdir(target)) == ["bin"] and (target / "bin" / "something").read_text() == "keep me"
    r = subprocess.run(["bash", os.path.join(support.ROOT, "deploy", "install.sh"), "relative/prefix"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "absolute" in r.stderr
