"""The one wrapper: every failure is one line and exit 3 (UNKNOWN), never click's 1/2."""
import subprocess
import sys
import textwrap

import pytest

from consul_medic.handlers.core import runtime
from consul_medic.handlers.core.errors import ConsulError, SpecError
from consul_medic.handlers.core.status import Outcome, Status, worst

PROG = textwrap.dedent("""
    import sys, time, click
    from consul_medic.handlers.core import runtime
    from consul_medic.handlers.core.status import Outcome, Status

    def build():
        @click.command()
        @click.argument("mode")
        @click.option("-v", "--verbose", count=True)
        def cmd(mode, verbose):
            if mode == "crash":
                raise RuntimeError("boom")
            if mode == "sleep":
                time.sleep(10)
            if mode == "warn":
                return Outcome(Status.WARNING, "MEDIC WARNING - more")
            return Outcome(Status.OK, "MEDIC OK - fine")
        return cmd

    runtime.run(build, prog="medic-test", deadline=float(sys.argv.pop(1)))
""")


def run(*args, deadline="5"):
    return subprocess.run([sys.executable, "-c", PROG, deadline, *args], capture_output=True, text=True,
                          timeout=30)


def test_ok_and_warning_pass_through():
    r = run("fine")
    assert (r.returncode, r.stdout) == (0, "MEDIC OK - fine\n")
    assert run("warn").returncode == 1


@pytest.mark.parametrize("args, expect", [
    (["--bogus", "x"], "MEDIC UNKNOWN - usage: No such option '--bogus'. Did you mean '--verbose'?"),
    ([], "MEDIC UNKNOWN - usage: Missing argument 'MODE'."),
    (["a", "b"], "MEDIC UNKNOWN - usage: Got unexpected extra argument (b)"),
])
def test_usage_error_is_unknown_one_line(args, expect):
    r = run(*args)
    assert r.returncode == 3, r
    assert r.stdout.splitlines() == [expect]
    assert r.stderr == ""


def test_crash_is_unknown_one_line_without_traceback():
    r = run("crash")
    assert r.returncode == 3
    assert r.stdout.splitlines() == ["MEDIC UNKNOWN - internal error: RuntimeError: boom (run with -v for the traceback)"]
    assert "Traceback" not in r.stdout + r.stderr


def test_crash_with_verbose_prints_traceback_on_stderr():
    r = run("crash", "-v")
    assert r.returncode == 3
    assert len(r.stdout.splitlines()) == 1
    assert "Traceback" in r.stderr and "RuntimeError: boom" in r.stderr


def test_timeout_is_unknown_one_line():
    r = run("sleep", deadline="0.5")
    assert r.returncode == 3
    assert r.stdout.splitlines() == ["MEDIC UNKNOWN - timeout: deadline exceeded"]


def test_help_and_version_exit_ok_for_a_tool():
    for flag in ("--help", "-h"):
        r = run(flag)
        assert r.returncode == 0 and "Usage:" in r.stdout and "Exit states:" in r.stdout, r
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("medic-test (consul-medic) "), r


def test_help_of_a_monitoring_plugin_exits_unknown():
    import click

    def build():
        return click.Command("x", callback=lambda: Outcome(Status.OK, "ok"))
    build.__module__ = "consul_medic.handlers.check.__main__"
    assert runtime.help_status(build) == Status.UNKNOWN and runtime.execute(build, argv=["-h"]).status == 3


def test_bad_deadline_env_is_unknown():
    r = subprocess.run([sys.executable, "-c", PROG, "5", "fine"], capture_output=True, text=True,
                       env={"MEDIC_DEADLINE": "soon", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 3
    assert r.stdout.startswith("MEDIC UNKNOWN - MEDIC_DEADLINE must be seconds")
    assert len(r.stdout.splitlines()) == 1


def test_domain_errors_name_their_kind():
    out = runtime.execute(fast=lambda argv: (_ for _ in ()).throw(SpecError("/x.json: $.instances: bad")), argv=[])
    assert out == Outcome(Status.UNKNOWN, "MEDIC UNKNOWN - spec: /x.json: $.instances: bad")
    out = runtime.execute(fast=lambda argv: (_ for _ in ()).throw(ConsulError("down")), argv=[])
    assert out.text == "MEDIC UNKNOWN - consul: down"


def test_status_line_strips_pipe_and_newlines():
    assert runtime.status_line(Status.CRITICAL, "a | b\nc") == "MEDIC CRITICAL - a / b c"


def test_non_outcome_return_is_an_internal_error():
    out = runtime.execute(fast=lambda argv: "oops", argv=[])
    assert out.status == Status.UNKNOWN and "internal error" in out.text


def test_worst():
    assert worst([Status.OK, Status.CRITICAL, Status.WARNING]) == Status.CRITICAL
    assert worst([Status.CRITICAL, Status.UNKNOWN]) == Status.UNKNOWN
    assert worst([]) == Status.OK
