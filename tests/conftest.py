"""Shared fixtures: real Consul agents and the real Docker engine (see support.py)."""
import os
import subprocess
import uuid

import pytest

import support


@pytest.fixture(scope="session")
def consul_bin():
    support.require(support.consul_available(), "the consul binary (run `make testbed`)")
    return "consul"


@pytest.fixture(scope="session")
def consul_agent(consul_bin):
    """One dev agent shared by a session; tests must use unique service names."""
    agent = support.ConsulAgent(node="medic-session").start()
    yield agent
    agent.stop()


@pytest.fixture
def consul_factory(consul_bin):
    """Start throwaway agents of your own: consul_factory(**ConsulAgent kwargs)."""
    agents = []

    def make(start=True, **kw):
        a = support.ConsulAgent(**kw)
        agents.append(a)
        return a.start() if start else a

    yield make
    for a in reversed(agents):
        a.stop()


@pytest.fixture(scope="session")
def docker_client():
    client = support.docker_client_or_none()
    support.require(client is not None, "a Docker engine that answers (run `make testbed`)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def compose(docker_client):
    support.require(support.compose_available(), "docker compose v2 (run `make testbed`)")
    return ["docker", "compose"]


@pytest.fixture(scope="session")
def demo_image(docker_client):
    try:
        docker_client.images.get(support.DEMO_IMAGE)
    except Exception:
        subprocess.run(["bash", os.path.join(support.ROOT, "testbed", "build-image.sh")], check=False)
    try:
        docker_client.images.get(support.DEMO_IMAGE)
    except Exception:
        support.require(False, "the demo image %s (run `make testbed`)" % support.DEMO_IMAGE)
    return support.DEMO_IMAGE


@pytest.fixture
def make_world(docker_client, compose, demo_image, tmp_path, unique):
    """make_world(agent, **kw): a medic-heal test world (support_heal.World), brought down afterwards."""
    import support_heal

    worlds = []

    def make(agent, **kw):
        w = support_heal.World(agent, docker_client, tmp_path, unique, **kw)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.down()


@pytest.fixture
def unique():
    """A short unique token for service, project and container names."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _docker0(request):
    """Docker tests need the first engine's default bridge; put it back if it vanished (support.py)."""
    if request.node.get_closest_marker("docker") is not None:
        did = support.ensure_docker0()
        if did:
            print("\n[testbed] %s" % did)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests that restart the shared Docker engine run last, so they disturb no other test."""
    items.sort(key=lambda item: item.get_closest_marker("engine_restart") is not None)
