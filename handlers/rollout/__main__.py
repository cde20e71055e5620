"""medic-rollout: roll a service to a new image, one instance at a time (docs/medic-rollout.md).

    medic-rollout SERVICE --image IMAGE[:TAG] [--deadline S] [--lb-output FILE] [--dry-run]
    medic-rollout SERVICE --abort

Wiring only: options -> rollout_run.run(). Exit: 0 rolled out (or nothing to do),
1 refused or stopped by a pause (nothing lost; run again), 2 failed (rolled back, or
could not), 3 bad input or could not start (nothing changed).
"""
import os
import sys

from ..core import options, runtime

DEADLINE = 3600.0  # the whole run; each new instance has its own --deadline


def main():
    runtime.run(command=_command, prog="medic-rollout", deadline=DEADLINE)


def _command():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("service")
    @click.option("--image", metavar="IMAGE[:TAG]", help="The image to roll to (on the engine already).")
    @click.option("--abort", is_flag=True, help="Roll an interrupted rollout back to its old image.")
    @click.option("--deadline", type=float, metavar="SECONDS",
                  help="How long a new instance may take to pass [default: the spec's heal.grace].")
    @click.option("--lb-output", metavar="FILE", help="medic-lb's output: wait until it lists / drops instances.")
    @click.option("--lb-timeout", type=float, default=30.0, show_default=True, metavar="SECONDS",
                  help="How long the LB output may take to drop an old instance.")
    @click.option("--stop-timeout", type=int, metavar="SECONDS",
                  help="docker stop timeout for old instances [default: the container's own, else 10].")
    @click.option("--monitor", type=float, default=5.0, show_default=True, metavar="SECONDS",
                  help="After the last step, how long the new instances must keep running (else roll back; "
                       "0: judged when each passes).")
    @click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
    @options.audit_log
    @options.common
    def cmd(service, image, abort, deadline, lb_output, lb_timeout, stop_timeout, monitor, dry_run, audit_log, specs,
            env, consul_addr, token, token_file, consul_timeout, verbose):
        """Replace SERVICE's containers with IMAGE one at a time, never fewer passing than declared."""
        from . import rollout_run
        conn = dict(consul_addr=consul_addr, token=token, token_file=token_file, timeout=consul_timeout)
        return rollout_run.run(service, image=image, abort=abort, deadline=deadline, lb_output=lb_output,
                               lb_timeout=lb_timeout, stop_timeout=stop_timeout, monitor=monitor, dry_run=dry_run,
                               audit_log=audit_log, specs=specs, env=env, conn=conn, environ=os.environ,
                               stream=sys.stdout)

    return cmd


if __name__ == "__main__":
    main()
