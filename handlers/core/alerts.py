"""The notify interface that other handlers call: hand an event to medic-notify.

`emit()` never blocks healing and never raises: it starts `medic-notify event`
detached (its own session, no wait) with the event as JSON on stdin. The event
is written to an unlinked temporary file first and that file is the child's
stdin, so even a child that never reads cannot block the caller on a full pipe.
A slow or failing channel therefore cannot delay the caller. The Consul token
travels in the child's environment, never on its command line. Every emit is
audited (and the child audits what it then did, in the same audit log).

Event fields (all JSON-serialisable):
    kind      "circuit_open" | "heal_failed" | "healed" | "warning" | "critical" | "recovered"
    service, env, live, desired, action, reason, audit_ref (optional), details (optional)
`details` may carry "instances" and "failing_checks" (lists) and "decision": the
webhook document shows them.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading

KINDS = ("circuit_open", "heal_failed", "healed", "warning", "critical", "recovered")


def notify_exe(argv0=None, executable=None):
    """Absolute path of medic-notify: next to this executable, next to the interpreter, or on PATH.

    Never relative to the working directory: a bare argv[0] (found on PATH) has no directory,
    and a file named medic-notify in the current directory is not ours."""
    import shutil

    argv0 = sys.argv[0] if argv0 is None else argv0
    dirs = [os.path.dirname(os.path.abspath(argv0))] if argv0 and os.sep in argv0 else []
    dirs.append(os.path.dirname(os.path.abspath(executable or sys.executable)))
    for d in dirs:
        exe = os.path.join(d, "medic-notify")
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    found = shutil.which("medic-notify")
    return os.path.abspath(found) if found else "medic-notify"


def notify_argv(specs=None, env=None, consul_addr=None):
    argv = [notify_exe(), "event"]
    for flag, value in (("--specs", specs and os.path.abspath(specs)), ("--env", env),
                        ("--consul-addr", consul_addr)):
        if value:
            argv += [flag, value]
    return argv


def _child_env(settings, audit):
    child_env = dict(os.environ)
    if settings is not None:
        if settings.token:
            child_env["CONSUL_HTTP_TOKEN"] = settings.token
            child_env.pop("CONSUL_HTTP_TOKEN_FILE", None)
        child_env["MEDIC_CONSUL_TIMEOUT"] = str(settings.timeout)
    if audit is not None and getattr(audit, "path", None):
        child_env["MEDIC_AUDIT_LOG"] = audit.path
    child_env.pop("MEDIC_DEADLINE", None)  # the caller's budget is not the notifier's
    return child_env


def _reap(p):
    try:
        p.wait()
    except OSError:
        pass


def emit(event, audit=None, specs=None, env=None, settings=None):
    """Hand `event` to medic-notify without waiting. Returns True when handed over
    (or deliberately not: MEDIC_NOTIFY=off, audited with `disabled: true`).

    Never raises, never waits for the child: a bad event is audited and dropped.
    Audit record: {"kind": "notify", "step": "emit", "event": {...}, "handed_over", ...};
    medic-notify's own records of what it then decided are kind "notification".
    """
    ok, error, disabled = True, None, False
    try:
        if not isinstance(event, dict) or event.get("kind") not in KINDS:
            raise ValueError("unknown event kind %r" % (event.get("kind") if isinstance(event, dict) else event,))
        payload = json.dumps(event, default=str).encode("utf-8")
        argv = notify_argv(specs, env, settings.addr if settings is not None else None)
        disabled = os.environ.get("MEDIC_NOTIFY", "").lower() in ("off", "0", "false")
        if not disabled:
            with tempfile.TemporaryFile() as stdin:
                stdin.write(payload)
                stdin.seek(0)
                p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=_child_env(settings, audit), start_new_session=True, close_fds=True)
            threading.Thread(target=_reap, args=(p,), daemon=True).start()
    except Exception as e:  # noqa: BLE001 boundary: never raise into the heal path; audited as not handed over
        ok, error = False, "%s: %s" % (type(e).__name__, e)
        try:
            error = settings.redact(error) if settings is not None else error
        except (AttributeError, TypeError):
            error = type(e).__name__  # cannot tell what is secret in it: keep the type only
    if audit is not None:
        try:
            audit.write({"kind": "notify", "step": "emit",
                         "service": event.get("service") if isinstance(event, dict) else None,
                         "env": event.get("env") if isinstance(event, dict) else None,
                         "event": event, "handed_over": ok, "error": error, "disabled": disabled,
                         "reason": "MEDIC_NOTIFY=off: medic-notify not started" if disabled else None})
        except (OSError, TypeError, ValueError):  # the log, or an event json cannot write
            pass
    return ok
