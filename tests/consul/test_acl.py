"""ACLs on, default deny: each executable works with its role's token, and without one (or with
a weaker one) says so in one line and exits 3, changing nothing. A real Consul 1.8 agent with
ACLs enabled (master token set in its config, policies and tokens created through the HTTP API)."""
import json
import pytest

import support
import support_heal
from consul_medic.handlers.consul import acl
from consul_medic.handlers.core.errors import UsageError

MASTER = "site-master-5b1e0c7a-0000-4000-8000-000000000001"
ACL_CONFIG = {"primary_datacenter": "dc1", "check_update_interval": "0s",
              "acl": {"enabled": True, "default_policy": "deny", "down_policy": "extend-cache",
                      "tokens": {"master": MASTER, "agent": MASTER}}}


# -- pure ---------------------------------------------------------------------------------
def test_policy_per_role_names_services_prefixes_and_node():
    mon = acl.policy("monitor", ["web.site", "api.site"], ["live"], "mon1")
    assert 'service "api.site" { policy = "read" }' in mon and 'service "web.site" { policy = "read" }' in mon
    assert 'service "medic" { policy = "write" }' in mon
    assert 'session "mon1" { policy = "write" }' in mon
    assert 'key_prefix "medic/live/" { policy = "read" }' in mon
    assert 'key_prefix "medic/live/history/" { policy = "write" }' in mon
    assert "medic/default/" not in mon and "operator" not in mon and "acl =" not in mon
    reg = acl.policy("registrar", ["web.site"], [None], "dock1")
    assert 'service "web.site" { policy = "write" }' in reg and 'node "dock1" { policy = "read" }' in reg
    assert 'key_prefix "medic/default/wake/" { policy = "write" }' in reg
    assert 'key_prefix "medic/default/roles/" { policy = "read" }' in reg
    assert "history" not in reg and "session" not in reg
    rd = acl.policy("reader", ["web.site"], ["test", "live"], "x")
    assert '"write"' not in rd and 'key_prefix "medic/test/" { policy = "read" }' in rd


@pytest.mark.parametrize("raw", ["", "admin", "monitor@", "monitor@a b", 'reader@a"b'])
def test_parse_role_refuses(raw):
    if raw == "monitor@":
        assert acl.parse_role(raw, "host") == ("monitor", "host")
        return
    with pytest.raises(UsageError):
        acl.parse_role(raw, "host")


def test_describe():
    assert acl.describe(("node", "", "read")) == "node:read on every node"
    assert acl.describe(("service", "web", "read")) == "service:read on web"


# -- a real agent with ACLs on --------------------------------------------------------------
class AclAgent(support.ConsulAgent):
    """A dev agent with ACLs on; the test's own API calls use the master token."""

    def api(self, path, method="GET", body=None, token=MASTER):
        return support.http_json(self.addr + path, method, body, token)

    def wait_ready(self, wait_leader=True, timeout=30):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("consul exited: %s" % self.log_tail())
            try:
                return bool(self.api("/v1/catalog/node/" + self.node))
            except (OSError, ValueError):
                return False
        support.wait_for(ready, timeout=timeout, what="ACL agent ready")


@pytest.fixture(scope="module")
def acl_agent(consul_bin):
    agent = AclAgent(node="site-acl-%d" % support.free_port(), config=ACL_CONFIG)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()


def make_token(agent, name, rules):
    pol = agent.api("/v1/acl/policy", "PUT", {"Name": name, "Rules": rules})
    return agent.api("/v1/acl/token", "PUT", {"Policies": [{"ID": pol["ID"]}], "Description": name})["SecretID"]


def role_rules(specs, role, node):
    r = support.run_medic("medic-config", ["--specs", specs, "--acl-policy", "%s@%s" % (role, node)])
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def token_file(tmp_path, name, token):
    path = tmp_path / ("token-" + name)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def run(cmd, args, agent, token_path=None, **extra):
    env = support.medic_env(CONSUL_HTTP_ADDR=agent.addr, MEDIC_CACHE_DIR="", MEDIC_NOTIFY="off", **extra)
    if token_path:
        env["CONSUL_HTTP_TOKEN_FILE"] = token_path
    return support.run_medic(cmd, args, env=env)


def one_line_unknown(r, *words):
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 3, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith("MEDIC UNKNOWN - "), r.stdout
    for w in words:
        assert w in lines[0], lines[0]
    assert MASTER not in r.stdout + r.stderr


@pytest.fixture
def world(acl_agent, tmp_path, unique):
    """A spec dir with one service `site-<unique>.example` (2 instances) and the role tokens."""
    service = "site-%s.example" % unique
    specs = str(tmp_path / "specs")
    support_heal.write_spec(specs, service, "site%s" % unique, instances=2,
                            heal={"replace_failing": True, "grace": "1s"})
    node = acl_agent.node
    toks = {role: token_file(tmp_path, role, make_token(acl_agent, "site-%s-%s" % (role, unique),
                                                        role_rules(specs, role, node)))
            for role in acl.ROLES}
    weak_rules = 'service "%s" { policy = "read" }\nkey_prefix "medic/" { policy = "write" }\n' % service
    toks["weak"] = token_file(tmp_path, "weak", make_token(acl_agent, "site-weak-" + unique, weak_rules))
    return {"service": service, "specs": specs, "tokens": toks, "unique": unique}


def register_ttl(agent, sid, service, status="passing"):
    """An instance of the world's compose owner (project site<unique>, service web), as medic-register writes it."""
    owner = {"medic_compose_project": service.split(".")[0].replace("-", ""), "medic_compose_service": "web"}
    agent.api("/v1/agent/service/register", "PUT",
              {"ID": sid, "Name": service, "Port": 80, "Meta": owner, "Check": {"TTL": "10m", "Status": status}})
    verb = {"passing": "pass", "critical": "fail"}[status]
    agent.api("/v1/agent/check/%s/service:%s" % (verb, sid), "PUT")


def deregister(agent, sid):
    try:
        agent.api("/v1/agent/service/deregister/" + sid, "PUT")
    except OSError:  # already gone
        pass


def kv_keys(agent, prefix):
    try:
        return agent.api("/v1/kv/%s?keys" % prefix) or []
    except Exception as e:  # 404: none
        if getattr(e, "code", None) == 404:
            return []
        raise


@pytest.mark.consul
def test_every_role_policy_is_valid_consul_hcl(acl_agent, world):
    # the fixture created one policy per role through the API: Consul parsed every rule set
    pols = {p["Name"] for p in acl_agent.api("/v1/acl/policies")}
    assert {"site-%s-%s" % (r, world["unique"]) for r in acl.ROLES} <= pols


@pytest.mark.consul
def test_check_with_role_token_and_without(acl_agent, world):
    svc, specs, tok = world["service"], world["specs"], world["tokens"]
    for i in (1, 2):
        register_ttl(acl_agent, "%s-%d" % (svc, i), svc)
    try:
        for role in ("monitor", "reader"):
            r = run("medic-check", [svc, "--specs", specs], acl_agent, tok[role])
            assert r.returncode == 0 and "2/2 passing" in r.stdout, (role, r.stdout)
        # no token: Consul answers `200 []`; that is never "CRITICAL 0/2"
        one_line_unknown(run("medic-check", [svc, "--specs", specs], acl_agent),
                         "acl:", "anonymous", "service:read on " + svc, "node:read on every node")
        one_line_unknown(run("medic-check", [svc, "--specs", specs], acl_agent, tok["weak"]),
                         "acl:", "CONSUL_HTTP_TOKEN_FILE", "node:read on every node")
        # a real shortfall with the right token is still CRITICAL (the probe hides nothing)
        register_ttl(acl_agent, "%s-2" % svc, svc, "critical")
        r = run("medic-check", [svc, "--specs", specs], acl_agent, tok["monitor"])
        assert r.returncode == 2 and "1/2 passing" in r.stdout, r.stdout
        for i in (1, 2):
            deregister(acl_agent, "%s-%d" % (svc, i))
        r = run("medic-check", [svc, "--specs", specs], acl_agent, tok["monitor"])
        assert r.returncode == 2 and "0/2 passing" in r.stdout, r.stdout
    finally:
        for i in (1, 2):
            deregister(acl_agent, "%s-%d" % (svc, i))


@pytest.mark.consul
def test_status_with_reader_token_and_without(acl_agent, world):
    svc, specs, tok = world["service"], world["specs"], world["tokens"]
    for i in (1, 2):
        register_ttl(acl_agent, "%s-%d" % (svc, i), svc)
    try:
        r = run("medic-status", ["--specs", specs, "--no-engine", "--json"], acl_agent, tok["reader"])
        assert r.returncode == 0, r.stdout
        row, = json.loads(r.stdout)["services"]
        assert row["passing"] == 2 and row["error"] is None
        r = run("medic-status", ["--specs", specs, "--no-engine"], acl_agent)
        assert r.returncode == 3 and "0" not in r.stdout.splitlines()[1].split()[3:4], r.stdout
        err = [ln for ln in r.stdout.splitlines() if "acl:" in ln]
        assert len(err) == 1 and "anonymous" in err[0], r.stdout
    finally:
        for i in (1, 2):
            deregister(acl_agent, "%s-%d" % (svc, i))


@pytest.mark.consul
def test_notify_sweep_with_monitor_token_and_without(acl_agent, world, tmp_path):
    svc, specs, tok = world["service"], world["specs"], world["tokens"]
    mid = "medic-site-" + world["unique"]
    acl_agent.api("/v1/agent/service/register", "PUT", {
        "ID": mid, "Name": "medic", "Checks": [{"CheckID": "medic:" + svc, "Name": "medic count", "TTL": "10m"}]})
    acl_agent.api("/v1/agent/check/update/medic:" + svc, "PUT", {
        "Status": "critical", "Output": "MEDIC CRITICAL - %s 1/2 passing | passing=1;;;0 desired=2;;;0" % svc})
    support.wait_for(lambda: any(c["Output"].startswith("MEDIC") for c in acl_agent.api("/v1/health/checks/medic")),
                     what="the medic check's output in the catalog")
    audit = str(tmp_path / "audit.jsonl")
    args = ["sweep", "--specs", specs, "--audit-log", audit, "--notify-config", str(tmp_path / "none.json")]
    try:
        for t in (None, tok["weak"], tok["reader"]):
            r = run("medic-notify", args, acl_agent, t)
            one_line_unknown(r, "acl:")
            assert kv_keys(acl_agent, "medic/default/notify/" + svc) == [], "a refused run wrote state"
        r = run("medic-notify", args, acl_agent, tok["monitor"])
        assert r.returncode == 0 and "1 service(s)" in r.stdout, r.stdout + r.stderr
        assert kv_keys(acl_agent, "medic/default/notify/" + svc), "the monitor token could not store state"
    finally:
        acl_agent.api("/v1/agent/service/deregister/" + mid, "PUT")
        acl_agent.api("/v1/kv/medic/default/notify/%s?recurse" % svc, "DELETE")


COMPOSE = """services:
  web:
    image: ${MEDIC_DEMO_IMAGE:-medic-demo:latest}
    ports:
      - "127.0.0.1::80"
    labels:
      SERVICE_NAME: %s
      SERVICE_CHECK_HTTP: /cgi-bin/health
      SERVICE_CHECK_INTERVAL: 1s
      SERVICE_CHECK_TIMEOUT: 1s
"""


@pytest.mark.consul
@pytest.mark.docker
def test_register_and_heal_with_role_tokens_and_without(acl_agent, world, tmp_path, docker_client, compose,
                                                        demo_image):
    svc, tok, unique = world["service"], world["tokens"], world["unique"]
    project = "site%s" % unique
    cfile = tmp_path / "compose.yml"
    cfile.write_text(COMPOSE % svc)
    specs = str(tmp_path / "specs-heal")
    support_heal.write_spec(specs, svc, project, instances=2, file=str(cfile),
                            heal={"replace_failing": True, "grace": "1s"})
    audit = str(tmp_path / "audit.jsonl")
    reg_args = ["--once", "--filter", "com.docker.compose.project=" + project, "--audit-log", audit,
                "--ip", "127.0.0.1"]
    try:
        support_heal.compose_up(project, 2, file=str(cfile))
        ids = sorted(c.id for c in support_heal.running(docker_client, project))
        assert len(ids) == 2
        # medic-register: no token / a read-only token register nothing
        for t in (None, tok["reader"]):
            r = run("medic-register", reg_args, acl_agent, t)
            one_line_unknown(r, "Consul refused 2 of 2 writes", "0 registered")
            assert support_heal.passing(acl_agent, svc) == 0 and not acl_agent.api("/v1/health/service/" + svc)
        r = run("medic-register", reg_args, acl_agent, tok["registrar"])
        assert r.returncode == 0, r.stdout + r.stderr
        support.wait_for(lambda: support_heal.passing(acl_agent, svc) == 2, timeout=30, what="2 passing")

        # the monitor rules without `service "<svc>" read`: the lock works, the health read is
        # filtered to [] and the two healthy containers would look failing (replace_failing is on)
        blind_rules = role_rules(world["specs"], "monitor", acl_agent.node).replace(
            'service "%s" { policy = "read" }' % svc, "")
        blind = token_file(tmp_path, "blind", make_token(acl_agent, "site-blind-" + unique, blind_rules))
        heal = ["--service", svc, "--specs", specs, "--audit-log", audit]
        for t in (None, tok["weak"], tok["reader"], tok["registrar"], blind):
            r = run("medic-heal", heal, acl_agent, t)
            one_line_unknown(r, "nothing changed")
            assert "acl:" in r.stdout or "permission denied" in r.stdout.lower(), r.stdout
            if t == blind:
                assert "acl: token (from CONSUL_HTTP_TOKEN_FILE) lacks service:read on " + svc in r.stdout
            assert sorted(c.id for c in support_heal.running(docker_client, project)) == ids, "containers changed"
            assert kv_keys(acl_agent, "medic/default/history/" + svc) == []
        r = run("medic-heal", heal, acl_agent, tok["monitor"])
        assert r.returncode == 0 and "noop" in r.stdout, r.stdout + r.stderr
        assert sorted(c.id for c in support_heal.running(docker_client, project)) == ids
        assert acl_agent.api("/v1/session/node/" + acl_agent.node) == [], "lock session left behind"
        # and a real heal with nothing but the monitor rules: lock, observe, scale, history
        docker_client.containers.get(ids[0]).kill()
        r = run("medic-heal", heal, acl_agent, tok["monitor"])
        assert r.returncode == 0 and "heal(" in r.stdout and "scaled" in r.stdout, r.stdout + r.stderr
        assert len(support_heal.running(docker_client, project)) == 2
        assert kv_keys(acl_agent, "medic/default/history/" + svc), "history not written"
        assert acl_agent.api("/v1/session/node/" + acl_agent.node) == [], "lock session left behind"
    finally:
        support_heal.compose_down(project, file=str(cfile))
        for e in acl_agent.api("/v1/agent/services").values():
            if e["Service"] == svc:
                acl_agent.api("/v1/agent/service/deregister/" + e["ID"], "PUT")
        acl_agent.api("/v1/kv/medic/default/?recurse", "DELETE")


@pytest.mark.consul
def test_disabled_acls_deny_nothing(consul_agent):
    """On an agent without ACLs the probe answers 'nothing denied' (HTTP 401 'ACL support disabled')."""
    from consul_medic.handlers.consul import lighthttp, settings

    st = settings.resolve(consul_agent.addr, environ={})
    with lighthttp.Connection(st) as conn:
        assert acl.denied(conn, acl.service_read("anything")) == []
        assert acl._denied_fallback(conn, acl.service_read("anything")) == []


@pytest.mark.consul
def test_fallback_probe_on_acl_agent(acl_agent, world):
    """Older Consul without /v1/internal/acl/authorize: refused reads and an empty node list tell."""
    from consul_medic.handlers.consul import lighthttp, settings

    with open(world["tokens"]["weak"]) as f:
        weak = f.read().strip()
    for token, expect in ((None, 2), (weak, 1), (MASTER, 0)):
        st = settings.resolve(acl_agent.addr, token=token, environ={})
        with lighthttp.Connection(st) as conn:
            assert len(acl._denied_fallback(conn, acl.service_read(world["service"]))) == expect, token


@pytest.mark.consul
def test_batch_check_says_unknown_for_what_acls_hide(acl_agent, world, tmp_path):
    svc, specs, tok = world["service"], world["specs"], world["tokens"]
    for i in (1, 2):
        register_ttl(acl_agent, "%s-%d" % (svc, i), svc)
    try:
        r = run("medic-check", ["--all", "--specs", specs], acl_agent, tok["monitor"])
        assert r.returncode == 0 and "1 ok" in r.stdout, r.stdout
        # --ttl: the monitor rules may update the TTL check medic:<service> on service `medic`
        acl_agent.api("/v1/agent/service/register", "PUT", {
            "ID": "medic", "Name": "medic", "Checks": [{"CheckID": "medic:" + svc, "Name": "count", "TTL": "1m"}]})
        r = run("medic-check", ["--all", "--ttl", "--specs", specs], acl_agent, tok["monitor"])
        assert r.returncode == 0 and "written=1" in r.stdout, r.stdout
        assert acl_agent.api("/v1/agent/checks")["medic:" + svc]["Status"] == "passing"
        r = run("medic-check", ["--all", "--ttl", "--specs", specs], acl_agent, tok["reader"])
        assert r.returncode == 3 and "permission denied" in r.stdout.lower(), r.stdout
        for t in (None, tok["weak"]):
            r = run("medic-check", ["--all", "--specs", specs], acl_agent, t)
            assert r.returncode == 3 and "1 unknown" in r.stdout and "0 critical" in r.stdout, r.stdout
            assert "acl: token" in r.stdout and "lacks" in r.stdout, r.stdout
    finally:
        for i in (1, 2):
            deregister(acl_agent, "%s-%d" % (svc, i))
        deregister(acl_agent, "medic")


class _Canned:
    """A loopback HTTP server answering every request with one status and body (error paths)."""

    def __init__(self, status, body):
        import http.server
        import threading

        canned = (status, body.encode())

        class H(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                self.send_response(canned[0])
                self.send_header("Content-Length", str(len(canned[1])))
                self.end_headers()
                self.wfile.write(canned[1])

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *a):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status,body,outcome", [
    (401, "ACL support disabled", []),
    (401, "Unauthorized", "HTTP 401"),            # e.g. an auth proxy: never read as "ACLs off"
    (500, "boom", "HTTP 500"),
    (200, "[]", "unexpected answer"),             # an answer that does not match the question
    (200, "not json", "not JSON"),
    (403, "ACL not found", "rejects the token"),
    (404, "no such endpoint", []),                # older Consul: the fallback probes (404: not denied)
])
def test_probe_error_paths(status, body, outcome):
    from consul_medic.handlers.consul import lighthttp, settings
    from consul_medic.handlers.core.errors import ConsulError

    srv = _Canned(status, body)
    try:
        st = settings.resolve(srv.addr, environ={})
        with lighthttp.Connection(st) as conn:
            if isinstance(outcome, list):
                assert acl.denied(conn, acl.service_read("web")) == outcome
            else:
                with pytest.raises(ConsulError) as e:
                    acl.denied(conn, acl.service_read("web"))
                assert outcome in str(e.value)
    finally:
        srv.close()
