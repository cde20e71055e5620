"""Issue 10, "every trigger reaches a decision", through the whole production loop: the real
medic-register, an agent loading the consul.d medic-config renders (checks, service and the
keyprefix wake-up watch), compose. A graceful `docker stop`: medic-register deregisters the
container at its stop signal, the container runs on for its stop timeout, and its exit changes
nothing in Consul; the wake-up key medic-register then writes is what brings medic-heal back."""
import os
import subprocess
import time

import pytest

import support
from consul_medic.handlers.core import audit
from consul_medic.handlers.heal import recheck
from support_e2e import Stack

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def stack(consul_factory, demo_image, compose, tmp_path, unique):
    s = Stack(tmp_path, unique, consul_factory=consul_factory, reconcile="1h")  # no reconcile to help
    yield s
    s.stop()


def test_a_graceful_stop_is_healed_through_the_wake_up_key(stack):
    stack.start(replicas=3)
    stack.settled(3)
    before = len(stack.scale_actions())
    victim = stack.container_ids()[0]
    t0 = time.monotonic()
    subprocess.run(["docker", "stop", "-t", "4", victim], check=True, capture_output=True, timeout=60)
    stopped = time.monotonic() - t0
    support.wait_for(lambda: stack.passing() == 3 and len(stack.container_ids()) == 3, 60, 0.05,
                     what="3 passing again")
    healed = time.monotonic() - t0
    stack.settled(3, timeout=60)
    actions = stack.scale_actions()[before:]
    assert len(actions) == 1, stack.records()
    wakes = [r for r in audit.read(os.path.join(stack.dir, "register.jsonl")) if r.get("action") == "wake"]
    assert [w["container"] for w in wakes] == [victim_full(stack, victim)], wakes
    key = recheck.wake_key(None, stack.service)
    support.wait_for(lambda: not _kv(stack, key), 30, what="the wake-up key consumed by medic-heal")
    assert victim in stack.container_ids()  # compose restarted the stopped container
    print("docker stop -t 4: returned after %.1f s, 3 passing again after %.1f s" % (stopped, healed))


def victim_full(stack, short):
    out = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", short], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def _kv(stack, key):
    try:
        return stack.agent.api("/v1/kv/" + key)
    except Exception as e:
        if "404" in str(e):
            return None
        raise
