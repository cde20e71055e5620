"""medic-heal against a real agent, the real engine and the demo image (compose v2)."""
import glob
import json
import os
import subprocess
import time

import pytest

import support
import support_heal as sh

pytestmark = [pytest.mark.consul, pytest.mark.docker]


def capture_config(tmp_path, service):
    """An agent config whose service and checks watches save every payload they are handed."""
    out = tmp_path / "payloads"
    out.mkdir()

    def saver(kind):
        return ["/bin/sh", "-c", 'cat > "%s/%s.$(date +%%s%%N).json"' % (out, kind)]

    return str(out), {"watches": [{"type": "service", "service": service, "args": saver("service")},
                                  {"type": "checks", "service": service, "args": saver("checks")}]}


def latest(dirpath, kind, pred):
    for path in sorted(glob.glob(os.path.join(dirpath, kind + ".*.json")), reverse=True):
        with open(path) as f:
            raw = f.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            continue  # still being written
        if pred(doc):
            return raw
    return None


def service_passing(doc):
    return sum(1 for e in doc if all(c["Status"] == "passing" for c in e["Checks"]))


def test_killed_container_restored_by_one_run_fed_a_real_watch_payload(consul_factory, make_world, tmp_path, unique):
    service = "heal-%s.example" % unique
    pdir, config = capture_config(tmp_path, service)
    agent = consul_factory(config=config)
    w = make_world(agent)
    assert w.service == service
    w.up(3)
    w.register()
    w.wait_passing(3)
    before = {c.id for c in w.running()}
    victim = w.running()[1]
    victim.kill()
    # the payload the agent's service watch handed its handler once the check went critical
    payload = support.wait_for(lambda: latest(pdir, "service", lambda d: len(d) == 3 and service_passing(d) == 2),
                               timeout=30, what="a service watch payload with 2/3 passing")
    t0 = time.monotonic()
    r = w.heal(input=payload, env=w.env(CONSUL_INDEX="77"))
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    # the killed replica is an exited container of the compose service: the engine starts it again
    # (scaler's fast path, one API call); the audit and the output say which way it went
    assert "heal(3)" in r.stdout and "[docker-engine start %s]" % victim.name in r.stdout, r.stdout
    assert len(w.running()) == 3 and {c.id for c in w.running()} == before  # the killed one, restarted
    (rec,) = w.records("heal")
    assert rec["result"] == "ok" and rec["index"] == 77 and rec["observed"]["stopped"] == 1
    assert rec["argv"] == ["docker-engine", "start", victim.name]
    print("one heal run, start to exit: %.2f s; compose: %.2f s" % (elapsed, rec["command_duration"]))

    # the still-critical checks watch payload replayed: nothing more happens
    checks_payload = support.wait_for(lambda: latest(pdir, "checks", lambda d: any(
        c["Status"] == "critical" for c in d)), timeout=30, what="a checks payload with a critical check")
    for _ in range(3):
        # (MEDIC_HOLD_WAIT=0: the answer now, not after waiting under the lock for the pending hold)
        r = w.heal(input=checks_payload, env=w.env(MEDIC_HOLD_WAIT="0"))
        # hold (pending) or noop (Docker gave the restarted container its old host port back)
        assert r.returncode == 0 and (": hold:" in r.stdout or ": noop:" in r.stdout), r.stdout
    w.register()  # medic-register's part: the restarted container has a new host port
    w.wait_passing(3)
    r = w.heal(input=payload)
    assert r.returncode == 0 and ": noop:" in r.stdout, r.stdout
    assert len(w.scale_actions()) == 1 and len(w.running()) == 3


def test_four_declared_three_here_one_remote_lost(consul_agent, make_world):
    w = make_world(consul_agent, instances=4)
    w.up(3)
    w.register()
    remote = "lost-host-" + w.project
    sh.register_remote(consul_agent, w.service, remote, status="passing", project=w.project)
    w.wait_passing(4)
    r = w.heal(input=sh.health_payload(consul_agent, w.service))
    assert r.returncode == 0 and ": noop:" in r.stdout and "3 here, 1 elsewhere" in r.stdout, r.stdout
    sh.register_remote(consul_agent, w.service, remote, status="critical", lost=True, project=w.project)  # the host is lost
    support.wait_for(lambda: w.passing() == 3, what="the remote instance critical")
    payload = sh.health_payload(consul_agent, w.service)
    r = w.heal(input=payload)
    assert r.returncode == 0 and "heal(4)" in r.stdout, r.stdout
    assert len(w.running()) == 4
    # replays before the new container registers: it is pending, nothing changes (MEDIC_HOLD_WAIT=0:
    # each replay answers at once instead of waiting under the lock for the pending hold to end)
    for _ in range(5):
        r = w.heal(input=payload, env=w.env(MEDIC_HOLD_WAIT="0"))
        assert r.returncode == 0 and ": hold:" in r.stdout and "1 pending" in r.stdout, r.stdout
    w.register()
    w.wait_passing(4)
    for _ in range(3):
        r = w.heal(input=sh.health_payload(consul_agent, w.service))
        assert r.returncode == 0 and ": noop:" in r.stdout, r.stdout
    assert len(w.scale_actions()) == 1 and len(w.running()) == 4
    recs = w.records()
    assert [r["decision"] for r in recs] == ["noop", "heal"] + ["hold"] * 5 + ["noop"] * 3
    assert recs[-1]["settle"] is None and recs[7]["settle"] == "restored"


def test_dry_run_changes_no_container(consul_agent, make_world):
    w = make_world(consul_agent)
    w.up(3)
    w.register()
    w.wait_passing(3)
    w.running()[0].kill()
    before = sorted((c.id, c.status) for c in w.containers())
    r = w.heal("--service", w.service, "--dry-run")
    assert r.returncode == 0, r.stdout
    assert "heal(3)" in r.stdout and "dry-run: nothing changed" in r.stdout
    assert "docker compose -p %s -f %s up -d --no-recreate --scale web=3 web" % (w.project, sh.COMPOSE_FILE) in r.stdout
    assert "2/3 passing" in r.stdout or "2/3" in r.stdout
    time.sleep(1)
    assert sorted((c.id, c.status) for c in w.containers()) == before
    (rec,) = w.records()
    assert rec["dry_run"] is True and rec["result"] == "dry-run"
    with pytest.raises(Exception, match="404"):
        consul_agent.api("/v1/kv/medic/default/history/" + w.service)
    with pytest.raises(Exception, match="404"):
        consul_agent.api("/v1/kv/medic/default/lock/" + w.service)


def test_failing_container_replaced_only_with_opt_in(consul_agent, make_world):
    w = make_world(consul_agent, heal={"grace": "2s", "cooldown": "1s"})
    w.up(3)
    w.register()
    w.wait_passing(3)
    sick = w.running()[2]
    sick.exec_run(["touch", "/tmp/unhealthy"])
    support.wait_for(lambda: w.passing() == 2, timeout=20, what="one failing")
    time.sleep(2.2)  # past grace: failing, not pending
    r = w.heal("--service", w.service)
    assert r.returncode == 0 and ": warn:" in r.stdout and "replace_failing is off" in r.stdout, r.stdout
    assert len(w.running()) == 3 and not w.scale_actions()

    sh.write_spec(w.specs, w.service, w.project, 3, {"grace": "2s", "cooldown": "1s", "replace_failing": True})
    time.sleep(2.2)  # seen failing (by the run above) for a whole grace period: confirmed
    r = w.heal("--service", w.service)
    assert r.returncode == 0 and "replace failing container %s" % sick.name in r.stdout, r.stdout
    ids = {c.id for c in w.running()}
    assert sick.id not in ids and len(ids) == 3
    (rec,) = w.scale_actions()
    assert rec["removed"] == [sick.id]
    # the replacement is pending: no second replacement (MEDIC_HOLD_WAIT=0: the answer now, not after
    # waiting under the lock for grace to pass, when the never-registered replacement fails in turn)
    r = w.heal("--service", w.service, env=w.env(MEDIC_HOLD_WAIT="0"))
    assert ": hold:" in r.stdout and len(w.scale_actions()) == 1, r.stdout


def test_compose_v1_fallback_argv():
    from consul_medic.handlers.engine import scaler
    from consul_medic.handlers.spec.spec import Scale

    def which(name):
        return "/usr/bin/docker-compose" if name == "docker-compose" else None

    base = scaler.compose_command(which=which)
    assert base == ["docker-compose"]
    assert scaler.compose_argv(base, Scale("compose", "p", "/f.yml", "web"), 4) == [
        "docker-compose", "-p", "p", "-f", "/f.yml", "up", "-d", "--no-recreate", "--scale", "web=4", "web"]

    def no_plugin(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, b"", b"docker: 'compose' is not a docker command")

    assert scaler.compose_command(which=lambda n: "/usr/bin/" + n, run=no_plugin) == ["docker-compose"]
    with pytest.raises(Exception, match="neither"):
        scaler.compose_command(which=lambda n: None)


def test_compose_timeout_is_a_failed_action(tmp_path):
    from consul_medic.handlers.engine import scaler
    from consul_medic.handlers.spec.spec import Scale

    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    sc = scaler.ComposeScaler(Scale("compose", "p", "/f.yml", "web"), 0.5, base=[str(slow)])
    t0 = time.monotonic()
    res = sc.scale(3)
    assert not res.ok and "timed out after" in res.output and time.monotonic() - t0 < 10


def test_all_reconciles_every_spec_and_summarises_the_worst(consul_agent, docker_client, compose, demo_image,
                                                            tmp_path, unique):
    """The level-triggered safety net: a shortfall no watch reported is healed by --all."""
    a = sh.World(consul_agent, docker_client, tmp_path, unique)
    b = sh.World(consul_agent, docker_client, tmp_path, unique + "b", instances=2)
    b.specs, b.audit = a.specs, a.audit
    sh.write_spec(a.specs, b.service, b.project, 2)
    try:
        a.up(3)
        b.up(2)
        a.register()
        b.register()
        a.wait_passing(3)
        b.wait_passing(2)
        b.running()[0].remove(force=True)  # gone before anyone noticed
        r = a.heal("--all")
        assert r.returncode == 0, r.stdout
        lines = r.stdout.strip().splitlines()
        assert lines[0].startswith("MEDIC OK - 2 services (2 ok)")
        assert any(l.startswith(a.service + ": noop") for l in lines[1:])
        assert any(l.startswith(b.service + ": heal(2)") for l in lines[1:]), lines
        assert len(b.running()) == 2 and len(a.running()) == 3
        # the healthy service was settled by triage (no lock, no per-service reads), the short one was not
        assert a.records()[-1].get("triage") is True and a.records()[-1]["decision"] == "noop"
        assert not b.records("heal")[-1].get("triage")
        r = a.heal("--all", "--consul-addr", "http://127.0.0.1:%d" % support.free_port(), "--consul-timeout", "1")
        assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - 2 services (2 unknown)")
    finally:
        a.down()
        b.down()


def test_swarm_scaler_uses_the_sdk():
    from consul_medic.handlers.engine import scaler
    from consul_medic.handlers.spec.spec import Scale

    class Svc:
        def __init__(self):
            self.calls = []

        def scale(self, n):
            self.calls.append(n)
            return True

    class Services:
        svc = Svc()

        def get(self, name):
            assert name == "web"
            return self.svc

    class Engine:
        services = Services()

    sc = scaler.SwarmScaler(Scale("swarm", None, None, "web"), 5, Engine())
    res = sc.scale(4)
    assert res.ok and Engine.services.svc.calls == [4] and res.argv[-1] == "web=4"


def test_failed_compose_is_exit_1_recorded_and_backed_off(consul_agent, docker_client, compose, tmp_path, unique):
    # backoff 20 s: longer than two runs take on a busy machine
    w = sh.World(consul_agent, docker_client, tmp_path, unique, file=str(tmp_path / "missing-compose.yml"),
                 heal={"backoff_base": "20s", "backoff_max": "40s"})
    r = w.heal("--service", w.service)
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("MEDIC WARNING - %s: heal(3)" % w.service) and "FAILED" in r.stdout
    (rec,) = w.scale_actions()
    assert rec["result"] == "failed" and rec["returncode"] not in (0, None) and rec["output"]
    from consul_medic.handlers.core import audit
    assert [n["event"]["kind"] for n in audit.read(w.audit) if n.get("kind") == "notify"] == ["heal_failed"]
    # backoff after the failure: no second attempt at once (MEDIC_HOLD_WAIT=0: the answer now; by
    # default the run would wait under the lock for the 1 s backoff to end and try again)
    r = w.heal("--service", w.service, env=w.env(MEDIC_HOLD_WAIT="0"))
    assert r.returncode == 0 and ": hold:" in r.stdout and "backoff" in r.stdout, r.stdout
    assert len(w.scale_actions()) == 1


def test_a_remote_instance_failing_on_a_live_node_is_its_hosts_business_first(consul_agent, make_world):
    """A check that fails on a live node (an agent restart: every check critical until its first
    probe) is not made up here at once: that host's medic answers for it (docs/topology.md, rule 3)."""
    w = make_world(consul_agent, instances=4)
    w.up(3)
    w.register()
    remote = "live-host-" + w.project
    sh.register_remote(consul_agent, w.service, remote, status="critical", project=w.project)  # a live node
    w.wait_passing(3)
    r = w.heal("--service", w.service, env=w.env(MEDIC_HOLD_WAIT="0", MEDIC_DEFER="off"))
    assert r.returncode == 0 and ": hold:" in r.stdout and "fail on other live hosts (node %s)" % remote in r.stdout, \
        r.stdout
    assert len(w.running()) == 3 and w.scale_actions() == []
    (rec,) = w.records("hold")
    assert rec["observed"]["remote_watched"] == 1 and rec["until"]
