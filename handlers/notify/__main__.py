"""medic-notify: alerts on warning, critical, heal outcomes and open circuits, on transitions only.

    medic-notify watch --specs DIR    a `checks` watch handler for medic's own `medic`
                                      service (checks `medic:<service>`), payload on stdin
    medic-notify event --specs DIR    one event from medic-heal (handlers.alerts.emit) on stdin
    medic-notify sweep --specs DIR    read those checks from Consul itself: due reminders
                                      and missed transitions (cron, a timer)

Wiring only: options -> notify_run. The rules are in notify_rules, the messages in
notify_message, the KV record in notify_state, one run's orchestration in notifier.
"""
import sys

from ..core import options, runtime
from .notify_config import DEFAULT_NOTIFY_CONFIG
from .notify_run import run_event, run_sweep, run_watch


def _command():
    import click

    def notify_options(f):
        f = options.audit_log(f)
        f = click.option("--notify-config", "notify_config", metavar="FILE",
                         help="Global notify file [env MEDIC_NOTIFY_CONFIG; %s; missing: log channel only]."
                         % DEFAULT_NOTIFY_CONFIG)(f)
        return options.common(f)

    @click.group(help=__doc__.split("\n\n")[0], invoke_without_command=True)
    @click.pass_context
    def cli(ctx):
        if ctx.invoked_subcommand is None:
            raise click.UsageError("a command is needed: watch, event or sweep (see --help)")

    @cli.command(help="Handle a `checks` watch payload (medic's own checks) on stdin.")
    @notify_options
    def watch(**kw):
        return run_watch(sys.stdin, **kw)

    @cli.command(help="Handle one medic-heal event (JSON) on stdin.")
    @notify_options
    def event(**kw):
        return run_event(sys.stdin, **kw)

    @cli.command(help="Read medic's checks from Consul and notify as the watch would: "
                      "reminders that are due, transitions a watch run missed. For cron.")
    @notify_options
    @click.option("--medic-service", "medic_service", default="medic", show_default=True,
                  help="The Consul service carrying the checks medic:<service>.")
    def sweep(**kw):
        return run_sweep(**kw)

    return cli


def main():
    runtime.run(command=_command, prog="medic-notify", deadline=120.0)


if __name__ == "__main__":
    main()
