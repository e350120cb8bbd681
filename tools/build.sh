#!/bin/sh
# Configures (once) and builds hutch into ./build, including the built-in busybox base.
set -eu
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build --buildtype=debugoptimized >/dev/null
meson compile -C build
