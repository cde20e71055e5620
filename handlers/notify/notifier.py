"""medic-notify's orchestration of one run: for each slot judge, claim with CAS, then send.

Per slot: read the last notified state from Consul KV, judge (notify_rules.judge),
store the new state with check-and-set (kv.cas_update), and only then send
(handlers.channels). A lost CAS means another node or run got there first: re-read,
re-judge. Every verdict, sent or not, is one audit record saying why.

A stored record it cannot read (garbage, `{"state": 5, "index": "x"}`) counts as
unknown: the run says so once (audit `unreadable`, and in the reason) and the CAS
write replaces it, so the next run reads a good record.
"""
import socket
import sys
import threading
import time

from . import channels, notify_message, notify_rules
from ..consul import kv
from ..core.errors import ConsulError

CAS_TRIES = 20  # with jittered pauses: a burst of writers to one key all get through


class Notifier:
    def __init__(self, store, audit, env, clock=time.time, host=None):
        self.store, self.audit, self.env, self.clock = store, audit, env, clock
        self.host = host or socket.gethostname()
        self.note = None  # said in every audit record of this run (e.g. why no spec applied)
        self.unreadable = {}  # (service, slot) -> why its stored record could not be read

    def handle(self, obs, policy, spec=None):
        """Decide, claim with CAS, send. -> (decision, [channels.Result])."""
        (_, decision, results), = self.handle_many([(obs, policy, spec)])
        return decision, results

    def handle_many(self, items):
        """[(observation, policy, spec)] -> [(observation, decision, results)].

        Claims run one after another (each a KV read and a CAS write); the messages
        then go out in parallel, so one hanging channel costs one budget, not one
        per service. GROUP_MIN or more messages of one kind to the same channels go out
        as one message naming the services (notify_message.grouped): a storm is one
        alert per channel, and every service still gets its own state and audit record.
        A Consul failure sends nothing for that slot (without the state store news
        cannot be told from a replay): audited, then raised after the slots already
        claimed have been sent.
        """
        claimed, error = [], None
        for obs, policy, spec in items:
            try:
                claimed.append((obs, policy, spec) + self._claim(obs, policy))
            except ConsulError as e:
                self._audit(obs, notify_rules.Verdict(False, obs.kind, None, "not sent: %s" % e, False), None, [],
                            result="error")
                error = error or e
        outcomes = [None] * len(claimed)
        batches = notify_message.batches([(obs, policy, decision) for obs, policy, _, decision, _, _ in claimed])

        def send(members):
            built = []
            for i in members:
                obs, policy, spec, decision, previous, now = claimed[i]
                msg = notify_message.message(obs, decision, self.env, spec, previous, now, self.host)
                built.append((msg, notify_message.document(msg, obs)))
            if len(built) == 1:
                msg, doc = built[0]
            else:
                msg, doc = notify_message.grouped(built)
            results = channels.send_all(claimed[members[0]][1].channels, msg, doc)
            for i in members:
                outcomes[i] = results

        threads = [threading.Thread(target=send, args=(b,), daemon=True) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sizes = {i: len(b) for b in batches for i in b}
        out, quiet = [], []
        for i, ((obs, policy, spec, decision, previous, now), results) in enumerate(zip(claimed, outcomes)):
            if notify_rules.nothing_new(decision) and (obs.service, obs.slot) not in self.unreadable:
                quiet.append((obs, decision, previous))
            else:
                self._audit(obs, decision, previous, results or [], grouped=sizes.get(i, 1))
            if decision.record and obs.slot != notify_rules.HEAL_SLOT and obs.state == "passing" \
                    and (previous or {}).get("state") not in (None, "passing"):
                try:
                    self._reset_heal_slot(obs)
                except ConsulError as e:
                    error = error or e
            out.append((obs, decision, results or []))
        self._audit_quiet(quiet)
        if error is not None:
            raise error
        return out

    def _audit_quiet(self, quiet):
        """Slots with nothing new (a replay, a steady state): one record per run, not one per service
        (a run over 1,000 services writes one line); a single one keeps its own record."""
        if len(quiet) == 1:
            self._audit(*quiet[0], [])
        elif quiet and self.audit is not None:
            names = [o.service for o, _, _ in quiet]
            rec = {"kind": "notification", "source": quiet[0][0].source, "service": None, "env": self.env,
                   "decision": "none", "result": "suppressed", "unchanged": len(quiet),
                   "services": names[:notify_message.LISTED],
                   "reason": "unchanged: %d slot(s) with nothing new to say" % len(quiet)}
            if self.note:
                rec["note"] = self.note
            try:
                self.audit.write(rec)
            except OSError as e:
                sys.stderr.write("medic-notify: cannot write audit log: %s\n" % e.strerror)

    def _claim(self, obs, policy):
        """-> (verdict, previous record, now); the verdict's record is stored when it returns."""
        seen = {}

        def fn(current):
            now = seen["now"] = round(self.clock(), 3)
            if isinstance(current, kv.Unreadable):
                previous, why = None, current.why
            else:
                previous, why = notify_rules.readable(current)
            verdict = notify_rules.judge(previous, obs, now, policy)
            if why:  # said once: the CAS write below replaces the record
                verdict = verdict._replace(reason="%s (stored record unreadable: %s; replaced)" % (verdict.reason, why))
                if verdict.record is None:
                    verdict = verdict._replace(record=fresh_record(obs, now))
            seen.update(verdict=verdict, previous=previous, unreadable=why)
            return kv.KEEP if verdict.record is None else verdict.record

        try:
            self.store.update(obs.service, obs.slot, fn, CAS_TRIES)
        except kv.CasConflict as e:
            return notify_rules.Verdict(False, obs.kind, None, "gave up: %s" % e, False), None, seen.get("now")
        if seen.get("unreadable"):
            self.unreadable[(obs.service, obs.slot)] = seen["unreadable"]
        return seen["verdict"], seen["previous"], seen["now"]

    def _reset_heal_slot(self, obs):
        """A recovered service starts afresh: the next open circuit or failed heal is news."""
        def fn(previous):
            if not isinstance(previous, dict) or previous.get("state") not in ("circuit_open", "heal_failed"):
                return kv.KEEP
            return dict(previous, state="passing", previous=previous.get("state"), since=self.clock())

        try:
            self.store.update(obs.service, notify_rules.HEAL_SLOT, fn, CAS_TRIES)
        except kv.CasConflict:
            pass  # someone else is writing it right now: their record is as good

    def _audit(self, obs, decision, previous, results, result=None, grouped=1):
        if self.audit is None:
            return
        rec = {"kind": "notification", "source": obs.source, "service": obs.service, "env": self.env,
               "slot": obs.slot, "previous": (previous or {}).get("state"), "state": obs.state,
               "event": obs.kind, "live": obs.live, "desired": obs.desired, "index": obs.index,
               "audit_ref": obs.audit_ref, "decision": "send" if decision.send else "none",
               "reminder": decision.reminder, "reason": decision.reason,
               "channels": [r._asdict() for r in results]}
        if grouped > 1:
            rec["grouped"] = grouped  # sent as one message naming this many services
        if self.note:
            rec["note"] = self.note
        if (obs.service, obs.slot) in self.unreadable:
            rec["unreadable"] = self.unreadable[(obs.service, obs.slot)]
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


def fresh_record(obs, now):
    """What to store over an unreadable record when the verdict itself stores nothing."""
    return {"state": obs.state, "since": now, "sent": None, "index": obs.index or 0, "ref": obs.audit_ref,
            "live": obs.live, "desired": obs.desired, "previous": None}
