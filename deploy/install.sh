#!/usr/bin/env bash
# `make install PREFIX=/opt/consul-medic`: consul-medic in a virtual environment of its own.
#
#   PREFIX/bin/medic-*                      the executables (what consul.d and the units name)
#   PREFIX/lib/python3.X/site-packages/     handlers, watches, specs and their dependencies only
#   PREFIX/share/doc/consul-medic/          README, docs/*.md, specs/README.md, LICENSE
#   PREFIX/share/consul-medic/examples/     an example spec and compose file (*.example: never loaded)
#   PREFIX/share/consul-medic/systemd/      the units of deploy/systemd (copy them, see docs/production.md)
#   PREFIX/share/consul-medic/prometheus/   alert rules, their tests and an example scrape config (docs/metrics.md)
#
# Why a venv: the package's top-level names `handlers`, `watches` and `specs` are generic.
# In a shared site-packages any other distribution with a `handlers/` package overwrites or
# shadows ours. The venv holds nothing but consul-medic and its dependencies, sees neither the
# system's nor the user's site-packages, and every medic-* script runs its interpreter with -I
# (isolated: no PYTHONPATH, no user site, not the script's directory), so no environment a
# Consul agent or a shell hands down can put another `handlers` first. Re-running upgrades in place.
set -euo pipefail
prefix=${1:?usage: install.sh PREFIX [PYTHON]}
python=${2:-python3}
cd "$(dirname "$0")/.."

case $prefix in
  /*) ;;
  *) echo "install: PREFIX must be an absolute path, got '$prefix'" >&2; exit 2 ;;
esac
if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ] && [ -n "$(ls -A "$prefix" 2>/dev/null)" ]; then
  echo "install: $prefix exists, is not empty and is not a virtual environment: refusing to install there" >&2
  exit 2
fi
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "install: $python is older than Python 3.11" >&2; exit 2; }
"$python" -m venv "$prefix" \
  || { echo "install: '$python -m venv' failed (Debian: apt-get install python3-venv)" >&2; exit 2; }

# a regular (not editable) install: a wheel built from a clean copy of the package sources
# (no stale *.egg-info or build/ of a development venv can add files to it)
src=$(mktemp -d /tmp/consul-medic-install.XXXXXX)
trap 'rm -rf "$src"' EXIT
cp -a handlers watches specs setup.cfg pyproject.toml README.md LICENSE "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"$prefix/bin/python" -m pip install -q --disable-pip-version-check --no-warn-script-location "$src"

# every medic-* runs isolated (-I); pip wrote `#!PREFIX/bin/python` (or a /bin/sh trampoline for
# very long paths, which we refuse rather than leave unisolated)
for exe in "$prefix"/bin/medic-*; do
  sed -i '1s|^#!\(/[^ ]*/python[0-9.]*\)$|#!\1 -I|' "$exe"
  head -n1 "$exe" | grep -q -- ' -I$' \
    || { echo "install: $exe: cannot make its interpreter line isolated (PREFIX too long?)" >&2; exit 2; }
done

install -d "$prefix/share/doc/consul-medic" "$prefix/share/consul-medic/examples" \
           "$prefix/share/consul-medic/systemd" "$prefix/share/consul-medic/prometheus"
install -m 0644 README.md LICENSE "$prefix/share/doc/consul-medic/"
install -m 0644 docs/*.md "$prefix/share/doc/consul-medic/"
install -m 0644 specs/README.md "$prefix/share/doc/consul-medic/specs-README.md"
install -m 0644 deploy/examples/*.example "$prefix/share/consul-medic/examples/"
install -m 0644 deploy/prometheus/*.yml "$prefix/share/consul-medic/prometheus/"
for unit in deploy/systemd/*; do  # the units name this PREFIX
  sed "s|/opt/consul-medic/|$prefix/|g" "$unit" > "$prefix/share/consul-medic/systemd/$(basename "$unit")"
  chmod 0644 "$prefix/share/consul-medic/systemd/$(basename "$unit")"
done

# smoke: the packages come from this venv, and every executable starts
"$prefix/bin/python" -I - "$prefix" <<'EOF'
import os, sys
import importlib.util
import consul_medic.handlers, consul_medic.specs, consul_medic.watches
prefix = os.path.realpath(sys.argv[1])
for name in ("handlers", "watches", "specs"):  # the generic names stay free
    if importlib.util.find_spec(name) is not None:
        sys.exit("install: a top-level %r package is importable from this venv" % name)
for mod in (consul_medic.handlers, consul_medic.watches, consul_medic.specs):
    for where in map(os.path.realpath, mod.__path__):  # specs is a namespace package (data)
        if not where.startswith(prefix + os.sep):
            sys.exit("install: %s imports from %s, not from %s" % (mod.__name__, where, prefix))
EOF
for exe in "$prefix"/bin/medic-*; do
  out=$("$exe" --help 2>&1) || true
  case $out in
    *Usage:*) ;;
    *) echo "install: $exe --help did not print its usage: ${out:0:200}" >&2; exit 1 ;;
  esac
done
echo "consul-medic installed in $prefix (executables in $prefix/bin; docs in $prefix/share/doc/consul-medic)"
