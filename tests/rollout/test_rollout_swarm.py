"""medic-rollout on a Swarm service: a single-node swarm on an isolated engine of testbed/hosts.sh
(never the shared engine), Consul for the lock, the pause and the image record."""
import json
import subprocess

import pytest

import support
import support_hosts as shs
import support_rollout as srl

pytestmark = [pytest.mark.consul, pytest.mark.docker]


def running_tasks(svc):
    return [t for t in svc.tasks(filters={"desired-state": "running"}) if t["Status"]["State"] == "running"]


@pytest.fixture
def swarm(consul_bin, tmp_path, unique):
    server = support.ConsulAgent(node="medic-roll-swarm-" + unique, dev=False,
                                 config={"server": True, "bootstrap_expect": 1}).start()
    hosts = shs.Hosts(1, server.serf_addr, offset=46)
    env = None
    try:
        shs.start_or_require(hosts)
        env = hosts.docker_env(1)
        ip = hosts.host(1)["ip"]
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", ip, "--listen-addr", ip + ":2377"], env=env,
                       check=True, capture_output=True, timeout=120)
        yield server, hosts, env
    finally:
        if env is not None:
            subprocess.run(["docker", "swarm", "leave", "--force"], env=env, capture_output=True, timeout=120)
        try:
            hosts.down()
        finally:
            server.stop()


def test_swarm_service_rolls_one_task_at_a_time_and_rolls_back_a_crashing_image(swarm, tmp_path, unique):
    server, hosts, env = swarm
    client = hosts.docker(1)
    name = "rollswarm" + unique
    svc = client.services.create(support.DEMO_IMAGE, name=name, mode={"Replicated": {"Replicas": 2}})
    support.wait_for(lambda: len(running_tasks(svc)) == 2, timeout=120, what="2 running tasks")
    v2 = srl.make_variant(client, "medic-demo:%s-v2" % name, page="two")
    bad = srl.make_variant(client, "medic-demo:%s-crash" % name, crash=True)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "s.json").write_text(json.dumps({"service": name + ".example", "instances": 2,
                                              "scale": {"driver": "swarm", "service": name}}))
    menv = dict(support.medic_env(CONSUL_HTTP_ADDR=server.addr, MEDIC_SPECS=str(specs), MEDIC_NOTIFY="off",
                                  MEDIC_CACHE_DIR="", MEDIC_AUDIT_LOG=str(tmp_path / "audit.jsonl")),
                DOCKER_HOST=env["DOCKER_HOST"])

    def roll(*args):
        return support.run_medic("medic-rollout", [name + ".example"] + list(args), env=menv, timeout=600)

    r = roll("--image", v2, "--deadline", "5")
    assert r.returncode == 0 and "now on %s" % v2 in r.stdout, r.stdout + r.stderr
    svc.reload()
    assert svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == v2
    running = running_tasks(svc)
    assert len(running) == 2 and all(t["Spec"]["ContainerSpec"]["Image"].split("@")[0] == v2 for t in running)
    rec = support.http_json(server.addr + "/v1/kv/medic/default/image/%s.example?raw" % name)
    assert rec["image"] == v2

    r = roll("--image", bad, "--deadline", "5")
    assert r.returncode == 2 and "rolled" in r.stdout and "back" in r.stdout, r.stdout + r.stderr
    svc.reload()
    assert svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == v2
    support.wait_for(lambda: len([t for t in running_tasks(svc)
                                  if t["Spec"]["ContainerSpec"]["Image"].split("@")[0] == v2]) == 2,
                     timeout=120, what="2 running tasks of v2 after the rollback")
    assert support.http_json(server.addr + "/v1/kv/medic/default/image/%s.example?raw" % name)["image"] == v2
    svc.remove()
