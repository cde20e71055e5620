"""Draining a Docker host, deciding (pure): what to start where, then what to stop.

    plan_drain(host, hosts, services) -> Plan     medic-drain HOST
    plan_undo(host, hosts, services, rebalance) -> Plan     medic-drain --undo HOST [--rebalance]

`hosts`: [HostState(node, eligible)] - eligible: its agent answers, it is not in
maintenance and it is not the host being drained. `services`: [ServiceState(service,
declared, boxes)] with boxes = ((node, rollout_plan.Box), ...) for every container of the
service's compose project on every known host.

Order of a drain: replacements first, on the other hosts (the host with the fewest
instances of that service gets the next one), so the service never has fewer passing
than declared; then the host's node goes into Consul maintenance (the LB drops everything
on it at once); then its containers are stopped gracefully. Starting before taking the
host out differs from the issue's wording (maintenance first) on purpose: maintenance
first would leave the service short for the time the replacements take to pass.
"""
from collections import namedtuple

from ..replace.rollout_plan import RUNNING, Plan, serving

HostState = namedtuple("HostState", "node eligible")
ServiceState = namedtuple("ServiceState", "service declared boxes")
Step = namedtuple("Step", "kind service node count containers")
# kinds: start (count new on node), maintenance / unmaintenance (node), stop (containers on node),
#        retire (containers on node: service maintenance, LB drop, stop) for --rebalance


def _running(svc, node=None):
    return [b for n, b in svc.boxes if b.state in RUNNING and not b.retiring and (node is None or n == node)]


def _spread(counts, need):
    """Add `need` instances, each to the node with the fewest (ties: by name) -> {node: added}."""
    counts, added = dict(counts), {}
    for _ in range(need):
        node = min(sorted(counts), key=lambda n: counts[n])
        counts[node] += 1
        added[node] = added.get(node, 0) + 1
    return added


def plan_drain(host, hosts, services):
    others = sorted(h.node for h in hosts if h.eligible and h.node != host)
    if host not in {h.node for h in hosts}:
        return Plan("refuse", "host %s is not a known host" % host, ())
    starts, stops, moved = [], [], 0
    for svc in sorted(services, key=lambda s: s.service):
        here = _running(svc, host)
        if not here:
            continue
        elsewhere = sum(1 for n, b in svc.boxes if n != host and serving(b))
        need = max(0, svc.declared - elsewhere)
        if need and not others:
            return Plan("refuse", "no other eligible host to carry %s (%d to move)" % (svc.service, need), ())
        counts = {n: len(_running(svc, n)) for n in others}
        for node, k in sorted(_spread(counts, need).items()):
            starts.append(Step("start", svc.service, node, k, ()))
        stops.append(Step("stop", svc.service, host, len(here), tuple(b.id for b in here)))
        moved += need
    steps = tuple(starts) + (Step("maintenance", None, host, 0, ()),) + tuple(stops)
    reason = "%d instance(s) of %d service(s) on %s; %d replacement(s) on %s" % (
        sum(s.count for s in stops), len(stops), host, moved, ", ".join(others) or "no other host")
    return Plan("drain", reason, steps)


def plan_undo(host, hosts, services, rebalance=False):
    steps = [Step("unmaintenance", None, host, 0, ())]
    moves = 0
    if rebalance:
        nodes = sorted({h.node for h in hosts if h.eligible} | {host})
        for svc in sorted(services, key=lambda s: s.service):
            counts = {n: len(_running(svc, n)) for n in nodes}
            total = min(sum(counts.values()), svc.declared) if svc.declared else sum(counts.values())
            # the fair share: total spread over the hosts, the drained host gets its share first
            share = {n: total // len(nodes) for n in nodes}
            for n in sorted(nodes, key=lambda n: (n != host, n))[: total % len(nodes)]:
                share[n] += 1
            want = share[host] - counts[host]
            if want <= 0:
                continue
            steps.append(Step("start", svc.service, host, want, ()))
            donors = sorted((n for n in nodes if n != host), key=lambda n: (share[n] - counts[n], n))
            left = want
            for n in donors:
                extra = counts[n] - share[n]
                if extra <= 0 or not left:
                    continue
                k = min(extra, left)
                victims = sorted(_running(svc, n), key=lambda b: (serving(b), b.name))[:k]
                steps.append(Step("retire", svc.service, n, k, tuple(b.id for b in victims)))
                left -= k
            moves += want
    return Plan("undo", "%s leaves maintenance; %d instance(s) move back" % (host, moves), tuple(steps))


def describe(step):
    if step.kind == "start":
        return "start %d instance(s) of %s on %s" % (step.count, step.service, step.node)
    if step.kind == "maintenance":
        return "node %s into Consul maintenance (the LB drops everything on it)" % step.node
    if step.kind == "unmaintenance":
        return "node %s out of maintenance" % step.node
    if step.kind == "stop":
        return "stop %d instance(s) of %s on %s gracefully" % (step.count, step.service, step.node)
    return "retire %d instance(s) of %s on %s: maintenance, out of the LB, stop" % (step.count, step.service,
                                                                                    step.node)
