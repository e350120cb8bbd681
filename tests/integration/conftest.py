"""Fixtures for hutch's integration tests.

Every test that takes the `h` fixture runs once per mode:
  root    hutch run by root (the sandbox's ids come from root's range, 1000000000:65536 by default)
  subuid  hutch run by hutch-t-sub, a user with an /etc/subuid and /etc/subgid range
  solo    hutch run by hutch-t-solo, a user with no range (only its own uid is mapped)
As root, tools/test-users.sh creates both users. As another user only that user's own mode runs
(subuid when it has ranges, solo otherwise); the other modes are skipped with the reason.

The binary (HUTCH_BIN, default build/hutch), the busybox base tree (HUTCH_DEFAULT_ROOTFS, default
build/rootfs/busybox) and the policies (HUTCH_POLICY_DIR, default policies/) are copied into a
world-readable temporary directory first, so the test users can reach them even when the checkout
lives under /root.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hutchlib import (HUTCH_BIN, IMAGE_HELPER_SRC, LAYOUT_SRC, POLICY_SRC, REPO, ROOTFS_SRC, grants_aux_group_subids, ok,
                      parse_status, sandbox_guard)

DOCKER_PROFILE_CANDIDATES = [
    Path("/work/shared/specs/docker-seccomp-default.json"),
    REPO.parent / "shared" / "specs" / "docker-seccomp-default.json",
]

MODES = ("root", "subuid", "solo")
MODE_USERS = {"subuid": "hutch-t-sub", "solo": "hutch-t-solo"}
ROOT_DEFAULT_RANGE = (1000000000, 65536)
IS_ROOT = os.geteuid() == 0
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# ---------------------------------------------------------------------------------------------
# Modes.

def _subid_ranges(file: str, name: str, uid: int) -> list[tuple[int, int]]:
    out = []
    try:
        text = Path(file).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or line.startswith("#") or parts[0] not in (name, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start > 0 and count > 0:
            out.append((start, count))
    return out


def _have_helpers() -> bool:
    return all(os.access(p, os.X_OK) for p in ("/usr/bin/newuidmap", "/usr/bin/newgidmap"))


@dataclass
class Mode:
    name: str
    user: str
    uid: int
    gid: int
    home: str
    switch: bool  # run hutch through setpriv as `user`
    uid_map: list = field(default_factory=list)  # expected /proc/self/uid_map inside
    gid_map: list = field(default_factory=list)
    skip_reason: str | None = None

    @property
    def sandbox_root_uid(self) -> int:
        """The host uid that uid 0 inside the sandbox is."""
        return self.uid_map[0][1]

    @property
    def sandbox_root_gid(self) -> int:
        return self.gid_map[0][1]

    def maps_uid(self, inside: int) -> bool:
        return any(i <= inside < i + c for i, _, c in self.uid_map)

    def prefix(self) -> list[str]:
        if not self.switch:
            return []
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]


def _user_maps(name: str, uid: int, gid: int):
    us, gs = _subid_ranges("/etc/subuid", name, uid), _subid_ranges("/etc/subgid", name, uid)
    umap, gmap = [(0, uid, 1)], [(0, gid, 1)]
    if us and gs and _have_helpers():
        nxt = 1
        for s, c in us:
            umap.append((nxt, s, c))
            nxt += c
        nxt = 1
        for s, c in gs:
            gmap.append((nxt, s, c))
            nxt += c
    return umap, gmap


def _root_maps():
    us = _subid_ranges("/etc/subuid", "hutch", -1)
    gs = _subid_ranges("/etc/subgid", "hutch", -1)
    u = us[0] if us else ROOT_DEFAULT_RANGE
    g = gs[0] if gs else u
    return [(0, u[0], u[1])], [(0, g[0], g[1])]


def _userns_works(prefix: list[str]) -> str | None:
    """None when the user can create a user namespace, else why not."""
    try:
        cp = subprocess.run(prefix + ["unshare", "--user", "true"], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL, env={"PATH": HOST_PATH})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot test for user namespaces: {e}"
    if cp.returncode != 0:
        return f"user namespaces are unavailable: unshare --user: {cp.stderr.strip() or cp.returncode}"
    return None


def _build_modes() -> dict[str, Mode]:
    modes: dict[str, Mode] = {}
    if IS_ROOT:
        um, gm = _root_maps()
        modes["root"] = Mode("root", "root", 0, 0, pwd.getpwuid(0).pw_dir or "/root", False, um, gm)
        for m, user in MODE_USERS.items():
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                modes[m] = Mode(m, user, -1, -1, "/", True, skip_reason=f"user {user} does not exist "
                                "(tools/test-users.sh failed?)")
                continue
            um, gm = _user_maps(user, pw.pw_uid, pw.pw_gid)
            modes[m] = Mode(m, user, pw.pw_uid, pw.pw_gid, pw.pw_dir, True, um, gm)
        if len(modes["subuid"].uid_map) < 2 and not modes["subuid"].skip_reason:
            modes["subuid"].skip_reason = "hutch-t-sub has no usable subordinate range (or uidmap is missing)"
        if len(modes["solo"].uid_map) != 1 and not modes["solo"].skip_reason:
            modes["solo"].skip_reason = "hutch-t-solo unexpectedly has a subordinate range"
    else:
        pw = pwd.getpwuid(os.geteuid())
        um, gm = _user_maps(pw.pw_name, pw.pw_uid, os.getegid())
        native = "subuid" if len(um) > 1 else "solo"
        for m in MODES:
            if m == native:
                modes[m] = Mode(m, pw.pw_name, pw.pw_uid, os.getegid(), os.environ.get("HOME") or pw.pw_dir,
                                False, um, gm)
            else:
                why = ("needs root" if m == "root" else
                       f"needs root to run as {MODE_USERS[m]}; this user ({pw.pw_name}) runs mode '{native}'")
                modes[m] = Mode(m, pw.pw_name, pw.pw_uid, os.getegid(), "/", False, skip_reason=why)
    for m in modes.values():
        if m.skip_reason is None:
            why = _userns_works(m.prefix())
            if why:
                m.skip_reason = f"{why} (as {m.user})"
    return modes


def primary_mode_name() -> str:
    if IS_ROOT:
        return "root"
    pw = pwd.getpwuid(os.geteuid())
    return "subuid" if len(_user_maps(pw.pw_name, pw.pw_uid, os.getegid())[0]) > 1 else "solo"


# ---------------------------------------------------------------------------------------------
# The world: copies of the binary, the base tree and the policies that every test user can read.

@dataclass
class World:
    dir: Path
    bin: str
    rootfs: str
    policies: str
    docker_profile: str | None
    tests: Path
    secret: Path  # a directory the mode's user cannot read (see unreadable_dir())
    modes: dict


def _copy_tree(src: str, dst: Path):
    """Copies a tree with its symlinks and modes; a directory the caller cannot read (the base's
    /root, when the tests do not run as root) is copied empty, as hutch's own base copy does."""
    try:
        shutil.copytree(src, dst, symlinks=True)
    except shutil.Error as e:
        for s, d, why in e.args[0]:
            if os.path.isdir(s) and not os.access(s, os.R_OK | os.X_OK):
                os.makedirs(d, exist_ok=True)
                os.chmod(d, os.stat(s).st_mode & 0o7777)
            else:
                raise RuntimeError(f"cannot copy {s}: {why}") from e


@pytest.fixture(scope="session")
def world():
    if not (os.path.isfile(HUTCH_BIN) and os.access(HUTCH_BIN, os.X_OK)):
        pytest.fail(f"HUTCH_BIN={HUTCH_BIN} is not an executable file (build it, or set HUTCH_BIN)", pytrace=False)
    if not os.path.isfile(os.path.join(ROOTFS_SRC, "bin", "busybox")):
        pytest.fail(f"no busybox base tree at {ROOTFS_SRC} (set HUTCH_DEFAULT_ROOTFS)", pytrace=False)
    if IS_ROOT:
        script = REPO / "tools" / "test-users.sh"
        cp = subprocess.run(["sh", str(script)], capture_output=True, text=True)
        if cp.returncode != 0 or cp.stdout or cp.stderr:
            pytest.fail(f"{script} failed (exit {cp.returncode}): {cp.stdout}{cp.stderr}", pytrace=False)
    d = Path(tempfile.mkdtemp(prefix="hutch-it-", dir="/tmp"))
    try:
        d.chmod(0o755)
        (d / "bin").mkdir(mode=0o755)
        shutil.copy2(HUTCH_BIN, d / "bin" / "hutch")
        (d / "bin" / "hutch").chmod(0o755)
        shutil.copy2(IMAGE_HELPER_SRC, d / "bin" / "hutch-image")
        (d / "bin" / "hutch-image").chmod(0o755)
        _copy_tree(ROOTFS_SRC, d / "rootfs")
        (d / "rootfs").chmod(0o755)
        _copy_tree(LAYOUT_SRC, d / "busybox-oci")
        subprocess.run(["chmod", "-R", "a+rX", str(d / "busybox-oci")], check=True)
        if os.path.isdir(POLICY_SRC):
            _copy_tree(POLICY_SRC, d / "policies")
        else:
            (d / "policies").mkdir()
        subprocess.run(["chmod", "-R", "a+rX", str(d / "policies")], check=True)
        docker = None
        for c in DOCKER_PROFILE_CANDIDATES:
            if c.is_file():
                docker = d / "docker-seccomp-default.json"
                shutil.copyfile(c, docker)
                docker.chmod(0o644)
                break
        tests = d / "t"
        tests.mkdir(mode=0o755)
        secret = d / "secret"
        secret.mkdir()
        (secret / "inside").write_text("secret\n")
        # Root's own 0700 directory when the tests switch users; the caller's own 0000 one when
        # they cannot (the owner of a 0000 directory cannot read it either).
        secret.chmod(0o700 if IS_ROOT else 0o000)
        yield World(d, str(d / "bin" / "hutch"), str(d / "rootfs"), str(d / "policies"),
                    str(docker) if docker else None, tests, secret, _build_modes())
    finally:
        try:
            (d / "secret").chmod(0o700)
        except OSError:
            pass
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Running hutch.

class Hutch:
    """Runs the hutch binary as the mode's user, with a --root of its own."""

    def __init__(self, world: World, mode: Mode, testdir: Path):
        self.world = world
        self.mode = mode
        self.dir = testdir
        self.root = testdir / "root"  # --root: state and storage
        self.work = testdir / "work"  # host-side files of the test, owned by the mode's user
        for p in (self.root, self.work):
            p.mkdir(mode=0o755)
            if mode.switch:
                os.chown(p, mode.uid, mode.gid)
        self.env = {
            "PATH": HOST_PATH,
            "HOME": mode.home,
            "LANG": "C.UTF-8",
            "HUTCH_DEFAULT_ROOTFS": world.rootfs,
            "HUTCH_DEFAULT_IMAGE_LAYOUT": str(world.dir / "busybox-oci"),
            "HUTCH_IMAGE_HELPER": str(world.dir / "bin" / "hutch-image"),
            "HUTCH_POLICY_DIR": world.policies,
            # Each test has its own state directory, so its own user namespace keeper: let it go
            # soon after the test instead of ten minutes later (test_pause.py tests the keeper).
            "HUTCH_PAUSE_IDLE": "5",
        }
        if "TERM" in os.environ:
            self.env["TERM"] = os.environ["TERM"]
        # Prefix for scripts that write outside binds and tmpfs (see hutchlib.sandbox_guard).
        assert world.dir.is_dir()
        self.guard = sandbox_guard(str(world.dir))

    # The command line and environment of one invocation.
    def argv(self, *args, root: bool = True) -> list[str]:
        base = [self.world.bin] + (["--root", str(self.root)] if root else [])
        return self.mode.prefix() + base + [str(a) for a in args]

    def environ(self, extra: dict | None = None) -> dict:
        env = dict(self.env)
        env.update(extra or {})
        return env

    def __call__(self, *args, input: str | None = None, timeout: float = 60, env: dict | None = None,
                 root: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args, root=root), input=input, capture_output=True, text=True,
                              timeout=timeout, env=self.environ(env),
                              stdin=None if input is not None else subprocess.DEVNULL)

    def popen(self, *args, env: dict | None = None, **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(*args), env=self.environ(env), **kw)

    # Conveniences.
    def sh(self, script: str, *opts, **kw) -> subprocess.CompletedProcess:
        """hutch run OPTS -- sh -c SCRIPT"""
        return self("run", *opts, "--", "sh", "-c", script, **kw)

    def status(self, *opts, command=("cat", "/proc/self/status")) -> dict[str, str]:
        """/proc/self/status of a command run with `hutch run OPTS --`."""
        return parse_status(ok(self("run", *opts, "--", *command)).stdout)

    def chown_sandbox_root(self, path: Path):
        """Gives a host path to the sandbox's root (what uid 0 inside is on the host)."""
        os.chown(path, self.mode.sandbox_root_uid, self.mode.sandbox_root_gid)

    def host_dir(self, name: str, files: dict | None = None) -> Path:
        """A host directory the sandbox's root owns, with some files in it."""
        d = self.work / name
        d.mkdir(mode=0o755)
        for fname, content in (files or {}).items():
            (d / fname).write_text(content)
            (d / fname).chmod(0o644)
            if IS_ROOT:
                self.chown_sandbox_root(d / fname)
        if IS_ROOT:
            self.chown_sandbox_root(d)
        return d

    def sandbox_dirs(self) -> list[str]:
        """Sandbox directories under <root>/sandboxes (dot files, the sweep lock, excluded)."""
        p = self.root / "sandboxes"
        return sorted(n for n in os.listdir(p) if not n.startswith(".")) if p.is_dir() else []

    def state_files(self) -> list[str]:
        p = self.root / "run" / "sandboxes"
        return sorted(os.listdir(p)) if p.is_dir() else []

    def ps_json(self) -> list[dict]:
        cp = ok(self("ps", "--format", "json"))
        return json.loads(cp.stdout)

    def cleanup(self):
        try:
            cp = self("ps", "--format", "json", timeout=30)
            names = [s["name"] for s in json.loads(cp.stdout)] if cp.returncode == 0 else []
            if names:
                self("rm", "-f", *names, timeout=60)
        except Exception:  # the test's own assertions already said what went wrong
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _make_hutch(world: World, mode_name: str) -> Hutch:
    mode = world.modes[mode_name]
    if mode.skip_reason:
        pytest.skip(f"mode {mode_name}: {mode.skip_reason}")
    testdir = Path(tempfile.mkdtemp(prefix=f"{mode_name}-", dir=world.tests))
    testdir.chmod(0o755)
    return Hutch(world, mode, testdir)


@pytest.fixture(params=MODES)
def h(request, world) -> Hutch:
    """hutch as the mode's user; h(*args, input=None, timeout=60) returns the CompletedProcess."""
    hutch = _make_hutch(world, request.param)
    yield hutch
    hutch.cleanup()


@pytest.fixture
def h1(world) -> Hutch:
    """hutch in one mode only (root when the tests run as root), for the slow whole-system tests."""
    hutch = _make_hutch(world, primary_mode_name())
    yield hutch
    hutch.cleanup()


@pytest.fixture
def hroot(world) -> Hutch:
    """hutch run by root, for what only applies to root (HUTCH_ROOT_IDRANGE)."""
    hutch = _make_hutch(world, "root")
    yield hutch
    hutch.cleanup()


@pytest.fixture
def hsub_other_group(world):
    """(h, gid, prefix): hutch-t-sub's hutch, a group that is not its login group, and a setpriv
    prefix that runs a command as it under that group, as sg or newgrp would."""
    if grants_aux_group_subids():
        pytest.skip("/etc/login.defs grants GRANT_AUX_GROUP_SUBIDS: the id-map helpers accept any group")
    hutch = _make_hutch(world, "subuid")
    try:
        if not hutch.mode.switch:
            pytest.skip("needs root to start hutch as hutch-t-sub under another group")
        other = 65534 if hutch.mode.gid != 65534 else 100
        yield hutch, other, ["setpriv", f"--reuid={hutch.mode.uid}", f"--regid={other}", "--clear-groups", "--"]
    finally:
        hutch.cleanup()


def pytest_terminal_summary(terminalreporter):
    """Skip reasons, grouped: one line per reason however many tests it skipped."""
    counts: Counter = Counter()
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        counts[reason.removeprefix("Skipped: ")] += 1
    if counts:
        terminalreporter.section("skipped, by reason", sep="-")
        for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            terminalreporter.line(f"SKIPPED [{n}] {reason}")
