"""What exporting metrics costs a handler run (docs/metrics.md): CPU of medic-heal and medic-check
with and without MEDIC_METRICS_TEXTFILE_DIR, against a throwaway Consul agent on loopback.

    .venv/bin/python tests/bench_metrics.py [RUNS]

medic-heal --service looks at one service whose 3 instances pass (TTL checks; nothing to start:
a noop, one audit record), so the run is lock -> observe -> decide -> record, as a watch runs it.
Exporting adds: importing prometheus_client, the flock'ed state file, writing the .prom file.
"With 100 services" starts from a state file that already holds 100 services' series (what a
node that heals 100 services carries), since every run rewrites the whole file. CPU is the
children's user+system time (resource.getrusage), the median of RUNS alternating runs.
"""
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
import support_heal  # noqa: E402
from consul_medic.handlers.core import metrics  # noqa: E402


def cpu(argv, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), r


def state_with(n, path):
    s = metrics.Samples()
    for i in range(n):
        metrics.observe(s, {"kind": "heal", "service": "svc-%03d.example" % i, "decision": "heal", "argv": ["x"],
                            "result": "ok", "settle": "restored", "heal_seconds": 3.0, "circuit_open": False,
                            "heal_allowed": 60.0, "observed": {"declared": 3, "passing": 3, "pending": 0}},
                        "medic-heal", now=1.0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(s.to_json(), f)


def main(runs=20):
    tmp = tempfile.mkdtemp(prefix="medic-bench-metrics-")
    agent = support.ConsulAgent().start()
    try:
        svc = "benchm.example.com"
        for i in range(3):
            agent.register_ttl("benchm-%d" % i, svc, port=8000 + i)
        specs = os.path.join(tmp, "specs")
        support_heal.write_spec(specs, svc, "benchmnone", instances=3)
        base = support.medic_env(MEDIC_AUDIT_LOG=os.path.join(tmp, "audit.jsonl"))
        variants = {}
        for name, n in (("off", None), ("on", 0), ("on, 100 services", 100)):
            env = dict(base)
            if n is not None:
                env["MEDIC_METRICS_TEXTFILE_DIR"] = os.path.join(tmp, name, "textfile")
                env["MEDIC_METRICS_STATE_DIR"] = os.path.join(tmp, name, "state")
                if n:
                    state_with(n, os.path.join(env["MEDIC_METRICS_STATE_DIR"], "medic-heal.json"))
            variants[name] = env
        heal = [os.path.join(support.BIN, "medic-heal"), "--service", svc, "--specs", specs, "--consul-addr", agent.addr]
        check = [os.path.join(support.BIN, "medic-check"), svc, "--specs", specs, "--consul-addr", agent.addr]
        bare = [sys.executable, "-c", "pass"]
        results = {}
        for argv, label in ((heal, "medic-heal"), (check, "medic-check")):
            for env in variants.values():
                _, r = cpu(argv, env)  # warm the spec cache
                assert r.returncode == 0, (label, r.stdout, r.stderr)
            for _ in range(runs):
                for name, env in variants.items():
                    results.setdefault((label, name), []).append(cpu(argv, env)[0])
        bare_cpu = statistics.median(cpu(bare, base)[0] for _ in range(runs))
        print("CPU per run, median of %d (ms); bare interpreter %.1f ms" % (runs, bare_cpu * 1000))
        print("%-12s %-18s %8s %8s" % ("executable", "exporting", "median", "x bare"))
        for (label, name), values in results.items():
            m = statistics.median(values)
            print("%-12s %-18s %8.1f %8.2f" % (label, name, m * 1000, m / bare_cpu))
        prom = os.path.join(tmp, "on, 100 services", "textfile", "medic_heal.prom")
        print("textfile with 100 services: %d bytes" % os.path.getsize(prom))
    finally:
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def heal_1000():
    """bench.py's heal_decision_1000 (a payload naming 1,000 services, all at their count: 1,000 noop
    records) with and without exporting: wall time of that run, and what the textfile holds."""
    import bench
    b = bench.Bench()
    try:
        off = bench.heal_decision_1000(b)[0].value
        tf = os.path.join(b.tmp, "textfile")
        b.env = dict(b.env, MEDIC_METRICS_TEXTFILE_DIR=tf, MEDIC_METRICS_STATE_DIR=os.path.join(b.tmp, "state"))
        on = bench.heal_decision_1000(b)[0].value
        prom = os.path.join(tf, "medic_heal.prom")
        with open(prom) as f:
            series = sum(1 for line in f if not line.startswith("#"))
        print("heal_decision_1000_s: %.3f s without exporting, %.3f s with (target <= 0.2); textfile %d series, "
              "%d bytes" % (off, on, series, os.path.getsize(prom)))
    finally:
        b.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["--1000"]:
        heal_1000()
    else:
        main(int(sys.argv[1]) if sys.argv[1:] else 20)
