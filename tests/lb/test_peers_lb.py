"""The peers' load-balancer pains replayed against medic-lb (docs/peers.md): consul-template,
fabio and traefik's Consul catalog provider. Real Consul agents, real nginx, HAProxy and
redis-server processes on loopback; instances are TTL-checked so the test sets their health."""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import support
import support_check
import support_lb
from consul_medic.handlers.core import audit
from consul_medic.handlers.lb import lb_render
from consul_medic.handlers.service import instances as lb_view
from test_lb import inst, upstreams
from test_lb_real import medic_lb


@pytest.fixture
def nginx_bin():
    support.require(support_lb.nginx_available(), "nginx (run `make testbed`)")


@pytest.fixture
def procs():
    started = []
    yield started
    for p in reversed(started):
        p.stop()


class Proc:
    """A process of this test's own, stopped (process group) at teardown."""

    def __init__(self, argv, log, **kw):
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, **kw)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def redis_server(tmp, procs):
    support.require(shutil.which("redis-server") is not None, "redis-server (run `make testbed`)")
    port = support.free_port()
    procs.append(Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", str(tmp)], tmp / ("redis-%d.out" % port)))
    support.wait_for(lambda: redis_cmd(port, "PING") == "+PONG", 10, what="redis-server answers")
    return port


def redis_cmd(port, *words, timeout=2):
    """One RESP command on a fresh connection -> the first reply line, or '' when it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(("*%d\r\n" % len(words) + "".join("$%d\r\n%s\r\n" % (len(w), w) for w in words)).encode())
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.decode(errors="replace").split("\r\n")[0]
    except OSError:
        return ""


def stream_vars(tmp, listen):
    return ["--var", "listen=%s" % listen, "--var", "pid=%s" % (tmp / "nginx.pid"), "--var", "error_log=stderr"]


# -- the known gap: nginx-stream with `--var listen=IP:PORT` ---------------------------------------

def test_nginx_stream_and_haproxy_tcp_listen_on_ip_port(tmp_path):
    """`--var listen=127.0.0.1:6379` rendered `listen 0;` in nginx-stream (and `bind :0` in HAProxy tcp)."""
    view = {"a-redis": [inst("m", 7001, tags=["master"], address="127.0.0.1")],
            "b-redis": [inst("m2", 7002, tags=["master"], address="127.0.0.1")]}
    p = lb_render.plan(view, {})
    text = lb_render.render(lb_render.load_template("nginx-stream"), p, {"listen": "127.0.0.1:6379"})
    assert [ln.strip() for ln in text.splitlines() if ln.strip().startswith("listen")] == [
        "listen 127.0.0.1:6379;", "listen 127.0.0.1:6380;"]
    text = lb_render.render(lb_render.load_template("nginx-stream"), p,
                            {"listen": "6379", "listen_b_redis": "[::1]:7379"})
    assert [ln.strip() for ln in text.splitlines() if ln.strip().startswith("listen")] == [
        "listen 6379;", "listen [::1]:7379;"]
    text = lb_render.render(lb_render.load_template("haproxy"), p, {"mode": "tcp", "listen": "127.0.0.1:6379"})
    assert [ln.strip() for ln in text.splitlines() if ln.strip().startswith("bind")] == [
        "bind 127.0.0.1:6379", "bind 127.0.0.1:6380"]
    for bad in ("127.0.0.1:", "six", "127.0.0.1:65535x", "::1:6379", "65535"):
        with pytest.raises(Exception, match="listen"):
            lb_render.render(lb_render.load_template("nginx-stream"), p, {"listen": bad})


def test_nginx_stream_on_ip_port_passes_nginx_t_and_carries_redis(consul_factory, tmp_path, nginx_bin, procs):
    agent = consul_factory()
    rport = redis_server(tmp_path, procs)
    svc = "redis-peers-%d" % rport
    agent.register_ttl("r1-%d" % rport, svc, port=rport, tags=["master"])
    listen_port, out = support.free_port(), tmp_path / "nginx.conf"
    ngx = support_lb.Nginx(tmp_path, out)
    r = medic_lb(agent, tmp_path, "--once", "--template", "nginx-stream", "--out", str(out), "--service", svc,
                 *stream_vars(tmp_path, "127.0.0.1:%d" % listen_port), "--check-cmd", ngx.check_cmd())
    assert r.returncode == 0, r.stdout + r.stderr + (out.read_text() if out.exists() else "")
    assert "listen 127.0.0.1:%d;" % listen_port in out.read_text()
    procs.append(ngx.start())
    support.wait_for(lambda: redis_cmd(listen_port, "SET", "k", "through-nginx") == "+OK", 10,
                     what="a write through nginx-stream on 127.0.0.1:%d" % listen_port)
    assert redis_cmd(rport, "GET", "k").startswith("$13")


# -- fabio #338 (several checks, one critical) and traefik #3722 (node serfHealth) -----------------

def test_one_critical_check_among_several_or_a_critical_node_check_takes_the_instance_out(consul_factory, tmp_path):
    agent = consul_factory()
    svc = "multi-check-%d" % support.free_port()
    agent.register_ttl("a", svc, port=9001)
    agent.register_ttl("b", svc, port=9002)
    out = tmp_path / "lb.conf"
    args = ["--once", "--template", "nginx-http", "--out", str(out), "--service", svc]
    assert medic_lb(agent, tmp_path, *args).returncode == 0
    ident = lb_render.ident(svc)
    assert len(upstreams(out.read_text())[ident]) == 2
    # a second check of instance a (its own TTL) goes critical; the first one stays passing
    agent.api("/v1/agent/check/register", "PUT", {"ID": "a-db", "Name": "a's database", "ServiceID": "a",
                                                  "TTL": "10m", "Status": "critical"})
    r = medic_lb(agent, tmp_path, *args)
    assert r.returncode == 0, r.stdout
    assert [s.split("#")[1].strip() for s in upstreams(out.read_text())[ident]] == ["b"]
    # the node's own check (as serfHealth failing) takes every instance of that node out: none
    # passes, so the last good servers stay (never an empty upstream) and the run says so
    agent.api("/v1/agent/check/register", "PUT", {"ID": "node-disk", "Name": "node disk", "TTL": "10m",
                                                  "Status": "critical"})
    r = medic_lb(agent, tmp_path, *args)
    assert r.returncode == 1 and "no passing instance" in r.stdout, r.stdout
    assert [s.split("#")[1].strip() for s in upstreams(out.read_text())[ident]] == ["b"]
    assert "LAST GOOD" in out.read_text()
    agent.api("/v1/agent/check/pass/node-disk", "PUT")
    agent.api("/v1/agent/check/pass/a-db", "PUT")
    assert medic_lb(agent, tmp_path, *args).returncode == 0
    assert len(upstreams(out.read_text())[ident]) == 2


def test_the_view_needs_every_check_passing_serf_health_included():
    """Pure: `serfHealth` critical with a passing service check is not passing (traefik #3722)."""
    entry = {"Service": {"ID": "x", "Port": 1, "Address": "10.0.0.1", "Tags": []}, "Node": {"Node": "n1"},
             "Checks": [{"CheckID": "serfHealth", "Status": "critical"},
                        {"CheckID": "service:x", "Status": "passing"}]}
    assert lb_view.instances("s", [entry])[0].passing is False
    entry["Checks"][0]["Status"] = "warning"
    assert lb_view.instances("s", [entry])[0].passing is False


# -- consul-template #870 / #1492: a missing dependency never blocks silently ----------------------

def test_a_service_missing_from_consul_is_said_and_never_blocks(consul_factory, tmp_path):
    agent = consul_factory()
    svc, gone = "present-%d" % support.free_port(), "never-registered-%d" % support.free_port()
    agent.register_ttl("p1", svc, port=9100)
    out = tmp_path / "lb.conf"
    t0 = time.monotonic()
    r = medic_lb(agent, tmp_path, "--once", "--template", "nginx-http", "--out", str(out),
                 "--service", svc, "--service", gone)
    took = time.monotonic() - t0
    assert took < 15, took
    assert r.returncode == 1, r.stdout
    assert "%s has no passing instance and no last good servers: left out" % gone in r.stdout
    assert lb_render.ident(svc) in upstreams(out.read_text())
    assert lb_render.ident(gone) not in out.read_text()
    # a template that asks for something that does not exist: one line, exit 3, nothing written
    tpl = tmp_path / "custom.j2"
    tpl.write_text("{{ vars.backend_port }}\n")
    before = out.read_text()
    r = medic_lb(agent, tmp_path, "--once", "--template", str(tpl), "--out", str(out), "--service", svc)
    assert r.returncode == 3 and "backend_port" in r.stdout and "--var" in r.stdout, r.stdout
    assert out.read_text() == before


# -- consul-template #1057/#442/#379 (reload storms), #742/#1814 (quiescence), #830/#392 (load) -----

def test_a_burst_over_many_services_is_one_render_one_reload_and_constant_queries(consul_factory, tmp_path):
    """Twenty services change within a moment: one reload, a few on a loaded machine (the --wait
    quiescence holds over all of them). An unrelated service flapping renders an unchanged file: no reload. The watch holds two
    blocking queries whatever the number of services (consul-template: one per dependency)."""
    agent = consul_factory()
    token = "burst%d" % support.free_port()
    names = ["%s-s%02d" % (token, i) for i in range(20)]
    for n in names:
        agent.register_ttl(n + "-a", n, port=9200)
    agent.register_ttl("unrelated-" + token, "zz-unrelated-" + token, port=9300)
    proxy = support_check.CountingProxy("127.0.0.1", agent.ports["http"])
    out, reloads = tmp_path / "lb.conf", tmp_path / "reloads"
    reload_cmd = "sh -c 'echo reload >> %s'" % reloads
    env = support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "audit.jsonl"), MEDIC_NOTIFY="off")
    watcher = subprocess.Popen([os.path.join(support.BIN, "medic-lb"), "--consul-addr", proxy.addr, "--watch",
                                "--wait", "0.5s:3s", "--template", "nginx-http", "--out", str(out),
                                "--prefix", token + "-", "--reload-cmd", reload_cmd], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        support.wait_for(lambda: out.exists() and len(upstreams(out.read_text())) == 20, 20, what="first render")
        time.sleep(1.0)
        n_reloads = lambda: len(reloads.read_text().splitlines()) if reloads.exists() else 0  # noqa: E731
        first = n_reloads()
        proxy.reset()
        for n in names:                          # the burst: a second instance for every service
            agent.register_ttl(n + "-b", n, port=9201)
        support.wait_for(lambda: out.read_text().count(":9201;") == 20, 20, what="the burst rendered")
        time.sleep(1.5)
        burst_reloads = n_reloads() - first
        health_reads = [p for m, p in proxy.requests if p.startswith("/v1/health/service/")]
        blocking = {p.split("?")[0] for m, p in proxy.requests if "index=" in p}
        renders = len(health_reads) // 20
        assert 1 <= burst_reloads <= 3, burst_reloads        # twenty changes, not twenty reloads
        assert len(health_reads) == 20 * renders and renders <= 4, len(health_reads)
        assert blocking <= {"/v1/catalog/services", "/v1/health/state/any"}, blocking
        before = n_reloads()
        for i in range(6):                       # an unrelated service flaps: renders, never reloads
            agent.set_ttl("unrelated-" + token, "critical" if i % 2 == 0 else "passing")
            time.sleep(0.3)
        time.sleep(1.5)
        assert n_reloads() == before
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        output, _ = watcher.communicate(timeout=20)
        proxy.close()
    assert watcher.returncode == 0, output
    records = [x for x in audit.read(str(tmp_path / "audit.jsonl")) if x.get("kind") == "lb"]
    assert any(x.get("action") == "unchanged" for x in records), records[-3:]


# -- fabio #481 / #861: routes that stop updating; routes dropped while the agent is away ----------

def test_the_watch_keeps_the_file_while_the_agent_is_down_and_follows_it_after_a_restart(consul_factory, tmp_path):
    agent = consul_factory()
    svc = "restart-%d" % support.free_port()
    agent.register_ttl("r1", svc, port=9401)
    out = tmp_path / "lb.conf"
    watcher = medic_lb(agent, tmp_path, "--watch", "--wait", "50ms:500ms", "--template", "nginx-http",
                       "--out", str(out), "--service", svc, popen=True)
    try:
        support.wait_for(lambda: out.exists() and ":9401;" in out.read_text(), 20, what="first render")
        rendered = out.read_text()
        agent.kill()
        time.sleep(2.0)
        assert out.read_text() == rendered           # Consul away: the file is untouched
        agent.start()                                # same ports; a dev agent comes back empty
        agent.register_ttl("r2", svc, port=9402)
        support.wait_for(lambda: ":9402;" in out.read_text() and ":9401;" not in out.read_text(), 30,
                         what="the watch follows the restarted agent")
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        output, _ = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, output
    assert "UNKNOWN" in output                      # the outage was said, not silent


# -- consul-alerts #32 (as a daemon): Consul unreachable at start is waited for, not an exit -------

def test_the_watch_started_before_consul_waits_for_it(consul_factory, tmp_path):
    """Consul comes up already holding the service (its own config) and nothing changes after:
    the watch must still render once Consul answers."""
    import json
    agent = consul_factory(start=False)
    svc = "late-%d" % support.free_port()
    with open(os.path.join(agent.config_dir, "20-service.json"), "w") as f:
        json.dump({"service": {"id": "l1", "name": svc, "port": 9501, "address": "127.0.0.1"}}, f)
    out = tmp_path / "lb.conf"
    watcher = medic_lb(agent, tmp_path, "--watch", "--wait", "50ms:500ms", "--template", "nginx-http",
                       "--out", str(out), "--service", svc, popen=True)
    try:
        time.sleep(1.5)
        assert watcher.poll() is None, watcher.stdout.read()
        agent.start()
        support.wait_for(lambda: out.exists() and ":9501;" in out.read_text(), 30, what="rendered once Consul is up")
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        output, _ = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, output


# -- traefik: tags that hold commas; fabio #558: thousands of services ----------------------------

def test_a_tag_with_commas_selects_and_reaches_the_template_whole(consul_factory, tmp_path):
    agent = consul_factory()
    rule = "traefik.frontend.rule=Host:a.example,b.example"
    svc = "comma-%d" % support.free_port()
    agent.register_ttl("c1", svc, port=9601, tags=[rule, "web"])
    agent.register_ttl("o1", "other-" + svc, port=9602, tags=["traefik.frontend.rule=Host:a.example", "web"])
    tpl = tmp_path / "rules.j2"
    tpl.write_text("{% for s in services %}{% for srv in s.servers %}{{ s.name }} {{ srv.tags|join('|') }}\n"
                   "{% endfor %}{% endfor %}")
    out = tmp_path / "rules.txt"
    r = medic_lb(agent, tmp_path, "--once", "--template", str(tpl), "--out", str(out), "--tag", rule)
    assert r.returncode == 0, r.stdout
    assert out.read_text() == "%s %s|web\n" % (svc, rule)


def test_two_thousand_services_plan_and_render_in_well_under_a_second():
    view = {"svc-%04d.example" % i: [inst("%d-a" % i, 8000 + i % 100), inst("%d-b" % i, 9000 + i % 100)]
            for i in range(2000)}
    tpl = lb_render.load_template("nginx-http")
    t0 = time.monotonic()
    text = lb_render.render(tpl, lb_render.plan(view, {}), {})
    took = time.monotonic() - t0
    assert len(upstreams(text)) == 2000
    assert took < 1.0, took


@pytest.mark.consul
@pytest.mark.slow
def test_an_instance_on_a_node_whose_agent_died_leaves_the_upstream(consul_factory, tmp_path):
    """traefik #3722: the client agent of a host is killed; its services' own checks stay passing
    in the catalog, only the node's serfHealth goes critical. medic-lb drops that host's instance."""
    server = consul_factory()
    client = consul_factory(dev=False, join=server.serf_addr, node="peers-client-%d" % support.free_port())
    support.wait_for(lambda: any(m["Name"] == client.node for m in server.api("/v1/agent/members")), 30,
                     what="the client agent joined")
    svc = "serf-%d" % support.free_port()
    client.register_ttl("on-client", svc, port=9701)
    server.register_ttl("on-server", svc, port=9702)
    support.wait_for(lambda: len(server.api("/v1/health/service/%s?passing=1" % svc)) == 2, 30, what="both passing")
    out = tmp_path / "lb.conf"
    args = ["--once", "--template", "nginx-http", "--out", str(out), "--service", svc]
    assert medic_lb(server, tmp_path, *args).returncode == 0
    assert len(upstreams(out.read_text())[lb_render.ident(svc)]) == 2
    client.kill()
    support.wait_for(lambda: [c for c in server.api("/v1/health/node/" + client.node)
                              if c["CheckID"] == "serfHealth" and c["Status"] == "critical"], 60,
                     what="serfHealth critical for the killed agent's node")
    service_check = [c for c in server.api("/v1/health/checks/" + svc) if c["ServiceID"] == "on-client"]
    assert service_check and service_check[0]["Status"] == "passing"     # what traefik looked at
    r = medic_lb(server, tmp_path, *args)
    assert r.returncode == 0, r.stdout
    assert [s.split("#")[1].strip() for s in upstreams(out.read_text())[lb_render.ident(svc)]] == ["on-server"]


@pytest.mark.consul
@pytest.mark.slow
def test_a_thousand_services_render_from_a_real_agent_in_seconds(consul_factory, tmp_path):
    """fabio #558: route updates lagging with thousands of services. One render reads the catalog
    and each selected service on one connection; the figure is printed (-s)."""
    agent = consul_factory()
    n = 1000
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: agent.register("k%04d" % i, "many-%04d" % i, port=10000 + i), range(n)))
    support.wait_for(lambda: len(agent.api("/v1/catalog/services")) > n, 60, what="%d services in the catalog" % n)
    out = tmp_path / "lb.conf"
    t0 = time.monotonic()
    r = medic_lb(agent, tmp_path, "--once", "--template", "nginx-http", "--out", str(out), "--prefix", "many-")
    took = time.monotonic() - t0
    print("\nmedic-lb --once over %d services: %.2f s" % (n, took))
    assert r.returncode == 0, r.stdout
    assert len(upstreams(out.read_text())) == n
    assert took < 20, took
