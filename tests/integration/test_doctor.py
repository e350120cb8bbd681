"""hutch doctor: one line per check (ok / warn / FAIL) with what was found and the fix; exit 1 only
when a required check fails. The checks must report what is true on this host, and only look."""
import json
import os
import subprocess
import time

import pytest

from hutchlib import describe, mount_count

IS_ROOT = os.geteuid() == 0
STATUSES = {"ok", "warn", "fail"}
EXPECTED_CHECKS = ["kernel", "userns", "subids", "uidmap", "store", "state", "overlay", "cgroups", "seccomp",
                   "nftables", "network"]


def fs_type(path: str) -> str:
    cp = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return cp.stdout.strip() if cp.returncode == 0 else ""


def cgroup_layout() -> str:
    """What cgroup.cpp's find_mount() decides: pure v2, hybrid, or neither."""
    if fs_type("/sys/fs/cgroup") == "cgroup2fs":
        return "v2"
    if fs_type("/sys/fs/cgroup/unified") == "cgroup2fs":
        return "hybrid"
    return "v1"


def doctor_json(h, *args, env=None, root=True):
    cp = h(*args, "doctor", "--format", "json", env=env, root=root)
    try:
        report = json.loads(cp.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"doctor --format json printed no JSON ({e})" + describe(cp))
    return cp, report


def by_name(report) -> dict:
    return {c["name"]: c for c in report["checks"]}


def assert_structure(report, cp):
    assert set(report) == {"checks", "ok"}, describe(cp)
    assert isinstance(report["ok"], bool)
    names = [c["name"] for c in report["checks"]]
    assert names == EXPECTED_CHECKS, describe(cp)
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}, c
        assert all(isinstance(c[k], str) for k in c), c
        assert c["status"] in STATUSES, c
        assert c["detail"], f"check {c['name']} explains nothing" + describe(cp)
        assert "\n" not in c["detail"] and "\n" not in c["fix"], c
        if c["status"] != "ok":
            assert c["fix"], f"check {c['name']} is {c['status']} without a fix" + describe(cp)
    assert report["ok"] == all(c["status"] != "fail" for c in report["checks"])
    assert cp.returncode == (0 if report["ok"] else 1), describe(cp)


def test_doctor_reports_this_host(h):
    cp, report = doctor_json(h)
    assert_structure(report, cp)
    assert cp.returncode == 0 and report["ok"], "nothing required is missing on this host" + describe(cp)
    checks = by_name(report)

    kernel = checks["kernel"]
    assert kernel["status"] == "ok"
    assert kernel["detail"].split()[0] == os.uname().release, kernel

    for name in ("userns", "overlay", "seccomp"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "unshare(CLONE_NEWUSER) works" in checks["userns"]["detail"]
    assert "userxattr" in checks["overlay"]["detail"]
    assert "default.json compiles" in checks["seccomp"]["detail"]

    cg = checks["cgroups"]
    layout = cgroup_layout()
    if layout == "hybrid":
        # Limits are optional: a hybrid host is a warning, never a failure.
        assert cg["status"] == "warn", cg
        assert "hybrid" in cg["detail"] and "/sys/fs/cgroup" in cg["detail"], cg
        assert "systemd.unified_cgroup_hierarchy=1" in cg["fix"], cg
    elif layout == "v2":
        assert cg["status"] in ("ok", "warn") and "pure v2" in cg["detail"], cg
    else:
        assert cg["status"] == "warn", cg

    subids = checks["subids"]
    if h.mode.name == "root":
        start, count = h.mode.uid_map[0][1], h.mode.uid_map[0][2]
        assert subids["status"] in ("ok", "warn"), subids
        assert f"uids {start}-{start + count - 1}" in subids["detail"], subids
    elif h.mode.name == "subuid":
        _, start, count = h.mode.uid_map[1]
        assert subids["status"] == "ok", subids
        assert h.mode.user in subids["detail"] and f"{start}:{count}" in subids["detail"], subids
    else:
        assert subids["status"] == "warn", subids
        assert h.mode.user in subids["detail"] and "no range" in subids["detail"], subids
        assert "usermod --add-subuids" in subids["fix"] and h.mode.user in subids["fix"], subids

    # The fixture's --root is 0755: usable, but others can list it, which hutch tightens itself.
    store = checks["store"]
    assert str(h.root) in store["detail"] and "free on" in store["detail"], store
    assert store["status"] == "warn" and "chmod" in store["fix"], store
    assert checks["state"]["status"] == "ok" and str(h.root / "run") in checks["state"]["detail"]


def test_doctor_table(h):
    cp = h("doctor")
    assert cp.returncode == 0, describe(cp)
    lines = cp.stdout.splitlines()
    assert len(lines) == len(EXPECTED_CHECKS), describe(cp)
    for line, name in zip(lines, EXPECTED_CHECKS):
        status, rest = line[:6], line[6:]
        assert status.rstrip() in ("ok", "warn", "FAIL") and status == status.rstrip().ljust(6), line
        assert rest.startswith(name.ljust(17)), line
        assert rest[17:].strip(), line
        if status.rstrip() != "ok":
            assert " — fix: " in line, line
        assert status.rstrip() != "FAIL", describe(cp)
    assert lines[0].split()[2] == os.uname().release
    if cgroup_layout() == "hybrid":
        assert lines[EXPECTED_CHECKS.index("cgroups")].startswith("warn  cgroups          hybrid v1/v2")


def test_doctor_root_is_a_file(h):
    f = h.work / "not-a-directory"
    f.write_text("x\n")
    if h.mode.switch:
        os.chown(f, h.mode.uid, h.mode.gid)
    cp, report = doctor_json(h, "--root", f, root=False)
    assert_structure(report, cp)
    assert cp.returncode == 1 and report["ok"] is False, describe(cp)
    checks = by_name(report)
    assert checks["store"]["status"] == "fail", checks["store"]
    assert str(f) in checks["store"]["detail"] and "not a directory" in checks["store"]["detail"]
    assert checks["state"]["status"] == "fail", checks["state"]
    # The overlay probe does not go looking elsewhere for a store that cannot be one.
    assert checks["overlay"]["status"] == "warn" and "not probed" in checks["overlay"]["detail"]
    table = h("--root", f, "doctor", root=False)
    assert table.returncode == 1, describe(table)
    assert any(line.startswith("FAIL  store ") and "— fix: " in line for line in table.stdout.splitlines()), \
        describe(table)
    assert f.read_text() == "x\n"


def test_doctor_store_of_another_user(h):
    if not IS_ROOT:
        pytest.skip("needs root to make a directory owned by someone else")
    d = h.dir / "foreign"
    d.mkdir(mode=0o700)
    other = 65534 if h.mode.uid != 65534 else 0
    os.chown(d, other, other)
    cp, report = doctor_json(h, "--root", d, root=False)
    assert cp.returncode == 1, describe(cp)
    store = by_name(report)["store"]
    assert store["status"] == "fail" and "not by you" in store["detail"], store


def test_doctor_private_store_is_ok(h):
    h.root.chmod(0o711 if h.mode.name == "root" else 0o700)
    cp, report = doctor_json(h)
    assert cp.returncode == 0, describe(cp)
    assert by_name(report)["store"]["status"] == "ok", by_name(report)["store"]


def test_doctor_missing_seccomp_profile(h):
    cp, report = doctor_json(h, env={"HUTCH_POLICY_DIR": str(h.work / "no-policies")})
    assert cp.returncode == 1 and report["ok"] is False, describe(cp)
    seccomp = by_name(report)["seccomp"]
    assert seccomp["status"] == "fail" and "no-policies/seccomp/default.json" in seccomp["detail"], seccomp
    assert "HUTCH_POLICY_DIR" in seccomp["fix"]


def test_doctor_only_looks(h):
    """Fast, and leaves nothing behind: no store or state created, no probe directory, no mount,
    no cgroup."""
    def cgroup_dirs():
        out = set()
        for top in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            try:
                out |= {f"{top}/{n}" for n in os.listdir(top)}
            except OSError:
                pass
        return out

    before_root, before_cg, before_mounts = sorted(os.listdir(h.root)), cgroup_dirs(), mount_count()
    t = time.monotonic()
    cp = h("doctor")
    elapsed = time.monotonic() - t
    assert cp.returncode == 0, describe(cp)
    assert elapsed < 1.5, f"doctor took {elapsed:.2f}s"
    assert sorted(os.listdir(h.root)) == before_root == []
    assert cgroup_dirs() == before_cg
    assert mount_count() == before_mounts
    # With the store's tmp/ present the probe works in it, and removes what it made.
    (h.root / "tmp").mkdir(mode=0o700)
    if h.mode.switch:
        os.chown(h.root / "tmp", h.mode.uid, h.mode.gid)
    cp, report = doctor_json(h)
    assert by_name(report)["overlay"]["status"] == "ok", describe(cp)
    assert str(h.root / "tmp") in by_name(report)["overlay"]["detail"]
    assert os.listdir(h.root / "tmp") == []


def test_doctor_root_range_overlap(hroot):
    sub = hroot.world.modes["subuid"]
    if sub.skip_reason:
        pytest.skip(sub.skip_reason)
    _, start, _ = sub.uid_map[1]
    cp, report = doctor_json(hroot, env={"HUTCH_ROOT_IDRANGE": f"{start + 10}:1000"})
    assert cp.returncode == 0, describe(cp)
    subids = by_name(report)["subids"]
    assert subids["status"] == "warn", subids
    assert "HUTCH_ROOT_IDRANGE" in subids["detail"] and sub.user in subids["detail"], subids
    assert "/etc/subuid" in subids["fix"], subids

    cp, report = doctor_json(hroot, env={"HUTCH_ROOT_IDRANGE": "bogus"})
    assert cp.returncode == 1, describe(cp)
    subids = by_name(report)["subids"]
    assert subids["status"] == "fail" and "HUTCH_ROOT_IDRANGE" in subids["detail"], subids


def test_doctor_warns_outside_the_login_group(hsub_other_group):
    # newuidmap and newgidmap refuse a caller whose group is not its login group (sg, newgrp):
    # doctor says so before a run fails.
    h, other, prefix = hsub_other_group

    def uidmap(prefix):
        cp = subprocess.run(prefix + [h.world.bin, "--root", str(h.root), "doctor", "--format", "json"],
                            capture_output=True, text=True, timeout=60, env=h.environ())
        return by_name(json.loads(cp.stdout))["uidmap"]

    outside = uidmap(prefix)
    assert outside["status"] == "warn" and "login group" in outside["detail"], outside
    assert "sg or newgrp" in outside["fix"], outside
    assert "login group" not in uidmap(h.mode.prefix())["detail"]
