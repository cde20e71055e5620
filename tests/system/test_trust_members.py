"""Membership (issue 23): an instance registered under a spec's service name counts for medic (the
check's count, medic-lb --from-specs) only when it comes from the owner the spec names; the spec
widens it with "membership": "any". nginx-stream never gives an untagged instance the master's
priority. Real Consul agent, real medic-check / medic-lb, real `nginx -t`."""
import json
import os

import pytest

import support
import support_check as sc
import support_lb
from consul_medic.handlers.service import instances as lb_view

pytestmark = [pytest.mark.consul]

MINE = {"medic_compose_project": "shop", "medic_compose_service": "web"}


def write_spec(tmp_path, svc, instances=2, **extra):
    d = tmp_path / "specs"
    d.mkdir(exist_ok=True)
    (tmp_path / "compose.yml").write_text("services:\n  web:\n    image: x\n")
    doc = dict({"service": svc, "instances": instances,
                "scale": {"driver": "compose", "project": "shop", "file": str(tmp_path / "compose.yml"),
                          "service": "web"}}, **extra)
    (d / (svc + ".json")).write_text(json.dumps(doc))
    return str(d)


def test_an_impostor_never_counts_toward_the_declared_size(consul_factory, tmp_path, unique):
    agent = consul_factory()
    svc = "web-members-%s" % unique
    specs = write_spec(tmp_path, svc, 2)
    agent.register_ttl("web-1", svc, port=8081, meta=MINE)
    agent.register_ttl("evil-1", svc, port=8082, meta={"medic_compose_project": "shop"})  # half the owner
    agent.register_ttl("evil-2", svc, port=8083)
    cache = str(tmp_path / "cache")
    r = sc.run_check([svc, "--specs", specs, "--consul-addr", agent.addr], cache)
    assert r.returncode == 2 and "%s 1/2 passing" % svc in r.stdout, r.stdout + r.stderr  # heal would act
    write_spec(tmp_path, svc, 2, membership="any")  # the operator widens it on purpose
    r = sc.run_check([svc, "--specs", specs, "--consul-addr", agent.addr], cache)
    assert r.returncode == 1 and "%s 3/2 passing" % svc in r.stdout, r.stdout + r.stderr


def test_lb_from_specs_renders_only_the_owners_instances(consul_factory, tmp_path, unique):
    support.require(support_lb.nginx_available(), "nginx")
    agent = consul_factory()
    svc = "redis-members-%s" % unique
    specs = write_spec(tmp_path, svc, 2)
    agent.register_ttl("r-master", svc, port=7001, tags=["master"], meta=MINE)
    agent.register_ttl("r-slave", svc, port=7002, tags=["slave"], meta=MINE)
    agent.register_ttl("r-untagged", svc, port=7003, meta=MINE)
    agent.register_ttl("evil", svc, port=7666, tags=["master"])
    out = tmp_path / "stream.conf"
    (tmp_path / "logs").mkdir()
    port = support.free_port()
    env = support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "audit.jsonl"), MEDIC_NOTIFY="off", MEDIC_CACHE_DIR="")
    check = " ".join([support_lb.nginx_bin(), "-t", "-q", "-p", str(tmp_path) + "/", "-c", "{}"])
    r = support.run_medic("medic-lb", ["--consul-addr", agent.addr, "--specs", specs, "--from-specs", "--template",
                                       "nginx-stream", "--out", str(out), "--check-cmd", check,
                                       "--var", "listen_%s=127.0.0.1:%d" % (svc.replace("-", "_"), port),
                                       "--var", "pid=%s" % (tmp_path / "pid")], env=env)
    assert r.returncode == 1 and "evil" in r.stdout and "not compose project shop service web" in r.stdout, \
        r.stdout + r.stderr
    servers = [ln.strip() for ln in out.read_text().splitlines() if ln.strip().startswith("server 127.")]
    primary = [s for s in servers if " backup" not in s]
    assert [s.split()[1] for s in primary] == ["127.0.0.1:7001"]      # the master alone
    assert sorted(s.split()[1] for s in servers) == ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    refused = [x for x in map(json.loads, open(tmp_path / "audit.jsonl")) if x.get("action") == "refuse"]
    assert [(x["instance"], x["field"]) for x in refused] == [("evil", "owner")]
    assert os.path.exists(out)


def test_untagged_instances_rank_below_the_roles_only_beside_them():
    def entry(sid, tags):
        return {"Node": {"Node": "n"}, "Service": {"ID": sid, "Address": "10.0.0.1", "Port": 1, "Tags": tags},
                "Checks": []}
    insts, _ = lb_view.checked_instances("r", [entry("m", ["master"]), entry("s", ["slave"]), entry("u", [])])
    assert {i.id: i.priority for i in insts} == {"m": 10, "s": 9, "u": 8}
    insts, _ = lb_view.checked_instances("w", [entry("a", []), entry("b", ["http"])])
    assert {i.id: i.priority for i in insts} == {"a": 10, "b": 10}  # no roles: one pool, as before
