"""Issue 10's `make bench` row: second_loss_time_to_heal_s (heal helper).

A loss 1 s after a completed heal, with the shipped defaults (cooldown 10 s, grace 30 s), through
the whole production loop (server agent with the consul.d medic-config renders, medic-register,
compose). Time from the second `docker kill` to 3 passing again; also counts scale actions
beyond one per loss. Register it in bench.MEASUREMENTS (bench.py belongs to the speed helper):

    from bench_heal import second_loss_time_to_heal
    MEASUREMENTS = [..., second_loss_time_to_heal]

Standalone: `.venv/bin/python tests/bench_heal.py [trials]` prints the figures.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import support  # noqa: E402

SHIPPED = {"grace": "30s", "cooldown": "10s", "backoff_base": "10s", "backoff_max": "300s", "max_attempts": 5}


def measure(workdir, agents, trials=5):
    from support_e2e import Stack

    def factory(start=False, **kw):
        a = support.ConsulAgent(**kw)
        agents.append(a)
        return a.start() if start else a

    s = Stack(workdir, "sl%d" % os.getpid(), consul_factory=factory, name="secondloss", heal=SHIPPED)
    samples, firsts, extra = [], [], 0
    try:
        s.start(replicas=3)
        s.settled(3)
        for _ in range(trials):
            before = len(s.scale_actions())
            t1 = time.monotonic()
            subprocess.run(["docker", "kill", s.container_ids()[0]], check=True, capture_output=True)
            support.wait_for(lambda: s.passing() < 3, 10, interval=0.005, what="the first loss seen")
            support.wait_for(lambda: s.passing() == 3, 60, interval=0.005, what="3 passing after the first loss")
            firsts.append(time.monotonic() - t1)
            time.sleep(1.0)  # the second loss, 1 s after the heal completed (well inside the cooldown)
            t0 = time.monotonic()
            subprocess.run(["docker", "kill", s.container_ids()[1]], check=True, capture_output=True)
            support.wait_for(lambda: s.passing() < 3, 10, interval=0.005, what="the second loss seen")
            support.wait_for(lambda: s.passing() == 3, 90, interval=0.005, what="3 passing after the second loss")
            samples.append(time.monotonic() - t0)
            s.settled(3, quiet=2)
            extra += len(s.scale_actions()) - before - 2
    finally:
        s.stop()
    return samples, firsts, extra


def second_loss_time_to_heal(b, trials=5):
    from bench import Row, distribution
    samples, _, extra = measure(b.tmp, b._agents, trials)
    return [Row("second_loss_time_to_heal_s", distribution(samples), "s", "median <= 1.5",
                "a loss 1 s after a completed heal, shipped defaults: docker kill -> 3 passing again"),
            Row("second_loss_extra_actions", extra, "", "0", "scale actions beyond one per loss")]


if __name__ == "__main__":
    agents = []
    tmp = tempfile.mkdtemp(prefix="medic-bench-heal-")
    try:
        samples, firsts, extra = measure(tmp, agents, int(sys.argv[1]) if sys.argv[1:] else 5)
    finally:
        for a in agents:
            a.stop()
    print("second_loss_time_to_heal_s: median %.2f, max %.2f, n=%d: %s; extra actions %d"
          % (statistics.median(samples), max(samples), len(samples), ["%.2f" % x for x in samples], extra))
    print("(first losses of the same trials: median %.2f, max %.2f: %s)"
          % (statistics.median(firsts), max(firsts), ["%.2f" % x for x in firsts]))
