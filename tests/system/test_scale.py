"""Issue 22 in CI: 300 specs on one real agent with Consul's DEFAULT limits
(http_max_conns_per_client 200). Agent start and `consul reload` are answered, no handler is
refused, and a real container loss among them is healed (docs/scale.md).

299 services are registered on the agent with a passing check each (instances elsewhere as far
as this engine knows: at their count); one is a real compose service with medic-register.
"""
import json
import os
import time

import pytest

import support
from support_e2e import Stack

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]

N = 300


def medic_processes(stack):
    """argv of the medic-* processes (but the registrar daemon) whose argv names this stack's directory."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().decode("utf-8", "replace")
            with open("/proc/%s/stat" % pid, "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        # a console script runs as `python3 .../medic-heal ...`: its name is argv[0] or argv[1]
        exe = next((os.path.basename(a) for a in argv.split("\0")[:2] if os.path.basename(a).startswith("medic-")), "")
        if exe and exe != "medic-register" and stack.dir in argv:
            out.append(argv.replace("\0", " ")[:200])
    return out


def register(agent, names, project, threads=4):
    """Each name at its count elsewhere, with the owner its spec names in Meta (as medic-register
    on another host puts it): project % i, compose service web."""
    import threading

    def work(part):
        for i, name in part:
            agent.register("%s-0" % name, name, port=20000 + i, check={"TTL": "1h"},
                           meta={"medic_compose_project": project % i, "medic_compose_service": "web"})
            agent.set_ttl("%s-0" % name, "passing")  # a TTL check starts critical whatever Status says

    items = list(enumerate(names))
    ts = [threading.Thread(target=work, args=(items[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def refused(stack, since=0):
    return support.agent_refusals(stack.agent.logfile, since)


def test_300_specs_on_one_agent_with_default_limits(consul_factory, demo_image, compose, tmp_path, unique):
    import support_heal

    s = Stack(tmp_path, unique, consul_factory=consul_factory, instances=2)
    others = ["sc%03d-%s.example" % (i, unique) for i in range(N - 1)]
    t = time.monotonic()

    def phase(what):
        print("%6.1f s  %s" % (time.monotonic() - t, what))

    try:
        s.start(replicas=2)
        phase("agent, registrar and 2 containers up")
        limits = s.agent.api("/v1/agent/self")["DebugConfig"]["HTTPMaxConnsPerClient"]
        assert limits == 200  # Consul's default: nothing raised for medic
        # the others are registered (at their count, elsewhere as far as this engine knows) before
        # their specs reach medic; their compose file names an image that is not there (never pulled)
        register(s.agent, others, "scale" + unique + "%03d")
        support.wait_for(lambda: len(s.agent.api("/v1/catalog/services")) >= N + 1, 60, 0.5, "registrations")
        missing = tmp_path / "missing.yml"
        missing.write_text("services:\n  web:\n    image: medic-test-missing:none\n    pull_policy: never\n")
        for i, name in enumerate(others):
            support_heal.write_spec(s.specs, name, "scale%s%03d" % (unique, i), instances=1, file=str(missing),
                                    check={"interval": "5s", "timeout": "5s"})
        s.render()
        watches = json.load(open(os.path.join(s.consul_d, "medic-watches.json")))["watches"]
        assert len(watches) == 3
        s.reload()
        phase("%d specs loaded by a reload" % N)
        s.restart_agent()
        s.settled(2, quiet=3)
        phase("agent restarted with %d specs and settled" % N)

        mark = os.path.getsize(s.agent.logfile)
        before = len(s.scale_actions())
        t0 = time.monotonic()
        s.reload()
        s.agent.wait_ready()
        s.settled(2, quiet=3)
        assert len(s.scale_actions()) == before, "a reload deployed something"
        phase("reload answered and settled in %.1f s" % (time.monotonic() - t0))

        s.kill(1)
        t0 = time.monotonic()
        s.wait_passing(2, 60)
        s.settled(2, quiet=2)
        phase("loss healed among %d specs in %.1f s" % (N, time.monotonic() - t0))
        assert len(s.scale_actions()) == before + 1  # one loss, one action (a restart of the killed container)
        from consul_medic.handlers.core import audit
        strays = [r["service"] for r in audit.read(s.audit) if r.get("decision") == "heal" and r["service"] != s.service]
        assert strays == [], strays[:5]  # the registered-only services were at their count all along
        assert refused(s) == [], refused(s)[:5]
        assert refused(s, mark) == []
        time.sleep(2)
        # at any time at most one per watch (3), per check (batch, reconcile) and the hold timer: 6, whatever N
        assert len(medic_processes(s)) <= 6, medic_processes(s)
    finally:
        s.stop()
        s.agent.stop()  # its handlers first: an agent on its way out answers with no instances
        import bench_scale
        bench_scale.cleanup_projects("scale" + unique)
