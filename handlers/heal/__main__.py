"""medic-heal: the guarded self-heal watch handler (docs/medic-heal.md). Wiring only:
options -> healing.run().

    checks/service/keyprefix watch payload on stdin -> which services to look at (never what to do)
    --changes (with the cluster-wide checks watch)  -> only the services whose checks changed since
                                            this node's last run and that concern it (heal_seen.py)
    --service NAME (repeatable) | --all     -> the same, from a shell or the reconcile check
    --reset SERVICE                         -> close the circuit, clear backoff (and an unreadable history)
    --pause SERVICE [--for D] [--reason T]  -> hands off SERVICE (every handler honours it)
    --resume SERVICE                        -> end the pause and look at SERVICE at once

Per service (handlers/heal/healer.py): lock -> observe -> decide -> act -> record. Exit: 0 handled,
1 an action failed (or the circuit is open), 3 could not decide (nothing changed).
"""
import os
import sys

from ..core import options, runtime
from .heal_context import DEADLINE
from .healing import run


def main():
    if sys.argv[1:2] == ["--timer"]:  # the node's one timer for holds (heal_timer.py): no click, no deadline
        from . import heal_timer
        sys.exit(heal_timer.main(sys.argv[1:], _look))
    runtime.run(command=_command, fast=_fast, prog="medic-heal", deadline=DEADLINE)


def _look(entry):
    """One deferred look of the node's timer (heal_timer.py): like `--service NAME --not-before AT`."""
    run(services=(entry["service"],), not_before=float(entry["at"]), audit_log=entry.get("audit_log"),
        specs=entry.get("specs"), env=entry.get("env"), stdin=None, environ=os.environ,
        conn=dict(consul_addr=entry.get("consul_addr"), timeout=entry.get("consul_timeout"), token=None,
                  token_file=None))


def _fast(argv):
    """The watch handler's and the reconcile check's plain argv (the shared options, --audit-log,
    --dry-run, --all, one --service) without importing click (~20 ms); anything else -> None,
    and the click command below decides (help, usage errors, the admin modes)."""
    o = options.parse_fast(argv, flags=("--all", "--dry-run", "--changes"), values=("--audit-log", "--service"), positionals=0)
    if o is None:
        return None
    conn = dict(consul_addr=o["consul_addr"], token=o["token"], token_file=o["token_file"], timeout=o["consul_timeout"])
    return run(services=(o["service"],) if o["service"] else (), all_=bool(o["all"]), dry_run=bool(o["dry_run"]),
               audit_log=o["audit_log"], specs=o["specs"], env=o["env"], conn=conn, stdin=sys.stdin,
               environ=os.environ, changes=bool(o["changes"]))


def _command():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--service", "services", multiple=True, metavar="NAME",
                  help="Heal this service (repeatable); stdin is not read.")
    @click.option("--all", "all_", is_flag=True, help="Reconcile every spec (the medic:reconcile check).")
    @click.option("--reset", metavar="SERVICE",
                  help="Close SERVICE's circuit, clear its backoff (and a corrupt history).")
    @click.option("--pause", metavar="SERVICE", help="Hands off SERVICE: every medic handler holds.")
    @click.option("--for", "pause_for", metavar="DURATION", help="With --pause: it ends by itself after this (30m).")
    @click.option("--reason", metavar="TEXT", help="With --pause: why (shown in the audit and medic-status).")
    @click.option("--resume", metavar="SERVICE", help="End SERVICE's pause and look at it at once.")
    @click.option("--not-before", "not_before", type=float, metavar="EPOCH", hidden=True,
                  help="A deferred run: sleep until then (medic-heal arranges these itself).")
    @click.option("--changes", is_flag=True,
                  help="With a checks watch payload of every check: look only at what changed since this "
                       "node's last run and concerns it.")
    @click.option("--dry-run", is_flag=True, help="Observe and decide; print the argv; change nothing.")
    @click.option("--audit-log", metavar="PATH", help="Audit log [env MEDIC_AUDIT_LOG].")
    @options.common
    def cmd(services, all_, reset, pause, pause_for, reason, resume, not_before, changes, dry_run, audit_log, specs,
            env, consul_addr, token, token_file, consul_timeout, verbose):
        """Bring services back to their declared size, from freshly observed state."""
        conn = dict(consul_addr=consul_addr, token=token, token_file=token_file, timeout=consul_timeout)
        return run(services=services, all_=all_, reset=reset, pause=pause, pause_for=pause_for, reason=reason,
                   resume=resume, not_before=not_before, dry_run=dry_run, audit_log=audit_log, specs=specs, env=env,
                   conn=conn, stdin=sys.stdin, environ=os.environ, changes=changes)

    return cmd


if __name__ == "__main__":
    main()
