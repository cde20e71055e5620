"""test/live as two Consul clusters driven by the same executables and spec (--env / MEDIC_ENV)."""
import json

import pytest

import support

pytestmark = pytest.mark.consul


@pytest.fixture
def two_clusters(consul_factory, tmp_path, unique):
    """-> (test agent, live agent, service, specs dir): one spec, `instances` 3 (live) and 1 (test)."""
    test_dc = consul_factory(node="test-" + unique)
    live_dc = consul_factory(node="live-" + unique)
    svc = "www-%s.example.com" % unique
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / (svc + ".json")).write_text(json.dumps({
        "service": svc, "instances": 3,
        "scale": {"driver": "swarm", "service": "web"},
        "environments": {"test": {"consul_addr": test_dc.addr, "instances": 1},
                         "live": {"consul_addr": live_dc.addr}}}))
    return test_dc, live_dc, svc, specs


def test_env_selects_the_cluster_and_the_overrides(two_clusters, tmp_path, unique):
    test_dc, live_dc, svc, specs = two_clusters
    test_dc.register_ttl("t1", svc)
    for i in range(3):
        live_dc.register_ttl("l%d" % i, svc)
    live_dc.set_ttl("l2", "critical")

    def check(*args, **env):
        return support.run_medic("medic-check", [svc, "--specs", str(specs), *args],
                                 env=support.medic_env(MEDIC_CACHE_DIR=str(tmp_path / "cache"), **env))

    r = check("--env", "test")
    assert r.returncode == 0 and r.stdout.startswith("MEDIC OK - %s 1/1 passing" % svc), r.stdout
    r = check(MEDIC_ENV="live")
    assert r.returncode == 2 and r.stdout.startswith("MEDIC CRITICAL - %s 2/3 passing" % svc), r.stdout
    assert "- l2 on live-%s" % unique in r.stdout
    # the ambient CONSUL_HTTP_ADDR does not send a live check to the test cluster: the spec's env wins
    r = check("--env", "live", CONSUL_HTTP_ADDR=test_dc.addr)
    assert r.returncode == 2 and "2/3 passing" in r.stdout
    # an explicit --consul-addr wins over everything
    r = check("--env", "live", "--consul-addr", test_dc.addr)
    assert r.returncode == 2 and r.stdout.startswith("MEDIC CRITICAL - %s 1/3 passing" % svc), r.stdout


def test_status_shows_both_environments(two_clusters, tmp_path):
    test_dc, live_dc, svc, specs = two_clusters
    test_dc.register_ttl("t1", svc)
    live_dc.register_ttl("l1", svc)
    r = support.run_medic("medic-status", ["--specs", str(specs), "--all-envs", "--no-engine", "--json",
                                           "--audit-log", str(tmp_path / "a.jsonl")])
    rows = {row["env"]: row for row in json.loads(r.stdout)["services"]}
    assert (rows["test"]["desired"], rows["test"]["passing"], rows["test"]["state"]) == (1, 1, "OK")
    assert (rows["live"]["desired"], rows["live"]["passing"], rows["live"]["state"]) == (3, 1, "CRITICAL")
    assert r.returncode == 2
