"""make demo: the self-heal story, end to end, on this machine (loopback only).

  1. a Consul cluster: 3 servers on 127.0.0.2-4 + the monitoring agent on 127.0.0.1,
     with consul.d rendered from specs/ by medic-config (count check, reconcile
     check, watches calling medic-heal and medic-notify)
  2. medic-register following the Docker engine
  3. the demo service www.example.com at 3 replicas (docker compose)
  4. one container killed: a timeline of what happened, with the audit records
  5. `consul reload` (watches re-fire with replayed payloads): nothing deployed
  6. the status table

`python testbed/demo.py down` removes it all.
"""
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
STATE = os.path.join(ROOT, ".testbed")
CONSUL_D = os.path.join(STATE, "consul.d")
AUDIT = os.path.join(STATE, "audit.jsonl")
REGISTER_PID = os.path.join(STATE, "register.pid")
SERVICE = "www.example.com"
PROJECT, COMPOSE_FILE = "medicdemo", os.path.join(ROOT, "testbed", "demo", "compose.yml")
COMPOSE = ["docker", "compose", "-p", PROJECT, "-f", COMPOSE_FILE]
CONSUL = "http://127.0.0.1:8500"
METRICS = os.path.join(STATE, "metrics")  # docs/metrics.md: the handlers' textfiles (make prometheus reads them)
ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), MEDIC_AUDIT_LOG=AUDIT,
           MEDIC_CONSUL_D=CONSUL_D, CONSUL_HTTP_ADDR=CONSUL, MEDIC_METRICS_TEXTFILE_DIR=os.path.join(METRICS, "textfile"))


def say(text):
    print("\n== " + text, flush=True)


def sh(argv, check=True, quiet=False, **kw):
    r = subprocess.run(argv, env=ENV, text=True, capture_output=True, **kw)
    if not quiet and r.stdout.strip():
        print(r.stdout.rstrip())
    if check and r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit("demo: %s exited %d" % (" ".join(argv), r.returncode))
    return r


def api(path):
    with urllib.request.urlopen(CONSUL + path, timeout=5) as r:
        return json.loads(r.read() or b"null")


def wait(pred, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise SystemExit("demo: timed out after %.0f s waiting for %s" % (timeout, what))


def passing():
    return [e for e in api("/v1/health/service/%s" % SERVICE)
            if all(c["Status"] == "passing" for c in e["Checks"])]


def instances():
    return api("/v1/health/service/%s" % SERVICE)


def medic_check_status():
    checks = api("/v1/agent/checks")
    c = checks.get("medic:" + SERVICE)
    return c["Status"] if c else None


def running():
    out = sh(COMPOSE + ["ps", "-q", "--status", "running", "web"], quiet=True).stdout
    return [x for x in out.split() if x]


def audit_records(since=0.0):
    out = []
    try:
        with open(AUDIT) as f:
            for line in f:
                rec = json.loads(line)
                t = datetime.datetime.fromisoformat(rec["time"]).timestamp()
                if t >= since and rec.get("service") == SERVICE:
                    out.append(rec)
    except FileNotFoundError:
        pass
    return out


def heal_actions(records):
    return [r for r in records if r.get("kind", "heal") == "heal" and r.get("decision") == "heal"
            and not r.get("dry_run")]


def stop_registrar():
    try:
        pid = int(open(REGISTER_PID).read())
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (OSError, ValueError):
        pass
    try:
        os.unlink(REGISTER_PID)
    except OSError:
        pass


def hands_off():
    """medic-heal --pause for the demo service, then wait until no heal is in flight (its lock free).
    Without it the agent's watches bring back what `compose down` removes."""
    r = sh([os.path.join(BIN, "medic-heal"), "--pause", SERVICE, "--reason", "make demo-down", "--specs",
            os.path.join(ROOT, "specs"), "--consul-addr", CONSUL, "--consul-timeout", "2"], check=False, quiet=True)
    if r.returncode != 0:
        return False  # no Consul: no watch runs medic-heal either
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if not any(i.get("Session") for i in api("/v1/kv/medic/default/lock/%s" % SERVICE) or []):
                return True
        except Exception:
            return True  # 404: no lock
        time.sleep(0.2)
    return True


def down():
    paused = hands_off()
    sh(COMPOSE + ["down", "--remove-orphans", "-t", "1"], check=False, quiet=True)
    stop_registrar()
    sh([sys.executable, os.path.join(ROOT, "testbed", "prometheus_demo.py"), "down"], check=False, quiet=True)
    sh(["bash", os.path.join(ROOT, "testbed", "consul.sh"), "down"], check=False, quiet=True)
    left = sh(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=" + PROJECT], check=False,
              quiet=True).stdout.split()
    if left:
        raise SystemExit("demo-down: %d demo container(s) still there after compose down: %s"
                         % (len(left), " ".join(x[:12] for x in left)))
    print("demo down: medic %s, containers removed, Consul and medic-register stopped; nothing of the demo runs"
          % ("paused for %s first" % SERVICE if paused else "had no Consul to act through"))


def up():
    os.makedirs(STATE, exist_ok=True)
    down()
    for p in (AUDIT,):
        if os.path.exists(p):
            os.unlink(p)
    shutil.rmtree(METRICS, ignore_errors=True)  # counting starts with this demo

    say("1. consul.d rendered from specs/ by medic-config")
    sh([os.path.join(BIN, "medic-config"), "--specs", os.path.join(ROOT, "specs"), "--out", CONSUL_D,
        "--audit-log", AUDIT, "--consul-addr", CONSUL])
    print("\n".join("   " + n for n in sorted(os.listdir(CONSUL_D))))

    say("2. Consul: 3 servers on 127.0.0.2-4 (raft_multiplier 1) + monitoring agent on 127.0.0.1")
    sh(["bash", os.path.join(ROOT, "testbed", "consul.sh"), "up", "cluster"])
    sh(["consul", "members", "-http-addr=" + CONSUL])
    # hands off while the demo composes its replicas: the agent's watches run medic-heal as they
    # start, and a heal of 0/3 at the same moment as the compose below would collide with it
    # (this pause also replaces one an earlier `make demo-down` left; it ends after step 3)
    sh([os.path.join(BIN, "medic-heal"), "--pause", SERVICE, "--reason", "make demo: bringing the replicas up",
        "--specs", os.path.join(ROOT, "specs"), "--audit-log", AUDIT, "--consul-addr", CONSUL], quiet=True)

    say("3. medic-register follows the Docker engine; the demo service at 3 replicas")
    log = open(os.path.join(STATE, "register.log"), "ab")
    p = subprocess.Popen([os.path.join(BIN, "medic-register"), "--filter", "com.docker.compose.project=" + PROJECT,
                          "--resync", "30", "--audit-log", AUDIT, "--metrics-addr", "127.0.0.1:9464",
                          "--allow-loopback-ip"], env=ENV, stdout=log, stderr=log,
                         start_new_session=True)
    with open(REGISTER_PID, "w") as f:
        f.write(str(p.pid))
    sh(COMPOSE + ["up", "-d", "--scale", "web=3", "web"], quiet=True)
    wait(lambda: len(passing()) == 3, 60, "3 passing instances")
    sh([os.path.join(BIN, "medic-heal"), "--resume", SERVICE, "--specs", os.path.join(ROOT, "specs"),
        "--audit-log", AUDIT, "--consul-addr", CONSUL], quiet=True)
    wait(lambda: medic_check_status() == "passing", 60, "medic:%s passing" % SERVICE)
    for e in passing():
        print("   %-40s %s:%d  %s" % (e["Service"]["ID"], e["Service"]["Address"], e["Service"]["Port"],
                                    ",".join(e["Service"]["Tags"])))
    sh([os.path.join(BIN, "medic-check"), SERVICE, "--specs", os.path.join(ROOT, "specs")])
    time.sleep(3)  # let start-up watch runs finish so the timeline below is the kill alone

    say("4. kill one container and watch medic heal it")
    victim = sorted(running())[0]
    t0 = time.time()
    mono0 = time.monotonic()
    sh(["docker", "kill", victim], quiet=True)
    events = {}

    def mark(name, cond):
        if name not in events and cond():
            events[name] = time.monotonic() - mono0

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mark("deregistered from Consul", lambda: not any(e["Service"]["Meta"].get("medic_container_id", "")
                                                          .startswith(victim) and
                                                          all(c["Status"] == "passing" for c in e["Checks"])
                                                          for e in instances()))
        mark("count check critical (medic:%s)" % SERVICE, lambda: medic_check_status() == "critical")
        mark("medic-heal acted", lambda: bool(heal_actions(audit_records(t0))))
        mark("3 containers running", lambda: "deregistered from Consul" in events and len(running()) == 3)
        mark("3 instances passing again", lambda: "medic-heal acted" in events and len(passing()) == 3)
        if "3 instances passing again" in events:
            break
        time.sleep(0.02)
    print("   %6.2f s  docker kill %s" % (0.0, victim[:12]))
    for name, t in sorted(events.items(), key=lambda kv: kv[1]):
        print("   %6.2f s  %s" % (t, name))
    if "count check critical (medic:%s)" % SERVICE not in events:
        print("           (the count check, every 2 s, never saw the gap: healed before it ran)")
    print("\n   audit records since the kill:")
    for r in audit_records(t0):
        print("   " + json.dumps({k: r.get(k) for k in ("time", "kind", "decision", "reason", "argv", "result",
                                                         "duration") if r.get(k) is not None}))

    say("5. consul reload: every watch fires again with a replayed payload")
    before = len(heal_actions(audit_records(0)))
    ids_before = sorted(running())
    t_reload = time.time()
    sh(["consul", "reload", "-http-addr=" + CONSUL])
    time.sleep(8)
    runs = [r for r in audit_records(t_reload) if r.get("kind", "heal") == "heal"]
    after = len(heal_actions(audit_records(0)))
    print("   medic-heal ran %d time(s) after the reload; scale actions: %d; containers unchanged: %s"
          % (len(runs), after - before, ids_before == sorted(running())))
    for r in runs[:6]:
        print("   %s %s: %s" % (r.get("time"), r.get("decision"), r.get("reason")))

    say("6. medic-status")
    sh([os.path.join(BIN, "medic-status"), "--specs", os.path.join(ROOT, "specs"), "--audit-log", AUDIT],
       check=False)
    print("\nLeft running: Consul (127.0.0.1:8500), medic-register (/metrics on 127.0.0.1:9464), 3 demo containers. "
          "Stop with: make demo-down. A Prometheus on it that sees a kill healed: make prometheus")


if __name__ == "__main__":
    if sys.argv[1:] == ["down"]:
        down()
    else:
        up()
