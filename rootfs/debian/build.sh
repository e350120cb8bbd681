#!/bin/sh
# Builds a Debian bookworm image an agent can do real work in: debootstrap minbase from Debian's
# mirror plus git, python3, curl and ca-certificates, packed as an OCI layout.
# Usage (as root): rootfs/debian/build.sh LAYOUT [MIRROR]
# Then: hutch pull oci:LAYOUT:bookworm && hutch tag <id> debian:bookworm   (see README)
set -eu
layout=$1
mirror=${2:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "rootfs/debian: debootstrap needs root (it creates device nodes and chroots)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "rootfs/debian: install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
tree=$(mktemp -d /var/tmp/hutch-debian.XXXXXX)
trap 'rm -rf "$tree"' EXIT
debootstrap --variant=minbase --include=git,python3,curl,ca-certificates bookworm "$tree" "$mirror"
# What a container image does not need: package caches, logs, device nodes (the sandbox makes /dev).
chroot "$tree" apt-get clean
rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/log/* "$tree"/var/cache/debconf/*-old "$tree"/dev/*
IMAGE_CMD='["/bin/bash"]' IMAGE_TAG=bookworm "$here/../pack-oci.sh" "$tree" "$layout"
