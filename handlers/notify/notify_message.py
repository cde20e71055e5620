"""medic-notify's messages: the short SMS form, the webhook document, the command's environment.

Pure, no I/O. `message()` turns an AlertState and its Verdict into the dict every
channel renders from; `short_text()` is <= 160 printable ASCII characters.
"""
import json

SHORT_MAX = 160

# -- messages ------------------------------------------------------------------------------------
_TITLE = {"warning": "WARNING", "critical": "CRITICAL", "recovered": "RECOVERED", "healed": "HEALED",
          "heal_failed": "HEAL FAILED", "circuit_open": "CIRCUIT OPEN"}


def default_action(kind, spec):
    """What medic does about a state it reports (for watch-sourced messages)."""
    heal = getattr(spec, "heal", None)
    if kind == "critical":
        return "heal" if heal is None or heal.enabled else "none (heal disabled)"
    if kind == "warning":
        return "scale down" if heal is not None and heal.enabled and heal.scale_down else "none: a human must look"
    return "none"


def _ascii(text):
    text = " ".join(str(text).split())
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _count(n):
    return "?" if n is None else str(n)


def short_text(msg):
    """The SMS form: <= 160 printable ASCII characters, most important first:
    `MEDIC CRITICAL live www.example.com 1/3 action: heal - <reason>`."""
    head = "MEDIC %s%s%s" % (_TITLE[msg["kind"]], " (reminder)" if msg.get("reminder") else "",
                            " " + _ascii(msg["env"]) if msg.get("env") else "")
    counts = " %s/%s" % (_count(msg.get("live")), _count(msg.get("desired")))
    tail = counts + (" action: " + _ascii(msg["action"]) if msg.get("action") else "")
    reason = " - " + _ascii(msg["reason"]) if msg.get("reason") else ""
    service = _ascii(msg["service"])
    room = SHORT_MAX - len(head) - 1 - len(tail)
    if len(service) > room:  # very long service names: keep the start, mark the cut
        service = service[:max(room - 3, 1)] + "..."
    text = "%s %s%s" % (head, service, tail)
    if len(text) > SHORT_MAX:
        text = text[:SHORT_MAX - 3] + "..."
    if reason and len(text) + len(reason) <= SHORT_MAX:
        text += reason
    elif reason and SHORT_MAX - len(text) > 8:
        text += reason[:SHORT_MAX - len(text) - 3] + "..."
    return text


def message(obs, decision, env, spec=None, previous=None, now=None, host=None):
    """AlertState + Verdict -> the message dict every channel renders from."""
    action = obs.action or default_action(obs.kind, spec)
    msg = {"kind": decision.kind, "service": obs.service, "env": env, "state": obs.state,
           "previous": (previous or {}).get("state"), "live": obs.live, "desired": obs.desired,
           "action": action, "reason": _bounded(obs.reason), "audit_ref": obs.audit_ref, "check": obs.slot,
           "reminder": decision.reminder, "source": obs.source, "time": now, "host": host}
    return msg


GROUP_MIN = 3   # messages of one kind to the same channels in one run that go out as one
LISTED = 20     # services named in a grouped message's reason (the document lists them all)


def batches(items):
    """[(state, policy, verdict)] -> [[index, ...]]: what goes out together. Only verdicts that send;
    GROUP_MIN or more of one kind (reminders apart) to the same channels are one batch, the rest
    one batch each, in the order given."""
    keyed, order = {}, []
    for i, (_, policy, verdict) in enumerate(items):
        if not verdict.send:
            continue
        key = (verdict.kind, bool(verdict.reminder), json.dumps(policy.channels, sort_keys=True, default=str))
        if key not in keyed:
            keyed[key] = []
            order.append(key)
        keyed[key].append(i)
    out = []
    for key in order:
        members = keyed[key]
        out += [members] if len(members) >= GROUP_MIN else [[i] for i in members]
    return out


def grouped(built):
    """[(msg, doc)] of one kind -> one (msg, doc) naming every service: the counts add up, the reason
    lists the first LISTED services, the document carries each one's own message."""
    msgs = [m for m, _ in built]
    first = msgs[0]
    names = [m["service"] for m in msgs]
    lives, desireds = [m.get("live") for m in msgs], [m.get("desired") for m in msgs]
    listed = ", ".join(names[:LISTED]) + (" (+%d more)" % (len(names) - LISTED) if len(names) > LISTED else "")
    actions = sorted({m.get("action") for m in msgs if m.get("action")})
    msg = dict(first, service="%d services" % len(names), services=names,
               live=None if None in lives else sum(lives), desired=None if None in desireds else sum(desireds),
               action=actions[0] if len(actions) == 1 else ("various" if actions else None),
               reason=_bounded(listed), audit_ref=None, check=None, previous=None)
    doc = document(msg)
    doc["services"] = [d for _, d in built]
    return msg, doc


def _bounded(text):
    """A reason is for humans: NUL-free and at most REASON_MAX characters (a 5 MB reason still alerts)."""
    if text is None:
        return None
    text = str(text).replace("\x00", " ")
    return text if len(text) <= REASON_MAX else text[:REASON_MAX - 3] + "..."


def document(msg, obs=None):
    """The full JSON document for webhooks (also `format: json` on other channels)."""
    doc = {"version": 1, "short": short_text(msg)}
    doc.update(msg)
    if msg.get("time") is not None:
        import time
        doc["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(msg["time"]))
    if obs is not None:
        details = dict(obs.details or {})
        doc["checks"] = list(obs.checks or ())
        doc["instances"] = details.pop("instances", None)
        details.pop("failing_checks", None)
        details.pop("checks", None)
        doc["decision"] = details.pop("decision", None) or obs.action or msg.get("action")
        doc["details"] = details
    return doc


ENV_MAX = 4096  # per variable: the kernel refuses an environment that is too big (E2BIG)
REASON_MAX = 2000


def _env_safe(value):
    """No NUL (exec refuses it) nor other control characters, at most ENV_MAX characters."""
    text = "".join(c if c >= " " and c != "\x7f" else " " for c in str(value))
    return text if len(text) <= ENV_MAX else text[:ENV_MAX - 3] + "..."


def env_vars(msg):
    """MEDIC_* environment variables for the command channel (strings only, bounded, no NUL)."""
    out = {"MEDIC_MESSAGE": short_text(msg)}
    for k in ("kind", "service", "env", "state", "previous", "live", "desired", "action", "reason",
              "audit_ref", "check", "host", "source"):
        v = msg.get(k)
        out["MEDIC_" + k.upper()] = "" if v is None else _env_safe(v)
    if msg.get("services"):  # a grouped message: the services it names, one per line
        out["MEDIC_SERVICES"] = _env_lines(msg["services"])
    out["MEDIC_REMINDER"] = "1" if msg.get("reminder") else "0"
    return out


def _env_lines(names):
    """Service names one per line, within ENV_MAX (the last line says how many were left out)."""
    out, size = [], 0
    for i, n in enumerate(names):
        n = _env_safe(n)
        if size + len(n) + 1 > ENV_MAX - 32:
            out.append("(+%d more)" % (len(names) - i))
            break
        out.append(n)
        size += len(n) + 1
    return "\n".join(out)


def dumps(doc):
    return json.dumps(doc, sort_keys=True, default=str)
