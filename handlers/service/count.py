"""Judging a count (pure): live instances against the declared number, as plugin output.

    MEDIC CRITICAL - www.example.com 1/3 passing | passing=1;3;3:;0 desired=3;;;0
    - web-2 on node1 127.0.0.1:8082: service:web-2 critical

Shared by the single check (`handlers/check/__main__.py`) and the batch pass
(`handlers/check/batch.py`); neither imports the other for it. Perfdata follows the
monitoring-plugins format `label=value;warn;crit;min;max` with its range
syntax: `passing` warns above the declared count (`N`: outside 0..N) and is
critical below it (`N:`: outside N..infinity), exactly the exit states below.
"""
from ..consul import health
from ..core.runtime import status_line
from ..core.status import Outcome, Status

# Consul keeps at most 4 KB of check output; stay far below it.
MAX_OUTPUT = 3000
MAX_LINE = 240


def compare(live, desired):
    """Exit state of a count: OK equal, WARNING more, CRITICAL fewer."""
    if live == desired:
        return Status.OK
    return Status.WARNING if live > desired else Status.CRITICAL


def perfdata(live, desired):
    """`passing=L;W;C;0 desired=D;;;0`: the thresholds say when the state changes."""
    return "passing=%d;%d;%d:;0 desired=%d;;;0" % (live, desired, desired, desired)


def clean(text):
    """One line, no '|' (it starts perfdata in the plugin format)."""
    return " ".join(str(text).split()).replace("|", "/")


def instance_line(inst):
    """`- ID on NODE ADDR:PORT: CHECK status; CHECK status` for a non-passing instance."""
    failing = "; ".join("%s %s" % (f.check_id or f.name, f.status) for f in inst.failing) or "not passing"
    line = clean("- %s on %s %s:%d: %s" % (inst.id, inst.node, inst.address, inst.port, failing))
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 3] + "..."


def bounded(first, lines, more_label="more", limit=MAX_OUTPUT):
    """First line plus as many `lines` as fit in `limit` bytes, then `... and N more`."""
    out = [first]
    size = len(first.encode("utf-8"))
    for i, line in enumerate(lines):
        n = len(line.encode("utf-8")) + 1
        if size + n > limit - 40:
            out.append("... and %d %s" % (len(lines) - i, more_label))
            break
        out.append(line)
        size += n
    return "\n".join(out)


def evaluate(service, desired, instances):
    """(service name, declared count, [health.Instance]) -> Outcome."""
    live = health.passing_count(instances)
    status = compare(live, desired)
    first = "%s | %s" % (status_line(status, "%s %d/%d passing" % (service, live, desired)), perfdata(live, desired))
    bad = [instance_line(i) for i in instances if not i.passing]
    return Outcome(status, bounded(first, bad, "more not passing"))
