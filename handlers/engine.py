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
"""
import json
import os
import socket

from .errors import EngineError

DEFAULT_SOCKET = "/var/run/docker.sock"
_MAX_BODY = 64 * 1024 * 1024


class NotFound(EngineError):
    """The engine answered 404 (no such container)."""


class APIError(EngineError):
    """The engine answered an HTTP error other than 404."""


def where(environ=None):
    """('unix', path) or ('tcp', (host, port)) from DOCKER_HOST; None when only the SDK can reach it."""
    env = os.environ if environ is None else environ
    if env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_CERT_PATH"):
        return None
    raw = (env.get("DOCKER_HOST") or "").strip()
    if not raw:
        return ("unix", DEFAULT_SOCKET)
    if raw.startswith("unix://"):
        return ("unix", raw[len("unix://"):] or DEFAULT_SOCKET)
    if raw.startswith("tcp://"):
        hostport = raw[len("tcp://"):].split("/", 1)[0]
        host, sep, port = hostport.rpartition(":")
        if not sep:
            host, port = hostport, "2375"
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit():
            raise EngineError("DOCKER_HOST %r: the port is not a number" % raw)
        return ("tcp", (host, int(port)))
    return None


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
        raise EngineError("cannot reach the Docker engine at %s: %s" % (where_, _reason(e))) from None


def filters_query(filters):
    """The SDK's filters dict ({"label": ["a=b"], "status": "exited"}) -> the API's JSON string."""
    out = {}
    for k, v in (filters or {}).items():
        out[k] = list(v) if isinstance(v, (list, tuple)) else [str(v)]
    return json.dumps(out, separators=(",", ":"))


def _quote(s):
    out = []
    for b in str(s).encode("utf-8"):
        c = chr(b)
        out.append(c if (c.isalnum() and b < 128) or c in "-._~" else "%%%02X" % b)
    return "".join(out)


class Client:
    """One keep-alive connection to the engine. Not thread-safe."""

    def __init__(self, target, timeout=10.0):
        self.target, self.timeout = target, float(timeout)
        self._sock, self._buf, self._sdk = None, b"", None
        self.api = _Api(self)  # the SDK's low-level names (api.containers lists dicts)
        self.containers = _Containers(self)  # the SDK's high-level names (containers.get -> object)

    def describe(self):
        kind, addr = self.target
        return "unix://" + addr if kind == "unix" else "tcp://%s:%d" % addr

    # -- plumbing ----------------------------------------------------------
    def _connect(self):
        kind, addr = self.target
        try:
            if kind == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(self.timeout)
                s.connect(addr)
            else:
                s = socket.create_connection(addr, timeout=self.timeout)
        except OSError as e:
            raise EngineError("cannot connect to the Docker engine at %s: %s" % (self.describe(), _reason(e))) from None
        self._sock, self._buf = s, b""

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
        if self._sdk is not None:
            try:
                self._sdk.close()
            except Exception:
                pass
            self._sdk = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the engine")
        self._buf += chunk
        if len(self._buf) > _MAX_BODY:
            raise EngineError("Docker engine answer larger than %d bytes" % _MAX_BODY)

    def _readline(self):
        while b"\r\n" not in self._buf:
            self._fill()
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _readn(self, n):
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def request(self, method, path, params=None, timeout=None):
        """(status, body bytes); retries once on a stale keep-alive connection."""
        if params:
            path += "?" + "&".join("%s=%s" % (_quote(k), _quote(v)) for k, v in params)
        for attempt in (0, 1):
            fresh = self._sock is None
            if fresh:
                self._connect()
            try:
                if timeout is not None:
                    self._sock.settimeout(timeout)
                return self._exchange(method, path)
            except socket.timeout:
                self.close()
                raise EngineError("Docker engine at %s did not answer %s %s in time"
                                  % (self.describe(), method, path.split("?")[0])) from None
            except (ConnectionError, OSError) as e:
                self.close()
                if fresh or attempt:
                    raise EngineError("Docker engine at %s: %s %s failed: %s"
                                      % (self.describe(), method, path.split("?")[0], _reason(e))) from None
            finally:
                if timeout is not None and self._sock is not None:
                    self._sock.settimeout(self.timeout)

    def _exchange(self, method, path):
        host = "docker" if self.target[0] == "unix" else "%s:%d" % self.target[1]
        head = "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: consul-medic\r\nContent-Length: 0\r\n\r\n" % (
            method, path, host)
        self._sock.sendall(head.encode("latin-1"))
        parts = self._readline().decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise EngineError("the Docker engine at %s answered something that is not HTTP" % self.describe())
        status = int(parts[1])
        headers = {}
        while True:
            line = self._readline()
            if not line:
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self._readline().split(b";")[0], 16)
                if size == 0:
                    while self._readline():
                        pass
                    break
                chunks.append(self._readn(size))
                self._readn(2)
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = self._readn(int(headers["content-length"]))
        elif status in (204, 304) or method == "HEAD":
            body = b""
        else:  # read to close
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            body, self._buf = self._buf, b""
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def call(self, method, path, params=None, ok=(200,), timeout=None):
        status, body = self.request(method, path, params, timeout)
        if status not in ok:
            try:
                msg = json.loads(body).get("message") or ""
            except (ValueError, AttributeError):
                msg = body[:200].decode("utf-8", "replace").strip()
            cls = NotFound if status == 404 else APIError
            raise cls("Docker engine %s %s: HTTP %d%s" % (method, path.split("?")[0], status,
                                                          ": " + msg.splitlines()[0][:200] if msg else ""))
        return status, body

    def get_json(self, path, params=None):
        _, body = self.call("GET", path, params)
        try:
            return json.loads(body)
        except ValueError:
            raise EngineError("Docker engine GET %s: the answer is not JSON" % path) from None

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
        return self.get_json("/containers/%s/json" % _quote(container))

    def start(self, container):
        self.call("POST", "/containers/%s/start" % _quote(container), ok=(204, 304))

    def stop(self, container, timeout=10):
        self.call("POST", "/containers/%s/stop" % _quote(container), [("t", str(int(timeout)))], ok=(204, 304),
                  timeout=self.timeout + float(timeout))

    def remove_container(self, container, force=False, v=False):
        params = [("force", "1" if force else "0"), ("v", "1" if v else "0")]
        self.call("DELETE", "/containers/%s" % _quote(container), params, ok=(204,))

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


def _reason(e):
    text = getattr(e, "strerror", None) or str(e)
    return text.strip().splitlines()[0][:200] if text and text.strip() else type(e).__name__
