"""medic-status: desired vs live per service, read-only, exit like the check."""
import json

import pytest

import support
import support_heal as sh

pytestmark = [pytest.mark.consul, pytest.mark.docker]


@pytest.fixture
def world(consul_agent, docker_client, compose, demo_image, tmp_path, unique):
    w = sh.World(consul_agent, docker_client, tmp_path, unique, instances=2)
    yield w
    w.down()


def status(world, *args):
    return support.run_medic("medic-status", ["--specs", world.specs, "--audit-log", world.audit, *args],
                             env=world.env())


def test_healthy_then_short_then_healed(world):
    world.up(2)
    world.register()
    world.wait_passing(2)
    r = status(world, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = json.loads(r.stdout)["services"]
    assert (row["service"], row["desired"], row["passing"], row["pending"], row["state"], row["circuit"]) == \
        (world.service, 2, 2, 0, "OK", "closed")

    world.running()[0].kill()
    support.wait_for(lambda: world.passing() == 1, 30, what="the loss seen in Consul")
    r = status(world)
    assert r.returncode == 2, r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].split()[:6] == ["ENV", "SERVICE", "DESIRED", "PASSING", "PENDING", "STATE"]
    assert lines[1].split()[:6] == ["default", world.service, "2", "1", "0", "CRITICAL"]

    h = world.heal("--service", world.service)
    assert h.returncode == 0, h.stdout
    r = status(world, "--json")
    (row,) = json.loads(r.stdout)["services"]
    assert row["last"].startswith("heal: ") and row["last_action"]["result"] == "started"
    assert row["passing"] + row["pending"] == 2  # the restarted container is pending until it passes


def test_unreachable_consul_is_unknown_with_reason(world):
    r = support.run_medic("medic-status", ["--specs", world.specs, "--consul-addr",
                                           "http://127.0.0.1:%d" % support.free_port(), "--no-engine"],
                          env=world.env())
    assert r.returncode == 3
    assert "UNKNOWN" in r.stdout.splitlines()[1]
    assert "cannot connect to Consul" in r.stdout


def test_bad_spec_is_one_line_unknown(tmp_path):
    (tmp_path / "bad.json").write_text('{"service": "x"}')
    r = support.run_medic("medic-status", ["--specs", str(tmp_path)])
    assert r.returncode == 3
    assert r.stdout.splitlines() == ["MEDIC UNKNOWN - spec: %s: $: 'instances' is a required property"
                                     % (tmp_path / "bad.json")]
