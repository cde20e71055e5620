"""medic-failover: keep one Redis master per service, by role tags (docs/medic-failover.md).

    medic-failover SERVICE     [--redis-user U] [--redis-password-file F] [--redis-tls [--redis-cacert F]]
                               [common options: --consul-addr, --env, --token ...]

Run as a Consul `service` watch handler on the Redis service (the payload on stdin is not
read: it observes Consul and Redis afresh). Under the service lock: when the master is lost,
promotes the healthy replica with the highest replication offset, retags with medic-tag's
machinery, points the other replicas at it; never two instances tagged master. Only instances
of the owner the service's spec names count (when --specs holds one; `"membership": "any"`
widens it), only a replica sharing the lost master's recorded replication ID is promoted, and
Redis is spoken to with AUTH (password from a file, never argv) and TLS when given.
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
    @click.option("--redis-user", "redis_user", envvar="MEDIC_REDIS_USER", metavar="USER",
                  help="Redis ACL user (with --redis-password-file) [env MEDIC_REDIS_USER].")
    @click.option("--redis-password-file", "redis_password_file", envvar="MEDIC_REDIS_PASSWORD_FILE", metavar="FILE",
                  help="File whose first line is the Redis password [env MEDIC_REDIS_PASSWORD_FILE].")
    @click.option("--redis-tls", "redis_tls", is_flag=True, envvar="MEDIC_REDIS_TLS",
                  help="Speak TLS to Redis, verifying its certificate [env MEDIC_REDIS_TLS].")
    @click.option("--redis-cacert", "redis_cacert", envvar="MEDIC_REDIS_CACERT", metavar="FILE",
                  help="CA bundle for --redis-tls [env MEDIC_REDIS_CACERT].")
    @options.common
    def cmd(service, audit_log, lock_wait, redis_user, redis_password_file, redis_tls, redis_cacert, specs, env,
            consul_addr, token, token_file, consul_timeout, verbose):
        from ..core import alerts, audit, trust
        from . import failover_core, failover_io
        from ..consul import settings
        from ..core.errors import UsageError
        try:
            trust.service_name(service)
        except trust.Refused:
            raise UsageError("service %r is not a service name" % service) from None
        s = settings.resolve(consul_addr, token, token_file, consul_timeout)
        env_name = settings.environment(env)
        if redis_user and not redis_password_file:
            raise UsageError("--redis-user needs --redis-password-file")
        if redis_cacert and not redis_tls:
            raise UsageError("--redis-cacert needs --redis-tls")
        password = failover_io.read_secret(redis_password_file) if redis_password_file else None
        auth = failover_io.RedisAuth(redis_user, password, bool(redis_tls), redis_cacert)
        log = audit.AuditLog(audit.audit_path(audit_log), secrets=[s.token] + ([password] if password else []))
        if lock_wait < 0:
            raise UsageError("--lock-wait must be >= 0 seconds")
        return failover_core.run(s, env_name, service, log,
                                 lambda event: alerts.emit(event, log, specs, env_name, s), lock_wait=lock_wait,
                                 owner=_owner(specs, env_name, service), auth=auth)

    return cmd


def _owner(specs, env, service):
    """The owner the service's spec names (handlers/service/members.py); None when no spec names the service
    (no specs directory, or none for it). `<service>.json` is read first, so another service's
    broken spec does not stop a failover; when none is found and some spec cannot be read, that is
    an error (it could be this service's): never "any" by accident."""
    import os

    from ..service import members
    from ..spec import spec
    from ..core.errors import SpecError
    d = spec.specs_dir(specs)
    if not os.path.isdir(d):
        return None
    direct = os.path.join(d, service + ".json")
    if os.path.exists(direct):
        sp = spec.load_file(direct, env)
        if sp.service == service:
            return members.owner(sp)
    bad = []
    for path, doc in spec.load_documents(d):
        if isinstance(doc, SpecError):
            bad.append(os.path.basename(path))
            continue
        sp = spec.build(doc, path, env)
        if sp.service == service:
            return members.owner(sp)
    if bad:
        raise SpecError("%s: no readable spec declares %s and %s cannot be read: its owner is unknown"
                        % (d, service, ", ".join(bad[:3])))
    return None


def main():
    runtime.run(build, prog="medic-failover", deadline=30.0)


if __name__ == "__main__":
    main()
