"""A crash-looping image (DEMO_CRASH=1): backoff followed, circuit opens after N failed
attempts, an alert is handed to medic-notify (audited), no action until --reset."""
import time

import pytest

import support_heal as sh
from consul_medic.handlers.service import history
from consul_medic.handlers.consul import settings

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]

CRASH_COMPOSE = """\
services:
  web:
    image: ${MEDIC_DEMO_IMAGE:-medic-demo:latest}
    ports:
      - "127.0.0.1::80"
    environment:
      DEMO_CRASH: "1"
"""


def test_crash_loop_backs_off_then_opens_the_circuit(consul_agent, docker_client, compose, demo_image, tmp_path,
                                                      unique):
    cfile = tmp_path / "crash-compose.yml"
    cfile.write_text(CRASH_COMPOSE)
    # backoff 4 s then 8 s: longer than one run takes on a busy machine, so a run sees it (and, being the
    # only service of its run, waits for it under the lock: the hold is recorded, then the next attempt)
    heal = {"grace": "3s", "cooldown": "200ms", "backoff_base": "4s", "backoff_max": "8s", "max_attempts": 3,
            "window": "10m"}
    w = sh.World(consul_agent, docker_client, tmp_path, unique, instances=2, heal=heal, file=str(cfile))
    try:
        codes = []
        deadline = time.time() + 60
        while time.time() < deadline:
            r = w.heal("--service", w.service)
            codes.append(r.returncode)
            assert r.returncode in (0, 1), r.stdout + r.stderr
            if "circuit open" in r.stdout:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the circuit never opened: %s" % [x["reason"] for x in w.records()])

        client = settings.make_client(settings.resolve(consul_agent.addr))
        store = history.Store(client, None, w.service)
        h = store.load()
        acts = [a for a in h.actions]
        assert len(acts) == 3 and [a.result for a in acts] == ["failed"] * 3
        gaps = [b.time - a.time for a, b in zip(acts, acts[1:])]
        assert gaps[0] >= 4.0 and gaps[1] >= 8.0, gaps  # backoff 4 s, then 8 s (capped)
        assert h.circuit is not None
        assert client.kv.get(history.circuit_key(None, w.service))[1] is not None  # the marker for humans
        assert len(w.scale_actions()) == 3
        reasons = [r["reason"] for r in w.records("hold")]
        assert any(x.startswith("backoff:") for x in reasons), reasons
        assert any(x.startswith("circuit opens") for x in reasons), reasons

        from consul_medic.handlers.core import audit
        notes = [r for r in audit.read(w.audit) if r.get("kind") == "notify"]
        kinds = [n["event"]["kind"] for n in notes]
        assert kinds.count("circuit_open") == 1 and kinds.count("heal_failed") == 3, kinds
        assert all(n["handed_over"] for n in notes)

        # circuit open: no action however often we run (exit 1: healing is suspended)
        for _ in range(5):
            r = w.heal("--service", w.service)
            assert r.returncode == 1 and "circuit open" in r.stdout and "--reset" in r.stdout, r.stdout
        time.sleep(2.5)
        r = w.heal("--service", w.service)
        assert r.returncode == 1 and len(w.scale_actions()) == 3

        r = w.heal("--reset", w.service)
        assert r.returncode == 0, r.stdout
        assert client.kv.get(history.circuit_key(None, w.service))[1] is None
        r = w.heal("--service", w.service)
        assert r.returncode == 0 and "heal(2)" in r.stdout, r.stdout
        assert len(w.scale_actions()) == 4
    finally:
        w.down()
