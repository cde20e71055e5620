"""Bench rows of medic-lb and medic-failover (called from tests/bench.py, MEASUREMENTS).

    failover_time       Redis master killed -> writes through nginx-stream succeed again (n=5),
                        and the acknowledged writes lost over those failovers

    lb_render_1000      plan + render of 1,000 services x 2 instances (nginx-http), in process
    lb_reload_after_change
                        a Consul change -> medic-lb --watch re-rendered and nginx reloaded: time from
                        the TTL check turning passing to the first request served by that instance
"""
import os
import signal
import statistics
import subprocess
import time

import support
import support_lb


def _distribution(samples):
    v = sorted(samples)
    p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
    return {"median": round(statistics.median(v), 3), "p90": round(p90, 3), "trials": len(v)}


def lb_render_1000(b, n=1000, trials=5):
    from consul_medic.handlers.lb import lb_render
    from consul_medic.handlers.service import instances
    view = {"svc-%04d.example.com" % i: [
        instances.Instance("svc-%d-%d" % (i, k), "10.0.%d.%d" % (i // 250, i % 250), 8000 + k, ("web",), None,
                         "node-%d" % k, True, 10, "passing") for k in range(2)] for i in range(n)}
    tpl = lb_render.load_template("nginx-http")
    samples = []
    for _ in range(trials):
        t0 = time.perf_counter()
        p = lb_render.plan(view, {}, None)
        text = lb_render.render(tpl, p, {"listen": "8080"})
        samples.append(time.perf_counter() - t0)
    assert text.count("\n    upstream ") == n, text.count("\n    upstream ")
    d = _distribution(samples)
    from bench import Row
    return [Row("lb_render_1000_s", d, "s", "<= 0.5",
                "medic-lb plan + nginx-http render, 1,000 services x 2 passing instances (%d KB)"
                % (len(text) // 1024))]


def lb_reload_after_change(b, trials=10):
    """Real nginx, a real demo container, medic-lb --watch with its default --wait 0.2s:2s."""
    import docker

    from bench import Row
    client = docker.from_env(timeout=30)
    token = "bench%d" % os.getpid()
    tmp = os.path.join(b.tmp, "lb")
    os.makedirs(tmp)
    agent = b.agent()
    svc = "lb-bench.example"
    nginx = watcher = None
    samples = []
    try:
        ca, pa = support_lb.run_demo(client, token, "medic-lb-%s-a" % token)
        cb, pb = support_lb.run_demo(client, token, "medic-lb-%s-b" % token)
        agent.register_ttl("a", svc, port=pa)
        agent.register_ttl("b", svc, port=pb, status="critical")
        port, out = support.free_port(), os.path.join(tmp, "nginx.conf")
        nginx = support_lb.Nginx(tmp, out)
        args = [os.path.join(support.BIN, "medic-lb"), "--consul-addr", agent.addr, "--template", "nginx-http",
                "--out", out, "--service", svc, "--var", "listen=127.0.0.1:%d" % port,
                "--var", "pid=%s" % os.path.join(tmp, "nginx.pid"), "--check-cmd", nginx.check_cmd()]
        env = support.medic_env(MEDIC_AUDIT_LOG=os.path.join(tmp, "audit.jsonl"), MEDIC_NOTIFY="off")
        subprocess.run(args, env=env, check=True, capture_output=True, timeout=60)
        nginx.start()
        watcher = subprocess.Popen(args + ["--watch", "--reload-cmd", nginx.reload_cmd()], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = "http://127.0.0.1:%d/who" % port
        time.sleep(1)
        for _ in range(trials):
            agent.set_ttl("b", "critical")
            support.wait_for(lambda: ":%d;" % pb not in open(out).read(), 20, what="b out of the config")
            time.sleep(1.0)  # the reload has settled: old workers gone
            t0 = time.monotonic()
            agent.set_ttl("b", "passing")
            support.wait_for(lambda: support_lb.get(url, svc, timeout=2)[1] == cb.name, 20, interval=0.005,
                             what="b served through nginx")
            samples.append(time.monotonic() - t0)
    finally:
        if watcher is not None:
            os.killpg(watcher.pid, signal.SIGTERM)
            watcher.wait(20)
        if nginx is not None:
            nginx.stop()
        support_lb.remove_containers(client, token)
        client.close()
    return [Row("lb_reload_after_change_s", _distribution(samples), "s", "<= 1",
                "TTL check passing -> medic-lb --watch (wait 0.2s:2s) rendered, nginx -t, reload -> first "
                "request served by that instance")]


def failover_time(b, trials=5):
    """Redis master killed -> writes through nginx-stream succeed again (detection included):
    medic-register deregisters, the service watch runs medic-failover, medic-lb --watch reloads nginx.
    Each trial then restarts the killed container, which comes back as a replica."""
    import docker

    import support_redis
    from bench import Row

    def factory(start=False, **kw):
        a = support.ConsulAgent(config={"log_level": "WARN"}, **kw)
        b._agents.append(a)
        return a.start() if start else a

    client = docker.from_env(timeout=30)
    tmp = os.path.join(b.tmp, "failover")
    os.makedirs(tmp)
    world = support_redis.RedisWorld(client, factory, tmp, "bench%d" % os.getpid())
    samples, lost, acked = [], 0, 0
    writer = None
    try:
        for n in ("r1", "r2", "r3"):
            world.run_redis(n)
        m = world.settled(3)
        port = world.start_lb()
        writer = support_redis.Writer(port)
        writer.start()
        support.wait_for(lambda: len(writer.acked) > 100, 30, what="writes")
        for _ in range(trials):
            victim = [c for c in world.containers if c.name == m[0].split(":")[1]][0]
            gap, new = support_redis.failover(world, writer, victim, remaining=2)
            samples.append(gap)
            victim.start()
            m = world.settled(3)
            time.sleep(2.0)  # the watch handler's run for the returning instance has ended (runs are serial)
        writer.stop.set()
        writer.join(10)
        r = world.redis(m[1], m[2])
        present = {int(k.split(b":")[1]) for k in r.scan_iter("w:*", count=10000)}
        r.close()
        acked = len(writer.acked)
        lost = len(set(writer.acked) - present)
    finally:
        if writer is not None:
            writer.stop.set()
        world.down()
        client.close()
    return [Row("failover_time_s", _distribution(samples), "s", "<= 3",
                "Redis master killed (3 instances) -> writes through nginx-stream succeed again: deregistration, "
                "service watch -> medic-failover, medic-lb --watch reload"),
            Row("failover_lost_acked_writes", lost, "", None,
                "acked writes missing on the final master after %d failovers, of %d acked (async replication)"
                % (trials, acked))]
