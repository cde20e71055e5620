#!/usr/bin/env bash
# Builds the local demo image medic-demo:latest from busybox-static and testbed/rootfs.
# No registry is reachable, so the image is `docker import`ed from a tar of a tiny rootfs.
# Rebuilt only when its inputs change (their hash is an image label).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${MEDIC_DEMO_IMAGE:-medic-demo:latest}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-image: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
file "$busybox" 2>/dev/null | grep -q 'statically linked' || ldd "$busybox" 2>&1 | grep -q 'not a dynamic' \
  || { echo "build-image: $busybox is not static" >&2; exit 1; }

hash=$( (sha256sum "$busybox"; cd "$here/rootfs" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "medic.build"}}' "$image" 2>/dev/null || true)" = "$hash" ]; then
  echo "build-image: $image is current ($hash)" >&2; exit 0
fi
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp -a "$here/rootfs/." "$root/"
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
tar -C "$root" -c . | docker import \
  -c 'CMD ["/bin/demo-web"]' -c 'EXPOSE 80' -c "LABEL medic.build=$hash" - "$image" >/dev/null
echo "build-image: built $image ($hash)" >&2
