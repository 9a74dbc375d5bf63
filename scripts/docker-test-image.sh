#!/usr/bin/env bash
# Builds the local image `cairn-test/busybox:latest` that the docker driver's tests use
# (`CAIRN_DOCKER_TESTS=1 cargo test --lib executor::driver::docker`). No registry is
# needed: the root filesystem is Debian's statically linked busybox with its applets as
# symlinks, a passwd with `root` and `nobody`, /tmp and /root, imported with
# `docker import`. Idempotent: does nothing when the image already exists.
set -euo pipefail

IMAGE=cairn-test/busybox:latest

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE already present"
    exit 0
fi

BUSYBOX=/bin/busybox
if ! [ -x "$BUSYBOX" ] || ! "$BUSYBOX" --list >/dev/null 2>&1 || ldd "$BUSYBOX" >/dev/null 2>&1; then
    # Missing, or a dynamically linked one: the image has no libc, so it must be static.
    if ! dpkg -s busybox-static >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq busybox-static >/dev/null
    fi
fi

ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT

mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/root" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
chmod 700 "$ROOTFS/root"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
# Every applet as a symlink to /bin/busybox (sh, sleep, nc, httpd, wget, tar…), where
# `busybox --install -s` would put it; done by hand because --install needs /proc.
for applet in $("$BUSYBOX" --list-full); do
    mkdir -p "$ROOTFS/$(dirname "$applet")"
    [ -e "$ROOTFS/$applet" ] || ln -s /bin/busybox "$ROOTFS/$applet"
done
cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    - "$IMAGE" >/dev/null
echo "built $IMAGE"
