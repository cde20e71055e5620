"""A light Docker engine client for the heal path: HTTP/1.1 over the engine's socket.

Why not the docker SDK here: importing it (with requests and urllib3) costs
~150-200 ms before medic-heal's first decision, and every heal pays it. The heal
path needs a handful of calls, so this module speaks them itself (stdlib only):

    ping()                                  GET  /_ping
    info()                                  GET  /info
    api.containers(all=True, filters={...}) GET  /containers/json?all=1&filters=...
    api.inspect_container(id)               GET  /containers/<id>/json
    api.start(id) / api.stop(id, timeout) / api.remove_container(id, force=True)
    containers.get(id) -> .start() .stop(timeout=) .remove(force=) .attrs .id .name .status

The names and shapes are the docker SDK's (`docker.DockerClient`), so observe,
triage and the scaler take either. `services` (Swarm) is not spoken here: it
builds a docker SDK client on first use and delegates, so a Swarm spec costs the
SDK import only when it is used.

Where: DOCKER_HOST `unix://PATH` (default /var/run/docker.sock) or `tcp://HOST:PORT`
(plain HTTP). Anything else (ssh://, or TLS via DOCKER_TLS_VERIFY/DOCKER_CERT_PATH)
is left to the SDK: `connect()` returns a docker SDK client then; `connect(sdk=True)` always
does (the image, Swarm and event APIs). `connect` is the one place that builds an engine client;
nothing outside handlers/engine/ imports the SDK.

Errors: every failure is an EngineError naming the call; a missing container is
`NotFound` (an EngineError whose class name the SDK's callers already test for).
`failures()` and `not_found()` are what to catch around a call of either client.
The HTTP transport is handlers/engine/engine_http.py.
"""
import json
import math
import os
import sys

from .engine_http import NotFound, Transport, first_line, quote, where
from ..core.errors import EngineError


def connect(docker_host=None, timeout=10.0, sdk=False, environ=None, ping=True):
    """The one way to a Docker engine: a client that answered (EngineError when none does).

    sdk=False: this light client where it can go (unix:// or plain tcp://), else the docker SDK's;
    sdk=True: the docker SDK's (the image, Swarm and event APIs). docker_host: the engine's address
    (DOCKER_HOST's form); by default DOCKER_HOST from `environ` (os.environ). ping=False: no ping
    of an SDK client (it asks the engine's API version when built)."""
    env = os.environ if environ is None else environ
    if docker_host is not None:
        env = dict(env, DOCKER_HOST=docker_host)
    target = None if sdk else where(env)
    if target is None:
        return _sdk(docker_host, timeout, ping, env)
    c = Client(target, timeout)
    try:
        c.ping()
    except EngineError as e:
        c.close()
        raise EngineError("cannot reach the Docker engine at %s: %s" % (c.describe(), e)) from None
    return c


def _sdk(docker_host, timeout, ping, environ=None):
    """A docker SDK client (the slow import): at `docker_host`, else from the environment."""
    import docker  # lazy: heavy

    env = os.environ if environ is None else environ
    where_ = docker_host if docker_host is not None else env.get("DOCKER_HOST") or "the default socket"
    seconds = max(1, math.ceil(timeout))  # whole seconds, never shorter than asked
    try:
        if docker_host is not None:
            c = docker.DockerClient(base_url=docker_host, timeout=seconds)
        else:
            c = docker.from_env(timeout=seconds, environment=env)
        if ping:
            c.ping()
        return c
    except (docker.errors.DockerException, OSError) as e:  # OSError: requests' errors
        raise EngineError("cannot reach the Docker engine at %s: %s" % (where_, first_line(e))) from None


def failures():
    """The exceptions an engine client's call raises when the engine fails: EngineError (this
    client), OSError (sockets; requests' errors under the SDK) and the SDK's DockerException
    (counted once the SDK is loaded: no SDK client exists before)."""
    errors = sys.modules.get("docker.errors")
    return (EngineError, OSError) + ((errors.DockerException,) if errors is not None else ())


def not_found():
    """The exceptions an engine client raises for a container that does not exist."""
    errors = sys.modules.get("docker.errors")
    return (NotFound,) + ((errors.NotFound,) if errors is not None else ())


def swarm_update(service, image, update, rollback):
    """Point a Swarm service (an SDK `services.get` object) at `image` with the given update and
    rollback configs (dicts of docker.types.UpdateConfig's arguments)."""
    import docker

    service.update(image=image, update_config=docker.types.UpdateConfig(**update),
                   rollback_config=docker.types.RollbackConfig(**rollback))


def filters_query(filters):
    """The SDK's filters dict ({"label": ["a=b"], "status": "exited"}) -> the API's JSON string."""
    out = {}
    for k, v in (filters or {}).items():
        out[k] = list(v) if isinstance(v, (list, tuple)) else [str(v)]
    return json.dumps(out, separators=(",", ":"))


class Client(Transport):
    """The engine calls of the heal path, under the docker SDK's names."""

    def __init__(self, target, timeout=10.0):
        super().__init__(target, timeout)
        self._sdk = None
        self.api = _Api(self)  # the SDK's low-level names (api.containers lists dicts)
        self.containers = _Containers(self)  # the SDK's high-level names (containers.get -> object)

    def close(self):
        super().close()
        if self._sdk is not None:
            try:
                self._sdk.close()
            except failures():
                pass
            self._sdk = None

    # -- the SDK's names ------------------------------------------------------
    def ping(self):
        self.call("GET", "/_ping")
        return True

    def info(self):
        return self.get_json("/info")

    def version(self):
        return self.get_json("/version")

    def containers_list(self, all=False, filters=None):
        params = [("all", "1")] if all else []
        if filters:
            params.append(("filters", filters_query(filters)))
        return self.get_json("/containers/json", params)

    def inspect_container(self, container):
        return self.get_json("/containers/%s/json" % quote(container))

    def start(self, container):
        self.call("POST", "/containers/%s/start" % quote(container), ok=(204, 304))

    def stop(self, container, timeout=10):
        self.call("POST", "/containers/%s/stop" % quote(container), [("t", str(int(timeout)))], ok=(204, 304),
                  timeout=self.timeout + float(timeout))

    def remove_container(self, container, force=False, v=False):
        params = [("force", "1" if force else "0"), ("v", "1" if v else "0")]
        self.call("DELETE", "/containers/%s" % quote(container), params, ok=(204,))

    @property
    def services(self):
        """Swarm services through the docker SDK (imported on first use only)."""
        if self._sdk is None:
            self._sdk = _sdk(None, self.timeout, True)  # where() could not: the environment's engine
        return self._sdk.services


class _Api:
    """`client.api`: the SDK's low-level names; `containers(...)` lists summaries (dicts)."""

    def __init__(self, c):
        self._c = c

    def __getattr__(self, name):
        return getattr(self._c, name)

    def containers(self, all=False, filters=None):
        return self._c.containers_list(all, filters)


class _Containers:
    def __init__(self, c):
        self._c = c

    def get(self, container_id):
        return Container(self._c, self._c.inspect_container(container_id))

    def list(self, all=False, filters=None):
        return [self.get(s["Id"]) for s in self._c.containers_list(all, filters)]


class Container:
    """An inspected container with the SDK Container's few names the scaler uses."""

    def __init__(self, c, attrs):
        self._c, self.attrs = c, attrs
        self.id = attrs.get("Id")

    @property
    def name(self):
        return (self.attrs.get("Name") or "").lstrip("/")

    @property
    def status(self):
        return (self.attrs.get("State") or {}).get("Status")

    @property
    def labels(self):
        return (self.attrs.get("Config") or {}).get("Labels") or {}

    def start(self):
        self._c.start(self.id)

    def stop(self, timeout=10):
        self._c.stop(self.id, timeout)

    def remove(self, force=False, v=False):
        self._c.remove_container(self.id, force=force, v=v)
