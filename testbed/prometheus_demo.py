"""`make prometheus` (after `make demo`): a Prometheus on the demo, and a kill it sees healed.

    prometheus_demo.py up     node_exporter (textfile collector on the demo's metrics directory) and
                              Prometheus (the shipped rules, 2 s scrapes) on loopback, then one demo
                              container killed and the heal followed through Prometheus' HTTP API
    prometheus_demo.py down   stop both (make demo-down does it too)

The demo's Consul agent runs medic's handlers with MEDIC_METRICS_TEXTFILE_DIR set (testbed/demo.py),
and medic-register serves /metrics on 127.0.0.1:9464. State lives in .testbed/prometheus/.
Ports: MEDIC_PROMETHEUS_PORT (9090), MEDIC_NODE_EXPORTER_PORT (9100).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.path.join(ROOT, ".testbed")
DIR = os.path.join(STATE, "prometheus")
TEXTFILE = os.path.join(STATE, "metrics", "textfile")
RULES = os.path.join(ROOT, "deploy", "prometheus", "medic-rules.yml")
REGISTER_METRICS = "127.0.0.1:9464"
SERVICE, PROJECT = "www.example.com", "medicdemo"
PROM_PORT = int(os.environ.get("MEDIC_PROMETHEUS_PORT") or 9090)
NE_PORT = int(os.environ.get("MEDIC_NODE_EXPORTER_PORT") or 9100)
URL = "http://127.0.0.1:%d" % PROM_PORT

CONFIG = """global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files: [%(rules)s]
scrape_configs:
  - job_name: node
    static_configs: [{targets: ["127.0.0.1:%(ne)d"]}]
  - job_name: medic-register
    static_configs: [{targets: ["%(reg)s"]}]
"""


def get(url):
    with urllib.request.urlopen(url, timeout=3) as r:
        return r.read()


def query(expr):
    doc = json.loads(get("%s/api/v1/query?%s" % (URL, urllib.parse.urlencode({"query": expr}))))
    return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in doc["data"]["result"]}


def one(expr):
    got = query(expr)
    return sum(got.values()) if got else 0.0


def start(name, argv, ready):
    pidfile = os.path.join(DIR, name + ".pid")
    if _alive(pidfile):
        return
    log = open(os.path.join(DIR, name + ".log"), "ab")
    p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    with open(pidfile, "w") as f:
        f.write(str(p.pid))
    for _ in range(150):
        if p.poll() is not None:
            raise SystemExit("prometheus demo: %s exited; see %s" % (name, log.name))
        try:
            get(ready)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("prometheus demo: %s not ready after 30 s; see %s" % (name, log.name))


def _alive(pidfile):
    try:
        pid = int(open(pidfile).read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def up():
    for exe in ("prometheus", "prometheus-node-exporter"):
        if not shutil.which(exe):
            raise SystemExit("prometheus demo: %s is missing (make testbed installs it)" % exe)
    os.makedirs(DIR, exist_ok=True)
    os.makedirs(TEXTFILE, exist_ok=True)
    conf = os.path.join(DIR, "prometheus.yml")
    with open(conf, "w") as f:
        f.write(CONFIG % {"rules": json.dumps(RULES), "ne": NE_PORT, "reg": REGISTER_METRICS})
    start("node-exporter", ["prometheus-node-exporter", "--collector.disable-defaults", "--collector.textfile",
                            "--collector.textfile.directory=" + TEXTFILE,
                            "--web.listen-address=127.0.0.1:%d" % NE_PORT], "http://127.0.0.1:%d/metrics" % NE_PORT)
    start("prometheus", ["prometheus", "--config.file=" + conf, "--storage.tsdb.path=" + os.path.join(DIR, "tsdb"),
                         "--web.listen-address=127.0.0.1:%d" % PROM_PORT, "--log.level=warn"], URL + "/-/ready")
    print("Prometheus %s (rules: deploy/prometheus/medic-rules.yml), node_exporter 127.0.0.1:%d" % (URL, NE_PORT))
    svc = '{service="%s"}' % SERVICE
    if not _wait(lambda: query("medic_service_desired" + svc), 30):
        raise SystemExit("prometheus demo: no medic_service_desired for %s yet: is `make demo` up?" % SERVICE)
    drill(svc)
    print("\nGraphs: %s/graph?g0.expr=%s   alerts: %s/alerts   stop: make prometheus-down"
          % (URL, urllib.parse.quote("medic_service_passing" + svc), URL))


def _wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.5)
    return None


def drill(svc):
    """Kill one demo container; print what Prometheus sees until the heal is restored."""
    attempts = one('medic_heal_attempts_total{service="%s",result="ok"}' % SERVICE)
    restored = one('medic_heal_outcomes_total{service="%s",outcome="restored"}' % SERVICE)
    ps = subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=" + PROJECT,
                         "--filter", "status=running"], capture_output=True, text=True, check=True).stdout.split()
    if not ps:
        raise SystemExit("prometheus demo: no running demo container: `make demo` first")
    victim = sorted(ps)[0]
    t0 = time.monotonic()
    subprocess.run(["docker", "kill", victim], capture_output=True, check=True)
    print("\nkilled demo container %s; what Prometheus' HTTP API says (every 2 s):" % victim[:12])
    print("   %6s  %7s  %7s  %13s  %13s" % ("t", "desired", "passing", "heal attempts", "restored"))
    seen = None
    while time.monotonic() - t0 < 90:
        row = (one("medic_service_desired" + svc), one("medic_service_passing" + svc),
               one('medic_heal_attempts_total{service="%s",result="ok"}' % SERVICE),
               one('medic_heal_outcomes_total{service="%s",outcome="restored"}' % SERVICE))
        if row != seen:
            print("   %5.1fs  %7g  %7g  %13g  %13g" % ((time.monotonic() - t0,) + row))
            seen = row
        if row[2] > attempts and row[3] > restored and row[1] == row[0]:
            ttl = query('medic_heal_time_to_heal_seconds_sum%s / medic_heal_time_to_heal_seconds_count%s'
                        % (svc, svc))
            print("healed: +%g heal attempt, +%g restored; mean time to heal %.1f s (medic_heal_time_to_heal_seconds)"
                  % (row[2] - attempts, row[3] - restored, sum(ttl.values())))
            return
        time.sleep(2)
    raise SystemExit("prometheus demo: Prometheus did not see the heal within 90 s")


def down():
    for name in ("prometheus", "node-exporter"):
        pidfile = os.path.join(DIR, name + ".pid")
        pid = _alive(pidfile)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
        try:
            os.unlink(pidfile)
        except OSError:
            pass


if __name__ == "__main__":
    {"up": up, "down": down}[(sys.argv[1:] or ["up"])[0]]()
