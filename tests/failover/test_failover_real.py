"""medic-failover against real parts: medic-redis containers registered by medic-register, the
agent's service watch running medic-failover, nginx-stream rendered by medic-lb --watch, and a
client writing through nginx while the master is killed."""
import threading
import time

import pytest

import support
import support_lb
import support_redis
from consul_medic.handlers.core import audit

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def world(consul_factory, docker_client, tmp_path, unique):
    support.require(support_lb.nginx_available(), "nginx (run `make testbed`)")
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


def primaries(conf_text):
    """The non-backup server lines of an nginx-stream config."""
    return [ln.strip() for ln in conf_text.splitlines() if ln.strip().startswith("server ") and " backup" not in ln
            and ":" in ln.split()[1]]


def test_master_killed_writes_resume_through_the_lb_on_the_new_master(world):
    for n in ("r1", "r2", "r3"):
        world.run_redis(n)
    m = world.settled(3)                         # bootstrapped by the watch: one master, two replicas
    port = world.start_lb()
    support.wait_for(lambda: primaries(open(world.lb_conf).read()) and
                     ":%d " % m[2] in primaries(open(world.lb_conf).read())[0], 20, what="lb primary = master")
    writer = support_redis.Writer(port)
    writer.start()
    try:
        support.wait_for(lambda: len(writer.acked) > 200, 30, what="writes through the lb")
        victim = [c for c in world.containers if c.name == m[0].split(":")[1]]
        assert len(victim) == 1, (m, [c.name for c in world.containers])
        gap, new = support_redis.failover(world, writer, victim[0], remaining=2)
        assert new[0] != m[0] and gap is not None
        after_failover = len(writer.acked)
        support.wait_for(lambda: len(writer.acked) > after_failover + 200, 30, what="writes on the new master")

        # the old master comes back: tagged slave before it is ever a primary, made a replica
        seen_conf, seen_tags, stop = [], [], threading.Event()

        def watch():
            while not stop.is_set():
                seen_conf.append(open(world.lb_conf).read())
                seen_tags.extend(i[3] for i in world.instances() if i[0] == m[0])
                time.sleep(0.02)
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        victim[0].start()
        try:
            settled = world.settled(3)
            assert settled[0] == new[0]
        finally:
            stop.set()
            t.join(5)
        back = [i for i in world.instances() if i[0] == m[0]][0]
        assert "slave" in back[3] and "master" not in back[3]
        assert seen_tags and all("master" not in tags for tags in seen_tags), seen_tags
        old = "%s:%d" % (back[1], back[2])
        assert not any(old in line for conf in seen_conf for line in primaries(conf))
    finally:
        writer.stop.set()
        writer.join(10)

    # acknowledged writes: everything acked after the failover is on the new master; count the loss
    r = world.redis(new[1], new[2])
    acked = set(writer.acked)
    present = {int(k.split(b":")[1]) for k in r.scan_iter("w:*", count=10000)}
    r.close()
    lost = sorted(acked - present)
    assert not [i for i in lost if i > writer.acked[after_failover - 1]], lost[:10]
    print("failover: writes resumed %.3f s after the kill; %d acked writes, %d lost (%s); errors %s"
          % (gap, len(acked), len(lost), lost[:5], writer.errors))
    recs = [x for x in audit.read(world.audit_log) if x.get("kind") == "failover" and x.get("action") == "failover"]
    assert recs and recs[-1]["result"] == "done" and recs[-1]["master"] == new[0]


def test_master_lost_with_no_healthy_replica_does_nothing_but_alert(world):
    world.run_redis("a")
    m = world.settled(1)
    r = world.redis(m[1], m[2])
    r.set("k", "v")
    r.close()
    world.containers[0].kill()
    support.wait_for(lambda: world.instances() == [], 20, what="the master deregistered")
    world.run_redis("b")                      # heal's fresh replacement: empty, standalone
    support.wait_for(lambda: [x for x in audit.read(world.audit_log)
                              if x.get("kind") == "failover" and x.get("action") == "hold"], 30,
                     what="a hold decision")
    time.sleep(2)
    assert world.tagged("master") == []
    holds = [x for x in audit.read(world.audit_log) if x.get("kind") == "failover" and x.get("action") == "hold"]
    assert "no healthy replica" in holds[-1]["reason"]
    alerts = [x for x in audit.read(world.audit_log) if x.get("kind") == "notify"
              and x["event"].get("action") == "failover:hold"]
    assert alerts and alerts[-1]["event"]["kind"] == "critical"


def test_a_second_instance_tagged_master_is_demoted(world):
    for n in ("a", "b"):
        world.run_redis(n)
    m = world.settled(2)
    other = [i for i in world.instances() if i[0] != m[0]][0]
    r = support.run_medic("medic-tag", [other[0], "--add", "master", "--remove", "slave",
                                        "--consul-addr", world.agent.addr])
    assert r.returncode == 0, r.stdout + r.stderr
    support.wait_for(lambda: [x for x in audit.read(world.audit_log)
                              if x.get("kind") == "failover" and x.get("action") == "split_brain"
                              and x.get("result") == "done"], 30, what="split brain resolved")
    assert world.settled(2)[0] == m[0]
    assert [i[0] for i in world.tagged("master")] == [m[0]]


def test_failover_waits_for_the_heal_lock_then_acts(world):
    from consul_medic.handlers.consul import lock, settings
    for n in ("a", "b"):
        world.run_redis(n)
    m = world.settled(2)
    client = settings.make_client(settings.resolve(world.agent.addr))
    victim = [c for c in world.containers if c.name == m[0].split(":")[1]][0]
    with lock.held(client, None, world.service, "heal") as got:
        assert got
        victim.kill()
        support.wait_for(lambda: m[0] not in [i[0] for i in world.instances()], 20, what="master deregistered")
        time.sleep(3)
        assert world.tagged("master") == [] and not [
            x for x in audit.read(world.audit_log) if x.get("kind") == "failover" and x.get("action") == "failover"]
    new = world.settled(1, timeout=30)
    assert new[0] != m[0]
    done = [x for x in audit.read(world.audit_log) if x.get("kind") == "failover" and x.get("action") == "failover"]
    assert done and done[-1]["result"] == "done" and done[-1]["seconds"] >= 3
