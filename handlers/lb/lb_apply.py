"""medic-lb's output side: validate a candidate, write it atomically, reload only on change.

    substitute(argv, path)              PURE: `{}` in an argv list -> the path
    Applier.apply(text)                 I/O: unchanged? -> candidate file -> --check-cmd -> rename
                                        -> --reload-cmd; returns a Result
    State (the last good servers)       a JSON file next to the output: <out>.medic-lb.json

The candidate is written next to the output (`.<name>.medic-lb-XXXX`, same directory so the
rename is atomic), the check command runs on it (`{}` in its argv is the candidate's path),
and only a candidate that passed is renamed over the output, keeping the old file's mode.
Commands are argv lists, run without a shell, with a timeout.
"""
import json
import os
import subprocess
import tempfile
import time
from collections import namedtuple

from ..core.errors import MedicError, UsageError

PLACEHOLDER = "{}"
COMMAND_TIMEOUT = 30.0

Result = namedtuple("Result", "changed written reloaded detail")


class ApplyError(MedicError):
    """The candidate failed its check, or the reload failed: CRITICAL, output not replaced
    (check) or replaced but not loaded (reload)."""
    kind = "apply"
    written = False  # True when the output was replaced but the reload failed


def substitute(argv, path):
    return [a.replace(PLACEHOLDER, path) for a in argv]


def parse_command(raw, flag, need_placeholder):
    """A command option's text -> argv list (shlex rules, never a shell)."""
    import shlex
    if raw is None:
        return None
    try:
        argv = shlex.split(raw)
    except ValueError as e:
        raise UsageError("%s: %s" % (flag, e)) from None
    if not argv:
        raise UsageError("%s is empty" % flag)
    if need_placeholder and not any(PLACEHOLDER in a for a in argv):
        raise UsageError("%s must name the candidate file as {} (e.g. 'nginx -t -c {}')" % flag)
    return argv


def _run(argv, what):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise ApplyError("%s: %s not found" % (what, argv[0])) from None
    except subprocess.TimeoutExpired:
        raise ApplyError("%s: %s did not finish within %.0f s" % (what, argv[0], COMMAND_TIMEOUT)) from None
    except OSError as e:
        raise ApplyError("%s: %s: %s" % (what, argv[0], e.strerror)) from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + "\n" + p.stdout).splitlines() if ln.strip()]
        raise ApplyError("%s: %s exited %d: %s" % (what, os.path.basename(argv[0]), p.returncode,
                                                   " / ".join(lines[-3:]) or "no output"))
    return p


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Applier:
    def __init__(self, out, check_cmd=None, reload_cmd=None):
        self.out = os.path.abspath(out)
        self.check_cmd, self.reload_cmd = check_cmd, reload_cmd
        self.reload_seconds = None  # how long the last apply's reload took (None: no reload)

    def apply(self, text, reload_pending=False):
        """Returns Result; raises ApplyError (check or reload failed) or OSError (cannot write).

        `reload_pending`: the last reload failed, so an unchanged output is reloaded again."""
        self.reload_seconds = None
        if read_text(self.out) == text:
            if reload_pending and self.reload_cmd:
                self._reload()
                return Result(False, False, True, "output unchanged, reloaded again (the last reload failed)")
            return Result(False, False, False, "output unchanged: not written, not reloaded")
        d, base = os.path.split(self.out)
        fd, cand = tempfile.mkstemp(prefix="." + base + ".medic-lb-", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.chmod(cand, os.stat(self.out).st_mode & 0o7777)
            except FileNotFoundError:
                os.chmod(cand, 0o644)
            if self.check_cmd:
                _run(substitute(self.check_cmd, cand), "check of the candidate (output not replaced)")
            os.replace(cand, self.out)
            cand = None
            _fsync_dir(d)
        finally:
            if cand is not None:
                try:
                    os.unlink(cand)
                except OSError:
                    pass
        if self.reload_cmd:
            self._reload()
        how = "checked, " if self.check_cmd else ""
        return Result(True, True, bool(self.reload_cmd),
                      "output %swritten%s" % (how, ", reloaded" if self.reload_cmd else " (no --reload-cmd)"))


    def _reload(self):
        t0 = time.monotonic()
        try:
            _run(substitute(self.reload_cmd, self.out), "reload (output written)")
        except ApplyError as e:
            e.written = True
            raise
        finally:
            self.reload_seconds = time.monotonic() - t0


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class State:
    """The last good servers per service, the services currently degraded (alerted), and the
    refusals of the trust boundary already audited and alerted (one line each)."""

    def __init__(self, path):
        self.path = path

    EMPTY = {"servers": {}, "degraded": [], "reload_pending": False, "refused": []}

    def load(self):
        """{"servers": {service: [server]}, "degraded": [service], "reload_pending": bool};
        a missing or bad file is empty."""
        raw = read_text(self.path)
        if not raw:
            return dict(self.EMPTY)
        try:
            data = json.loads(raw)
            servers = data.get("servers") or {}
            if not isinstance(servers, dict):
                raise ValueError("servers is not an object")
            return {"servers": servers, "degraded": list(data.get("degraded") or []),
                    "reload_pending": bool(data.get("reload_pending")),
                    "refused": [str(x) for x in data.get("refused") or []]}
        except (ValueError, AttributeError):
            return dict(self.EMPTY)

    def save(self, servers, degraded, reload_pending=False, refused=()):
        d, base = os.path.split(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix="." + base + ".", dir=d)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"servers": servers, "degraded": sorted(degraded), "reload_pending": reload_pending,
                       "refused": sorted(refused)}, f, sort_keys=True, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
