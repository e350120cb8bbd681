#!/usr/bin/env bash
# tools/bench/pull.sh: end-to-end image pull of hutch next to skopeo + umoci, and `hutch run` of a
# pulled image next to `hutch run --rootfs` of the same tree.
#
# A throw-away docker-registry on 127.0.0.1:<free port> (plain HTTP, storage in a temporary
# directory) gets two images, pushed with skopeo:
#   debian   127.0.0.1:PORT/debian:bookworm  the layout of rootfs/debian/build.sh (one layer)
#   big      127.0.0.1:PORT/bench/big:latest built here: the debian tree split into TREE_LAYERS
#            layers (in path order, directories first) plus RAND_LAYERS layers of random
#            incompressible files (RAND_MB MiB in all)
# For each identity (root, and an unprivileged user), ONE hyperfine run per image measures:
#   hutch pull     hutch --root NEW/store pull -q 127.0.0.1:PORT/IMAGE
#   skopeo+umoci   skopeo copy docker://127.0.0.1:PORT/IMAGE oci:NEW/oci:tag && umoci unpack
#                  [--rootless] --image NEW/oci:tag NEW/bundle
# where NEW is a fresh empty directory made by --prepare (which also syncs) before every run.
# and one hyperfine -N run measures, on the cached images and on umoci's unpacked trees:
#   hutch run IMAGE true   next to   hutch run --rootfs TREE true
# It prints a table of medians and speed-ups, and removes everything it made (the registry is
# stopped by pid). See tools/bench/README.md.
#
# Usage: tools/bench/pull.sh [--debian-layout DIR] [--out DIR] [--user NAME | --no-user] [--hutch BIN]
#   --debian-layout DIR  the OCI layout from rootfs/debian/build.sh (tag bookworm); built there
#                        when missing (default /var/tmp/hutch-debian-oci; it is kept)
# Environment: PULL_RUNS (default 5), PULL_WARMUP (0; a pre-flight run precedes), RUN_RUNS (100),
#              RUN_WARMUP (5), TREE_LAYERS (12), RAND_LAYERS (4), RAND_MB (256), SETTLE (60 s).
# Disk: nothing is unlinked until the end (see settle below): a phase holds up to ~12 GB in
# /var/tmp (the large image, 6 runs x 2 tools) until its big files are truncated.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

PULL_RUNS=${PULL_RUNS:-5}
PULL_WARMUP=${PULL_WARMUP:-0}
RUN_RUNS=${RUN_RUNS:-100}
RUN_WARMUP=${RUN_WARMUP:-5}
TREE_LAYERS=${TREE_LAYERS:-12}
RAND_LAYERS=${RAND_LAYERS:-4}
RAND_MB=${RAND_MB:-256}
SETTLE=${SETTLE:-60}
OUT=/tmp/hutch-bench-pull
DEBIAN_LAYOUT=/var/tmp/hutch-debian-oci
HUTCH_SRC=$REPO/build/hutch
BENCH_USER=
USER_GIVEN=0
NO_USER=0
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "pull.sh: $*" >&2; exit 1; }
note() {
    echo "!! $*" >&2
    [ -z "${NOTES_FILE:-}" ] || echo "$*" >>"$NOTES_FILE"
}

while [ $# -gt 0 ]; do
    case $1 in
        --debian-layout) DEBIAN_LAYOUT=${2:?--debian-layout needs a directory}; shift 2 ;;
        --debian-layout=*) DEBIAN_LAYOUT=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --user) BENCH_USER=${2:?--user needs a user name}; USER_GIVEN=1; shift 2 ;;
        --user=*) BENCH_USER=${1#*=}; USER_GIVEN=1; shift ;;
        --no-user) NO_USER=1; shift ;;
        --hutch) HUTCH_SRC=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

for v in PULL_RUNS PULL_WARMUP RUN_RUNS RUN_WARMUP TREE_LAYERS RAND_LAYERS RAND_MB SETTLE; do
    case ${!v} in ''|*[!0-9]*) die "$v must be a number" ;; esac
done
[ "$TREE_LAYERS" -ge 1 ] || die "TREE_LAYERS must be at least 1"
for tool in hyperfine jq docker-registry skopeo umoci python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done
[ -x "$HUTCH_SRC" ] || die "no hutch binary at $HUTCH_SRC (build it: cd $REPO && meson compile -C build)"
HELPER_SRC=$(dirname "$HUTCH_SRC")/hutch-image
[ -x "$HELPER_SRC" ] || die "no hutch-image next to $HUTCH_SRC"

IS_ROOT=0
[ "$(id -u)" -ne 0 ] || IS_ROOT=1
. "$SCRIPT_DIR/identities.sh"

if [ ! -e "$DEBIAN_LAYOUT/index.json" ]; then
    [ "$IS_ROOT" -eq 1 ] || die "no OCI layout at $DEBIAN_LAYOUT, and building one needs root (rootfs/debian/build.sh)"
    echo "=== building the debian image: rootfs/debian/build.sh $DEBIAN_LAYOUT (kept afterwards) ==="
    "$REPO/rootfs/debian/build.sh" "$DEBIAN_LAYOUT" >/dev/null
fi
DEBIAN_LAYOUT=$(cd "$DEBIAN_LAYOUT" && pwd)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
NOTES_FILE=$OUT/notes.txt
: >"$NOTES_FILE"

TMP=$(mktemp -d /var/tmp/hutch-bench-pull.XXXXXX)
# Sandboxes map their root to other ids: they must be able to walk to every tree and store here.
chmod 0755 "$TMP"
REG_PID=

# Removes a directory that may hold a hutch store. As root rm does it all; a user cannot remove
# the files hutch unpacked under subordinate ids, so hutch does that part first.
remove_tree() {
    local d=$1 s
    [ -e "$d" ] || return 0
    if [ "$IS_ROOT" -eq 0 ]; then
        for s in "$d"/*/runs/*/store "$d"/run-store; do
            [ -d "$s" ] || continue
            "$TMP/bin/hutch" --root "$s" rmi -f "${REG:-none}/debian:bookworm" "${REG:-none}/bench/big:latest" >/dev/null 2>&1 || true
            "$TMP/bin/hutch" --root "$s" image prune >/dev/null 2>&1 || true
        done
    fi
    rm -rf --one-file-system "$d"
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
        kill "$REG_PID"
        wait "$REG_PID" 2>/dev/null
    fi
    if [ -d "$TMP" ]; then
        local d
        for d in "$TMP"/set-*; do [ -e "$d" ] && remove_tree "$d"; done
        case $TMP in
            /var/tmp/hutch-bench-pull.*) rm -rf --one-file-system "$TMP" || echo "!! could not remove $TMP" >&2 ;;
        esac
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$TMP/bin" "$TMP/registry" "$TMP/log"
cp "$HUTCH_SRC" "$TMP/bin/hutch"
cp "$HELPER_SRC" "$TMP/bin/hutch-image"
# The copies, not build/: a rebuild during the benchmark must not change what is measured.
export HUTCH_IMAGE_HELPER=$TMP/bin/hutch-image

# ---------------------------------------------------------------------------------------------
# The large image: an OCI layout written by hand (gzip -6 layers, as most builders do).
echo "=== building the large image ($TREE_LAYERS tree layers + $RAND_LAYERS random layers, $RAND_MB MiB) ==="
python3 - "$DEBIAN_LAYOUT" "$TMP/big" "$TREE_LAYERS" "$RAND_LAYERS" "$RAND_MB" <<'PY'
import gzip, hashlib, io, json, multiprocessing, os, sys, tarfile

src, dst, tree_layers, rand_layers, rand_mb = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
blobs = os.path.join(dst, "blobs", "sha256")
os.makedirs(blobs)

def blob(name):
    return os.path.join(src, "blobs", "sha256", name.split(":", 1)[1])

idx = json.load(open(os.path.join(src, "index.json")))
desc = next(m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "bookworm")
manifest = json.load(open(blob(desc["digest"])))
base_config = json.load(open(blob(manifest["config"]["digest"])))

# Split the debian tree: every directory in layer 0 (so each layer's parents exist), files and
# symlinks in path order into layers of about equal size, a hard link in its target's layer
# (docker never makes cross-layer hard links, and hutch refuses them).
members, links = [], []
with tarfile.open(blob(manifest["layers"][-1]["digest"]), "r:gz") as tf:
    for m in tf:
        data = tf.extractfile(m).read() if m.isreg() else None
        (links if m.islnk() else members).append((m, data))
total = sum(m.size for m, _ in members) or 1
tars = [tarfile.open(os.path.join(dst, "layer%02d.tar" % i), "w", format=tarfile.PAX_FORMAT)
        for i in range(tree_layers)]
done, where = 0, {}
norm = lambda n: n[2:] if n.startswith("./") else n.lstrip("/")
for m, data in members:
    i = 0 if m.isdir() else min(tree_layers - 1, done * tree_layers // total)
    done += m.size
    where[norm(m.name)] = i
    tars[i].addfile(m, io.BytesIO(data) if data is not None else None)
for m, _ in links:
    tars[where.get(norm(m.linkname), tree_layers - 1)].addfile(m)
for t in tars:
    t.close()

# Random layers: 8 MiB files of incompressible data.
per_file = 8 << 20
files_per_layer = max(1, (rand_mb << 20) // max(1, rand_layers) // per_file)
for j in range(rand_layers):
    with tarfile.open(os.path.join(dst, "layer%02d.tar" % (tree_layers + j)), "w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo("bench/random-%02d" % j); d.type = tarfile.DIRTYPE; d.mode = 0o755
        t.addfile(d)
        for k in range(files_per_layer):
            f = tarfile.TarInfo("bench/random-%02d/file-%02d" % (j, k)); f.size = per_file; f.mode = 0o644
            t.addfile(f, io.BytesIO(os.urandom(per_file)))

def pack(path):
    h = hashlib.sha256()
    with open(path, "rb") as f, open(path + ".gz", "wb") as out:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0, filename="") as z:
            while chunk := f.read(1 << 20):
                h.update(chunk); z.write(chunk)
    os.unlink(path)
    g = hashlib.sha256()
    with open(path + ".gz", "rb") as f:
        while chunk := f.read(1 << 20):
            g.update(chunk)
    os.rename(path + ".gz", os.path.join(blobs, g.hexdigest()))
    return "sha256:" + h.hexdigest(), "sha256:" + g.hexdigest(), os.path.getsize(os.path.join(blobs, g.hexdigest()))

paths = [os.path.join(dst, "layer%02d.tar" % i) for i in range(tree_layers + rand_layers)]
with multiprocessing.Pool(min(len(paths), os.cpu_count() or 1)) as pool:
    packed = pool.map(pack, paths)

def put(obj):
    b = json.dumps(obj, separators=(",", ":")).encode()
    d = hashlib.sha256(b).hexdigest()
    open(os.path.join(blobs, d), "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}

config = {"architecture": base_config["architecture"], "os": "linux", "created": "1970-01-01T00:00:00Z",
          "config": base_config.get("config", {}),
          "rootfs": {"type": "layers", "diff_ids": [p[0] for p in packed]},
          "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tools/bench/pull.sh layer %d" % i}
                      for i in range(len(packed))]}
c = put(config)
m = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **c},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": p[1], "size": p[2]}
                    for p in packed]})
json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
                          "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
          open(os.path.join(dst, "index.json"), "w"))
open(os.path.join(dst, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY

# "LAYERS COMPRESSED_BYTES" of an image's manifest in a layout.
layout_stats() {
    local layout=$1 tag=$2 mdig
    mdig=$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
        "$layout/index.json")
    jq -r '"\(.layers | length) \([.layers[].size] | add)"' "$layout/blobs/sha256/${mdig#sha256:}"
}
read -r DEB_LAYERS DEB_BYTES < <(layout_stats "$DEBIAN_LAYOUT" bookworm)
read -r BIG_LAYERS BIG_BYTES < <(layout_stats "$TMP/big" latest)

# ---------------------------------------------------------------------------------------------
# The registry.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $TMP/registry/storage
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$TMP/registry/config.yml" >"$TMP/log/registry.log" 2>&1 &
REG_PID=$!
for i in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break
    kill -0 "$REG_PID" 2>/dev/null || die "the registry exited: $(tail -n 3 "$TMP/log/registry.log")"
    [ "$i" -lt 100 ] || die "the registry did not answer on 127.0.0.1:$PORT"
    sleep 0.1
done
REG=127.0.0.1:$PORT
echo "=== registry on $REG (pid $REG_PID): pushing ==="
skopeo copy -q --dest-tls-verify=false "oci:$DEBIAN_LAYOUT:bookworm" "docker://$REG/debian:bookworm"
skopeo copy -q --dest-tls-verify=false "oci:$TMP/big:latest" "docker://$REG/bench/big:latest"
rm -rf "$TMP/big"   # the registry has it

# ---------------------------------------------------------------------------------------------
declare -A MEDIAN FAILS
ms() { awk -v v="$1" 'BEGIN { printf "%.0f", v * 1000 }'; }

# record FILE LABEL: records "median fails" per command name under LABEL.
record() {
    local file=$1 label=$2 name median fails
    while read -r name median fails; do
        MEDIAN[$label|$name]=$median
        FAILS[$label|$name]=$fails
        [ "$fails" -eq 0 ] || note "$label: $name: $fails measured runs exited non-zero"
    done < <(jq -r '.results[] | "\(.command) \(.median) \([.exit_codes[] | select(. != 0)] | length)"' "$file")
}

# This host's ext4 has no journal: its inode allocator then skips every inode deleted in the last
# 60 s (360 s while the inode table block is dirty), and creating files right after deleting a
# large tree costs several times more system time. So nothing is deleted while anything is
# measured: each run writes into a fresh directory, a finished phase only has its big files
# truncated (blocks are freed, inodes are not), everything is removed at the very end, and before
# each identity the script syncs and waits SETTLE seconds for earlier deletions to age out.
settle() {
    sync
    [ "$SETTLE" -eq 0 ] || { echo "=== settling: sync, sleep $SETTLE s (see the comment above settle) ==="; sleep "$SETTLE"; }
}
shrink() {  # frees the data of a finished phase without freeing its inodes (root only)
    [ "$IS_ROOT" -eq 1 ] || return 0
    find "$1" -xdev -type f -size +64k -exec truncate -s 0 {} + 2>/dev/null || true
}

bench_set() {
    local label=$1 user=$2 W=$TMP/set-$1 rootless=
    local asuser=()
    if [ -n "$user" ]; then
        asuser=(runuser -u "$user" -- env -i PATH="$CLEAN_PATH" HOME="$TMP/set-$label/home" USER="$user"
            LOGNAME="$user" LANG=C.UTF-8 HUTCH_IMAGE_HELPER="$HUTCH_IMAGE_HELPER")
        rootless=--rootless
    elif [ "$IS_ROOT" -eq 0 ]; then
        rootless=--rootless
    fi
    mkdir -p "$W/home" "$W/json"
    [ -z "$user" ] || chown -R "$user:" "$W"
    chmod 0755 "$W"
    cd "$W"
    local H="$TMP/bin/hutch"
    local q="${asuser[*]:-}"    # the wrapper as one string, for hyperfine's shell
    local img ref tag P prep hut_cmd skop_cmd

    settle
    for img in debian big; do
        if [ "$img" = debian ]; then ref=$REG/debian:bookworm tag=bookworm; else ref=$REG/bench/big:latest tag=latest; fi
        P=$W/$img
        mkdir -p "$P/runs"
        [ -z "$user" ] || chown -R "$user:" "$P"
        # Every run (pre-flight included) gets a fresh, empty directory, P/cur points to it.
        prep="d=\$(mktemp -d $P/runs/r.XXXXXX) && chmod 0755 \$d ${user:+&& chown $user: \$d} && ln -sfn \$d $P/cur && sync"
        hut_cmd="$q $H --root $P/cur/store pull -q $ref"
        skop_cmd="$q sh -c 'skopeo copy -q --src-tls-verify=false docker://$ref oci:$P/cur/oci:$tag && umoci unpack $rootless --image $P/cur/oci:$tag $P/cur/bundle'"
        hut_cmd=${hut_cmd# } skop_cmd=${skop_cmd# }
        # Pre-flight: each once (also warms the registry's blobs in the page cache).
        eval "$prep"
        if ! eval "$hut_cmd" >"$W/preflight-hutch-$img.log" 2>&1; then
            note "$label: hutch pull $img failed: $(tail -n 3 "$W/preflight-hutch-$img.log" | tr '\n' ' ')"
            continue
        fi
        eval "$prep"
        if ! eval "$skop_cmd" >"$W/preflight-skopeo-$img.log" 2>&1; then
            note "$label: skopeo+umoci $img failed: $(tail -n 3 "$W/preflight-skopeo-$img.log" | tr '\n' ' ')"
            continue
        fi
        # umoci's tree for the run benchmark (the pre-flight's; later runs write the same).
        mv "$P/cur/bundle/rootfs" "$W/tree-$img"
        chmod 0755 "$W/tree-$img"
        echo "=== $label: pull $img (warmup $PULL_WARMUP, runs $PULL_RUNS) ==="
        hyperfine -i --style basic --warmup "$PULL_WARMUP" --runs "$PULL_RUNS" \
            --export-json "$W/json/pull-$img.json" \
            --prepare "$prep" -n "hutch-pull" "$hut_cmd" \
            --prepare "$prep" -n "skopeo+umoci" "$skop_cmd" || note "$label: hyperfine (pull $img) failed"
        [ -s "$W/json/pull-$img.json" ] && { cp "$W/json/pull-$img.json" "$OUT/pull-$img-$label.json"; record "$W/json/pull-$img.json" "$label|pull-$img"; }
        shrink "$P"
    done

    # hutch run of the cached image vs --rootfs of umoci's tree of the same image.
    local names=() cmds=()
    for img in debian big; do
        if [ "$img" = debian ]; then ref=$REG/debian:bookworm; else ref=$REG/bench/big:latest; fi
        [ -d "$W/tree-$img" ] || continue
        if "${asuser[@]}" "$H" --root "$W/run-store" pull -q "$ref" >"$W/run-pull-$img.log" 2>&1 &&
            "${asuser[@]}" "$H" --root "$W/run-store" run --pull never "$ref" sh -c 'test -x /usr/bin/git && test -x /usr/bin/python3' \
                >"$W/run-check-$img.log" 2>&1; then
            names+=("run-image-$img"); cmds+=("$H --root $W/run-store run --pull never $ref true")
        else
            note "$label: hutch run of the pulled $img image failed: $(tail -n 3 "$W/run-pull-$img.log" "$W/run-check-$img.log" | tr '\n' ' ')"
        fi
        if "${asuser[@]}" "$H" --root "$W/run-rootfs" run --rootfs "$W/tree-$img" true >"$W/run-rootfs-$img.log" 2>&1; then
            names+=("run-rootfs-$img"); cmds+=("$H --root $W/run-rootfs run --rootfs $W/tree-$img true")
        else
            note "$label: hutch run --rootfs (umoci's $img tree) failed: $(tail -n 3 "$W/run-rootfs-$img.log" | tr '\n' ' ')"
        fi
    done
    if [ "${#names[@]}" -gt 0 ]; then
        sync
        echo "=== $label: run (hyperfine -N, warmup $RUN_WARMUP, runs $RUN_RUNS) ==="
        local args=(-N -i --style basic --warmup "$RUN_WARMUP" --runs "$RUN_RUNS" --export-json "$W/json/run.json") i
        for i in "${!names[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
        [ -z "$user" ] || chown "$user:" "$W/json"
        "${asuser[@]}" hyperfine "${args[@]}" || note "$label: hyperfine (run) failed"
        [ -s "$W/json/run.json" ] && { cp "$W/json/run.json" "$OUT/run-$label.json"; record "$W/json/run.json" "$label|run"; }
    fi
    cd /
}

for set in "${SETS[@]}"; do
    bench_set "${set%%:*}" "${set#*:}"
done

# ---------------------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
cell() {  # cell KEY -> median in the unit (s or ms), "(!)" when some runs failed, "-" when missing
    local v=${MEDIAN[$1]:-} unit=$2
    if [ -z "$v" ]; then printf '%s' -; return; fi
    if [ "$unit" = s ]; then awk -v v="$v" 'BEGIN { printf "%.2f s", v }'; else awk -v v="$v" 'BEGIN { printf "%.1f ms", v * 1000 }'; fi
    [ "${FAILS[$1]:-0}" -eq 0 ] || printf '(!)'
}
ratio() {
    local a=${MEDIAN[$1]:-} b=${MEDIAN[$2]:-}
    if [ -z "$a" ] || [ -z "$b" ]; then printf -; else awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", a / b }'; fi
}
mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
{
    echo
    echo "hutch pull vs skopeo copy + umoci unpack, and hutch run IMAGE vs --rootfs; medians"
    echo "kernel $(uname -r), $(nproc) CPUs${CPU_MODEL:+ ($CPU_MODEL)}, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "$("$TMP/bin/hutch" --version | head -n 1), $(skopeo --version), umoci $(umoci --version | awk '{print $3}'), $(docker-registry --version | awk '{print $3}' ) registry, $(hyperfine --version)"
    echo "debian: $DEB_LAYERS layer, $(mib "$DEB_BYTES") compressed; big: $BIG_LAYERS layers ($TREE_LAYERS tree + $RAND_LAYERS random), $(mib "$BIG_BYTES") compressed"
    echo "pull: warmup $PULL_WARMUP, $PULL_RUNS runs, each from an empty destination; run: hyperfine -N, warmup $RUN_WARMUP, $RUN_RUNS runs"
    for set in "${SETS[@]}"; do
        label=${set%%:*}
        echo
        printf '%-10s %-8s %16s %16s %10s\n' "$label" image "hutch pull" "skopeo+umoci" speed-up
        for img in debian big; do
            printf '%-10s %-8s %16s %16s %10s\n' pull "$img" "$(cell "$label|pull-$img|hutch-pull" s)" \
                "$(cell "$label|pull-$img|skopeo+umoci" s)" "$(ratio "$label|pull-$img|skopeo+umoci" "$label|pull-$img|hutch-pull")"
        done
        printf '%-10s %-8s %16s %16s %10s\n' "" "" "run IMAGE" "run --rootfs" "rootfs/img"
        for img in debian big; do
            printf '%-10s %-8s %16s %16s %10s\n' "run true" "$img" "$(cell "$label|run|run-image-$img" ms)" \
                "$(cell "$label|run|run-rootfs-$img" ms)" "$(ratio "$label|run|run-rootfs-$img" "$label|run|run-image-$img")"
        done
    done
    echo
    echo "speed-up = skopeo+umoci / hutch pull; rootfs/img = run --rootfs / run IMAGE (above 1: the image is faster)."
    echo "(!) = some measured runs exited non-zero. Raw hyperfine JSON: $OUT"
    if [ -s "$NOTES_FILE" ]; then
        echo "Not measured / problems:"
        sed 's/^/  /' "$NOTES_FILE"
    fi
} | tee "$OUT/summary.txt"
