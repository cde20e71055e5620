"""Durations and seconds, parsed one way everywhere input enters (specs, notify file, env, options).

    '1m30s' -> 90.0, '500ms' -> 0.5, 12 -> 12.0

Finite and bounded: Infinity, NaN, negative values and anything above MAX_SECONDS
(30 days) are refused with one line. specs/schema.json says the same (a number
0..2592000, or at most 4 parts of at most 9 digits each); this parser is the
authority for what the pattern cannot sum up ('999999999h' matches the pattern).
"""
import math

from .errors import UsageError

MAX_SECONDS = 30 * 24 * 3600.0  # 2592000: no medic timer, window or reminder needs more
_UNITS = (("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def bounded(value, what="duration", maximum=MAX_SECONDS, positive=False):
    """A number of seconds, checked: finite, >= 0 (> 0 when `positive`), <= maximum. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s: expected seconds, got %s" % (what, type(value).__name__))
    try:
        value = float(value)
    except OverflowError:  # a 400-digit integer
        raise ValueError("%s: larger than %g s" % (what, maximum)) from None
    if not math.isfinite(value):
        raise ValueError("%s: must be a finite number of seconds, got %s" % (what, value))
    if value < 0 or (positive and value == 0):
        raise ValueError("%s: must be %s 0 seconds, got %g" % (what, ">" if positive else ">=", value))
    if value > maximum:
        raise ValueError("%s: %g s is more than the limit of %g s" % (what, value, maximum))
    return value


def parse_duration(value, what="duration", maximum=MAX_SECONDS):
    """A Consul-style duration string or a number of seconds -> float seconds. Raises ValueError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return bounded(value, what, maximum)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError("%s: bad duration %.40r" % (what, value))
    total, num = 0.0, ""
    i = 0
    while i < len(value):
        c = value[i]
        if c in "0123456789.":
            num += c
            i += 1
            continue
        for unit, factor in _UNITS:
            if value.startswith(unit, i) and num and num.count(".") <= 1 and num != ".":
                total += float(num) * factor
                num, i = "", i + len(unit)
                break
        else:
            raise ValueError("%s: bad duration %.40r" % (what, value))
    if num:
        raise ValueError("%s: bad duration %.40r (a unit is needed: ms, s, m, h)" % (what, value))
    return bounded(total, what, maximum)


def format_duration(seconds):
    """Seconds -> Consul duration string ('10s', '1500ms')."""
    if float(seconds).is_integer():
        return "%ds" % int(seconds)
    return "%dms" % round(seconds * 1000)


def env_seconds(environ, name, default, positive=True, maximum=MAX_SECONDS):
    """A number of seconds from environment variable `name` (default when unset or empty).

    Bad values (not a number, inf, nan, negative, zero when `positive`, above maximum)
    raise UsageError naming the variable: one line, exit 3."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return bounded(float(raw), name, maximum, positive)
    except ValueError as e:
        msg = str(e) if str(e).startswith(name) else "%s must be seconds, got %.40r" % (name, raw)
        raise UsageError(msg) from None


def reject_constant(name):
    """json.loads(parse_constant=...): NaN and Infinity are not JSON (Python accepts them)."""
    raise ValueError("%s is not a JSON number" % name)


def finite_float(text):
    """json.loads(parse_float=...): 1e999 would become Infinity; refuse it."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number %.40s is out of range" % text)
    return value
