#!/bin/sh
# Packs a root filesystem tree as a one-layer OCI image layout, e.g. the built busybox tree: the
# embedded default image that `hutch run busybox` imports into a user's store on first use.
# Usage: pack-oci.sh TREE LAYOUT [STAMP]   (LAYOUT is replaced atomically)
# Environment: IMAGE_CMD (JSON array, default ["/bin/sh"]), IMAGE_TAG (default latest).
# The layer is reproducible: sorted entries, owner 0, mtime 0, gzip without a timestamp.
set -eu
tree=$1
layout=$2
stamp=${3:-}
case "$(dpkg --print-architecture 2>/dev/null || uname -m)" in
    amd64|x86_64) arch=amd64 ;;
    arm64|aarch64) arch=arm64 ;;
    i386|i686) arch=386 ;;
    ppc64el) arch=ppc64le ;;
    *) arch=$(dpkg --print-architecture) ;;
esac
tmp="$layout.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/blobs/sha256"
blobs="$tmp/blobs/sha256"

tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$tree" -cf "$tmp/layer.tar" .
diff_id=$(sha256sum < "$tmp/layer.tar" | cut -d' ' -f1)
gzip -n -6 < "$tmp/layer.tar" > "$tmp/layer.tar.gz"
rm "$tmp/layer.tar"
layer=$(sha256sum < "$tmp/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$tmp/layer.tar.gz")
mv "$tmp/layer.tar.gz" "$blobs/$layer"

# Writes stdin as a blob and prints "DIGEST SIZE".
put_blob() {
    cat > "$tmp/blob"
    d=$(sha256sum < "$tmp/blob" | cut -d' ' -f1)
    s=$(stat -c %s "$tmp/blob")
    mv "$tmp/blob" "$blobs/$d"
    echo "$d $s"
}

set -- $(printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hutch rootfs recipe"}]}' \
    "$arch" "${IMAGE_CMD:-[\"/bin/sh\"]}" "$diff_id" | put_blob)
config=$1 config_size=$2
set -- $(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" | put_blob)
manifest=$1 manifest_size=$2
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$arch" "${IMAGE_TAG:-latest}" > "$tmp/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$tmp/oci-layout"

rm -rf "$layout.old"
[ -e "$layout" ] && mv "$layout" "$layout.old"
mv "$tmp" "$layout"
trap - EXIT
rm -rf "$layout.old"
[ -n "$stamp" ] && touch "$stamp"
exit 0
