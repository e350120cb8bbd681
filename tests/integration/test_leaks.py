"""Many sandboxes in a row leave nothing behind: no directory, state file, process or mount."""
import os
import time

import pytest
from conftest import _make_hutch, primary_mode_name
from hutchlib import describe, host_processes, mount_count, wait_until

RUNS = 200


def _ours(procs: dict, binary: str) -> dict:
    """Processes of this session's hutch binary among pid -> (comm, ..., cmdline). A sandbox's init
    is a clone of hutch, so its command line names the same binary; other sessions' hutch
    processes (another test run on the same machine) are not ours. Zombies have no command line:
    they count when their comm says hutch."""
    return {pid: p for pid, p in procs.items()
            if binary in p[4] or (p[1] == "Z" and p[0] in ("hutch-init", "hutch"))}


def test_sequential_runs_leave_nothing(h1):
    _sequential_runs_leave_nothing(h1)


def test_sequential_runs_of_a_user_with_subordinate_ids_leave_nothing(world):
    # The other way into a sandbox: a user namespace nested in the kept one (sandbox/pause.hpp),
    # the whole /etc/subuid range mapped, the maps written by a go-between.
    if primary_mode_name() == "subuid":
        pytest.skip("the test above ran in this mode already")
    h = _make_hutch(world, "subuid")
    try:
        _sequential_runs_leave_nothing(h)
    finally:
        h.cleanup()


def _sequential_runs_leave_nothing(h):
    assert h("run", "--", "true").returncode == 0  # makes the base copy
    procs_before = host_processes()
    mounts_before = mount_count()
    t0 = time.monotonic()
    failures = []
    for i in range(RUNS):
        cp = h("run", "--", "true", timeout=30)
        if cp.returncode != 0:
            failures.append(f"run {i}:" + describe(cp))
            if len(failures) > 3:
                break
    elapsed = time.monotonic() - t0
    assert not failures, "\n".join(failures)
    assert h.sandbox_dirs() == [], f"sandbox directories left: {h.sandbox_dirs()}"
    # Besides the lock and the mount point, only the next run's directory, made ready.
    extra = sorted(set(os.listdir(h.root / "sandboxes")) - {".sweep.lock", ".root"})
    assert len(extra) == 1 and extra[0].startswith(".spare-") and not extra[0].startswith(".spare-new-"), extra
    assert h.state_files() == [], f"state files left: {h.state_files()}"
    # The store holds the one busybox layer and nothing from the runs; its temp dir is empty.
    assert len(os.listdir(h.root / "layers")) == 1, os.listdir(h.root / "layers")
    assert not os.path.isdir(h.root / "tmp") or os.listdir(h.root / "tmp") == [], os.listdir(h.root / "tmp")
    assert mount_count() == mounts_before, "the host's mount table changed"
    def leftovers():
        procs_after = host_processes()
        new = {pid: p for pid, p in procs_after.items()
               if pid not in procs_before or procs_before[pid][3] != p[3]}
        return new, _ours(new, h.world.bin)

    # Zombies are given a moment: an orphan is reaped by the host's pid 1, not by the test.
    wait_until(lambda: not leftovers()[1], 10, interval=0.2)
    new, left = leftovers()
    running = {pid: p for pid, p in left.items() if p[1] != "Z"}
    assert not running, f"processes left running: {running}"
    assert not left, (f"{len(left)} unreaped processes (zombies, parent pid "
                      f"{sorted({p[2] for p in left.values()})}) 10s after the last run; e.g. "
                      f"{dict(list(left.items())[:3])}")
    # Owned by the sandbox's ids on the host: nothing may run as them any more.
    first, count = h.mode.uid_map[-1][1], h.mode.uid_map[-1][2]
    if h.mode.name == "root":
        stray = {}
        for pid in new:
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            if first <= uid < first + count:
                stray[pid] = new[pid]
        assert not stray, f"processes of the sandbox range left behind: {stray}"
    # Keep the suite quick: a run of `true` is a few tens of milliseconds.
    assert elapsed / RUNS < 0.5, f"{RUNS} runs took {elapsed:.1f}s"
