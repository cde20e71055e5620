"""`make bench`: consul-medic's speed figures, measured on this machine in one run.

Prints one table and merges the figures into `bench-results.json` at the repository
root (keys other measurements wrote are kept). Each measurement is an independent
function in MEASUREMENTS taking the shared Bench context and returning a list of
Row(key, value, unit, target, note); add new ones (time to heal, Swarm, registration)
by appending a function. Seconds unless a key ends in `_ms`.

Everything runs against throwaway Consul agents on free loopback ports (started
here, stopped at the end); CPU is the children's user+system time from
resource.getrusage(RUSAGE_CHILDREN), so other load on the machine barely moves it.
"""
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import support  # noqa: E402
import support_check as sc  # noqa: E402

ROOT = support.ROOT
RESULTS = os.path.join(ROOT, "bench-results.json")
Row = namedtuple("Row", "key value unit target note")


class Bench:
    """Shared, lazily created resources; everything is cleaned up in close()."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="medic-bench-")
        self.cache = os.path.join(self.tmp, "cache")
        self.env = sc.check_env(self.cache)
        self._agents = []

    def agent(self, **kw):
        if not support.consul_available():
            raise RuntimeError("no consul binary (run `make testbed`)")
        a = support.ConsulAgent(config={"log_level": "WARN"}, env={"MEDIC_CACHE_DIR": self.cache}, **kw)
        self._agents.append(a)
        return a.start()

    def close(self):
        for a in reversed(self._agents):
            a.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def child_cpu(argv, env=None, repeat=1):
    """[CPU seconds of each run of argv] (user + system of the child)."""
    out = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        last = r
    return out, last


def p90(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]


# -- measurements ----------------------------------------------------------------
def bare_python(b):
    cpu, _ = child_cpu([sys.executable, "-c", "pass"], repeat=30)
    return [Row("bare_python_cpu_ms", round(statistics.median(cpu) * 1000, 2), "ms", None,
                "median of 30 `python -c pass` (baseline)")]


def _check_fixture(b):
    if getattr(b, "check_fixture", None):
        return b.check_fixture
    agent = b.agent()
    specs = os.path.join(b.tmp, "specs-one")
    svc = "bench.example.com"
    for i in range(3):
        agent.register_ttl("bench-%d" % i, svc, port=8000 + i)
    sc.write_spec(specs, svc, 3)
    b.check_fixture = (agent, specs, svc)
    return b.check_fixture


def check_cpu(b):
    agent, specs, svc = _check_fixture(b)
    argv = [os.path.join(support.BIN, "medic-check"), svc, "--specs", specs, "--consul-addr", agent.addr]
    cpu, r = child_cpu(argv, b.env)  # cold spec cache: validates once
    if r.returncode != 0:
        raise RuntimeError("medic-check failed: %s" % r.stdout.decode())
    cpu, r = child_cpu(argv, b.env, repeat=30)
    ms = [c * 1000 for c in cpu]
    return [Row("check_cpu_ms", round(statistics.median(ms), 2), "ms", "<= 40",
                "median of 30 medic-check runs (p90 %.1f ms), warm spec cache, 3 instances" % p90(ms))]


def requests_per_check(b):
    agent, specs, svc = _check_fixture(b)
    proxy = sc.CountingProxy("127.0.0.1", agent.ports["http"])
    try:
        r = subprocess.run([os.path.join(support.BIN, "medic-check"), svc, "--specs", specs,
                            "--consul-addr", proxy.addr], env=b.env, capture_output=True, timeout=60)
        n = len(proxy.requests)
    finally:
        proxy.close()
    if r.returncode != 0:
        raise RuntimeError("medic-check failed: %s" % r.stdout.decode())
    return [Row("consul_requests_per_check", n, "", "1", "HTTP requests one medic-check makes (counting proxy)")]


def _register_many(agent, names, instances=2, threads=4):
    work = [(n, j) for n in names for j in range(instances)]

    def worker(chunk):
        for n, j in chunk:
            agent.register("%s-%d" % (n, j), n, port=9000 + j)

    ts = [threading.Thread(target=worker, args=(work[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def batch_1000(b, n=1000):
    agent = b.agent()
    specs = os.path.join(b.tmp, "specs-batch")
    names = ["svc%04d.example.com" % i for i in range(n)]
    for i, name in enumerate(names):
        sc.write_spec(specs, name, 2 if i % 10 else 3, check={"mode": "batch"})  # every 10th is short
    _register_many(agent, names)
    sc.register_medic_ttl(agent, names)
    support.wait_for(lambda: len(agent.api("/v1/catalog/services")) >= n + 2, 120, 0.5, "registrations")
    proxy = sc.CountingProxy("127.0.0.1", agent.ports["http"])
    base = [os.path.join(support.BIN, "medic-check"), "--all", "--specs", specs, "--consul-addr", proxy.addr]
    try:
        cold, r = child_cpu(base, b.env)  # validates 1,000 specs into the cache; no writes
        proxy.reset()
        full, r1 = child_cpu(base + ["--ttl", "--refresh", "3600"], b.env)  # every TTL check written
        writes = sum(1 for m, _ in proxy.requests if m == "PUT")
        proxy.reset()
        steady, r2 = child_cpu(base + ["--ttl", "--refresh", "3600"], b.env)  # nothing changed: reads only
        reads = sum(1 for m, _ in proxy.requests if m == "GET")
    finally:
        proxy.close()
    first = r1.stdout.decode().splitlines()[0]
    if "services=%d" % n not in first or writes != n:
        raise RuntimeError("batch pass did not evaluate/write %d services: %s (writes %d)" % (n, first, writes))
    return [
        Row("batch_1000_cpu_s", round(full[0], 3), "s", "<= 0.5",
            "one --all --ttl pass, 1,000 specs x 2 instances, all %d TTL checks written" % writes),
        Row("batch_1000_steady_cpu_s", round(steady[0], 3), "s", None,
            "the next pass: nothing changed, %d read requests, 0 writes" % reads),
        Row("batch_1000_cold_cache_cpu_s", round(cold[0], 3), "s", None,
            "first pass ever: validates 1,000 specs into the cache (once per spec change)"),
        Row("batch_reads_per_pass", reads, "", "constant", "Consul read requests per batch pass"),
    ]


def heal_decision_1000(b, n=1000):
    """medic-heal fed a checks payload naming 1,000 services that all have specs.

    Every service is at its count (2 passing instances, on another host as far as
    this engine knows), so the right answer is 1,000 noops: triage reads Consul and
    the engine once and locks nothing. Wall time of the whole process and the Consul
    requests it made, spec cache warm.
    """
    agent = b.agent()
    specs = os.path.join(b.tmp, "specs-heal")
    names = ["hsvc%04d.example.com" % i for i in range(n)]
    import support_heal
    for i, name in enumerate(names):
        support_heal.write_spec(specs, name, "hb%04d" % i, instances=2)
    _register_many(agent, names)
    support.wait_for(lambda: len(agent.api("/v1/catalog/services")) >= n + 1, 120, 0.5, "registrations")
    payload = json.dumps([{"Node": agent.node, "CheckID": "service:%s-0" % name, "Name": "web", "Status": "critical",
                           "Output": "", "ServiceID": "%s-0" % name, "ServiceName": name, "ServiceTags": [],
                           "ModifyIndex": 1} for name in names]).encode()
    proxy = sc.CountingProxy("127.0.0.1", agent.ports["http"])
    env = dict(b.env, MEDIC_AUDIT_LOG=os.path.join(b.tmp, "heal-audit.jsonl"), MEDIC_NOTIFY="off")
    argv = [os.path.join(support.BIN, "medic-heal"), "--specs", specs, "--consul-addr", proxy.addr]
    try:
        subprocess.run(argv, input=payload, env=env, capture_output=True, timeout=600)  # warms the spec cache
        proxy.reset()
        t0 = time.monotonic()
        r = subprocess.run(argv, input=payload, env=env, capture_output=True, timeout=600)
        wall = time.monotonic() - t0
        nreq = len(proxy.requests)
    finally:
        proxy.close()
    first = r.stdout.decode().splitlines()[0] if r.stdout else r.stderr.decode()
    if r.returncode != 0 or "%d services (%d ok)" % (n, n) not in first:
        raise RuntimeError("medic-heal on %d services: exit %d: %s" % (n, r.returncode, first[:300]))
    return [Row("heal_decision_1000_s", round(wall, 3), "s", None,
                "medic-heal, checks payload naming 1,000 services with specs, all at their count (wall time)"),
            Row("heal_consul_requests_1000", nreq, "", "constant", "Consul requests of that run (triage)")]


def distribution(samples):
    """Seconds per trial -> the {"median", "p90", "trials"} the results file records."""
    return {"median": round(statistics.median(samples), 3), "p90": round(p90(samples), 3), "trials": len(samples)}


def swarm_time_to_heal(b, trials=10):
    import bench_swarm
    d = distribution(bench_swarm.measure_swarm_time_to_heal(trials=trials))
    return [Row("swarm_time_to_heal_s", d, "s", None,
                "Swarm mode, same image and engine: docker kill -> new task healthy (default restart delay)")]


def time_to_heal(b, trials=10):
    """docker kill one of 3 replicas -> the replacement passing in Consul, through the whole loop.

    The production path: a server agent running the consul.d medic-config rendered
    (watches -> medic-heal), medic-register following the engine, compose scaling.
    Also counts scale actions per loss (must be exactly one each).
    """
    import subprocess

    from support_e2e import Stack

    def factory(start=False, **kw):
        a = support.ConsulAgent(**kw)
        b._agents.append(a)
        return a.start() if start else a

    s = Stack(b.tmp, "b%d" % os.getpid(), consul_factory=factory, name="heal")
    samples, extra = [], 0
    try:
        s.start(replicas=3)
        s.settled(3)
        for _ in range(trials):
            before = len(s.scale_actions())
            ids = s.container_ids()
            victim = ids[0]
            t0 = time.monotonic()
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True)

            # the killed container's own instance vanishes within ~0.1 s; wait for that first
            support.wait_for(lambda: s.passing() < 3, 10, interval=0.005, what="the loss seen in Consul")
            support.wait_for(lambda: s.passing() == 3, 60, interval=0.005, what="3 passing again")
            samples.append(time.monotonic() - t0)
            s.settled(3, quiet=2)
            extra += len(s.scale_actions()) - before - 1
    finally:
        s.stop()
    d = distribution(samples)
    return [Row("time_to_heal_s", d, "s", "median <= 1.5, p90 <= 2.5",
                "docker kill 1 of 3 -> replacement passing in Consul (watch -> medic-heal -> compose)"),
            Row("heal_extra_actions", extra, "", "0", "scale actions beyond one per loss, over all trials")]


def register_100(b):
    import support_register as sr
    d = {}
    s = sr.measure_register_100(detail=d)
    return [Row("register_100_s", round(s, 2), "s", None,
                "100 containers, 10 parallel docker runs (%.1f s of engine time); last registration %.2f s "
                "after the last start" % (d["started_s"], d["after_last_start_s"]))]


# -- medic-lb / medic-failover rows (owner: lb helper; the measurements live in bench_lb.py) --------------
def lb_rows(b):
    import bench_lb
    return bench_lb.lb_render_1000(b) + bench_lb.lb_reload_after_change(b) + bench_lb.failover_time(b)


MEASUREMENTS = [bare_python, check_cpu, requests_per_check, batch_1000, heal_decision_1000, time_to_heal,
                swarm_time_to_heal, register_100, lb_rows]


# -- output ------------------------------------------------------------------------
def fmt(v):
    if isinstance(v, dict) and "median" in v:
        return "median %g / p90 %g (n=%d)" % (v["median"], v["p90"], v["trials"])
    return "%g" % v if isinstance(v, float) else str(v)


def table(rows):
    head = ("figure", "value", "target", "how")
    cells = [head] + [(r.key, fmt(r.value) + (" " + r.unit if r.unit else ""), r.target or "", r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(c[j].ljust(widths[j]) for j in range(3)) + "  " + c[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 3)
    return "\n".join(lines)


def merge_results(rows, path=RESULTS):
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    for r in rows:
        data[r.key] = r.value
    data["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return data


def main(names=None):
    b = Bench()
    rows, failed = [], []
    try:
        for m in MEASUREMENTS:
            if names and m.__name__ not in names:
                continue
            t = time.time()
            try:
                rows.extend(m(b))
            except Exception as e:  # one broken measurement does not hide the others
                failed.append("%s: %s: %s" % (m.__name__, type(e).__name__, e))
            sys.stderr.write("bench: %s done in %.1f s\n" % (m.__name__, time.time() - t))
    finally:
        b.close()
    print(table(rows))
    for f in failed:
        print("FAILED " + f)
    merge_results(rows)
    print("written: %s" % RESULTS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
