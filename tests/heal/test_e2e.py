"""End to end: the whole loop (agent + medic-config's consul.d + medic-register + compose).

Nothing here calls medic-heal by hand unless the drill says so: the Consul agent
runs the watches and checks that medic-config rendered, as on a monitoring node.
"""
import os
import signal
import subprocess
import time

import pytest

import support
from support_e2e import Stack, children_of, cmdline

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def stack(consul_factory, demo_image, compose, tmp_path, unique):
    s = Stack(tmp_path, unique, consul_factory=consul_factory)
    yield s
    s.stop()


def test_killed_container_is_healed_by_the_watch(stack):
    stack.start(replicas=3)
    stack.settled(3)
    before = len(stack.scale_actions())
    stack.kill(1)
    stack.settled(3)
    assert len(stack.scale_actions()) - before == 1, stack.records()
    assert len(stack.container_ids(running_only=False)) == 3  # the same container restarted, none added


def test_every_instance_gone_is_healed(stack):
    """The service watch's payload is [] then: the watch itself names the service."""
    stack.start(replicas=3)
    stack.settled(3)
    before = len(stack.scale_actions())
    stack.kill(3)
    stack.settled(3)
    assert len(stack.scale_actions()) - before == 1, stack.records()
    assert len(stack.container_ids(running_only=False)) == 3


def test_reload_storm_and_agent_restart_deploy_nothing(stack):
    stack.start(replicas=3)
    stack.settled(3)
    before, ids = len(stack.scale_actions()), stack.container_ids()
    runs_before = len(stack.records())
    for _ in range(50):
        stack.reload()
    stack.restart_agent()
    stack.settled(3, quiet=5)
    assert len(stack.records()) > runs_before  # the watches did re-fire and medic-heal did run
    assert len(stack.scale_actions()) == before, stack.records()[-5:]
    assert stack.container_ids() == ids


def test_heal_killed_mid_scale_converges_and_lock_is_freed(stack):
    """SIGKILL medic-heal while its compose runs: the next run converges to exactly the declared count."""
    stack.render()
    # no watches for this drill: only our own medic-heal runs act
    for f in os.listdir(stack.consul_d):
        os.unlink(os.path.join(stack.consul_d, f))
    stack.agent.start()
    stack.registrar = None
    from support_register import Daemon
    stack.registrar = Daemon(stack.agent.addr, stack.token, resync=5).start()
    stack.compose("up", "-d", "--scale", "web=1", "web")
    stack.wait_passing(1)
    env = support.medic_env(MEDIC_AUDIT_LOG=stack.audit, MEDIC_NOTIFY="off")
    p = subprocess.Popen([os.path.join(support.BIN, "medic-heal"), "--service", stack.service, "--specs",
                          stack.specs, "--consul-addr", stack.agent.addr], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    killed_during_compose = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        if any(b"compose" in b" ".join(cmdline(c)) or cmdline(c)[:1] == [b"docker"] for c in children_of(p.pid)):
            p.send_signal(signal.SIGKILL)
            killed_during_compose = True
            break
        time.sleep(0.002)
    p.wait(10)
    assert killed_during_compose, "medic-heal finished before its compose child could be seen"
    assert stack.lock_holder()  # the dead handler's session still holds the lock ...
    # ... but it died on this host: the next run frees it at once (issue 10), not after 2 x TTL, and converges
    r = stack.heal("--service", stack.service)
    assert r.returncode == 0, r.stdout + r.stderr
    unlock = [x for x in stack.records() if x["decision"] == "unlock"]
    assert len(unlock) == 1 and unlock[0]["holder"]["pid"] == p.pid, stack.records()
    stack.wait_passing(3, 60)
    time.sleep(2)
    r = stack.heal("--service", stack.service)
    assert r.returncode == 0 and ("noop" in r.stdout or "hold" in r.stdout), r.stdout
    assert len(stack.container_ids(running_only=False)) == 3
    assert stack.passing() == 3


# -- several hosts, a real 3-server cluster ------------------------------------------
def _host2(consul_factory, stack, tmp_path, unique, bind="127.0.0.5"):
    """A second 'host': its own Consul client agent, registrar and containers serving the same service."""
    from support_e2e import write_compose
    from support_register import Daemon

    agent = consul_factory(node="host2-" + unique, dev=False, bind=bind, join=stack.agent.serf_addr)
    token = "h2" + unique
    f = write_compose(os.path.join(str(tmp_path), "host2-compose.yml"), stack.service, token)
    project = "medice2eh2" + unique
    reg = Daemon(agent.addr, token, registrar_id="reg-" + token, resync=5, extra=["--hostname", "host2"]).start()
    argv = ["docker", "compose", "-p", project, "-f", f]
    subprocess.run(argv + ["up", "-d", "--scale", "web=2", "web"], check=True, capture_output=True, timeout=120)
    return agent, reg, argv


def test_host_loss_is_healed_on_the_remaining_engine(consul_factory, demo_image, compose, tmp_path, unique, capsys):
    import support_heal

    s = Stack(tmp_path, unique, instances=2, consul_factory=consul_factory)
    host2 = reg2 = argv2 = None
    try:
        s.start(replicas=2)
        s.settled(2)
        host2, reg2, argv2 = _host2(consul_factory, s, tmp_path, unique)
        s.wait_passing(4)
        # now declare 4: two here, two on host2. Both "hosts" share one engine here, so host2 runs another
        # compose project: the spec counts any instance (the owner rule with real engines: tests/system/test_hosts.py)
        support_heal.write_spec(s.specs, s.service, s.project, instances=4, file=s.compose_file,
                                heal={"grace": "15s", "cooldown": "2s", "backoff_base": "2s", "backoff_max": "8s",
                                      "max_attempts": 3}, membership="any")
        s.settled(4, local=2)
        before = len(s.scale_actions())
        # host2 is lost: its registrar, its agent and its containers die at once
        reg2.proc.kill()
        host2.kill()
        subprocess.run(["docker", "kill"] + subprocess.run(argv2 + ["ps", "-q"], capture_output=True, text=True)
                       .stdout.split(), capture_output=True)
        t0 = time.monotonic()
        support.wait_for(lambda: any(c["CheckID"] == "serfHealth" and c["Status"] == "critical"
                                     for c in s.agent.api("/v1/health/node/" + host2.node)), 60,
                         what="host2's node critical")
        detected = time.monotonic() - t0
        t1 = time.monotonic()
        s.wait_passing(4, 60)
        healed = time.monotonic() - t1
        s.settled(4)
        assert len(s.container_ids()) == 4
        assert len(s.scale_actions()) - before == 1, s.records()[-4:]
        with capsys.disabled():
            print("\n[drill] host loss: node critical after %.1f s (gossip detection); healed to 4 here %.1f s later"
                  % (detected, healed))
    finally:
        if reg2:
            reg2.stop()
        if argv2:
            subprocess.run(argv2 + ["down", "-t", "0"], capture_output=True)
        s.stop()


@pytest.fixture
def cluster_stack(consul_factory, demo_image, compose, tmp_path, unique):
    from support_cluster import Cluster

    cl = Cluster(tag="e" + unique[:4]).start()
    s = Stack(tmp_path, unique, consul_factory=consul_factory, reconcile="3s",
              agent_kw={"config": {}, "join": cl.servers[0].serf_addr})
    yield cl, s
    s.stop()
    cl.stop()


def test_leader_killed_mid_run_healing_completes(cluster_stack, capsys):
    cl, s = cluster_stack
    s.start(replicas=3)
    s.settled(3)
    before = len(s.scale_actions())
    old, elected, _ = cl.kill_leader()
    s.kill(1)
    t0 = time.monotonic()
    s.settled(3, timeout=120)
    assert len(s.scale_actions()) - before == 1, s.records()[-6:]
    with capsys.disabled():
        print("\n[drill] leader killed: new leader after %.1f s; healed %.1f s after the container was killed"
              % (elected, time.monotonic() - t0))


def test_no_quorum_handlers_do_nothing_and_say_why(cluster_stack):
    cl, s = cluster_stack
    s.start(replicas=3)
    s.settled(3)
    before = len(s.scale_actions())
    leader = cl.wait_leader()
    leader.kill()
    next(a for a in cl.servers if a is not leader and a.proc.poll() is None).kill()
    s.kill(1)
    time.sleep(8)  # the watches and the reconcile check (3 s) run meanwhile
    r = s.heal("--service", s.service)
    assert r.returncode == 3, r.stdout
    assert len(r.stdout.splitlines()) == 1 and "nothing changed" in r.stdout
    assert "leader" in r.stdout.lower(), r.stdout
    assert len(s.scale_actions()) == before
    assert len(s.container_ids()) == 2
    errors = s.records("error")
    assert errors and all("leader" in e["reason"].lower() for e in errors[-3:]), [e["reason"] for e in errors[-3:]]


@pytest.mark.engine_restart
def test_engine_restart_converges_without_duplicates(consul_factory, demo_image, compose, tmp_path, unique):
    import support_register

    s = Stack(tmp_path, unique, consul_factory=consul_factory, reconcile="3s")
    try:
        s.start(replicas=3)
        s.settled(3)
        ids = s.container_ids(running_only=False)
        support_register.restart_engine()
        s.settled(3, timeout=180)
        assert s.container_ids(running_only=False) == ids  # the same 3 restarted, nothing added
        assert all(a["target"] <= 3 for a in s.scale_actions())
    finally:
        s.stop()
