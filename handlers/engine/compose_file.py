"""The compose files specs name: every service medic scales must name an image, not build one.

A compose service with `build:` is built from a Dockerfile by whoever runs compose. medic-heal
runs `docker compose up --scale` from the monitoring node against the engine `DOCKER_HOST` names,
maybe another host: the build context is not there, a watch handler would start a build in the
middle of a heal, and each engine would run its own build of "the same" service. The seed's
platform learned that such a service fails to scale. So `medic-config` refuses it (SpecError: one
line, exit 3): the service must name a pushed `image:` and have no `build:`.

The file is read the way compose reads it, by compose itself:
`docker compose -p PROJECT -f FILE config --format json` (argv list, no shell, a timeout, stdin
closed), once per file; once per (file, project) only for a file whose text names
COMPOSE_PROJECT_NAME (the only way the project changes what the file says; 1,000 specs sharing a
file cost one compose call, not 1,000). Without a `docker` CLI the files cannot be checked
and `check()` says so (None) instead of guessing.
"""
import json
import shutil
import subprocess

from ..core.errors import SpecError

TIMEOUT = 30.0


def refusal(doc, service):
    """Normalised compose document (`config --format json`) + compose service -> why not, or None. Pure."""
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict) or service not in services:
        return "has no service %r" % service
    svc = services[service] or {}
    if svc.get("build"):
        return ("service %r builds from a Dockerfile (build:): medic cannot scale a built service; "
                "push an image, name it in image: and drop build:" % service)
    if not svc.get("image"):
        return "service %r names no image:" % service
    return None


def _names_project(path):
    """Does the file's text name COMPOSE_PROJECT_NAME (unreadable: assume so, compose will say why)?"""
    try:
        with open(path, "rb") as f:
            return b"COMPOSE_PROJECT_NAME" in f.read()
    except OSError:
        return True


def render(path, project, docker="docker", timeout=TIMEOUT):
    """`docker compose config --format json` of one file -> dict; raises SpecError on failure."""
    argv = [docker, "compose", "-p", project, "-f", path, "config", "--format", "json"]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SpecError("%s: docker compose config did not finish within %g s" % (path, timeout)) from None
    except OSError as e:
        raise SpecError("%s: cannot run docker compose: %s" % (path, e.strerror or e)) from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip()]
        raise SpecError("%s: docker compose cannot read it: %s" % (path, (lines[-1] if lines else
                                                                          "exit %d" % r.returncode)[:200]))
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise SpecError("%s: docker compose config did not print JSON" % path) from None


def check(specs, docker="docker", timeout=TIMEOUT, renderer=None):
    """Refuse (SpecError, naming the spec) a compose spec whose service builds or names no image.

    -> the number of compose files checked, or None when there is no docker CLI to read them."""
    compose = sorted((s for s in specs.values() if s.scale.driver == "compose"), key=lambda s: s.path)
    if not compose:
        return 0
    exe = shutil.which(docker) if renderer is None else docker
    if not exe:
        return None
    rendered = {}
    for s in compose:
        key = (s.scale.file, s.scale.project if _names_project(s.scale.file) else None)
        if key not in rendered:
            try:
                rendered[key] = (renderer or render)(s.scale.file, s.scale.project, exe, timeout)
            except SpecError as e:
                raise SpecError("%s: $.scale.file: %s" % (s.path, e)) from None
        why = refusal(rendered[key], s.scale.service)
        if why:
            raise SpecError("%s: $.scale.file: %s %s" % (s.path, s.scale.file, why))
    return len(rendered)
