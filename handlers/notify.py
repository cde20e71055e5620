"""medic-notify: alerts on warning, critical, heal outcomes and open circuits, on transitions only.

    medic-notify watch --specs DIR    a `checks` watch handler for medic's own `medic`
                                      service (checks `medic:<service>`), payload on stdin
    medic-notify event --specs DIR    one event from medic-heal (handlers.alerts.emit) on stdin
    medic-notify sweep --specs DIR    read those checks from Consul itself: due reminders
                                      and missed transitions (cron, a timer)

Per slot: read the last notified state from Consul KV, decide (notify_core.decide),
store the new state with check-and-set, and only then send (handlers.channels).
A lost CAS means another node or run got there first: re-read, re-decide.
Every decision, sent or not, is one audit record saying why.
"""
import json
import os
import random
import socket
import sys
import threading
import time

from . import audit as audit_mod
from . import channels, keys, notify_core, options, runtime, settings
from . import spec as spec_mod
from .errors import ConsulError, PayloadError, SpecError
from .status import Outcome, Status

DEFAULT_NOTIFY_CONFIG = "/etc/consul-medic/notify.json"
_CAS_TRIES = 20  # with jittered pauses: a burst of writers to one key all get through


# -- configuration ------------------------------------------------------------------
def config_path(explicit=None, environ=None):
    env = os.environ if environ is None else environ
    return explicit or env.get("MEDIC_NOTIFY_CONFIG") or DEFAULT_NOTIFY_CONFIG


def load_config(path):
    """The global notify file -> dict; a missing file is {} (log channel only)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1024 * 1024 + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise SpecError("%s: cannot read notify config: %s" % (path, e.strerror)) from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SpecError("%s: $: not valid JSON: %s" % (path, e)) from None
    validate_config(doc, path)
    return doc


def validate_config(doc, path):
    import jsonschema

    with open(spec_mod.SCHEMA_PATH, encoding="utf-8") as f:
        full = json.load(f)
    schema = {"$schema": full["$schema"], "$defs": full["$defs"], "$ref": "#/$defs/notify"}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        where = "$" + "".join("[%d]" % p if isinstance(p, int) else "." + str(p) for p in best.absolute_path)
        raise SpecError("%s: %s: %s" % (path, where, best.message[:200]))


def resolve_policy(global_conf, spec, where):
    try:
        return notify_core.policy(global_conf, spec.notify if spec is not None else None)
    except ValueError as e:
        raise SpecError("%s: %s" % (where, e)) from None


# -- the state store (Consul KV, check-and-set) ---------------------------------------
class Store:
    """Last notified state per (service, slot) in Consul KV, written with CAS."""

    def __init__(self, client, cfg, env):
        self.client, self.cfg, self.env = client, cfg, env

    def key(self, service, slot):
        return keys.key(self.env, "notify", service, slot)

    def get(self, service, slot):
        """-> (record dict or None, ModifyIndex; 0 when absent)."""
        try:
            _, item = self.client.kv.get(self.key(service, slot), consistency="consistent")
        except Exception as e:
            raise ConsulError("reading %s: %s" % (self.key(service, slot), self.cfg.redact(e))) from None
        if not item:
            return None, 0
        try:
            record = json.loads((item.get("Value") or b"{}").decode("utf-8"))
        except ValueError:
            record = {}
        return (record if isinstance(record, dict) else {}), item["ModifyIndex"]

    def circuit_opened(self, service):
        """When medic-heal's open-circuit marker (`keys.key(env, "circuit", service)`,
        `{"opened": ...}`) says the circuit opened, or None: tells one crash loop from the next."""
        try:
            _, item = self.client.kv.get(keys.key(self.env, "circuit", service), consistency="consistent")
            opened = json.loads((item or {}).get("Value") or b"null")
        except Exception:
            return None  # a marker only: without it, the state alone decides
        return str(opened.get("opened")) if isinstance(opened, dict) and opened.get("opened") is not None else None

    def cas(self, service, slot, record, index):
        try:
            return bool(self.client.kv.put(self.key(service, slot), json.dumps(record, sort_keys=True), cas=index))
        except Exception as e:
            raise ConsulError("writing %s: %s" % (self.key(service, slot), self.cfg.redact(e))) from None


# -- one slot ---------------------------------------------------------------------------
class Notifier:
    def __init__(self, store, audit, env, clock=time.time, host=None):
        self.store, self.audit, self.env, self.clock = store, audit, env, clock
        self.host = host or socket.gethostname()
        self.note = None  # said in every audit record of this run (e.g. why no spec applied)

    def handle(self, obs, policy, spec=None):
        """Decide, claim with CAS, send. -> (decision, [channels.Result])."""
        (_, decision, results), = self.handle_many([(obs, policy, spec)])
        return decision, results

    def handle_many(self, items):
        """[(observation, policy, spec)] -> [(observation, decision, results)].

        Claims run one after another (each a KV read and a CAS write); the messages
        then go out in parallel, so one hanging channel costs one budget, not one
        per service. A Consul failure sends nothing for that slot (without the state
        store news cannot be told from a replay): audited, then raised after the
        slots already claimed have been sent.
        """
        claimed, error = [], None
        for obs, policy, spec in items:
            try:
                claimed.append((obs, policy, spec) + self._claim(obs, policy))
            except ConsulError as e:
                self._audit(obs, notify_core.Decision(False, obs.kind, None, "not sent: %s" % e, False), None, [],
                            result="error")
                error = error or e
        outcomes = [None] * len(claimed)

        def send(i, obs, policy, spec, decision, previous, now):
            results = []
            if decision.send:
                msg = notify_core.message(obs, decision, self.env, spec, previous, now, self.host)
                results = channels.send_all(policy.channels, msg, notify_core.document(msg, obs))
            outcomes[i] = results

        threads = [threading.Thread(target=send, args=(i,) + c, daemon=True) for i, c in enumerate(claimed)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = []
        for (obs, policy, spec, decision, previous, now), results in zip(claimed, outcomes):
            self._audit(obs, decision, previous, results or [])
            if decision.record and obs.slot != notify_core.HEAL_SLOT and obs.state == "passing" \
                    and (previous or {}).get("state") not in (None, "passing"):
                try:
                    self._reset_heal_slot(obs)
                except ConsulError as e:
                    error = error or e
            out.append((obs, decision, results or []))
        if error is not None:
            raise error
        return out

    def _claim(self, obs, policy):
        """-> (decision, previous record, now); the decision's record is stored when it returns."""
        for _ in range(_CAS_TRIES):
            now = round(self.clock(), 3)
            previous, index = self.store.get(obs.service, obs.slot)
            decision = notify_core.decide(previous, obs, now, policy)
            if decision.record is None or self.store.cas(obs.service, obs.slot, decision.record, index):
                return decision, previous, now
            time.sleep(random.uniform(0.005, 0.05))  # lost the race: let the winner finish, re-read
        return notify_core.Decision(False, obs.kind, None, "gave up: the state key kept changing under us "
                                    "(%d check-and-set conflicts)" % _CAS_TRIES, False), None, now

    def _reset_heal_slot(self, obs):
        """A recovered service starts afresh: the next open circuit or failed heal is news."""
        for _ in range(_CAS_TRIES):
            previous, index = self.store.get(obs.service, notify_core.HEAL_SLOT)
            if not previous or previous.get("state") not in ("circuit_open", "heal_failed"):
                return
            record = dict(previous, state="passing", previous=previous.get("state"), since=self.clock())
            if self.store.cas(obs.service, notify_core.HEAL_SLOT, record, index):
                return

    def _audit(self, obs, decision, previous, results, result=None):
        if self.audit is None:
            return
        rec = {"kind": "notification", "source": obs.source, "service": obs.service, "env": self.env,
               "slot": obs.slot, "previous": (previous or {}).get("state"), "state": obs.state,
               "event": obs.kind, "live": obs.live, "desired": obs.desired, "index": obs.index,
               "audit_ref": obs.audit_ref, "decision": "send" if decision.send else "none",
               "reminder": decision.reminder, "reason": decision.reason,
               "channels": [r._asdict() for r in results]}
        if self.note:
            rec["note"] = self.note
        failed = [r for r in results if not r.ok]
        if failed:
            rec["result"] = "channel_failed"
            rec["failed"] = ["%s: %s" % (r.channel, r.error) for r in failed]
        elif decision.send:
            rec["result"] = "sent"
        else:
            rec["result"] = result or "suppressed"
        try:
            self.audit.write(rec)
        except OSError as e:
            sys.stderr.write("medic-notify: cannot write audit log: %s\n" % e.strerror)


# -- commands ------------------------------------------------------------------------------
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
    from watches import PayloadError as WatchPayloadError
    from watches._common import read_stream
    try:
        return read_stream(stream)
    except WatchPayloadError as e:
        raise PayloadError(str(e)) from None


def run_watch(stream, _payload=None, **kw):
    from watches import PayloadError as WatchPayloadError
    from watches import checks as checks_payload

    data = _read_stdin(stream) if _payload is None else _payload
    try:
        checks = checks_payload.parse(data)
    except WatchPayloadError as e:
        raise PayloadError("checks watch: %s" % e) from None
    env_name = settings.environment(kw.get("env"))
    specs = spec_mod.load_dir(spec_mod.specs_dir(kw.get("specs")), env_name)
    addrs = {s.consul_addr for s in specs.values() if s.consul_addr}
    env, cfg, global_conf = _setup(kw, spec_addr=addrs.pop() if len(addrs) == 1 else None)
    from . import acl  # site: a payload or read ACLs filtered is not "0 services"
    acl.require_settings(cfg, acl.notify_needs(env))
    policies = {name: resolve_policy(global_conf, s, s.path) for name, s in specs.items()}
    audit = _audit_log(kw, cfg, policies.values())
    notifier = Notifier(Store(settings.make_client(cfg), cfg, env), audit, env)
    observations = notify_core.observe_checks(checks, specs)
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
    except Exception as e:
        raise ConsulError("reading the checks of service %r: %s" % (kw.get("medic_service") or "medic",
                                                                  cfg.redact(e))) from None
    return run_watch(None, _payload=json.dumps(raw or []), **kw)


def run_event(stream, **kw):
    from watches._common import decode
    from watches import PayloadError as WatchPayloadError

    data = _read_stdin(stream)
    try:
        event = decode(data)
        obs = notify_core.observe_event(event)
    except (WatchPayloadError, ValueError) as e:
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
    store = Store(settings.make_client(cfg), cfg, env)
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
    head = runtime.status_line(status, "notify %s: %d service(s), %d message(s) sent%s"
                               % (what, seen, sent, ", %d channel failure(s)" % failed if failed else ""))
    return Outcome(status, "\n".join([head] + lines))


def _command():
    import click

    def notify_options(f):
        f = click.option("--audit-log", "audit_log", metavar="FILE",
                         help="Audit log [env MEDIC_AUDIT_LOG; /var/lib/consul-medic/audit.jsonl].")(f)
        f = click.option("--notify-config", "notify_config", metavar="FILE",
                         help="Global notify file [env MEDIC_NOTIFY_CONFIG; %s; missing: log channel only]."
                         % DEFAULT_NOTIFY_CONFIG)(f)
        return options.common(f)

    @click.group(help=__doc__.split("\n\n")[0], invoke_without_command=True)
    @click.pass_context
    def cli(ctx):
        if ctx.invoked_subcommand is None:
            raise click.UsageError("a command is needed: watch, event or sweep (see --help)")

    @cli.command(help="Handle a `checks` watch payload (medic's own checks) on stdin.")
    @notify_options
    def watch(**kw):
        return run_watch(sys.stdin, **kw)

    @cli.command(help="Handle one medic-heal event (JSON) on stdin.")
    @notify_options
    def event(**kw):
        return run_event(sys.stdin, **kw)

    @cli.command(help="Read medic's checks from Consul and notify as the watch would: "
                      "reminders that are due, transitions a watch run missed. For cron.")
    @notify_options
    @click.option("--medic-service", "medic_service", default="medic", show_default=True,
                  help="The Consul service carrying the checks medic:<service>.")
    def sweep(**kw):
        return run_sweep(**kw)

    return cli


def main():
    runtime.run(command=_command, deadline=120.0)
