"""The one wrapper that exits.

Every medic-* executable's `main()` is `runtime.run(...)`. It runs the command
(a fast argv path and/or a click command in `standalone_mode=False`), and turns
every failure into ONE status line and a documented exit state:

    usage error (click or ours)    -> UNKNOWN (3)   "MEDIC UNKNOWN - usage: ..."
    --help / --version             -> UNKNOWN (3)   (monitoring-plugins convention)
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
    raw = os.environ.get("MEDIC_DEADLINE")
    if raw:
        try:
            return float(raw)
        except ValueError:
            raise MedicError("MEDIC_DEADLINE must be seconds, got %r" % raw) from None
    return default


def execute(command=None, fast=None, argv=None, prog=None):
    """Run the command and return an Outcome; never exits, never raises.

    `fast(argv)` may return an Outcome, or None to hand the argv to the click
    `command()` factory (imported lazily: click costs ~30 ms of CPU to import).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbose(argv)
    try:
        outcome = fast(argv) if fast is not None else None
        if outcome is None:
            outcome = _run_click(command(), argv, prog)
        if not isinstance(outcome, Outcome):
            raise TypeError("command returned %r, not an Outcome" % (outcome,))
        return outcome
    except MedicError as e:
        _trace(verbose)
        kind = "" if e.kind == "error" else e.kind + ": "
        return Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, kind + str(e)))
    except KeyboardInterrupt:
        return Outcome(Status.UNKNOWN, status_line(Status.UNKNOWN, "interrupted"))
    except Exception as e:  # the boundary: anything unexpected is UNKNOWN, never 1/2
        _trace(verbose)
        hint = "" if verbose else " (run with -v for the traceback)"
        return Outcome(Status.UNKNOWN, status_line(
            Status.UNKNOWN, "internal error: %s: %s%s" % (type(e).__name__, e, hint)))


def _run_click(cmd, argv, prog):
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
        # click handled --help/--version itself and returned its exit code
        return Outcome(Status.UNKNOWN, "")
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
