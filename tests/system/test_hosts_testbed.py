"""testbed/hosts.sh itself: separate engines, agents, registrars; lose/restore; idempotent up; down leaves nothing.

The fixture `hosts2` (tests/support_hosts.py) tears the hosts down after the module and
fails when anything of theirs is left (bridges, cgroups, mounts).
"""
import os

import pytest

import support
import support_register
from support_hosts import hosts2  # noqa: F401  (the module-scoped fixture)

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]


def test_each_host_is_an_engine_agent_and_registrar_of_its_own(hosts2, unique):  # noqa: F811
    server, hosts = hosts2
    state = hosts.state()
    assert [h["index"] for h in state["hosts"]] == [1, 2]
    names = set()
    for h in state["hosts"]:
        c = hosts.docker(h["index"])
        info = c.info()
        assert info["Name"] == h["name"]  # each engine has a name of its own (the registrar's id)
        names.add(info["DockerRootDir"])
        cont = c.containers.run(support.DEMO_IMAGE, name="medic-hosts-t-%s-%d" % (unique, h["index"]), detach=True,
                                labels={"SERVICE_NAME": "hosts-t-" + unique, support_register.LABEL: unique},
                                ports={"80/tcp": None})  # no address: the engine's default (dockerd --ip)
        ports = c.api.inspect_container(cont.id)["NetworkSettings"]["Ports"]["80/tcp"]
        assert ports[0]["HostIp"] == h["ip"]  # published on the host's own address
    assert len(names) == 2  # two engines, not one seen twice
    members = {m["Name"]: m["Status"] for m in server.api("/v1/agent/members")}
    assert all(members.get(h["node"]) == 1 for h in state["hosts"]), members

    def registered():
        entries = server.api("/v1/health/service/hosts-t-" + unique) or []
        return sorted((e["Node"]["Node"], e["Service"]["Meta"].get("medic_registrar")) for e in entries)
    support.wait_for(lambda: registered() == [("medic-host31", "medic-host31"), ("medic-host32", "medic-host32")],
                     30, what="one registration per host, by that host's registrar")
    assert hosts.sh("up", "2").returncode == 0  # idempotent: nothing restarted
    assert hosts.state()["hosts"] == state["hosts"]
    for h in state["hosts"]:
        support_register.remove_containers(hosts.docker(h["index"]), unique)


def test_lose_kills_the_whole_host_and_restore_brings_it_back(hosts2, unique):  # noqa: F811
    server, hosts = hosts2
    c = hosts.docker(2)
    support_register.run_container(c, unique, "medic-hosts-l-" + unique, labels={"SERVICE_NAME": "hosts-l-" + unique})
    h = hosts.host(2)
    support.wait_for(lambda: server.api("/v1/health/service/hosts-l-" + unique), 30, what="registered")
    hosts.lose(2)
    with open(os.path.join(h["cgroup"], "cgroup.procs")) as f:
        assert f.read().split() == []  # engine, containerd, shims, container, agent, registrar: all gone
    for pid in h["pids"].values():
        support.wait_for(lambda: _gone(pid), 10, what="process %d gone" % pid)
    support.wait_for(lambda: any(m["Name"] == h["node"] and m["Status"] != 1
                                 for m in server.api("/v1/agent/members")), 60, what="the node seen failed")
    assert hosts.host(2)["lost"] is True
    hosts.restore(2)
    assert hosts.host(2)["lost"] is False
    running = hosts.docker(2).containers.list(filters={"label": "%s=%s" % (support_register.LABEL, unique)})
    assert len(running) == 1  # a host whose containers restart on boot
    support.wait_for(lambda: any(all(ch["Status"] == "passing" for ch in e["Checks"])
                                 for e in server.api("/v1/health/service/hosts-l-" + unique)), 60,
                     what="its instance passing again")
    support_register.remove_containers(hosts.docker(2), unique)


def _gone(pid):
    """No such process, or a zombie its parent has not reaped yet."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
