"""`make bench`'s scale section (issue 22, docs/scale.md): what medic costs as services and hosts grow.

    one agent, N specs (Consul's default limits)   CPU to load medic's consul.d (agent start) and to
                                                   reload it, requests refused, medic processes and
                                                   CPU at rest, time to heal one real loss among them
    M services failing at once (image missing)     CPU share, peak medic processes and memory over a
                                                   window, heal attempts, notify children started
    A client agents + 1 server, the same N specs   requests the clients send the server per second at
                                                   rest and for one change

Full size: N=1000, M=300, A=5, windows 60 s / 180 s. The machine the bench runs on may be shared:
MEDIC_BENCH_SMOKE=1 runs the same section small (N=100, M=30, A=5, short windows); each row's note
says the size it was measured at. MEDIC_BENCH_SCALE_N / _STORM_N / _AGENTS override the sizes.
CPU is read from /proc: the agent's own time plus its reaped children (every medic handler and
check it ran), plus any medic process still running under the bench's directory.
"""
import os
import re
import statistics
import threading
import time
import urllib.request

import support

CLK = os.sysconf("SC_CLK_TCK")

def params():
    smoke = bool(os.environ.get("MEDIC_BENCH_SMOKE"))
    env = os.environ.get
    return {"smoke": smoke, "n": int(env("MEDIC_BENCH_SCALE_N") or (100 if smoke else 1000)),
            "storm": int(env("MEDIC_BENCH_STORM_N") or (30 if smoke else 300)),
            "agents": int(env("MEDIC_BENCH_AGENTS") or 5), "settle": 15 if smoke else 30,
            "rest": 20 if smoke else 60, "storm_window": 60 if smoke else 180, "trials": 2 if smoke else 5}


def _stat(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def agent_cpu(agent):
    """CPU seconds of the agent and its reaped children (utime+stime+cutime+cstime)."""
    f = _stat(agent.proc.pid)
    return sum(int(x) for x in f[11:15]) / CLK


def medic_procs(marker):
    """[(pid, rss MB, cpu s)] of medic-* processes whose argv names `marker` (the bench's directory)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().decode("utf-8", "replace")
            st = _stat(int(pid))
        except OSError:
            continue
        if st[0] == b"Z":
            continue
        # a console script runs as `python3 .../medic-heal ...`: its name is argv[0] or argv[1]
        exe = next((os.path.basename(a) for a in argv.split("\0")[:2] if os.path.basename(a).startswith("medic-")), "")
        if exe and exe != "medic-register" and marker in argv:  # the registrar: a daemon
            out.append((int(pid), int(st[21]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20, (int(st[11]) + int(st[12])) / CLK))
    return out


class Sampler:
    """Samples medic processes every `interval` s in a thread: peak count, peak RSS, long-lived pids."""

    def __init__(self, marker, interval=0.25):
        self.marker, self.interval = marker, interval
        self.peak, self.peak_mb, self.first, self.last, self.cpu = 0, 0.0, {}, {}, {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            procs = medic_procs(self.marker)
            now = time.monotonic()
            self.peak = max(self.peak, len(procs))
            self.peak_mb = max(self.peak_mb, sum(p[1] for p in procs))
            for pid, _, cpu in procs:
                self.first.setdefault(pid, now)
                self.last[pid] = now
                self.cpu[pid] = cpu
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self

    def long_lived(self, seconds=5.0):
        return [p for p in self.first if self.last[p] - self.first[p] >= seconds]


def refused(agent):
    return support.agent_refusals(agent.logfile)


def _register(agent_for, names, tag, threads=4):
    """Each name at its count, as medic-register on another host would have it: the owner its spec
    (_write_specs with the same tag) names in Meta, so it counts for medic."""
    items = list(enumerate(names))

    def work(part):
        for i, name in part:
            a = agent_for(i)
            a.register("%s-0" % name, name, port=20000 + i % 40000, check={"TTL": "1h"},
                       meta={"medic_compose_project": "%s%04d" % (tag, i), "medic_compose_service": "web"})
            a.set_ttl("%s-0" % name, "passing")  # a TTL check starts critical whatever Status says

    ts = [threading.Thread(target=work, args=(items[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def _factory(b):
    def factory(start=False, **kw):
        a = support.ConsulAgent(**kw)
        b._agents.append(a)
        return a.start() if start else a
    return factory


def cleanup_projects(prefix):
    """Remove the containers and networks of compose projects named `prefix`* (this bench's own)."""
    import subprocess
    r = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project"], capture_output=True,
                       text=True, timeout=60)
    ids = r.stdout.split()
    if ids:
        r = subprocess.run(["docker", "inspect", "--format", '{{.Id}} {{index .Config.Labels "com.docker.compose.project"}}']
                           + ids, capture_output=True, text=True, timeout=60)
        mine = [ln.split()[0] for ln in r.stdout.splitlines() if len(ln.split()) == 2 and ln.split()[1].startswith(prefix)]
        if mine:
            subprocess.run(["docker", "rm", "-f"] + mine, capture_output=True, timeout=120)
    r = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, timeout=60)
    nets = [n for n in r.stdout.split() if n.startswith(prefix)]
    if nets:
        subprocess.run(["docker", "network", "rm"] + nets, capture_output=True, timeout=120)
    return len(nets)


def _write_specs(specs, names, tag, check="10s", **kw):
    import support_heal
    for i, name in enumerate(names):
        support_heal.write_spec(specs, name, "%s%04d" % (tag, i), instances=1,
                                check={"interval": check, "timeout": "5s"}, **kw)


# -- one agent, N specs ---------------------------------------------------------------
def one_agent(b, p):
    from support_e2e import Stack

    class BenchStack(Stack):
        def write_spec(self, **heal):
            import support_heal
            support_heal.write_spec(self.specs, self.service, self.project, instances=self.instances,
                                    heal=dict(self.heal_policy, **heal), file=self.compose_file,
                                    check={"interval": "10s", "timeout": "5s"})

    n, size = p["n"], "%d specs" % p["n"]
    s = BenchStack(b.tmp, "sc%d" % os.getpid(), consul_factory=_factory(b), instances=2, name="scale",
                   agent_kw={"config": {"server": True, "bootstrap_expect": 1, "log_level": "INFO"}})
    b.projects.append(s.project)
    others = ["bs%04d.scale.example" % i for i in range(n - 1)]
    tag = "bsp%d" % os.getpid()
    rows = []
    try:
        # the others are registered (at their count, elsewhere as far as this engine knows) before
        # their specs reach medic: otherwise medic would rightly heal them
        s.start(replicas=2)
        _register(lambda i: s.agent, others, tag)
        support.wait_for(lambda: len(s.agent.api("/v1/catalog/services")) >= n + 1, 300, 1, "registrations")
        _write_specs(s.specs, others, tag, file=_missing(b.tmp))
        s.render()
        s.reload()
        s.settled(2, quiet=3, timeout=300)

        s.restart_agent()  # the load: a fresh agent process on the same data dir, N specs
        time.sleep(p["settle"])
        load = agent_cpu(s.agent)
        s.settled(2, quiet=3, timeout=300)

        c0 = agent_cpu(s.agent)
        s.reload()
        time.sleep(p["settle"])
        reload_cpu = agent_cpu(s.agent) - c0
        s.settled(2, quiet=3, timeout=300)

        sampler = Sampler(s.dir)
        c0, t0 = agent_cpu(s.agent), time.monotonic()
        time.sleep(p["rest"])
        rest = (agent_cpu(s.agent) - c0) / (time.monotonic() - t0)
        sampler.stop()

        samples = []
        for _ in range(p["trials"]):
            s.settled(2, quiet=2, timeout=300)
            t = time.monotonic()
            s.kill(1)
            support.wait_for(lambda: s.passing() < 2, 10, 0.005, "the loss seen")
            support.wait_for(lambda: s.passing() == 2, 120, 0.005, "2 passing again")
            samples.append(time.monotonic() - t)
        bad = refused(s.agent)
        rows += [
            ("scale_load_cpu_s", round(load, 2), "s", "<= 15", "agent start with medic's consul.d, %s, "
             "%d s after start (agent + every medic process it ran)" % (size, p["settle"])),
            ("scale_reload_cpu_s", round(reload_cpu, 2), "s", "<= 10", "`consul reload`, %s, %d s window"
             % (size, p["settle"])),
            ("scale_refused", len(bad), "", "0", "refused/failed handler lines in the agent log over the whole "
             "run, %s, http_max_conns_per_client 200 (default)" % size),
            ("scale_processes_at_rest", len(sampler.long_lived()), "", "0", "medic processes alive >= 5 s at "
             "rest (peak at once %d: the batch and reconcile checks), %s" % (sampler.peak, size)),
            ("scale_rest_cores", round(rest, 3), "cores", "<= 0.1", "agent + medic CPU at rest, %s, %d s "
             "(CPU-s per minute: %.1f)" % (size, p["rest"], rest * 60)),
            ("scale_time_to_heal_s", round(statistics.median(samples), 2), "s", "<= 1 (median)",
             "docker kill -> 2 passing again, one real service among %s (n=%d, max %.2f)"
             % (size, len(samples), max(samples))),
        ]
        if bad:
            print("refused lines:\n" + "".join(bad[:5]))
        strays = cleanup_projects(tag)
        if strays:
            raise RuntimeError("medic started %d of the registered-only services" % strays)
    finally:
        s.stop()
        s.agent.stop()  # its handlers first: an agent on its way out answers with no instances
        cleanup_projects(tag)
    return rows


# -- M services failing at once --------------------------------------------------------
MISSING = """services:
  web:
    image: medic-bench-missing-image:none
    pull_policy: never
"""


def _missing(directory):
    path = os.path.join(directory, "missing-image.yml")
    with open(path, "w") as f:
        f.write(MISSING)
    return path


def storm(b, p):
    m = p["storm"]
    d = os.path.join(b.tmp, "storm")
    os.makedirs(d, exist_ok=True)
    compose = _missing(d)
    specs, consul_d, audit = os.path.join(d, "specs"), os.path.join(d, "consul.d"), os.path.join(d, "audit.jsonl")
    _write_specs(specs, ["st%04d.storm.example" % i for i in range(m)], "stp%d" % os.getpid(), file=compose,
                 heal={"grace": "20s", "cooldown": "10s", "backoff_base": "10s", "backoff_max": "300s",
                       "max_attempts": 5, "window": "10m", "command_timeout": "60s"})
    agent = _factory(b)(start=False, dev=False, config_dirs=[consul_d],
                        config={"server": True, "bootstrap_expect": 1, "log_level": "INFO"})
    r = support.run_medic("medic-config", ["--specs", specs, "--out", consul_d, "--audit-log", audit,
                                           "--consul-addr", agent.addr])
    assert r.returncode == 0, r.stdout + r.stderr
    sampler = Sampler(d)
    agent.start()
    c0, t0 = agent_cpu(agent), time.monotonic()
    time.sleep(p["storm_window"])
    cpu = agent_cpu(agent) - c0 + sum(sampler.cpu.get(pid, 0) for pid, _, _ in medic_procs(d))
    wall = time.monotonic() - t0
    sampler.stop()
    agent.stop()
    cleanup_projects("stp%d" % os.getpid())
    from consul_medic.handlers.core import audit as audit_mod
    recs = audit_mod.read(audit)
    attempts = sum(1 for x in recs if x.get("kind") == "heal" and x.get("decision") == "heal")
    emits = sum(1 for x in recs if x.get("kind") == "notify" and x.get("step") == "emit")
    size = "%d services failing at once (image missing), %d s" % (m, p["storm_window"])
    return [
        ("scale_storm_cores", round(cpu / wall, 3), "cores", "<= 0.2", "agent + medic CPU, " + size),
        ("scale_storm_peak_processes", sampler.peak, "", "<= 20", "medic processes at once (peak), " + size),
        ("scale_storm_peak_mb", round(sampler.peak_mb), "MB", "<= 600", "their resident memory (peak), " + size),
        ("scale_storm_heal_attempts", attempts, "", None, "heal actions tried (fleet-wide backoff), " + size),
        ("scale_storm_audit_records", len(recs), "", None, "audit records written, " + size),
        ("scale_storm_notify_children", emits, "", None, "alerts handed to medic-notify (grouped), " + size),
    ]


# -- several client agents ------------------------------------------------------------------
def _client_rpc(agent):
    txt = urllib.request.urlopen(agent.addr + "/v1/agent/metrics?format=prometheus", timeout=10).read().decode()
    m = re.search(r"^consul_client_rpc (\S+)$", txt, re.M)
    return float(m.group(1)) if m else 0.0


def hosts(b, p):
    n, k = p["n"], p["agents"]
    d = os.path.join(b.tmp, "hosts")
    specs = os.path.join(d, "specs")
    names = ["hs%04d.hosts.example" % i for i in range(n)]
    # healing off until the instances are registered (at their count), as an operator adding a fleet would
    _write_specs(specs, names, "hsp%d" % os.getpid(), file=_missing(b.tmp), heal={"enabled": False})
    tele = {"telemetry": {"prometheus_retention_time": "600s"}, "log_level": "INFO"}
    server = _factory(b)(start=True, config=dict(tele))
    clients = []
    for i in range(k):
        bind = "127.0.0.%d" % (60 + i)
        consul_d = os.path.join(d, "consul.d-%d" % i)
        c = _factory(b)(start=False, dev=False, bind=bind, join=server.serf_addr, config_dirs=[consul_d],
                        config=dict(tele), node="bench-host%d" % i)
        r = support.run_medic("medic-config", ["--specs", specs, "--out", consul_d, "--audit-log",
                                               os.path.join(d, "audit-%d.jsonl" % i), "--consul-addr", c.addr])
        assert r.returncode == 0, r.stdout + r.stderr
        c.start()
        clients.append(c)
    _register(lambda i: clients[i % k], names, "hsp%d" % os.getpid())
    _write_specs(specs, names, "hsp%d" % os.getpid(), file=_missing(b.tmp))
    time.sleep(p["settle"])
    # rest: the registrations' count checks, first triage and notify runs settle first (10 s windows
    # until one stays under 2 requests per second per host, at most 3 minutes)
    for _ in range(18):
        r0, t0 = sum(_client_rpc(c) for c in clients), time.monotonic()
        time.sleep(10)
        if (sum(_client_rpc(c) for c in clients) - r0) / (time.monotonic() - t0) < 2.0 * k:
            break
    r0, t0 = sum(_client_rpc(c) for c in clients), time.monotonic()
    time.sleep(p["rest"])
    rest = (sum(_client_rpc(c) for c in clients) - r0) / (time.monotonic() - t0)
    r0, t0 = sum(_client_rpc(c) for c in clients), time.monotonic()
    clients[0].api("/v1/agent/check/fail/service:%s-0" % names[0], "PUT")  # one change on one host
    time.sleep(10)
    change = sum(_client_rpc(c) for c in clients) - r0 - rest * (time.monotonic() - t0)
    lines = [ln for c in clients for ln in refused(c)]
    bad = len(lines)
    if lines:
        import sys
        sys.stderr.write("refused/failed lines:\n" + "".join(lines[:8]))
    size = "%d client agents x %d specs (1 server)" % (k, n)
    rows = [
        ("scale_hosts_rpc_per_s_rest", round(rest, 2), "req/s", None, "requests the clients send the server "
         "at rest (consul_client_rpc), " + size),
        ("scale_hosts_rpc_per_s_rest_per_host", round(rest / k, 2), "req/s", None, "the same per host, " + size),
        ("scale_hosts_rpc_per_change", round(change, 1), "req", None, "extra requests within 10 s of one "
         "instance failing on one host, " + size),
        ("scale_hosts_refused", bad, "", "0", "refused/failed handler lines in the clients' logs, " + size),
    ]
    for a in clients + [server]:
        a.stop()
    cleanup_projects("hsp%d" % os.getpid())
    return rows


def scale(b):
    """-> [(key, value, unit, target, note)] (bench.scale makes them Rows)."""
    import sys
    p = params()
    rows = []
    for part in (one_agent, storm, hosts):
        t = time.time()
        rows += [tuple(r) for r in part(b, p)]
        sys.stderr.write("bench scale: %s done in %.0f s\n" % (part.__name__, time.time() - t))
    if p["smoke"]:
        rows = [r[:4] + (r[4] + " [smoke run]",) for r in rows]
    return rows
