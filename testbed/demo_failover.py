"""make demo-failover: one Redis failover, end to end, with its timeline (loopback only).

  1. a throwaway Consul agent (free loopback ports; never the shared 127.0.0.1:8500) whose
     `service` watch runs medic-failover, and medic-register following the engine
  2. three medic-redis containers, all labelled `slave`: medic-failover bootstraps one master
  3. nginx-stream rendered by medic-lb --watch, a client writing through it continuously
  4. the master is killed: the timeline from the audit log and the client's view
  5. the old master comes back: tagged slave, made a replica of the new master
Everything it started is removed at the end (also on Ctrl-C).
"""
import calendar
import os
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

import support  # noqa: E402
import support_redis  # noqa: E402
from consul_medic.handlers.core import audit  # noqa: E402


def say(text):
    print("\n== " + text, flush=True)


def show_instances(world):
    for sid, addr, port, tags, passing in world.instances():
        info = world.role(addr, port) or {}
        print("   %-40s %s:%-5d tags=%-12s %-8s redis=%s%s" % (
            sid, addr, port, ",".join(tags), "passing" if passing else "critical", info.get("role"),
            " of :%s" % info.get("master_port") if info.get("role") == "slave" else ""))


def main():
    import docker
    import tempfile
    client = docker.from_env(timeout=30)
    tmp = tempfile.mkdtemp(prefix="medic-demo-failover-")
    agents = []

    def factory(start=False, **kw):
        a = support.ConsulAgent(config={"log_level": "WARN"}, **kw)
        agents.append(a)
        return a.start() if start else a

    token = "demo" + uuid.uuid4().hex[:6]
    world = writer = None
    try:
        say("1. Consul agent with a service watch running medic-failover; medic-register")
        world = support_redis.RedisWorld(client, factory, tmp, token)
        print("   agent %s, service %s, audit %s" % (world.agent.addr, world.service, world.audit_log))
        say("2. three medic-redis containers (all labelled slave): medic-failover bootstraps a master")
        for n in ("r1", "r2", "r3"):
            world.run_redis(n)
        m = world.settled(3)
        show_instances(world)
        say("3. nginx-stream from medic-lb --watch; a client writing SET w:<i> through it")
        port = world.start_lb()
        print("   nginx listens on 127.0.0.1:%d; its upstream:" % port)
        print("".join("      " + ln + "\n" for ln in open(world.lb_conf).read().splitlines() if "server " in ln
                      and ":" in ln), end="")
        writer = support_redis.Writer(port)
        writer.start()
        support.wait_for(lambda: len(writer.acked) > 200, 30, what="writes")
        say("4. docker kill the master %s" % m[0])
        victim = [c for c in world.containers if c.name == m[0].split(":")[1]][0]
        t_wall, t0 = time.time(), time.monotonic()
        gap, new = support_redis.failover(world, writer, victim, remaining=2)
        time.sleep(0.5)
        fails = [e for e in writer.events if e[0] >= t0 and not e[1]]
        print("   timeline (seconds after the kill):")
        lines = [(fails[0][0] - t0, "first failed write (%s)" % ", ".join(
            "%s x%d" % kv for kv in writer.errors.items())),
            (gap, "writes succeed again through nginx (on %s)" % new[0])]
        for r in audit.read(world.audit_log):
            ts = calendar.timegm(time.strptime(r["time"][:19], "%Y-%m-%dT%H:%M:%S")) + float("0." + r["time"][20:23])
            if ts < t_wall - 0.05:
                continue
            if r.get("kind") == "failover":
                start = ts - float(r.get("seconds") or 0)
                lines.append((start - t_wall, "medic-failover run starts (the service watch fired)"))
                lines.append((ts - t_wall, "medic-failover: %s - steps: %s" % (
                    r.get("action"), "; ".join(r.get("steps") or ()) or "-")))
            elif r.get("kind") == "lb" and r.get("action") == "write":
                lines.append((ts - t_wall, "medic-lb: nginx config rewritten, checked, reloaded (%d servers)"
                              % r.get("servers", 0)))
            elif r.get("action") == "deregister":
                lines.append((ts - t_wall, "medic-register: deregistered %s" % r.get("service_id")))
        for at, what in sorted(lines):
            print("   %6.3f  %s" % (at, what))
        show_instances(world)
        say("5. the old master comes back (docker start): tagged slave, made a replica")
        victim.start()
        world.settled(3)
        show_instances(world)
        writer.stop.set()
        writer.join(10)
        r = world.redis(new[1], new[2])
        present = {int(k.split(b":")[1]) for k in r.scan_iter("w:*", count=10000)}
        r.close()
        lost = set(writer.acked) - present
        say("acknowledged writes: %d, lost across the failover: %d (replication is asynchronous)"
            % (len(writer.acked), len(lost)))
    finally:
        if writer is not None:
            writer.stop.set()
        if world is not None:
            world.down()
        for a in reversed(agents):
            a.stop()
        client.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        print("\n(cleaned up: containers, network, agent, nginx, medic-lb, medic-register)")


if __name__ == "__main__":
    main()
