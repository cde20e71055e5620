"""Doing: scale a compose service (v2 plugin, v1 fallback) or a Swarm service, with timeouts.

    ComposeScaler   docker compose -p P -f F up -d --no-recreate --scale S=N S   (argv list)
                    (`docker-compose` v1 when only that exists)
    SwarmScaler     service.scale(N) through the Docker SDK

Compose v2 counts a service's stopped containers in --scale N: it restarts exited ones
(with new host ports) and, when there are more than N, removes the highest-numbered
ones whether they run or not. `decide` therefore names surplus stopped containers in
`Decision.remove`, and `scale()` removes them before running compose.

The engine fast path: when, after those removals, the service has exactly N containers
that compose created, all running, exited or created, none with dependencies, and some
are not running, `up
--no-recreate --scale N` would do nothing but start those. `scale()` then starts them
with one engine API call each (~50 ms) instead of running compose (~0.5-1 s: the CLI,
the project model, the engine round trips). Anything else (a container to create, an
unusual state, a failed start) goes to compose, which stays the only authority that
creates containers from the compose file. `Result.argv` says which way it went:
`["docker-engine", "start", "<name>", ...]` or the compose argv.
"""
import os
import shutil
import subprocess
import time
from collections import namedtuple

from ..core.errors import EngineError
from .engine import failures, not_found

Result = namedtuple("Result", "ok argv returncode output duration removed")
_OUTPUT_TAIL = 2000


def cli_plugin_dirs(environ=None):
    """Where the docker CLI looks for plugins (docker/cli: cli-plugins/manager, Linux)."""
    env = os.environ if environ is None else environ
    config = env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return [os.path.join(config, "cli-plugins"), "/usr/local/lib/docker/cli-plugins",
            "/usr/local/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins"]


def compose_command(which=shutil.which, run=subprocess.run, timeout=20.0, plugin_dirs=None):
    """['docker', 'compose'] when the v2 plugin is there, else ['docker-compose'], else EngineError.

    With `plugin_dirs`, an executable `docker-compose` plugin file found there is
    enough (a stat instead of running `docker compose version`, ~0.25 s on the heal path).
    """
    docker = which("docker")
    if docker and plugin_dirs:
        for d in plugin_dirs:
            if os.access(os.path.join(d, "docker-compose"), os.X_OK):
                return ["docker", "compose"]
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


def compose_argv(base, scale, n, extra_files=()):
    """extra_files: compose override files after the spec's own (e.g. the image medic-rollout recorded)."""
    extra = [a for f in extra_files for a in ("-f", f)]
    return list(base) + ["-p", scale.project, "-f", scale.file] + extra + [
        "up", "-d", "--no-recreate", "--scale", "%s=%d" % (scale.service, int(n)), scale.service]


class ComposeScaler:
    def __init__(self, scale, timeout, engine=None, base=None, run=subprocess.run, extra_files=()):
        self.scale_spec, self.timeout, self.engine = scale, float(timeout), engine
        self.extra_files = tuple(extra_files)
        self._base, self._run = base, run

    @property
    def base(self):
        if self._base is None:
            self._base = compose_command(run=self._run, plugin_dirs=cli_plugin_dirs())
        return self._base

    def argv(self, n):
        return compose_argv(self.base, self.scale_spec, n, self.extra_files)

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
        fast = self.start_stopped(n)
        if fast is not None:
            started_argv, note = fast
            if started_argv:
                return Result(True, started_argv, 0, note, time.monotonic() - started, removed)
            fallback = note  # a start failed: compose tries, and its output says why too
        else:
            fallback = ""
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
        out = (fallback + (p.stdout or b"").decode("utf-8", "replace"))[-_OUTPUT_TAIL:]
        return Result(p.returncode == 0, argv, p.returncode, out, time.monotonic() - started, removed)

    def start_stopped(self, n):
        """The engine fast path (module docstring): None when compose must run, else
        (argv-like record, note) after starting; ([], why) when a start failed."""
        listing = getattr(getattr(self.engine, "api", None), "containers", None)
        if listing is None or not hasattr(self.engine.api, "start"):
            return None
        sc = self.scale_spec
        try:
            found = listing(all=True, filters={"label": ["com.docker.compose.project=%s" % sc.project,
                                                         "com.docker.compose.service=%s" % sc.service]})
        except failures():
            return None  # compose will say what is wrong
        found = [c for c in found if (c.get("Labels") or {}).get("com.docker.compose.oneoff", "False") != "True"]
        stopped = plan_starts(found, n)
        if not stopped:
            return None
        names = []
        for c in stopped:
            name = ((c.get("Names") or ["/" + c["Id"][:12]])[0]).lstrip("/")
            try:
                self.engine.api.start(c["Id"])
            except failures() as e:
                return [], "engine start of %s failed (%s); ran compose instead\n" % (name, _first_line(e))
            names.append(name)
        return ["docker-engine", "start"] + names, "started %s through the engine API (compose not needed)" % (
            ", ".join(names))


def plan_starts(containers, n):
    """Container summaries (`/containers/json?all=1` of one compose service) -> the ones to start,
    or [] when compose must run: the fast path needs exactly n containers, each running, exited
    or created, none depending on another service (`up S` would bring those up too; compose
    labels it `com.docker.compose.depends_on`), and at least one not running. Pure."""
    if len(containers) != int(n):
        return []
    if any(c.get("State") not in ("running", "exited", "created") for c in containers):
        return []
    if any((c.get("Labels") or {}).get("com.docker.compose.depends_on") for c in containers):
        return []
    number = lambda c: int((c.get("Labels") or {}).get("com.docker.compose.container-number") or 0)  # noqa: E731
    return sorted((c for c in containers if c.get("State") != "running"), key=lambda c: (number(c), c["Id"]))


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _remove(engine, cid, stop=False):
    if engine is None:
        raise EngineError("no engine client to remove container %s" % cid[:12])
    try:
        c = engine.containers.get(cid)
        if stop:
            c.stop(timeout=10)
        c.remove(force=True)
    except not_found():
        return
    except failures() as e:
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
        except failures() as e:
            return Result(False, self.argv(n), None, str(e).splitlines()[0][:300] if str(e) else type(e).__name__,
                          time.monotonic() - started, removed)
        return Result(bool(ok), self.argv(n), 0 if ok else None, "", time.monotonic() - started, removed)


def for_spec(spec, engine, extra_files=()):
    if spec.scale.driver == "swarm":
        return SwarmScaler(spec.scale, spec.heal.command_timeout, engine)
    return ComposeScaler(spec.scale, spec.heal.command_timeout, engine, extra_files=extra_files)
