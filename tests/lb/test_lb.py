"""medic-lb, pure parts with literal data: the never-empty plan, templates, options, the applier."""
import os
import re
import sys

import pytest

from consul_medic.handlers.lb import lb_apply, lb_options, lb_render
from consul_medic.handlers.service import instances
from consul_medic.handlers.core.errors import UsageError

I = instances.Instance


def inst(iid, port, passing=True, tags=(), address="10.0.0.1", node="n1"):
    role = instances.role_of(tags)
    return I(iid, address, port, tuple(tags), role, node, passing, instances.PRIORITY.get(role, 10),
             "passing" if passing else "critical")


def upstreams(text):
    """{upstream/backend name: [server lines]} of an nginx or HAProxy config."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*(upstream|backend|listen)\s+(\S+)", line)
        if m and not re.match(r"\s*listen\s+\d", line):
            cur = m.group(2)
            out[cur] = []
        elif cur and re.match(r"\s*server\s", line):
            out[cur].append(line.strip())
        elif cur and line.strip() == "}":
            cur = None
    return out


def test_plan_uses_passing_instances_only():
    p = lb_render.plan({"web": [inst("a", 1), inst("b", 2, passing=False)]})
    assert [s["id"] for s in p.services[0].servers] == ["a"]
    assert p.kept == [] and p.omitted == []
    assert p.state == {"web": [lb_render.server(inst("a", 1))]}


def test_plan_keeps_last_good_when_nothing_passes():
    last = {"web": [lb_render.server(inst("a", 1))]}
    p = lb_render.plan({"web": [inst("a", 1, passing=False)]}, last)
    assert [s["id"] for s in p.services[0].servers] == ["a"]
    assert p.services[0].kept is True
    assert p.kept and "web has no passing instance (a critical)" in p.kept[0][1]


def test_plan_leaves_out_a_service_that_never_had_servers():
    p = lb_render.plan({"web": [], "api": [inst("x", 9)]})
    assert [s.name for s in p.services] == ["api"]
    assert p.omitted == [("web", "web has no passing instance and no last good servers: left out")]


def test_plan_instance_without_address_or_port_is_not_a_server():
    p = lb_render.plan({"web": [inst("a", 0), inst("b", 5, address="")]}, {})
    assert p.services == [] and p.omitted


def test_priority_master_10_slave_9_others_10_and_backup():
    p = lb_render.plan({"redis": [inst("m", 1, tags=["master"]), inst("s", 2, tags=["slave"]),
                                  inst("u", 3)]})
    by_id = {s["id"]: s for s in p.services[0].servers}
    assert (by_id["m"]["priority"], by_id["s"]["priority"], by_id["u"]["priority"]) == (10, 9, 10)
    assert (by_id["m"]["backup"], by_id["s"]["backup"], by_id["u"]["backup"]) == (False, True, False)


def test_only_slaves_passing_none_is_backup():
    p = lb_render.plan({"redis": [inst("m", 1, passing=False, tags=["master"]), inst("s", 2, tags=["slave"])]})
    assert [(s["id"], s["backup"]) for s in p.services[0].servers] == [("s", False)]


def test_server_name_per_environment():
    assert lb_render.server_name("www.example.com", None) == "www.example.com"
    assert lb_render.server_name("www.example.com", "live") == "www.example.com"
    assert lb_render.server_name("www.example.com", "test") == "test.www.example.com"


@pytest.mark.parametrize("name", lb_render.BUILTIN)
def test_builtin_templates_never_write_an_empty_upstream(name):
    view = {"web.example": [inst("a", 81), inst("b", 82, passing=False)],
            "gone.example": [inst("g", 83, passing=False)],
            "redis": [inst("m", 6379, tags=["master"]), inst("s", 6380, tags=["slave"])]}
    p = lb_render.plan(view, {})
    text = lb_render.render(lb_render.load_template(name), p, {"listen": "8080"})
    ups = upstreams(text)
    assert set(ups) == {"web_example", "redis"}, text
    assert all(ups.values()), text
    assert "gone" not in text
    assert any("backup" in line for line in ups["redis"]) and not any("backup" in line for line in ups["web_example"])
    assert "10.0.0.1:82" not in text


def test_nginx_http_server_names_for_test_env():
    p = lb_render.plan({"www.example.com": [inst("a", 81)]}, {}, env="test")
    text = lb_render.render(lb_render.load_template("nginx-http"), p, {})
    assert "server_name test.www.example.com;" in text


def test_template_from_file_sees_instances_roles_and_priority(tmp_path):
    f = tmp_path / "pool.j2"
    f.write_text("{% for s in services %}{% for x in s.servers %}{{ s.name }} {{ x.address }}:{{ x.port }} "
                 "{{ x.role }} {{ x.priority }} {{ x.node }} {{ x.tags|join(',') }}\n{% endfor %}{% endfor %}")
    p = lb_render.plan({"redis": [inst("m", 1, tags=["master", "r"]), inst("s", 2, tags=["slave"])]})
    text = lb_render.render(lb_render.load_template(str(f)), p)
    assert text == "redis 10.0.0.1:1 master 10 n1 master,r\nredis 10.0.0.1:2 slave 9 n1 slave\n"


def test_bad_templates_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not a built-in"):
        lb_render.load_template("nginx-nope")
    bad = tmp_path / "bad.j2"
    bad.write_text("{% for %}")
    with pytest.raises(UsageError, match="line 1"):
        lb_render.load_template(str(bad))
    undefined = tmp_path / "u.j2"
    undefined.write_text("{{ nope.x }}")
    with pytest.raises(UsageError, match="template"):
        lb_render.render(lb_render.load_template(str(undefined)), lb_render.plan({}))


def test_select_filters():
    catalog = {"consul": [], "web-a": ["http"], "web-b": [], "redis": ["tcp"]}
    assert instances.select(catalog, prefix="web-") == ["web-a", "web-b"]
    assert instances.select(catalog, tag="http") == ["web-a"]
    assert instances.select(catalog, names=("x", "redis")) == ["redis", "x"]


def test_instances_from_health_entries():
    entries = [{"Node": {"Node": "n1", "Address": "10.0.0.9"},
                "Service": {"ID": "r1", "Address": "", "Port": 6379, "Tags": ["slave"]},
                "Checks": [{"Status": "passing"}, {"Status": "warning"}]}]
    (i,) = instances.instances("redis", entries)
    assert (i.address, i.role, i.priority, i.passing, i.status) == ("10.0.0.9", "slave", 9, False, "warning")


def test_options():
    assert lb_options.wait("0.2s:2s") == (0.2, 2.0)
    assert lb_options.wait("1s") == (1.0, 4.0)
    for bad in ("2s:1s", "x"):
        with pytest.raises(UsageError):
            lb_options.wait(bad)
    assert lb_options.variables(["listen=8080", "a=b=c"]) == {"listen": "8080", "a": "b=c"}
    with pytest.raises(UsageError):
        lb_options.variables(["nokey"])
    with pytest.raises(UsageError, match="say which"):
        lb_options.selection()
    with pytest.raises(UsageError, match="exclude"):
        lb_options.selection(("a",), prefix="b")
    with pytest.raises(UsageError, match="candidate"):
        lb_apply.parse_command("nginx -t", "--check-cmd", True)
    assert lb_apply.parse_command("nginx -t -c '{}'", "--check-cmd", True) == ["nginx", "-t", "-c", "{}"]


def _counter_cmd(path):
    return [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('x')", str(path)]


def test_applier_checks_writes_atomically_and_reloads_only_on_change(tmp_path):
    out, count = tmp_path / "lb.conf", tmp_path / "reloads"
    check = [sys.executable, "-c", "import sys; sys.exit('bad' in open(sys.argv[1]).read())", "{}"]
    a = lb_apply.Applier(str(out), check, _counter_cmd(count))
    r = a.apply("good 1\n")
    assert (r.written, r.reloaded) == (True, True) and out.read_text() == "good 1\n"
    r = a.apply("good 1\n")
    assert (r.changed, r.written, r.reloaded) == (False, False, False)
    assert count.read_text() == "x"
    with pytest.raises(lb_apply.ApplyError, match="output not replaced"):
        a.apply("bad 2\n")
    assert out.read_text() == "good 1\n" and count.read_text() == "x"
    assert set(os.listdir(tmp_path)) == {"lb.conf", "reloads"}  # no candidate left behind


def test_a_failed_reload_is_retried_on_the_next_unchanged_run(tmp_path):
    out, count, fail = tmp_path / "lb.conf", tmp_path / "reloads", tmp_path / "fail"
    reload_cmd = [sys.executable, "-c", "import os, sys; open(sys.argv[1], 'a').write('x'); "
                  "sys.exit(os.path.exists(sys.argv[2]))", str(count), str(fail)]
    a = lb_apply.Applier(str(out), None, reload_cmd)
    fail.write_text("")
    with pytest.raises(lb_apply.ApplyError) as e:
        a.apply("v1\n")
    assert e.value.written and out.read_text() == "v1\n"
    fail.unlink()
    assert a.apply("v1\n").reloaded is False                      # nobody said the reload failed
    r = a.apply("v1\n", reload_pending=True)
    assert (r.written, r.reloaded) == (False, True) and count.read_text() == "xx"


def test_state_roundtrip_and_bad_file(tmp_path):
    st = lb_apply.State(str(tmp_path / "s.json"))
    empty = {"servers": {}, "degraded": [], "reload_pending": False, "refused": []}
    assert st.load() == empty
    st.save({"web": [{"id": "a"}]}, ["web"], reload_pending=True, refused=["web: instance left out x"])
    assert st.load() == {"servers": {"web": [{"id": "a"}]}, "degraded": ["web"], "reload_pending": True,
                         "refused": ["web: instance left out x"]}
    (tmp_path / "s.json").write_text("{not json")
    assert st.load() == empty


def test_coalesce_waits_for_quiet_but_not_past_max():
    import queue
    q = queue.Queue()
    t = [0.0]
    clock = lambda: t[0]  # noqa: E731
    assert instances.coalesce(q, 0.0, 0.0, 1.0, clock) == 0
    for _ in range(3):
        q.put(("change", "x", 1))
    assert instances.coalesce(q, 0.0, 0.05, 1.0, clock) == 3


@pytest.mark.parametrize("name,variables", [("nginx-http", {}), ("nginx-stream", {}), ("haproxy", {}),
                                            ("haproxy", {"mode": "tcp"})])
def test_the_servers_own_check_accepts_every_builtin_template(tmp_path, name, variables):
    import subprocess

    import support
    import support_lb
    nginx = name.startswith("nginx")
    support.require(support_lb.nginx_available() if nginx else support_lb.haproxy_available(),
                    "nginx" if nginx else "haproxy")
    view = {"www.example.com": [inst("a", 81, address="127.0.0.1"), inst("b", 82, address="127.0.0.1")],
            "redis": [inst("m", 6379, tags=["master"], address="127.0.0.1"),
                      inst("s", 6380, tags=["slave"], address="127.0.0.1")]}
    text = lb_render.render(lb_render.load_template(name), lb_render.plan(view, {}, env="test"),
                            dict(variables, listen=str(support.free_port()), pid=str(tmp_path / "pid")))
    conf = tmp_path / "lb.conf"
    conf.write_text(text)
    argv = ([support_lb.nginx_bin(), "-t", "-q", "-p", str(tmp_path) + "/", "-c", str(conf)] if nginx
            else [support_lb.haproxy_bin(), "-c", "-q", "-f", str(conf)])
    (tmp_path / "logs").mkdir()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr + text
