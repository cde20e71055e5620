"""medic-failover against an attacker (issue 23), with real redis-server processes on loopback and a
real Consul agent: a rogue Redis registered under the service name, claiming role:slave with a huge
offset and another replication ID, is never promoted; an instance outside the owner the spec names
is never contacted; Redis AUTH comes from a file and never shows."""
import json
import os
import shutil
import signal
import subprocess

import pytest

import support

pytestmark = [pytest.mark.consul]


class RedisServer:
    def __init__(self, tmp, name, password=None, tls=None):
        self.port = support.free_port()
        self.dir = os.path.join(str(tmp), name)
        os.makedirs(self.dir)
        self.tls = tls
        listen = ["--port", str(self.port)] if not tls else [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", tls["cert"], "--tls-key-file", tls["key"],
            "--tls-ca-cert-file", tls["ca"], "--tls-auth-clients", "no", "--tls-replication", "yes"]
        args = ["redis-server"] + listen + ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                            "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no"]
        if password:
            conf = os.path.join(self.dir, "redis.conf")
            with open(conf, "w") as f:  # the password in a config file, not in the process's argv
                f.write("requirepass %s\nmasterauth %s\n" % (password, password))
            args.insert(1, conf)
        self.password = password
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        support.wait_for(lambda: self.info() is not None, 10, 0.05, "redis-server %s" % name)

    def client(self):
        import redis
        tls = dict(ssl=True, ssl_ca_certs=self.tls["ca"]) if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2, **tls)

    def info(self, section="replication"):
        try:
            r = self.client()
            try:
                return r.info(section)
            finally:
                r.close()
        except Exception:
            return None

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def redis_servers(tmp_path):
    support.require(shutil.which("redis-server"), "redis-server (run `make testbed`)")
    started = []

    def make(name, password=None, tls=None):
        s = RedisServer(tmp_path, name, password, tls)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


def replicaof(server, master):
    r = server.client()
    r.execute_command("REPLICAOF", "127.0.0.1", str(master.port))
    r.close()
    support.wait_for(lambda: (server.info() or {}).get("master_link_status") == "up", 20, 0.05, "replica linked")


def failover(agent, tmp_path, svc, *extra):
    env = support.medic_env(MEDIC_AUDIT_LOG=str(tmp_path / "audit.jsonl"), MEDIC_NOTIFY="off", MEDIC_CACHE_DIR="")
    return support.run_medic("medic-failover", [svc, "--consul-addr", agent.addr, "--specs",
                                                str(tmp_path / "specs")] + list(extra), env=env)


def records(tmp_path, **match):
    out = []
    with open(tmp_path / "audit.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if all(r.get(k) == v for k, v in match.items()):
                out.append(r)
    return out


def kv_record(agent, svc):
    import base64
    (item,) = agent.api("/v1/kv/medic/default/failover/" + svc)
    return json.loads(base64.b64decode(item["Value"]))


def test_a_rogue_replica_with_a_huge_offset_and_another_history_is_never_promoted(consul_factory, redis_servers,
                                                                                   tmp_path, unique):
    agent = consul_factory()
    svc = "redis-rogue-%s" % unique
    (tmp_path / "specs").mkdir()
    m, r = redis_servers("m"), redis_servers("r")
    replicaof(r, m)
    m.client().set("k", "ours")
    agent.register_ttl("m", svc, port=m.port, tags=["master"])
    agent.register_ttl("r", svc, port=r.port, tags=["slave"])
    p = failover(agent, tmp_path, svc)
    assert p.returncode == 0, p.stdout + p.stderr
    rec = kv_record(agent, svc)
    assert rec["master"] == "m" and rec["replid"] == m.info()["master_replid"]  # the history medic trusts

    # the attacker: its own master with lots of data, a replica of it registered under the service name
    y, x = redis_servers("y"), redis_servers("x")
    replicaof(x, y)
    y.client().set("big", "x" * 2_000_000)
    support.wait_for(lambda: x.info()["slave_repl_offset"] > 1_000_000, 20, 0.05, "rogue offset")
    assert x.info()["master_replid"] != rec["replid"]
    agent.register_ttl("evil", svc, port=x.port, tags=["slave"])

    m.stop()                              # the master is lost
    agent.set_ttl("m", "critical")
    p = failover(agent, tmp_path, svc)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "failover, master r" in p.stdout
    assert r.info()["role"] == "master" and r.client().get("k") == b"ours"
    xi = x.info()
    assert xi["role"] == "slave" and xi["master_port"] == r.port  # made a replica of ours, never the reverse
    rec = kv_record(agent, svc)
    assert rec["master"] == "r" and rec["replid"] == r.info()["master_replid"]  # the new history

    # now the real new master is lost too: only the impostor is left; nothing is promoted
    x2 = redis_servers("x2")
    y2 = redis_servers("y2")
    replicaof(x2, y2)
    y2.client().set("big", "x" * 2_000_000)
    support.wait_for(lambda: x2.info()["slave_repl_offset"] > 1_000_000, 20, 0.05, "second rogue offset")
    agent.deregister("evil")
    agent.register_ttl("evil2", svc, port=x2.port, tags=["slave"])
    r.stop()
    agent.set_ttl("r", "critical")
    p = failover(agent, tmp_path, svc)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no replica shares its replication ID %s: refused evil2" % rec["replid"] in p.stdout
    assert x2.info()["role"] == "slave" and x2.info()["master_port"] == y2.port
    assert kv_record(agent, svc)["master"] == "r"
    holds = records(tmp_path, kind="failover", action="hold")
    assert holds and "refused evil2" in holds[-1]["reason"]


def test_an_instance_outside_the_specs_owner_is_never_contacted(consul_factory, redis_servers, tmp_path, unique):
    agent = consul_factory()
    svc = "redis-owner-%s" % unique
    specs = tmp_path / "specs"
    specs.mkdir()
    (tmp_path / "compose.yml").write_text("services:\n  redis:\n    image: redis\n")
    (specs / (svc + ".json")).write_text(json.dumps({
        "service": svc, "instances": 2,
        "scale": {"driver": "compose", "project": "shop", "file": str(tmp_path / "compose.yml"), "service": "redis"}}))
    mine = {"medic_compose_project": "shop", "medic_compose_service": "redis"}
    m, r, x = redis_servers("m"), redis_servers("r"), redis_servers("x")
    replicaof(r, m)
    agent.register_ttl("m", svc, port=m.port, tags=["master"], meta=mine)
    agent.register_ttl("r", svc, port=r.port, tags=["slave"], meta=mine)
    agent.register_ttl("evil", svc, port=x.port, tags=["master"],
                       meta={"medic_compose_project": "other", "medic_compose_service": "redis"})
    before = x.info("stats")["total_connections_received"]
    p = failover(agent, tmp_path, svc)
    assert p.returncode == 0, p.stdout + p.stderr
    assert x.info("stats")["total_connections_received"] == before + 1  # only this test's own INFO
    assert x.info()["role"] == "master" and m.info()["role"] == "master" and r.info()["master_port"] == m.port
    (ref,) = records(tmp_path, kind="failover", action="refuse")
    assert ref["instance"] == "evil" and ref["field"] == "owner" and "compose project shop service redis" in ref["reason"]
    # the operator widens it on purpose: the instance counts again (split brain: the recorded master is kept)
    doc = json.loads((specs / (svc + ".json")).read_text())
    (specs / (svc + ".json")).write_text(json.dumps(dict(doc, membership="any")))
    p = failover(agent, tmp_path, svc)
    assert p.returncode == 0 and "split_brain, master m" in p.stdout, p.stdout + p.stderr


def test_redis_auth_from_a_file_never_in_argv_or_output(consul_factory, redis_servers, tmp_path, unique):
    agent = consul_factory()
    svc = "redis-auth-%s" % unique
    (tmp_path / "specs").mkdir()
    secret = "s3cret-%s" % unique
    m, r = redis_servers("m", secret), redis_servers("r", secret)
    replicaof(r, m)
    agent.register_ttl("m", svc, port=m.port, tags=["master"])
    agent.register_ttl("r", svc, port=r.port, tags=["slave"])
    pw = tmp_path / "redis.pw"
    pw.write_text(secret + "\n")
    p = failover(agent, tmp_path, svc)          # no password: Redis refuses, nothing is known, nothing done
    assert p.returncode == 2 and "no instance passes and answers" in p.stdout, p.stdout + p.stderr
    p = failover(agent, tmp_path, svc, "--redis-password-file", str(pw))
    assert p.returncode == 0 and "master m" in p.stdout, p.stdout + p.stderr
    assert kv_record(agent, svc)["replid"] == m.info()["master_replid"]
    m.stop()
    agent.set_ttl("m", "critical")
    p = failover(agent, tmp_path, svc, "--redis-password-file", str(pw))
    assert p.returncode == 0 and "failover, master r" in p.stdout, p.stdout + p.stderr
    assert r.info()["role"] == "master"
    assert secret not in p.stdout + p.stderr and secret not in (tmp_path / "audit.jsonl").read_text()


def test_the_owner_is_read_from_the_services_own_spec_and_never_guessed(tmp_path):
    from consul_medic.handlers.failover import __main__ as failover
    from consul_medic.handlers.service import members
    from consul_medic.handlers.core.errors import SpecError
    d = tmp_path / "specs"
    d.mkdir()
    (tmp_path / "compose.yml").write_text("services:\n  redis:\n    image: redis\n")
    (d / "other.json").write_text("{broken")
    assert failover._owner(str(tmp_path / "none"), None, "r.example") is None
    with pytest.raises(SpecError, match="owner is unknown"):
        failover._owner(str(d), None, "r.example")      # it could have been this service's spec
    (d / "r.example.json").write_text(json.dumps({
        "service": "r.example", "instances": 2,
        "scale": {"driver": "compose", "project": "shop", "file": str(tmp_path / "compose.yml"), "service": "redis"}}))
    assert failover._owner(str(d), None, "r.example") == members.Owner("shop", "redis")


def _certs(tmp_path):
    """A CA and a server certificate for 127.0.0.1 (openssl)."""
    d = str(tmp_path / "tls")
    os.makedirs(d)

    def ssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True, timeout=60)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=medic-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.crt",
        "-days", "2", "-extfile", "ext")
    return {"ca": os.path.join(d, "ca.crt"), "cert": os.path.join(d, "srv.crt"), "key": os.path.join(d, "srv.key")}


def test_redis_over_tls_with_the_operators_ca(consul_factory, redis_servers, tmp_path, unique):
    support.require(shutil.which("openssl"), "openssl")
    agent = consul_factory()
    svc = "redis-tls-%s" % unique
    (tmp_path / "specs").mkdir()
    tls = _certs(tmp_path)
    m, r = redis_servers("m", tls=tls), redis_servers("r", tls=tls)
    replicaof(r, m)
    agent.register_ttl("m", svc, port=m.port, tags=["master"])
    agent.register_ttl("r", svc, port=r.port, tags=["slave"])
    p = failover(agent, tmp_path, svc)                 # plain text to a TLS port: no answer, nothing done
    assert p.returncode == 2, p.stdout + p.stderr
    p = failover(agent, tmp_path, svc, "--redis-tls")  # TLS, but the system CAs do not know this one
    assert p.returncode == 2, p.stdout + p.stderr
    p = failover(agent, tmp_path, svc, "--redis-tls", "--redis-cacert", tls["ca"])
    assert p.returncode == 0 and "master m" in p.stdout, p.stdout + p.stderr
    m.stop()
    agent.set_ttl("m", "critical")
    p = failover(agent, tmp_path, svc, "--redis-tls", "--redis-cacert", tls["ca"])
    assert p.returncode == 0 and "failover, master r" in p.stdout, p.stdout + p.stderr
    assert r.info()["role"] == "master"
