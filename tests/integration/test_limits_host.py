"""cgroup limits on the host the tests run on. On a v1 or hybrid host (like this project's
machine) an explicit limit is refused with what to change, and limits that only come from a
policy's defaults are skipped with one warning. On a pure v2 host the limits themselves are
tested in tests/vm (inside User-Mode Linux); here only the refusal path can be checked."""
import os

import pytest

from hutchlib import assert_hutch_error


def pure_v2() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


needs_hybrid = pytest.mark.skipif(pure_v2(), reason="the host has a pure cgroup v2 hierarchy: see tests/vm")


@needs_hybrid
def test_explicit_limit_on_a_hybrid_host_is_a_clear_error(h):
    cp = h("run", "--memory", "64m", "--", "true")
    assert_hutch_error(cp, "cgroup limits need a pure cgroup v2 host")
    assert "systemd.unified_cgroup_hierarchy=1" in cp.stderr
    assert h.sandbox_dirs() == []


@needs_hybrid
def test_stats_alone_on_a_hybrid_host_say_what_to_drop(h):
    cp = h("run", "--stats", "--", "true")
    assert_hutch_error(cp, "cgroup limits need a pure cgroup v2 host")
    assert "without resource limits and --stats" in cp.stderr


def test_a_pids_limit_must_be_a_positive_whole_number(h):
    for bad in ("0", "-1", "1.5", "many"):
        cp = h("run", "--pids-limit", bad, "--", "true")
        assert_hutch_error(cp, f"'{bad}' is not a positive whole number")


@needs_hybrid
def test_policy_default_limits_degrade_to_one_warning(h):
    d = h.host_dir("policy", {"limits.toml": '[limits]\nmemory = "512m"\npids = 100\n'})
    cp = h("run", "--policy", str(d / "limits.toml"), "--", "echo", "ran")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "ran\n"
    warnings = [l for l in cp.stderr.splitlines() if l]
    assert len(warnings) == 1 and warnings[0].startswith("hutch: warning: the policy's resource limits are not applied"), cp.stderr
