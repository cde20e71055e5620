"""Where every executable's Consul connection comes from: the ONE place.

Precedence (most specific first):
  address: --consul-addr > the spec environment's `consul_addr` > CONSUL_HTTP_ADDR
           > http://127.0.0.1:8500   (CONSUL_HTTP_SSL=true makes a bare host:port https)
  token:   --token > --token-file > CONSUL_HTTP_TOKEN > CONSUL_HTTP_TOKEN_FILE
           (py-consul on its own lets the environment beat an explicit token; we don't)
  TLS:     CONSUL_CACERT (CA bundle), CONSUL_CLIENT_CERT + CONSUL_CLIENT_KEY,
           CONSUL_HTTP_SSL_VERIFY=false disables verification
  timeout: --consul-timeout > MEDIC_CONSUL_TIMEOUT > 5 s, applied to every HTTP call
  env:     --env > MEDIC_ENV > none (selects spec `environments` overrides)

The token is kept out of repr(), str() and every message: `ConsulSettings.redact`
scrubs it from any text that might carry it.
"""
import os
from collections import namedtuple

from .durations import bounded, env_seconds
from .errors import UsageError

DEFAULT_ADDR = "http://127.0.0.1:8500"
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 3600.0  # one HTTP call; a blocking query waits at most 10 min on the server side

_Fields = namedtuple("_Fields", "scheme host port token token_source cacert client_cert client_key verify timeout")


class ConsulSettings(_Fields):
    __slots__ = ()

    @property
    def addr(self):
        return "%s://%s:%d" % (self.scheme, self.host, self.port)

    def __repr__(self):
        return "ConsulSettings(addr=%r, token=%s, timeout=%r)" % (
            self.addr, "<redacted:%s>" % self.token_source if self.token else None, self.timeout)

    __str__ = __repr__

    def redact(self, text):
        text = str(text)
        return text.replace(self.token, "<redacted>") if self.token else text

    def with_addr(self, addr):
        scheme, host, port = parse_addr(addr, self.scheme == "https")
        return self._replace(scheme=scheme, host=host, port=port)


def parse_addr(addr, ssl=False):
    """'host:port', 'http://host:port' or 'https://host[:port]' -> (scheme, host, port)."""
    raw = addr.strip()
    scheme = "https" if ssl else "http"
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise UsageError("Consul address %r: scheme must be http or https" % addr)
    raw = raw.rstrip("/")
    if not raw or "/" in raw or "?" in raw or "@" in raw:
        raise UsageError("Consul address %r is not host:port or scheme://host:port" % addr)
    if raw.startswith("["):  # [::1]:8500
        host, _, rest = raw[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = raw.rpartition(":") if ":" in raw else (raw, "", "")
    if not host:
        raise UsageError("Consul address %r has no host" % addr)
    try:
        port = int(port) if port else (443 if scheme == "https" else 8500)
    except ValueError:
        raise UsageError("Consul address %r: port is not a number" % addr) from None
    if not 0 < port < 65536:
        raise UsageError("Consul address %r: port out of range" % addr)
    return scheme, host, port


def _read_token_file(path, source):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise UsageError("%s %s: cannot read token file: %s" % (source, path, e.strerror)) from None


def _truthy(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve(consul_addr=None, token=None, token_file=None, timeout=None,
            spec_addr=None, environ=None):
    """Build ConsulSettings from explicit values, then the spec, then the environment."""
    env = os.environ if environ is None else environ
    ssl = _truthy(env.get("CONSUL_HTTP_SSL", ""))
    addr = consul_addr or spec_addr or env.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDR
    scheme, host, port = parse_addr(addr, ssl)

    if token:
        tok, source = token, "--token"
    elif token_file:
        tok, source = _read_token_file(token_file, "--token-file"), "--token-file"
    elif env.get("CONSUL_HTTP_TOKEN"):
        tok, source = env["CONSUL_HTTP_TOKEN"], "CONSUL_HTTP_TOKEN"
    elif env.get("CONSUL_HTTP_TOKEN_FILE"):
        tok = _read_token_file(env["CONSUL_HTTP_TOKEN_FILE"], "CONSUL_HTTP_TOKEN_FILE")
        source = "CONSUL_HTTP_TOKEN_FILE"
    else:
        tok, source = None, None
    if tok is not None and ("\n" in tok or "\r" in tok):
        raise UsageError("Consul token from %s contains a line break" % source)

    if timeout is None:
        timeout = env_seconds(env, "MEDIC_CONSUL_TIMEOUT", DEFAULT_TIMEOUT, maximum=MAX_TIMEOUT)
    try:
        timeout = bounded(timeout, "Consul timeout", MAX_TIMEOUT, positive=True)
    except ValueError as e:
        raise UsageError(str(e)) from None

    verify = not (env.get("CONSUL_HTTP_SSL_VERIFY", "").strip().lower() in ("0", "false", "no", "off"))
    cacert = env.get("CONSUL_CACERT") or None
    cert, key = env.get("CONSUL_CLIENT_CERT") or None, env.get("CONSUL_CLIENT_KEY") or None
    if bool(cert) != bool(key):
        raise UsageError("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together")
    return ConsulSettings(scheme, host, port, tok or None, source, cacert, cert, key, verify, float(timeout))


def environment(explicit=None, environ=None):
    """The selected environment name (`--env` > MEDIC_ENV), or None."""
    env = os.environ if environ is None else environ
    name = explicit or env.get("MEDIC_ENV") or None
    if name is not None and not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError("environment name %r: use letters, digits, - and _" % name)
    return name


def make_client(settings):
    """A py-consul client for handlers that need more than the hot path's one GET.

    Explicit timeout on every call (py-consul's default is none), our token
    precedence (py-consul's would let CONSUL_HTTP_TOKEN win over --token).
    """
    import consul  # lazy: ~90 ms of CPU

    verify = settings.cacert if (settings.verify and settings.cacert) else settings.verify
    cert = (settings.client_cert, settings.client_key) if settings.client_cert else None
    client = consul.Consul(host=settings.host, port=settings.port, scheme=settings.scheme,
                           verify=verify, cert=cert, token=None,
                           connections_timeout=settings.timeout)
    client.token = settings.token
    return client
