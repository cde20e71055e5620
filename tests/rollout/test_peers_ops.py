"""Swarm's and Nomad's rollout pains replayed against medic-rollout (docs/peers.md): an image
whose instances pass and then die (moby#37972: Swarm rolled on when the failure came after its
monitor period; nomad#12940: a failed deployment left the job dead). The executor with the
simulated engine of test_rollout_exec, then the real engine, compose v2, Consul and medic-register."""
import pytest

import support
import support_rollout as srl
from consul_medic.handlers.core.status import Status
from test_rollout_exec import NEW, OLD, FakeDriver, MemStore, executor


class DiesAfterPassing(FakeDriver):
    """Instances of the new image pass at once, and die when `die_at(log)` says so."""

    def __init__(self, die_at, **kw):
        super().__init__(**kw)
        self.die_at = die_at

    def view(self, retiring=()):
        if self.die_at(self.log):
            for cid, b in list(self.boxes.items()):
                if b.image == NEW and b.state == "running":
                    self.boxes[cid] = b._replace(state="exited", passing=False)
            self._track()
        return super().view(retiring)


def test_a_new_instance_that_passed_then_died_mid_rollout_rolls_back():
    d, st = DiesAfterPassing(lambda log: ("maint", "c1") in log), MemStore()   # dies once web-1 is retired
    ex, out, alerts, records = executor(d, st)
    o = ex.run("new:1")
    assert o.status == Status.CRITICAL and "rolled back to old:1" in o.text, o.text
    assert "since this rollout started it" in o.text
    assert sorted(b.image for b in d.boxes.values()) == [OLD] * 3
    assert sum(1 for k, _ in d.log if k == "maint") == 1          # no second old instance retired
    assert any(r.get("step") == "monitor" and r["result"] == "failed" for r in records)
    assert len(alerts) == 2 and st.doc is None


def test_monitor_after_the_last_step_catches_a_late_death_and_zero_judges_at_pass():
    def dies_late():
        views = []

        def late(log):                            # at the third look after the last old one is retired
            if sum(1 for k, _ in log if k == "maint") == 3:
                views.append(1)
            return len(views) >= 3
        return late
    d, st = DiesAfterPassing(dies_late()), MemStore()
    clock = iter(x / 10.0 for x in range(0, 100000))
    ex, out, _, _ = executor(d, st, monitor=5, clock=lambda: next(clock))
    o = ex.run("new:1")
    assert o.status == Status.CRITICAL and "since this rollout started it" in o.text, o.text
    assert "monitoring the new instances for 5 s" in out.stream.getvalue()
    assert sorted(b.image for b in d.boxes.values()) == [OLD] * 3
    d, st = DiesAfterPassing(dies_late()), MemStore()              # --monitor 0: judged when each one passes
    ex, _, _, _ = executor(d, st)
    assert ex.run("new:1").status == Status.OK


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


def dies_after(w, seconds):
    """A variant of the demo image that serves (its check passes) and exits after `seconds`."""
    tag = "medic-demo:%s-dies" % w.token
    c = w.docker.containers.create(support.DEMO_IMAGE)
    try:
        c.commit(repository=tag.rpartition(":")[0], tag=tag.rpartition(":")[2],
                 changes=['CMD ["sh", "-c", "httpd -p 80 -h /www && sleep %d"]' % seconds])
    finally:
        c.remove(force=True)
    w.images.append(tag)
    return tag


@pytest.mark.consul
@pytest.mark.docker
@pytest.mark.slow
def test_an_image_that_passes_then_dies_is_rolled_back_and_the_service_is_left_serving(roll_world):
    """Each new instance exits 3 s after its start, less than the default --monitor (5 s) after the
    last step, however fast or slow the steps were: the last new one dies inside the watch after the
    last step, if not earlier. Without that watch a fast rollout said OK and nothing passed 8 s later."""
    w = roll_world(instances=2).start(2)
    bad = dies_after(w, 3)
    r = w.rollout("--image", bad, "--deadline", "10")           # the default --monitor (5 s)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "since this rollout started it" in r.stdout and "rolled back to %s" % support.DEMO_IMAGE in r.stdout, r.stdout
    assert w.running_images() == [support.DEMO_IMAGE] * 2
    w.wait_passing(2)
    assert w.passing_images() == [support.DEMO_IMAGE] * 2
    assert w.kv("rollout") is None and w.kv("image") is None


def test_a_resumed_pause_still_rolls_back_to_the_image_before_the_rollout():
    """moby#37693: resuming a paused Swarm update overwrote PreviousSpec, so a failure after the
    resume had nothing to roll back to. Here the old image stays in the rollout's state."""
    d, st = FakeDriver(), MemStore()
    calls = []
    ex, _, _, _ = executor(d, st, paused=lambda: calls.append(1) or ("paused by ops" if len(calls) > 1 else None))
    assert ex.run("new:1").status == Status.WARNING            # paused after the first start + retire
    assert st.doc["phase"] == "rolling" and st.doc["from_image"] == "old:1"
    d.sick.add(NEW)                                             # from now on the new image never passes
    clock = iter(range(0, 100000, 5))
    ex2, _, alerts, _ = executor(d, st, deadline=20, clock=lambda: next(clock))
    o = ex2.run("new:1")                                        # resume
    assert o.status == Status.CRITICAL and "rolled back to old:1" in o.text, o.text
    assert sorted(b.image for b in d.boxes.values()) == [OLD] * 3 and st.doc is None and alerts


@pytest.fixture
def redis_world(consul_factory, docker_client, tmp_path, unique):
    import support_lb
    import support_redis
    support.require(support_redis.redis_image_available(docker_client),
                    "the %s image (run `make testbed`)" % support_redis.REDIS_IMAGE)
    w = None
    try:
        w = support_redis.RedisWorld(docker_client, consul_factory, tmp_path, unique)
        yield w
    finally:
        if w is not None:
            w.down()
        else:
            support_lb.remove_containers(docker_client, unique)


@pytest.mark.consul
@pytest.mark.docker
@pytest.mark.slow
def test_a_full_restart_of_every_redis_ends_with_exactly_one_master(redis_world):
    """redis#13658: after every node was stopped and started again, Sentinel and the nodes
    disagreed on the master (two masters). Here: one master in Consul and in Redis, the others
    replicas linked to it."""
    w = redis_world
    for n in ("a", "b", "c"):
        w.run_redis(n)
    w.settled(3)
    for c in w.containers:
        c.stop(timeout=2)
    support.wait_for(lambda: w.instances() == [], 30, what="every instance deregistered")
    for c in reversed(w.containers):                            # the replicas first, the old master last
        c.start()
    m = w.settled(3, timeout=90)
    masters = [i for i in w.instances() if (w.role(i[1], i[2]) or {}).get("role") == "master"]
    assert [i[0] for i in masters] == [m[0]]
