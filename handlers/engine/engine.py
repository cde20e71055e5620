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
is left to the SDK: `client()` returns a docker SDK client then.

Errors: every failure is an EngineError naming the call; a missing container is
`NotFound` (an EngineError whose class name the SDK's callers already test for).
The HTTP transport is handlers/engine/engine_http.py.
"""
import json
import os

from .engine_http import Transport, first_line, quote, where
from ..core.errors import EngineError


def client(timeout=10.0, environ=None):
    """A client that answered a ping: this light one, or the docker SDK's where it cannot go."""
    env = os.environ if environ is None else environ
    target = where(env)
    if target is None:
        return sdk_client(timeout)
    c = Client(target, timeout)
    try:
        c.ping()
    except EngineError as e:
        c.close()
        raise EngineError("cannot reach the Docker engine at %s: %s" % (c.describe(), e)) from None
    return c


def sdk_client(timeout=10.0):
    """A docker SDK client from the environment that answered a ping (the slow import)."""
    import docker  # lazy: heavy

    where_ = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        c = docker.from_env(timeout=int(max(1, timeout)))
        c.ping()
        return c
    except Exception as e:
        raise EngineError("cannot reach the Docker engine at %s: %s" % (where_, first_line(e))) from None


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
            except Exception:
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
            self._sdk = sdk_client(self.timeout)
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
