"""Where medic-notify's messages go: webhook, command, log. Several at once.

Every channel is bounded: an explicit timeout per attempt, `retries` more attempts
with exponential backoff (`backoff`, doubling, at most `backoff_max`), and a total
budget `max_time` after which it gives up. Channels run in parallel threads, so a
hanging webhook costs at most its budget and never delays another channel. A
channel never raises: it returns a Result that the caller audits.

Secrets (a webhook's header token, read from `token_file`) are sent only in that
header: never in a message, an error text, a log line or the command's
environment. A webhook URL is shown as its origin only (Slack-style URLs are
secrets too).
"""
import json
import os
import subprocess
import sys
import threading
import time
from collections import namedtuple

from . import notify_message, notify_rules

Result = namedtuple("Result", "channel type ok attempts error elapsed retried")

DEFAULTS = {"timeout": 5.0, "retries": 3, "backoff": 1.0, "backoff_max": 10.0, "max_time": 30.0}
_RETRY_HTTP = (408, 425, 429, 500, 502, 503, 504)
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TZ", "TMPDIR")


def _num(ch, key):
    from ..core.durations import parse_duration
    v = ch.get(key, DEFAULTS[key])
    return parse_duration(v) if isinstance(v, str) else float(v)


def origin(url):
    """'https://hooks.example.com/T00/B00/secret?x=1' -> 'https://hooks.example.com'."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return "<url>"
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return "%s://%s" % (scheme, host)


def read_token(ch):
    """The header token of a webhook channel (file contents, stripped), or None."""
    path = ch.get("token_file")
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if "\n" in token or "\r" in token:
        raise ValueError("token file holds more than one line")
    return token or None


def secrets(channels):
    """Every secret the channels hold (to scrub from audit lines): header tokens, URLs."""
    out = []
    for ch in channels:
        if ch.get("type") == "webhook":
            try:
                tok = read_token(ch)
            except (OSError, ValueError):
                tok = None
            if tok:
                out.append(tok)
            url = ch.get("url") or ""
            if url and url != origin(url):
                out.append(url)
    return out


def _scrub(text, ch, token=None):
    text = str(text)
    url = ch.get("url")
    if url:
        text = text.replace(url, origin(url))
        path = url.split("://", 1)[-1]
        path = path[path.find("/"):] if "/" in path else ""
        if len(path) > 1:
            text = text.replace(path, "/<redacted>")
    if token:
        text = text.replace(token, "<redacted>")
    return " ".join(text.split())[:300]


def render(ch, msg, doc):
    fmt = ch.get("format") or ("json" if ch.get("type") == "webhook" else "short")
    if fmt == "json":
        return notify_message.dumps(doc)
    return notify_message.short_text(msg)


def _attempts(ch, once, sleep, clock):
    """Run `once(remaining) -> (ok, error, retryable)` with retries and backoff in a budget.

    -> (ok, attempts, last error, errors of the earlier attempts that were retried)."""
    start = clock()
    budget = _num(ch, "max_time")
    retries = int(ch.get("retries", DEFAULTS["retries"]))
    backoff, backoff_max = _num(ch, "backoff"), _num(ch, "backoff_max")
    attempt, error, seen = 0, None, []
    while True:
        attempt += 1
        remaining = budget - (clock() - start)
        if remaining <= 0:
            error = (error + "; " if error else "") + "gave up: max_time %gs spent" % budget
            return False, attempt - 1, error, seen
        ok, error, retryable = once(remaining)
        if ok:
            return True, attempt, None, seen
        seen.append(error)
        if not retryable or attempt > retries:
            return False, attempt, error, seen[:-1]
        pause = min(backoff * (2 ** (attempt - 1)), backoff_max)
        if clock() - start + pause >= budget:
            return False, attempt, error + "; gave up: max_time %gs would pass" % budget, seen[:-1]
        sleep(pause)


def send_webhook(ch, msg, doc, sleep=time.sleep, clock=time.monotonic):
    import requests

    try:
        token = read_token(ch)
    except (OSError, ValueError) as e:
        return False, 0, "token_file unreadable: %s" % (getattr(e, "strerror", None) or type(e).__name__), []
    headers = {"Content-Type": "application/json", "User-Agent": "consul-medic-notify/1"}
    for k, v in (ch.get("headers") or {}).items():
        headers[k] = v
    if token:
        header = ch.get("header") or "Authorization"
        headers[header] = ch.get("token_prefix", "Bearer " if header == "Authorization" else "") + token
    fmt = ch.get("format") or "json"
    body = render(ch, msg, doc) if fmt == "json" else json.dumps({"text": notify_message.short_text(msg)})
    timeout = _num(ch, "timeout")

    def once(remaining):
        t = min(timeout, remaining)
        try:
            r = requests.post(ch["url"], data=body.encode("utf-8"), headers=headers, timeout=(t, t),
                              allow_redirects=False, verify=ch.get("verify", True))
            r.close()
        except requests.Timeout:
            return False, "timeout after %gs" % t, True
        except requests.RequestException as e:
            return False, _scrub("%s: %s" % (type(e).__name__, e), ch, token), True
        if 200 <= r.status_code < 300:
            return True, None, False
        return False, "HTTP %d" % r.status_code, r.status_code in _RETRY_HTTP

    return _attempts(ch, once, sleep, clock)


def command_env(ch, msg):
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.update(notify_message.env_vars(msg))
    for k, v in (ch.get("env") or {}).items():
        env[str(k)] = str(v)
    return env


def send_command(ch, msg, doc, sleep=time.sleep, clock=time.monotonic):
    argv = list(ch["argv"])
    data = (render(ch, msg, doc) + "\n").encode("utf-8")
    env = command_env(ch, msg)
    timeout = _num(ch, "timeout")

    def once(remaining):
        t = min(timeout, remaining)
        try:
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True, close_fds=True)
        except OSError as e:
            return False, "cannot run %s: %s" % (os.path.basename(argv[0]), e.strerror), False
        try:
            out, _ = p.communicate(data, timeout=t)
        except subprocess.TimeoutExpired:
            _killpg(p)
            return False, "timeout after %gs" % t, True
        if p.returncode == 0:
            return True, None, False
        tail = out.decode("utf-8", "replace").strip().splitlines()[-1:] if out else []
        return False, _scrub("exit %d%s" % (p.returncode, (": " + tail[0]) if tail else ""), ch), True

    return _attempts(ch, once, sleep, clock)


def _killpg(p):
    import signal
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        p.communicate(timeout=5)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass


def send_log(ch, msg, doc, sleep=time.sleep, clock=time.monotonic):
    line = render(ch, msg, doc) + "\n"
    path = ch.get("path")
    try:
        if path:
            d = os.path.dirname(path)
            if d:
                os.makedirs(d, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
        else:
            sys.stderr.write(line)
            sys.stderr.flush()
    except OSError as e:
        return False, 1, "cannot write %s: %s" % (path or "stderr", e.strerror), []
    return True, 1, None, []


SENDERS = {"webhook": send_webhook, "command": send_command, "log": send_log}


def send_one(ch, msg, doc, sleep=time.sleep, clock=time.monotonic):
    start = clock()
    try:
        ok, attempts, error, retried = SENDERS[ch["type"]](ch, msg, doc, sleep, clock)
    except Exception as e:  # noqa: BLE001 boundary: a channel never raises; any failure is its one delivery result
        ok, attempts, error, retried = False, 0, _scrub("%s: %s" % (type(e).__name__, e), ch), []
    return Result(ch.get("name") or ch["type"], ch["type"], ok, attempts, error, round(clock() - start, 3),
                  retried)


def send_all(channels, msg, doc):
    """Send to every channel that wants `msg["kind"]`, in parallel; -> [Result]."""
    chosen = [ch for ch in channels if notify_rules.channel_wants(ch, msg["kind"])]
    results = [None] * len(chosen)

    def run(i, ch):
        results[i] = send_one(ch, msg, doc)

    threads = [threading.Thread(target=run, args=(i, ch), daemon=True) for i, ch in enumerate(chosen)]
    for t in threads:
        t.start()
    for i, t in enumerate(threads):
        t.join(_num(chosen[i], "max_time") + _num(chosen[i], "timeout") + 5)
    return [r or Result(chosen[i].get("name"), chosen[i]["type"], False, 0, "did not finish in its budget", None, [])
            for i, r in enumerate(results)]
