"""The rootless user namespace keeper (sandbox/pause.hpp): one idle process per state directory
holds the caller's subordinate-id map, so that sandboxes nest their own user namespace in it
instead of running newuidmap and newgidmap on every start."""
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from hutchlib import alive, ok, parse_idmap, proc_stat, wait_until


def _needs_keeper(h):
    if h.mode.name != "subuid":
        pytest.skip(f"only rootless callers with subordinate ids have a keeper (mode {h.mode.name})")


def _record(h) -> tuple[int, int]:
    """(pid, start time) from the keeper's state file."""
    first = (h.root / "run" / "pause").read_text().splitlines()[0]
    pid, start = first.split()
    return int(pid), int(start)


def _gone(pid: int, start: int) -> bool:
    """Reaped, not only dead: a zombie keeper's user namespace can still be joined, and hutch
    rightly keeps using it until the zombie is gone."""
    st = proc_stat(pid)
    return st is None or st[3] != start


def _kill_keeper(pid: int, start: int, sig: int):
    """Signals the keeper this test's hutch started, after checking the pid is still it (it
    leaves by itself when idle, and its pid could be reused)."""
    assert alive(pid, start), f"keeper {pid} is gone already"
    os.kill(pid, sig)
    assert wait_until(lambda: _gone(pid, start), 5), f"keeper {pid} still there"


def test_keeper_is_shared_and_holds_nothing_of_ours(h):
    _needs_keeper(h)
    ok(h("run", "--", "true"))
    pid, start = _record(h)
    assert alive(pid, start)
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "hutch-pause"
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"hutch-pause"
    assert os.stat(f"/proc/{pid}").st_uid == h.mode.uid
    # Its namespace has the caller's map, seen from the host.
    assert parse_idmap(Path(f"/proc/{pid}/uid_map").read_text()) == h.mode.uid_map
    assert parse_idmap(Path(f"/proc/{pid}/gid_map").read_text()) == h.mode.gid_map
    # No descriptor of hutch's (locks, store, pipes): stdio on /dev/null only.
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert fds == {0: "/dev/null", 1: "/dev/null", 2: "/dev/null"}, fds
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    # The next sandboxes use it too: no second keeper.
    for _ in range(3):
        ok(h("run", "--", "true"))
    assert _record(h) == (pid, start)


def test_a_killed_keeper_is_replaced(h):
    _needs_keeper(h)
    ok(h("run", "--", "true"))
    pid, start = _record(h)
    _kill_keeper(pid, start, signal.SIGKILL)
    cp = ok(h.sh("id -u; cat /proc/self/uid_map"))
    assert cp.stdout.split()[0] == "0", cp.stdout
    assert _record(h)[0] != pid


def test_a_record_naming_another_process_is_not_trusted(h):
    _needs_keeper(h)
    state = h.root / "run"
    ok(h("run", "--", "true"))  # creates the state directory
    pid, start = _record(h)
    _kill_keeper(pid, start, signal.SIGKILL)
    # pid 1 (root's) with its true start time: its user namespace is not the caller's.
    init_start = proc_stat(1)[3]
    text = (state / "pause").read_text().splitlines(keepends=True)
    (state / "pause").write_text(f"1 {init_start}\n" + "".join(text[1:]))
    cp = ok(h.sh("cat /proc/self/uid_map"))
    new_pid, _ = _record(h)
    assert new_pid not in (1, pid)
    assert Path(f"/proc/{new_pid}/comm").read_text().strip() == "hutch-pause", cp.stdout


def test_sandboxes_outlive_an_idle_keeper(h):
    _needs_keeper(h)
    name = f"idle-{uuid.uuid4().hex[:8]}"
    ok(h("create", "--name", name, env={"HUTCH_PAUSE_IDLE": "1"}))
    try:
        pid, start = _record(h)
        # Unused for its idle time, it leaves by itself, and takes its record with it.
        assert wait_until(lambda: _gone(pid, start), 10), f"keeper {pid} still there"
        assert not (h.root / "run" / "pause").exists()
        # The sandbox's namespaces do not depend on it.
        cp = ok(h("exec", name, "--", "sh", "-c", "echo alive; id -u"))
        assert cp.stdout.split() == ["alive", "0"], cp.stdout
        info = json.loads(ok(h("inspect", name)).stdout)[0]
        assert info["state"]["status"] == "running"
    finally:
        h("rm", "-f", name)
    # A new sandbox starts a new keeper.
    ok(h("run", "--", "true"))
    assert _record(h)[0] != pid


def test_keeper_ends_on_sigterm(h):
    """It inherits nothing of the front end's signal handling (which blocks SIGTERM while a
    sandbox runs): a plain kill ends it."""
    _needs_keeper(h)
    ok(h("run", "--", "true"))
    pid, start = _record(h)
    status = Path(f"/proc/{pid}/status").read_text()
    blocked = int(next(l for l in status.splitlines() if l.startswith("SigBlk:")).split()[1], 16)
    ignored = int(next(l for l in status.splitlines() if l.startswith("SigIgn:")).split()[1], 16)
    assert blocked == 0 and ignored == 0, status
    _kill_keeper(pid, start, signal.SIGTERM)


def test_a_record_naming_a_nested_namespace_of_ours_is_not_trusted(h):
    # A user namespace made inside one of the caller's (as a sandbox's root could make one) is
    # owned by the caller too; only one made from the caller's own namespace may be the keeper.
    _needs_keeper(h)
    state = h.root / "run"
    ok(h("run", "--", "true"))
    pid, start = _record(h)
    _kill_keeper(pid, start, signal.SIGKILL)
    p = subprocess.Popen(h.mode.prefix() + ["unshare", "-U", "-r", "unshare", "-U", "sleep", "100"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # setpriv and both unshares exec in turn: sleep is that same process in the end.
        assert wait_until(lambda: (proc_stat(p.pid) or ("",))[0] == "sleep", 10)
        nested, st = p.pid, proc_stat(p.pid)
        text = (state / "pause").read_text().splitlines(keepends=True)
        (state / "pause").write_text(f"{nested} {st[3]}\n" + "".join(text[1:]))
        ok(h.sh("cat /proc/self/uid_map"))
        new_pid, _ = _record(h)
        assert new_pid != nested
        assert Path(f"/proc/{new_pid}/comm").read_text().strip() == "hutch-pause"
    finally:
        p.kill()
        p.wait()
