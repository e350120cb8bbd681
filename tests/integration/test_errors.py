"""Bad input: exit 125 and exactly one line on stderr, 'hutch: ...', naming the problem."""
import subprocess

import pytest

from hutchlib import assert_hutch_error, ok


def no_leftovers(h):
    assert h.sandbox_dirs() == [], f"a failed run left {h.sandbox_dirs()}"
    assert h.state_files() == []


def test_missing_rootfs(h):
    cp = h("run", "--rootfs", "/nonexistent/rootfs-dir", "--", "true")
    assert_hutch_error(cp, "/nonexistent/rootfs-dir")
    no_leftovers(h)


def test_rootfs_dir(h):
    # The positive case, so the error above is about the path and not the flag.
    cp = h("run", "--rootfs", h.world.rootfs, "--", "cat", "/etc/hostname")
    assert cp.returncode == 0, cp.stderr
    assert h.sandbox_dirs() == []


def test_rootfs_that_is_a_file(h):
    cp = h("run", "--rootfs", "/etc/hostname", "--", "true")
    assert_hutch_error(cp, "--rootfs is not a directory", "/etc/hostname")
    no_leftovers(h)


@pytest.mark.parametrize("dest", ["/", "/proc", "//proc/", "/./proc/sys", "/proc/self/fd"])
def test_binds_and_tmpfs_may_not_cover_root_or_proc(h, dest):
    assert_hutch_error(h("run", "-v", f"{h.work}:{dest}", "--", "true"), "invalid -v destination", dest)
    assert_hutch_error(h("run", "--tmpfs", dest, "--", "true"), "invalid --tmpfs destination", dest)
    assert_hutch_error(h("run", "-v", f"{h.work}:/mnt/../etc", "--", "true"), "may not contain '..'")
    no_leftovers(h)


def test_empty_seccomp_profile_path(h):
    assert_hutch_error(h("run", "--security-opt", "seccomp=", "--", "true"), "needs a profile")


def test_bind_source_missing(h):
    cp = h("run", "-v", "/nonexistent/bind-src:/mnt", "--", "true")
    assert_hutch_error(cp, "/nonexistent/bind-src")
    no_leftovers(h)


def test_bind_source_unreadable(h):
    if h.mode.name == "root":
        pytest.skip("root can read every directory")
    secret = h.world.secret
    cp = h("run", "-v", f"{secret}:/mnt", "--", "cat", "/mnt/inside")
    assert_hutch_error(cp, str(secret))
    assert "secret" not in cp.stdout
    no_leftovers(h)


def test_bind_relative_source(h):
    assert_hutch_error(h("run", "-v", "relative/dir:/mnt", "--", "true"), "relative/dir")
    assert_hutch_error(h("run", "-v", f"{h.work}:/mnt:bogus", "--", "true"), "bogus")
    assert_hutch_error(h("run", "-v", f"{h.work}:/mnt:ro,rw", "--", "true"), "ro,rw", "once")
    assert_hutch_error(h("run", "-v", f"{h.work}:/mnt:rshared", "--", "true"), "rshared", "rprivate")


def test_unknown_user(h):
    cp = h("run", "-u", "nosuchuser", "--", "true")
    assert_hutch_error(cp, "nosuchuser")
    cp = h("run", "-u", "0:nosuchgroup", "--", "true")
    assert_hutch_error(cp, "nosuchgroup")
    no_leftovers(h)


def test_malformed_seccomp_profile(h):
    bad = h.work / "profile.json"
    bad.write_text("this is not json\n")
    bad.chmod(0o644)
    cp = h("run", "--security-opt", f"seccomp={bad}", "--", "true")
    assert_hutch_error(cp, "seccomp")
    no_leftovers(h)


def test_unsupported_security_opt(h):
    # A profile or label hutch cannot apply is refused, not silently dropped.
    assert_hutch_error(h("run", "--security-opt", "apparmor=foo", "--", "true"), "apparmor=foo")
    assert_hutch_error(h("run", "--security-opt", "label=type:spc_t", "--", "true"), "label=type:spc_t")
    assert_hutch_error(h("run", "--security-opt", "no-new-privileges=false", "--", "true"), "no-new-privileges=false")


def test_unknown_flag(h):
    assert_hutch_error(h("run", "--bogus", "true"), "--bogus")
    assert_hutch_error(h("run", "--bogus", "--", "true"), "--bogus")


def test_unknown_subcommand(h):
    assert_hutch_error(h("frobnicate"), "frobnicate")


@pytest.mark.parametrize("value", ["nofile=abc", "nofile=200:100", "bogus=1", "nofile", "nofile=1:x"])
def test_bad_ulimit(h, value):
    cp = h("run", "--ulimit", value, "--", "true")
    assert_hutch_error(cp, "ulimit")
    no_leftovers(h)


def test_ulimit_above_hard_limit(h):
    cp = h("run", "--ulimit", "nofile=1:4294967295000", "--", "true")
    assert_hutch_error(cp, "ulimit")
    # -1 is docker's unlimited, and said so (this host's hard limit of files is 20000).
    assert_hutch_error(h("run", "--ulimit", "nofile=-1", "--", "true"), "ulimit", "unlimited:unlimited")


@pytest.mark.parametrize("name", ["bad/name", ".hidden", "a b", "x" * 129, "-dash", "semi;colon"])
def test_invalid_name(h, name):
    cp = h("run", f"--name={name}", "--", "true")
    assert_hutch_error(cp, "name")
    no_leftovers(h)
    cp = h("create", f"--name={name}")
    assert_hutch_error(cp, "name")
    no_leftovers(h)


def test_bad_timeout(h):
    assert_hutch_error(h("run", "--timeout", "soon", "--", "true"), "soon")


def test_unknown_capability(h):
    assert_hutch_error(h("run", "--cap-add", "NOT_A_CAP", "--", "true"), "NOT_A_CAP")
    assert_hutch_error(h("run", "--cap-drop", "NOT_A_CAP", "--", "true"), "NOT_A_CAP")


def test_bad_workdir(h):
    assert_hutch_error(h("run", "-w", "relative", "--", "true"), "relative")
    assert_hutch_error(h("run", "-w", "/etc/passwd", "--", "true"), "working directory (-w)", "/etc/passwd")


def test_bad_env(h):
    assert_hutch_error(h("run", "-e", "=value", "--", "true"), "=value")
    assert_hutch_error(h("run", "--env-file", "/nonexistent/file.env", "--", "true"), "/nonexistent/file.env")
    # As docker: a name with blanks in an env file is a mistake, reported with its line.
    f = h.work / "blanks.env"
    f.write_text("A=1\nexport B=2\n")
    f.chmod(0o644)
    assert_hutch_error(h("run", "--env-file", str(f), "--", "true"), "blanks.env:2", "export B=2")


def test_bad_hostname(h):
    assert_hutch_error(h("run", "--hostname", "h" * 65, "--", "true"), "--hostname", "64 characters")
    assert ok(h("run", "--hostname", "h" * 64, "--", "hostname")).stdout == "h" * 64 + "\n"



def test_a_user_outside_their_login_group_gets_a_clear_error(hsub_other_group):
    # newuidmap and newgidmap refuse a process whose real group is not the user's login group (as
    # under sg or newgrp), with a message about "a different user"; hutch says it in one line,
    # and what to do.
    h, other, prefix = hsub_other_group
    argv = prefix + [h.world.bin, "--root", str(h.root), "run", "--rootfs", h.world.rootfs, "--", "true"]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=h.environ(), stdin=subprocess.DEVNULL)
    assert_hutch_error(cp, "newuidmap failed", "different user", "login group", str(other))
