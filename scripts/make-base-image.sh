#!/usr/bin/env bash
# Make a Debian bookworm base image with python3 without any registry: debootstrap + docker import.
# Usage: scripts/make-base-image.sh [TAG]   (default builder-test-base:bookworm)
set -euo pipefail
tag=${1:-builder-test-base:bookworm}
docker=${DOCKER:-docker}
if $docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag exists"; exit 0; fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
rootfs=$(mktemp -d /var/tmp/builder-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" http://deb.debian.org/debian >&2
tar -C "$rootfs" -c . | $docker import --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
echo "made $tag"
