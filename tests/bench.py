"""`make bench`: consul-medic's speed figures, measured on this machine in one run.

Prints one table and merges the figures into `bench-results.json` at the repository
root (keys other measurements wrote are kept). Each measurement is an independent
function in MEASUREMENTS taking the shared Bench context and returning a list of
Row(key, value, unit, target, note); add new ones (time to heal, Swarm, registration)
by appending a function. Seconds unless a key ends in `_ms`.

Everything runs against throwaway Consul agents on free loopback ports (started
here, stopped at the end); CPU is the children's user+system time from
resource.getrusage(RUSAGE_CHILDREN), so other load on the machine barely moves it.

Time to heal is measured four ways in the same run: medic (and a second loss 1 s
after a completed heal), Swarm with its default and with a 0 s restart delay, and
Docker's own restart policy; `picture` draws them into docs/bench-time-to-heal.png
(matplotlib, the `bench` extra). The run leaves nothing behind: each stack stops its
agent (whose watches would run medic-heal and bring containers back) before its
containers, and `leftovers()` fails the run if a container, agent or process remains.
"""
import calendar
import json
import os
import resource
import shutil
import signal
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
        self.projects = []  # compose projects of the stacks this run started
        self.dist = {}  # row key -> distribution, for the picture
        # measure medic as installed: `pip install` byte-compiles the package; a source tree
        # run with PYTHONDONTWRITEBYTECODE set (as on this machine) would recompile
        # every imported module on every run and charge that to medic-check
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "handlers"),
                        os.path.join(ROOT, "watches")], check=True, capture_output=True, timeout=120)

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
    return [Row("check_cpu_ms", round(statistics.median(ms), 2), "ms", "<= 2.5x bare",
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
        Row("batch_1000_cpu_s", round(full[0], 3), "s", "<= 0.2",
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
    return [Row("heal_decision_1000_s", round(wall, 3), "s", "<= 0.2",
                "medic-heal, checks payload naming 1,000 services with specs, all at their count (wall time)"),
            Row("heal_consul_requests_1000", nreq, "", "constant", "Consul requests of that run (triage)")]


def distribution(samples):
    """Seconds per trial -> the {"median", "p90", "trials", "samples"} the results file records."""
    return {"median": round(statistics.median(samples), 3), "p90": round(p90(samples), 3), "trials": len(samples),
            "samples": [round(x, 3) for x in samples]}


def swarm_time_to_heal(b, trials=10):
    import bench_swarm
    d = b.dist["swarm_time_to_heal_s"] = distribution(bench_swarm.measure_swarm_time_to_heal(trials=trials))
    return [Row("swarm_time_to_heal_s", d, "s", None,
                "Swarm mode, same image and engine: docker kill -> new task healthy (default restart delay)")]


def swarm_tuned_time_to_heal(b, trials=10):
    import bench_swarm
    d = b.dist["swarm_tuned_time_to_heal_s"] = distribution(
        bench_swarm.measure_swarm_time_to_heal(trials=trials, restart_delay="0s"))
    return [Row("swarm_tuned_time_to_heal_s", d, "s", None,
                "the same with `--restart-delay 0s` (same engine, image, 1 s health interval)")]


def docker_restart_policy(b, trials=10):
    import bench_swarm
    d = b.dist["docker_restart_policy_s"] = distribution(bench_swarm.measure_restart_policy_time_to_heal(trials=trials))
    return [Row("docker_restart_policy_s", d, "s", None,
                "reference: `--restart always` container, main process SIGKILLed -> same container healthy")]


def _stack(b, name, **kw):
    from support_e2e import Stack

    def factory(start=False, **akw):
        a = support.ConsulAgent(**akw)
        b._agents.append(a)
        return a.start() if start else a

    s = Stack(b.tmp, "b%d" % os.getpid(), consul_factory=factory, name=name, **kw)
    b.projects.append(s.project)
    return s


def _stop_stack(s):
    """Stop what could bring containers back FIRST (the agent runs the watches and the reconcile
    check, each of which runs medic-heal -> compose up), let a medic-heal already running finish,
    then the registrar and the containers. Raises when a container of the stack remains."""
    s.agent.stop()
    support.wait_for(lambda: not _processes_with(s.dir, "medic-heal"), 120, 0.2,
                     "medic-heal runs of %s to end" % s.project)
    s.stop()
    left = _project_containers(s.project)
    if left:
        raise RuntimeError("containers of %s left after compose down: %s" % (s.project, left))


def _project_containers(project):
    r = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=" + project],
                       capture_output=True, text=True, timeout=60)
    return r.stdout.split()


def _processes_with(text, program=""):
    """PIDs of processes whose command line mentions `text` (this bench's temp paths), and `program`."""
    from support_e2e import cmdline

    needles = [w.encode() for w in (text, program) if w]
    me = os.getpid()
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != me:
            line = b" ".join(cmdline(int(p)))
            if all(n in line for n in needles):
                out.append(int(p))
    return out


def _kill_and_wait(s, n=3, phases=None):
    """docker kill one replica -> seconds until n pass again in Consul.

    `phases` (a list) gets one {phase: seconds} per trial from the audit record of the
    heal and the engine's start time: where the time went (see PHASES)."""
    victim = s.container_ids()[0]
    before = len(s.scale_actions())
    t0, wall0 = time.monotonic(), time.time()
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    # the killed container's own instance vanishes within ~0.1 s; wait for that first
    support.wait_for(lambda: s.passing() < n, 10, interval=0.005, what="the loss seen in Consul")
    support.wait_for(lambda: s.passing() == n, 120, interval=0.005, what="%d passing again" % n)
    took, wall1 = time.monotonic() - t0, time.time()
    if phases is not None:
        acts = s.scale_actions()[before:]
        started = _last_start(s.project)
        if acts and started:
            rec = acts[0]
            end = _epoch(rec["time"])
            begin = end - rec["duration"]
            phases.append({"kill_to_heal_start": begin - wall0, "heal_start_to_container_start": started - begin,
                           "container_start_to_passing": wall1 - started,
                           "command": rec.get("command_duration") or 0.0, "heal_run": rec["duration"]})
    return took


# kill -> medic-heal's heal_one begins (watch latency, process start, imports) -> the container's
# State.StartedAt (lock, observe, decide, the scale command) -> passing in Consul (registration, the
# check's first run); `command` (the scale command alone) and `heal_run` (the whole run, which ends
# after the history write and the audit record) for reference
PHASES = ("kill_to_heal_start", "heal_start_to_container_start", "container_start_to_passing", "command",
          "heal_run")


def _epoch(iso):
    """'2026-11-27T13:01:02.123456789Z' (audit or engine) -> epoch seconds."""
    base, _, frac = iso.strip().rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac[:6] or "0"))


def _last_start(project):
    """The latest State.StartedAt (epoch) among the project's containers."""
    ids = _project_containers(project)
    if not ids:
        return None
    r = subprocess.run(["docker", "inspect", "--format", "{{.State.StartedAt}}", *ids], capture_output=True,
                       text=True, timeout=60)
    times = []
    for line in r.stdout.split():
        try:
            times.append(_epoch(line))
        except ValueError:
            pass
    return max(times) if times else None


def _phase_row(key, phases, what):
    med = {p: round(statistics.median(x[p] for x in phases), 3) for p in PHASES} if phases else {}
    text = ", ".join("%s %.2f" % (p, med[p]) for p in PHASES) if phases else "no phases"
    return Row(key, med, "", None, "%s, median seconds (n=%d): %s" % (what, len(phases), text))


def time_to_heal(b, trials=10):
    """docker kill one of 3 replicas -> the replacement passing in Consul, through the whole loop.

    The production path: a server agent running the consul.d medic-config rendered
    (watches -> medic-heal), medic-register following the engine, compose scaling.
    Also counts scale actions per loss (must be exactly one each).
    """
    s = _stack(b, "heal")
    samples, extra, phases = [], 0, []
    try:
        s.start(replicas=3)
        s.settled(3)
        for _ in range(trials):
            before = len(s.scale_actions())
            samples.append(_kill_and_wait(s, phases=phases))
            s.settled(3, quiet=2)
            extra += len(s.scale_actions()) - before - 1
    finally:
        _stop_stack(s)
    d = b.dist["time_to_heal_s"] = distribution(samples)
    return [Row("time_to_heal_s", d, "s", "median <= 0.9, p90 <= 1.2",
                "docker kill 1 of 3 -> replacement passing in Consul (watch -> medic-heal -> engine start)"),
            Row("heal_extra_actions", extra, "", "0", "scale actions beyond one per loss, over all trials"),
            _phase_row("time_to_heal_phases", phases, "where it went")]


def second_loss_time_to_heal(b, trials=3):
    """A second loss 1 s after a completed heal, the spec's heal policy at its shipped defaults.

    Per trial: kill one replica, wait until 3 pass again, wait 1 s, kill another: the
    figure is that second kill -> 3 passing. The first heal's action is still within its
    cooldown/grace then, which is what this row watches.
    """
    s = _stack(b, "loss2")
    path = os.path.join(s.specs, s.service + ".json")
    with open(path) as f:
        doc = json.load(f)
    doc.pop("heal", None)  # shipped defaults
    with open(path, "w") as f:
        json.dump(doc, f)
    samples = []
    try:
        s.start(replicas=3)
        s.settled(3)
        for _ in range(trials):
            _kill_and_wait(s)
            time.sleep(1.0)
            samples.append(_kill_and_wait(s))
            s.settled(3, quiet=2)
    finally:
        _stop_stack(s)
    d = b.dist["second_loss_time_to_heal_s"] = distribution(samples)
    return [Row("second_loss_time_to_heal_s", d, "s", None,
                "a loss 1 s after a completed heal -> 3 passing again (heal policy: shipped defaults)")]


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


# -- rollout helper (issue 12): medic-rollout under real traffic ------------------------------
def rollout_traffic(b):
    """rollout_3_s, rollout_failed_requests, rollout_never_passing (tests/support_rollout_traffic.py)."""
    import support_rollout_traffic as srt
    return srt.bench_rows(Row)


def drain_traffic(b):
    """drain_failed_requests, drain_time_to_empty_s (tests/support_drain.py, 3 hosts of testbed/hosts.sh)."""
    import support_drain as sd
    return sd.bench_rows(Row)
# -- end rollout helper --------------------------------------------------------------------


def picture(b, path=None):
    """The time-to-heal distributions of this run as a PNG (matplotlib, the `bench` extra)."""
    path = path or PICTURE
    series = [(label, b.dist[key]["samples"]) for key, label in PICTURE_SERIES if key in b.dist]
    if not series:
        raise RuntimeError("no time-to-heal distribution measured in this run")
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.75 * len(series)), dpi=100)
    labels = [label for label, _ in series]
    data = [v for _, v in series]
    try:
        ax.boxplot(data, orientation="horizontal", whis=(10, 90), showfliers=False, widths=0.5)
    except TypeError:  # matplotlib < 3.10
        ax.boxplot(data, vert=False, whis=(10, 90), showfliers=False, widths=0.5)
    for i, values in enumerate(data, start=1):
        ax.scatter(values, [i] * len(values), s=14, alpha=0.6, zorder=3)
        ax.annotate("median %.2f s (n=%d)" % (statistics.median(values), len(values)),
                    (max(values), i), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(v) for v in data) * 1.35)
    ax.set_xlabel("seconds from the kill to a passing replacement (box: p10-p90)")
    ax.set_title("Time to heal, one `make bench` run (%s)" % time.strftime("%Y-%m-%d"), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return [Row("picture", os.path.relpath(path, ROOT), "", None,
                "time-to-heal distributions of this run (%s)" % ", ".join(labels))]


PICTURE = os.path.join(ROOT, "docs", "bench-time-to-heal.png")
# the second-loss row stays in the table: its ~30 s (shipped cooldown) would squash this scale
PICTURE_SERIES = (("time_to_heal_s", "medic"), ("swarm_tuned_time_to_heal_s", "Swarm, restart delay 0s"),
                  ("docker_restart_policy_s", "docker --restart always"),
                  ("swarm_time_to_heal_s", "Swarm, default (5 s delay)"))

def scale(b):
    """Issue 22's section (tests/bench_scale.py): 1,000 specs on one agent, 300 failing at once, 5 hosts.
    `python tests/bench.py scale` runs it alone; MEDIC_BENCH_SMOKE=1 runs it small."""
    import bench_scale
    return [Row(*r) for r in bench_scale.scale(b)]


MEASUREMENTS = [bare_python, check_cpu, requests_per_check, batch_1000, heal_decision_1000, time_to_heal,
                second_loss_time_to_heal, swarm_time_to_heal, swarm_tuned_time_to_heal, docker_restart_policy,
                register_100, lb_rows, rollout_traffic, drain_traffic, scale, picture]


def leftovers(b):
    """What this run left behind: containers of its compose projects, its agents, processes under its
    temp dir, Swarm services / restart-policy containers of bench_swarm. Must be empty."""
    import bench_swarm
    from support_e2e import cmdline

    out = ["container %s (%s)" % (c, p) for p in b.projects for c in _project_containers(p)]
    out += ["consul agent pid %d" % a.proc.pid for a in b._agents if a.proc is not None and a.proc.poll() is None]
    out += ["process %d: %s" % (pid, b" ".join(cmdline(pid))[:120].decode("utf-8", "replace"))
            for pid in _processes_with(b.tmp)]
    out += ["engine object " + n for n in bench_swarm.leftovers()]
    return out


# -- output ------------------------------------------------------------------------
def fmt(v):
    if isinstance(v, dict) and "median" in v:  # samples only in the JSON
        return "median %g / p90 %g (n=%d)" % (v["median"], v["p90"], v["trials"])
    if isinstance(v, dict):
        return "(in how)"
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


def derived(rows):
    """Ratios the targets are stated in, from rows of the same run."""
    v = {r.key: r.value for r in rows}
    out = []
    if "check_cpu_ms" in v and v.get("bare_python_cpu_ms"):
        out.append(Row("check_cpu_ratio", round(v["check_cpu_ms"] / v["bare_python_cpu_ms"], 2), "x", "<= 2.5",
                       "check_cpu_ms / bare_python_cpu_ms"))
    if "time_to_heal_s" in v and "swarm_tuned_time_to_heal_s" in v:
        out.append(Row("swarm_tuned_vs_medic", round(v["swarm_tuned_time_to_heal_s"]["median"]
                                                     / v["time_to_heal_s"]["median"], 2), "x", ">= 1.8",
                       "median time to heal: tuned Swarm / medic"))
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(names=None):
    # SIGTERM (and SIGINT, ignored in a background job) end the run through the cleanups
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
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
    rows.extend(derived(rows))
    left = leftovers(b)
    if left:
        failed.append("the bench left these running: " + "; ".join(left))
    print(table(rows))
    for f in failed:
        print("FAILED " + f)
    merge_results(rows)
    print("written: %s" % RESULTS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
