"""medic-register against the real Docker engine and real Consul agents (one per test).

Latencies are measured and printed (run with -s to see them), never asserted tightly.
"""
import signal
import time

import pytest

import support
import support_register as sr

pytestmark = [pytest.mark.consul, pytest.mark.docker]

DEMO_LABELS = {"SERVICE_NAME": "www-%s", "SERVICE_TAGS": "demo,blue", "SERVICE_CHECK_HTTP": "/cgi-bin/health",
               "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s"}


def labels_for(unique, **extra):
    out = {k: (v % unique if "%s" in v else v) for k, v in DEMO_LABELS.items()}
    out.update(extra)
    return out


@pytest.fixture
def env(docker_client, demo_image, consul_factory, unique, tmp_path):
    """Own agent, own containers (cleaned up), daemons stopped at the end."""
    agent = consul_factory(node="medic-reg-" + unique)
    daemons = []

    def daemon(**kw):
        kw.setdefault("audit_log", str(tmp_path / "audit.jsonl"))
        d = sr.Daemon(agent.addr, unique, **kw).start()
        daemons.append(d)
        support.wait_for(lambda: any(r["pid"] == d.proc.pid for r in d.records("resync")) or not d.alive(),
                         timeout=60, what="the registrar's initial resync")
        assert d.alive(), d.stderr()
        return d

    class Env:
        pass
    e = Env()
    e.agent, e.client, e.unique, e.daemon, e.tmp = agent, docker_client, unique, daemon, tmp_path
    yield e
    for d in daemons:
        d.stop()
    sr.remove_containers(docker_client, unique)


def passing(agent, sid):
    return [c for c in sr.checks_of(agent, sid).values() if c["Status"] == "passing"]


def test_labelled_container_registered_then_killed_gone(env, capsys):
    d = env.daemon(resync=30)
    name = "medic-reg-%s-a" % env.unique
    sid = sr.service_id(name)
    watch = sr.Stopwatch(lambda: sid in sr.services(env.agent))
    watch.start()
    c = sr.run_container(env.client, env.unique, name, labels=labels_for(
        env.unique, **{"com.docker.compose.project": "proj-" + env.unique, "com.docker.compose.service": "web"}))
    t_started = time.monotonic() - watch.t0
    watch.join()
    assert watch.seconds is not None, d.stderr()
    svc = sr.services(env.agent)[sid]
    port = sr.published_port(env.client, c.id)
    assert (svc["Service"], svc["Address"], svc["Port"]) == ("www-" + env.unique, "127.0.0.1", port)
    assert svc["Tags"] == ["demo", "blue"]
    assert svc["Meta"]["medic_container_id"] == c.id
    assert svc["Meta"]["medic_compose_project"] == "proj-" + env.unique
    assert svc["Meta"]["medic_compose_service"] == "web"
    assert svc["Meta"]["medic_registrar"] == d.registrar_id
    support.wait_for(lambda: passing(env.agent, sid), timeout=30, what="a passing HTTP check")
    t_passing = time.monotonic() - watch.t0  # the registrar's first probe, or Consul's first run
    support.wait_for(lambda: "/cgi-bin/health" in sr.checks_of(env.agent, sid)["service:" + sid]["Output"],
                     timeout=30, what="Consul's own first run of the check")
    (chk,) = sr.checks_of(env.agent, sid).values()
    assert chk["Type"] == "http" and chk["Status"] == "passing"

    gone = sr.Stopwatch(lambda: sid not in sr.services(env.agent))
    gone.start()
    c.kill()
    gone.join()
    assert gone.seconds is not None, d.stderr()
    with capsys.disabled():
        print("\n[latency] docker run returned %.3f s; registered %.3f s after run was called "
              "(%.3f s after it returned); check passing at %.3f s; deregistered %.3f s after kill"
              % (t_started, watch.seconds, watch.seconds - t_started, t_passing, gone.seconds))
    rc, out = d.stop()
    assert (rc, out.startswith("MEDIC OK - stopped by SIGTERM")) == (0, True), (out, d.stderr())
    acts = [(r["action"], r.get("service_id")) for r in d.records() if r["action"] in ("register", "deregister")]
    assert acts == [("register", sid), ("deregister", sid)]


@pytest.mark.parametrize("probe", [True, False])
def test_a_new_check_starts_passing_only_after_the_registrars_own_probe_passed(env, probe):
    """Consul runs a new check after a random part of its interval (60 s here): with the first
    probe the check is passing the moment it is registered; --no-probe leaves it critical."""
    d = env.daemon(resync=30, extra=() if probe else ("--no-probe",))
    name = "medic-reg-%s-%s" % (env.unique, "probe" if probe else "noprobe")
    sid = sr.service_id(name)
    sr.run_container(env.client, env.unique, name, labels=labels_for(env.unique, SERVICE_CHECK_INTERVAL="60s"))
    support.wait_for(lambda: sr.checks_of(env.agent, sid), timeout=30, interval=0.01, what="registration")
    (chk,) = sr.checks_of(env.agent, sid).values()
    assert chk["Status"] == ("passing" if probe else "critical"), (chk, d.stderr())
    (rec,) = [r for r in d.records("register") if r.get("service_id") == sid]
    assert rec["first_probe"] == ("passing" if probe else None)


def test_stop_pause_and_unpause(env):
    env.daemon(resync=30)
    name = "medic-reg-%s-p" % env.unique
    sid = sr.service_id(name)
    c = sr.run_container(env.client, env.unique, name, labels=labels_for(env.unique))
    support.wait_for(lambda: sid in sr.services(env.agent), timeout=30, what="registration")
    c.pause()
    support.wait_for(lambda: sid not in sr.services(env.agent), timeout=30, what="deregistration on pause")
    c.unpause()
    support.wait_for(lambda: sid in sr.services(env.agent), timeout=30, what="registration on unpause")
    c.stop(timeout=5)
    support.wait_for(lambda: sid not in sr.services(env.agent), timeout=30, what="deregistration on stop")
    c.start()
    support.wait_for(lambda: sid in sr.services(env.agent), timeout=30, what="registration on restart")
    assert sr.services(env.agent)[sid]["Port"] == sr.published_port(env.client, c.id)


def test_registrar_restart_while_containers_come_and_go(env):
    d1 = env.daemon(resync=30)
    names = ["medic-reg-%s-%d" % (env.unique, i) for i in range(4)]
    cs = {n: sr.run_container(env.client, env.unique, n, labels=labels_for(env.unique)) for n in names[:3]}
    support.wait_for(lambda: len(sr.owned_ids(env.agent, d1.registrar_id)) == 3, timeout=30, what="3 registrations")
    # a service of another registrar and a hand-registered one must never be touched
    env.agent.register("foreign-" + env.unique, "foreign", meta={"medic_registrar": "someone-else"})
    env.agent.register("manual-" + env.unique, "manual")
    rc, _ = d1.stop()
    assert rc == 0
    cs[names[0]].kill()                       # dies while no registrar runs: a ghost
    cs[names[1]].stop(timeout=5)
    cs[names[1]].start()                      # restarted: new port while no registrar runs
    cs[names[3]] = sr.run_container(env.client, env.unique, names[3], labels=labels_for(env.unique))  # new
    d2 = env.daemon(resync=30)
    want = sorted(sr.service_id(n) for n in names[1:])

    def converged():
        return sr.owned_ids(env.agent, d2.registrar_id) == want
    support.wait_for(converged, timeout=30, what="no ghost, nothing missing")
    services = sr.services(env.agent)
    for n in names[1:]:
        assert services[sr.service_id(n)]["Port"] == sr.published_port(env.client, cs[n].id)
    assert "foreign-" + env.unique in services and "manual-" + env.unique in services
    # no duplicates: one service per container port, by container id
    by_cid = [s["Meta"]["medic_container_id"] for s in services.values()
              if (s.get("Meta") or {}).get("medic_registrar") == d2.registrar_id]
    assert len(by_cid) == len(set(by_cid)) == 3


def test_periodic_resync_of_an_unchanged_fleet_moves_no_index(env):
    d = env.daemon(resync=0.5)
    names = ["medic-reg-%s-r%d" % (env.unique, i) for i in range(3)]
    for n in names:
        sr.run_container(env.client, env.unique, n, labels=labels_for(env.unique))
    ids = [sr.service_id(n) for n in names]
    support.wait_for(lambda: all(passing(env.agent, sid) for sid in ids if sid in sr.services(env.agent))
                     and set(ids) <= set(sr.services(env.agent)), timeout=60, what="3 passing instances")
    time.sleep(1.5)  # let anti-entropy settle
    health = "/v1/health/service/www-" + env.unique
    before = (sr.index_of(env.agent, "/v1/catalog/services"), sr.index_of(env.agent, health))
    n_before, n_records = len(d.resyncs()), len(d.records())
    support.wait_for(lambda: len(d.resyncs()) >= n_before + 6, timeout=60, what="6 more resyncs")
    after = (sr.index_of(env.agent, "/v1/catalog/services"), sr.index_of(env.agent, health))
    resyncs = d.resyncs()[n_before:]
    assert after == before, "an unchanged fleet moved the Consul index"
    assert all("0 registered, 0 deregistered, 3 unchanged" in ln for ln in resyncs), resyncs
    # quiet: routine resyncs that changed nothing write no audit line (an hourly summary at most)
    assert d.records()[n_records:] == [], d.records()[n_records:]
    # and a real change still goes through at the next resync (the index does move then)
    env.agent.deregister(ids[0])
    support.wait_for(lambda: ids[0] in sr.services(env.agent), timeout=30, what="re-registration by resync")
    assert sr.index_of(env.agent, "/v1/catalog/services") > before[0] or sr.index_of(env.agent, health) > before[1]


def test_consul_agent_down_changes_kept_and_applied(docker_client, demo_image, consul_factory, unique, tmp_path):
    # a server agent with a data dir: it restores its services on restart, the ghost included
    agent = consul_factory(node="medic-regk-" + unique, dev=False, config={"server": True, "bootstrap_expect": 1})
    d = sr.Daemon(agent.addr, unique, resync=60, audit_log=str(tmp_path / "audit.jsonl")).start()
    try:
        _agent_down(d, agent, docker_client, unique)
    finally:
        d.stop()
        sr.remove_containers(docker_client, unique)


def _agent_down(d, agent, client, unique):
    class E:
        pass
    env = E()
    env.agent, env.client, env.unique = agent, client, unique
    support.wait_for(lambda: d.records("resync") or not d.alive(), timeout=60, what="initial resync")
    a = sr.run_container(env.client, env.unique, "medic-reg-%s-k1" % env.unique, labels=labels_for(env.unique))
    sid_a = sr.service_id(a.name)
    support.wait_for(lambda: sid_a in sr.services(env.agent), timeout=30, what="registration")
    env.agent.kill(signal.SIGKILL)            # agent gone (dev agent: its state is lost too)
    b = sr.run_container(env.client, env.unique, "medic-reg-%s-k2" % env.unique, labels=labels_for(env.unique))
    a.kill()                                 # a change while the agent is down
    time.sleep(2)
    assert d.alive(), d.stderr()
    env.agent.start(wait_leader=False)
    sid_b = sr.service_id(b.name)
    support.wait_for(lambda: sid_b in sr.services(env.agent) and sid_a not in sr.services(env.agent),
                     timeout=60, what="pending registration and deregistration applied")
    assert d.alive()
    assert any(r["action"] == "consul" and "retrying" in r["reason"] for r in d.records())
    # the agent restored the dead container's service from its data dir; the kept change removed it
    assert [r["service_id"] for r in d.records("deregister")] == [sid_a]


def test_ignored_and_unpublished_containers_audited_not_registered(env):
    d = env.daemon(resync=30)
    sr.run_container(env.client, env.unique, "medic-reg-%s-i" % env.unique,
                     labels=labels_for(env.unique, SERVICE_IGNORE="true"))
    sr.run_container(env.client, env.unique, "medic-reg-%s-n" % env.unique, labels=labels_for(env.unique), ports=())
    support.wait_for(lambda: len(d.records("ignore")) >= 2, timeout=30, what="two ignore records")
    reasons = sorted(r["reason"] for r in d.records("ignore"))
    assert reasons == ["SERVICE_IGNORE set", "no published ports"]
    assert sr.owned_ids(env.agent, d.registrar_id) == []


def test_once_registers_and_removes_ghosts(env):
    c = sr.run_container(env.client, env.unique, "medic-reg-%s-o" % env.unique, labels=labels_for(env.unique))
    args = ["--once", "--consul-addr", env.agent.addr, "--filter", "medic.test=" + env.unique,
            "--registrar-id", "once-" + env.unique, "--audit-log", str(env.tmp / "once.jsonl"), "--allow-loopback-ip"]
    r = support.run_medic("medic-register", args)
    assert (r.returncode, r.stdout) == (0, "MEDIC OK - resync: 1 registered, 0 deregistered, 0 unchanged, "
                                           "1 containers (registrar once-%s)\n" % env.unique), r.stderr
    assert sr.owned_ids(env.agent, "once-" + env.unique) == [sr.service_id(c.name)]
    r = support.run_medic("medic-register", args)
    assert "0 registered, 0 deregistered, 1 unchanged" in r.stdout
    c.kill()
    r = support.run_medic("medic-register", args)
    assert "0 registered, 1 deregistered, 0 unchanged, 0 containers" in r.stdout
    assert sr.owned_ids(env.agent, "once-" + env.unique) == []


@pytest.mark.slow
def test_100_containers_started_at_once_all_registered(capsys):
    support.require(support.consul_available(), "the consul binary")
    support.require(support.docker_client_or_none() is not None, "a Docker engine")
    detail = {}
    seconds = sr.measure_register_100(detail=detail)
    with capsys.disabled():
        print("\n[bench] register_100_s = %.2f (docker run x100 took %.2f s; the last registration %.2f s later)"
              % (seconds, detail["started_s"], detail["after_last_start_s"]))
    assert seconds > 0


# ---------------------------------------------------------------- failures of the boundary
def test_consul_unreachable_once_is_unknown(docker_client, unique, tmp_path):
    port = support.free_port()
    r = support.run_medic("medic-register", ["--once", "--consul-addr", "127.0.0.1:%d" % port,
                                             "--filter", "medic.test=" + unique, "--consul-timeout", "1",
                                             "--ip", "127.0.0.1", "--audit-log", str(tmp_path / "a.jsonl")])
    assert r.returncode == 3
    assert r.stdout.startswith("MEDIC UNKNOWN - consul: cannot connect to Consul at http://127.0.0.1:%d" % port)
    assert len(r.stdout.splitlines()) == 1


def test_engine_unreachable_once_is_unknown(tmp_path):
    r = support.run_medic("medic-register", ["--once", "--consul-addr", "127.0.0.1:1", "--allow-loopback-ip"],
                          env=support.medic_env(DOCKER_HOST="unix://%s/none.sock" % tmp_path,
                                                MEDIC_AUDIT_LOG=str(tmp_path / "a.jsonl")))
    assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - engine: "), r.stdout


@pytest.mark.parametrize("args", [["--resync", "-1"], ["--resync", "nan"], ["--resync", "inf"],
                                  ["--docker-timeout", "1e999"], ["--bogus"], ["--hostname", "a/b"]])
def test_usage_errors_are_unknown(args, tmp_path):
    r = support.run_medic("medic-register", args, env=support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "a")))
    assert r.returncode == 3 and r.stdout.startswith("MEDIC UNKNOWN - usage: ") and len(r.stdout.splitlines()) == 1


def test_lost_event_stream_reconnects_and_resyncs(env):
    """The engine connection cut (not the shared engine: a proxy in front of it); what
    happened meanwhile is found by the resync after the reconnect (--resync 0 = never)."""
    proxy = sr.EngineProxy(str(env.tmp / "engine.sock")).start()
    try:
        d = env.daemon(resync=0, env={"DOCKER_HOST": "unix://" + proxy.path})
        a = sr.run_container(env.client, env.unique, "medic-reg-%s-la" % env.unique, labels=labels_for(env.unique))
        sid_a = sr.service_id(a.name)
        support.wait_for(lambda: sid_a in sr.services(env.agent), timeout=30, what="registration")
        proxy.stop()
        support.wait_for(lambda: any(r["reason"].startswith("event stream lost") for r in d.records("engine")),
                         timeout=30, what="the registrar noticing the lost stream")
        a.kill()                                   # its die event is never seen
        b = sr.run_container(env.client, env.unique, "medic-reg-%s-lb" % env.unique, labels=labels_for(env.unique))
        time.sleep(1.5)                            # a few failed reconnects (backoff)
        assert d.alive() and sid_a in sr.services(env.agent)
        proxy.start()
        want = [sr.service_id(b.name)]
        support.wait_for(lambda: sr.owned_ids(env.agent, d.registrar_id) == want, timeout=30,
                         what="converged after the reconnect")
        assert any(r["reason"].startswith("event stream reconnected") for r in d.records("engine"))
        # and events are followed again
        c = sr.run_container(env.client, env.unique, "medic-reg-%s-lc" % env.unique, labels=labels_for(env.unique))
        support.wait_for(lambda: sr.service_id(c.name) in sr.services(env.agent), timeout=30, what="new event")
    finally:
        proxy.stop()


def test_registrar_restart_during_churn_ends_exact(env):
    """Containers start and die while the registrar stops and starts again (its listing
    races the events): once the churn ends, the registrations match exactly."""
    import random
    import threading
    d1 = env.daemon(resync=30)
    stop = threading.Event()
    alive = {}
    rnd = random.Random(7)

    def churn():
        i = 0
        while not stop.is_set():
            if alive and (len(alive) > 4 or rnd.random() < 0.4):
                name = rnd.choice(sorted(alive))
                alive.pop(name).remove(force=True)
            else:
                name = "medic-reg-%s-ch%d" % (env.unique, i)
                alive[name] = sr.run_container(env.client, env.unique, name, labels=labels_for(env.unique))
                i += 1
    t = threading.Thread(target=churn)
    t.start()
    try:
        time.sleep(1.0)
        d1.stop()
        time.sleep(0.5)
        d2 = env.daemon(resync=30)
        time.sleep(1.5)
    finally:
        stop.set()
        t.join(60)
    want = sorted(sr.service_id(n) for n in alive)
    support.wait_for(lambda: sr.owned_ids(env.agent, d2.registrar_id) == want, timeout=30,
                     what="exactly the surviving containers (%d)" % len(want))
