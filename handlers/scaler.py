"""Doing: scale a compose service (v2 plugin, v1 fallback) or a Swarm service, with timeouts.

    ComposeScaler   docker compose -p P -f F up -d --no-recreate --scale S=N S   (argv list)
                    (`docker-compose` v1 when only that exists)
    SwarmScaler     service.scale(N) through the Docker SDK
    RecordingScaler a fake for unit tests: records every call, changes nothing

Compose v2 counts a service's stopped containers in --scale N: it restarts exited ones
(with new host ports) and, when there are more than N, removes the highest-numbered
ones whether they run or not. `decide` therefore names surplus stopped containers in
`Decision.remove`, and `scale()` removes them before running compose.
"""
import shutil
import subprocess
import time
from collections import namedtuple

from .errors import EngineError

Result = namedtuple("Result", "ok argv returncode output duration removed")
_OUTPUT_TAIL = 2000


def compose_command(which=shutil.which, run=subprocess.run, timeout=20.0):
    """['docker', 'compose'] when the v2 plugin answers, else ['docker-compose'], else EngineError."""
    docker = which("docker")
    if docker:
        try:
            p = run([docker, "compose", "version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            if p.returncode == 0:
                return ["docker", "compose"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    if which("docker-compose"):
        return ["docker-compose"]
    raise EngineError("neither `docker compose` (v2) nor `docker-compose` (v1) is available")


def compose_argv(base, scale, n):
    return list(base) + ["-p", scale.project, "-f", scale.file, "up", "-d", "--no-recreate",
                         "--scale", "%s=%d" % (scale.service, int(n)), scale.service]


class ComposeScaler:
    def __init__(self, scale, timeout, engine=None, base=None, run=subprocess.run):
        self.scale_spec, self.timeout, self.engine = scale, float(timeout), engine
        self._base, self._run = base, run

    @property
    def base(self):
        if self._base is None:
            self._base = compose_command(run=self._run)
        return self._base

    def argv(self, n):
        return compose_argv(self.base, self.scale_spec, n)

    def scale(self, n, remove=(), replace=None):
        started = time.monotonic()
        removed = []
        argv = self.argv(n)
        try:
            for cid in ([replace] if replace else []) + list(remove):
                _remove(self.engine, cid, stop=(cid == replace))
                removed.append(cid)
        except EngineError as e:
            return Result(False, argv, None, str(e), time.monotonic() - started, removed)
        try:
            p = self._run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=self.timeout)
        except subprocess.TimeoutExpired as e:
            out = (e.output or b"").decode("utf-8", "replace")
            return Result(False, argv, None, ("timed out after %.0f s: " % self.timeout) + out[-_OUTPUT_TAIL:],
                          time.monotonic() - started, removed)
        except OSError as e:
            return Result(False, argv, None, "cannot run %s: %s" % (argv[0], e.strerror or e),
                          time.monotonic() - started, removed)
        out = (p.stdout or b"").decode("utf-8", "replace")[-_OUTPUT_TAIL:]
        return Result(p.returncode == 0, argv, p.returncode, out, time.monotonic() - started, removed)


def _remove(engine, cid, stop=False):
    if engine is None:
        raise EngineError("no engine client to remove container %s" % cid[:12])
    try:
        c = engine.containers.get(cid)
        if stop:
            c.stop(timeout=10)
        c.remove(force=True)
    except Exception as e:
        if type(e).__name__ == "NotFound":
            return
        raise EngineError("removing container %s failed: %s" % (cid[:12], str(e).splitlines()[0][:200])) from None


class SwarmScaler:
    def __init__(self, scale, timeout, engine):
        self.scale_spec, self.timeout, self.engine = scale, float(timeout), engine

    def argv(self, n):
        # not a command line: a readable record of the SDK call for audit and --dry-run
        return ["docker-sdk", "service", "scale", "%s=%d" % (self.scale_spec.service, int(n))]

    def scale(self, n, remove=(), replace=None):
        started = time.monotonic()
        removed = []
        try:
            if replace:
                _remove(self.engine, replace, stop=True)  # Swarm reschedules the slot itself
                removed.append(replace)
            svc = self.engine.services.get(self.scale_spec.service)
            ok = svc.scale(int(n))
        except Exception as e:
            return Result(False, self.argv(n), None, str(e).splitlines()[0][:300] if str(e) else type(e).__name__,
                          time.monotonic() - started, removed)
        return Result(bool(ok), self.argv(n), 0 if ok else None, "", time.monotonic() - started, removed)


class RecordingScaler:
    """Test double: records (n, remove, replace) and returns a configured result."""

    def __init__(self, scale, ok=True):
        self.scale_spec, self.ok, self.calls = scale, ok, []

    def argv(self, n):
        return compose_argv(["docker", "compose"], self.scale_spec, n)

    def scale(self, n, remove=(), replace=None):
        self.calls.append((n, tuple(remove), replace))
        return Result(self.ok, self.argv(n), 0 if self.ok else 1, "", 0.0, list(remove))


def for_spec(spec, engine):
    if spec.scale.driver == "swarm":
        return SwarmScaler(spec.scale, spec.heal.command_timeout, engine)
    return ComposeScaler(spec.scale, spec.heal.command_timeout, engine)
