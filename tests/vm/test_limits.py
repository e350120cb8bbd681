"""cgroup v2 limits, as root and as a delegated user, inside the UML VM."""
import json
import os
import re
import shutil
import signal
import tempfile
import time

import pytest

from conftest import Hutch, own_cgroup_parent

# Holds ~100 MB in a shell variable: well past a 32m limit.
HOG = "x=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived"


def cgroup_of(name):
    """The cgroup of the sandbox `name`: NAME-TAG, TAG 12 hex digits naming its state directory.
    A path that does not exist when there is none; each test's names are its own."""
    parent = own_cgroup_parent()
    found = [d for d in os.listdir(parent) if re.fullmatch(re.escape(name) + "-[0-9a-f]{12}", d)] \
        if os.path.isdir(parent) else []
    assert len(found) <= 1, found
    return os.path.join(parent, found[0] if found else name + "-none")


def test_memory_limit_ends_in_oom_with_a_message(h):
    r = h("run", "--name", "oom", "--memory", "32m", "--", "sh", "-c", HOG)
    assert r.returncode == 137, r
    assert "hutch: out of memory: the sandbox reached its 32 MiB memory limit" in r.stderr
    assert "survived" not in r.stdout
    assert not os.path.exists(cgroup_of("oom"))


def test_pids_limit_contains_a_fork_bomb_and_cleans_up(h):
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait"
    r = h("run", "--name", "bomb", "--pids-limit", "20", "--stats", "--timeout", "10s", "--", "sh", "-c", bomb)
    # Either the shell gives up when fork fails, or the timeout ends it; it never gets 200 sleeps.
    assert r.returncode in (2, 137), r
    line = [l for l in r.stderr.splitlines() if l.startswith("hutch: stats:")][0]
    peak = int(line.split("pids peak ")[1].split(",")[0])
    assert 0 < peak <= 20, line
    assert not os.path.exists(cgroup_of("bomb"))
    # Nothing of it survives anywhere: no `sleep 30` left on the machine.
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == "sleep\x0030\x00"]
    assert leftovers == []


def _state(pid):
    """The state letter of /proc/PID/stat, "" when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def test_pids_limit_hits_are_visible_in_inspect(h):
    assert h("create", "--name", "pl", "--pids-limit", "5").returncode == 0
    try:
        h("exec", "pl", "--", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>/dev/null; true")
        info = json.loads(h("inspect", "pl").stdout)[0]
        assert info["state"]["usage"]["pids_limit_hits"] > 0, info["state"]
    finally:
        assert h("rm", "-f", "pl").returncode == 0
    assert not os.path.exists(cgroup_of("pl"))


def test_exec_cannot_start_past_the_pids_limit(h):
    # The init and one exec'd sleep fill pids.max 2: the next command cannot be born there.
    assert h("create", "--name", "full", "--pids-limit", "2").returncode == 0
    sleeper = h.popen("exec", "full", "--", "sleep", "30")
    try:
        cg = cgroup_of("full")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and open(f"{cg}/pids.current").read().strip() != "2":
            time.sleep(0.05)
        assert open(f"{cg}/pids.current").read().strip() == "2"
        r = h("exec", "full", "--", "true")
        assert r.returncode == 125, r
        assert "cannot start the command" in r.stderr, r.stderr
        assert open(f"{cg}/pids.current").read().strip() == "2"
    finally:
        sleeper.kill()
        sleeper.wait()
        assert h("rm", "-f", "full").returncode == 0
    assert not os.path.exists(cgroup_of("full"))


def test_cpu_max_throttles(h):
    busy = "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done"
    r = h("run", "--cpus", "0.2", "--stats", "--", "sh", "-c", busy)
    assert r.returncode == 0, r
    line = [l for l in r.stderr.splitlines() if l.startswith("hutch: stats:")]
    assert line, r.stderr
    throttled = int(line[0].split("throttled ")[1].split(" ")[0])
    assert throttled > 0, line[0]


def test_a_run_may_not_take_the_cgroup_of_a_sandbox_of_its_name(h):
    # The run's name is reserved before its cgroup is made: a cgroup of that name belongs to a
    # live sandbox, never to a crashed run, and must be left alone.
    assert h("create", "--name", "taken", "--pids-limit", "64").returncode == 0
    try:
        r = h("run", "--name", "taken", "--pids-limit", "32", "--", "true")
        assert r.returncode == 125 and "already exists" in r.stderr, r
        r = h("run", "--name", "taken", "--read-only", "--stats", "--", "true")
        assert r.returncode == 125 and "already exists" in r.stderr, r
        assert h("exec", "taken", "--", "true").returncode == 0
        with open(os.path.join(cgroup_of("taken"), "pids.max")) as f:
            assert f.read().strip() == "64"
    finally:
        h("rm", "-f", "taken")


def test_cpu_max_is_the_quota_asked_for(h):
    # --cpus N is N periods of 100 ms, rounded to the microsecond, at least 1 ms (the kernel's minimum).
    for cpus, want in (("1.5", "150000 100000"), ("0.333333", "33333 100000"), ("0.000001", "1000 100000")):
        assert h("create", "--name", "cq", "--cpus", cpus).returncode == 0
        try:
            with open(os.path.join(cgroup_of("cq"), "cpu.max")) as f:
                assert f.read().strip() == want, cpus
        finally:
            h("rm", "-f", "cq")


def test_exec_in_a_persistent_sandbox_is_bounded_by_its_limits(h):
    assert h("create", "--name", "box", "--memory", "32m").returncode == 0
    try:
        r = h("exec", "box", "--", "sh", "-c", HOG)
        assert r.returncode == 137, r
        assert "out of memory: the sandbox reached its 32 MiB memory limit" in r.stderr
        # The sandbox lives on, and its cgroup is where its exec'd commands are.
        r = h("exec", "box", "--", "cat", "/proc/self/cgroup")
        assert r.returncode == 0 and r.stdout.strip() == "0::/", r
        assert os.path.isdir(cgroup_of("box"))
    finally:
        h("rm", "-f", "box")
    assert not os.path.exists(cgroup_of("box"))


def test_stats_are_reported(h):
    r = h("run", "--stats", "--memory", "64m", "--", "sh", "-c", "head -c 20000000 /dev/zero | wc -c")
    assert r.returncode == 0, r
    line = [l for l in r.stderr.splitlines() if l.startswith("hutch: stats:")][0]
    assert "peak memory" in line and "cpu" in line and "pids peak" in line and "io read" in line
    # A persistent sandbox has a cgroup, and so statistics, without any limit or --stats.
    assert h("create", "--name", "st").returncode == 0
    try:
        r = h("stats", "--format", "json", "st")
        assert r.returncode == 0, r
        s = json.loads(r.stdout)[0]
        assert s["name"] == "st" and s["pids_current"] >= 1 and s["memory_peak"] > 0
    finally:
        h("rm", "-f", "st")


def _run_sleeping(h, name):
    """`hutch run --name NAME --pids-limit 50 -- sleep 60`, once its cgroup exists and it runs."""
    p = h.popen("run", "--name", name, "--pids-limit", "50", "--", "sleep", "60")
    deadline = time.monotonic() + 20
    while not os.path.isdir(cgroup_of(name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.isdir(cgroup_of(name))
    time.sleep(0.5)
    return p


def test_cgroup_is_gone_after_every_exit_path(h):
    # normal exit, failing command, timeout
    for args in (["true"], ["sh", "-c", "exit 3"], ["--timeout", "1s", "--", "sleep", "60"]):
        name = "gone%d" % len(args)
        r = h("run", "--name", name, "--pids-limit", "50", *args)
        assert not os.path.exists(cgroup_of(name)), (args, r)
    # kill -9 of hutch itself: the next hutch invocation sweeps the cgroup
    p = _run_sleeping(h, "killed")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        h("ps")  # any invocation sweeps what a crash left
        if not os.path.exists(cgroup_of("killed")):
            break
        time.sleep(0.2)
    assert not os.path.exists(cgroup_of("killed"))


def test_io_weight_unavailable_is_a_clear_error(h):
    if os.path.exists("/sys/fs/cgroup/io.weight") or os.path.exists("/sys/fs/cgroup/hutch/io.weight"):
        return
    r = h("run", "--io-weight", "100", "--", "true")
    assert r.returncode == 125
    assert r.stderr.startswith("hutch: ") and "io.weight" in r.stderr


def test_sandboxes_of_the_same_name_in_two_states_keep_their_own_cgroups(h):
    # Two --root directories may each have a sandbox "same"; their cgroups share a parent. A run
    # in the second must neither take the first's cgroup for a crashed run's nor kill it.
    other = Hutch(tempfile.mkdtemp(prefix="hutch-vm-other-", dir="/tmp"))
    os.chmod(other.root, 0o711)
    assert h("create", "--name", "same", "--pids-limit", "64").returncode == 0
    try:
        mine = json.loads(h("inspect", "same").stdout)[0]["state"]["cgroup"]
        r = other("run", "--name", "same", "--pids-limit", "32", "--", "cat", "/proc/self/cgroup")
        assert r.returncode == 0 and r.stdout.strip() == "0::/", r
        assert h("exec", "same", "--", "true").returncode == 0
        with open(os.path.join(mine, "pids.max")) as f:
            assert f.read().strip() == "64"
        assert other("create", "--name", "same", "--pids-limit", "16").returncode == 0
        theirs = json.loads(other("inspect", "same").stdout)[0]["state"]["cgroup"]
        assert theirs != mine and os.path.dirname(theirs) == os.path.dirname(mine)
        assert other("rm", "-f", "same").returncode == 0
        assert not os.path.exists(theirs) and os.path.isdir(mine)
    finally:
        h("rm", "-f", "same")
        other("rm", "-f", "same")
        shutil.rmtree(other.root, ignore_errors=True)
    assert not os.path.exists(mine)


def test_rm_removes_the_cgroup_of_a_sandbox_whose_init_was_killed(h):
    assert h("create", "--name", "dead", "--pids-limit", "64").returncode == 0
    info = json.loads(h("inspect", "dead").stdout)[0]
    cg, pid = info["state"]["cgroup"], info["state"]["pid"]
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().strip() == "hutch-init"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _state(pid) not in ("", "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.05)
    # Dead, though perhaps not reaped yet: a zombie init is a stopped sandbox.
    assert json.loads(h("inspect", "dead").stdout)[0]["state"]["status"] == "stopped"
    assert os.path.isdir(cg)  # the kernel does not remove it; hutch must
    assert h("rm", "dead").returncode == 0
    assert not os.path.exists(cg)


def test_an_oom_kill_of_another_process_is_explained(h):
    # The command survives the OOM kill of its child and fails on its own: the note still says why.
    r = h("run", "--memory", "32m", "--", "sh", "-c", "(" + HOG + "); exit 3")
    assert r.returncode == 3, r
    assert "hutch: out of memory: a process of the sandbox was killed at its 32 MiB memory limit" in r.stderr, r.stderr
    assert "survived" not in r.stdout


def test_stats_enable_the_controllers_they_read_under_a_new_parent(h):
    # A parent no earlier run prepared: --stats alone must enable memory and pids for its
    # children, or memory.peak and pids.peak would not exist and read as 0.
    if os.geteuid() != 0:
        pytest.skip("HUTCH_CGROUP_PARENT is root's: a delegated user's parent is fixed")
    parent = tempfile.mkdtemp(prefix="hutch-stats-", dir="/sys/fs/cgroup")
    try:
        env = dict(os.environ, HUTCH_CGROUP_PARENT=parent)
        p = h.popen("run", "--name", "fresh", "--stats", "--", "sh", "-c",
                    "head -c 20000000 /dev/zero | wc -c; sleep 1", env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(d.startswith("fresh-") for d in os.listdir(parent)):
            time.sleep(0.02)
        assert any(d.startswith("fresh-") for d in os.listdir(parent)), "not under HUTCH_CGROUP_PARENT"
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        line = [l for l in err.splitlines() if l.startswith("hutch: stats:")][0]
        peak_mib = float(line.split("peak memory ")[1].split(" MiB")[0])
        pids = int(line.split("pids peak ")[1].split(",")[0])
        assert peak_mib > 0 and pids >= 2, line
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            assert {"memory", "pids"} <= set(f.read().split())
        assert [d for d in os.listdir(parent) if d.startswith("fresh-")] == []
        # A persistent sandbox with only a pids limit still has every figure for `hutch stats`.
        h2 = tempfile.mkdtemp(prefix="hutch-vm-stats-", dir="/tmp")
        os.chmod(h2, 0o711)
        other = Hutch(h2)
        try:
            assert other("create", "--name", "pl", "--pids-limit", "20", env=env).returncode == 0
            assert other("exec", "pl", "--", "sh", "-c", "head -c 5000000 /dev/zero | wc -c", env=env).returncode == 0
            s = json.loads(other("stats", "--format", "json", "pl", env=env).stdout)[0]
            assert s["memory_peak"] > 0 and s["pids_current"] >= 1, s
        finally:
            other("rm", "-f", "pl", env=env)
            shutil.rmtree(h2, ignore_errors=True)
    finally:
        _remove_cgroup_tree(parent)


def _remove_cgroup_tree(path):
    """rmdir of `path` and its children, once the inits that hutch-exiting holds have left."""
    for d in os.listdir(path):
        if os.path.isdir(os.path.join(path, d)):
            _remove_cgroup_tree(os.path.join(path, d))
    deadline = time.monotonic() + 10
    while True:
        with open(os.path.join(path, "cgroup.events")) as f:
            if "populated 0" in f.read() or time.monotonic() > deadline:
                break
        time.sleep(0.05)
    os.rmdir(path)


def test_each_limit_lands_in_its_control_file(h):
    assert h("create", "--name", "files", "--memory", "64m", "--memory-swap", "96m", "--cpu-weight", "50",
             "--pids-limit", "40").returncode == 0
    try:
        cg = json.loads(h("inspect", "files").stdout)[0]["state"]["cgroup"]
        want = {"memory.max": "67108864", "pids.max": "40", "cpu.weight": "50"}
        if os.path.exists(os.path.join(cg, "memory.swap.max")):
            want["memory.swap.max"] = str(32 << 20)  # --memory-swap counts memory plus swap
        for name, value in want.items():
            with open(os.path.join(cg, name)) as f:
                assert f.read().strip() == value, name
    finally:
        h("rm", "-f", "files")
    # Without --memory-swap a memory limit allows no swap.
    assert h("create", "--name", "noswap", "--memory", "64m").returncode == 0
    try:
        cg = json.loads(h("inspect", "noswap").stdout)[0]["state"]["cgroup"]
        if os.path.exists(os.path.join(cg, "memory.swap.max")):
            with open(os.path.join(cg, "memory.swap.max")) as f:
                assert f.read().strip() == "0"
    finally:
        h("rm", "-f", "noswap")


def test_a_policys_limits_are_applied(h, tmp_path):
    policy = tmp_path / "limits.toml"
    policy.write_text('[limits]\nmemory = "48m"\npids = 30\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(policy, 0o644)
    assert h("create", "--name", "pol", "--policy", str(policy)).returncode == 0
    try:
        cg = json.loads(h("inspect", "pol").stdout)[0]["state"]["cgroup"]
        with open(os.path.join(cg, "memory.max")) as f:
            assert f.read().strip() == str(48 << 20)
        with open(os.path.join(cg, "pids.max")) as f:
            assert f.read().strip() == "30"
    finally:
        h("rm", "-f", "pol")


def test_sigterm_to_hutch_removes_the_cgroup(h):
    p = _run_sleeping(h, "term")
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, p.returncode
    assert not os.path.exists(cgroup_of("term"))


# tools/uml/run.sh gives the guest one empty scratch disk, /dev/ubda (mode 0666 there).
DISK = "/dev/ubda"
needs_disk = pytest.mark.skipif(not os.path.exists(DISK), reason=f"no {DISK} in this VM: tools/uml/run.sh attaches one")


def _io_max_of(cg):
    """io.max's line for the disk, e.g. '98:0 rbps=1048576 wbps=max riops=max wiops=max'."""
    st = os.stat(DISK)
    with open(os.path.join(cg, "io.max")) as f:
        lines = [l for l in f.read().splitlines() if l.startswith(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} ")]
    return lines[0] if lines else ""


@needs_disk
def test_device_rates_land_in_io_max(h):
    assert h("create", "--name", "iomax", "--device-read-bps", f"{DISK}:1m", "--device-write-bps",
             f"{DISK}:2m").returncode == 0
    try:
        cg = json.loads(h("inspect", "iomax").stdout)[0]["state"]["cgroup"]
        assert _io_max_of(cg).split()[1:] == ["rbps=1048576", "wbps=2097152", "riops=max", "wiops=max"]
    finally:
        h("rm", "-f", "iomax")


def _timed_dd(h, flag, rate, dd):
    """Seconds that `dd` took inside a sandbox limited by `flag DISK:rate`, measured inside it, and the
    --stats line. The disk is bound in; O_DIRECT keeps the page cache out of the way."""
    script = f"a=$(cut -d' ' -f1 /proc/uptime); {dd} 2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"
    r = h("run", flag, f"{DISK}:{rate}", "--stats", "-v", f"{DISK}:/dev/disk", "--", "sh", "-c", script)
    assert r.returncode == 0, r
    a, b = map(float, r.stdout.split()[-2:])
    return b - a, [l for l in r.stderr.splitlines() if l.startswith("hutch: stats:")][0]


@needs_disk
def test_a_device_read_rate_throttles_reads(h):
    # 1.5 MiB at 1 MiB/s: at least 1.2 s once the first 0.3 s allowance is spent; unthrottled, a
    # few milliseconds.
    took, stats = _timed_dd(h, "--device-read-bps", "1m", "dd if=/dev/disk of=/dev/null bs=64k count=24 iflag=direct")
    assert took >= 1.2, took
    assert int(stats.split("io read ")[1].split()[0]) >= 24 * 65536, stats


@needs_disk
def test_a_device_write_rate_throttles_writes(h):
    took, stats = _timed_dd(h, "--device-write-bps", "1m",
                            "dd if=/dev/zero of=/dev/disk bs=64k count=24 seek=256 oflag=direct")
    assert took >= 1.2, took
    assert int(stats.split("written ")[1].split()[0]) >= 24 * 65536, stats


@needs_disk
def test_a_policys_device_rates_are_applied(h, tmp_path):
    # A default fills the device no flag names, a ceiling caps the one a flag names, and a default
    # for a device this VM lacks is one warning.
    policy = tmp_path / "io.toml"
    policy.write_text(f'[limits]\ndevice_read_bps = {{ "{DISK}" = "3m", "/dev/hutch-no-disk" = "1m" }}\n'
                      f'[ceilings]\ndevice_write_bps = {{ "{DISK}" = "4m" }}\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(policy, 0o644)
    r = h("create", "--name", "iopol", "--policy", str(policy))
    assert r.returncode == 0, r
    assert r.stderr.count("hutch: warning:") == 1 and "/dev/hutch-no-disk is not a block device" in r.stderr, r
    try:
        cg = json.loads(h("inspect", "iopol").stdout)[0]["state"]["cgroup"]
        assert _io_max_of(cg).split()[1:3] == [f"rbps={3 << 20}", f"wbps={4 << 20}"]
    finally:
        h("rm", "-f", "iopol")
    r = h("run", "--policy", str(policy), "--device-write-bps", f"{DISK}:5m", "--", "true")
    assert r.returncode == 125 and f'ceilings.device_write_bps."{DISK}" = 4m' in r.stderr, r
