#!/usr/bin/env bash
# Build the test image's root filesystem as a tarball: busybox-static with every applet linked,
# /etc/passwd and /etc/group, and the folders the stand-in services use.
#
#   scripts/test-rootfs.sh OUT.tar
#
# scripts/test-dockerd.sh and scripts/test-podman.sh import it as gpuconfig-test/busybox:latest.
set -euo pipefail

out=${1:?usage: $0 OUT.tar}
BUSYBOX=${GPUCONFIG_BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "test-rootfs: $BUSYBOX not found (install the Debian package busybox-static)" >&2; exit 1; }
work=$(mktemp -d "$(dirname "$out")/rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/tmp" "$work/etc" "$work/proc" "$work/sys" "$work/dev" "$work/data"
# mktemp makes the folder 0700: as the image's root it would hide /bin from a non-root user.
chmod 755 "$work"
chmod 1777 "$work/tmp"
cp "$BUSYBOX" "$work/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$work/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/etc/group"
tar -C "$work" -cf "$out" .
