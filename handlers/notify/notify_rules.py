"""medic-notify's rules: what a check or heal event means, and whether a message is due. Pure, no I/O.

Transitions only. Each notification *slot* is one (service, check) pair whose
last notified state lives in Consul KV (`keys.key(env, "notify", service, slot)`):

    medic:<service>   the state of medic's own check for the service
                      (passing / warning / critical), fed by the `checks` watch
                      and by medic-heal's warning / critical / recovered events
    heal              heal outcomes: healed, heal_failed, circuit_open

`judge(previous, alert, now, policy)` says whether a message is due and what to
store (a `Verdict`); the caller stores it with check-and-set BEFORE sending, so two
monitoring nodes, or a replay after `consul reload`, never both send.

Names: an `AlertState` is what medic's own check (or a heal event) says about one
slot, a `Verdict` what to do about it. They are not medic-heal's `Observation` /
`Decision` (handlers.decide), which are about containers and scaling.
"""
import re
from collections import namedtuple

HEAL_SLOT = "heal"
CHECK_PREFIX = "medic:"
STATES = ("passing", "warning", "critical")
HEAL_KINDS = ("healed", "heal_failed", "circuit_open")
KINDS = ("circuit_open", "heal_failed", "healed", "warning", "critical", "recovered")
_STATE_OF_KIND = {"warning": "warning", "critical": "critical", "recovered": "passing"}
_KIND_OF_STATE = {"warning": "warning", "critical": "critical", "passing": "recovered"}
RECORD_STATES = STATES + HEAL_KINDS

# What medic's own check for a service saw: state, live/desired and where it came from.
# circuit: identity of an open circuit (when medic-heal's marker says it opened), or None.
AlertState = namedtuple("AlertState", "service slot state kind live desired index action reason audit_ref "
                                      "checks details source circuit", defaults=(None,))
# What to do for one slot.
Verdict = namedtuple("Verdict", "send kind record reason reminder")
# Resolved notify policy (global file + spec + environment).
Policy = namedtuple("Policy", "enabled recovery remind_every kinds channels")

DEFAULT_POLICY = Policy(True, True, None, KINDS, ({"type": "log", "name": "log"},))

# -- reading medic-check's output -------------------------------------------------
_PERF = re.compile(r"(?:^|\s)'?([A-Za-z_][A-Za-z0-9_ ]*)'?=(-?[0-9]+(?:\.[0-9]+)?)")


def parse_output(output):
    """medic-check's output -> (first line, live, desired); numbers None when absent.

    `MEDIC CRITICAL - www.example.com 1/3 passing | passing=1;;;0 desired=3;;;0`
    """
    first = (output or "").strip().splitlines()[0] if (output or "").strip() else ""
    text, _, perf = first.partition("|")
    values = {m.group(1).strip(): m.group(2) for m in _PERF.finditer(perf)}
    live, desired = _int(values.get("passing")), _int(values.get("desired"))
    if live is None or desired is None:
        m = re.search(r"\b([0-9]+)/([0-9]+)\b", text)
        if m:
            live = live if live is not None else int(m.group(1))
            desired = desired if desired is not None else int(m.group(2))
    return text.strip(), live, desired


def _int(value):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


_SEVERITY = {"passing": 0, "warning": 1, "critical": 2}


def observe_checks(checks, services):
    """Checks of a `checks` watch payload -> {service: AlertState} for the check
    `medic:<service>` of every service in `services` (those with a spec).

    Checks of other names (`medic:reconcile`, node checks) are ignored, and so is
    a check that has not run yet (no MEDIC output: Consul's initial critical after
    an agent start or reload is not a state of the service). Two monitoring nodes
    each carry the check: the worst status wins, the highest ModifyIndex dates it.
    """
    wanted = set(services)
    grouped = {}
    for c in checks:
        if not c.check_id.startswith(CHECK_PREFIX):
            continue
        svc = c.check_id[len(CHECK_PREFIX):]
        if svc not in wanted or c.status not in _SEVERITY:
            continue
        if not (c.output or "").lstrip().startswith("MEDIC"):
            continue
        grouped.setdefault(svc, []).append(c)
    out = {}
    for svc, group in sorted(grouped.items()):
        worst = max(group, key=lambda c: (_SEVERITY[c.status], c.modify_index))
        line, live, desired = parse_output(worst.output)
        out[svc] = AlertState(
            svc, CHECK_PREFIX + svc, worst.status, _KIND_OF_STATE[worst.status], live, desired,
            max(c.modify_index for c in group), None, _status_text(line) or None, None,
            tuple({"node": c.node, "check_id": c.check_id, "status": c.status,
                   "output": parse_output(c.output)[0]} for c in group), None, "watch")
    return out


def _status_text(line):
    """'MEDIC CRITICAL - www 1/3 passing' -> 'www 1/3 passing' (the state is said elsewhere)."""
    m = re.match(r"^MEDIC [A-Z]+ - ", line or "")
    return line[m.end():] if m else line


def observe_event(event):
    """One event from medic-heal (alerts.emit) -> AlertState. Raises ValueError."""
    if not isinstance(event, dict):
        raise ValueError("$: an event is a JSON object")
    kind = event.get("kind")
    if kind not in KINDS:
        raise ValueError("$.kind: expected one of %s, got %r" % (", ".join(KINDS), kind))
    service = event.get("service")
    if not isinstance(service, str) or not service or "/" in service:
        raise ValueError("$.service: expected a service name")
    for f in ("live", "desired"):
        if event.get(f) is not None and (isinstance(event[f], bool) or not isinstance(event[f], int)):
            raise ValueError("$.%s: expected an integer" % f)
    for f in ("env", "action", "reason", "audit_ref"):
        if event.get(f) is not None and not isinstance(event[f], str):
            raise ValueError("$.%s: expected a string" % f)
    if event.get("details") is not None and not isinstance(event["details"], dict):
        raise ValueError("$.details: expected an object")
    if kind in HEAL_KINDS:
        slot, state = HEAL_SLOT, kind
    else:
        slot, state = CHECK_PREFIX + service, _STATE_OF_KIND[kind]
    details = event.get("details") or {}
    checks = details.get("failing_checks") or details.get("checks") or ()
    return AlertState(service, slot, state, kind, event.get("live"), event.get("desired"), None,
                       event.get("action"), event.get("reason"), event.get("audit_ref"),
                       tuple(checks) if isinstance(checks, list) else (), details, "event")


# -- the transition rule ---------------------------------------------------------------
def judge(previous, obs, now, policy):
    """-> Verdict(send, kind, record, reason, reminder).

    previous: the stored record (dict) or None (never notified: a check counts as passing).
    record: what to store (None: leave the key as it is).
    """
    prev_state = (previous or {}).get("state")
    prev_index = (previous or {}).get("index") or 0
    if obs.index is not None and (obs.index < prev_index or
                                  (obs.index == prev_index and prev_index and prev_state != obs.state)):
        # an older payload (out of order, or one a heal event has since overtaken)
        return Verdict(False, obs.kind, None, "stale: payload index %d older than the notified %d"
                        % (obs.index, prev_index), False)
    base = {"state": obs.state, "since": now, "sent": None, "index": max(obs.index or 0, prev_index),
            "ref": obs.audit_ref, "live": obs.live, "desired": obs.desired}
    if obs.circuit is not None:
        base["circuit"] = obs.circuit
    if obs.slot == HEAL_SLOT:
        changed = prev_state != obs.state
        if not changed and obs.state == "healed":
            changed = obs.audit_ref is None or obs.audit_ref != (previous or {}).get("ref")
            why = "a new heal" if changed else "same heal (audit_ref %s) already notified" % obs.audit_ref
        elif not changed and obs.state == "circuit_open" and obs.circuit is not None \
                and obs.circuit != previous.get("circuit"):
            if previous.get("circuit") is None:  # the same page, now with the circuit's identity
                return Verdict(False, obs.kind, dict(previous, circuit=obs.circuit),
                                "unchanged: circuit_open already notified", False)
            # the circuit was reset (medic-heal --reset) and opened again: that is news
            changed, why = True, "a new open circuit (opened %s)" % obs.circuit
        else:
            why = "%s -> %s" % (prev_state or "none", obs.state)
    else:
        effective_prev = prev_state or "passing"
        changed = effective_prev != obs.state
        why = "%s -> %s" % (effective_prev, obs.state)
    if changed:
        if obs.slot != HEAL_SLOT and previous is None and obs.state == "passing":
            return Verdict(False, obs.kind, None, "passing, never notified: nothing to say", False)
        wanted = _wanted(obs.kind, policy)
        record = dict(base, sent=now if wanted else None, previous=prev_state)
        if not wanted:
            return Verdict(False, obs.kind, record, "%s: %s messages are off" % (why, obs.kind), False)
        return Verdict(True, obs.kind, record, why, False)
    # unchanged: a replay, a second node, or a problem that persists
    if previous is None:  # passing and never notified: nothing to store either
        return Verdict(False, obs.kind, None, "unchanged: passing, never notified", False)
    problem = obs.state not in ("passing", "healed")
    last = previous.get("sent") or previous.get("since") or 0
    if problem and policy.remind_every and _wanted(obs.kind, policy) and now - last >= policy.remind_every:
        record = dict(previous, sent=now, index=base["index"], live=obs.live, desired=obs.desired)
        return Verdict(True, obs.kind, record, "still %s since %s: reminder every %ds"
                        % (obs.state, _iso(previous.get("since")), policy.remind_every), True)
    record = None
    if obs.index is not None and obs.index > prev_index:
        record = dict(previous, index=obs.index)  # remember the newest index (stale guard), no message
    return Verdict(False, obs.kind, record, "unchanged: %s already notified" % obs.state, False)


def nothing_new(verdict):
    """A verdict that sends nothing and stores nothing because nothing changed (the reasons judge
    gives those: a replay, a second node, a steady state)."""
    return not verdict.send and verdict.record is None and verdict.reason.startswith(
        ("unchanged", "passing, never notified"))


def _iso(ts):
    if not ts:
        return "?"
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _wanted(kind, policy):
    if not policy.enabled or kind not in policy.kinds:
        return False
    return not (kind == "recovered" and not policy.recovery)


def channel_wants(channel, kind):
    kinds = channel.get("kinds")
    return kinds is None or kind in kinds


# -- policy --------------------------------------------------------------------------------
def policy(global_conf, spec_notify):
    """Global notify file (dict) + the spec's merged `notify` mapping -> Policy.

    Spec keys override the file's. A spec's `channels` list replaces the file's;
    a string entry in it names a channel of the file (by `name`).
    """
    g = dict(global_conf or {})
    s = dict(spec_notify or {})
    named = {}
    for i, ch in enumerate(g.get("channels") or ()):
        named[ch.get("name") or "%s%d" % (ch.get("type"), i)] = ch
    merged = dict(g)
    merged.update(s)
    channels = []
    for i, ch in enumerate(merged.get("channels") or ()):
        if isinstance(ch, str):
            if ch not in named:
                raise ValueError("notify.channels[%d]: no channel named %r in the notify file" % (i, ch))
            ch = named[ch]
        ch = dict(ch)
        ch.setdefault("name", "%s%d" % (ch.get("type"), i))
        channels.append(ch)
    if "channels" not in merged:
        channels = [dict(c) for c in DEFAULT_POLICY.channels]
    remind = merged.get("remind_every")
    if remind is not None:
        from ..core.durations import parse_duration
        remind = parse_duration(remind, "notify.remind_every") or None
    return Policy(bool(merged.get("enabled", True)), bool(merged.get("recovery", True)), remind,
                  tuple(merged.get("kinds") or KINDS), tuple(channels))


def readable(record):
    """A stored notify record -> (record, None) when usable, else (None, why): a record of the
    wrong shape (`{"state": 5, "index": "x"}`, garbage) is treated as unknown, never trusted."""
    if record is None:
        return None, None
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if record.get("state") not in RECORD_STATES:
        return None, "state %.40r is not one of %s" % (record.get("state"), ", ".join(RECORD_STATES))
    for f in ("index", "since", "sent"):
        v = record.get(f)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0):
            return None, "%s %.40r is not a non-negative number" % (f, v)
    for f in ("ref", "circuit"):
        if record.get(f) is not None and not isinstance(record[f], str):
            return None, "%s %.40r is not a string" % (f, record[f])
    return record, None
