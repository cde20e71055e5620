"""Proof with real traffic: requests through nginx (rendered by medic-lb --watch) never fail
while medic-rollout replaces a 3-instance service, nor when it rolls a never-passing image back."""
import pytest

import support
import support_rollout_traffic as srt

pytestmark = [pytest.mark.consul, pytest.mark.docker]


@pytest.fixture
def parts(docker_client, compose, demo_image, consul_bin):
    support.require(srt.nginx_available(), "nginx (testbed/install.sh installs it)")
    support.require(srt.medic_lb_available(), "medic-lb in the venv")


def test_rollout_under_traffic_fails_no_request(parts):
    m = srt.measure_rollout()
    assert m["exit"] == 0, m["stdout"]
    assert m["requests"] > 100 and m["failed"] == 0, (m["failures"], m["stdout"])
    assert m["passing"] == 3 and m["passing_images"] == [m["image"]] * 3, (m["containers"], m["stdout"])
    assert m["bodies"] >= 2  # the client saw the old page and the new one
    print(m["stdout"])
    print("rollout under traffic: %.1f s, %d requests, 0 failed (3 x (start+pass+1 s) = %.1f s)"
          % (m["duration_s"], m["requests"], m["target_s"]))


def test_never_passing_image_under_traffic_rolls_back_without_a_failed_request(parts):
    m = srt.measure_rollout(sick=True, deadline="6")
    assert m["exit"] == 2, m["stdout"]
    assert m["failed"] == 0, (m["failures"], m["stdout"])
    assert m["passing"] == 3 and m["passing_images"] == [m["old_image"]] * 3
