"""medic-failover's decision: PURE, tested with literal data (tests/failover/test_failover.py).

    decide(nodes, record) -> Decision

`nodes` are the Redis service's instances as Consul and Redis itself report them:
Node(id, address, port, tag, passing, probe) where `tag` is the role tag ("master", "slave"
or None) and `probe` what INFO replication said (None when Redis did not answer).
`record` is the failover record in KV ({"master": id, "address": "ip:port", "replid": the master's
replication ID}) or None when none was ever made. `nodes` are only the instances medic owns
(failover_io filters them): nothing here ever sends a command to any other.

Rules:
- the master is the one passing, reachable instance tagged master. Two or more (split brain):
  keep the recorded one, else the reachable Redis master with the highest offset; demote the rest;
- one tagged master whose Redis offset is behind a replica's (it restarted without its data, e.g. no
  persistence): treated as lost before the replicas resync from it - promote the best replica;
- none tagged master, but the recorded master passes and Redis says master: retag it;
- none, no record: bootstrap - the instance with the highest offset (then the lowest ID) becomes
  master (a new service's replicas all start tagged slave from their labels);
- none, a record (the master was lost): promote the healthy REPLICA (Redis role slave) with the
  highest replication offset, ties to the lowest ID, among those whose replication history is the
  lost master's (its recorded replication ID is the replica's master_replid or master_replid2).
  No such replica (none at all, only impostors claiming another history, or no ID recorded): do
  nothing but alert; a fresh, empty standalone instance is never promoted over lost data;
- the record's replication ID follows the master's (refreshed on any pass where it differs; after a
  promotion failover_core records the new master's new ID);
- every other instance is tagged slave (the lost and any returning old master included, so no
  two are ever tagged master) and made a replica of the master when it is not one already.
Order of execution (failover_core): retag to slave first, then promote, tag master, record,
then point the replicas.
"""
from collections import namedtuple

Node = namedtuple("Node", "id address port tag passing probe")
Probe = namedtuple("Probe", "role offset master_host master_port link replid replid2", defaults=(None, None))
Decision = namedtuple("Decision", "action master promote retag_slave replicate record alert reason")

ACTIONS = ("noop", "repair", "retag", "bootstrap", "failover", "split_brain", "hold")


def _best(nodes):
    return sorted(nodes, key=lambda n: (-(n.probe.offset if n.probe else -1), n.id))[0]


def _shares(node, known):
    """The node's replication history includes the replication ID `known` (the master's)."""
    return bool(known) and known in (node.probe.replid, node.probe.replid2)


def _replicates(node, master):
    p = node.probe
    return p is not None and p.role == "slave" and (p.master_host, int(p.master_port or 0)) == (
        master.address, int(master.port))


def decide(nodes, record=None):
    nodes = sorted(nodes, key=lambda n: n.id)
    live = [n for n in nodes if n.passing and n.probe is not None]
    recorded = (record or {}).get("master")
    known = (record or {}).get("replid")
    tagged = [n for n in live if n.tag == "master"]
    promote, why = None, []
    if len(tagged) > 1:
        mine = [n for n in tagged if n.id == recorded]
        masters = [n for n in tagged if n.probe.role == "master"]
        ours = [n for n in masters if _shares(n, known)]
        master = mine[0] if mine else _best(ours or masters or tagged)
        action = "split_brain"
        why.append("%d instances tagged master (%s): kept %s" % (len(tagged), ", ".join(n.id for n in tagged),
                                                                 master.id))
    elif tagged:
        master, action = tagged[0], "noop"
        # replid: a master's own replication ID, a replica's is its master's; a master restarted
        # without its data has a new one. Both conditions, so probes taken a moment apart under
        # write load (a replica's offset read after the master's) never look like a restart.
        ahead = [n for n in live if n.probe.role == "slave" and n.probe.offset > master.probe.offset
                 and n.probe.replid and n.probe.replid != master.probe.replid and _shares(n, known)]
        if master.probe.role == "master" and ahead:
            # a master behind its own replicas restarted without its data: promote, before they resync
            old, master, action = master, _best(ahead), "failover"
            why.append("master %s came back with offset %d, behind replica %s at %d (restarted without its "
                       "data): promote %s" % (old.id, old.probe.offset, master.id, master.probe.offset, master.id))
    else:
        back = [n for n in live if n.id == recorded and n.probe.role == "master"]
        if back:
            master, action = back[0], "retag"
            why.append("recorded master %s is passing but not tagged master" % recorded)
        elif recorded is None:
            if not live:
                return Decision("hold", None, None, (), (), None, True,
                                "no instance passes and answers: nothing to bootstrap")
            master, action = _best(live), "bootstrap"
            why.append("no master ever recorded: bootstrap %s (offset %d)" % (master.id, master.probe.offset))
        else:
            replicas = [n for n in live if n.probe.role == "slave"]
            if not replicas:
                others = ", ".join("%s %s" % (n.id, "standalone" if n.probe else "unreachable")
                                   for n in nodes if n.passing) or "none passing"
                return Decision("hold", None, None, (), (), None, True,
                                "master %s lost and no healthy replica (%s): nothing promoted" % (recorded, others))
            same = [n for n in replicas if _shares(n, known)]
            if not same:
                refused = ", ".join("%s (replication ID %s)" % (n.id, n.probe.replid) for n in replicas)
                why_not = ("no replication ID is recorded for it" if not known else
                           "no replica shares its replication ID %s" % known)
                return Decision("hold", None, None, (), (), None, True,
                                "master %s lost and %s: refused %s: nothing promoted" % (recorded, why_not, refused))
            replicas = same
            master, action = _best(replicas), "failover"
            why.append("master %s lost: promote replica %s (offset %d, highest of %d)"
                       % (recorded, master.id, master.probe.offset, len(replicas)))
    if master.probe.role != "master":
        promote = master.id
    retag = [n.id for n in nodes if n.id != master.id and (n.tag == "master" or (n in live and n.tag != "slave"))]
    if recorded and recorded != master.id and recorded not in retag and not any(
            n.id == recorded and n.tag == "slave" for n in nodes):
        retag.append(recorded)  # the lost master: tagged slave in KV before it can come back
    replicate = [n.id for n in live if n.id != master.id and not _replicates(n, master)]
    replid = master.probe.replid if master.probe.role == "master" else None  # after a promotion: failover_core
    new_record = None if recorded == master.id and (record or {}).get("address") == "%s:%d" % (
        master.address, master.port) and (not replid or known == replid) else \
        {"master": master.id, "address": "%s:%d" % (master.address, master.port), "replid": replid}
    if action == "noop" and (retag or replicate or promote or master.tag != "master" or new_record):
        action = "repair"
    if retag:
        why.append("tag slave: %s" % ", ".join(retag))
    if replicate:
        why.append("replicate from %s: %s" % (master.id, ", ".join(replicate)))
    if action == "noop":
        why.append("master %s, %d replica(s) in step" % (master.id, len(live) - 1))
    return Decision(action, master.id, promote, tuple(retag), tuple(replicate), new_record,
                    action == "failover" or action == "split_brain", "; ".join(why))
