"""`medic-check --all [--ttl]`: every spec in one process, with a constant number of reads.

For large fleets a script check per service costs a process per service per
interval. The batch mode costs one:

  reads   1 x `GET /v1/agent/checks?filter=ServiceID == "medic"`  (only with --ttl:
            the TTL checks `medic:<service>` that exist on the local agent, with
            their current status and output)
          1 x `GET /v1/internal/ui/nodes?stale` per distinct Consul address (normally
            one): every node with its services and checks in one answer
  writes  `PUT /v1/agent/check/update/medic:<service>` with the JSON body
          `{"Status": ..., "Output": ...}` (the output travels as JSON, not %-encoded
          in the URL) on one keep-alive connection to the local agent, only for checks
          whose status or output changed, or whose last write is `--refresh` seconds old.

The node dump is read by `handlers/consul/nodedump.py` (an internal API, see there). If an
agent answers it with 404/405 or an unexpected shape, the
batch falls back to one `GET /v1/health/service/<name>?stale` per service and
says so in its output (`fallback=1` in the perfdata).

The last write time of each TTL check is kept in the cache directory
(`batch-<host>-<port>.json`, see handlers/spec/spec.py for MEDIC_CACHE_DIR); without
it every check is rewritten every run, which is correct, only more writes.
"""
import json
import os
import time

from ..service import count, members
from ..consul import health, lighthttp, settings
from ..spec import spec, spec_cache
from ..core.errors import ConsulError, MedicError, SpecError
from ..consul.nodedump import NODES_PATH, entries_by_service
from ..core.runtime import status_line
from ..core.status import Outcome, Status, worst
from ..consul import api

CHECKS_PATH = api.AGENT_CHECKS
MEDIC_SERVICE_ID = "medic"
VERB = {Status.OK: ("pass", "passing"), Status.WARNING: ("warn", "warning"),
        Status.CRITICAL: ("fail", "critical"), Status.UNKNOWN: ("fail", "critical")}
STATUS_OF_VERB = {"pass": "passing", "warn": "warning", "fail": "critical"}


def check_id(service):
    return health.MEDIC_CHECK_PREFIX + service


# -- pure ------------------------------------------------------------------
def plan_writes(results, ttl_checks, last_write, now, refresh=None):
    """Which TTL checks to write: [(check_id, verb, output)], sorted by check id.

    results: {service: Outcome}; ttl_checks: {check_id: (status, output)} as the
    agent has them now; last_write: {check_id: unix time}; refresh: seconds after
    which an unchanged check is rewritten anyway (None: always rewrite).
    """
    out = []
    for service, outcome in sorted(results.items()):
        cid = check_id(service)
        if cid not in ttl_checks:
            continue
        verb, status = VERB[outcome.status]
        unchanged = ttl_checks[cid] == (status, outcome.text)
        fresh = refresh is not None and now - last_write.get(cid, float("-inf")) < refresh
        if unchanged and fresh:
            continue
        out.append((cid, verb, outcome.text))
    return out


def summarise(results, written, fallback=False, no_ttl=()):
    """{service: Outcome} -> one Outcome: worst state, counts, the non-OK first lines."""
    counts = {s: 0 for s in Status}
    for o in results.values():
        counts[o.status] += 1
    status = worst(o.status for o in results.values())
    text = "%d services: %d ok, %d warning, %d critical, %d unknown" % (
        len(results), counts[Status.OK], counts[Status.WARNING], counts[Status.CRITICAL], counts[Status.UNKNOWN])
    if not results:
        text = "no specs"
    perf = "services=%d;;;0 ok=%d;;;0 warning=%d;;;0 critical=%d;;;0 unknown=%d;;;0 written=%d;;;0" % (
        len(results), counts[Status.OK], counts[Status.WARNING], counts[Status.CRITICAL],
        counts[Status.UNKNOWN], written)
    if fallback:
        perf += " fallback=1"
    first = "%s | %s" % (status_line(status, text), perf)
    lines = [count.clean(o.text.split("\n", 1)[0].split(" | ", 1)[0])
             for _, o in sorted(results.items(), key=lambda kv: (-kv[1].status, kv[0])) if o.status != Status.OK]
    if no_ttl:
        lines.append(count.clean("no TTL check on the agent for: " + ", ".join(sorted(no_ttl)))[:count.MAX_LINE])
    return Outcome(status, count.bounded(first, lines, "more not ok"))


# -- loading -----------------------------------------------------------------
def load_specs(dirpath, env):
    """Every spec file -> ({service: Spec}, {service: Outcome for files that failed}).

    A bad file fails only itself; its service is guessed from the file name.
    """
    good, bad, seen = {}, {}, {}
    for path, doc in spec.load_documents(dirpath):
        name = os.path.basename(path)[:-len(".json")]
        try:
            if isinstance(doc, SpecError):
                raise doc
            s = spec.build(doc, path, env)
            key = s.service.lower()
            if key in seen:
                raise SpecError("%s: $.service: %r is already declared by %s" % (path, s.service, seen[key]))
        except MedicError as e:
            bad[name] = unknown(e)
            continue
        seen[key] = path
        good[s.service] = s
    return good, bad


def unknown(err):
    kind = "" if err.kind == "error" else err.kind + ": "
    return Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, kind + str(err)))


# -- state -------------------------------------------------------------------
def state_path(st):
    cdir = spec_cache.cache_dir()
    if not cdir:
        return None
    return os.path.join(cdir, "batch-%s-%d.json" % (st.host.replace("/", "_"), st.port))


def read_state(path):
    """The state file in medic's own directory (handlers/core/private.py); anything unsafe reads as empty."""
    if not path:
        return {}
    from ..core import private
    try:
        data = json.loads(private.read(os.path.dirname(path), os.path.basename(path), 1024 * 1024) or b"{}")
        return {k: float(v) for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def write_state(path, data):
    if not path:
        return
    from ..core import private
    try:
        private.write(os.path.dirname(path), os.path.basename(path), json.dumps(data, sort_keys=True).encode())
    except OSError:
        pass  # an optimisation only


# -- doing -------------------------------------------------------------------
def ttl_checks_of(conn):
    """The local agent's TTL checks of the medic service: {check_id: (status, output)}."""
    _, checks, _ = conn.get_json(CHECKS_PATH, [("filter", 'ServiceID == "%s"' % MEDIC_SERVICE_ID)])
    if not isinstance(checks, dict):
        raise ConsulError("%s answer is not an object" % CHECKS_PATH)
    return {cid: (c.get("Status"), c.get("Output", "")) for cid, c in checks.items()
            if isinstance(c, dict) and c.get("Type") == "ttl" and cid.startswith(health.MEDIC_CHECK_PREFIX)}


def observe(conn, specs):
    """{service: [health entries]} for `specs` over one connection; (entries, used_fallback)."""
    wanted = {s.lower() for s in specs}
    resp = conn.request("GET", NODES_PATH, [("stale", None)])
    if resp.status == 200:
        try:
            grouped = entries_by_service(resp.json(), wanted)
        except ConsulError:
            grouped = None
        if grouped is not None:
            return {s: grouped.get(s.lower(), []) for s in specs}, False
    elif resp.status not in (404, 405):
        conn.call("GET", NODES_PATH, [("stale", None)])  # raises the usual, named error
    out = {}
    for s in specs:
        _, entries, _ = conn.get_json(api.health_service(s), [("stale", None)])
        out[s] = entries
    return out, True


def evaluate_all(specs, opts, connection_factory):
    """{service: Outcome} for every loaded spec, one node dump per Consul address."""
    groups, resolved = {}, {}
    for name, s in specs.items():
        st = resolved.get(s.consul_addr)
        if st is None:  # once per distinct spec address, not per spec (a token file is read each time)
            st = resolved[s.consul_addr] = settings.resolve(opts.get("consul_addr"), opts.get("token"),
                                                            opts.get("token_file"), opts.get("consul_timeout"),
                                                            spec_addr=s.consul_addr)
        groups.setdefault(st, {})[name] = s
    results, fallback = {}, False
    for st, group in sorted(groups.items(), key=lambda kv: kv[0].addr):
        try:
            with connection_factory(st) as conn:
                entries, fb = observe(conn, list(group))
        except MedicError as e:
            for name in group:
                results[name] = unknown(e)
            continue
        fallback = fallback or fb
        for name, s in group.items():
            try:
                results[name] = count.evaluate(s.service, s.instances,
                                               members.counted(s, health.parse_instances(entries[name], name)))
            except MedicError as e:
                results[name] = unknown(e)
        critical = {n: s.service for n, s in group.items() if results[n].status == Status.CRITICAL}
        if critical:  # site: instances ACLs hid are not missing (handlers/consul/acl.py)
            from ..consul import acl
            results.update(acl.recheck(st, critical, connection_factory))
    return results, fallback


def run(opts, connection_factory=lighthttp.Connection, now=time.time):
    env = settings.environment(opts.get("env"))
    specs, results = load_specs(spec.specs_dir(opts.get("specs")), env)
    local = settings.resolve(opts.get("consul_addr"), opts.get("token"), opts.get("token_file"),
                             opts.get("consul_timeout"))
    conn = connection_factory(local) if opts.get("ttl") else None
    try:
        ttl_checks = ttl_checks_of(conn) if conn else {}
        evaluated, fallback = evaluate_all(specs, opts, connection_factory)
        results.update(evaluated)
        written, no_ttl = 0, ()
        if conn:
            path = state_path(local)
            last = read_state(path)
            t = now()
            for cid, verb, text in plan_writes(results, ttl_checks, last, t, opts.get("refresh")):
                conn.call("PUT", api.check_update(cid),
                          body={"Status": STATUS_OF_VERB[verb], "Output": text})
                last[cid] = t
                written += 1
            if written:
                write_state(path, {k: v for k, v in last.items() if k in ttl_checks})
            no_ttl = [s for s in results if check_id(s) not in ttl_checks]
    finally:
        if conn:
            conn.close()
    return summarise(results, written, fallback, no_ttl)
