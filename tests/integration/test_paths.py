"""Where hutch keeps its state and storage when no --root is given (every other test passes one)."""
import fcntl
import os
import shutil
import stat
import struct
import subprocess
import time

import pytest

from hutchlib import assert_hutch_error, kill_quietly, ok, wait_until


def user_dir(h, name):
    """A directory of the mode's user under the test's work directory."""
    d = h.work / name
    d.mkdir(mode=0o700)
    os.chown(d, h.mode.uid, h.mode.gid)
    return str(d)


def skip_for_root(h):
    if h.mode.uid == 0:
        pytest.skip("root's state is /run/hutch: these check a user's")


def private_dir_of(h, path):
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == h.mode.uid and stat.S_IMODE(st.st_mode) == 0o700


def test_a_users_state_and_storage_are_private_under_xdg_dirs(h):
    skip_for_root(h)
    runtime, home = user_dir(h, "runtime"), user_dir(h, "home")
    cp = h("ps", root=False, env={"XDG_RUNTIME_DIR": runtime, "HOME": home})
    assert cp.returncode == 0, cp.stderr
    assert private_dir_of(h, os.path.join(runtime, "hutch"))
    assert private_dir_of(h, os.path.join(home, ".local/share/hutch"))


def test_the_tmp_fallback_for_state_refuses_what_another_user_could_have_made(h):
    # Without XDG_RUNTIME_DIR, state goes to /tmp/hutch-run-UID. Another user may have made that
    # name first, as a symbolic link to somewhere of theirs: hutch must not follow it.
    skip_for_root(h)
    fallback = f"/tmp/hutch-run-{h.mode.uid}"
    if os.path.lexists(fallback):
        pytest.skip(f"{fallback} exists already (hutch used without XDG_RUNTIME_DIR): left alone")
    target, home = user_dir(h, "target"), user_dir(h, "home")
    os.symlink(target, fallback)
    try:
        cp = h("ps", root=False, env={"HOME": home})
        assert_hutch_error(cp, "not a directory of its own", fallback)
        assert os.listdir(target) == []
    finally:
        os.unlink(fallback)
    try:
        cp = h("ps", root=False, env={"HOME": home})
        assert cp.returncode == 0, cp.stderr
        assert private_dir_of(h, fallback)
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def dir_flags(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        return struct.unpack_from("i", buf)[0]
    finally:
        os.close(fd)


def test_the_sandboxes_directory_spreads_its_layers_over_the_filesystem(h):
    # chattr +T: ext4 places each sandbox's directory (and so the inodes of its writable layer
    # and of overlayfs' work files) in a block group of its own choosing, not all in one.
    probe = h.work / "probe"
    probe.mkdir()
    try:
        fd = os.open(probe, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", dir_flags(probe) | FS_TOPDIR_FL))
        finally:
            os.close(fd)
    except OSError as e:
        pytest.skip(f"the test directory's filesystem has no directory flags ({e.strerror})")
    assert h("run", "true").returncode == 0
    assert dir_flags(h.root / "sandboxes") & FS_TOPDIR_FL


def spares(h) -> list[str]:
    """The finished spares (a run makes one as .spare-new-PID, then renames it)."""
    return sorted(n for n in os.listdir(h.root / "sandboxes")
                  if n.startswith(".spare-") and not n.startswith(".spare-new-"))


def spare_ino(h):
    """The inode of the spare, or None while there is none."""
    for name in spares(h):
        try:
            return os.stat(h.root / "sandboxes" / name).st_ino
        except FileNotFoundError:  # taken meanwhile
            pass
    return None


def test_a_run_starts_in_the_directory_the_previous_run_made_ready(h):
    # A sandbox's directory (with upper/ and work/) is made by the run before, while its own
    # sandbox runs, and taken by the next with a rename: ext4 scans every block group for a
    # directory made in the sandboxes' directory (chattr +T), on the start's critical path before.
    ok(h.sh("echo leftover > /file"))
    assert len(spares(h)) == 1, spares(h)
    spare = h.root / "sandboxes" / spares(h)[0]
    assert sorted(os.listdir(spare)) == ["upper", "work"]
    assert os.listdir(spare / "upper") == [] and os.listdir(spare / "work") == []
    # The caller's own until taken (root's: no sandbox of the same ids reaches into it), with
    # layers of the sandbox's root.
    st = os.stat(spare)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid() if not h.mode.switch else h.mode.uid, 0o700)
    assert os.stat(spare / "upper").st_uid == h.mode.sandbox_root_uid
    taken = st.st_ino
    p = h.popen("run", "--name", "second", "--", "sh", "-c", "cat /file; sleep 100",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        second = h.root / "sandboxes" / "second"
        made = lambda: spare_ino(h) not in (None, taken)
        assert wait_until(lambda: second.is_dir() and made(), 20), f"no new spare: {spares(h)}"
        assert os.stat(second).st_ino == taken
        assert os.stat(second).st_uid == h.mode.sandbox_root_uid
    finally:
        kill_quietly(p)
    out = p.communicate(timeout=10)[0]
    # The spare is new, not a used directory: nothing of the first run is in it.
    assert "leftover" not in out and "No such file" in out, out
    ok(h("run", "--", "true"))  # sweeps the killed run's directory
    assert h.sandbox_dirs() == [] and len(spares(h)) == 1, (h.sandbox_dirs(), spares(h))


def test_concurrent_runs_each_get_a_directory_of_their_own(h):
    # Runs race for one spare (one rename wins, the others make their own) and make the next;
    # none may start in a directory another run uses or used.
    import concurrent.futures
    script = "test ! -e /token || exit 9; echo {0} > /token; sleep 0.05; cat /token"

    def one(i):
        token = f"run-{i}"
        cp = h("run", "--", "sh", "-c", script.format(token), timeout=60)
        return token, cp

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(40)))
    bad = [(t, cp.returncode, cp.stdout, cp.stderr) for t, cp in results
           if cp.returncode != 0 or cp.stdout != t + "\n"]
    assert not bad, bad[:3]
    assert h.sandbox_dirs() == [], h.sandbox_dirs()
    left = sorted(n for n in os.listdir(h.root / "sandboxes") if n.startswith(".spare-"))
    assert len(left) == 1 and not left[0].startswith(".spare-new-"), left


def test_create_takes_the_spare_too(h):
    ok(h("run", "--", "true"))
    taken = spare_ino(h)
    ok(h("create", "--name", "box"))
    try:
        assert os.stat(h.root / "sandboxes" / "box").st_ino == taken
        assert ok(h("exec", "box", "--", "sh", "-c", "echo kept > /f; cat /f")).stdout == "kept\n"
        ok(h("stop", "box"))
        ok(h("start", "box"))
        assert ok(h("exec", "box", "--", "cat", "/f")).stdout == "kept\n"
    finally:
        h("rm", "-f", "box")


def test_an_odd_umask_breaks_neither_its_run_nor_the_next(h):
    # The directories get exact modes: under umask 0177 mkdir makes them without search
    # permission, and the run that took such a spare (or made such a directory) could not mount.
    old = os.umask(0o177)
    try:
        ok(h("run", "--", "true"))
    finally:
        os.umask(old)
    [name] = spares(h)
    spare = h.root / "sandboxes" / name
    modes = [stat.S_IMODE(os.stat(p).st_mode) for p in (spare, spare / "upper", spare / "work")]
    assert modes == [0o700, 0o755, 0o700], [oct(m) for m in modes]
    ok(h.sh("echo fine > /f && cat /f"))


def test_spares_nothing_takes_are_swept(h):
    # One a crash left half made, and one of another owner (root's sandboxes under another id
    # range, a user's under another group) unused for two hours; another owner's recent one stays.
    ok(h("run", "--", "true"))
    sandboxes = h.root / "sandboxes"
    unwanted = [sandboxes / ".spare-new-999999", sandboxes / ".spare-4242-4242"]
    recent = sandboxes / ".spare-4343-4343"
    for d in unwanted + [recent]:
        (d / "upper").mkdir(parents=True)
        for path in (d, d / "upper"):
            if h.mode.switch:
                os.chown(path, h.mode.uid, h.mode.gid)
    two_hours_ago = time.time() - 7200
    os.utime(sandboxes / ".spare-4242-4242", (two_hours_ago, two_hours_ago))
    ok(h("run", "--", "true"))
    assert not any(d.exists() for d in unwanted), [d for d in unwanted if d.exists()]
    assert recent.is_dir()
    assert len(spares(h)) == 2, spares(h)


def test_roots_store_is_closed_to_other_users(hroot):
    # Layers hold images' files as the images have them: a world-writable /tmp, setuid programs
    # owned by the sandboxes' host ids. Only root and its sandboxes' group may reach them: another
    # user must not plant a file in every sandbox of an image, or run its setuid programs.
    h = hroot
    ok(h("run", "--", "true"))
    st = os.stat(h.root)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o710, h.mode.sandbox_root_gid)
    planted = next((h.root / "layers").iterdir()) / "tmp" / "planted"
    cp = subprocess.run(["setpriv", "--reuid=hutch-t-solo", "--regid=hutch-t-solo", "--init-groups",
                         "sh", "-c", f"echo x > {planted}"], capture_output=True, text=True, timeout=30)
    assert cp.returncode != 0 and not planted.exists(), cp.stderr
    assert "Permission denied" in cp.stderr
