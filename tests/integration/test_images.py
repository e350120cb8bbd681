"""Image transfer: pull from registries (plain, basic auth, bearer tokens), OCI layouts and
archives, load and save, login and logout, and everything hostile or broken on the way.

The registries are Debian's docker-registry on 127.0.0.1 (see images_fixtures.py); the fixture
images are built here with umoci (from /bin/busybox) or by hand, and pushed with skopeo or with
the Distribution API directly (for images skopeo would refuse to copy).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import HUTCH_BIN, IS_ROOT
from hutchlib import assert_hutch_error, describe, ok, run_in_pty, wait_until
from images_fixtures import (DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LIST, DOCKER_MANIFEST, LAYER_GZIP,
                             LAYER_TAR, LAYER_ZSTD, Layout, Proxy, Pusher, Registry,
                             TokenServer, busybox_layer, gz, gzip_layer, sha256, store_blobs, store_images,
                             store_layers, store_tmp, tar_bytes, ti_chardev, ti_dir, ti_file, ti_hardlink,
                             ti_symlink, zstd)

HELPER_SRC = Path(HUTCH_BIN).resolve().parent / "hutch-image"
BUSYBOX = "/bin/busybox"
USER, PASSWORD = "hutchuser", "s3cret-pass"

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="the image tests start registries and build images as root")


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------
# Module fixtures: registries and images, built once.

@pytest.fixture(scope="module")
def work(world):
    d = Path(tempfile.mkdtemp(prefix="images-", dir=world.dir))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def helper(world):
    """hutch-image, next to the world's hutch (where every test user can run it)."""
    if not HELPER_SRC.is_file():
        pytest.fail(f"no hutch-image next to {HUTCH_BIN} (build it)", pytrace=False)
    dst = Path(world.dir) / "bin" / "hutch-image"
    shutil.copy2(HELPER_SRC, dst)
    dst.chmod(0o755)
    return str(dst)


@pytest.fixture(scope="module")
def reg(work):
    _need("docker-registry", "skopeo", "umoci", "zstd")
    r = Registry(work, "plain")
    yield r
    r.stop()


def skopeo_push(src: str, dest: str, *extra):
    cp = subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", *extra, src, dest],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, describe(cp)


def umoci(*args, cwd=None):
    cp = subprocess.run(["umoci", *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert cp.returncode == 0, describe(cp)
    return cp


def build_multi_layer(work: Path) -> Path:
    """An umoci image of three layers: a busybox base with modes, owners, links; then a layer that
    deletes a file (a whiteout) and adds one; then a hand-made layer that makes a dir opaque."""
    layout = work / "umoci-layout"
    bundle = work / "umoci-bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:multi")
    umoci("unpack", "--image", f"{layout}:multi", str(bundle))
    r = bundle / "rootfs"
    for d in ("bin", "etc", "usr/bin", "home/user", "data", "opq/sub", "tmp"):
        (r / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, r / "bin/busybox")
    (r / "bin/busybox").chmod(0o755)
    (r / "bin/sh").symlink_to("busybox")
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    os.link(r / "etc/passwd", r / "etc/passwd.hardlink")
    (r / "usr/bin/setuid-tool").write_bytes(b"#!/bin/sh\necho suid\n")
    (r / "usr/bin/setuid-tool").chmod(0o4755)
    (r / "home/user/secret").write_text("mine\n")
    (r / "home/user/secret").chmod(0o600)
    os.chown(r / "home/user/secret", 1000, 1000)
    os.chown(r / "home/user", 1000, 1000)
    (r / "home/user").chmod(0o750)
    (r / "tmp").chmod(0o1777)
    (r / "data/keep").write_text("keep\n")
    (r / "data/remove-me").write_text("gone soon\n")
    (r / "opq/a").write_text("a\n")
    (r / "opq/sub/b").write_text("b\n")
    (r / "hello").write_text("hello from layer 1\n")
    (r / "abs-link").symlink_to("/etc/passwd")
    umoci("repack", "--image", f"{layout}:multi", str(bundle))
    shutil.rmtree(bundle)
    # Layer 2: a whiteout, a new file, a changed mode.
    umoci("unpack", "--image", f"{layout}:multi", str(bundle))
    r = bundle / "rootfs"
    (r / "data/remove-me").unlink()
    (r / "data/new").write_text("new in layer 2\n")
    (r / "hello").chmod(0o600)
    umoci("repack", "--image", f"{layout}:multi", str(bundle))
    shutil.rmtree(bundle)
    # Layer 3 (by hand: umoci writes per-file whiteouts, never opaque dirs): opq/ becomes opaque.
    tar = work / "opaque-layer.tar"
    tar.write_bytes(tar_bytes([ti_dir("opq", 0o755), ti_file("opq/.wh..wh..opq", b""),
                               ti_file("opq/c", b"c only\n")]))
    umoci("raw", "add-layer", "--image", f"{layout}:multi", str(tar))
    umoci("config", "--image", f"{layout}:multi", "--config.cmd", "/bin/sh", "--config.env", "PATH=/bin:/usr/bin")
    return layout


def build_platform_index(work: Path) -> Layout:
    lay = Layout(work / "plat-layout")
    amd = lay.image([busybox_layer(), gzip_layer([ti_file("arch", b"amd64\n")])], arch="amd64")
    arm = lay.image([busybox_layer(), gzip_layer([ti_file("arch", b"arm64\n")])], arch="arm64", variant="v8")
    idx = lay.make_index([amd, arm])
    lay.tag(idx, "multi")
    lay.idx = idx
    return lay


@pytest.fixture(scope="module")
def images(reg, work):
    """The registry's fixture images: name → details."""
    out = {}
    layout = build_multi_layer(work)
    skopeo_push(f"oci:{layout}:multi", f"docker://{reg.host}/test/multi:1")
    out["multi"] = {"ref": f"{reg.host}/test/multi:1", "layout": layout}

    plat = build_platform_index(work)
    Pusher(reg.host).layout(plat, plat.idx, "test/plat", "1")
    out["plat"] = {"ref": f"{reg.host}/test/plat:1"}

    lay = Layout(work / "zstd-layout")
    tar = tar_bytes([ti_dir("z"), ti_file("z/file", b"zstd compressed content\n" * 100, 0o640)])
    desc = lay.image([busybox_layer(), (LAYER_ZSTD, zstd(tar), tar)])
    Pusher(reg.host).layout(lay, desc, "test/zstd", "1")
    out["zstd"] = {"ref": f"{reg.host}/test/zstd:1", "layers": desc}
    return out


@pytest.fixture
def hx(h1, helper):
    return prepare(h1, helper)


def prepare(h, helper):
    """Points hutch at the world's hutch-image and at a docker config of the test's own."""
    h.env["HUTCH_IMAGE_HELPER"] = helper
    cfgdir = h.work / "docker"
    cfgdir.mkdir(exist_ok=True)
    if h.mode.switch:
        os.chown(cfgdir, h.mode.uid, h.mode.gid)
    h.env["DOCKER_CONFIG"] = str(cfgdir)
    h.docker_config = cfgdir / "config.json"
    return h


def images_json(h) -> list[dict]:
    return json.loads(ok(h("images", "--format", "json")).stdout)


def find_image(h, repo_tag: str) -> dict | None:
    for img in images_json(h):
        if repo_tag in img.get("RepoTags") or []:
            return img
    return None


def assert_pull_error(cp, *needles: str) -> str:
    """Exit 125 and one error line, the last ('hutch: …', naming each needle); the lines before it
    can only be the pull's own progress (the layers it got to before failing)."""
    assert cp.returncode == 125, "expected exit 125" + describe(cp)
    lines = cp.stderr.splitlines()
    assert lines and lines[-1].startswith("hutch: "), "the last line must be the error" + describe(cp)
    for line in lines[:-1]:
        assert line.startswith(("Pulling ", "Loading ", "layer ")), f"unexpected line {line!r}" + describe(cp)
    for n in needles:
        assert n.lower() in lines[-1].lower(), f"the error should name {n!r}" + describe(cp)
    return lines[-1]


def assert_nothing_stored(h, layer_blob: str | None = None, diff_id: str | None = None):
    assert store_images(h.root) == [], "no image record may be left"
    if layer_blob:
        assert layer_blob not in store_blobs(h.root), "the refused layer's blob must not stay in the store"
    if diff_id:
        assert diff_id not in store_layers(h.root), "the refused layer must not be published"
    assert store_tmp(h.root) == [], f"temporary files left behind: {store_tmp(h.root)}"


# ---------------------------------------------------------------------------------------------
# Pulling.

def test_pull_multi_layer_image(hx, images):
    ref = images["multi"]["ref"]
    cp = ok(hx("pull", ref))
    # Plain progress when stderr is not a terminal.
    assert f"Pulling {ref}" in cp.stderr, describe(cp)
    assert "layer sha256:" in cp.stderr and " done " in cp.stderr, describe(cp)
    assert f"Pulled {ref} (sha256:" in cp.stderr, describe(cp)
    img = find_image(hx, ref)
    assert img, f"{ref} not listed by hutch images: {images_json(hx)}"
    recs = store_images(hx.root)
    assert len(recs) == 1 and len(recs[0]["layers"]) == 3 and len(recs[0]["diff_ids"]) == 3
    assert recs[0]["id"] == img["Id"]
    for d in recs[0]["diff_ids"]:
        assert (hx.root / "layers" / d[7:]).is_dir()
    # Every blob in the store is what its name says.
    for b in store_blobs(hx.root):
        assert sha256((hx.root / "blobs/sha256" / b[7:]).read_bytes()) == b
    assert store_tmp(hx.root) == []
    info = json.loads(ok(hx("image", "inspect", ref)).stdout)[0]
    assert info["Id"] == img["Id"] and info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert info["Config"]["Cmd"] == ["/bin/sh"]
    assert info["RootFS"]["Layers"] == recs[0]["diff_ids"]
    # A second pull finds everything present.
    cp = ok(hx("pull", ref))
    assert "already present" in cp.stderr, describe(cp)
    assert len(store_images(hx.root)) == 1


def test_pull_by_digest(hx, reg, images):
    ok(hx("pull", "-q", images["multi"]["ref"]))
    rec = store_images(hx.root)[0]
    other = prepare_fresh_root(hx)
    by_digest = f"{reg.host}/test/multi@{rec['manifest_digest']}"
    cp = ok(hx("--root", other, "pull", "-q", by_digest, root=False))
    assert cp.stdout.strip() == by_digest
    again = store_images(Path(other))
    assert [(r["id"], r["names"]) for r in again] == [(rec["id"], [by_digest])]
    info = json.loads(ok(hx("--root", other, "image", "inspect", by_digest, root=False)).stdout)[0]
    assert info["Id"] == rec["id"] and info["RepoTags"] == []
    # A digest the registry does not have.
    missing = f"{reg.host}/test/multi@sha256:" + "0" * 64
    assert_hutch_error(hx("--root", other, "pull", missing, root=False), "manifest unknown", missing)


def test_pull_quiet_prints_only_the_name(hx, images):
    ref = images["multi"]["ref"]
    cp = ok(hx("pull", "-q", ref))
    assert cp.stderr == "", describe(cp)
    assert cp.stdout == ref + "\n", describe(cp)


def test_pull_progress_on_a_terminal(hx, images):
    ref = images["multi"]["ref"]
    status, out = run_in_pty(hx.argv("pull", ref), hx.environ(), timeout=120)
    assert status == 0, out
    assert "\x1b[" in out, f"expected in-place redraws on a terminal: {out!r}"
    assert "done" in out and f"Pulled {ref}" in out, out


def test_pull_as_every_user(h, helper, images):
    """The basic pull works rootless too (subordinate ids or only the caller's own)."""
    prepare(h, helper)
    ref = images["multi"]["ref"]
    ok(h("pull", "-q", ref))
    img = find_image(h, ref)
    assert img is not None
    recs = store_images(h.root)
    assert len(recs) == 1 and all((h.root / "layers" / d[7:]).is_dir() for d in recs[0]["diff_ids"])
    assert store_tmp(h.root) == []


# --- the unpacked layers, merged, equal umoci's own unpack ------------------------------------

def _host_id(ranges, inside: int) -> int:
    for i, o, c in ranges:
        if i <= inside < i + c:
            return o + inside - i
    raise AssertionError(f"id {inside} is not mapped by {ranges}")


def _describe(path: Path, st: os.stat_result) -> tuple:
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path), st.st_uid, st.st_gid)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if stat.S_ISREG(st.st_mode):
        return ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, hashlib.sha256(path.read_bytes()).hexdigest())
    return ("other", stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid)


def _walk(root: Path):
    """(relative path, path, lstat) top-down: a directory before what it holds."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            yield str(p.relative_to(root)), p, os.lstat(p)


def merge_layers(layer_dirs: list[Path]) -> dict:
    """What overlayfs would show for these layers (bottom first): whiteouts are 0/0 character
    devices, opaque directories carry user.overlay.opaque=y."""
    tree: dict[str, tuple] = {}

    def drop_under(rel):
        for k in [k for k in tree if k.startswith(rel + "/")]:
            del tree[k]

    for d in layer_dirs:
        for rel, p, st in _walk(d):
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                tree.pop(rel, None)
                drop_under(rel)
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    opaque = os.getxattr(p, "user.overlay.opaque", follow_symlinks=False) == b"y"
                except OSError:
                    opaque = False
                if opaque or (rel in tree and tree[rel][0] != "dir"):
                    drop_under(rel)
            elif rel in tree and tree[rel][0] == "dir":
                drop_under(rel)
            tree[rel] = _describe(p, st)
    return tree


def test_unpacked_layers_match_umoci(hx, images, work):
    ref = images["multi"]["ref"]
    ok(hx("pull", "-q", ref))
    rec = store_images(hx.root)[0]
    got = merge_layers([hx.root / "layers" / d[7:] for d in rec["diff_ids"]])
    bundle = work / "umoci-expected"
    if not bundle.exists():
        umoci("unpack", "--image", f"{images['multi']['layout']}:multi", str(bundle))
    want = {}
    for rel, p, st in _walk(bundle / "rootfs"):
        d = list(_describe(p, st))
        d[2] = _host_id(hx.mode.uid_map, d[2])
        d[3] = _host_id(hx.mode.gid_map, d[3])
        want[rel] = tuple(d)
    assert set(got) == set(want), (f"only in hutch: {sorted(set(got) - set(want))}; "
                                   f"only in umoci: {sorted(set(want) - set(got))}")
    diffs = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not diffs, f"entries differ (hutch, umoci): {diffs}"
    # The facts the fixture was built to exercise.
    assert "data/remove-me" not in got and "data/new" in got
    assert sorted(k for k in got if k.startswith("opq/")) == ["opq/c"]
    assert got["usr/bin/setuid-tool"][1] == 0o4755
    assert got["home/user/secret"][2] == _host_id(hx.mode.uid_map, 1000)
    assert got["abs-link"] == ("link", "/etc/passwd", *got["abs-link"][2:])
    base = hx.root / "layers" / rec["diff_ids"][0][7:]
    assert os.lstat(base / "etc/passwd").st_ino == os.lstat(base / "etc/passwd.hardlink").st_ino


# --- platforms ---------------------------------------------------------------------------------

def _layer_file(h, rel: str) -> str | None:
    rec = store_images(h.root)[0]
    for d in reversed(rec["diff_ids"]):
        p = h.root / "layers" / d[7:] / rel
        if p.exists():
            return p.read_text()
    return None


def test_pull_picks_the_platform(hx, images):
    ref = images["plat"]["ref"]
    ok(hx("pull", "-q", "--platform", "linux/arm64", ref))
    info = json.loads(ok(hx("image", "inspect", ref)).stdout)[0]
    assert info["Architecture"] == "arm64"
    assert _layer_file(hx, "arch") == "arm64\n"


def test_pull_default_platform_is_the_hosts(hx, images):
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
    if arch is None:
        pytest.skip(f"the fixture index has no image for {os.uname().machine}")
    ref = images["plat"]["ref"]
    ok(hx("pull", "-q", ref))
    assert json.loads(ok(hx("image", "inspect", ref)).stdout)[0]["Architecture"] == arch
    assert _layer_file(hx, "arch") == f"{arch}\n"


def test_pull_wrong_platform_lists_the_available_ones(hx, images):
    cp = hx("pull", "--platform", "linux/s390x", images["plat"]["ref"])
    assert_hutch_error(cp, "linux/s390x", "linux/amd64", "linux/arm64/v8")
    assert_nothing_stored(hx)


def test_pull_invalid_platform(hx, images):
    assert_hutch_error(hx("pull", "--platform", "amd64", images["plat"]["ref"]), "invalid platform")


def test_pull_zstd_layer(hx, images):
    ref = images["zstd"]["ref"]
    ok(hx("pull", "-q", ref))
    assert _layer_file(hx, "z/file") == "zstd compressed content\n" * 100
    rec = store_images(hx.root)[0]
    # The blob is stored as served (still zstd), under its digest.
    assert (hx.root / "blobs/sha256" / rec["layers"][1][7:]).read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert sha256((hx.root / "blobs/sha256" / rec["layers"][1][7:]).read_bytes()) == rec["layers"][1]


def test_pull_docker_schema2_manifest_and_list(hx, reg, images, work):
    skopeo_push(f"oci:{images['multi']['layout']}:multi", f"docker://{reg.host}/test/v2s2:1", "--format", "v2s2")
    ok(hx("pull", "-q", f"{reg.host}/test/v2s2:1"))
    manifest = json.loads((hx.root / "blobs/sha256" / store_images(hx.root)[0]["manifest_digest"][7:]).read_text())
    assert manifest["mediaType"] == DOCKER_MANIFEST
    lay = Layout(work / "docker-list-layout")

    def docker_image(arch):
        layer = gzip_layer([ti_file("arch", f"{arch}\n".encode())])
        return lay.image([(DOCKER_LAYER_GZIP, layer[1], layer[2])], arch=arch, config_media_type=DOCKER_CONFIG,
                         manifest_media_type=DOCKER_MANIFEST)

    idx = lay.make_index([docker_image("amd64"), docker_image("arm64")], media_type=DOCKER_LIST)
    Pusher(reg.host).layout(lay, idx, "test/dockerlist", "1")
    other = prepare_fresh_root(hx)
    ok(hx("--root", other, "pull", "-q", "--platform", "linux/arm64", f"{reg.host}/test/dockerlist:1", root=False))
    rec = store_images(Path(other))[0]
    assert (Path(other) / "layers" / rec["diff_ids"][0][7:] / "arch").read_text() == "arm64\n"


def test_https_unless_loopback_or_insecure(hx, reg, images):
    """0.0.0.0 reaches the local registry but is not a loopback name: TLS is required until the
    registry is declared insecure."""
    ref = f"0.0.0.0:{reg.port}/test/multi:1"
    cp = hx("pull", ref)
    assert_hutch_error(cp, f"https://0.0.0.0:{reg.port}/v2/", "--insecure-registry")
    ok(hx("pull", "-q", "--insecure-registry", f"0.0.0.0:{reg.port}", ref))
    assert find_image(hx, ref)


# --- hostile and broken images -------------------------------------------------------------------

# name → (layer entries given the host directory a symlink aims at, what the error must name)
HOSTILE = {
    "traversal": (lambda _: [ti_file("../escaped-by-traversal", b"x")], ".."),
    "symlink-then-write": (lambda target: [ti_symlink("link", str(target)), ti_file("link/pwned", b"x")], "link"),
    "hardlink-escape": (lambda _: [ti_hardlink("hl", "../../../../../../etc/hostname")], "hl"),
    "absolute-hardlink": (lambda _: [ti_hardlink("hl", "/etc/hostname")], "hl"),
}


@pytest.fixture(scope="module")
def escape_dir(work):
    """A host directory hostile layers aim at: nothing may ever appear in it."""
    d = work / "escape-target"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    return d


@pytest.fixture(scope="module")
def hostile_images(reg, work, escape_dir):
    out = {}
    lay = Layout(work / "hostile-layout")
    for name, (entries, _) in HOSTILE.items():
        tar = tar_bytes(entries(escape_dir))
        layer = (LAYER_GZIP, gz(tar), tar)
        desc = lay.image([layer])
        Pusher(reg.host).layout(lay, desc, f"hostile/{name}", "1")
        out[name] = (f"{reg.host}/hostile/{name}:1", sha256(layer[1]), sha256(tar))
    # A blob bigger than its descriptor says (the registry serves all of it).
    tar = tar_bytes([ti_file("big", os.urandom(3 << 20))])
    layer = (LAYER_GZIP, gz(tar), tar)
    desc = lay.image([layer], layer_sizes={0: 1000})
    Pusher(reg.host).layout(lay, desc, "hostile/oversize", "1")
    out["oversize"] = (f"{reg.host}/hostile/oversize:1", sha256(layer[1]), sha256(tar))
    return out


@pytest.mark.parametrize("kind", list(HOSTILE) + ["oversize"])
def test_hostile_layer_is_refused(hx, hostile_images, escape_dir, kind):
    ref, blob, diff_id = hostile_images[kind]
    cp = hx("pull", ref)
    needle = {"oversize": "larger than its descriptor"}.get(kind, HOSTILE.get(kind, (None, ""))[1])
    line = assert_pull_error(cp, needle)
    assert blob in line or kind == "oversize" or "layer" in line, line
    assert_nothing_stored(hx, blob, diff_id)
    assert os.listdir(escape_dir) == []
    assert not (hx.root / "escaped-by-traversal").exists() and not (hx.root / "tmp/escaped-by-traversal").exists()


def test_device_node_in_a_layer_is_never_created(hx, reg, work):
    """A layer's device node (here the host's first disk) must not appear in the store. The
    unpacker skips devices it cannot create (none can be, in a user namespace) and warns naming
    them, rather than refusing the image: old images do ship /dev entries."""
    lay = Layout(work / "device-layout")
    tar = tar_bytes([ti_dir("dev"), ti_chardev("dev/sda", 8, 0), ti_file("ok", b"fine\n")])
    desc = lay.image([(LAYER_GZIP, gz(tar), tar)])
    Pusher(reg.host).layout(lay, desc, "hostile/device-node", "1")
    cp = hx("pull", f"{reg.host}/hostile/device-node:1")
    if cp.returncode != 0:  # refusing is fine too, if it is clean
        assert_pull_error(cp, "device")
        assert_nothing_stored(hx, sha256(gz(tar)), sha256(tar))
        return
    assert "device" in cp.stderr and "/dev/sda" in cp.stderr, describe(cp)
    layer = hx.root / "layers" / sha256(tar)[7:]
    assert (layer / "ok").read_text() == "fine\n"
    assert not (layer / "dev/sda").exists() and not (layer / "dev/sda").is_symlink()


def test_corrupt_blob_in_the_registry_is_refused(hx, reg, work):
    lay = Layout(work / "corrupt-layout")
    tar = tar_bytes([ti_file("payload", os.urandom(64 << 10))])
    layer = (LAYER_GZIP, gz(tar), tar)
    desc = lay.image([layer])
    Pusher(reg.host).layout(lay, desc, "test/corrupt", "1")
    blob = sha256(layer[1])
    f = reg.blob_file(blob)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    f.write_bytes(bytes(data))
    cp = hx("pull", f"{reg.host}/test/corrupt:1")
    assert_pull_error(cp, "digest mismatch", blob)
    assert_nothing_stored(hx, blob, sha256(tar))


def test_manifest_unknown(hx, reg, images):
    cp = hx("pull", f"{reg.host}/test/multi:no-such-tag")
    assert_hutch_error(cp, "manifest unknown", f"{reg.host}/test/multi:no-such-tag")
    assert_nothing_stored(hx)


def test_connection_refused_names_the_url(hx):
    from images_fixtures import free_port
    port = free_port()
    cp = hx("pull", f"127.0.0.1:{port}/nothing/here:1")
    assert_hutch_error(cp, "cannot reach the registry", f"http://127.0.0.1:{port}/v2/nothing/here/manifests/1")
    assert_nothing_stored(hx)


def test_unsupported_media_types_are_refused(hx, work):
    lay = Layout(work / "odd-layout")
    bb = busybox_layer()
    tar = tar_bytes([ti_file("x", b"x")])
    cases = {
        "encrypted": (lay.image([bb, ("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", gz(tar), tar)]),
                      "encrypted layer"),
        "foreign": (lay.image([("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", gz(tar), tar)]),
                    "foreign"),
        "artifact": (lay.image([bb], config_media_type="application/vnd.example.thing.config.v1+json"),
                     "unsupported config media type"),
        "weird-layer": (lay.image([("application/x-something", gz(tar), tar)]), "unsupported layer media type"),
    }
    for tag, (desc, _) in cases.items():
        lay.tag(desc, tag)
    # Docker schema 1 (pre-2017): refused by its media type and by its schemaVersion.
    s1 = json.dumps({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": [], "history": []}).encode()
    lay.tag({"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws", "digest": lay.put(s1),
             "size": len(s1)}, "schema1")
    lay.tag({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": lay.put(s1), "size": len(s1)},
            "schema1-by-content")
    cases["schema1"] = (None, "schema 1")
    cases["schema1-by-content"] = (None, "schema 1")
    for tag, (_, needle) in cases.items():
        cp = hx("pull", f"oci:{lay.path}:{tag}")
        assert_hutch_error(cp, needle)
        assert_nothing_stored(hx)


def test_oci_layout_blob_larger_than_descriptor(hx, work):
    lay = Layout(work / "oversize-layout")
    tar = tar_bytes([ti_file("f", os.urandom(100000))])
    desc = lay.image([(LAYER_GZIP, gz(tar), tar)], layer_sizes={0: 100})
    lay.tag(desc, "big")
    assert_pull_error(hx("pull", f"oci:{lay.path}:big"), "larger than its descriptor")
    assert_nothing_stored(hx, sha256(gz(tar)))


# --- interrupted and concurrent pulls --------------------------------------------------------------

def _big_layer(mib: int):
    tar = tar_bytes([ti_file("big.bin", os.urandom(mib << 20))])
    return (LAYER_GZIP, gz(tar), tar)


def test_kill_during_pull_then_repull(hx, reg, work):
    lay = Layout(work / "slow-layout")
    big = _big_layer(6)
    desc = lay.image([busybox_layer(), big])
    Pusher(reg.host).layout(lay, desc, "test/slow", "1")
    blob = sha256(big[1])
    proxy = Proxy(reg.host)
    try:
        proxy.throttle[blob] = 512 << 10  # 12 s for the big layer
        ref = f"{proxy.host}/test/slow:1"
        p = hx.popen("pull", ref, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert wait_until(lambda: proxy.bytes_ending(blob) > (1 << 20), 60), "the download never started"
            p.send_signal(signal.SIGKILL)
        finally:
            p.wait(30)
        assert store_images(hx.root) == [] and blob not in store_blobs(hx.root)
        assert store_tmp(hx.root), "the killed pull should have left its partial download in tmp/"
        proxy.throttle.clear()
        ok(hx("pull", "-q", ref))
        assert find_image(hx, ref)
        ok(hx("image", "prune"))
        assert store_tmp(hx.root) == [], "the killed pull's partial download must be swept by prune"
        assert find_image(hx, ref), "prune must keep named images"
        for b in store_blobs(hx.root):
            assert sha256((hx.root / "blobs/sha256" / b[7:]).read_bytes()) == b
        rec = store_images(hx.root)[0]
        assert all((hx.root / "layers" / d[7:]).is_dir() for d in rec["diff_ids"])
    finally:
        proxy.stop()


def test_concurrent_pulls_fetch_a_shared_layer_once(hx, reg, work):
    lay = Layout(work / "shared-layout")
    shared = _big_layer(3)
    a = lay.image([shared, gzip_layer([ti_file("which", b"a\n")])])
    b = lay.image([shared, gzip_layer([ti_file("which", b"b\n")])])
    Pusher(reg.host).layout(lay, a, "test/share-a", "1")
    Pusher(reg.host).layout(lay, b, "test/share-b", "1")
    blob = sha256(shared[1])
    proxy = Proxy(reg.host)
    try:
        proxy.throttle[blob] = 1 << 20  # ~3 s, so the two pulls overlap
        procs = [hx.popen("pull", f"{proxy.host}/test/share-{x}:1", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) for x in "ab"]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, f"exit {p.returncode}: {err}"
        assert proxy.gets_ending(blob) == 1, f"the shared blob was fetched {proxy.gets_ending(blob)} times"
        assert find_image(hx, f"{proxy.host}/test/share-a:1") and find_image(hx, f"{proxy.host}/test/share-b:1")
        assert store_tmp(hx.root) == []
    finally:
        proxy.stop()


def test_blob_larger_than_descriptor_is_cut_at_once(hx, reg, work):
    """Without a Content-Length to judge by, the download stops as soon as the data goes past
    the descriptor's size, not after all of it arrived."""
    lay = Layout(work / "stream-oversize")
    big = _big_layer(4)
    desc = lay.image([big], layer_sizes={0: 50000})
    Pusher(reg.host).layout(lay, desc, "test/stream-oversize", "1")
    blob = sha256(big[1])
    proxy = Proxy(reg.host)
    try:
        proxy.throttle[blob] = 2 << 20  # 2 s for all of it
        proxy.no_length.add(blob)
        cp = hx("pull", f"{proxy.host}/test/stream-oversize:1")
        assert_pull_error(cp, "larger than its descriptor", blob)
        assert_nothing_stored(hx, blob)
        time.sleep(0.5)  # let the proxy notice the closed connection
        assert proxy.bytes_ending(blob) < (1 << 20), f"{proxy.bytes_ending(blob)} bytes were sent before the abort"
    finally:
        proxy.stop()


# ---------------------------------------------------------------------------------------------
# Local sources, load and save.

def test_pull_from_oci_layout_and_archive(hx, images, work):
    layout = images["multi"]["layout"]
    ok(hx("pull", "-q", images["multi"]["ref"]))
    want = store_images(hx.root)[0]["id"]
    cp = ok(hx("pull", "-q", f"oci:{layout}:multi"))
    assert cp.stdout.strip() == "localhost/umoci-layout:multi", describe(cp)
    assert find_image(hx, "localhost/umoci-layout:multi")["Id"] == want
    archive = work / "multi-oci.tar"
    if not archive.exists():
        skopeo_push(f"oci:{layout}:multi", f"oci-archive:{archive}:multi")
    ok(hx("pull", "-q", f"oci-archive:{archive}:multi"))
    assert find_image(hx, "localhost/multi-oci:multi")["Id"] == want
    assert store_tmp(hx.root) == [], "the extracted archive must be removed"
    assert_hutch_error(hx("pull", f"oci:{layout}:nope"), "no image tagged 'nope'", "multi")


def test_save_is_read_by_skopeo_and_load(hx, images, work):
    ref = images["multi"]["ref"]
    ok(hx("pull", "-q", ref))
    rec = store_images(hx.root)[0]
    out = hx.work / "saved.tar"
    ok(hx("save", "-o", out, ref))
    with tarfile.open(out) as t:
        names = t.getnames()
        manifest = json.load(t.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [ref]
    assert manifest[0]["Config"] == rec["id"][7:] + ".json" and manifest[0]["Config"] in names
    assert len(manifest[0]["Layers"]) == 3 and all(l in names for l in manifest[0]["Layers"])
    cp = subprocess.run(["skopeo", "inspect", f"docker-archive:{out}"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, describe(cp)
    info = json.loads(cp.stdout)
    assert info["Architecture"] == "amd64" and len(info["Layers"]) == 3, info
    cp = subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{out}"], capture_output=True, text=True)
    assert cp.returncode == 0 and json.loads(cp.stdout)["rootfs"]["diff_ids"] == rec["diff_ids"], describe(cp)
    # And back into another store.
    other = prepare_fresh_root(hx)
    cp = ok(hx("--root", other, "load", "-i", out, root=False))
    assert f"Loaded image: {ref}" in cp.stdout, describe(cp)
    again = store_images(Path(other))
    assert [i["id"] for i in again] == [rec["id"]] and again[0]["diff_ids"] == rec["diff_ids"]


def test_save_several_images(hx, images):
    ok(hx("pull", "-q", images["multi"]["ref"]))
    ok(hx("pull", "-q", images["zstd"]["ref"]))
    ids = {r["names"][0]: r["id"] for r in store_images(hx.root)}
    out = hx.work / "two.tar"
    ok(hx("save", "-o", out, images["multi"]["ref"], ids[images["zstd"]["ref"]]))
    with tarfile.open(out) as t:
        manifest = json.load(t.extractfile("manifest.json"))
    assert [m["RepoTags"] for m in manifest] == [[images["multi"]["ref"]], None]
    other = prepare_fresh_root(hx)
    cp = ok(hx("--root", other, "load", "-q", "-i", out, root=False))
    assert f"Loaded image: {images['multi']['ref']}" in cp.stdout
    assert f"Loaded image ID: {ids[images['zstd']['ref']]}" in cp.stdout, describe(cp)
    assert sorted(r["id"] for r in store_images(Path(other))) == sorted(ids.values())
    assert_hutch_error(hx("save", "-o", hx.work / "x.tar", "no-such-image:1"), "no such image")
    assert not (hx.work / "x.tar").exists()


def prepare_fresh_root(h) -> str:
    d = h.dir / f"root-{time.monotonic_ns()}"
    d.mkdir(mode=0o755)
    if h.mode.switch:
        os.chown(d, h.mode.uid, h.mode.gid)
    return str(d)


def test_load_skopeo_docker_archive(hx, images, work):
    archive = work / "skopeo-docker.tar"
    if not archive.exists():
        cp = subprocess.run(["skopeo", "copy", "-q", f"oci:{images['multi']['layout']}:multi",
                             f"docker-archive:{archive}:example.com/team/multi:2"], capture_output=True, text=True)
        assert cp.returncode == 0, describe(cp)
    cp = ok(hx("load", "-i", archive))
    assert "Loaded image: example.com/team/multi:2" in cp.stdout, describe(cp)
    img = find_image(hx, "example.com/team/multi:2")
    assert img, images_json(hx)
    cfg = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{archive}"],
                                    capture_output=True, text=True, check=True).stdout)
    assert json.loads(ok(hx("image", "inspect", img["Id"])).stdout)[0]["RootFS"]["Layers"] == cfg["rootfs"]["diff_ids"]
    # The same archive through the docker-archive: transport.
    other = prepare_fresh_root(hx)
    ok(hx("--root", other, "pull", "-q", f"docker-archive:{archive}", root=False))
    assert [i["names"] for i in store_images(Path(other))] == [["example.com/team/multi:2"]]
    assert store_tmp(hx.root) == [] and store_tmp(Path(other)) == []


def _docker_archive(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info, body = ti_file(name, data)
            t.addfile(info, io.BytesIO(body))
        for name, target in (symlinks or {}).items():
            t.addfile(ti_symlink(name, target))


def test_load_legacy_and_new_docker_save_formats(hx, work):
    bb_tar = busybox_layer()[2]
    top_a = tar_bytes([ti_file("who", b"a\n")])
    top_b = tar_bytes([ti_file("who", b"b\n")])

    def config(layers):
        return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                           "rootfs": {"type": "layers", "diff_ids": [sha256(l) for l in layers]}}).encode()

    ca, cb = config([bb_tar, top_a]), config([bb_tar, top_b])
    # Legacy: <id>/layer.tar (uncompressed), the shared one a symlink into another image's dir.
    legacy = work / "legacy-save.tar"
    _docker_archive(legacy, {
        "base/layer.tar": bb_tar, "a/layer.tar": top_a, "b/layer.tar": top_b,
        sha256(ca)[7:] + ".json": ca, sha256(cb)[7:] + ".json": cb,
        "manifest.json": json.dumps([
            {"Config": sha256(ca)[7:] + ".json", "RepoTags": ["legacy/a:1"], "Layers": ["base/layer.tar", "a/layer.tar"]},
            {"Config": sha256(cb)[7:] + ".json", "RepoTags": ["legacy/b:1"],
             "Layers": ["b2/layer.tar", "b/layer.tar"]}]).encode(),
    }, symlinks={"b2/layer.tar": "../base/layer.tar"})
    cp = ok(hx("load", "-i", legacy))
    assert "Loaded image: legacy/a:1" in cp.stdout and "Loaded image: legacy/b:1" in cp.stdout, describe(cp)
    assert find_image(hx, "legacy/a:1")["Id"] == sha256(ca)
    assert find_image(hx, "legacy/b:1")["Id"] == sha256(cb)
    # One image of it through the docker-archive: transport, by tag or by position.
    for pick, want in ((":legacy/a:1", sha256(ca)), (":@1", sha256(cb))):
        other = prepare_fresh_root(hx)
        ok(hx("--root", other, "pull", "-q", f"docker-archive:{legacy}{pick}", root=False))
        assert [r["id"] for r in store_images(Path(other))] == [want]
    assert_hutch_error(hx("pull", f"docker-archive:{legacy}"), "holds 2 images", "legacy/a:1")
    # Docker 25+: an OCI layout whose manifest.json points into blobs/.
    newfmt = work / "new-save.tar"
    lay = Layout(work / "new-save-layout")
    desc = lay.image([(LAYER_TAR, bb_tar, bb_tar), (LAYER_TAR, top_a, top_a)])
    lay.tag(desc, "new:1")
    man = json.loads(lay.read(desc["digest"]))
    files = {"oci-layout": (lay.path / "oci-layout").read_bytes(), "index.json": (lay.path / "index.json").read_bytes()}
    for f in (lay.path / "blobs/sha256").iterdir():
        files[f"blobs/sha256/{f.name}"] = f.read_bytes()
    files["manifest.json"] = json.dumps([{"Config": "blobs/sha256/" + man["config"]["digest"][7:],
                                          "RepoTags": ["newfmt:1"],
                                          "Layers": ["blobs/sha256/" + l["digest"][7:] for l in man["layers"]]}]).encode()
    _docker_archive(newfmt, files)
    other = prepare_fresh_root(hx)
    cp = ok(hx("--root", other, "load", "-i", newfmt, root=False))
    assert "Loaded image: newfmt:1" in cp.stdout, describe(cp)
    assert store_images(Path(other))[0]["id"] == man["config"]["digest"]
    assert store_tmp(hx.root) == []


def test_load_refuses_a_hostile_archive(hx, work):
    bad = work / "hostile-archive.tar"
    _docker_archive(bad, {"manifest.json": b"[]", "../outside": b"x"})
    cp = hx("load", "-i", bad)
    assert_hutch_error(cp, "..")
    assert not (hx.root / "outside").exists() and not (hx.root / "tmp" / "outside").exists()
    assert_nothing_stored(hx)
    bad2 = work / "hostile-archive2.tar"
    _docker_archive(bad2, {"manifest.json": json.dumps([{"Config": "../../etc/hostname", "Layers": []}]).encode()})
    assert_hutch_error(hx("load", "-i", bad2), "..")
    assert_nothing_stored(hx)


# ---------------------------------------------------------------------------------------------
# Authentication.

@pytest.fixture(scope="module")
def basic_reg(work, reg, images):
    htpasswd = work / "htpasswd"
    cp = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True)
    htpasswd.write_text(cp.stdout)
    r = Registry(work, "basic", auth={"htpasswd": {"realm": "hutch-test", "path": str(htpasswd)}})
    skopeo_push(f"oci:{images['multi']['layout']}:multi", f"docker://{r.host}/private/multi:1",
                f"--dest-creds={USER}:{PASSWORD}")
    yield r
    r.stop()


def test_basic_auth_login_pull_logout(hx, basic_reg):
    ref = f"{basic_reg.host}/private/multi:1"
    assert_hutch_error(hx("pull", ref), "unauthorized", f"hutch login {basic_reg.host}")
    assert_nothing_stored(hx)
    # Other settings in the docker config survive login and logout.
    hx.docker_config.write_text(json.dumps({"psFormat": "table {{.ID}}",
                                            "auths": {"other.example.com": {"auth": "eDp5"}}}))
    assert_hutch_error(hx("login", "-u", USER, "--password-stdin", basic_reg.host, input="wrong\n"), "unauthorized")
    assert basic_reg.host not in json.loads(hx.docker_config.read_text())["auths"]
    cp = ok(hx("login", "-u", USER, "--password-stdin", basic_reg.host, input=PASSWORD + "\n"))
    assert "Login Succeeded" in cp.stdout
    cfg = json.loads(hx.docker_config.read_text())
    assert base64.b64decode(cfg["auths"][basic_reg.host]["auth"]).decode() == f"{USER}:{PASSWORD}"
    assert cfg["psFormat"] == "table {{.ID}}" and "other.example.com" in cfg["auths"]
    assert stat.S_IMODE(os.stat(hx.docker_config).st_mode) == 0o600
    ok(hx("pull", "-q", ref))
    assert find_image(hx, ref)
    ok(hx("logout", basic_reg.host))
    cfg = json.loads(hx.docker_config.read_text())
    assert basic_reg.host not in cfg["auths"] and "other.example.com" in cfg["auths"] and "psFormat" in cfg
    other = prepare_fresh_root(hx)
    assert_hutch_error(hx("--root", other, "pull", ref, root=False), "unauthorized")


def test_credentials_under_an_https_key_are_found(hx, basic_reg):
    hx.docker_config.write_text(json.dumps({"auths": {f"https://{basic_reg.host}": {
        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    ok(hx("pull", "-q", f"{basic_reg.host}/private/multi:1"))


@pytest.fixture(scope="module")
def token_reg(work, images):
    ts = TokenServer(work, USER, PASSWORD)
    r = Registry(work, "token", auth=ts.registry_auth())
    skopeo_push(f"oci:{images['multi']['layout']}:multi", f"docker://{r.host}/private/multi:1",
                f"--dest-creds={USER}:{PASSWORD}")
    yield r, ts
    r.stop()
    ts.stop()


def test_bearer_token_auth(hx, token_reg):
    reg_, ts = token_reg
    ref = f"{reg_.host}/private/multi:1"
    assert_hutch_error(hx("pull", ref), "unauthorized", f"hutch login {reg_.host}")
    assert_nothing_stored(hx)
    assert_hutch_error(hx("login", "-u", USER, "-p", "nope", reg_.host), "unauthorized")
    ok(hx("login", "-u", USER, "-p", PASSWORD, reg_.host))
    before = len(ts.requests)
    ok(hx("pull", "-q", ref))
    assert find_image(hx, ref)
    issued = ts.requests[before:]
    assert any(r["ok"] and r["user"] == USER and any("repository:private/multi:pull" in s for s in r["scope"])
               for r in issued), issued


def _gzip_tar(path, entries):
    """A gzip'd tar of (name, size, chunk) files, each `size` bytes of `chunk` repeated, streamed."""
    class Repeat(io.RawIOBase):
        def __init__(self, n, chunk):
            self.left, self.chunk, self.at = n, chunk, 0

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            rotated = self.chunk[self.at:] + self.chunk[:self.at]
            b[:n] = (rotated * (n // len(rotated) + 1))[:n]
            self.at = (self.at + n) % len(self.chunk)
            self.left -= n
            return n

    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, size, chunk in entries:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BufferedReader(Repeat(size, chunk)))


def test_load_refuses_a_compressed_archive_that_is_a_decompression_bomb(hx, work):
    # 400 MiB of zeros gzip'd to some 400 kB: more than 1000 times its size, past 256 MiB.
    bomb = work / "bomb.tar.gz"
    _gzip_tar(bomb, [("zeros", 400 << 20, b"\0")])
    assert bomb.stat().st_size * 1000 < 400 << 20
    cp = hx("load", "-i", bomb, timeout=120)
    assert_hutch_error(cp, "decompression bomb")
    assert_nothing_stored(hx)
    # The same zeros followed by 2 MiB that do not compress: some 70 times its size over all,
    # though its first 300 MiB came out of far less. Not a bomb (it is no docker-save archive).
    mixed = work / "mixed.tar.gz"
    _gzip_tar(mixed, [("zeros", 400 << 20, b"\0"), ("noise", 2 << 20, os.urandom(2 << 20))])
    assert mixed.stat().st_size > 2 << 20
    cp = hx("load", "-i", mixed, timeout=120)
    assert cp.returncode != 0 and "decompression bomb" not in cp.stderr, describe(cp)
    assert_nothing_stored(hx)
