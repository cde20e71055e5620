"""medic-drain on the multi-host testbed: 3 real engines, agents and registrars, traffic through nginx."""
import pytest

import support
import support_drain as sd
import support_rollout_traffic as srt

pytestmark = [pytest.mark.consul, pytest.mark.docker]


def test_drain_moves_everything_off_a_host_without_a_failed_request_and_undo_rebalances(consul_bin):
    support.require(srt.nginx_available(), "nginx (testbed/install.sh installs it)")
    support.require(srt.medic_lb_available(), "medic-lb in the venv")
    m = sd.measure_drain()
    assert m["exit"] == 0 and "safe to upgrade" in m["stdout"], m["stdout"]
    assert m["per_host"][1] == 0 and sum(m["per_host"].values()) == 3, m["per_host"]
    assert sorted(m["per_host"].values()) == [0, 1, 2]  # spread over the two others
    assert m["passing"] == 3 and m["maintenance"] is True and m["record"]["phase"] == "drained"
    assert m["undo_exit"] == 0, m["undo_stdout"]
    assert m["undo_per_host"] == {1: 1, 2: 1, 3: 1} and m["undo_maintenance"] is False
    assert m["undo_record"] is None and m["undo_passing"] == 3
    assert m["requests"] > 100 and m["failed"] == 0, (m["failures"], m["stdout"], m["undo_stdout"])
    print("drain: %s s to empty, %d requests, 0 failed" % (m["empty_s"], m["requests"]))
