"""The trust boundary in front of medic-lb (issue 23): what anyone can register in Consul never
becomes load-balancer configuration. Attacks are registered in a real Consul agent, rendered by the
real medic-lb, and the output is checked by the real `nginx -t` / `haproxy -c`; the validation point
itself is fuzzed (hypothesis)."""
import json
import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import support
import support_lb
from consul_medic.handlers.lb import lb_render
from consul_medic.handlers.service import instances as lb_view
from consul_medic.handlers.core import trust

NGINX_BREAKOUT = ("10.0.0.1:80;} server { listen 80; server_name bank.example.com; location / { alias /etc/; } }"
                  " upstream zz { server 10.0.0.1")
HAPROXY_PROGRAM = "127.0.0.1:1 check\nprogram pwn\n    command /bin/touch /tmp/medic-pwned\n#"
ID_ESCAPE = "evil-id\n    }\n    server { listen 1; location / { alias /etc/; } }\n    upstream yy {"


def _entry(sid, address, port, tags=(), node="n1"):
    return {"Node": {"Node": node, "Address": "10.0.0.9"},
            "Service": {"ID": sid, "Address": address, "Port": port, "Tags": list(tags)},
            "Checks": [{"Status": "passing"}]}


# -- the validation point ------------------------------------------------------------------------
@pytest.mark.parametrize("good", ["10.0.0.1", "::1", "fe80::1", "redis-1.internal", "a", "host-2.example.com"])
def test_addresses_that_pass(good):
    assert trust.address(good) == good and isinstance(trust.address(good), trust.Checked)


@pytest.mark.parametrize("bad", ["", "10.0.0.1:80", NGINX_BREAKOUT, HAPROXY_PROGRAM, "a b", "-x.example",
                                 "x..y", "1.2.3.4.5", "a" * 254, "h\u00e9", "x;y", "[::1]", 80, None])
def test_addresses_refused(bad):
    with pytest.raises(trust.Refused):
        trust.address(bad)


@pytest.mark.parametrize("bad", [0, 65536, -1, True, "80x", "", None, 80.5, "٨٠"])
def test_ports_refused(bad):
    with pytest.raises(trust.Refused):
        trust.port(bad)


@pytest.mark.parametrize("bad", [ID_ESCAPE, "a b", "a;b", "a{b", "a}b", "a#b", "a'b", 'a"b', "a`b", "a\\b",
                                 "a$b", "a\u202eb", "a\x00b", "x" * 257, ""])
def test_ids_and_tags_refused(bad):
    with pytest.raises(trust.Refused):
        trust.token(bad)


def test_a_bad_tag_is_dropped_a_bad_id_or_address_refuses_the_instance():
    good, refused = lb_view.checked_instances("redis", [
        _entry("r1", "10.0.0.1", 6379, ["slave", "x\nprogram evil"]),
        _entry(ID_ESCAPE, "10.0.0.2", 6379, ["master"]),
        _entry("r3", NGINX_BREAKOUT, 6379, ["master"]),
        _entry("r4", "10.0.0.4", 0),
        _entry("r5", "10.0.0.5", 6379, node="n 1"),
        _entry("r/6", "10.0.0.6", 6379),
        "not an entry"])
    assert [(i.id, i.tags, i.role) for i in good] == [("r1", ("slave",), "slave")]
    assert [(r.field, r.dropped) for r in refused] == [
        ("tag", True), ("id", False), ("address", False), ("port", False), ("node", False), ("id", False),
        ("entry", False)]


def test_last_good_servers_from_an_old_state_file_are_checked_again():
    hostile = {"id": "x", "address": NGINX_BREAKOUT, "port": 80, "tags": [], "role": None, "node": "n",
               "priority": 10}
    fine = dict(hostile, address="10.0.0.1")
    p = lb_render.plan({"web": []}, {"web": [hostile, fine]})
    assert [s["address"] for s in p.services[0].servers] == ["10.0.0.1"]
    p = lb_render.plan({"web": []}, {"web": [hostile]})
    assert p.services == [] and p.omitted  # never an empty or broken upstream


def test_finalize_refuses_what_is_not_checked_in_a_users_own_template(tmp_path):
    from consul_medic.handlers.core.errors import UsageError
    f = tmp_path / "own.j2"
    for body in ("{{ vars.x }}", "{{ services }}", "{{ vars }}"):
        f.write_text(body)
        with pytest.raises(UsageError, match="template"):
            lb_render.render(lb_render.load_template(str(f)), lb_render.plan({}), {"x": "a;\n}"})
    f.write_text("{{ vars.x }} {{ 3 }} {{ 'backup' }}")
    assert lb_render.render(lb_render.load_template(str(f)), lb_render.plan({}), {"x": "8080"}) == "8080 3 backup"


_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["10.0.0.1", "::1", "web-1", NGINX_BREAKOUT,
                                                         HAPROXY_PROGRAM, ID_ESCAPE, "master", "slave"]))
_ENTRY = st.fixed_dictionaries({
    "Node": st.fixed_dictionaries({"Node": _TEXT, "Address": _TEXT}),
    "Service": st.fixed_dictionaries({"ID": _TEXT, "Address": _TEXT,
                                      "Port": st.one_of(st.integers(-5, 70000), _TEXT, st.none(), st.booleans()),
                                      "Tags": st.lists(_TEXT, max_size=4)}),
    "Checks": st.lists(st.fixed_dictionaries({"Status": st.sampled_from(["passing", "warning", "critical"])}),
                       max_size=2)})
_BAD = set(trust.SPECIAL) | {"\n", "\r", " ", "\t", "\x00"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ENTRY, max_size=6), st.sampled_from(lb_render.BUILTIN))
def test_fuzz_anything_registered_renders_only_checked_servers(entries, template):
    good, refused = lb_view.checked_instances("svc", entries)
    assert len(good) + len([r for r in refused if not r.dropped]) == len(entries)
    for i in good:
        assert 1 <= i.port <= 65535 and isinstance(i.port, int) and not isinstance(i.port, bool)
        for v in (i.id, i.address, i.node) + i.tags:
            assert isinstance(v, trust.Checked) and not (set(v) & _BAD) and v.isascii()
    text = lb_render.render(lb_render.load_template(template), lb_render.plan({"svc": good}, {}), {})
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("server s") or
             ln.strip().startswith("server ") and ":" in ln]
    passing = [i for i in good if i.passing]
    assert len(lines) == len(passing)
    for ln, i in zip(lines, sorted(passing, key=lambda i: (i.address, i.port, i.id))):
        assert "%s:%d" % (i.address, i.port) in ln


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False), st.lists(st.text()),
                 st.none(), st.dictionaries(st.text(), st.text())))
def test_fuzz_finalize_passes_only_plain_safe_values(value):
    try:
        out = trust.finalize(value)
    except trust.TemplateRefused:
        assert not isinstance(value, (int, float))
        return
    assert isinstance(out, (int, float)) or (isinstance(out, str) and not (set(out) & (set(trust.SPECIAL) | {"\n", "\r"})))


# -- real Consul, real medic-lb, real nginx -t / haproxy -c ------------------------------------------
@pytest.fixture
def agent(consul_factory):
    return consul_factory()


def _run_lb(agent, tmp_path, template, svc, check, *extra):
    out = tmp_path / ("%s.conf" % template)
    env = support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "audit.jsonl"), MEDIC_NOTIFY="off")
    r = support.run_medic("medic-lb", ["--consul-addr", agent.addr, "--template", template, "--out", str(out),
                                       "--service", svc, "--check-cmd", check] + list(extra), env=env)
    return r, out


@pytest.mark.consul
def test_hostile_registrations_never_reach_nginx_or_haproxy(agent, tmp_path, unique):
    support.require(support_lb.nginx_available() and support_lb.haproxy_available(), "nginx and haproxy")
    svc = "web-trust-%s" % unique
    agent.register("good-1", svc, port=8081, address="127.0.0.1", tags=["slave"])
    agent.register("evil-addr", svc, port=80, address=NGINX_BREAKOUT)
    agent.register("evil-haproxy", svc, port=80, address=HAPROXY_PROGRAM)
    agent.register(ID_ESCAPE, svc, port=8083, address="127.0.0.1")
    agent.register("evil-tag", svc, port=8084, address="127.0.0.1", tags=["x\n}\nprogram p", "master"])
    stored = {e["Service"]["ID"]: e["Service"] for e in agent.api("/v1/health/service/" + svc)}
    assert stored["evil-addr"]["Address"] == NGINX_BREAKOUT and ID_ESCAPE in stored  # the attack reached Consul

    # without the boundary the breakout is valid nginx: the attack is real
    raw = lb_view.Instance("evil-addr", NGINX_BREAKOUT, 80, (), None, "n1", True, 10, "passing")
    (tmp_path / "logs").mkdir()
    naive = lb_render.render(_naive_template("nginx-http"), lb_render.plan({svc: [raw]}, {}),
                             {"listen": str(support.free_port()), "pid": str(tmp_path / "pid")})
    (tmp_path / "naive.conf").write_text(naive)
    assert "bank.example.com" in naive and _nginx_t(tmp_path, tmp_path / "naive.conf").returncode == 0

    nginx_check = " ".join([support_lb.nginx_bin(), "-t", "-q", "-p", str(tmp_path) + "/", "-c", "{}"])
    haproxy_check = "%s -c -q -f {}" % support_lb.haproxy_bin()
    port = str(support.free_port())
    for template, check in (("nginx-http", nginx_check), ("nginx-stream", nginx_check), ("haproxy", haproxy_check)):
        r, out = _run_lb(agent, tmp_path, template, svc, check, "--var", "listen=127.0.0.1:" + port,
                         "--var", "listen_%s=127.0.0.1:%s" % (lb_render.ident(svc), port),
                         "--var", "pid=%s" % (tmp_path / "pid"))
        assert r.returncode == 1, r.stdout + r.stderr  # rendered, with a warning naming the refusals
        assert "evil-addr" in r.stdout and "instance left out" in r.stdout
        text = out.read_text()
        for needle in ("bank.example.com", "program", "/etc/", "evil-addr", "evil-haproxy", "evil-id", "upstream zz", "upstream yy", "\r"):
            assert needle not in text, (template, needle, text)
        servers = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("server ") and ":8" in ln]
        assert sorted(s.split()[1 if template != "haproxy" else 2].rstrip(";") for s in servers) == [
            "127.0.0.1:8081", "127.0.0.1:8084"], text
        if template == "haproxy":
            p = subprocess.run([support_lb.haproxy_bin(), "-c", "-q", "-f", str(out)], capture_output=True, timeout=30)
        else:
            p = _nginx_t(tmp_path, out)
        assert p.returncode == 0, p.stderr
    assert not os.path.exists("/tmp/medic-pwned")
    recs = [json.loads(ln) for ln in open(tmp_path / "audit.jsonl")]
    refused = {(r["instance"], r["field"]) for r in recs if r.get("action") == "refuse"}
    assert {("evil-addr", "address"), ("evil-haproxy", "address"), ("evil-tag", "tag"),
            (trust.printable(ID_ESCAPE), "id")} <= refused, refused
    state = json.loads((tmp_path / "haproxy.conf.medic-lb.json").read_text())
    assert sorted(s["id"] for s in state["servers"][svc]) == ["evil-tag", "good-1"]
    # said once: the same refusals on the next run warn again but are not audited or alerted again
    n = len(recs)
    r, _ = _run_lb(agent, tmp_path, "haproxy", svc, haproxy_check, "--var", "listen=127.0.0.1:" + port,
                   "--var", "pid=%s" % (tmp_path / "pid"))
    assert r.returncode == 1 and "evil-addr" in r.stdout
    again = [json.loads(ln) for ln in open(tmp_path / "audit.jsonl")][n:]
    assert [x for x in again if x.get("action") == "refuse"] == [] and again


def _nginx_t(tmp_path, conf):
    return subprocess.run([support_lb.nginx_bin(), "-t", "-q", "-p", str(tmp_path) + "/", "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)


def _naive_template(name):
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(lb_render.TEMPLATE_DIR), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template(name + ".j2")
