"""The audit log under logrotate: a rename under a running writer loses nothing (issue 14)."""
import json
import os
import subprocess
import sys
import textwrap
import time

from consul_medic.handlers.core import audit

WRITER = textwrap.dedent("""
    import sys, time
    from consul_medic.handlers.core import audit
    log = audit.AuditLog(sys.argv[1])
    for i in range(int(sys.argv[2])):
        log.write({"kind": "test", "n": i})
        time.sleep(0.002)
""")


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_rename_under_a_running_writer_reopens_and_loses_nothing(tmp_path):
    path, rotated = str(tmp_path / "audit.jsonl"), str(tmp_path / "audit.jsonl.1")
    n = 1500
    p = subprocess.Popen([sys.executable, "-c", WRITER, path, str(n)], cwd=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not os.path.exists(path) or len(_lines(path)) < 100):
            time.sleep(0.01)
        os.rename(path, rotated)  # what logrotate's `create` mode does
        assert p.wait(timeout=120) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    old, new = _lines(rotated), _lines(path)
    assert len(old) >= 100 and len(new) > 0, (len(old), len(new))
    numbers = [r["n"] for r in old + new]
    assert numbers == list(range(n))  # nothing lost, nothing twice, in order across the two files
    assert all(r["pid"] == p.pid for r in old + new)


def test_removed_file_is_recreated_and_truncation_is_fine(tmp_path):
    path = str(tmp_path / "sub" / "audit.jsonl")
    log = audit.AuditLog(path, secrets=["tok-9"])
    log.write({"n": 1, "x": "tok-9"})
    os.unlink(path)
    log.write({"n": 2})
    assert [r["n"] for r in audit.read(path)] == [2]
    with open(path, "w"):
        pass  # copytruncate
    log.write({"n": 3})
    assert [r["n"] for r in audit.read(path)] == [3]
    log.close()
