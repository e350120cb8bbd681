#!/bin/sh
# Installs everything hutch needs to build, run and test on Debian 12, from Debian's own packages.
# Idempotent: a second run only confirms the packages are there.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo "$0" "$@"; fi
    echo "tools/install-deps.sh: must run as root (it calls apt-get); try: su -c $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# build: compilers and libraries; run: busybox-static (the built-in base), uidmap (newuidmap);
# test: python3-pytest, a registry and image tools for fixtures, user-mode-linux for cgroup v2;
# bench: crun, bubblewrap, hyperfine.
packages="
    build-essential meson ninja-build pkg-config
    libseccomp-dev libcap-dev libarchive-dev libcurl4-openssl-dev
    libspdlog-dev libfmt-dev doctest-dev nlohmann-json3-dev libcli11-dev libssl-dev
    busybox-static uidmap procps iproute2 util-linux tar gzip zstd
    python3 python3-pytest docker-registry umoci skopeo apache2-utils user-mode-linux
    passt nftables dnsmasq
    crun bubblewrap hyperfine
"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi
