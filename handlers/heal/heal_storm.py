"""A correlated failure is one event, not N: fleet-wide backoff, bounded runs, grouped alerts.

When most heals of a run fail the same way (a release that crashes at start, an image that is
missing, the registry or engine down), healing the next service would fail the same way too.

    signature(output, words)       the failure with the service's own words, numbers and ids
                                   taken out: "the same way" means equal signatures (pure)
    correlated(failures, attempts) the signature when at least STORM_MIN heals failed with it and
                                   they are at least STORM_SHARE of the attempts, else None (pure)
    backoff(prev, now, rand)       the next fleet-wide pause: BASE doubling per storm in a row,
                                   at most MAX, plus up to JITTER of it (pure)
    read(client, env, now) / write(client, env, doc)   the marker medic/<env>/storm/fleet in
                                   Consul KV, shared by every host: {"until", "level", "why",
                                   "services", "at", "host"}

While the marker holds, medic-heal still observes and records every service (triage, or one
summary record for those it does not act on) but starts no heal action; the first run after
`until` acts again, and its heals are the probe: another correlated failure doubles the pause.
"""
import json
import re
import socket
from ..consul.consul_errors import failures as consul_failures

STORM_MIN = 3      # heals failed the same way in one run before it is a correlated failure
STORM_SHARE = 0.8  # ... and at least this share of the run's heal attempts
BASE, MAX, JITTER = 30.0, 600.0, 0.3
LISTED = 20        # services named in a summary record or a grouped alert


def signature(output, words=()):
    text = ((output or "").strip().splitlines() or [""])[-1]
    for w in sorted((w for w in words if w), key=len, reverse=True):
        text = text.replace(w, "<svc>")
    text = re.sub(r"\b[0-9a-f]{12,64}\b", "<id>", text)
    return re.sub(r"\d+", "<n>", text)[:200]


def correlated(failures, attempts):
    """failures [(service, signature)], attempts (int) -> the shared signature, or None."""
    counts = {}
    for _, sig in failures:
        counts[sig] = counts.get(sig, 0) + 1
    if not counts:
        return None
    sig, n = max(counts.items(), key=lambda kv: kv[1])
    return sig if n >= STORM_MIN and n >= STORM_SHARE * max(attempts, 1) else None


def backoff(prev, now, rand):
    """prev marker (or None) -> (until, level). A storm within twice the last pause escalates."""
    level = 0
    if prev:
        last = float(prev.get("until") or 0)
        step = min(BASE * 2 ** int(prev.get("level") or 0), MAX)
        if now - last < 2 * step:
            level = int(prev.get("level") or 0) + 1
    delay = min(BASE * 2 ** level, MAX)
    return now + delay * (1.0 + JITTER * rand), level


def key(env):
    from ..core import keys
    return keys.key(env, "storm", "fleet")


def read(client, env, now):
    """The marker if it still holds at `now`, else None; any failure reads as None (a hint)."""
    try:
        _, item = client.kv.get(key(env))
        doc = json.loads(item["Value"] or b"{}") if item else None
        return doc if doc and float(doc.get("until") or 0) > now else None
    except consul_failures() + (ValueError, TypeError, KeyError, AttributeError):
        return None


def last(client, env):
    try:
        _, item = client.kv.get(key(env))
        return json.loads(item["Value"] or b"{}") if item else None
    except consul_failures() + (ValueError, TypeError, KeyError):
        return None


def write(client, env, why, services, now, rand):
    """Start (or escalate) the fleet-wide pause -> the marker written (or None when it could not be)."""
    until, level = backoff(last(client, env), now, rand)
    doc = {"until": until, "level": level, "why": why, "services": sorted(services)[:LISTED], "at": now,
           "host": socket.gethostname()}
    try:
        client.kv.put(key(env), json.dumps(doc))
    except consul_failures():
        return None
    return doc
