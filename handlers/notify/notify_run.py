"""medic-notify's three runs: `watch` (a checks payload), `sweep` (read the checks from
Consul) and `event` (one medic-heal event). Each builds its parts (specs, settings,
policies, audit log, store) and hands the alerts to one Notifier.
"""
import json

from ..core import audit as audit_mod
from . import channels, notify_rules
from ..consul import consul_errors, settings
from ..spec import spec as spec_mod
from ..core.errors import ConsulError, PayloadError, SpecError
from .notifier import Notifier
from .notify_config import config_path, load_config, resolve_policy
from .notify_state import AlertStore
from ..core.runtime import status_line
from ..core.status import Outcome, Status


def _setup(kw, spec_addr=None):
    env = settings.environment(kw.get("env"))
    cfg = settings.resolve(kw.get("consul_addr"), kw.get("token"), kw.get("token_file"),
                           kw.get("consul_timeout"), spec_addr=spec_addr)
    global_conf = load_config(config_path(kw.get("notify_config")))
    return env, cfg, global_conf


def _audit_log(kw, cfg, policies):
    secrets = [cfg.token] if cfg.token else []
    for p in policies:
        secrets += channels.secrets(p.channels)
    return audit_mod.AuditLog(audit_mod.audit_path(kw.get("audit_log")), secrets=secrets)


def _read_stdin(stream):
    from ...watches._common import read_stream
    return read_stream(stream)


def run_watch(stream, _payload=None, **kw):
    from ...watches import checks as checks_payload

    data = _read_stdin(stream) if _payload is None else _payload
    try:
        checks = checks_payload.parse(data)
    except PayloadError as e:
        raise PayloadError("checks watch: %s" % e) from None
    env_name = settings.environment(kw.get("env"))
    specs = spec_mod.load_dir(spec_mod.specs_dir(kw.get("specs")), env_name)
    addrs = {s.consul_addr for s in specs.values() if s.consul_addr}
    env, cfg, global_conf = _setup(kw, spec_addr=addrs.pop() if len(addrs) == 1 else None)
    from ..consul import acl  # a payload or read that ACLs filtered is not "0 services"
    acl.require_settings(cfg, acl.notify_needs(env))
    policies = {name: resolve_policy(global_conf, s, s.path) for name, s in specs.items()}
    audit = _audit_log(kw, cfg, policies.values())
    store = AlertStore(settings.make_client(cfg), cfg, env)
    observations = notify_rules.observe_checks(checks, specs)
    if len(observations) > 1:
        store.prefetch()
    notifier = Notifier(store, audit, env)
    sent, failed, lines = 0, 0, []
    done = notifier.handle_many([(obs, policies[svc], specs[svc]) for svc, obs in observations.items()])
    for obs, decision, results in done:
        sent += decision.send
        failed += sum(not r.ok for r in results)
        lines.append("%s: %s (%s)" % (obs.service, "sent " + obs.kind if decision.send else "nothing sent",
                                      decision.reason))
    return _outcome("sweep" if _payload is not None else "watch", len(observations), sent, failed, lines)


def run_sweep(**kw):
    """Re-read medic's own checks from Consul and apply the watch's rule.

    For reminders while a problem persists (a steady check makes no watch fire), and
    to catch up on a transition a watch run missed. Run it from cron or a timer.
    """
    env_name = settings.environment(kw.get("env"))
    specs = spec_mod.load_dir(spec_mod.specs_dir(kw.get("specs")), env_name)
    addrs = {s.consul_addr for s in specs.values() if s.consul_addr}
    _, cfg, _ = _setup(kw, spec_addr=addrs.pop() if len(addrs) == 1 else None)
    client = settings.make_client(cfg)
    try:
        # py-consul's health endpoints take no consistency mode: the default (leader) read
        _, raw = client.health.checks(kw.get("medic_service") or "medic")
    except consul_errors.failures() as e:
        raise ConsulError("reading the checks of service %r: %s" % (kw.get("medic_service") or "medic",
                                                                  consul_errors.explain(cfg, e))) from None
    return run_watch(None, _payload=json.dumps(raw or []), **kw)


def run_event(stream, **kw):
    from ...watches._common import decode

    data = _read_stdin(stream)
    try:
        event = decode(data)
        obs = notify_rules.observe_event(event)
    except ValueError as e:  # PayloadError is a ValueError too
        raise PayloadError("event: %s" % e) from None
    env_name = settings.environment(kw.get("env") or event.get("env"))
    try:
        spec, note = spec_mod.find(spec_mod.specs_dir(kw.get("specs")), obs.service, env_name), None
    except SpecError as e:
        # no (valid) spec here: the global notify file alone decides where it goes; say so
        spec, note = None, "spec not used: %s" % e
    env, cfg, global_conf = _setup(dict(kw, env=env_name), spec_addr=spec.consul_addr if spec else None)
    policy = resolve_policy(global_conf, spec, spec.path if spec else config_path(kw.get("notify_config")))
    audit = _audit_log(kw, cfg, [policy])
    store = AlertStore(settings.make_client(cfg), cfg, env)
    if obs.kind == "circuit_open":
        obs = obs._replace(circuit=store.circuit_opened(obs.service))
    notifier = Notifier(store, audit, env)
    notifier.note = note
    decision, results = notifier.handle(obs, policy, spec)
    failed = sum(not r.ok for r in results)
    line = "%s: %s (%s)" % (obs.service, "sent " + obs.kind if decision.send else "nothing sent", decision.reason)
    if note:
        line += "; " + note
    return _outcome("event", 1, int(decision.send), failed, [line])


def _outcome(what, seen, sent, failed, lines):
    status = Status.WARNING if failed else Status.OK
    head = status_line(status, "notify %s: %d service(s), %d message(s) sent%s"
                               % (what, seen, sent, ", %d channel failure(s)" % failed if failed else ""))
    return Outcome(status, "\n".join([head] + lines))
