"""medic-check SERVICE: the count check, pure parts on literal data, the rest on real agents."""
import http.server
import subprocess
import sys
import textwrap
import threading

import pytest
from hypothesis import given, settings as hsettings, strategies as st

import support
import support_check as sc
from consul_medic.handlers.check import __main__ as check
from consul_medic.handlers.consul import health
from consul_medic.handlers.core import options
from consul_medic.handlers.core.status import Status
from consul_medic.handlers.service import count

pytestmark = []


def inst(iid, node="n1", passing=True, failing=(), address="10.0.0.1", port=80):
    return health.Instance(iid, node, address, port, (), {}, passing,
                           tuple(health.Failing(c, c + " name", s) for c, s in failing))


# -- pure ----------------------------------------------------------------------
def test_compare_equal_more_fewer():
    assert count.compare(3, 3) == Status.OK
    assert count.compare(4, 3) == Status.WARNING
    assert count.compare(2, 3) == Status.CRITICAL
    assert count.compare(0, 1) == Status.CRITICAL


def test_evaluate_lines_exact():
    out = check.evaluate("www.example.com", 3, [
        inst("web-1"), inst("web-2", "n2", False, [("service:web-2", "critical")], "10.0.0.2", 8082),
        inst("web-3", "n3", False, [("_node_maintenance", "critical"), ("serfHealth", "critical")], "10.0.0.3", 8083)])
    assert out.status == Status.CRITICAL
    assert out.text.splitlines() == [
        "MEDIC CRITICAL - www.example.com 1/3 passing | passing=1;3;3:;0 desired=3;;;0",
        "- web-2 on n2 10.0.0.2:8082: service:web-2 critical",
        "- web-3 on n3 10.0.0.3:8083: _node_maintenance critical; serfHealth critical"]


def test_evaluate_ok_and_warning_first_lines():
    ok = check.evaluate("a", 2, [inst("1"), inst("2")])
    assert ok.text == "MEDIC OK - a 2/2 passing | passing=2;2;2:;0 desired=2;;;0"
    w = check.evaluate("a", 1, [inst("1"), inst("2")])
    assert (w.status, w.text) == (Status.WARNING, "MEDIC WARNING - a 2/1 passing | passing=2;1;1:;0 desired=1;;;0")
    z = check.evaluate("a", 1, [])
    assert (z.status, z.text) == (Status.CRITICAL, "MEDIC CRITICAL - a 0/1 passing | passing=0;1;1:;0 desired=1;;;0")


def test_output_far_under_4k_with_a_count_of_what_was_left_out():
    bad = [inst("web-%04d-%s" % (i, "x" * 60), "node-%d" % i, False, [("service:web-%d" % i, "critical")])
           for i in range(500)]
    out = check.evaluate("big", 600, bad)
    raw = out.text.encode()
    assert len(raw) <= count.MAX_OUTPUT < 4096
    lines = out.text.splitlines()
    listed = len(lines) - 2
    assert lines[-1] == "... and %d more not passing" % (500 - listed)
    assert listed > 5


def test_no_pipe_and_one_line_per_instance_even_with_hostile_ids():
    out = check.evaluate("a", 2, [inst("x|y\nz", "n|1", False, [("c|1", "critical")])])
    first, *rest = out.text.splitlines()
    assert first.count("|") == 1 and len(rest) == 1
    assert "|" not in rest[0] and rest[0] == "- x/y z on n/1 10.0.0.1:80: c/1 critical"


# -- argv: the fast parser agrees with the click command -------------------------
def test_fast_parse_declines_what_it_does_not_understand():
    for argv in (["--help"], [], ["a", "b"], ["--bogus", "a"], ["-vv", "a"], ["--specs"], ["a", "--all"],
                 ["--", "a"], ["--all=1"], ["--consul-timeout", "soon", "a"], ["--refresh", "x", "--all"],
                 ["--specs", "a", "--specs", "b", "x"]):
        assert check.parse(argv) is None, argv


values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=12) \
    .filter(lambda v: not v.startswith("-"))
service = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
numbers = st.floats(min_value=0.001, max_value=1e6, allow_nan=False).map(repr)


@st.composite
def argvs(draw):
    batch = draw(st.booleans())
    parts = [[draw(service)]] if not batch else [["--all"]]
    for flag, dest, takes, _ in options.OPTIONS:
        if draw(st.booleans()):
            v = draw(numbers if dest == "consul_timeout" else values)
            parts.append([flag + "=" + v] if draw(st.booleans()) else [flag, v])
    if draw(st.booleans()):
        parts.append(["-v"] * draw(st.integers(1, 3)))
    if batch and draw(st.booleans()):
        parts.append(["--ttl"])
    if batch and draw(st.booleans()):
        parts.append(["--refresh", draw(numbers)])
    order = draw(st.permutations(range(len(parts))))
    return [a for i in order for a in parts[i]]


@hsettings(max_examples=300, deadline=None)
@given(argvs())
def test_fast_parse_and_click_agree_on_valid_argv(argv):
    fast = check.parse(argv)
    assert fast is not None, argv
    ctx = check.command().make_context("medic-check", list(argv))
    params = dict(ctx.params)
    assert fast.pop("service") == params.pop("service")
    assert fast == params


# -- real agent ----------------------------------------------------------------
@pytest.fixture
def specs(tmp_path):
    return str(tmp_path / "specs")


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache")


def run(agent_or_addr, svc, specs, cache, *more):
    addr = agent_or_addr if isinstance(agent_or_addr, str) else agent_or_addr.addr
    return sc.run_check([svc, "--specs", specs, "--consul-addr", addr] + list(more), cache)


@pytest.mark.consul
@pytest.mark.parametrize("desired, code, word", [(3, 0, "OK"), (2, 1, "WARNING"), (4, 2, "CRITICAL")])
def test_exit_equal_more_fewer(consul_agent, unique, specs, cache, desired, code, word):
    svc = "cnt-%s.example.com" % unique
    for i in range(3):
        consul_agent.register_ttl("%s-%d" % (svc, i), svc, port=8000 + i)
    sc.write_spec(specs, svc, desired)
    r = run(consul_agent, svc, specs, cache)
    assert (r.returncode, r.stderr) == (code, "")
    d = desired
    assert r.stdout == "MEDIC %s - %s 3/%d passing | passing=3;%d;%d:;0 desired=%d;;;0\n" % (word, svc, d, d, d, d)


@pytest.mark.consul
def test_failing_instance_check_reduces_the_count_and_is_listed(consul_agent, unique, specs, cache):
    svc = "fail-" + unique
    for i in range(3):
        consul_agent.register_ttl("%s-%d" % (svc, i), svc, port=8000 + i)
    sc.write_spec(specs, svc, 3)
    assert run(consul_agent, svc, specs, cache).returncode == 0
    consul_agent.set_ttl(svc + "-1", "critical", "dead")
    consul_agent.set_ttl(svc + "-2", "warning", "slow")  # warning is not passing either
    r = run(consul_agent, svc, specs, cache)
    assert r.returncode == 2
    assert r.stdout.splitlines() == [
        "MEDIC CRITICAL - %s 1/3 passing | passing=1;3;3:;0 desired=3;;;0" % svc,
        "- %s-1 on %s 127.0.0.1:8001: service:%s-1 critical" % (svc, consul_agent.node, svc),
        "- %s-2 on %s 127.0.0.1:8002: service:%s-2 warning" % (svc, consul_agent.node, svc)]


class _Health(http.server.BaseHTTPRequestHandler):
    code = 200

    def do_GET(self):
        self.send_response(type(self).code)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


@pytest.mark.consul
def test_http_checked_instance_counts_while_its_endpoint_answers(consul_agent, unique, specs, cache):
    handler = type("H", (_Health,), {"code": 200})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    svc = "http-" + unique
    try:
        consul_agent.register(svc + "-1", svc, port=srv.server_port, check={
            "HTTP": "http://127.0.0.1:%d/health" % srv.server_port, "Interval": "1s", "Timeout": "1s"})
        sc.write_spec(specs, svc, 1)
        support.wait_for(lambda: run(consul_agent, svc, specs, cache).returncode == 0, 30, 0.3, "HTTP check passing")
        handler.code = 503
        r = support.wait_for(lambda: (lambda r: r if r.returncode == 2 else None)(run(consul_agent, svc, specs, cache)),
                             30, 0.3, "HTTP check critical")
        assert "0/1 passing" in r.stdout and "service:%s-1 critical" % svc in r.stdout
    finally:
        consul_agent.deregister(svc + "-1")
        srv.shutdown()


@pytest.mark.consul
def test_service_maintenance_reduces_the_count(consul_agent, unique, specs, cache):
    svc = "maint-" + unique
    for i in range(2):
        consul_agent.register_ttl("%s-%d" % (svc, i), svc, port=8000 + i)
    sc.write_spec(specs, svc, 2)
    assert run(consul_agent, svc, specs, cache).returncode == 0
    consul_agent.api("/v1/agent/service/maintenance/%s-0?enable=true&reason=test" % svc, "PUT")
    r = run(consul_agent, svc, specs, cache)
    assert r.returncode == 2 and "1/2 passing" in r.stdout
    assert "_service_maintenance:%s-0 critical" % svc in r.stdout


@pytest.mark.consul
def test_critical_node_check_and_node_maintenance_reduce_the_count(consul_factory, unique, specs, cache):
    agent = consul_factory()  # own agent: node-level state would disturb other tests
    svc = "node-" + unique
    for i in range(2):
        agent.register_ttl("%s-%d" % (svc, i), svc, port=8000 + i)
    sc.write_spec(specs, svc, 2)
    assert run(agent, svc, specs, cache).returncode == 0

    agent.api("/v1/agent/check/register", "PUT", {"ID": "disk", "Name": "disk", "TTL": "10m", "Status": "critical"})
    r = run(agent, svc, specs, cache)
    assert r.returncode == 2 and "0/2 passing" in r.stdout
    assert r.stdout.count(": disk critical") == 2
    agent.api("/v1/agent/check/pass/disk", "PUT")
    assert run(agent, svc, specs, cache).returncode == 0

    agent.api("/v1/agent/maintenance?enable=true&reason=test", "PUT")
    r = run(agent, svc, specs, cache)
    assert r.returncode == 2 and "0/2 passing" in r.stdout and "_node_maintenance critical" in r.stdout
    agent.api("/v1/agent/maintenance?enable=false", "PUT")
    assert run(agent, svc, specs, cache).returncode == 0


@pytest.mark.consul
def test_critical_count_check_on_medic_service_leaves_the_instances_healthy(consul_factory, unique, specs, cache):
    """The count check lives on service `medic` of the same agent: never a node check."""
    agent = consul_factory()
    svc = "own-" + unique
    for i in range(3):
        agent.register_ttl("%s-%d" % (svc, i), svc, port=8000 + i)
    sc.register_medic_ttl(agent, [svc])
    sc.write_spec(specs, svc, 5)
    r = run(agent, svc, specs, cache)
    assert r.returncode == 2
    agent.api("/v1/agent/check/fail/medic:%s?note=%s" % (svc, "under"), "PUT")
    checks = agent.api("/v1/agent/checks")
    assert checks["medic:" + svc]["Status"] == "critical" and checks["medic:" + svc]["ServiceID"] == "medic"
    passing = agent.api("/v1/health/service/%s?passing" % svc)
    assert sorted(e["Service"]["ID"] for e in passing) == ["%s-%d" % (svc, i) for i in range(3)]
    assert "3/5 passing" in run(agent, svc, specs, cache).stdout  # and the count does not feed on itself


@pytest.mark.consul
def test_unknown_for_missing_spec_invalid_spec_and_unreachable_consul(consul_agent, unique, specs, cache):
    svc = "unk-" + unique
    sc.write_spec(specs, "other-" + unique, 1)
    r = run(consul_agent, svc, specs, cache)
    assert (r.returncode, r.stdout) == (3, "MEDIC UNKNOWN - spec: %s: no spec declares service '%s'\n" % (specs, svc))

    r = run(consul_agent, svc, str(specs) + "-missing", cache)
    assert (r.returncode, r.stdout) == (3, "MEDIC UNKNOWN - spec: %s-missing: specs directory does not exist\n" % specs)

    bad = sc.write_spec(specs, svc, 0)
    r = run(consul_agent, svc, specs, cache)
    assert (r.returncode, r.stdout) == (3, "MEDIC UNKNOWN - spec: %s: $.instances: 0 is less than the minimum of 1\n" % bad)

    sc.write_spec(specs, svc, 1)
    port = support.free_port()
    r = run("http://127.0.0.1:%d" % port, svc, specs, cache)
    assert (r.returncode, r.stdout) == (
        3, "MEDIC UNKNOWN - consul: cannot connect to Consul at http://127.0.0.1:%d: Connection refused\n" % port)
    assert r.stderr == ""


@pytest.mark.parametrize("argv, line", [
    ([], "MEDIC UNKNOWN - usage: missing SERVICE (or --all)"),
    (["a", "b"], "MEDIC UNKNOWN - usage: Got unexpected extra argument (b)"),
    (["--bogus", "a"], "MEDIC UNKNOWN - usage: No such option '--bogus'. Did you mean '--verbose'?"),
    (["a", "--all"], "MEDIC UNKNOWN - usage: give SERVICE or --all, not both"),
    (["a", "--ttl"], "MEDIC UNKNOWN - usage: --ttl and --refresh go with --all"),
])
def test_usage_errors_are_unknown_with_one_line(tmp_path, argv, line):
    r = sc.run_check(argv, str(tmp_path))
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (3, [line], "")


@pytest.mark.consul
def test_one_stale_request_per_invocation(consul_agent, unique, specs, cache):
    svc = "req-" + unique
    consul_agent.register_ttl(svc + "-0", svc)
    sc.write_spec(specs, svc, 1)
    proxy = sc.CountingProxy("127.0.0.1", consul_agent.ports["http"])
    try:
        for _ in range(2):  # cold spec cache, then warm
            proxy.reset()
            r = run(proxy.addr, svc, specs, cache)
            assert r.returncode == 0, r.stdout
            assert proxy.requests == [("GET", "/v1/health/service/%s?stale" % svc)]
    finally:
        proxy.close()


HEAVY = ("click", "jsonschema", "requests", "consul", "docker", "dataclasses", "typing", "http.client")
PROBE = textwrap.dedent("""
    import sys
    from consul_medic.handlers.check import __main__ as check
    from consul_medic.handlers.core import runtime
    print(runtime.execute(check.command, check.fast, sys.argv[1:]).text)  # main() without its exit
    sys.stderr.write("LOADED=" + ",".join(m for m in %r if m in sys.modules))
""" % (HEAVY,))


def probe_modules(argv, cache):
    r = subprocess.run([sys.executable, "-c", PROBE] + argv, capture_output=True, text=True, timeout=60,
                       env=sc.check_env(cache), cwd=support.ROOT)
    return r, r.stderr.rpartition("LOADED=")[2].split(",") if "LOADED=" in r.stderr else None


@pytest.mark.consul
def test_fast_path_imports_nothing_heavy(consul_agent, unique, specs, cache):
    svc = "imp-" + unique
    consul_agent.register_ttl(svc + "-0", svc)
    sc.write_spec(specs, svc, 1)
    argv = [svc, "--specs", specs, "--consul-addr", consul_agent.addr]
    r, loaded = probe_modules(argv, cache)  # cold: validates, so jsonschema is expected
    assert r.stdout.startswith("MEDIC OK") and "jsonschema" in loaded
    for args in (argv, ["--all", "--ttl", "--specs", specs, "--consul-addr", consul_agent.addr]):
        r, loaded = probe_modules(args, cache)  # warm spec cache: the hot path
        assert r.stdout.startswith("MEDIC OK"), r.stdout
        assert loaded == [""], loaded
    r, loaded = probe_modules(["--bogus"], cache)  # control: the probe does see click when it is used
    assert r.stdout.startswith("MEDIC UNKNOWN - usage") and "click" in loaded
