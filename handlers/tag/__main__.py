"""medic-tag: change an instance's role tags in place (docs/medic-register.md).

    medic-tag SERVICE_ID [--add TAG]... [--remove TAG]...

Records the role in Consul KV (keys.key(env, "roles", SERVICE_ID), {"add": [...],
"remove": [...]}, compare-and-set through kv.cas_update) so medic-register merges it
with the label tags on every registration and resync, then re-registers the instance on
the agent with the new tags, keeping its checks. Without --add/--remove it shows the instance's tags and role.

Exit: 0 applied (or nothing to change); 1 role recorded but the service is not
registered on this agent (the registrar applies it when it registers the service);
3 usage, Consul failure, a service that cannot be re-registered safely.
"""
from ..core import runtime

def build():
    import click

    from ..core import options

    @click.command(help=__doc__.split("\n\n")[0])
    @click.argument("service_id")
    @click.option("--add", "add", multiple=True, metavar="TAG", help="Role tag to add (repeatable, or a,b).")
    @click.option("--remove", "remove", multiple=True, metavar="TAG", help="Tag to remove (repeatable, or a,b).")
    @options.audit_log
    @options.common
    def cmd(service_id, add, remove, audit_log, specs, env, consul_addr, token, token_file, consul_timeout,
            verbose):
        from ..core import audit
        from ..consul import settings
        s = settings.resolve(consul_addr, token, token_file, consul_timeout)
        env_name = settings.environment(env)
        log = audit.AuditLog(audit.audit_path(audit_log), secrets=[s.token])
        from ..catalog import retag
        return retag.run(s, env_name, service_id, _tags("--add", add), _tags("--remove", remove), log)

    return cmd


def _tags(flag, values):
    from ..core.errors import UsageError
    from ..catalog.reg_model import MAX_TAGS, split_tags, tag_problem
    out = []
    for v in values:
        parts = split_tags(v)
        if not parts:
            raise UsageError("%s needs a non-empty tag" % flag)
        for t in parts:
            if tag_problem(t):
                raise UsageError("%s %s" % (flag, tag_problem(t)))
        out += [t for t in parts if t not in out]
    if len(out) > MAX_TAGS:
        raise UsageError("%s: %d tags, at most %d" % (flag, len(out), MAX_TAGS))
    return tuple(out)


def main():
    runtime.run(build, prog="medic-tag", deadline=30.0)


if __name__ == "__main__":
    main()
