"""medic-heal with the Swarm driver against a real Swarm service on this engine.

The engine is left as found: swarm left if this test joined it, the service removed.
"""
import json
import subprocess
import time

import pytest

import support

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture
def swarm_service(docker_client, demo_image, unique):
    joined = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "active"
    if joined:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
    name = "medic-swarm-" + unique
    try:
        docker("service", "create", "-d", "--name", name, "--replicas", "1", demo_image)
        yield name
    finally:
        docker("service", "rm", name, check=False)
        if joined:
            docker("swarm", "leave", "--force", check=False)


def running_tasks(name):
    out = docker("service", "ps", name, "--filter", "desired-state=running", "--format", "{{.CurrentState}}").stdout
    return [line for line in out.splitlines() if line.startswith("Running")]


def test_swarm_service_scaled_through_the_sdk_once(consul_agent, swarm_service, tmp_path, unique):
    svc = "swarm-%s.example" % unique
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / (svc + ".json")).write_text(json.dumps({
        "service": svc, "instances": 2, "scale": {"driver": "swarm", "service": swarm_service},
        "heal": {"grace": "60s", "cooldown": "1s"}}))
    support.wait_for(lambda: len(running_tasks(swarm_service)) == 1, 60, what="1 swarm task running")
    audit_log = str(tmp_path / "audit.jsonl")
    env = support.medic_env(MEDIC_AUDIT_LOG=audit_log, MEDIC_NOTIFY="off")
    args = ["--service", svc, "--specs", str(specs), "--consul-addr", consul_agent.addr]
    r = support.run_medic("medic-heal", args, env=env)
    # the one task runs but has no Consul instance yet: it is pending; one more is missing
    assert r.returncode == 0, r.stdout + r.stderr
    assert "heal(2)" in r.stdout and "docker-sdk service scale %s=2" % swarm_service in r.stdout, r.stdout
    replicas = docker("service", "inspect", swarm_service, "--format", "{{.Spec.Mode.Replicated.Replicas}}").stdout
    assert replicas.strip() == "2"
    support.wait_for(lambda: len(running_tasks(swarm_service)) == 2, 60, what="2 swarm tasks running")
    time.sleep(1.5)  # past the cooldown
    r = support.run_medic("medic-heal", args, env=env)
    assert r.returncode == 0 and "hold" in r.stdout and "pending" in r.stdout, r.stdout  # not a second scale
    assert docker("service", "inspect", swarm_service, "--format",
                  "{{.Spec.Mode.Replicated.Replicas}}").stdout.strip() == "2"
