"""Medic's own files live in a directory it owns (issue 23): compose overrides, the spec cache and
batch state refuse a directory another user created first, a symlinked directory or file, and a
directory open to others. The attacker is a real process of another user (uid 65534) in a shared,
sticky directory like /tmp."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

import pytest

from consul_medic.handlers.check import batch
from consul_medic.handlers.core import private
from consul_medic.handlers.service import rollout_image
from consul_medic.handlers.spec import spec_cache
from consul_medic.handlers.core.errors import UsageError

NOBODY = 65534
Scale = namedtuple("Scale", "project service")
Spec = namedtuple("Spec", "scale")
SPEC = Spec(Scale("shop", "web"))


@pytest.fixture
def shared():
    """A sticky world-writable directory of this test (like /tmp), removed afterwards."""
    d = tempfile.mkdtemp(prefix="medic-shared-")
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(code):
    """Run Python `code` as uid/gid 65534: the local attacker."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the attacker as another user")
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    return subprocess.run([python, "-c", code], user=NOBODY, group=NOBODY, capture_output=True, text=True,
                          timeout=30, cwd="/")


def test_a_directory_another_user_created_first_is_refused(shared):
    d = os.path.join(shared, "consul-medic-overrides")
    r = as_nobody("import os; os.mkdir(%r, 0o777); os.chmod(%r, 0o777)" % (d, d))
    assert r.returncode == 0, r.stderr
    with pytest.raises(UsageError, match="belongs to uid 65534"):
        rollout_image.compose_override(SPEC, "medic-demo:v2", directory=d)
    assert os.listdir(d) == []  # nothing written where the attacker could swap it
    spec_cache.put(d, "/specs/a.json", ("k",), {"service": "a"})
    batch.write_state(os.path.join(d, "batch-h-1.json"), {"c": 1.0})
    assert os.listdir(d) == []
    r = as_nobody("open(%r, 'wb').write(b'x')" % os.path.join(d, "spec%specs%a.json.marshal"))
    assert r.returncode == 0
    assert spec_cache.get(d, "/specs/a.json", ("k",)) is None  # planted by another user: a miss


def test_symlinked_directory_and_files_are_never_followed(shared, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = os.path.join(shared, "link")
    os.symlink(str(real), link)
    with pytest.raises(UsageError, match="symbolic link"):
        rollout_image.compose_override(SPEC, "medic-demo:v2", directory=link)
    assert list(real.iterdir()) == []

    victim = tmp_path / "victim"
    victim.write_text("precious")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    name = os.path.basename(spec_cache._file(str(cache), "/specs/a.json"))
    os.symlink(str(victim), str(cache / name))
    os.symlink(str(victim), str(cache / "batch-h-1.json"))
    assert spec_cache.get(str(cache), "/specs/a.json", ("k",)) is None
    assert batch.read_state(str(cache / "batch-h-1.json")) == {}
    spec_cache.put(str(cache), "/specs/a.json", ("k",), {"service": "a"})
    batch.write_state(str(cache / "batch-h-1.json"), {"c": 1.0})
    assert victim.read_text() == "precious"  # replaced the links, never wrote through them
    assert not os.path.islink(cache / name) and spec_cache.get(str(cache), "/specs/a.json", ("k",)) == {"service": "a"}
    assert batch.read_state(str(cache / "batch-h-1.json")) == {"c": 1.0}
    assert oct(os.stat(cache / name).st_mode & 0o777) == "0o600"


def test_a_directory_of_ours_open_to_others_is_narrowed_and_the_attacker_cannot_swap_the_override(shared):
    d = os.path.join(shared, "overrides")
    os.mkdir(d)
    os.chmod(d, 0o777)
    path = rollout_image.compose_override(SPEC, "medic-demo:v2", directory=d)
    assert oct(os.stat(d).st_mode & 0o777) == "0o700"
    doc = json.load(open(path))
    assert doc == {"services": {"web": {"image": "medic-demo:v2"}}}
    swap = ("import os\n"
            "try:\n    os.rename(%r, %r)\nexcept OSError as e:\n    print(e.errno)\n"
            "try:\n    open(%r, 'w').write('services: {web: {privileged: true}}')\nexcept OSError as e:\n"
            "    print(e.errno)\n") % (path, path + ".x", path)
    r = as_nobody(swap)
    assert r.stdout.split() == ["13", "13"], r.stdout + r.stderr  # EACCES twice
    assert json.load(open(path)) == doc
    if shutil.which("docker"):
        compose = os.path.join(shared, "compose.yml")
        with open(compose, "w") as f:
            f.write("services:\n  web:\n    image: medic-demo:v1\n")
        p = subprocess.run(["docker", "compose", "-p", "shop", "-f", compose, "-f", path, "config", "--images"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.split() == ["medic-demo:v2"], p.stderr


def test_private_names_are_single_components(tmp_path):
    for bad in ("../x", "a/b", ".", "..", ""):
        with pytest.raises(private.PrivateDirError):
            private.write(str(tmp_path), bad, b"x")


def test_the_default_override_directory_is_medics_own_not_shared_tmp(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert rollout_image.override_dir(env) == os.path.join(str(tmp_path), "consul-medic", "overrides")
    assert not rollout_image.override_dir({"HOME": "/root"}).startswith(tempfile.gettempdir())
