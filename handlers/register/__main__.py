"""medic-register: a registrator-compatible registrar (docs/medic-register.md).

    medic-register [--once] [--resync SECONDS] [--ip ADDR] [--registrar-id ID] ...

The environment (--env / MEDIC_ENV, else "default") names the KV prefix medic/<env>/ of
the role tags and the wake-up keys.

Daemon (default): follows the Docker engine's events and keeps the local Consul agent's
services equal to the running containers' published ports; SIGTERM/SIGINT stop it
cleanly (registrations stay: the containers still run). `--once`: one resync, then exit
0 (OK) or 3 (UNKNOWN: Consul or engine failure). The logic is in `handlers.reg_*` (map in `handlers/catalog/reg_model.py`).
"""
import os
import signal
import socket
import sys

from ..core import runtime
from ..core.status import Outcome, Status


def build():
    import click

    from ..core import options

    @click.command(help=__doc__.split("\n\n")[0])
    @click.option("--once", is_flag=True, help="One full resync, then exit.")
    @click.option("--resync", "resync", type=float, default=30.0, metavar="SECONDS", show_default=True,
                  help="Daemon: full resync every SECONDS (writes only what differs); 0 = never.")
    @click.option("--ip", "ip", help="Address to register (default: the published HostIp; for wildcard HostIps and "
                  "host-network containers, what the host name resolves to).")
    @click.option("--allow-loopback-ip", "allow_loopback", is_flag=True,
                  help="Start although the host name resolves to a loopback address and no --ip is given "
                  "(single-machine setups only).")
    @click.option("--internal", is_flag=True, help="registrator's -internal: the container's own IP and exposed ports.")
    @click.option("--explicit", is_flag=True, help="registrator's -explicit: only ports with a SERVICE_NAME.")
    @click.option("--deregister", "deregister", type=click.Choice(["always", "on-success"]), default="always",
                  show_default=True, help="on-success: a container that exits non-zero stays registered "
                  "(its check fails) until it is removed or restarted.")
    @click.option("--hostname", "hostname", help="Host part of service IDs [default: this host's name].")
    @click.option("--registrar-id", "registrar_id",
                  help="This registrar's identity in Meta medic_registrar [default: --hostname].")
    @click.option("--tags", "force_tags", default="", help="Comma-separated tags added to every service.")
    @click.option("--filter", "filters", multiple=True, metavar="LABEL[=VALUE]",
                  help="Only containers with this label (repeatable; all must match).")
    @click.option("--probe/--no-probe", "probe", default=True, show_default=True,
                  help="Probe a new registration's HTTP or TCP check once and register it passing if that "
                  "probe passes (Consul's first run waits a random part of the interval).")
    @click.option("--heal-fallback", "heal_fallback", is_flag=True,
                  help="A host whose agent runs medic-heal: when a wake-up key cannot be written (no Consul "
                  "leader), start medic-heal here directly.")
    @click.option("--heal-token-file", "heal_token_file", metavar="FILE",
                  help="With --heal-fallback: the heal role's token file (the registrar's token is never passed on).")
    @click.option("--heal-audit-log", "heal_audit_log", metavar="FILE",
                  help="With --heal-fallback: medic-heal's audit log [default: its own].")
    @click.option("--http-checks-may-redirect", "may_redirect", is_flag=True, envvar="MEDIC_HTTP_CHECKS_MAY_REDIRECT",
                  help="On an agent older than 1.9.17 (no DisableRedirects), register HTTP check labels as HTTP "
                  "checks that follow redirects anyway, instead of the TCP check on the same port "
                  "[env MEDIC_HTTP_CHECKS_MAY_REDIRECT].")
    @options.audit_log
    @click.option("--metrics-addr", "metrics_addr", metavar="HOST:PORT",
                  help="Serve Prometheus /metrics here while running, e.g. 127.0.0.1:9464.")
    @click.option("--docker-timeout", "docker_timeout", type=float, default=10.0, show_default=True,
                  metavar="SECONDS", help="Seconds for each Docker engine API call.")
    @options.common
    def cmd(once, resync, ip, allow_loopback, internal, explicit, deregister, hostname, registrar_id, force_tags,
            filters, probe, heal_fallback, heal_token_file, heal_audit_log, may_redirect, audit_log, metrics_addr, docker_timeout, specs, env, consul_addr, token, token_file, consul_timeout, verbose):
        from ..core import audit
        from . import reg_agent, reg_loop, reg_probe, reg_registrar, reg_wake
        from ..catalog import reg_model
        from ..consul import settings
        from ..core.errors import UsageError

        if not (0 <= resync <= 86400 and 0 < docker_timeout <= 600):  # NaN and Infinity fail too
            raise UsageError("--resync must be 0 to 86400 seconds and --docker-timeout above 0, at most 600")
        if (heal_token_file or heal_audit_log) and not heal_fallback:
            raise UsageError("--heal-token-file and --heal-audit-log go with --heal-fallback")
        s = settings.resolve(consul_addr, token, token_file, consul_timeout)
        env_name = settings.environment(env)
        host = hostname or socket.gethostname()
        if "/" in host:
            raise UsageError("--hostname %r: no '/' allowed (service IDs are KV key parts)" % host)
        fallback, warning = _host_address(host, ip, allow_loopback)
        opts = reg_model.Options(host, registrar_id, ip, fallback, reg_model.split_tags(force_tags), internal, explicit,
                                 deregister)
        log = _logger(verbose)
        agent = reg_agent.Agent(s, env_name)
        opts, http_note = _http_checks(opts, agent.version(), may_redirect)
        reg = reg_registrar.Registrar(opts, agent, reg_loop.docker_client(docker_timeout),
                                      audit.AuditLog(audit.audit_path(audit_log), secrets=[s.token]),
                                      filters=filters, log=log if verbose else None,
                                      probe=reg_probe.first_status if probe else None,
                                      fallback=reg_wake.HealSpawner(sys.argv[0], env_name, specs, consul_addr,
                                                                    heal_token_file, heal_audit_log)
                                      if heal_fallback else None)
        if warning:
            log("warning: " + warning)
            reg.record({"action": "warning", "reason": warning})
        if http_note:
            log("warning: " + http_note)
            reg.record({"action": "warning" if opts.http_checks == "follow" else "fallback", "reason": http_note})
        if once:
            d = reg.resync("--once")
            if reg.stats["refused"]:  # site: a write Consul refused (ACLs?) is not "registered"
                return Outcome(Status.UNKNOWN, runtime.status_line(Status.UNKNOWN, (
                    "consul: resync: Consul refused %d of %d writes (a token without the registrar rules? "
                    "each reason is in the audit log); %d registered, %d deregistered"
                    % (reg.stats["refused"], len(d.ops), reg.stats["register"], reg.stats["deregister"]))))
            regs = sum(1 for o in d.ops if o.action == "register")
            return Outcome(Status.OK, runtime.status_line(Status.OK, (
                "resync: %d registered, %d deregistered, %d unchanged, %d containers (registrar %s)"
                % (regs, len(d.ops) - regs, d.unchanged, len(reg.containers), opts.registrar_id))))
        if metrics_addr:
            from ..core import metrics_export
            metrics_export.serve(metrics_addr, "medic-register")
        return _daemon(reg, s, env_name, resync, filters, docker_timeout, log)

    return cmd


def _daemon(reg, s, env_name, resync, filters, docker_timeout, log):
    import queue
    import threading

    from . import reg_loop
    from ..catalog import reg_roles

    signal.setitimer(signal.ITIMER_REAL, 0)  # MEDIC_DEADLINE bounds --once, not the daemon
    stop, q, got = threading.Event(), queue.Queue(), []

    def on_signal(signum, frame):
        got.append(signal.Signals(signum).name)
        stop.set()
        q.put(("stop",))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("medic-register: registrar %s, consul %s, resync %gs" % (reg.opts.registrar_id, s.addr, resync))
    reg_loop.serve(reg, lambda: reg_loop.docker_client(docker_timeout), stop, q, resync_every=resync,
                    role_watch=reg_roles.RoleWatch(s, env_name, q, stop), log=log, filters=filters)
    reg.record({"action": "stop", "reason": "stopped by %s: registrations kept" % (got[0] if got else "request")})
    return Outcome(Status.OK, runtime.status_line(Status.OK, "stopped by %s after %d registrations, %d deregistrations"
                                                  % (got[0] if got else "request", reg.stats["register"],
                                                     reg.stats["deregister"])))


def _http_checks(opts, version, may_redirect):
    """How HTTP check labels become checks on this agent -> (opts, a line to say or None)."""
    from ..catalog import reg_checks
    if reg_checks.redirects_can_be_disabled(version):
        return opts._replace(http_checks="disable-redirects"), None
    agent = "Consul %s" % version if version else "this Consul agent (version unknown)"
    if may_redirect:
        return opts._replace(http_checks="follow"), (
            "%s cannot turn off redirects for HTTP checks (DisableRedirects needs 1.9.17, 1.10.10 or 1.11.5); "
            "--http-checks-may-redirect: HTTP check labels are registered as HTTP checks that follow redirects"
            % agent)
    return opts._replace(http_checks="tcp"), (
        "%s cannot turn off redirects for HTTP checks (DisableRedirects needs 1.9.17, 1.10.10 or 1.11.5): "
        "HTTP check labels are registered as TCP checks on the same address and port, each said in its "
        "check's Notes" % agent)


def _resolve(host):
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None


def _host_address(host, ip, allow_loopback):
    """(fallback address for wildcard HostIps and host networking, warning or None).

    A host name that resolves to a loopback address (Debian's 127.0.1.1) is a guess no
    other host can reach: refused (exit 3) unless --ip is given or --allow-loopback-ip."""
    import ipaddress

    from ..core.errors import UsageError
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError("--ip %r is not an IP address" % ip[:80]) from None
        return None, None
    guess = _resolve(host)
    if guess is None or not ipaddress.ip_address(guess).is_loopback:
        return guess, None
    why = ("the host name %s resolves to %s, a loopback address: containers published on a wildcard address "
           "would be registered where no other host reaches them" % (host, guess))
    if not allow_loopback:
        raise UsageError(why + "; give --ip ADDR (or --allow-loopback-ip on a single machine)")
    return guess, why + " (--allow-loopback-ip given)"


def _logger(verbose):
    import time

    def log(msg):
        try:
            sys.stderr.write("%s medic-register[%d]: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), msg))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    return log


def main():
    runtime.run(build, prog="medic-register", deadline=120.0)


if __name__ == "__main__":
    main()
