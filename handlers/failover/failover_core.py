"""medic-failover's core: lock, observe, decide, act, record, audit, alert.

    run(settings, env, service, audit, alert, tagger) -> Outcome

Takes the per-service lock with operation "failover" (lock.held), so medic-heal, a rollout or
a drain never act on the service at the same time. A lock held by another operation is waited
for (polled every 0.2 s, up to --lock-wait, 10 s): a lost master is urgent, and heal releases
within a scale action. Still held, or the service paused: a deliberate non-action (audited, exit 0). Then observes fresh (Consul health + INFO replication of every
passing instance), calls the pure failover_decide.decide(), and executes in this order:

  1. tag slave (medic-tag's machinery: the role in KV, surviving resyncs) every instance that
     must not be master - the lost master first, so it can never come back as master;
  2. REPLICAOF NO ONE on the chosen replica (verified);
  3. tag it master;
  4. write the failover record (medic/<env>/failover/<service>);
  5. REPLICAOF <master> on every other live instance that is not its replica yet.

Exit: 0 nothing to do, repaired or failed over (or the lock is held / paused); 2 the master is
lost and no healthy replica exists (nothing promoted, alerted), or a Redis step failed;
3 bad input, Consul failure.
"""
import time

from . import failover_decide, failover_io
from ..consul import lock
from ..core import audit as audit_mod, runtime
from ..core.status import Outcome, Status


LOCK_WAIT = 10.0  # seconds a failover waits for heal/rollout/drain to release the service lock


def run(s, env, service, audit=None, alert=None, tagger=None, clock=time.monotonic, lock_wait=LOCK_WAIT,
        sleep=time.sleep):
    from ..consul import settings as settings_mod
    t0 = clock()
    if tagger is None:
        tagger = medic_tag(s, env, audit)
    client = settings_mod.make_client(s)
    rec = {"kind": "failover", "service": service, "env": env}
    while True:  # a lost master is urgent: wait a little for another operation's lock, then give up
        with lock.held(client, env, service, "failover") as got:
            if got:
                return _locked(s, env, service, audit, alert, tagger, clock, t0, rec)
        if clock() - t0 >= lock_wait:
            break
        sleep(0.2)
    holder = lock.ServiceLock(client, env, service).holder() or {}
    why = "lock held by %s (%s) for %.0f s: not acting" % (holder.get("operation", "?"), holder.get("host", "?"),
                                                           lock_wait)
    audit_mod.write_or_skip(audit, dict(rec, action="hold", reason=why))
    return Outcome(Status.OK, runtime.status_line(Status.OK, "%s: %s" % (service, why)))


def _locked(s, env, service, audit, alert, tagger, clock, t0, rec):
    from ..consul.lighthttp import Connection
    with Connection(s) as conn:
        consul = failover_io.Consul(conn, env, service)
        paused = consul.paused()
        if paused:
            why = "paused (%s): not acting" % (paused.reason or "no reason given")
            audit_mod.write_or_skip(audit, dict(rec, action="hold", reason=why))
            return Outcome(Status.OK, runtime.status_line(Status.OK, "%s: %s" % (service, why)))
        nodes = consul.nodes()
        record = consul.record()
        d = failover_decide.decide(nodes, record)
        seen = [{"id": n.id, "tag": n.tag, "passing": n.passing,
                 "redis": n.probe._asdict() if n.probe else None} for n in nodes]
        rec.update(action=d.action, master=d.master, promote=d.promote, retag_slave=list(d.retag_slave),
                   replicate=list(d.replicate), record_before=record, seen=seen, reason=d.reason)
        if d.action == "hold":
            audit_mod.write_or_skip(audit, rec)
            _alert(alert, "critical", service, env, d)
            return Outcome(Status.CRITICAL, runtime.status_line(Status.CRITICAL, "%s: %s" % (service, d.reason)))
        steps = []
        try:
            _execute(d, {n.id: n for n in nodes}, consul, tagger, steps)
        except Exception as e:  # noqa: BLE001 boundary: a failover stopped midway is audited with its steps, alerted, one CRITICAL line
            msg = "%s: %s failed after %s: %s" % (service, d.action, ", ".join(steps) or "no step", e)
            audit_mod.write_or_skip(audit, dict(rec, steps=steps, error=str(e), result="failed"))
            _alert(alert, "critical", service, env, d, msg)
            return Outcome(Status.CRITICAL, runtime.status_line(Status.CRITICAL, msg))
    took = round(clock() - t0, 3)
    audit_mod.write_or_skip(audit, dict(rec, steps=steps, result="done", seconds=took))
    if d.alert:
        _alert(alert, "warning", service, env, d)
    return Outcome(Status.OK, runtime.status_line(Status.OK, "%s: %s, master %s: %s (%.2f s)" % (
        service, d.action, d.master, d.reason, took)))


def medic_tag(s, env, audit):
    """Role changes through medic-tag's machinery: the role recorded in KV (compare-and-set, merged by
    medic-register on every registration and resync) and the instance re-registered when it is on
    this agent. Returns tagger(service_id, add, remove)."""
    from ..catalog import retag

    def tagger(service_id, add, remove):
        return retag.run(s, env, service_id, add, remove, audit)
    return tagger


def _execute(d, by_id, consul, tagger, steps):
    master = by_id[d.master]
    for sid in d.retag_slave:
        tagger(sid, ("slave",), ("master",))
        steps.append("tag %s slave" % sid)
    if d.promote:
        failover_io.promote(master.address, master.port)
        steps.append("REPLICAOF NO ONE on %s" % master.id)
    if master.tag != "master":
        tagger(master.id, ("master",), ("slave",))
        steps.append("tag %s master" % master.id)
    if d.record:
        consul.write_record(d.record)
        steps.append("record master %s" % master.id)
    for sid in d.replicate:
        n = by_id[sid]
        failover_io.replicate(n.address, n.port, master.address, master.port)
        steps.append("REPLICAOF %s on %s" % (master.id, sid))


def _alert(alert, kind, service, env, d, reason=None):
    if alert is not None:
        alert({"kind": kind, "service": service, "env": env, "action": "failover:" + d.action,
               "reason": reason or d.reason, "details": {"decision": d._asdict()}})
