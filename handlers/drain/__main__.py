"""medic-drain: take a Docker host out for an upgrade, and bring it back (docs/medic-drain.md).

    medic-drain HOST [--hosts FILE] [--lb-output FILE] [--dry-run]
    medic-drain --undo HOST [--rebalance]

Wiring only: options -> drain_run.run(). Exit: 0 done (the host is empty and in
maintenance / out of maintenance), 1 refused (lock held, no other host), 2 failed at a
step, 3 bad input.
"""
import os
import sys

from ..core import options, runtime

DEADLINE = 3600.0


def main():
    runtime.run(command=_command, prog="medic-drain", deadline=DEADLINE)


def _command():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("host")
    @click.option("--undo", is_flag=True, help="Take HOST out of maintenance.")
    @click.option("--rebalance", is_flag=True, help="With --undo: move its fair share of instances back.")
    @click.option("--hosts", "hosts_file", metavar="FILE", help="Where each host's engine and agent are "
                  "[env MEDIC_HOSTS_FILE].")
    @click.option("--deadline", type=float, default=60.0, show_default=True, metavar="SECONDS",
                  help="How long replacements may take to pass.")
    @click.option("--lb-output", metavar="FILE", help="medic-lb's output: wait until it lists / drops instances.")
    @click.option("--lb-timeout", type=float, default=30.0, show_default=True, metavar="SECONDS")
    @click.option("--stop-timeout", type=int, metavar="SECONDS",
                  help="docker stop timeout [default: the container's own, else 10].")
    @click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
    @options.audit_log
    @options.common
    def cmd(host, undo, rebalance, hosts_file, deadline, lb_output, lb_timeout, stop_timeout, dry_run, audit_log,
            specs, env, consul_addr, token, token_file, consul_timeout, verbose):
        """Move HOST's containers to the other hosts and put it in maintenance (or undo that)."""
        from . import drain_run
        conn = dict(consul_addr=consul_addr, token=token, token_file=token_file, timeout=consul_timeout)
        return drain_run.run(host, undo=undo, rebalance=rebalance, hosts_file=hosts_file, deadline=deadline,
                             lb_output=lb_output, lb_timeout=lb_timeout, stop_timeout=stop_timeout, dry_run=dry_run,
                             audit_log=audit_log, specs=specs, env=env, conn=conn, environ=os.environ,
                             stream=sys.stdout)

    return cmd


if __name__ == "__main__":
    main()
