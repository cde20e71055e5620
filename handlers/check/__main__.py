"""`medic-check SERVICE`: the count check, run by the Consul agent as a script check.

    MEDIC CRITICAL - www.example.com 1/3 passing | passing=1;3;3:;0 desired=3;;;0
    - web-2 on node1 127.0.0.1:8082: service:web-2 critical
    - web-3 on node2 127.0.0.1:8083: _node_maintenance critical

Exit 0 when the live count equals the spec's `instances`, 1 when there are more
(a human should look at the waste), 2 when there are fewer (heal it), 3 when it
cannot tell (spec missing or invalid, Consul unreachable, usage error). Consul
shows 3 as critical; the heal handler never acts on it, it observes for itself.

Hot path (every few seconds per service; budget: 2.5x the CPU of a bare `python -c
pass`, measured by `make bench`): `fast()` parses argv with `options.parse_fast`,
loads the spec through the validated-spec cache, makes ONE request
(`GET /v1/health/service/<svc>?stale`) over `lighthttp`, counts with `health`,
judges with `count`, and returns an Outcome. It imports no click, jsonschema,
requests, consul, docker, dataclasses, typing or http.client, and not batch.
Anything `parse_fast` does not fully understand (--help, typos) goes to the click
command, which gives the real usage error (exit 3 through `runtime`).

`medic-check --all [--ttl]` is the batch mode (handlers/check/batch.py, imported only
then). The judging lives in handlers/service/count.py; its names are re-exported here.
"""
from ..consul import health, lighthttp, settings
from ..core import options, runtime
from ..spec import spec
from ..service.count import evaluate
from ..core.errors import UsageError
from ..core.status import Status
from ..consul import api

DEADLINE = 30.0  # whole run; MEDIC_DEADLINE overrides. Each Consul call has its own timeout.

FLAGS = ("--all", "--ttl")
VALUES = ("--refresh",)


# -- doing -------------------------------------------------------------------
def connection_settings(opts, spec_obj):
    """Consul settings for one spec: explicit options > spec environment > env vars.

    Each call's timeout is capped at 80 % of the spec's check timeout, so medic
    answers UNKNOWN with a clear line before Consul kills the script.
    """
    st = settings.resolve(opts.get("consul_addr"), opts.get("token"), opts.get("token_file"),
                          opts.get("consul_timeout"), spec_addr=spec_obj.consul_addr if spec_obj else None)
    if spec_obj is not None:
        st = st._replace(timeout=min(st.timeout, max(0.5, spec_obj.check.timeout * 0.8)))
    return st


def check_one(service, opts, connection_factory=lighthttp.Connection):
    env = settings.environment(opts.get("env"))
    sp = spec.find(spec.specs_dir(opts.get("specs")), service, env)
    st = connection_settings(opts, sp)
    with connection_factory(st) as conn:
        _, entries, _ = conn.get_json(api.health_service(sp.service), [("stale", None)])
        from ..service import members
        out = evaluate(sp.service, sp.instances, members.counted(sp, health.parse_instances(entries, sp.service)))
        if out.status == Status.CRITICAL:  # site: ACLs may have hidden instances (handlers/consul/acl.py)
            from ..consul import acl
            acl.require(conn, acl.service_read(sp.service))
    return out


def dispatch(service, opts):
    if opts.get("all"):
        if service:
            raise UsageError("give SERVICE or --all, not both")
        from . import batch
        return batch.run(opts)
    if not service:
        raise UsageError("missing SERVICE (or --all)")
    if opts.get("ttl") or opts.get("refresh") is not None:
        raise UsageError("--ttl and --refresh go with --all")
    return check_one(service, opts)


def parse(argv):
    """Fast argv parse: {dest: value, "service": ...} or None (then click decides)."""
    batch_mode = "--all" in argv
    o = options.parse_fast(argv, flags=FLAGS, values=VALUES, positionals=0 if batch_mode else 1)
    if o is None or bool(o["all"]) != batch_mode:
        return None
    if o["refresh"] is not None:
        try:
            o["refresh"] = float(o["refresh"])
        except ValueError:
            return None
    o["all"], o["ttl"] = bool(o["all"]), bool(o["ttl"])
    args = o.pop("args")
    o["service"] = args[0] if args else None
    return o


def fast(argv):
    o = parse(argv)
    if o is None:
        return None
    return dispatch(o.pop("service"), o)


def command():
    import click

    @click.command(help="Compare the live count of SERVICE with its spec (exit 0 equal, 1 more, "
                        "2 fewer, 3 unknown), or every spec with --all.")
    @click.argument("service", required=False)
    @click.option("--all", "all", is_flag=True, help="Evaluate every spec in the specs directory (batch mode).")
    @click.option("--ttl", "ttl", is_flag=True,
                  help="With --all: write each result to the TTL check medic:<service> on the local agent.")
    @click.option("--refresh", "refresh", type=float, metavar="SECONDS",
                  help="With --all --ttl: rewrite an unchanged TTL check once its last write is this old "
                       "[default: every run].")
    @options.common
    def cmd(service, **opts):
        return dispatch(service, opts)

    return cmd


def main():
    return runtime.run(command=command, fast=fast, prog="medic-check", deadline=DEADLINE, quick_exit=True)


if __name__ == "__main__":
    main()
