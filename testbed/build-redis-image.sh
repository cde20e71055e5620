#!/usr/bin/env bash
# Builds medic-redis:latest from Debian's redis-server binary and the libraries it links (ldd),
# with `docker import` (no registry is reachable). Rebuilt only when the binary changes (its hash
# is an image label). The container runs redis-server on port 6379, no persistence, no
# protected mode (tests publish it on a private address only); extra args are appended by CMD.
set -euo pipefail
image=${MEDIC_REDIS_IMAGE:-medic-redis:latest}
bin=$(command -v redis-server || echo /usr/bin/redis-server)
[ -x "$bin" ] || { echo "build-redis-image: redis-server missing (apt-get install redis-server)" >&2; exit 1; }
bin=$(readlink -f "$bin")
libs=$(ldd "$bin" | awk '/=>/ {print $3; next} $1 ~ /^\// {print $1}' | grep '^/' | sort -u)
hash=$( (sha256sum "$bin"; for l in $libs; do sha256sum "$(readlink -f "$l")"; done; sha256sum "$0") \
        | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{index .Config.Labels "medic.build"}}' "$image" 2>/dev/null || true)
if [ "$current" = "$hash" ]; then
  echo "build-redis-image: $image is current ($hash)" >&2; exit 0
fi
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/data" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/bin/redis-server"
for l in $libs; do
  mkdir -p "$root$(dirname "$l")"
  cp -L "$l" "$root$l"
done
echo 'root:x:0:0:root:/data:/bin/false' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
entrypoint='["/usr/bin/redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",'
entrypoint+=' "--save", "", "--appendonly", "no", "--dir", "/data", "--repl-diskless-sync-delay", "0"]'
tar -C "$root" -c . | docker import \
  -c "ENTRYPOINT $entrypoint" \
  -c 'EXPOSE 6379' -c "LABEL medic.build=$hash" - "$image" >/dev/null
echo "build-redis-image: built $image ($hash)" >&2
