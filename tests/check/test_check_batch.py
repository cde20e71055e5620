"""medic-check --all [--ttl]: every spec in one process, a constant number of reads."""

import pytest

import support
import support_check as sc
from consul_medic.handlers.check import batch
from consul_medic.handlers.consul import lighthttp
from consul_medic.handlers.core.status import Outcome, Status

NODES = [
    {"Node": "n1", "Address": "10.0.0.1",
     "Services": [{"ID": "a1", "Service": "A", "Port": 1, "Address": ""},
                  {"ID": "b1", "Service": "b", "Port": 2, "Address": "10.9.9.9"},
                  {"ID": "medic", "Service": "medic", "Port": 0}],
     "Checks": [{"CheckID": "serfHealth", "ServiceID": "", "Status": "passing"},
                {"CheckID": "service:a1", "ServiceID": "a1", "Status": "passing"},
                {"CheckID": "service:b1", "ServiceID": "b1", "Status": "critical"},
                {"CheckID": "medic:A", "ServiceID": "medic", "Status": "critical"}]},
    {"Node": "n2", "Address": "10.0.0.2",
     "Services": [{"ID": "a2", "Service": "A", "Port": 1}],
     "Checks": [{"CheckID": "_node_maintenance", "ServiceID": "", "Status": "critical"},
                {"CheckID": "service:a2", "ServiceID": "a2", "Status": "passing"}]},
    {"Node": "n3", "Address": "10.0.0.3", "Services": None, "Checks": []},
]


def test_node_dump_becomes_health_entries_per_service():
    from consul_medic.handlers.consul import health
    grouped = batch.entries_by_service(NODES, {"a", "b"})
    assert sorted(grouped) == ["a", "b"]
    a = health.parse_instances(grouped["a"], "A")
    assert [(i.id, i.node, i.address, i.passing) for i in a] == [("a1", "n1", "10.0.0.1", True),
                                                                  ("a2", "n2", "10.0.0.2", False)]
    assert [f.check_id for f in a[1].failing] == ["_node_maintenance"]  # node checks apply to every instance
    b = health.parse_instances(grouped["b"], "b")
    assert [(i.id, i.address, i.passing) for i in b] == [("b1", "10.9.9.9", False)]
    assert sorted(batch.entries_by_service(NODES)) == ["a", "b", "medic"]


def test_node_dump_of_unexpected_shape_is_a_consul_error():
    from consul_medic.handlers.core.errors import ConsulError
    for bad in ({"x": 1}, [{"Services": [{"ID": "x"}]}], [{"Node": "n", "Services": [{"Service": "a"}]}]):
        with pytest.raises(ConsulError):
            batch.entries_by_service(bad)


OK = Outcome(Status.OK, "MEDIC OK - a 1/1 passing | passing=1;;;0 desired=1;;;0")
CRIT = Outcome(Status.CRITICAL, "MEDIC CRITICAL - b 0/1 passing | passing=0;;;0 desired=1;;;0")
UNK = Outcome(Status.UNKNOWN, "MEDIC UNKNOWN - spec: c.json: bad")


def test_plan_writes_only_changes_and_due_refreshes():
    results = {"a": OK, "b": CRIT, "c": UNK, "d": OK}
    agent = {"medic:a": ("passing", OK.text), "medic:b": ("passing", "old"), "medic:c": ("critical", UNK.text)}
    last = {"medic:a": 100.0, "medic:b": 100.0, "medic:c": 100.0}
    # d has no TTL check on the agent: never written; c unchanged and fresh; b changed
    assert batch.plan_writes(results, agent, last, 110.0, refresh=20) == [("medic:b", "fail", CRIT.text)]
    # refresh due for the unchanged ones
    assert [w[0] for w in batch.plan_writes(results, agent, last, 120.0, refresh=20)] == ["medic:a", "medic:b", "medic:c"]
    # no refresh given: always write; unknown is written as fail
    assert batch.plan_writes({"c": UNK}, agent, last, 101.0) == [("medic:c", "fail", UNK.text)]
    # never written before (no state): written
    assert batch.plan_writes({"a": OK}, agent, {}, 101.0, refresh=20) == [("medic:a", "pass", OK.text)]


def test_summary_is_the_worst_state_with_counts():
    out = batch.summarise({"a": OK, "b": CRIT, "c": UNK}, written=2, no_ttl=["c"])
    assert out.status == Status.UNKNOWN
    assert out.text.splitlines() == [
        "MEDIC UNKNOWN - 3 services: 1 ok, 0 warning, 1 critical, 1 unknown | services=3;;;0 ok=1;;;0 "
        "warning=0;;;0 critical=1;;;0 unknown=1;;;0 written=2;;;0",
        "MEDIC UNKNOWN - spec: c.json: bad",
        "MEDIC CRITICAL - b 0/1 passing",
        "no TTL check on the agent for: c"]
    assert batch.summarise({"a": OK}, 0).status == Status.OK


class FakeConn:
    """I/O passed in: answers the node dump with a status, health with literal entries."""

    def __init__(self, nodes_status):
        self.nodes_status, self.calls = nodes_status, []

    def request(self, method, path, params=None, body=None):
        self.calls.append(path)
        return lighthttp.Response(self.nodes_status, {}, b"[]")

    def get_json(self, path, params=None):
        self.calls.append(path)
        return 1, [{"Node": {"Node": "n"}, "Service": {"ID": "x", "Service": "s"}, "Checks": []}], {}


def test_observe_falls_back_to_one_health_read_per_service_when_the_dump_is_missing():
    conn = FakeConn(404)
    entries, fallback = batch.observe(conn, ["s", "t"])
    assert fallback and conn.calls == [batch.NODES_PATH, "/v1/health/service/s", "/v1/health/service/t"]
    conn = FakeConn(200)
    entries, fallback = batch.observe(conn, ["s", "t"])
    assert not fallback and conn.calls == [batch.NODES_PATH] and entries == {"s": [], "t": []}


# -- real agent ------------------------------------------------------------------
def perf(stdout):
    first = stdout.splitlines()[0]
    out = {}
    for kv in first.split(" | ", 1)[1].split():
        k, _, v = kv.partition("=")
        out[k] = int(v.split(";")[0])
    return out


@pytest.mark.consul
def test_batch_sets_ttl_checks_with_constant_reads(consul_factory, tmp_path, unique):
    agent = consul_factory()
    specs, cache = str(tmp_path / "specs"), str(tmp_path / "cache")
    names = ["svc%02d-%s" % (i, unique) for i in range(12)]
    for i, name in enumerate(names):
        for j in range(2):
            agent.register_ttl("%s-%d" % (name, j), name, port=9000 + j)
        sc.write_spec(specs, name, 2 if i else 3)  # names[0] is short of one
    sc.register_medic_ttl(agent, names[:10])  # two services have no TTL check: evaluated, not written
    proxy = sc.CountingProxy("127.0.0.1", agent.ports["http"])
    try:
        args = ["--all", "--ttl", "--refresh", "3600", "--specs", specs, "--consul-addr", proxy.addr]
        r = sc.run_check(args, cache)
        assert r.returncode == 2, r.stdout
        assert perf(r.stdout) == {"services": 12, "ok": 11, "warning": 0, "critical": 1, "unknown": 0, "written": 10}
        assert r.stdout.splitlines()[1] == "MEDIC CRITICAL - %s 2/3 passing" % names[0]
        assert r.stdout.splitlines()[2] == "no TTL check on the agent for: %s, %s" % (names[10], names[11])
        reads = [p for m, p in proxy.requests if m == "GET"]
        assert len(reads) == 2 and reads[1] == "/v1/internal/ui/nodes?stale", reads
        checks = agent.api("/v1/agent/checks")
        assert checks["medic:" + names[0]]["Status"] == "critical"
        assert checks["medic:" + names[0]]["Output"].startswith("MEDIC CRITICAL - %s 2/3 passing |" % names[0])
        assert all(checks["medic:" + n]["Status"] == "passing" for n in names[1:10])

        proxy.reset()  # nothing changed: reads only
        r = sc.run_check(args, cache)
        # reads only; names[0] is short, so one ACL probe (POST /v1/internal/acl/authorize, handlers/consul/acl.py)
        assert perf(r.stdout)["written"] == 0 and [m for m, _ in proxy.requests] == ["GET", "GET", "POST"]

        agent.set_ttl(names[3] + "-1", "critical")  # one change: one write
        proxy.reset()
        r = sc.run_check(args, cache)
        assert perf(r.stdout)["written"] == 1
        assert [(m, p.split("?")[0]) for m, p in proxy.requests if m == "PUT"] == \
            [("PUT", "/v1/agent/check/update/medic%%3A%s" % names[3])]
        assert agent.api("/v1/agent/checks")["medic:" + names[3]]["Status"] == "critical"

        r = sc.run_check(["--all", "--ttl", "--refresh", "0", "--specs", specs, "--consul-addr", proxy.addr], cache)
        assert perf(r.stdout)["written"] == 10  # refresh due: every TTL check rewritten
    finally:
        proxy.close()


@pytest.mark.consul
def test_batch_bad_spec_fails_only_itself(consul_factory, tmp_path, unique):
    agent = consul_factory()
    specs, cache = str(tmp_path / "specs"), str(tmp_path / "cache")
    good, bad = "good-" + unique, "bad-" + unique
    agent.register_ttl(good + "-0", good)
    sc.write_spec(specs, good, 1)
    badpath = sc.write_spec(specs, bad, 0)
    sc.register_medic_ttl(agent, [good, bad])
    r = sc.run_check(["--all", "--ttl", "--specs", specs, "--consul-addr", agent.addr], cache)
    assert r.returncode == 3
    line = "MEDIC UNKNOWN - spec: %s: $.instances: 0 is less than the minimum of 1" % badpath
    assert r.stdout.splitlines()[1] == line
    checks = agent.api("/v1/agent/checks")
    assert checks["medic:" + good]["Status"] == "passing"
    assert (checks["medic:" + bad]["Status"], checks["medic:" + bad]["Output"]) == ("critical", line)


@pytest.mark.consul
def test_batch_with_consul_unreachable_is_unknown(tmp_path, unique):
    specs, cache = str(tmp_path / "specs"), str(tmp_path / "cache")
    sc.write_spec(specs, "x-" + unique, 1)
    port = support.free_port()
    r = sc.run_check(["--all", "--ttl", "--specs", specs, "--consul-addr", "127.0.0.1:%d" % port], cache)
    assert (r.returncode, r.stdout) == (
        3, "MEDIC UNKNOWN - consul: cannot connect to Consul at http://127.0.0.1:%d: Connection refused\n" % port)
    r = sc.run_check(["--all", "--specs", specs, "--consul-addr", "127.0.0.1:%d" % port], cache)
    assert r.returncode == 3 and "1 unknown" in r.stdout.splitlines()[0]
    assert "cannot connect to Consul" in r.stdout.splitlines()[1]
