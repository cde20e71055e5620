"""HTTP/1.1 to the Docker engine over its socket (the transport of handlers/engine/engine.py).

Stdlib only: a unix socket (DOCKER_HOST unix://, default /var/run/docker.sock) or TCP
(tcp://, plain HTTP), keep-alive, Content-Length or chunked bodies, one timeout per
call. `where()` reads DOCKER_HOST; it answers None where only the docker SDK can go
(ssh://, TLS). Every failure is an EngineError naming the call; HTTP 404 is NotFound.
"""
import json
import os
import socket

from ..core import http1
from ..core.errors import EngineError

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


def quote(s):
    out = []
    for b in str(s).encode("utf-8"):
        c = chr(b)
        out.append(c if (c.isalnum() and b < 128) or c in "-._~" else "%%%02X" % b)
    return "".join(out)


class Transport:
    """One keep-alive HTTP/1.1 connection to the engine. Not thread-safe."""

    def __init__(self, target, timeout=10.0):
        self.target, self.timeout = target, float(timeout)
        self._sock = self._reader = None

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
            raise EngineError("cannot connect to the Docker engine at %s: %s"
                              % (self.describe(), first_line(e))) from None
        self._sock = s
        self._reader = http1.Reader(s, _MAX_BODY, lambda: EngineError("Docker engine answer larger than %d bytes"
                                                                      % _MAX_BODY), "the engine")

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method, path, params=None, timeout=None):
        """(status, body bytes); retries once on a stale keep-alive connection."""
        if params:
            path += "?" + "&".join("%s=%s" % (quote(k), quote(v)) for k, v in params)
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
                                      % (self.describe(), method, path.split("?")[0], first_line(e))) from None
            finally:
                if timeout is not None and self._sock is not None:
                    self._sock.settimeout(self.timeout)

    def _exchange(self, method, path):
        host = "docker" if self.target[0] == "unix" else "%s:%d" % self.target[1]
        head = "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: consul-medic\r\nContent-Length: 0\r\n\r\n" % (
            method, path, host)
        self._sock.sendall(head.encode("latin-1"))
        status, _, body, closed = http1.read_response(
            self._reader, method,
            lambda: EngineError("the Docker engine at %s answered something that is not HTTP" % self.describe()))
        if closed:
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


def first_line(e):
    text = getattr(e, "strerror", None) or str(e)
    return text.strip().splitlines()[0][:200] if text and text.strip() else type(e).__name__
