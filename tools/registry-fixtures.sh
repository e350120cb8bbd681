#!/bin/sh
# Starts a throwaway local registry with a busybox image in it, for trying `hutch pull` by hand
# (the integration tests start their own, see tests/integration/images_fixtures.py).
# Usage: tools/registry-fixtures.sh DIR
#   DIR is created and holds the registry's storage, config, log and pid. Prints the image's
#   reference; stop the registry with: kill "$(cat DIR/registry.pid)"
# Needs docker-registry, umoci and skopeo (tools/install-deps.sh installs them). Loopback only.
set -eu
dir=${1:?usage: $0 DIR}
busybox=/bin/busybox
for tool in docker-registry umoci skopeo; do
    command -v "$tool" >/dev/null || { echo "registry-fixtures: $tool is missing" >&2; exit 1; }
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
echo $! >"$dir/registry.pid"
tries=0
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null; do
    tries=$((tries + 1))
    [ $tries -lt 100 ] || { echo "registry-fixtures: the registry did not start (see $dir/registry.log)" >&2; exit 1; }
    sleep 0.1
done

# A one-layer busybox image, built from the host's busybox-static.
rm -rf "$dir/layout" "$dir/bundle"
umoci init --layout "$dir/layout"
umoci new --image "$dir/layout:latest"
umoci unpack --image "$dir/layout:latest" "$dir/bundle" >/dev/null
mkdir -p "$dir/bundle/rootfs/bin" "$dir/bundle/rootfs/etc" "$dir/bundle/rootfs/tmp"
cp "$busybox" "$dir/bundle/rootfs/bin/busybox"
ln -s busybox "$dir/bundle/rootfs/bin/sh"
echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/bundle/rootfs/etc/passwd"
umoci repack --image "$dir/layout:latest" "$dir/bundle"
umoci config --image "$dir/layout:latest" --config.cmd /bin/sh --config.env PATH=/bin
rm -rf "$dir/bundle"
skopeo copy -q --dest-tls-verify=false "oci:$dir/layout:latest" "docker://127.0.0.1:$port/hutch/busybox:latest"
echo "127.0.0.1:$port/hutch/busybox:latest"
