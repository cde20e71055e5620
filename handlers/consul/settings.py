"""Where every executable's Consul connection comes from: the ONE place.

Precedence (most specific first):
  address: --consul-addr > the spec environment's `consul_addr` > CONSUL_HTTP_ADDR
           > http://127.0.0.1:8500   (CONSUL_HTTP_SSL=true makes a bare host:port https)
           IPv6 literals in brackets: [::1]:8500, https://[fd00::2]:8501
  token:   --token > --token-file > CONSUL_HTTP_TOKEN > CONSUL_HTTP_TOKEN_FILE
           (py-consul on its own lets the environment beat an explicit token; we don't).
           --token is visible to every user in `ps`: it works, with a one-line warning on
           stderr; use --token-file or CONSUL_HTTP_TOKEN_FILE. Token files are read up to
           4 KiB (/dev/zero fails at once, one line).
  TLS:     CONSUL_CACERT (CA bundle), CONSUL_CAPATH (directory of hashed CA certificates),
           CONSUL_CLIENT_CERT + CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME (the name the
           server certificate must carry, and SNI), CONSUL_HTTP_SSL_VERIFY=false disables
           verification
  auth:    CONSUL_HTTP_AUTH=user[:password], HTTP basic auth (a proxy in front of Consul)
  timeout: --consul-timeout > MEDIC_CONSUL_TIMEOUT > 5 s, applied to every HTTP call
  env:     --env > MEDIC_ENV > none (selects spec `environments` overrides)

The token and the basic-auth password are kept out of repr(), str() and every message:
`ConsulSettings.redact` scrubs them from any text that might carry them. Both client
paths take these settings: `make_client` (py-consul) and `lighthttp.Connection`.
"""
import os
from collections import namedtuple

from ..core.durations import bounded, env_seconds
from ..core.errors import UsageError

DEFAULT_ADDR = "http://127.0.0.1:8500"
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 3600.0  # one HTTP call; a blocking query waits at most 10 min on the server side

_Fields = namedtuple("_Fields", "scheme host port token token_source cacert client_cert client_key verify timeout "
                                "capath tls_server_name http_auth", defaults=(None, None, None))
TOKEN_FILE_MAX = 4096


class ConsulSettings(_Fields):
    __slots__ = ()

    @property
    def netloc(self):
        """host:port, an IPv6 literal in brackets ([::1]:8500): for URLs and the Host header."""
        return "%s:%d" % ("[%s]" % self.host if ":" in self.host else self.host, self.port)

    @property
    def addr(self):
        return "%s://%s" % (self.scheme, self.netloc)

    def __repr__(self):
        return "ConsulSettings(addr=%r, token=%s, timeout=%r%s)" % (
            self.addr, "<redacted:%s>" % self.token_source if self.token else None, self.timeout,
            ", auth=<redacted>" if self.http_auth else "")

    __str__ = __repr__

    def redact(self, text):
        text = str(text)
        for secret in (self.token, self.http_auth and self.http_auth[1]):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text

    def basic_auth_header(self):
        """'Basic dXNlcjpwdw==' for CONSUL_HTTP_AUTH, or None."""
        if not self.http_auth:
            return None
        import base64
        raw = ("%s:%s" % self.http_auth).encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")

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
    """At most TOKEN_FILE_MAX bytes: a token is ~36 characters; /dev/zero must not eat the memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read(TOKEN_FILE_MAX + 1)
    except OSError as e:
        raise UsageError("%s %s: cannot read token file: %s" % (source, path, e.strerror or e)) from None
    if len(raw) > TOKEN_FILE_MAX:
        raise UsageError("%s %s: token file larger than %d bytes" % (source, path, TOKEN_FILE_MAX))
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError("%s %s: token file is not UTF-8 text" % (source, path)) from None


def _http_auth(raw):
    if not raw:
        return None
    user, _, password = raw.partition(":")
    if not user or any(c in raw for c in "\r\n\x00"):
        raise UsageError("CONSUL_HTTP_AUTH must be user or user:password on one line")
    return (user, password)


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
        tok, source = token, "--token"  # runtime warns about it on stderr (TOKEN_ARGV_WARNING)
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
    capath = env.get("CONSUL_CAPATH") or None
    cert, key = env.get("CONSUL_CLIENT_CERT") or None, env.get("CONSUL_CLIENT_KEY") or None
    if bool(cert) != bool(key):
        raise UsageError("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together")
    if capath and not os.path.isdir(capath):
        raise UsageError("CONSUL_CAPATH %s: not a directory" % capath)
    server_name = env.get("CONSUL_TLS_SERVER_NAME") or None
    if server_name and (len(server_name) > 253 or not server_name.replace(".", "").replace("-", "").isalnum()):
        raise UsageError("CONSUL_TLS_SERVER_NAME %.60r is not a DNS name" % server_name)
    return ConsulSettings(scheme, host, port, tok or None, source, cacert, cert, key, verify, float(timeout),
                          capath, server_name, _http_auth(env.get("CONSUL_HTTP_AUTH")))


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

    verify = settings.verify and (settings.cacert or settings.capath or True)  # requests takes a file or a dir
    cert = (settings.client_cert, settings.client_key) if settings.client_cert else None
    host = "[%s]" % settings.host if ":" in settings.host else settings.host  # py-consul pastes host:port
    client = consul.Consul(host=host, port=settings.port, scheme=settings.scheme,
                           verify=verify, cert=cert, token=None,
                           connections_timeout=settings.timeout)
    client.token = settings.token
    session = getattr(client.http, "session", None)
    if session is not None:
        if settings.http_auth:
            session.auth = settings.http_auth
        if settings.tls_server_name and settings.scheme == "https":
            session.mount("https://", _server_name_adapter(settings.tls_server_name))
    return client


def _server_name_adapter(server_name):
    """A requests adapter that sends `server_name` as SNI and checks the certificate against it."""
    from requests.adapters import HTTPAdapter

    class ServerName(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["server_hostname"] = server_name
            kwargs["assert_hostname"] = server_name
            super().init_poolmanager(*args, **kwargs)

    return ServerName()
