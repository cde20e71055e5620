"""medic-failover: keep one Redis master per service, by role tags (docs/medic-failover.md).

    medic-failover SERVICE     [common options: --consul-addr, --env, --token ...]

Run as a Consul `service` watch handler on the Redis service (the payload on stdin is not
read: it observes Consul and Redis afresh). Under the service lock: when the master is lost,
promotes the healthy replica with the highest replication offset, retags with medic-tag's
machinery, points the other replicas at it; never two instances tagged master.
Exit: 0 nothing to do, repaired, failed over, or another operation holds the lock; 2 master
lost with no healthy replica (alerted, nothing promoted) or a Redis step failed; 3 bad input,
Consul failure.
"""
from ..core import runtime


def build():
    import click

    from ..core import options

    @click.command(help=__doc__.split("\n\n")[0])
    @click.argument("service")
    @options.audit_log
    @click.option("--lock-wait", "lock_wait", type=float, default=10.0, show_default=True, metavar="SECONDS",
                  help="Wait this long for another operation's service lock before giving up.")
    @options.common
    def cmd(service, audit_log, lock_wait, specs, env, consul_addr, token, token_file, consul_timeout, verbose):
        from ..core import alerts, audit
        from . import failover_core
        from ..consul import settings
        from ..core.errors import UsageError
        if not service or "/" in service:
            raise UsageError("service %r is not a service name" % service)
        s = settings.resolve(consul_addr, token, token_file, consul_timeout)
        env_name = settings.environment(env)
        log = audit.AuditLog(audit.audit_path(audit_log), secrets=[s.token])
        if lock_wait < 0:
            raise UsageError("--lock-wait must be >= 0 seconds")
        return failover_core.run(s, env_name, service, log,
                                 lambda event: alerts.emit(event, log, specs, env_name, s), lock_wait=lock_wait)

    return cmd


def main():
    runtime.run(build, prog="medic-failover", deadline=30.0)


if __name__ == "__main__":
    main()
