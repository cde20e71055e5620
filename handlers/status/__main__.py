"""medic-status: one table per service and environment (docs/medic-status.md).

    ENV      SERVICE          DESIRED  PASSING  PENDING  STATE     LAST                 CIRCUIT
    default  www.example.com  3        3        0        OK        noop: count met ...  closed

Per spec: desired from the spec, passing from Consul (consistent read), pending
from the Docker engine (containers started less than heal.grace ago that do not
pass yet; "-" when the engine cannot be asked), state as medic-check would say it,
the last heal decision and its reason from the audit log, the circuit from the
history in KV. `--json` prints the same rows for machines. Exit: the worst state
(like the check); a service that cannot be read is UNKNOWN with the reason.
Read-only: it takes no lock and changes nothing.
"""
import json
import time

from ..core import audit as audit_mod
from ..core import options, runtime
from ..core.status import Outcome, Status
from ..consul import api

DEADLINE = 60.0
AUDIT_TAIL = 4 * 1024 * 1024
COLUMNS = ("env", "service", "desired", "passing", "pending", "state", "last", "circuit")


def main():
    runtime.run(command=_command, prog="medic-status", deadline=DEADLINE)


def _command():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable rows instead of a table.")
    @click.option("--all-envs", is_flag=True, help="One row per service and environment the specs define.")
    @click.option("--no-engine", is_flag=True, help="Do not ask the Docker engine (pending shows '-').")
    @click.option("--audit-log", metavar="PATH", help="Audit log to read [env MEDIC_AUDIT_LOG].")
    @options.common
    def cmd(as_json, all_envs, no_engine, audit_log, specs, env, consul_addr, token, token_file,
            consul_timeout, verbose):
        """Show desired vs live state, last decision and circuit for every spec."""
        conn = dict(consul_addr=consul_addr, token=token, token_file=token_file, timeout=consul_timeout)
        return run(specs, env, all_envs, conn, audit_mod.audit_path(audit_log), as_json, not no_engine)

    return cmd


def environments(specs_dir, env, all_envs):
    from ..consul import settings
    from ..spec import spec

    if not all_envs:
        return [settings.environment(env)]
    names = set()
    for sp in spec.load_dir(specs_dir).values():
        names.update(sp.environments)
    return sorted(names) or [None]


def last_records(path, limit=AUDIT_TAIL):
    """{(env, service): last heal record} from the tail of the audit log."""
    return {(rec.get("env"), rec.get("service")): rec for rec in audit_mod.tail(path, limit)
            if rec.get("kind", "heal") == "heal" and rec.get("decision")}


def row(sp, env, conn_opts, engine, records, now):
    """Observe one service (read-only) -> dict of COLUMNS plus detail. Never raises MedicError."""
    from ..service import count, observe
    from ..service import heal_counts
    from ..consul import lighthttp, settings
    from ..core.errors import MedicError

    r = {"env": env or "default", "service": sp.service, "desired": sp.instances, "passing": None,
         "pending": None, "state": Status.UNKNOWN.name, "last": "-", "circuit": "-", "error": None}
    rec = records.get((env, sp.service))
    if rec:
        r["last"] = "%s: %s" % (rec.get("decision"), rec.get("reason") or "")
        r["last_time"] = rec.get("time")
    try:
        st = settings.resolve(conn_opts.get("consul_addr"), conn_opts.get("token"), conn_opts.get("token_file"),
                              conn_opts.get("timeout"), spec_addr=sp.consul_addr)
        with lighthttp.Connection(st) as conn:
            if engine is not None and engine.get() is not None:
                _, obs = observe.observe(sp, conn, engine.get())
                counts = heal_counts.classify(sp, obs, now)
                r["passing"], r["pending"] = counts.passing, counts.pending
                r["failing"], r["stopped"] = counts.failing, counts.stopped
            else:
                _, instances = observe.consul_instances(conn, sp.service)
                r["passing"] = sum(1 for i in instances if i.passing)
        hist = _history(st, env, sp.service)
        r["circuit"] = "open since %s" % _iso(hist.circuit) if hist.circuit is not None else "closed"
        if hist.actions:
            a = hist.actions[-1]
            r["last_action"] = {"time": _iso(a.time), "kind": a.kind, "target": a.target, "result": a.result}
        r["state"] = count.compare(r["passing"], sp.instances).name
        r["paused"] = _paused(st, env, sp.service, now)  # medic-heal --pause
    except MedicError as e:
        r["error"] = "%s: %s" % (e.kind, e)
    return r


def _history(st, env, service):
    """History from KV through the light client (a 404 is an empty history)."""

    from ..service import history
    from ..consul import lighthttp

    key = history.history_key(env, service)
    with lighthttp.Connection(st) as conn:
        return history.parse(api.kv_read(conn, key, consistent=True), key)


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# -- the operator's pause (medic-heal --pause), read-only ------------------------------------
def _paused(st, env, service, now):
    """'paused by X: reason (until T)' when medic-heal --pause is in force for the service, else None."""

    from ..consul import lighthttp
    from ..service import pause

    key = pause.pause_key(env, service)
    with lighthttp.Connection(st) as conn:
        raw = api.kv_read(conn, key)  # fails closed: a refused or broken read is no "not paused"
    p = pause.active(pause.parse(raw), now)
    return pause.describe(p) if p else None


class _Engine:
    """The Docker engine, asked once; None (and a note) when it does not answer."""

    def __init__(self):
        self._client, self._tried, self.error = None, False, None

    def close(self):
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()

    def get(self):
        if not self._tried:
            self._tried = True
            from ..engine import engine
            from ..core.errors import MedicError
            try:
                self._client = engine.connect()  # the light client; the docker SDK only for Swarm specs
            except MedicError as e:
                self.error = str(e)
        return self._client


def run(specs, env, all_envs, conn_opts, audit_path, as_json, use_engine, clock=time.time):
    from ..spec import spec

    specs_dir = spec.specs_dir(specs)
    engine = _Engine() if use_engine else None
    records = last_records(audit_path)
    rows = []
    for e in environments(specs_dir, env, all_envs):
        for sp in spec.load_dir(specs_dir, e).values():
            rows.append(row(sp, e, conn_opts, engine, records, clock()))
    if engine is not None:
        engine.close()
    status = max((Status[r["state"]] for r in rows), default=Status.OK)
    if as_json:
        text = json.dumps({"status": status.name, "engine_error": engine.error if engine else None,
                           "services": rows}, indent=2, sort_keys=True)
    else:
        text = table(rows, engine.error if engine else None)
    return Outcome(status, text)


def _cell(r, c):
    v = r.get(c)
    if c == "state" and r.get("error"):
        return "UNKNOWN"
    return "-" if v is None else str(v)


def table(rows, engine_error=None, width=60):
    head = [c.upper() for c in COLUMNS]
    cells = [[_cell(r, c) for c in COLUMNS] for r in rows]
    for c in cells:
        i = COLUMNS.index("last")
        if len(c[i]) > width:
            c[i] = c[i][:width - 3] + "..."
    widths = [max(len(x) for x in col) for col in zip(head, *cells)] if cells else [len(h) for h in head]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip() for c in cells]
    for r in rows:
        if r.get("error"):
            lines.append("%s/%s: %s" % (r["env"], r["service"], r["error"]))
        if r.get("paused"):
            lines.append("%s/%s: %s" % (r["env"], r["service"], r["paused"]))
    if engine_error:
        lines.append("engine: %s (pending not shown)" % engine_error)
    if not rows:
        lines.append("(no specs)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
