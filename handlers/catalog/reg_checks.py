"""registrator's check labels -> one Consul agent check. Pure.

Every check built from labels targets the registered address and published port of the
container itself: a label chooses the kind, the path and the timings, never the host.
A check request medic refuses (a script/cmd check, a path that could leave the container,
a malformed duration or method) is not dropped silently: the instance is registered with
a TTL check that starts critical and says why (`refused_check`), so it never counts as
passing, and the refusal is audited.
"""
import re

from .reg_model import DEFAULT_INTERVAL, _DURATION

REFUSED_PREFIX = "medic-register refused this check: "
FALLBACK_PREFIX = "medic-register: "
# how an HTTP(S) check label becomes a check: Consul's checker follows redirects, so a container could
# send it to any host (the host's loopback, a metadata address) and read the answer in the output
HTTP_MODES = ("disable-redirects",  # DisableRedirects: true (agents >= 1.9.17, 1.10.10, 1.11.5)
              "tcp",                # older agents: a TCP check on the same address and port, said in Notes
              "follow")             # the operator accepts redirects (--http-checks-may-redirect)
REFUSED_TTL = "720h"  # the refusal check is critical from the start; expiring keeps it critical
_METHOD = re.compile(r"^[A-Z]{1,16}$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
MAX_SECONDS = {"Interval": 86400.0, "Timeout": 86400.0, "TTL": 86400.0,
               "DeregisterCriticalServiceAfter": 30 * 86400.0}
CHECK_KEYS = ("check_http", "check_https", "check_grpc", "check_tcp", "check_ttl", "check_script", "check_cmd")


def duration_seconds(text):
    """Go duration text ('1m30s') -> seconds, or None when it is not one. Pure."""
    text = str(text)
    if not _DURATION.match(text) or len(text) > 32:
        return None
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def path_problem(path):
    """Why a check path label is refused, or None. It must be a path on the container's own
    address: '/' first, no '//' authority, no '@' userinfo, no scheme, no control characters."""
    p = str(path)
    if not p.startswith("/"):
        return "path %r must start with '/'" % _short(p)
    if p.startswith("//") or "\\" in p:
        return "path %r could name another host" % _short(p)
    if "@" in p:
        return "path %r contains '@' (user info could name another host)" % _short(p)
    if "://" in p:
        return "path %r contains a scheme" % _short(p)
    if len(p) > 1024 or not p.isprintable() or any(ch.isspace() for ch in p) or "#" in p:
        return "path %r is not a printable URL path of at most 1024 characters" % _short(p)
    return None


def _short(text, n=60):
    text = str(text)
    return text if len(text) <= n else text[:n] + "..."


def _yes(value):
    return str(value or "").strip().lower() not in ("", "0", "false", "no", "off")


def refused_check(why):
    """The check an instance gets when its check label is refused: TTL, critical, saying why."""
    return {"TTL": REFUSED_TTL, "Status": "critical", "Notes": (REFUSED_PREFIX + why)[:1000]}


def is_refused(check):
    return bool(check) and str(check.get("Notes", "")).startswith(REFUSED_PREFIX)


def redirects_can_be_disabled(version):
    """The agent's version ('1.8.7', '1.11.5+ent') accepts DisableRedirects on HTTP checks."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", str(version or ""))
    if not m:
        return False
    v = tuple(int(x) for x in m.groups())
    return (1, 9, 17) <= v < (1, 10, 0) or (1, 10, 10) <= v < (1, 11, 0) or v >= (1, 11, 5)


def build_check(attrs, address, port, http_checks="follow"):
    """registrator's buildCheck from attrs -> (check dict or None, refusal reason or None).

    HTTP, HTTPS (+ _HTTP_METHOD / _HTTPS_METHOD, _TLS_SKIP_VERIFY), gRPC (+ _GRPC_USE_TLS),
    TCP, TTL; registrator's precedence. Script checks (SERVICE_CHECK_SCRIPT / _CMD) are
    refused: they need `enable_script_checks`, which is remote code execution. A refused
    request gives `refused_check(why)` and the reason. An HTTP check follows `http_checks`
    (HTTP_MODES); the TCP fallback's Notes start with FALLBACK_PREFIX and say why.
    """
    c = {}
    host = "[%s]" % address if ":" in str(address) else address
    if attrs.get("check_http"):
        why = path_problem(attrs["check_http"])
        if why:
            return _refuse("SERVICE_CHECK_HTTP " + why)
        c["HTTP"] = "http://%s:%d%s" % (host, port, attrs["check_http"])
    elif attrs.get("check_https"):
        why = path_problem(attrs["check_https"])
        if why:
            return _refuse("SERVICE_CHECK_HTTPS " + why)
        c["HTTP"] = "https://%s:%d%s" % (host, port, attrs["check_https"])
        if _yes(attrs.get("check_tls_skip_verify")):
            c["TLSSkipVerify"] = True
    elif attrs.get("check_cmd") or attrs.get("check_script"):
        which = "SERVICE_CHECK_CMD" if attrs.get("check_cmd") else "SERVICE_CHECK_SCRIPT"
        return _refuse("%s: script checks are not supported (they need enable_script_checks, which is remote "
                       "code execution); use an HTTP, TCP, gRPC or TTL check" % which)
    elif attrs.get("check_ttl"):
        c["TTL"] = attrs["check_ttl"]
    elif attrs.get("check_tcp"):
        c["TCP"] = "%s:%d" % (host, port)
    elif attrs.get("check_grpc"):
        c["GRPC"] = "%s:%d" % (host, port)
        if _yes(attrs.get("check_grpc_use_tls")):
            c["GRPCUseTLS"] = True
            if _yes(attrs.get("check_tls_skip_verify")):
                c["TLSSkipVerify"] = True
    else:
        return None, None
    if attrs.get("check_initial_status"):
        c["Status"] = attrs["check_initial_status"]
    if "TTL" not in c:
        c["Interval"] = attrs.get("check_interval") or DEFAULT_INTERVAL
        if attrs.get("check_timeout"):
            c["Timeout"] = attrs["check_timeout"]
    if "HTTP" in c:
        method = attrs.get("check_https_method" if c["HTTP"].startswith("https:") else "check_http_method") \
            or attrs.get("check_http_method")
        if method:
            c["Method"] = method
    if attrs.get("check_deregister_after"):
        c["DeregisterCriticalServiceAfter"] = attrs["check_deregister_after"]
    why = check_problem(c)
    if why:
        return _refuse(why)
    if "HTTP" in c and http_checks == "disable-redirects":
        c["DisableRedirects"] = True
    elif "HTTP" in c and http_checks != "follow":
        label = "SERVICE_CHECK_HTTP" if c["HTTP"].startswith("http:") else "SERVICE_CHECK_HTTPS"
        note = ("%s%s %s taken as a TCP check on %s:%d: this Consul agent cannot turn off redirects for HTTP "
                "checks (DisableRedirects needs 1.9.17, 1.10.10 or 1.11.5), and a redirect could send the check "
                "to another host" % (FALLBACK_PREFIX, label, _short(attrs.get("check_http") or
                                                                     attrs.get("check_https")), host, port))
        for k in ("HTTP", "Method", "TLSSkipVerify"):
            c.pop(k, None)
        c["TCP"] = "%s:%d" % (host, port)
        c["Notes"] = note[:1000]
    return c, None



def _refuse(why):
    return refused_check(why), why


def check_problem(check):
    """Why a built check is refused (durations, status, method), or None."""
    for k, most in MAX_SECONDS.items():
        if k in check:
            secs = duration_seconds(check[k])
            if secs is None:
                return "%s %r is not a duration like 10s" % (k, _short(check[k]))
            if secs > most:
                return "%s %s is longer than %gh" % (k, _short(check[k]), most / 3600)
    if check.get("Status") and check["Status"] not in ("passing", "warning", "critical"):
        return "initial status %r is not passing, warning or critical" % _short(check["Status"])
    if "Method" in check and not _METHOD.match(str(check["Method"])):
        return "HTTP method %r is not an upper-case word" % _short(check["Method"])
    return None
