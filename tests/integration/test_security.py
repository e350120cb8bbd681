"""Privileges inside: no_new_privs, seccomp, capabilities, and what they deny."""
import subprocess

import pytest

from hutchlib import (CAP_NET_BIND_SERVICE, CAP_NET_RAW, DEFAULT_CAPS, assert_hutch_error,
                      caps_of, guarded, ok, sandbox_guard)


def needs_uid_1000(h):
    if not h.mode.maps_uid(1000):
        pytest.skip(f"uid 1000 is not mapped in mode {h.mode.name}")


def test_no_new_privs(h):
    assert h.status()["NoNewPrivs"] == "1"


def test_seccomp_filter_active(h):
    st = h.status()
    assert st["Seccomp"] == "2", f"Seccomp: {st['Seccomp']} (expected 2: a filter is installed)"


def test_capabilities_uid0(h):
    st = h.status()
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert caps_of(st, key) == DEFAULT_CAPS, f"{key}: {st[key]} (expected {DEFAULT_CAPS:016x})"
    assert caps_of(st, "CapAmb") == 0


def test_capabilities_other_uid(h):
    needs_uid_1000(h)
    st = h.status("-u", "1000")
    assert st["Uid"].split()[0] == "1000"
    for key in ("CapEff", "CapPrm", "CapAmb"):
        assert caps_of(st, key) == 0, f"{key}: {st[key]} (expected 0 for uid 1000)"
    assert caps_of(st, "CapBnd") == DEFAULT_CAPS, st["CapBnd"]
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2", f"Seccomp: {st['Seccomp']} for uid 1000"


def test_unmapped_uid_is_refused(h):
    if h.mode.maps_uid(1000):
        pytest.skip(f"uid 1000 is mapped in mode {h.mode.name}")
    cp = h("run", "-u", "1000", "--", "id", "-u")
    assert_hutch_error(cp, "1000")
    assert "1000\n" not in cp.stdout


def test_cap_drop_all(h):
    st = h.status("--cap-drop", "ALL")
    for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        assert caps_of(st, key) == 0, f"{key}: {st[key]}"


def test_cap_drop_all_add_net_bind_service(h):
    st = h.status("--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE")
    want = 1 << CAP_NET_BIND_SERVICE
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert caps_of(st, key) == want, f"{key}: {st[key]} (expected {want:016x})"


def test_cap_drop_one(h):
    st = h.status("--cap-drop", "NET_BIND_SERVICE")
    want = DEFAULT_CAPS & ~(1 << CAP_NET_BIND_SERVICE)
    for key in ("CapEff", "CapBnd"):
        assert caps_of(st, key) == want, f"{key}: {st[key]} (expected {want:016x})"


def test_cap_add_one(h):
    st = h.status("--cap-add", "CAP_NET_RAW")
    want = DEFAULT_CAPS | (1 << CAP_NET_RAW)
    for key in ("CapEff", "CapBnd"):
        assert caps_of(st, key) == want, f"{key}: {st[key]} (expected {want:016x})"


def test_cap_drop_all_takes_effect(h):
    # Without CAP_DAC_OVERRIDE even uid 0 cannot read a file of mode 000.
    script = h.guard + "echo data > /f; chmod 000 /f; cat /f 2>&1; echo rc=$?"
    cp = ok(guarded(h.sh(script, "--cap-drop", "ALL")))
    assert "Permission denied" in cp.stdout and "rc=1" in cp.stdout, cp.stdout
    # ... while the default set has it.
    cp = ok(guarded(h.sh(script)))
    assert "data" in cp.stdout and "rc=0" in cp.stdout, cp.stdout


def _probe(h, command, *opts):
    """Runs a command that the sandbox must deny; returns its combined output."""
    cp = ok(guarded(h.sh(h.guard + f"{command} 2>&1; echo rc=$?", *opts)))
    return cp.stdout


def test_unshare_userns_denied(h):
    out = _probe(h, "unshare -U true")
    assert "Operation not permitted" in out and "rc=0" not in out, out


def test_mount_denied(h):
    out = _probe(h, "mkdir -p /mnt && mount -t tmpfs none /mnt")
    # busybox mount reports EPERM (and EACCES) as "permission denied (are you root?)".
    assert ("Operation not permitted" in out or "permission denied (are you root?)" in out), out
    assert "rc=0" not in out, out


def test_nsenter_denied(h):
    out = _probe(h, "nsenter --net=/proc/self/ns/net true")
    assert "Operation not permitted" in out and "rc=0" not in out, out


def test_unshare_denied_for_other_uid(h):
    needs_uid_1000(h)
    out = _probe(h, "unshare -U true", "-u", "1000")
    assert "Operation not permitted" in out and "rc=0" not in out, out


def test_docker_profile_loads(h):
    if not h.world.docker_profile:
        pytest.skip("docker-seccomp-default.json not found")
    opt = f"seccomp={h.world.docker_profile}"
    st = h.status("--security-opt", opt)
    assert st["Seccomp"] == "2", st["Seccomp"]
    assert caps_of(st, "CapEff") == DEFAULT_CAPS
    # Docker's profile allows unshare(CLONE_NEWUSER) only to CAP_SYS_ADMIN.
    out = _probe(h, "unshare -U true", "--security-opt", opt)
    assert "Operation not permitted" in out and "rc=0" not in out, out


def test_no_lsm_options_change_nothing(h):
    # apparmor=unconfined and label=disable (from docker and podman scripts) ask for no LSM
    # confinement, which hutch never applies: accepted, and nothing else is loosened.
    st = h.status("--security-opt", "apparmor=unconfined", "--security-opt", "label=disable")
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", st
    assert caps_of(st, "CapEff") == DEFAULT_CAPS


def test_seccomp_unconfined(h):
    st = h.status("--security-opt", "seccomp=unconfined")
    assert st["Seccomp"] == "0"
    assert st["NoNewPrivs"] == "1"
    assert caps_of(st, "CapEff") == DEFAULT_CAPS


def test_malformed_profile(h):
    bad = h.work / "bad-profile.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ {"names": ["read"], ')
    bad.chmod(0o644)
    cp = h("run", "--security-opt", f"seccomp={bad}", "--", "echo", "RAN")
    assert_hutch_error(cp, "seccomp")
    assert "RAN" not in cp.stdout
    assert h.sandbox_dirs() == []


def test_profile_with_unknown_action(h):
    bad = h.work / "bad-action.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_BOGUS", "syscalls": []}')
    bad.chmod(0o644)
    cp = h("run", "--security-opt", f"seccomp={bad}", "--", "echo", "RAN")
    assert_hutch_error(cp, "seccomp")
    assert "RAN" not in cp.stdout


def test_missing_profile(h):
    cp = h("run", "--security-opt", "seccomp=/nonexistent/profile.json", "--", "true")
    assert_hutch_error(cp, "/nonexistent/profile.json")



def test_guard_detects_the_host(world):
    # The guard that keeps probes from running outside a sandbox must itself trip on the host.
    cp = subprocess.run(["sh", "-c", sandbox_guard(str(world.dir)) + "echo PROBE-RAN"],
                        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert "PROBE-RAN" not in cp.stdout and cp.returncode in (98, 99), cp.stdout
