"""The registrar's first probe: a new registration's HTTP or TCP check, tried once before it is written.

Consul 1.8 runs a newly registered check only after a random stagger within its interval
(`lib.RandomStagger(interval)` before the first run), and the check is critical until
then: a replacement that already serves would count as failing for up to one interval
(0.5 s on average at the 1 s the demo uses; up to 10 s at registrator's default 10 s).
So medic-register probes the check's own target once, as Consul will (HTTP: the check's
method, a 2xx answer passes, redirects are not followed; TCP: a connect), and registers
the check with `Status: passing` when -- and only when -- that probe passed. A probe that
fails, times out (PROBE_TIMEOUT) or cannot be made (HTTPS, gRPC, TTL) leaves the check to
Consul: critical until its first run, as with registrator. An explicit
SERVICE_CHECK_INITIAL_STATUS wins; `medic-register --no-probe` turns the probe off.
Consul's own checks take over from the next interval on: a probe never holds a check up.
"""
import socket
import time
from urllib.parse import urlsplit

PROBE_TIMEOUT = 0.3  # seconds; the registrar waits this long at most per new registration
USER_AGENT = "Consul Health Check"  # what the agent's HTTP check sends


def target(check):
    """A check definition -> ("http", method, host, port, path) | ("tcp", host, port) | None. Pure."""
    check = check or {}
    if check.get("Status") or check.get("TTL") or check.get("GRPC"):
        return None
    if check.get("HTTP"):
        u = urlsplit(check["HTTP"])
        if u.scheme != "http" or not u.hostname:
            return None
        try:
            port = u.port or 80
        except ValueError:
            return None
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        return ("http", (check.get("Method") or "GET").upper(), u.hostname, port, path)
    if check.get("TCP"):
        host, _, port = check["TCP"].rpartition(":")
        if host and port.isdigit():
            return ("tcp", host.strip("[]"), int(port))
    return None


def first_status(check, timeout=PROBE_TIMEOUT):
    """"passing" when one probe of the check's target passes now, else None (leave it to Consul).

    HTTP over a plain socket (one HTTP/1.0 request, the status line read): this is not a
    Consul client, and the registrar needs nothing more of the answer."""
    t = target(check)
    if t is None:
        return None
    host, port = (t[1], t[2]) if t[0] == "tcp" else (t[2], t[3])
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if t[0] == "tcp":
                return "passing"
            netloc = ("[%s]" % host if ":" in host else host) + ":%d" % port
            sock.sendall(("%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: text/plain, text/*, */*\r\n"
                          "Connection: close\r\n\r\n" % (t[1], t[4], netloc, USER_AGENT)).encode("latin-1"))
            head = b""
            while b"\r\n" not in head and len(head) < 1024:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
    except (OSError, ValueError, UnicodeError):
        return None
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    ok = len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and 200 <= int(parts[1]) < 300
    return "passing" if ok else None
