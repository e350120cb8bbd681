#!/bin/sh
# Builds a Debian bookworm image an agent can do real work in: debootstrap minbase from Debian's
# mirror plus git, python3, curl and ca-certificates, packed as an OCI layout.
# Usage (as root): rootfs/debian/build.sh LAYOUT [MIRROR]
# Then: hutch pull --tag debian:bookworm oci:LAYOUT:bookworm   (see README)
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
# --one-file-system: never recurse into a proc or sysfs debootstrap left mounted after a failure.
trap 'rm -rf --one-file-system "$tree"' EXIT
debootstrap --variant=minbase --include=git,python3,curl,ca-certificates bookworm "$tree" "$mirror"
# What a container image does not need: package caches, logs, device nodes (the sandbox makes /dev),
# and the build host's name and resolver (debootstrap copies them; the sandbox sets its own).
chroot "$tree" apt-get clean
rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/log/* "$tree"/var/cache/debconf/*-old "$tree"/dev/*
rm -f "$tree"/etc/hostname
: > "$tree"/etc/resolv.conf && chmod 0644 "$tree"/etc/resolv.conf
# The layer's "./" entry is the image's /: 0755, not mktemp's 0700 (umoci, crun, docker take it as is).
chmod 0755 "$tree"
IMAGE_CMD='["/bin/bash"]' IMAGE_TAG=bookworm "$here/../pack-oci.sh" "$tree" "$layout"
