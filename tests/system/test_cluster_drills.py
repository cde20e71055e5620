"""Fault drills on a real 3-server Consul cluster (loopback, 127.0.0.2-4)."""
import time

import pytest

import support
from support_cluster import Cluster

pytestmark = [pytest.mark.consul, pytest.mark.slow]


@pytest.fixture
def cluster(consul_bin, unique):
    c = Cluster(tag="d" + unique[:4]).start()
    yield c
    c.stop()


def test_leader_killed_new_leader_elected(cluster, capsys):
    old, seconds, new = cluster.kill_leader()
    assert new is not old and new in cluster.alive_servers()
    with capsys.disabled():
        print("\n[drill] leader %s killed; %s elected after %.1f s (raft_multiplier 1)"
              % (old.node, new.node, seconds))


def test_client_node_loss_is_detected(cluster, capsys):
    monitor = cluster.add_client("monitor-" + cluster.tag)
    host2 = cluster.add_client("host2-" + cluster.tag, bind="127.0.0.5")
    host2.register_ttl("web-remote", "www.drill.test", port=8080, address="127.0.0.5")
    support.wait_for(lambda: monitor.api("/v1/health/service/www.drill.test?passing"), what="instance passing")
    host2.kill()
    t0 = time.monotonic()
    support.wait_for(lambda: not monitor.api("/v1/health/service/www.drill.test?passing"), timeout=60,
                     what="remote instance no longer passing")
    detect = time.monotonic() - t0
    serf = [c for c in monitor.api("/v1/health/node/" + host2.node) if c["CheckID"] == "serfHealth"]
    assert serf and serf[0]["Status"] == "critical"
    with capsys.disabled():
        print("\n[drill] killed client agent's node went critical after %.1f s (gossip failure detection)" % detect)
