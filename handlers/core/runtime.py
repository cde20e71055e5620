"""The one wrapper that exits.

Every medic-* executable's `main()` is `runtime.run(...)`. It runs the command
(a fast argv path and/or a click command in `standalone_mode=False`), and turns
every failure into ONE status line and a documented exit state:

    usage error (click or ours)    -> UNKNOWN (3)   "MEDIC UNKNOWN - usage: ..."
    -h / --help / --version        -> OK (0); medic-check (a monitoring plugin, run by
                                      Consul as a check) keeps UNKNOWN (3), the
                                      monitoring-plugins convention
    spec / payload / Consul / engine error -> UNKNOWN (3)
    deadline exceeded (SIGALRM)    -> UNKNOWN (3)
    unexpected exception           -> UNKNOWN (3), traceback on stderr only with -v

Click on its own would exit 2 on a typo (critical in Consul) and 1 on a crash
(warning): that is why nothing else in the code base calls sys.exit.
"""
import os
import signal
import sys

from .errors import DeadlineExceeded, MedicError
from .status import Outcome, Status

PREFIX = "MEDIC"


def status_line(status, text):
    """`MEDIC CRITICAL - text`: the monitoring-plugins status line, `|` stripped from text."""
    text = " ".join(str(text).split())  # one line, no control characters
    return "%s %s - %s" % (PREFIX, Status(status).name, text.replace("|", "/"))


def _on_alarm(signum, frame):
    raise DeadlineExceeded("deadline exceeded")


def _verbose(argv):
    return any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"})
               for a in argv if a != "--")


def _deadline(default):
    """MEDIC_DEADLINE (seconds, > 0, finite, at most 30 days) or the executable's default.

    A bad value (-5, inf, nan, text) is refused with one line and exit 3, never read
    as "no deadline"."""
    from .durations import env_seconds
    return env_seconds(os.environ, "MEDIC_DEADLINE", default)


# Commands (by the module of their factory) that are monitoring plugins: --help/--version exit 3.
PLUGINS = {"consul_medic.handlers.check.__main__"}
EPILOG = ("Exit states: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (bad input, or Consul or the engine could "
          "not be asked: nothing was changed); one status line on stdout. Connection: CONSUL_HTTP_ADDR "
          "(IPv6 as [::1]:8500), CONSUL_HTTP_TOKEN_FILE (preferred: --token shows in ps), CONSUL_CACERT, "
          "CONSUL_CAPATH, CONSUL_CLIENT_CERT/KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_AUTH; MEDIC_DEADLINE "
          "bounds a run (seconds).")


def sibling(argv0, name):
    """The medic executable `name` beside the running one (argv0), else `name` (found on PATH)."""
    exe = os.path.join(os.path.dirname(argv0 or ""), name)
    return exe if os.path.isfile(exe) else name


def help_status(command):
    """Exit state of -h/--help/--version for this command factory."""
    return Status.UNKNOWN if getattr(command, "__module__", None) in PLUGINS else Status.OK


def version():
    try:
        from importlib.metadata import version as dist_version
        return dist_version("consul-medic")
    except (ImportError, OSError, ValueError):  # not installed (PackageNotFoundError), unreadable metadata
        return "unknown"


def prepare(cmd, prog):
    """Give every click command the shared CLI: -h as --help, --version, a help text that
    ends with the summary above and carries no path into the source tree."""
    import re

    import click

    def show_version(ctx, param, value):
        if value and not ctx.resilient_parsing:
            click.echo("%s (consul-medic) %s" % (prog or ctx.info_name, version()))
            ctx.exit(0)

    cmd.context_settings.setdefault("help_option_names", ["-h", "--help"])
    if not any("--version" in getattr(p, "opts", ()) for p in cmd.params):
        cmd.params.append(click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True,
                                       callback=show_version, help="Show the version and exit."))
    todo = [cmd]
    while todo:
        c = todo.pop()
        if c.help:
            c.help = re.sub(r"\s*\(docs/[\w.-]+\.md\)", "", c.help)
        if c.epilog is None:
            c.epilog = EPILOG
        todo.extend(getattr(c, "commands", {}).values())
    return cmd


def execute(command=None, fast=None, argv=None, prog=None):
    """Run the command and return an Outcome; never exits, never raises.

    `fast(argv)` may return an Outcome, or None to hand the argv to the click
    `command()` factory (imported lazily: click costs ~30 ms of CPU to import).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbose(argv)
    _warn_token_argv(argv, prog)
    try:
        outcome = fast(argv) if fast is not None else None
        if outcome is None:
            outcome = _run_click(prepare(command(), prog), argv, prog, help_status(command))
        if not isinstance(outcome, Outcome):
            raise TypeError("command returned %r, not an Outcome" % (outcome,))
        return outcome
    except MedicError as e:
        _trace(verbose)
        kind = "" if e.kind == "error" else e.kind + ": "
        return Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, kind + str(e)))
    except KeyboardInterrupt:
        return Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, "interrupted"))
    except Exception as e:  # noqa: BLE001 boundary: anything unexpected is one UNKNOWN status line, never 1/2
        _trace(verbose)
        hint = "" if verbose else " (run with -v for the traceback)"
        return Outcome(Status.UNKNOWN, status_line(
            Status.UNKNOWN, "internal error: %s: %s%s" % (type(e).__name__, e, hint)))


def _warn_token_argv(argv, prog):
    """A token on the command line is readable by every user (ps): it works, with one line on stderr."""
    options = argv[:argv.index("--")] if "--" in argv else argv
    if any(a == "--token" or a.startswith("--token=") for a in options):
        from .options import TOKEN_ARGV_WARNING
        sys.stderr.write("%s: %s\n" % (prog or "medic", TOKEN_ARGV_WARNING))


def _run_click(cmd, argv, prog, on_help=Status.UNKNOWN):
    import click

    try:
        rv = cmd.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.UsageError as e:
        raise _Usage(e.format_message()) from None
    except click.exceptions.Abort:
        raise MedicError("aborted") from None
    except click.exceptions.ClickException as e:
        raise MedicError(e.format_message()) from None
    if isinstance(rv, int) and not isinstance(rv, Outcome):
        # click handled --help/--version itself (printed them) and returned its exit code
        return Outcome(on_help, "")
    return rv


class _Usage(MedicError):
    kind = "usage"


def _trace(verbose):
    if verbose:
        import traceback
        traceback.print_exc(file=sys.stderr)


def run(command=None, fast=None, argv=None, prog=None, deadline=30.0, quick_exit=False):
    """Entry point wrapper: execute under a deadline, print, exit. The only sys.exit.

    quick_exit: end with os._exit once the output is flushed, skipping the interpreter's
    teardown (~3 ms of CPU, a tenth of a hot-path run); only for a process that holds no
    other buffered output, atexit work or child it must wait for (medic-check).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0] or "medic")
    try:
        seconds = _deadline(deadline)
    except MedicError as e:
        seconds, outcome = None, Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, str(e)))
    else:
        outcome = None
    if outcome is None:
        if seconds and seconds > 0 and hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            outcome = execute(command, fast, argv, prog)
        except DeadlineExceeded:  # fired between execute's handlers
            outcome = Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, "timeout: deadline exceeded"))
        finally:
            if seconds and hasattr(signal, "SIGALRM"):
                signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        if outcome.text:
            sys.stdout.write(outcome.text if outcome.text.endswith("\n") else outcome.text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    if quick_exit:
        try:
            sys.stderr.flush()
        finally:
            os._exit(int(outcome.status))
    sys.exit(int(outcome.status))
