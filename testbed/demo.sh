#!/usr/bin/env bash
# make demo / make demo-down: see testbed/demo.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/.venv/bin/python" "$root/testbed/demo.py" "$@"
