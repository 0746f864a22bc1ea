#!/bin/sh
# The Debian base image every locally built image starts from (no registry can be pulled from
# here): a debootstrap rootfs imported with `docker import`. Built once; later calls find it.
#   deploy/images/base.sh [TAG]        (default appliance-base:bookworm)
# Needs root (debootstrap) and a Debian mirror (DEBIAN_MIRROR, default deb.debian.org).
set -eu
TAG="${1:-appliance-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3 for our own programs (the Stalwart stand-in); ca-certificates and tzdata because
# every image that speaks TLS or logs times wants them.
PACKAGES="python3,ca-certificates,tzdata"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q debootstrap; }
ROOT="$(mktemp -d /tmp/appliance-base.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOT" "$MIRROR" >/dev/null
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
echo "built $TAG"
