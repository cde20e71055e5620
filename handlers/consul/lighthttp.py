"""A small HTTP/1.1 client for Consul's API on the hot path.

Why not requests/py-consul here: importing either costs ~80-90 ms of CPU, and
even http.client pulls in the email package (~30 ms). `medic-check` runs every
few seconds for every service with a 40 ms CPU budget, so it speaks the small
subset of HTTP that Consul's API needs: GET/PUT, keep-alive, Content-Length or
chunked bodies, one explicit timeout per connection, TLS only when asked for.

medic-heal's KV and session calls go through it too (`consul_light`, py-consul's
interface); the rest (agent registration, the registrar, the admin commands) goes
through py-consul, built by `settings.make_client`.
"""
import json
import socket

from ..core import http1
from ..core.errors import ConsulError, ConsulTimeout

_MAX_BODY = 64 * 1024 * 1024
RETRIES = 3  # answers 429/503 are tried again this many times (handlers/consul/lighthttp.py:_backoff)


def quote(s):
    # RFC 3986 unreserved characters pass; everything else is %-encoded (no urllib import)
    out = []
    for b in str(s).encode("utf-8"):
        c = chr(b)
        out.append(c if (c.isalnum() and b < 128) or c in "-._~" else "%%%02X" % b)
    return "".join(out)


def path_with_query(path, params=None):
    if not params:
        return path
    parts = []
    for k, v in params:
        parts.append(quote(k) if v is None else "%s=%s" % (quote(k), quote(v)))
    return path + "?" + "&".join(parts)


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def index(self):
        raw = self.headers.get("x-consul-index")
        return int(raw) if raw and raw.isdigit() else None

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise ConsulError("Consul answered HTTP %d with a body that is not JSON" % self.status) from None


class Connection:
    """One keep-alive connection to one Consul agent. Not thread-safe."""

    def __init__(self, settings):
        self.settings = settings
        self._sock = self._reader = None

    # -- socket plumbing -------------------------------------------------
    def _connect(self):
        s = self.settings
        try:
            # an ASCII host as bytes: a str makes getaddrinfo load the idna codec (~2.5 ms of CPU per run)
            host = s.host.encode("ascii") if s.host.isascii() else s.host
            sock = socket.create_connection((host, s.port), timeout=s.timeout)
        except OSError as e:
            raise ConsulError("cannot connect to Consul at %s: %s" % (s.addr, _reason(e))) from None
        if s.scheme == "https":
            import ssl  # lazy: only TLS users pay for it
            ctx = ssl.create_default_context(cafile=s.cacert, capath=s.capath) if (s.cacert or s.capath) \
                else ssl.create_default_context()
            if not s.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if s.client_cert:
                ctx.load_cert_chain(s.client_cert, s.client_key)
            try:
                sock = ctx.wrap_socket(sock, server_hostname=s.tls_server_name or s.host)
            except (OSError, ssl.SSLError) as e:
                sock.close()
                raise ConsulError("TLS handshake with Consul at %s failed: %s" % (s.addr, _reason(e))) from None
        self._sock = sock
        self._reader = http1.Reader(sock, _MAX_BODY, lambda: ConsulError("Consul response larger than %d bytes"
                                                                         % _MAX_BODY), "Consul")

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

    # -- HTTP -----------------------------------------------------------
    def request(self, method, path, params=None, body=None, sleep=None):
        """Send one request; retry once on a stale keep-alive connection, and with backoff and
        jitter while Consul answers 429 or 503 (its rate limits, Consul >= 1.15), at most
        RETRIES times and never past the connection's timeout in all."""
        import time
        sleep = sleep or time.sleep
        deadline = time.monotonic() + self.settings.timeout
        for n in range(RETRIES + 1):
            resp = self._request(method, path, params, body)
            if resp.status not in (429, 503) or n == RETRIES:
                return resp
            pause = _backoff(n, resp.headers.get("retry-after"))
            if time.monotonic() + pause > deadline:
                return resp
            sleep(pause)

    def _request(self, method, path, params=None, body=None):
        target = path_with_query(path, params)
        for attempt in (0, 1):
            fresh = self._sock is None
            if fresh:
                self._connect()
            try:
                return self._exchange(method, target, body)
            except socket.timeout:
                self.close()
                raise ConsulTimeout("Consul at %s did not answer %s %s within %.1f s"
                                  % (self.settings.addr, method, path, self.settings.timeout)) from None
            except (ConnectionError, OSError) as e:
                self.close()
                if fresh or attempt:
                    raise ConsulError("Consul at %s: %s %s failed: %s"
                                      % (self.settings.addr, method, path, _reason(e))) from None

    def _exchange(self, method, target, body):
        s = self.settings
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        head = ["%s %s HTTP/1.1" % (method, target), "Host: " + s.netloc,
                "User-Agent: consul-medic", "Accept: application/json",
                "Content-Length: %d" % len(data)]
        if s.token:
            head.append("X-Consul-Token: " + s.token)
        if s.http_auth:
            head.append("Authorization: " + s.basic_auth_header())
        self._sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

        status, headers, payload, closed = http1.read_response(
            self._reader, method, lambda: ConsulError("Consul at %s answered something that is not HTTP" % s.addr))
        if closed:
            self.close()
        return Response(status, headers, payload)

    def call(self, method, path, params=None, body=None, ok=(200,)):
        """Request and check the status; errors name the call, never the token."""
        resp = self.request(method, path, params, body)
        if resp.status not in ok:
            text = resp.body[:200].decode("utf-8", "replace").strip().splitlines()
            detail = self.settings.redact(text[0] if text else "")
            what = {403: "permission denied (ACL)", 404: "not found",
                    500: "server error", 429: "rate limited"}.get(resp.status, "HTTP %d" % resp.status)
            raise ConsulError("Consul %s %s: %s%s" % (method, path, what, ": " + detail if detail else ""))
        return resp

    def get_json(self, path, params=None):
        resp = self.call("GET", path, params)
        return resp.index, resp.json(), resp.headers


def _backoff(n, retry_after=None):
    """0.1 s doubling per retry, with up to 50 % jitter; a Retry-After in seconds wins when sooner
    than 5 s."""
    import random
    if retry_after and retry_after.isdigit() and int(retry_after) <= 5:
        return float(retry_after)
    return 0.1 * (2 ** n) * (1 + random.random() / 2)


def _reason(e):
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
