"""Policies: `hutch policy check|show` on the shipped and on broken files, and `run` refusing what a
policy's (or the admin's) ceilings forbid: exit 125 and one line naming the ceiling and where it is set."""
import os
import tomllib
from pathlib import Path

import pytest

from hutchlib import assert_hutch_error, describe, ok

SHIPPED = ("offline", "registries", "agent")
REGISTRY_HOSTS = ("pypi.org", "files.pythonhosted.org", "crates.io", "index.crates.io", "static.crates.io",
                  "proxy.golang.org", "sum.golang.org", "deb.debian.org", "security.debian.org", "registry.npmjs.org",
                  "github.com", "codeload.github.com", "objects.githubusercontent.com", "raw.githubusercontent.com")
LLM_HOSTS = ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "api.mistral.ai",
             "openrouter.ai")

# `run --policy` is wired by src/cli/run.cpp; until it applies policies these tests fail as expected.


def write(h, name: str, text: str) -> Path:
    """A policy file the mode's user can read."""
    p = h.work / name
    p.write_text(text)
    p.chmod(0o644)
    return p


def assert_invalid(cp, *needles: str):
    """`policy check` of an invalid policy: exit 1 and one 'hutch: ' line naming each needle."""
    assert_hutch_error(cp, *needles, code=1)
    assert cp.stdout == "", "nothing on stdout for an invalid policy" + describe(cp)


# ---------------------------------------------------------------------------------------------
# policy check

@pytest.mark.parametrize("name", SHIPPED)
def test_check_shipped_files(h, name):
    path = f"{h.world.policies}/{name}.toml"
    cp = ok(h("policy", "check", path))
    assert cp.stdout == f"{path}: ok\n"
    cp = ok(h("policy", "check", name))
    assert cp.stdout == f"{name}: ok\n"


@pytest.mark.parametrize("text, where, needle", [
    ('[network]\nmode = "egress"\nbogus = 1\n', "3:1", "unknown key 'network.bogus'"),
    ('[limits]\nmemory = "lots"\n', "2:10", "limits.memory"),
    ('[limits]\npids = "many"\n', "2:8", "must be an integer"),
    ('[network]\nallow = [{ host = "Not_A_Host" }]\n', "2:19", "invalid host name"),
    ('[network]\nallow = [{ cidr = "10.1.2.3/24" }]\n', "2:19", "invalid CIDR"),
    ('[network]\nallow = [{ host = "a.org", ports = ["9000-80"] }]\n', "2:37", "9000-80"),
    ('[network\nmode = "none"\n', "1:9", "invalid TOML"),
    ('include = ["nosuch"]\n', "1:12", "no shipped policy named nosuch"),
])
def test_check_malformed(h, text, where, needle):
    bad = write(h, "bad.toml", text)
    assert_invalid(h("policy", "check", bad), f"policy {bad}:{where}: ", needle)


def test_check_include_cycle(h):
    a = write(h, "a.toml", 'include = ["b.toml"]\n')
    write(h, "b.toml", '\ninclude = ["a.toml"]\n')
    assert_invalid(h("policy", "check", a), f"{h.work}/b.toml:2:12", "include cycle")


def test_check_missing_file(h):
    assert_invalid(h("policy", "check", h.work / "absent.toml"), str(h.work / "absent.toml"))


def test_check_against_the_admin_policy(h):
    admin = write(h, "admin.toml", '[ceilings]\nmemory = "8g"\n')
    user = write(h, "user.toml", '# mine\n[limits]\nmemory = "16g"\n')
    env = {"HUTCH_ADMIN_POLICY": str(admin)}
    cp = h("policy", "check", user, env=env)
    assert_invalid(cp, f"policy {user}:3:10: limits.memory = 16g exceeds the admin ceiling ceilings.memory = 8g "
                       f"({admin}:2:10)")
    ok(h("policy", "check", write(h, "small.toml", '[limits]\nmemory = "2g"\n'), env=env))


# ---------------------------------------------------------------------------------------------
# policy show

def hosts(policy: dict) -> list[str]:
    return [r["host"] for r in policy["network"]["allow"] if "host" in r]


def test_show_agent_includes_registries(h):
    cp = ok(h("policy", "show", "agent"))
    shown = tomllib.loads(cp.stdout)
    assert shown["network"]["mode"] == "egress"
    for host in REGISTRY_HOSTS + LLM_HOSTS:
        assert host in hosts(shown), f"{host} missing" + describe(cp)
    assert f"{h.world.policies}/registries.toml" in cp.stdout  # where the rules came from


def test_show_defaults_to_offline(h):
    cp = ok(h("policy", "show"))
    shown = tomllib.loads(cp.stdout)
    assert shown["network"]["mode"] == "none"
    assert shown["network"]["allow"] == []


def test_show_output_is_a_valid_policy(h):
    cp = ok(h("policy", "show", "agent"))
    copy = write(h, "copy.toml", cp.stdout)
    ok(h("policy", "check", copy))
    assert tomllib.loads(ok(h("policy", "show", copy)).stdout) == tomllib.loads(cp.stdout) | {}


def test_show_merges_deny_over_allow(h):
    p = write(h, "p.toml", 'include = ["registries"]\n[network]\ndeny = [{ host = "github.com" }]\n')
    shown = tomllib.loads(ok(h("policy", "show", p)).stdout)
    assert "github.com" not in hosts(shown)
    assert "codeload.github.com" in hosts(shown)
    assert {"host": "github.com", "proto": "any"} in shown["network"]["deny"]


def test_show_invalid_is_an_error(h):
    bad = write(h, "bad.toml", "bogus = 1\n")
    assert_hutch_error(h("policy", "show", bad), f"{bad}:1:1", "bogus")


# ---------------------------------------------------------------------------------------------
# run under a policy

def test_run_refuses_a_user_policy_above_the_admin_ceiling(h):
    admin = write(h, "admin.toml", '[ceilings]\nmemory = "1g"\n')
    user = write(h, "user.toml", '[limits]\nmemory = "2g"\n')
    cp = h("run", "--policy", user, "--", "true", env={"HUTCH_ADMIN_POLICY": str(admin)})
    assert_hutch_error(cp, f"{user}:2:10", "limits.memory = 2g", "the admin ceiling ceilings.memory = 1g",
                       f"{admin}:2:10")


def test_run_refuses_memory_above_the_policy_ceiling(h):
    p = write(h, "p.toml", '[ceilings]\nmemory = "64m"\n')
    cp = h("run", "--policy", p, "--memory", "128m", "--", "true")
    assert_hutch_error(cp, "--memory 128m", "ceilings.memory = 64m", f"{p}:2:10")


def test_run_refuses_a_bind_outside_the_allowed_sources(h):
    allowed = h.host_dir("allowed")
    other = h.host_dir("allowed2")  # a sibling whose name starts like the allowed one
    p = write(h, "p.toml", f'[mounts]\nallowed_sources = ["{allowed}"]\n')
    cp = h("run", "--policy", p, "-v", f"{other}:/mnt", "--", "true")
    assert_hutch_error(cp, str(other), "mounts.allowed_sources", f"{p}:2:19")
    ok(h("run", "--policy", p, "-v", f"{allowed}:/mnt", "--", "true"))


def test_run_forces_binds_read_only(h):
    d = h.host_dir("data")
    p = write(h, "p.toml", "[mounts]\nread_only = true\n")
    cp = h("run", "--policy", p, "-v", f"{d}:/mnt", "--", "sh", "-c", "touch /mnt/x")
    assert cp.returncode != 0, "the bind should be read-only" + describe(cp)
    assert not (d / "x").exists()


def test_run_refuses_unconfined_seccomp_when_not_allowed(h):
    p = write(h, "p.toml", "[seccomp]\nallow_unconfined = false\n")
    cp = h("run", "--policy", p, "--security-opt", "seccomp=unconfined", "--", "true")
    assert_hutch_error(cp, "seccomp=unconfined", "seccomp.allow_unconfined = false", f"{p}:2:20")


def test_run_passes_the_policy_environment(h):
    p = write(h, "p.toml", '[env]\npass = ["HUTCH_IT_PASSED"]\nallowed = ["HUTCH_IT_PASSED"]\n')
    cp = ok(h("run", "--policy", p, "--", "sh", "-c", "echo $HUTCH_IT_PASSED", env={"HUTCH_IT_PASSED": "yes"}))
    assert cp.stdout.splitlines()[-1:] == ["yes"], describe(cp)
    assert_hutch_error(h("run", "--policy", p, "-e", "OTHER=1", "--", "true"), "OTHER", "env.allowed")


def block_device() -> str | None:
    """A block device of this host, to name in policies (stat needs no permission on the node)."""
    for p in ("/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda", "/dev/loop0"):
        try:
            if os.path.exists(p) and os.stat(p).st_mode & 0o170000 == 0o060000:
                return p
        except OSError:
            pass
    return None


def test_check_and_show_device_rates(h):
    p = write(h, "p.toml", '[limits]\ndevice_read_bps = { "/dev/vda" = "10m" }\n'
                           '[ceilings]\ndevice_write_bps = { "/dev/vda" = "20m", "/dev/vdb" = 1048576 }\n')
    ok(h("policy", "check", p))
    shown = tomllib.loads(ok(h("policy", "show", p)).stdout)
    assert shown["limits"]["device_read_bps"] == {"/dev/vda": "10m"}
    assert shown["ceilings"]["device_write_bps"] == {"/dev/vda": "20m", "/dev/vdb": "1m"}
    bad = write(h, "bad.toml", '[limits]\ndevice_read_bps = { "vda" = "10m" }\n')
    assert_invalid(h("policy", "check", bad), f"policy {bad}:2:21: ", "'vda' is not a device path")


def test_run_refuses_a_device_rate_above_the_policy_ceiling(h):
    dev = block_device()
    if dev is None:
        pytest.skip("this host has no block device to name in a policy")
    p = write(h, "p.toml", f'[ceilings]\ndevice_read_bps = {{ "{dev}" = "10m" }}\n')
    cp = h("run", "--policy", p, "--device-read-bps", f"{dev}:11m", "--", "true")
    assert_hutch_error(cp, f"--device-read-bps {dev}:11m", f'ceilings.device_read_bps."{dev}" = 10m', f"{p}:2:")


def test_a_default_rate_for_a_device_this_host_lacks_is_one_warning(h):
    p = write(h, "p.toml", '[limits]\ndevice_write_bps = { "/dev/hutch-no-such-disk" = "10m" }\n')
    cp = h("run", "--policy", p, "--", "echo", "ran")
    assert cp.returncode == 0 and cp.stdout == "ran\n", describe(cp)
    warnings = [l for l in cp.stderr.splitlines() if l]
    assert warnings == [f'hutch: warning: policy default limits.device_write_bps."/dev/hutch-no-such-disk" ({p}:2:50) '
                        "is skipped: /dev/hutch-no-such-disk is not a block device on this host"], describe(cp)
    # The admin's default for the same device adds no second line.
    admin = write(h, "admin.toml", '[limits]\ndevice_write_bps = { "/dev/hutch-no-such-disk" = "5m" }\n')
    cp = h("run", "--policy", p, "--", "echo", "ran", env={"HUTCH_ADMIN_POLICY": str(admin)})
    assert cp.returncode == 0 and len([l for l in cp.stderr.splitlines() if l]) == 1, describe(cp)
