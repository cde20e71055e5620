"""`make chaos DURATION=10m SEED=n`: a seeded random fault schedule on the multi-host demo stack.

    .venv/bin/python tests/chaos.py [--duration 10m] [--seed N] [--out chaos-results.json]

The stack (tests/support_chaos.py): a 3-server Consul cluster with the monitoring agent on
127.0.0.1:8500, 3 Docker hosts (testbed/hosts.sh) each healing its own engine, one service
of 6 instances. Faults are drawn with random.Random(SEED) (tests/chaos_faults.py); an
invariant checker polls every 0.2 s. Prints a table per fault type (count, median, p90,
max recovery), writes chaos-results.json, exits 1 on any violation (docs/chaos.md).
Everything is torn down at the end, also on Ctrl-C or failure, and checked gone.
"""
import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import chaos_faults  # noqa: E402
import support_chaos  # noqa: E402


class Checker(threading.Thread):
    """Polls running containers (every engine) and the passing count (monitoring agent) every 0.2 s.

    Violation: more running containers than declared + the graceful stops in progress (a
    `docker stop`ed container runs on, deregistered, until its stop timeout ends)."""

    def __init__(self, stack, interval=0.2):
        super().__init__(daemon=True)
        self.stack, self.interval = stack, interval
        self.in_flight = 0
        self.violations, self.samples, self.max_running = [], 0, 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stopping.is_set():
            per = {i: len(ids) for i, ids in self.stack.running_per_host(self.stack.alive()).items()}
            total = sum(per.values())
            with self.lock:
                allowed = self.stack.declared + self.in_flight
                self.samples += 1
                self.max_running = max(self.max_running, total)
                if total > allowed:
                    self.violations.append({"kind": "over_deploy", "time": time.time(), "running": per,
                                            "allowed": allowed})
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join(10)


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


def table(results):
    rows, by_type = [], {}
    for r in results:
        by_type.setdefault(r["type"], []).append(r)
    for t in sorted(by_type):
        rs = by_type[t]
        rec = [r["recovery_s"] for r in rs if r.get("recovery_s") is not None]
        rows.append({"fault": t, "count": len(rs), "median_s": _r(statistics.median(rec)) if rec else None,
                     "p90_s": _r(percentile(rec, 90)), "max_s": _r(max(rec)) if rec else None,
                     "budget_s": _r(max(r["budget_s"] for r in rs)) if any(r.get("budget_s") for r in rs) else None,
                     "actions": sum(r["actions"] for r in rs),
                     "violations": sum(len(r["violations"]) for r in rs)})
    return rows


def _r(v):
    return None if v is None else round(v, 2)


def print_table(rows, out=sys.stdout):
    cols = ("fault", "count", "median_s", "p90_s", "max_s", "budget_s", "actions", "violations")
    widths = [max(len(c), *(len("-" if r[c] is None else str(r[c])) for r in rows)) for c in cols] if rows else \
        [len(c) for c in cols]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out.write(line + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for r in rows:
        out.write("  ".join(("-" if r[c] is None else str(r[c])).ljust(w) for c, w in zip(cols, widths)) + "\n")


def parse_duration(text):
    text = str(text).strip()
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def final_checks(stack, logs_dir):
    """Audit lines that do not parse, tracebacks in any log."""
    out = []
    for path in stack.audit_paths():
        out += [{"kind": "audit_unparsable", "detail": b} for b in support_chaos.read_jsonl(path)[1]]
    for path in stack.log_files():
        out += [{"kind": "traceback", "detail": t} for t in support_chaos.tracebacks(path)]
    stack.save_logs(logs_dir)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", default="10m")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(support_chaos.ROOT, "chaos-results.json"))
    ap.add_argument("--only", default="", help="comma-separated fault types (default: all)")
    args = ap.parse_args(argv)
    duration = parse_duration(args.duration)
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    stack = support_chaos.Stack()
    results, violations, notes = [], [], []
    checker = None
    status = 1
    started = time.time()
    logs_dir = os.path.join(os.path.dirname(os.path.abspath(args.out)), "chaos-logs")
    try:
        if stack.leftovers():
            stack.down()
        print("chaos: seed %d, %s; bringing the stack up (%s)" % (args.seed, args.duration, stack.dir), flush=True)
        stack.up(lambda timeout: chaos_faults.steady(stack, timeout))
        time.sleep(5)  # healing on: a shortfall or surplus would show now, before any fault
        if not chaos_faults.steady(stack, 60):
            raise RuntimeError("the stack did not stay at %d passing once healing was on" % stack.declared)
        faults = chaos_faults.available(stack, notes)
        if args.only:
            faults = {k: v for k, v in faults.items() if k in args.only.split(",")}
        for n in notes:
            print("chaos: note: " + n, flush=True)
        checker = Checker(stack)
        checker.start()
        deadline = time.monotonic() + duration
        names = sorted(faults)
        while time.monotonic() < deadline:
            name = rng.choice(names)
            r = chaos_faults.run(name, faults[name], stack, checker, rng)
            results.append(r)
            print("chaos: %-20s recovery %-6s budget %-6s actions %d %s" % (
                name, "-" if r["recovery_s"] is None else "%.2f" % r["recovery_s"],
                "-" if r["budget_s"] is None else "%.1f" % r["budget_s"], r["actions"],
                "; ".join(v["kind"] for v in r["violations"]) or "ok"), flush=True)
            time.sleep(rng.uniform(1.0, 3.0))
        checker.stop()
        violations += checker.violations
        violations += final_checks(stack, logs_dir)
    except KeyboardInterrupt:
        notes.append("interrupted")
        print("chaos: interrupted; tearing down", flush=True)
    except Exception as e:  # the stack would not come up, a fault could not run: say so, tear down, exit 1
        violations.append({"kind": "error", "detail": "%s: %s" % (type(e).__name__, str(e)[-1500:])})
        print("chaos: error: %s; tearing down" % e, flush=True)
    finally:
        if checker is not None:
            checker.stop()
            violations += [v for v in checker.violations if v not in violations]
        errors = stack.down()
        left = stack.leftovers()
        for e in errors:
            violations.append({"kind": "teardown", "detail": e})
        if left:
            violations.append({"kind": "left_behind", "detail": left})
    for r in results:
        violations += [dict(v, fault=r["type"]) for v in r["violations"]]
    rows = table(results)
    print()
    print_table(rows)
    print("\nchaos: %d fault(s) in %.0f s, seed %d; %d violation(s); max running at once %s (declared %d)"
          % (len(results), time.time() - started, args.seed, len(violations),
             checker.max_running if checker else "-", stack.declared))
    for v in violations[:40]:
        print("  violation: " + json.dumps(v, default=str)[:300])
    doc = {"seed": args.seed, "duration_s": duration, "declared": stack.declared, "table": rows, "faults": results,
           "violations": violations, "notes": notes, "samples": checker.samples if checker else 0,
           "logs": logs_dir}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    print("chaos: results in %s, logs in %s" % (args.out, logs_dir))
    if "interrupted" not in notes and results:
        status = 1 if violations else 0
    return status


if __name__ == "__main__":
    sys.exit(main())
