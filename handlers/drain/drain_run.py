"""medic-drain's parts, built and joined: specs, the hosts file, engines, agents, locks.

    run(node, undo=False, rebalance=False, hosts_file=..., ...) -> Outcome

The hosts file says where each Docker host's engine and Consul agent are (the multi-host
testbed's hosts.json has this shape; extra keys are ignored):
    {"hosts": [{"node": "medic-host1", "docker_host": "unix:///.../docker.sock",
                "consul_addr": "http://127.0.0.11:8500"}, ...]}
Every compose spec in the specs directory is looked at on every host; the lock of each
such service is taken ("drain") for the whole run, so no heal, rollout or failover acts
meanwhile. The drain record (handlers/service/drain_state.py) tells healers on that node to hold.
"""
import contextlib
import json
import os

from ..core import audit as audit_mod
from ..core.errors import UsageError
from ..core.status import Outcome, Status
from ..core.progress import Progress
from ..consul import api

ENGINE_TIMEOUT = 60.0


def read_hosts(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise UsageError("hosts file %s: %s" % (path, e.strerror or e)) from None
    except ValueError as e:
        raise UsageError("hosts file %s: not JSON: %s" % (path, e)) from None
    items = doc.get("hosts") if isinstance(doc, dict) else doc
    out = {}
    for h in items or ():
        try:
            node, dh, ca = str(h["node"]), str(h["docker_host"]), str(h["consul_addr"])
        except (KeyError, TypeError):
            raise UsageError("hosts file %s: every host needs node, docker_host and consul_addr" % path) from None
        out[node] = (dh, ca, bool(h.get("lost")))
    if not out:
        raise UsageError("hosts file %s lists no host" % path)
    return out


def run(node, undo=False, rebalance=False, hosts_file=None, deadline=60.0, lb_output=None, lb_timeout=30.0,
        stop_timeout=None, dry_run=False, audit_log=None, specs=None, env=None, conn=None, environ=None,
        stream=None):
    from . import drain_exec
    from ..service import drain_state, rollout_image
    from ..consul import lighthttp, settings
    from ..replace import rollout_io, rollout_lock
    from ..spec import spec as spec_mod

    environ = os.environ if environ is None else environ
    conn = conn or {}
    if rebalance and not undo:
        raise UsageError("--rebalance goes with --undo")
    hosts_file = hosts_file or environ.get("MEDIC_HOSTS_FILE")
    if not hosts_file:
        raise UsageError("no hosts file: --hosts FILE or MEDIC_HOSTS_FILE")
    known = read_hosts(hosts_file)
    if node not in known:
        raise UsageError("host %r is not in %s (known: %s)" % (node[:100], hosts_file, ", ".join(sorted(known))))
    env = settings.environment(env, environ)
    specs_dir = spec_mod.specs_dir(specs, environ)
    sps = [sp for sp in spec_mod.load_dir(specs_dir, env).values() if sp.scale.driver == "compose"]
    st = settings.resolve(conn.get("consul_addr"), conn.get("token"), conn.get("token_file"), conn.get("timeout"),
                          environ=environ)
    log = audit_mod.AuditLog(audit_mod.audit_path(audit_log, environ),
                             secrets=[st.token or "", environ.get("CONSUL_HTTP_TOKEN", "")])
    client = settings.make_client(st)

    def audit(rec):
        try:
            log.write(dict(rec, env=env))
        except OSError:
            pass

    def alert(reason):
        from ..core import alerts
        alerts.emit({"kind": "critical", "service": None, "env": env, "live": None, "desired": None,
                     "action": "drain", "reason": reason}, audit=log, env=env, settings=st)

    def record(n, doc):
        if doc is None:
            drain_state.clear(client, env, n)
        else:
            drain_state.write(client, env, n, doc)

    def image(service):
        return rollout_image.read_image(client, env, service)

    with contextlib.ExitStack() as stack:
        hosts = {}
        for n, (docker_host, consul_addr, lost) in sorted(known.items()):
            hconn = stack.enter_context(lighthttp.Connection(st.with_addr(consul_addr)))
            engine = None if lost else _engine(docker_host)
            if engine is not None:
                stack.callback(engine.close)
            eligible = engine is not None and _agent_ok(hconn, n)
            drivers = {} if engine is None else {
                sp.service: rollout_io.ComposeDriver(sp, engine, hconn, environ=dict(environ, DOCKER_HOST=docker_host))
                for sp in sps}
            hosts[n] = drain_exec.Host(n, hconn, drivers, eligible)
        if not hosts[node].drivers and not undo:
            raise UsageError("host %s: its Docker engine at %s does not answer" % (node, known[node][0]))
        out = Progress(stream if stream is not None else open(os.devnull, "w"))
        d = drain_exec.Drainer(hosts, sps, out, audit=audit, alert=alert, record=record, image=image,
                               lb=rollout_io.LbFile(lb_output) if lb_output else None, deadline=deadline,
                               stop_timeout=stop_timeout, lb_timeout=lb_timeout)
        if dry_run:
            return d.undo(node, rebalance, dry_run=True) if undo else d.drain(node, dry_run=True)
        renew = settings.make_client(st)
        for sp in sps:
            got = stack.enter_context(rollout_lock.held(client, env, sp.service, "drain", renew))
            if not got:
                why = rollout_lock.holder_text(client, env, sp.service)
                audit({"kind": "drain", "what": "end", "decision": "refuse", "result": "warning", "reason": why})
                from ..core import runtime
                return Outcome(Status.WARNING, runtime.status_line(Status.WARNING, "%s: refused: %s" % (node, why)))
        return d.undo(node, rebalance) if undo else d.drain(node)


def _engine(docker_host):
    from ..core.errors import EngineError
    from ..engine import engine
    try:
        return engine.connect(docker_host, ENGINE_TIMEOUT, sdk=True)
    except EngineError:
        return None


def _agent_ok(hconn, node):
    """The host's agent answers and its node is not in maintenance."""
    from ..core.errors import MedicError
    try:
        _, checks, _ = hconn.get_json(api.health_node(node))
    except MedicError:
        return False
    return not any(c.get("CheckID") == "_node_maintenance" for c in checks or ())
