"""registrator's check labels -> one Consul agent check. Pure."""
from .reg_model import DEFAULT_INTERVAL, _DURATION


def build_check(attrs, address, port):
    """registrator's buildCheck (HTTP, HTTPS, TCP, TTL) from attrs; None without a check.

    Script checks (SERVICE_CHECK_SCRIPT / _CMD) are deliberately not supported: they need
    `enable_script_checks`, which is remote code execution (see docs/medic-register.md).
    """
    c = {}
    if ":" in str(address):  # IPv6
        address = "[%s]" % address
    if attrs.get("check_initial_status"):
        c["Status"] = attrs["check_initial_status"]
    if attrs.get("check_http"):
        c["HTTP"] = "http://%s:%d%s" % (address, port, attrs["check_http"])
    elif attrs.get("check_https"):
        c["HTTP"] = "https://%s:%d%s" % (address, port, attrs["check_https"])
        if str(attrs.get("check_tls_skip_verify", "")).lower() in ("1", "true", "yes"):
            c["TLSSkipVerify"] = True
    elif attrs.get("check_ttl"):
        c["TTL"] = attrs["check_ttl"]
    elif attrs.get("check_tcp"):
        c["TCP"] = "%s:%d" % (address, port)
    else:
        return None
    if "HTTP" in c or "TCP" in c:
        c["Interval"] = attrs.get("check_interval") or DEFAULT_INTERVAL
        if attrs.get("check_timeout"):
            c["Timeout"] = attrs["check_timeout"]
    if "HTTP" in c and attrs.get("check_http_method"):
        c["Method"] = attrs["check_http_method"]
    if attrs.get("check_deregister_after"):
        c["DeregisterCriticalServiceAfter"] = attrs["check_deregister_after"]
    return c


def _check_problem(check):
    for k in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
        if k in check and not _DURATION.match(str(check[k])):
            return "%s %r is not a duration like 10s" % (k, check[k])
    if check.get("Status") and check["Status"] not in ("passing", "warning", "critical"):
        return "initial status %r is not passing, warning or critical" % check["Status"]
    return None
