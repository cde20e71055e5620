"""medic-lb against real parts: a Consul agent, demo containers with real HTTP checks, real nginx
(1.22) and HAProxy (2.6) processes on free loopback ports, traffic through them."""
import os
import signal
import subprocess

import pytest

import support
import support_lb
from consul_medic.handlers.core import audit

pytestmark = [pytest.mark.consul, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def nginx_bin():
    support.require(support_lb.nginx_available(), "nginx (run `make testbed`)")


@pytest.fixture
def haproxy_bin():
    support.require(support_lb.haproxy_available(), "haproxy (run `make testbed`)")


@pytest.fixture
def lbworld(consul_factory, docker_client, demo_image, tmp_path, unique):
    """An agent, a place for configs, and demo containers removed afterwards."""
    agent = consul_factory()
    procs = []
    yield agent, tmp_path, unique, procs
    for p in procs:
        p.stop()
    support_lb.remove_containers(docker_client, unique)


def medic_lb(agent, tmp_path, *args, **popen):
    env = support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "audit.jsonl"), MEDIC_NOTIFY="off")
    argv = ["--consul-addr", agent.addr] + list(args)
    if popen:
        return subprocess.Popen([os.path.join(support.BIN, "medic-lb")] + argv, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    return support.run_medic("medic-lb", argv, env=env)


def who_set(url, host, n=8):
    return {support_lb.get(url, host)[1] for _ in range(n)}


def upstream_servers(text, name):
    from test_lb import upstreams
    return upstreams(text).get(name)


def test_nginx_http_follows_health_and_never_writes_an_empty_upstream(lbworld, docker_client, nginx_bin):
    agent, tmp, token, procs = lbworld
    svc = "web-lb-%s.example" % token
    ident = svc.replace("-", "_").replace(".", "_")
    c1, p1 = support_lb.run_demo(docker_client, token, "medic-lb-%s-a" % token)
    c2, p2 = support_lb.run_demo(docker_client, token, "medic-lb-%s-b" % token)
    support_lb.register_http(agent, "a-" + token, svc, p1)
    support_lb.register_http(agent, "b-" + token, svc, p2)
    support.wait_for(lambda: len(support_lb.passing_ids(agent, svc)) == 2, 30, what="2 passing")

    port, out = support.free_port(), tmp / "nginx.conf"
    ngx = support_lb.Nginx(tmp, out)
    args = ["--template", "nginx-http", "--out", str(out), "--service", svc,
            "--var", "listen=127.0.0.1:%d" % port, "--var", "pid=%s" % (tmp / "nginx.pid"),
            "--check-cmd", ngx.check_cmd(), "--reload-cmd", ngx.reload_cmd()]
    # first render: no nginx yet, so no reload command
    r = medic_lb(agent, tmp, *args[:-2])
    assert r.returncode == 0, r.stdout + r.stderr
    procs.append(ngx.start())
    url = "http://127.0.0.1:%d/who" % port
    assert support.wait_for(lambda: who_set(url, svc) == {c1.name, c2.name}, 20, what="both backends")
    assert support_lb.get(url, "other.example")[0] == 404

    # one instance dies: re-rendered, reloaded, traffic only to the survivor
    c1.kill()
    support.wait_for(lambda: support_lb.passing_ids(agent, svc) == ["b-" + token], 30, what="a critical")
    r = medic_lb(agent, tmp, *args)
    assert r.returncode == 0 and "reloaded" in r.stdout, r.stdout + r.stderr
    assert support.wait_for(lambda: who_set(url, svc) == {c2.name}, 20, what="only b")
    assert upstream_servers(out.read_text(), ident) == ["server 127.0.0.1:%d;  # b-%s" % (p2, token)]

    # nothing passes: the last good server stays, exit 1 says why, the alert is handed to medic-notify
    c2.kill()
    support.wait_for(lambda: support_lb.passing_ids(agent, svc) == [], 30, what="none passing")
    r = medic_lb(agent, tmp, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "%s has no passing instance" % svc in r.stdout and "kept its 1 last good server" in r.stdout
    text = out.read_text()
    assert "LAST GOOD" in text
    assert upstream_servers(text, ident) == ["server 127.0.0.1:%d;  # b-%s" % (p2, token)]
    subprocess.run([support_lb.nginx_bin(), "-t", "-q", "-p", str(tmp) + "/", "-c", str(out)], check=True)
    emits = [x for x in audit.read(str(tmp / "audit.jsonl")) if x.get("kind") == "notify"]
    assert [(e["event"]["kind"], e["event"]["service"]) for e in emits] == [("warning", svc)]
    # a second degraded run does not alert again
    assert medic_lb(agent, tmp, *args).returncode == 1
    assert len([x for x in audit.read(str(tmp / "audit.jsonl")) if x.get("kind") == "notify"]) == 1


def test_nginx_rejects_a_bad_candidate_and_keeps_the_output(lbworld, docker_client, nginx_bin):
    agent, tmp, token, procs = lbworld
    svc = "bad-lb-%s" % token
    agent.register_ttl("x-" + token, svc, port=8081)
    out = tmp / "nginx.conf"
    out.write_text("previous\n")
    ngx = support_lb.Nginx(tmp, out)
    # listen on a name nginx cannot resolve: `nginx -t` fails on the candidate
    r = medic_lb(agent, tmp, "--template", "nginx-http", "--out", str(out), "--service", svc,
                 "--var", "listen=no-such-host.invalid:1", "--check-cmd", ngx.check_cmd())
    assert r.returncode == 2, r.stdout + r.stderr
    assert "output not replaced" in r.stdout and "nginx exited 1" in r.stdout
    assert out.read_text() == "previous\n"
    assert sorted(os.listdir(tmp)) == ["audit.jsonl", "logs", "nginx.conf"]


def test_watch_mode_rerenders_and_reloads_on_a_consul_change(lbworld, docker_client, nginx_bin):
    agent, tmp, token, procs = lbworld
    svc = "watch-lb-%s" % token
    c1, p1 = support_lb.run_demo(docker_client, token, "medic-lb-%s-w1" % token)
    support_lb.register_http(agent, "w1-" + token, svc, p1)
    support.wait_for(lambda: support_lb.passing_ids(agent, svc), 30, what="w1 passing")
    port, out = support.free_port(), tmp / "nginx.conf"
    ngx = support_lb.Nginx(tmp, out)
    args = ["--template", "nginx-http", "--out", str(out), "--service", svc,
            "--var", "listen=127.0.0.1:%d" % port, "--var", "pid=%s" % (tmp / "nginx.pid"),
            "--check-cmd", ngx.check_cmd()]
    assert medic_lb(agent, tmp, *args).returncode == 0
    procs.append(ngx.start())
    url = "http://127.0.0.1:%d/who" % port
    support.wait_for(lambda: who_set(url, svc) == {c1.name}, 20, what="w1 served")

    watcher = medic_lb(agent, tmp, *(args + ["--reload-cmd", ngx.reload_cmd(), "--watch", "--wait", "50ms:500ms"]),
                       popen=True)
    try:
        c2, p2 = support_lb.run_demo(docker_client, token, "medic-lb-%s-w2" % token)
        support_lb.register_http(agent, "w2-" + token, svc, p2)
        support.wait_for(lambda: who_set(url, svc, 10) == {c1.name, c2.name}, 30, what="w2 added by the watch")
        c1.kill()
        ident = svc.replace("-", "_")
        # traffic alone would not show it (nginx retries the next server): the rendered upstream must
        support.wait_for(lambda: upstream_servers(out.read_text(), ident) == [
            "server 127.0.0.1:%d;  # w2-%s" % (p2, token)], 30, what="w1 removed by the watch")
        support.wait_for(lambda: who_set(url, svc, 10) == {c2.name}, 30, what="only w2 served")
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        output, _ = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, output
    assert "MEDIC OK - stopped by signal" in output
    writes = [x for x in audit.read(str(tmp / "audit.jsonl")) if x.get("kind") == "lb" and x.get("action") == "write"]
    assert len(writes) >= 3 and all(x["reloaded"] for x in writes[1:])


def test_haproxy_validates_and_routes(lbworld, docker_client, haproxy_bin):
    agent, tmp, token, procs = lbworld
    svc = "ha-lb-%s.example" % token
    c1, p1 = support_lb.run_demo(docker_client, token, "medic-lb-%s-h1" % token)
    support_lb.register_http(agent, "h1-" + token, svc, p1)
    support.wait_for(lambda: support_lb.passing_ids(agent, svc), 30, what="h1 passing")
    port, out = support.free_port(), tmp / "haproxy.cfg"
    r = medic_lb(agent, tmp, "--template", "haproxy", "--out", str(out), "--service", svc,
                 "--var", "listen=127.0.0.1:%d" % port, "--var", "pid=%s" % (tmp / "haproxy.pid"),
                 "--check-cmd", "%s -c -q -f {}" % support_lb.haproxy_bin())
    assert r.returncode == 0, r.stdout + r.stderr
    log = open(tmp / "haproxy.out", "wb")
    proc = subprocess.Popen([support_lb.haproxy_bin(), "-db", "-f", str(out)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    class _P:
        def stop(self):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            log.close()
    procs.append(_P())
    url = "http://127.0.0.1:%d/who" % port
    assert support.wait_for(lambda: support_lb.get(url, svc) == (200, c1.name), 20, what="haproxy routes")
    assert support_lb.get(url, "other.example")[0] == 503


def test_as_a_consul_watch_handler(consul_factory, tmp_path, unique, nginx_bin):
    """The agent's `service` watch runs medic-lb --once with the payload on stdin; it re-reads Consul."""
    import json
    svc = "wh-lb-%s" % unique
    out = tmp_path / "nginx.conf"
    ngx = support_lb.Nginx(tmp_path, out)
    agent = consul_factory(start=False, env={"MEDIC_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "MEDIC_NOTIFY": "off"})
    watch = {"watches": [{"type": "service", "service": svc, "args": [
        os.path.join(support.BIN, "medic-lb"), "--once", "--consul-addr", agent.addr, "--template", "nginx-http",
        "--out", str(out), "--service", svc, "--var", "listen=127.0.0.1:%d" % support.free_port(),
        "--check-cmd", ngx.check_cmd()]}]}
    with open(os.path.join(agent.config_dir, "10-lb.json"), "w") as f:
        json.dump(watch, f)
    agent.start()
    agent.register_ttl("i1-" + unique, svc, port=8081)
    support.wait_for(lambda: out.exists() and ":8081;" in out.read_text(), 30, what="rendered by the watch")
    agent.register_ttl("i2-" + unique, svc, port=8082)
    support.wait_for(lambda: ":8082;" in out.read_text(), 30, what="second instance rendered")
    agent.set_ttl("i1-" + unique, "critical")
    support.wait_for(lambda: ":8081;" not in out.read_text(), 30, what="failing instance removed")
    agent.set_ttl("i2-" + unique, "critical")
    support.wait_for(lambda: [x for x in audit.read(str(tmp_path / "audit.jsonl"))
                              if x.get("kind") == "lb" and x.get("kept") == [svc]], 30, what="a degraded run")
    assert ":8082;" in out.read_text()      # the last good server stays
