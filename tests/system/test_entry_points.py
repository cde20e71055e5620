"""Every executable starts three ways: its console script, `python -m consul_medic.handlers.<capability>`,
and both name it medic-<name> in their usage line."""
import configparser
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scripts():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        script, _, target = line.partition("=")
        yield script.strip(), target.strip().partition(":")[0]


@pytest.mark.parametrize("script,module", sorted(_scripts()))
def test_python_dash_m_and_the_console_script(script, module):
    assert module.endswith(".__main__")
    for argv in ([sys.executable, "-m", module[:-len(".__main__")], "--help"],
                 [os.path.join(os.path.dirname(sys.executable), script), "--help"]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode in (0, 3), (argv, r.stdout, r.stderr)
        assert r.stdout.startswith("Usage: %s " % script), (argv, r.stdout[:200])
