"""The notify interface that other handlers call: hand an event to medic-notify.

`emit()` never blocks healing and never raises: it starts `medic-notify event`
detached (its own session, stdin = the event as JSON, no wait), so a slow or
failing channel cannot delay the caller. The Consul token travels in the
child's environment, never on its command line. Every emit is audited.

Event fields (all JSON-serialisable):
    kind      "circuit_open" | "heal_failed" | "healed" | "warning" | "critical" | "recovered"
    service, env, live, desired, action, reason, audit_ref (optional), details (optional)
"""
import json
import os
import subprocess
import sys

KINDS = ("circuit_open", "heal_failed", "healed", "warning", "critical", "recovered")


def notify_argv(specs=None, env=None, consul_addr=None):
    exe = os.path.join(os.path.dirname(sys.argv[0] or ""), "medic-notify")
    if not os.path.isfile(exe):
        exe = "medic-notify"
    argv = [exe, "event"]
    for flag, value in (("--specs", specs), ("--env", env), ("--consul-addr", consul_addr)):
        if value:
            argv += [flag, value]
    return argv


def emit(event, audit=None, specs=None, env=None, settings=None):
    """Hand `event` to medic-notify without waiting. Returns True when handed over."""
    if event.get("kind") not in KINDS:
        raise ValueError("unknown event kind %r" % event.get("kind"))
    child_env = dict(os.environ)
    addr = None
    if settings is not None:
        addr = settings.addr
        if settings.token:
            child_env["CONSUL_HTTP_TOKEN"] = settings.token
    argv = notify_argv(specs, env, addr)
    ok, error = True, None
    if os.environ.get("MEDIC_NOTIFY", "").lower() not in ("off", "0", "false"):
        try:
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=child_env, start_new_session=True,
                                 close_fds=True)
            p.stdin.write(json.dumps(event).encode())
            p.stdin.close()
        except OSError as e:
            ok, error = False, str(e)
    if audit is not None:
        try:
            audit.write({"kind": "notify", "service": event.get("service"), "env": event.get("env"),
                         "event": event, "handed_over": ok, "error": error})
        except OSError:
            pass
    return ok
