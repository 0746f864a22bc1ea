#!/bin/sh
# The Debian base image every locally built image starts from (no registry can be pulled from
# here): a debootstrap rootfs imported with `docker import`. Built once; later calls find it.
#   deploy/images/base.sh [TAG]        (default appliance-base:bookworm)
# Needs root (debootstrap) and a Debian mirror (DEBIAN_MIRROR, default deb.debian.org).
set -eu
TAG="${1:-appliance-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3 for our own programs (the Stalwart stand-in), python3-cryptography for the DKIM keys it
# makes; ca-certificates and tzdata because every image that speaks TLS or logs times wants them.
PACKAGES="python3,ca-certificates,tzdata"
EXTRA="python3-cryptography"  # installed by apt inside the rootfs: debootstrap --include resolves no dependencies

# Cached: an image of this tag built from this package list is reused (a changed list rebuilds).
if [ "$(docker image inspect -f '{{index .Config.Labels "appliance.packages"}}' "$TAG" 2>/dev/null)" = "$PACKAGES,$EXTRA" ]; then
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q debootstrap; }
ROOT="$(mktemp -d /tmp/appliance-base.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOT" "$MIRROR" >/dev/null
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
chroot "$ROOT" sh -c "apt-get install -y -q --no-install-recommends $EXTRA >/dev/null && apt-get clean"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    --change "LABEL appliance.packages=$PACKAGES,$EXTRA" - "$TAG" >/dev/null
echo "built $TAG"
