"""The sandbox's filesystem: a throwaway layer over the base, binds, --read-only and --tmpfs."""
import os
import re
import shlex
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import _copy_tree
from hutchlib import ROOTFS_SRC, assert_hutch_error, describe, guarded, kill_quietly, ok, wait_until


def test_writes_never_reach_the_base(h):
    tag = uuid.uuid4().hex[:12]
    script = (f"echo x > /top-{tag} && mkdir /dir-{tag} && echo y > /etc/etc-{tag} && echo z >> /etc/passwd && "
              f"rm /etc/hostname && rm -r /usr && echo DONE")
    cp = ok(guarded(h.sh(h.guard + script)))
    assert "DONE" in cp.stdout
    layers = sorted((h.root / "layers").iterdir())  # the busybox image's one layer in the store
    assert len(layers) == 1, layers
    for tree in (layers[0], Path(h.world.rootfs), Path(ROOTFS_SRC)):
        assert tree.is_dir(), tree
        assert not (tree / f"top-{tag}").exists(), f"write reached {tree}"
        assert not (tree / f"dir-{tag}").exists(), f"mkdir reached {tree}"
        assert not (tree / "etc" / f"etc-{tag}").exists(), f"write reached {tree}/etc"
        assert (tree / "etc" / "hostname").exists(), f"rm reached {tree}/etc"
        assert (tree / "usr" / "bin").is_dir(), f"rm -r reached {tree}/usr"
        assert "z" not in (tree / "etc" / "passwd").read_text().split(), f"append reached {tree}/etc/passwd"
    # The next sandbox starts from the untouched base again.
    cp = ok(h.sh(f"ls /; test -e /top-{tag} && echo LEAKED; test -e /etc/hostname && echo HAVE-HOSTNAME; "
                 "tail -n 1 /etc/passwd"))
    assert "LEAKED" not in cp.stdout and "HAVE-HOSTNAME" in cp.stdout, cp.stdout
    assert cp.stdout.strip().endswith("nobody:x:65534:65534:nobody:/nonexistent:/bin/false"), cp.stdout
    assert h.sandbox_dirs() == []


def test_read_only_bind(h):
    d = h.host_dir("ro", {"f": "host data\n"})
    before = sorted(os.listdir(d))
    script = ("cat /data/f; "
              "if echo more >> /data/f; then echo WROTE; else echo REFUSED-APPEND; fi; "
              "if touch /data/new; then echo CREATED; else echo REFUSED-CREATE; fi; "
              "grep ' /data ' /proc/self/mountinfo")
    cp = ok(h.sh("exec 2>&1; " + script, "-v", f"{d}:/data:ro"))
    assert "host data" in cp.stdout, cp.stdout
    assert "REFUSED-APPEND" in cp.stdout and "REFUSED-CREATE" in cp.stdout, cp.stdout
    assert "Read-only file system" in cp.stdout, cp.stdout
    assert (d / "f").read_text() == "host data\n"
    assert sorted(os.listdir(d)) == before


def test_read_write_bind(h):
    d = h.host_dir("rw", {"in": "from host\n"})
    cp = ok(h.sh("cat /data/in; echo from sandbox > /data/out; mkdir /data/sub; echo deep > /data/sub/f; echo OK",
                 "-v", f"{d}:/data"))
    assert "from host" in cp.stdout and "OK" in cp.stdout, cp.stdout
    assert (d / "out").read_text() == "from sandbox\n"
    assert (d / "sub" / "f").read_text() == "deep\n"
    # Files the sandbox's root makes belong to the sandbox's root on the host.
    assert (d / "out").stat().st_uid == h.mode.sandbox_root_uid


def test_explicit_rw_bind_and_file_bind(h):
    d = h.host_dir("rw2", {"conf": "setting=1\n"})
    cp = ok(h.sh("cat /etc/app.conf; echo x > /w/new && echo WROTE",
                 "-v", f"{d / 'conf'}:/etc/app.conf:ro", "-v", f"{d}:/w:rw"))
    assert "setting=1" in cp.stdout and "WROTE" in cp.stdout, cp.stdout
    assert (d / "new").read_text() == "x\n"


def test_docker_bind_options_are_understood(h):
    # What scripts written for docker and podman pass: SELinux labels (nothing to relabel here,
    # as for docker on a host without SELinux), macOS consistency modes, a private propagation.
    d = h.host_dir("opts", {"f": "opts\n"})
    for options in ("z", "Z", "cached", "rw,Z", "rprivate"):
        cp = ok(h.sh("cat /data/f; echo w > /data/w && echo WROTE", "-v", f"{d}:/data:{options}"))
        assert cp.stdout == "opts\nWROTE\n", f"-v ...:{options}: {cp.stdout!r}"
    cp = ok(h.sh("exec 2>&1; if echo more >> /data/f; then echo WROTE; else echo REFUSED; fi",
                 "-v", f"{d}:/data:ro,z"))
    assert "REFUSED" in cp.stdout and "Read-only file system" in cp.stdout, cp.stdout
    assert (d / "f").read_text() == "opts\n"


def test_mounts_beneath_a_bind_stay_in_the_sandbox(h):
    # On systemd hosts / is a shared mount. A bind cloned from it must not stay its peer: the
    # sandbox's --tmpfs beneath the bind's destination would appear on the host, for good. The
    # shared mount lives in a mount namespace of the test's own.
    if os.geteuid() != 0:
        pytest.skip("making a mount namespace with a shared mount in it needs root")
    src = h.work / "shared"
    src.mkdir()
    run = shlex.join(h.argv("run", "-v", f"{src}:/mnt:ro", "--tmpfs", "/mnt/cache", "--",
                            "sh", "-c", "grep -c ' /mnt ro,' /proc/self/mountinfo"))
    script = (f"mount -t tmpfs hutch-test {src} && mkdir {src}/cache && mount --make-shared {src} || exit 99\n"
              f"{run} || exit 98\n"
              f"grep -c ' {src}/cache ' /proc/self/mountinfo\n")
    cp = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                        capture_output=True, text=True, timeout=60, env=h.environ(None))
    assert cp.stdout.split() == ["1", "0"], f"exit {cp.returncode}\n{cp.stdout}{cp.stderr}"


def test_bind_into_missing_directory(h):
    d = h.host_dir("deep", {"f": "deep bind\n"})
    cp = ok(h("run", "-v", f"{d}:/a/b/c:ro", "--", "cat", "/a/b/c/f"))
    assert cp.stdout == "deep bind\n"
    # The mount point was made in the sandbox's layer, not in the base.
    assert not any((layer / "a").exists() for layer in (h.root / "layers").iterdir())


def test_read_only_root_with_tmpfs(h):
    script = ("if touch /x; then echo CREATED-ROOT; fi; "
              "if touch /tmp/x; then echo CREATED-TMP; fi; "
              "touch /scratch/y && echo > /scratch/z && echo SCRATCH-OK; "
              "grep ' /scratch ' /proc/self/mountinfo")
    cp = ok(guarded(h.sh("exec 2>&1; " + h.guard + script, "--read-only", "--tmpfs", "/scratch")))
    assert "CREATED-ROOT" not in cp.stdout and "CREATED-TMP" not in cp.stdout, cp.stdout
    assert "Read-only file system" in cp.stdout, cp.stdout
    assert "SCRATCH-OK" in cp.stdout, cp.stdout
    assert " - tmpfs " in cp.stdout, cp.stdout


def test_tmpfs_without_read_only(h):
    cp = ok(guarded(h.sh(h.guard + "echo hi > /cache/f && cat /cache/f; grep ' /cache ' /proc/self/mountinfo",
                         "--tmpfs", "/cache")))
    assert cp.stdout.startswith("hi\n") and " - tmpfs " in cp.stdout, cp.stdout


def test_tmpfs_takes_dockers_options(h):
    # docker's own example: mount flags and tmpfs options in one list.
    script = ("grep ' /run/t ' /proc/self/mountinfo; cp /bin/busybox /run/t/b; /run/t/b true; echo exec=$?; "
              "stat -c %a /run/t")
    cp = ok(guarded(h.sh("exec 2>&1; " + h.guard + script, "--tmpfs", "/run/t:rw,noexec,nosuid,size=65536k")))
    mountinfo = cp.stdout.splitlines()[0]
    assert "noexec" in mountinfo.split()[5] and "size=65536k" in mountinfo, cp.stdout
    assert "exec=126" in cp.stdout and cp.stdout.endswith("1777\n"), cp.stdout
    cp = ok(h.sh("exec 2>&1; if touch /ro/f; then echo CREATED; fi; stat -c %a /ro", "--tmpfs", "/ro:ro,mode=755"))
    assert "Read-only file system" in cp.stdout and "CREATED" not in cp.stdout and cp.stdout.endswith("755\n"), \
        cp.stdout
    assert_hutch_error(h("run", "--tmpfs", "/x:bogus=1", "--", "true"), "--tmpfs", "bogus=1")


def test_layer_is_removed_after_run(h):
    cp = ok(guarded(h.sh(h.guard + "dd if=/dev/zero of=/big bs=1024 count=256 2>/dev/null; mkdir -p /a/b/c; touch /a/b/c/d; "
                 "chmod 000 /a/b; echo DONE", "--name", "layered")))
    assert "DONE" in cp.stdout
    assert not (h.root / "sandboxes" / "layered").exists()
    assert h.sandbox_dirs() == []
    assert h.state_files() == []



def _root_is_volatile(mountinfo: str) -> bool:
    """Whether the mount at / in a /proc/self/mountinfo text is a volatile overlay ("volatile",
    which newer kernels show as "fsync=volatile")."""
    line = [l for l in mountinfo.splitlines() if l.split()[4] == "/"][0]
    options = set(line.split(" - ", 1)[1].split()[2].split(","))
    return bool(options & {"volatile", "fsync=volatile"})


def test_a_runs_layer_is_volatile_and_a_persistent_sandboxs_is_not(h):
    # A run's writable layer is deleted at its end: mounted volatile, the overlay does not sync the
    # whole filesystem under it when it goes (podman does the same for --rm). A persistent
    # sandbox's layer outlives its init, and keeps overlayfs' syncs.
    cp = ok(h("run", "--name", "vol", "--", "cat", "/proc/self/mountinfo"))
    assert _root_is_volatile(cp.stdout), cp.stdout
    assert h.sandbox_dirs() == []  # with the marker a volatile mount leaves in its work dir
    ok(h("create", "--name", "kept"))
    try:
        cp = ok(h("exec", "kept", "--", "cat", "/proc/self/mountinfo"))
        assert not _root_is_volatile(cp.stdout), cp.stdout
    finally:
        ok(h("rm", "-f", "kept"))
    assert h.sandbox_dirs() == []


def test_dev_proc_and_sys_layout(h):
    """/dev holds the device set, a private devpts, /dev/shm and /dev/mqueue; masked paths are
    empty, read-only paths and /sys are mounted read-only. Only reads and access(2) checks."""
    script = (
        h.guard +
        "for d in null zero full random urandom tty; do test -c /dev/$d && echo DEV-$d; done; "
        "test -c /dev/pts/ptmx && echo PTMX; "
        "stat -c 'SHM %a' /dev/shm; "
        "echo data > /dev/shm/f && cat /dev/shm/f; "
        "cp /bin/busybox /dev/shm/bb && chmod 755 /dev/shm/bb && "
        "{ /dev/shm/bb true 2>/dev/null && echo SHM-EXEC || echo SHM-NOEXEC; }; "
        "test -r /proc/kcore && echo KCORE-$(wc -c < /proc/kcore); "
        "echo TIMER_LIST-$(wc -c < /proc/timer_list); "
        "test -e /proc/keys && echo KEYS-$(wc -c < /proc/keys); "
        "test -d /proc/acpi && echo ACPI-$(ls -A /proc/acpi | wc -l); "
        "test -e /proc/sysrq-trigger && { ( exec 3>>/proc/sysrq-trigger ) 2>/dev/null && echo SYSRQ-WRITABLE || echo SYSRQ-RO; }; "
        "echo FIRMWARE-$(ls -A /sys/firmware | wc -l); "
        "for p in /proc/sys /proc/bus /proc/fs /proc/irq /sys; do "
        "  [ -e $p ] || continue; "
        "  awk -v p=$p '$5 == p { split($6, o, \",\"); print \"MOUNT \" p \" \" o[1] }' /proc/self/mountinfo; done; "
        # Opened for appending and closed at once: refused on a read-only mount, and nothing
        # is written even if it were not (busybox's test -w trusts root blindly).
        "( exec 3>>/proc/sys/net/ipv4/ip_forward ) 2>/dev/null && echo PROC-SYS-WRITABLE; "
        # The filesystem type is the field after the "-" that ends the optional fields.
        "awk '$5 == \"/dev/pts\" || $5 == \"/dev/mqueue\" { for (i = 7; $i != \"-\"; i++) ; "
        "print \"FS \" $5 \" \" $(i + 1) }' /proc/self/mountinfo; "
        "awk '$5 == \"/dev/pts\"' /proc/self/mountinfo"
    )
    cp = ok(guarded(h.sh(script)))
    out = cp.stdout
    for d in ("null", "zero", "full", "random", "urandom", "tty"):
        assert f"DEV-{d}" in out, out
    assert "PTMX" in out and "SHM 1777" in out and "data" in out, out
    assert "SHM-NOEXEC" in out, out  # like Docker's /dev/shm: noexec
    assert "KCORE-" not in out or "KCORE-0" in out, out  # masked by /dev/null where it exists
    assert "TIMER_LIST-0" in out and "FIRMWARE-0" in out, out
    # Masked where the host has them: /proc/keys would list the host's keys, /proc/acpi its tables.
    if os.path.exists("/proc/keys"):
        assert "KEYS-0" in out, out
    if os.path.isdir("/proc/acpi"):
        assert "ACPI-0" in out, out
    if os.path.exists("/proc/sysrq-trigger"):
        assert "SYSRQ-RO" in out, out
    for p in ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq", "/sys"):
        if f"MOUNT {p} " in out:
            assert f"MOUNT {p} ro" in out, out
    assert "MOUNT /proc/sys ro" in out and "MOUNT /sys ro" in out, out
    assert "PROC-SYS-WRITABLE" not in out, out
    assert "FS /dev/pts devpts" in out and "FS /dev/mqueue mqueue" in out, out
    # A devpts of its own, not the host's: ptys opened inside are not the host's ptys.
    pts = [l for l in out.splitlines() if " /dev/pts " in l and l[0].isdigit()]
    assert pts and "ptmxmode=666" in pts[0], out


def _root_fstype(mountinfo: str) -> str:
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":
            return fields[fields.index("-") + 1]
    return ""


def test_read_only_root_of_one_layer_is_a_bind_without_a_writable_layer(h):
    """--read-only over one layer with every mount point present: the layer itself, bound
    read-only, and no writable layer on the host (the sandbox's directory, which reserves its
    name, stays empty: the empty upper/ and work/ of the spare it was made from go while it
    runs)."""
    ok(h("run", "--", "true"))  # makes the spare
    [spare] = [n for n in os.listdir(h.root / "sandboxes") if n.startswith(".spare-")]
    spare_ino = os.stat(h.root / "sandboxes" / spare).st_ino
    p = h.popen("run", "-i", "--read-only", "--name", "robind", "--", "sh", "-c",
                "exec 2>&1; " + h.guard + "if touch /x; then echo CREATED-ROOT; fi; "
                "cat /proc/self/mountinfo; echo READY; read line", stdout=subprocess.PIPE,
                stdin=subprocess.PIPE, text=True)
    try:
        out = ""
        while "READY" not in out:
            line = p.stdout.readline()
            assert line, out
            out += line
        assert h.sandbox_dirs() == ["robind"], h.sandbox_dirs()  # while it runs
        robind = h.root / "sandboxes" / "robind"
        assert os.stat(robind).st_ino == spare_ino
        assert wait_until(lambda: os.listdir(robind) == [], 10), os.listdir(robind)
        p.stdin.write("done\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0
    finally:
        kill_quietly(p)
    guarded(subprocess.CompletedProcess(p.args, 0, out, ""))
    assert "CREATED-ROOT" not in out and "Read-only file system" in out, out
    assert _root_fstype(out) not in ("", "overlay"), out


def test_read_only_root_that_needs_a_mount_point_uses_the_overlay(h):
    d = h.host_dir("src", {"f": "data\n"})
    cp = ok(guarded(h.sh("exec 2>&1; " + h.guard + "cat /newdir/f; if touch /x; then echo CREATED-ROOT; fi; "
                         "cat /proc/self/mountinfo", "--read-only", "-v", f"{d}:/newdir:ro")))
    assert "data" in cp.stdout and "CREATED-ROOT" not in cp.stdout, cp.stdout
    assert _root_fstype(cp.stdout) == "overlay", cp.stdout


def test_read_only_root_that_may_be_remounted_uses_the_overlay(h):
    """With CAP_SYS_ADMIN the sandbox could remount a bind of the store's layer writable: its
    read-only root is an overlay, whose writes can only ever reach its own layer."""
    cp = ok(h.sh("cat /proc/self/mountinfo", "--read-only", "--cap-add", "SYS_ADMIN"))
    assert _root_fstype(cp.stdout) == "overlay", cp.stdout


def test_roots_rootfs_tree_owned_by_the_hosts_root_is_writable_inside(hroot):
    # Root's sandboxes run as an unprivileged range: the tree's root-owned files would show as
    # nobody's and refuse every change. An idmapped mount of the tree makes them root's inside;
    # the changes go to the writable layer, never to the tree.
    h = hroot
    fstype = subprocess.run(["stat", "-f", "-c", "%T", h.world.rootfs], capture_output=True, text=True).stdout.strip()
    release = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    idmappable = fstype in ("ext2/ext3", "xfs", "btrfs") or (fstype == "tmpfs" and release >= (6, 3))
    if release < (5, 19) or not idmappable:
        pytest.skip(f"Linux {os.uname().release} cannot idmap {fstype} under an overlay "
                    "(5.19 for overlayfs, ext4/xfs/btrfs, tmpfs from 6.3)")
    passwd = Path(h.world.rootfs) / "etc" / "passwd"
    before = passwd.read_bytes()
    assert os.stat(passwd).st_uid == 0
    script = ("stat -c 'OWNER %u:%g' /etc/passwd; mkdir /etc/new-dir && echo extra >> /etc/passwd && "
              "tail -n 1 /etc/passwd")
    cp = ok(guarded(h("run", "--rootfs", h.world.rootfs, "--", "sh", "-c", h.guard + script)))
    assert cp.stdout.splitlines() == ["OWNER 0:0", "extra"], cp.stdout
    assert passwd.read_bytes() == before
    assert not (Path(h.world.rootfs) / "etc" / "new-dir").exists()


def rootfs_copy(h, name) -> Path:
    """A copy of the busybox base the test may change."""
    dst = h.work / name
    _copy_tree(h.world.rootfs, dst)
    return dst


def test_device_nodes_in_a_rootfs_do_not_work(h):
    # A tree from somewhere (an untrusted tarball unpacked by root) may hold device nodes; the
    # sandbox's devices are the few in its own /dev. Both a writable layer over the tree and a
    # read-only bind of it are nodev.
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    root = rootfs_copy(h, "with-device")
    os.mknod(root / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.chmod(root / "zero", 0o666)
    for opts in ([], ["--read-only"]):
        cp = h("run", *opts, "--rootfs", str(root), "--", "sh", "-c",
               "head -c 1 /zero >/dev/null && echo opened; head -c 1 /dev/zero | wc -c")
        assert cp.stdout.split() == ["1"], (opts, describe(cp))


def test_a_fifo_at_a_bind_destination_does_not_hang_the_sandbox(h):
    # An image may put a FIFO where the user binds a file: making the mount point must not open it.
    if os.geteuid() != 0:
        pytest.skip("the test's base copy is made by root")
    root = rootfs_copy(h, "with-fifo")
    os.mkfifo(root / "etc" / "app.conf")
    src = h.host_dir("conf", {"app.conf": "from the host\n"})
    cp = h("run", "--rootfs", str(root), "-v", f"{src}/app.conf:/etc/app.conf:ro", "--", "cat", "/etc/app.conf",
           timeout=30)
    assert ok(cp).stdout == "from the host\n"


@pytest.mark.parametrize("mount_point", ["dev", "proc", "sys"])
def test_an_image_symlink_in_place_of_proc_dev_or_sys_is_refused(h, mount_point):
    # mount(2) follows a symlink: a /dev -> / from the image would have /dev's tmpfs cover the
    # whole root, or, with the host's root still reachable under it, lead there.
    if os.geteuid() != 0:
        pytest.skip("the test's base copy is made by root")
    root = rootfs_copy(h, f"{mount_point}-link")
    for target in ("/", "/..", ".."):
        link = root / mount_point
        if link.is_symlink():
            link.unlink()
        else:
            subprocess.run(["rm", "-rf", str(link)], check=True)
        link.symlink_to(target)
        cp = h("run", "--rootfs", str(root), "--", "sh", "-c", "ls /..; ls /../work")
        assert cp.returncode == 125, (target, describe(cp))
        assert f"the image's /{mount_point} is not a directory" in cp.stderr, (target, describe(cp))
        assert cp.stdout == "", (target, describe(cp))


def test_a_dev_symlink_the_sandbox_leaves_is_refused_at_the_next_start(h):
    # With CAP_SYS_ADMIN the sandbox may replace its own /dev; the next start must not follow it.
    name = f"devlink-{uuid.uuid4().hex[:8]}"
    ok(h("create", "--name", name, "--cap-add", "SYS_ADMIN"))
    try:
        ok(h("exec", name, "--", "sh", "-c", "umount -l /dev/pts /dev/mqueue /dev/null /dev/zero /dev/full "
             "/dev/random /dev/urandom /dev/tty 2>/dev/null; umount -l /dev && rm -rf /dev && ln -s / /dev"))
        ok(h("stop", name))
        cp = h("start", name)
        assert cp.returncode != 0 and "the image's /dev is not a directory" in cp.stderr, describe(cp)
    finally:
        h("rm", "-f", name)


def test_a_destination_through_a_proc_magic_link_is_refused(h):
    # /proc/self/fd/0 in the init is the caller's stdin: followed, a destination's missing
    # directories would be made wherever that leads on the host.
    if os.geteuid() != 0:
        pytest.skip("the test's base copy is made by root")
    root = rootfs_copy(h, "magic-link")
    (root / "mnt").mkdir(exist_ok=True)
    os.symlink("/proc/self/fd/0", root / "mnt" / "fd0")
    outside = h.work / "outside"
    outside.mkdir()
    outside.chmod(0o1777)
    src = h.host_dir("src")
    fd = os.open(outside, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for opt in (["-v", f"{src}:/mnt/fd0/created"], ["--tmpfs", "/mnt/fd0/created"]):
            cp = subprocess.run(h.argv("run", "--rootfs", str(root), *opt, "--", "true"), stdin=fd,
                                env=h.environ(), capture_output=True, text=True, timeout=60)
            assert list(outside.iterdir()) == [], (opt, describe(cp))
            assert cp.returncode == 125 and "leads through a link of /proc" in cp.stderr, (opt, describe(cp))
    finally:
        os.close(fd)
