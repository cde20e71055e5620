"""medic-rollout against a real Consul agent, the real engine, compose v2 and medic-register."""
import signal
import subprocess

import pytest

import support
import support_rollout as srl

pytestmark = [pytest.mark.consul, pytest.mark.docker]


@pytest.fixture
def roll_world(consul_factory, docker_client, compose, demo_image, tmp_path, unique):
    worlds = []

    def make(**kw):
        w = srl.RollWorld(consul_factory(), docker_client, tmp_path, unique, **kw)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.down()


def test_three_instances_roll_to_a_new_image(roll_world):
    w = roll_world().start(3)
    v2 = w.variant("v2", page="release two")
    before = {c.id for c in w.containers()}
    dry = w.rollout("--image", v2, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "6 step(s)" in dry.stdout and dry.stdout.count("start one new instance") == 3
    assert {c.id for c in w.containers()} == before and w.kv("rollout") is None

    r = w.rollout("--image", v2, "--deadline", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "now on %s" % v2 in r.stdout
    assert r.stdout.count("step ") >= 6  # one line per step (and one when it is done)
    assert w.running_images() == [v2] * 3
    assert not ({c.id for c in w.containers()} & before)
    w.wait_passing(3)
    assert w.passing_images() == [v2] * 3
    assert w.kv("image")["image"] == v2 and w.kv("rollout") is None
    steps = w.records("step")
    assert [s["step"] for s in steps] == ["start", "retire"] * 3 and all(s["result"] == "ok" for s in steps)
    # a second run has nothing to do
    r = w.rollout("--image", v2)
    assert r.returncode == 0 and "now on" in r.stdout, r.stdout


def test_an_image_that_never_passes_is_rolled_back(roll_world):
    w = roll_world().start(3)
    sick = w.variant("sick", sick=True)
    r = w.rollout("--image", sick, "--deadline", "8")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "rolled back to %s" % support.DEMO_IMAGE in r.stdout
    assert w.running_images() == [support.DEMO_IMAGE] * 3
    w.wait_passing(3)
    assert w.passing_images() == [support.DEMO_IMAGE] * 3
    assert w.kv("rollout") is None and w.kv("image") is None
    emits = [rec for rec in __import__("consul_medic.handlers.core.audit", fromlist=["read"]).read(w.audit)
             if rec.get("kind") == "notify" and rec.get("step") == "emit"]
    assert emits and emits[0]["event"]["action"] == "rollout"


def test_killed_mid_way_the_rerun_resumes_and_completes(roll_world):
    w = roll_world().start(3)
    v2 = w.variant("v2", page="release two")
    p = subprocess.Popen([support.BIN + "/medic-rollout", w.service, "--image", v2], env=w.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        support.wait_for(lambda: (w.kv("rollout") or {}).get("step", 0) >= 2, timeout=120,
                         what="two steps done")
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    state = w.kv("rollout")
    assert state["image"] == v2 and state["phase"] == "rolling"
    # the killed run's session lock frees by its TTL (or at once, when its holder is known dead);
    # then a different image is refused while this one is in progress
    other = w.variant("v3", page="release three")
    r = support.wait_for(lambda: _not_locked(w.rollout("--image", other)), timeout=60, interval=1,
                         what="a run getting the lock")
    assert r.returncode == 1 and "in progress" in r.stdout and "--abort" in r.stdout, r.stdout
    r = w.rollout("--image", v2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in r.stdout
    assert w.running_images() == [v2] * 3
    w.wait_passing(3)
    assert w.kv("rollout") is None and w.kv("image")["image"] == v2


def _not_locked(r):
    return None if (r.returncode == 1 and "lock" in r.stdout) else r


def test_bad_input_changes_nothing(roll_world):
    w = roll_world().start(1)
    r = w.rollout("--image", "medic-demo:no-such-tag-%s" % w.unique)
    assert r.returncode == 3 and "not on the Docker engine" in r.stdout, r.stdout
    r = w.rollout()
    assert r.returncode == 3 and "exactly one of --image" in r.stdout
    r = support.run_medic("medic-rollout", ["nope.example", "--image", "x:y"], env=w.env())
    assert r.returncode == 3 and "no spec" in r.stdout
    assert w.kv("rollout") is None and len(w.containers()) == 1


def test_pause_refuses_stops_between_steps_and_heal_stands_aside(roll_world):
    w = roll_world().start(3)
    v2 = w.variant("v2", page="release two", start_delay=6)  # slow: room for heal and the pause mid-way
    r = support.run_medic("medic-heal", ["--pause", w.service, "--reason", "roll test"], env=w.env())
    assert r.returncode == 0, r.stdout + r.stderr
    r = w.rollout("--image", v2)
    assert r.returncode == 1 and "refused: paused" in r.stdout and "roll test" in r.stdout, r.stdout
    assert w.kv("rollout") is None and w.running_images() == [support.DEMO_IMAGE] * 3
    r = support.run_medic("medic-heal", ["--resume", w.service], env=w.env())
    assert r.returncode == 0, r.stdout + r.stderr

    p = subprocess.Popen([support.BIN + "/medic-rollout", w.service, "--image", v2], env=w.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        support.wait_for(lambda: (w.kv("rollout") or {}).get("step", 0) >= 1, timeout=120, what="one step done")
        h = support.run_medic("medic-heal", ["--service", w.service], env=w.env())
        assert h.returncode == 0 and "rollout in progress" in h.stdout, h.stdout
        r = support.run_medic("medic-heal", ["--pause", w.service, "--reason", "stop there"], env=w.env())
        assert r.returncode == 0, r.stdout
        out, _ = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 1 and "paused after" in out and "run again to resume" in out, out
    state = w.kv("rollout")
    assert state["phase"] == "rolling" and state["step"] in (2, 4)  # a start and its retire: never one more
    w.wait_passing(3)
    support.run_medic("medic-heal", ["--resume", w.service], env=w.env())
    r = w.rollout("--image", v2)
    assert r.returncode == 0 and "resuming" in r.stdout, r.stdout
    assert w.running_images() == [v2] * 3 and w.kv("rollout") is None


def test_abort_after_a_killed_run_rolls_back_to_the_old_image(roll_world):
    w = roll_world().start(3)
    v2 = w.variant("v2", page="release two")
    p = subprocess.Popen([support.BIN + "/medic-rollout", w.service, "--image", v2], env=w.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        support.wait_for(lambda: (w.kv("rollout") or {}).get("step", 0) >= 3, timeout=120, what="three steps done")
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    r = support.wait_for(lambda: _not_locked(w.rollout("--abort")), timeout=60, interval=1,
                         what="--abort getting the lock")
    assert r.returncode == 2 and "rolled back to %s" % support.DEMO_IMAGE in r.stdout, r.stdout
    assert w.running_images() == [support.DEMO_IMAGE] * 3
    w.wait_passing(3)
    assert w.kv("rollout") is None and w.kv("image") is None
