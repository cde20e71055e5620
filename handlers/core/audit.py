"""The audit log: one JSON line per service per run, for every action and every
deliberate non-action, saying why.

Path: --audit-log > MEDIC_AUDIT_LOG > /var/lib/consul-medic/audit.jsonl.
Each record is written with a single O_APPEND write, so concurrent handlers
never interleave lines. Secrets handed to the writer are scrubbed from every
record before it is written.

Rotation (logrotate, `create` or `copytruncate`): the writer keeps its file open
and, before each record, compares the path's inode with the open file's. A
renamed or removed file (logrotate moved it away) is closed and the path is
opened again (created 0640), so no record goes to the rotated file after the
rename was seen and none is lost. A truncated file is fine too (O_APPEND).
docs/architecture.md has the logrotate snippet.
"""
import json
import os
import socket
import threading
import time

DEFAULT_AUDIT_LOG = "/var/lib/consul-medic/audit.jsonl"


def audit_path(explicit=None, environ=None):
    """The audit log's absolute path (a relative one is resolved once, against the start directory)."""
    env = os.environ if environ is None else environ
    return os.path.abspath(explicit or env.get("MEDIC_AUDIT_LOG") or DEFAULT_AUDIT_LOG)


_HOST = []


def _hostname():
    if not _HOST:
        _HOST.append(socket.gethostname())
    return _HOST[0]


def _scrub(value, secrets):
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, "<redacted>")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    return value


class AuditLog:
    def __init__(self, path, secrets=()):
        self.path = path
        self.secrets = tuple(s for s in secrets if s)
        self._fd, self._id, self._pid = None, None, None
        self._lock = threading.Lock()

    def write(self, record):
        """Append one record; returns the line written. Raises OSError on failure."""
        now = time.time()  # read once: seconds and milliseconds from the same instant
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (now % 1 * 1000),
               "host": _hostname(), "pid": os.getpid()}
        rec.update(record)
        line = json.dumps(_scrub(rec, self.secrets) if self.secrets else rec, sort_keys=True, default=str) + "\n"
        with self._lock:
            fd = self._current()
            try:
                os.write(fd, line.encode("utf-8"))
            except OSError:
                self.close()
                raise
        return line

    def _current(self):
        """The open file for the path; reopened when the path now names another file (rotated)."""
        try:
            st = os.stat(self.path)
            now = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = None
        if self._fd is not None and now == self._id and os.getpid() == self._pid:
            return self._fd
        self.close()
        d = os.path.dirname(self.path)
        if d:
            os.makedirs(d, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)
        st = os.fstat(fd)
        self._fd, self._id, self._pid = fd, (st.st_dev, st.st_ino), os.getpid()
        return fd

    def close(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd, self._id = None, None


def write_or_skip(log, record):
    """Write `record` to `log` (None: no log); a log that cannot be written never stops the caller."""
    if log is not None:
        try:
            log.write(record)
        except OSError:
            pass


def read(path):
    """All records of an audit log (for tests, status and the demo)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def tail(path, limit):
    """The records (dicts) in the last `limit` bytes of the audit log, oldest first; [] when it
    cannot be read. A line cut by the limit, or one that is not JSON, is passed over."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > limit:
        lines = lines[1:]  # the first line may be cut
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
