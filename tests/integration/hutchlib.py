"""Helpers shared by hutch's integration tests (the fixtures live in conftest.py)."""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

# What is tested: the binary, the built-in base tree and the policies, as the environment names them.
REPO = Path(__file__).resolve().parents[2]
HUTCH_BIN = os.environ.get("HUTCH_BIN") or str(REPO / "build" / "hutch")
ROOTFS_SRC = os.environ.get("HUTCH_DEFAULT_ROOTFS") or str(REPO / "build" / "rootfs" / "busybox")
# The embedded default image (an OCI layout of the same tree) and the image helper beside hutch.
LAYOUT_SRC = os.environ.get("HUTCH_DEFAULT_IMAGE_LAYOUT") or str(Path(ROOTFS_SRC).parent / "busybox-oci")
IMAGE_HELPER_SRC = os.environ.get("HUTCH_IMAGE_HELPER") or str(Path(HUTCH_BIN).parent / "hutch-image")
POLICY_SRC = os.environ.get("HUTCH_POLICY_DIR") or str(REPO / "policies")

# Docker's default capability set minus NET_RAW: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID
# SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
DEFAULT_CAPS = 0x00000000A80405FB
CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13

EXIT_HUTCH_ERROR = 125

# Refuses to go on when the shell is not inside a user namespace of its own: a probe of what
# the sandbox forbids must never run with the host's real privileges.
USERNS_GUARD = (
    'read a b c < /proc/self/uid_map; '
    'if [ "$a $b $c" = "0 0 4294967295" ]; then echo NOT-IN-A-USER-NAMESPACE; exit 99; fi; '
)

# ... and that its / is the sandbox's root, not the host's: a directory that exists on the host for
# the whole session (the tests' temporary directory) is not there, and pid 1 is hutch-init.
# Scripts that write outside binds and tmpfs start with this (as h.guard), so that they cannot
# touch the host even if isolation were broken.
def sandbox_guard(host_only_path: str) -> str:
    return USERNS_GUARD + (
        f"if [ -e '{host_only_path}' ] || [ \"$(cat /proc/1/comm)\" != hutch-init ]; then "
        "echo NOT-IN-THE-SANDBOX-ROOT; exit 98; fi; "
    )


GUARD_MARKERS = ("NOT-IN-A-USER-NAMESPACE", "NOT-IN-THE-SANDBOX-ROOT")


def guarded(cp: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fails when a guard above stopped the script: isolation is broken and the probe did not run."""
    for m in GUARD_MARKERS:
        assert m not in cp.stdout, f"isolation is broken ({m}); the probe was not run" + describe(cp)
    return cp


def describe(cp: subprocess.CompletedProcess) -> str:
    """The command, its status and its output, for assertion messages."""
    args = cp.args if isinstance(cp.args, str) else " ".join(str(a) for a in cp.args)
    return f"\n$ {args}\nexit {cp.returncode}\n--- stdout ---\n{cp.stdout}--- stderr ---\n{cp.stderr}"


def ok(cp: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert cp.returncode == 0, "command failed" + describe(cp)
    return cp


def assert_hutch_error(cp: subprocess.CompletedProcess, *needles: str, code: int = EXIT_HUTCH_ERROR) -> str:
    """Exit `code` and exactly one line on stderr, starting with 'hutch: ' and naming each needle."""
    assert cp.returncode == code, f"expected exit {code}" + describe(cp)
    lines = cp.stderr.splitlines()
    assert len(lines) == 1, "expected exactly one line on stderr" + describe(cp)
    assert lines[0].startswith("hutch: "), "stderr must start with 'hutch: '" + describe(cp)
    for n in needles:
        assert n.lower() in lines[0].lower(), f"the error should name {n!r}" + describe(cp)
    return lines[0]


def parse_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def caps_of(status: dict[str, str], key: str) -> int:
    return int(status[key], 16)


def parse_idmap(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in line.split()) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# Host processes.

def proc_stat(pid: int):
    """(comm, state, ppid, starttime) of a host process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    lp, rp = data.index("("), data.rindex(")")
    comm = data[lp + 1:rp]
    rest = data[rp + 2:].split()
    return comm, rest[0], int(rest[1]), int(rest[19])


def alive(pid: int, starttime: int) -> bool:
    """True while the process that had this start time exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[3] == starttime and st[1] not in ("Z", "X")


def host_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def host_processes() -> dict[int, tuple]:
    """pid -> (comm, state, ppid, starttime, cmdline) for every host process."""
    out = {}
    for pid in host_pids():
        st = proc_stat(pid)
        if st is None:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        out[pid] = (*st, cmd)
    return out


def children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def descendant_stats(pid: int) -> dict[int, tuple]:
    """pid -> proc_stat of every live or zombie process below `pid`."""
    found = {p: proc_stat(p) for p in descendants(pid)}
    return {p: st for p, st in found.items() if st}


def ps_args() -> dict[int, str]:
    """pid -> args, as `ps -eo pid,args` on the host shows them."""
    cp = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    out = {}
    for line in cp.stdout.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            out[int(parts[0])] = parts[1]
    return out


def wait_until(pred, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def mount_count() -> int:
    return len(Path("/proc/self/mountinfo").read_text().splitlines())


# ---------------------------------------------------------------------------------------------
# Terminals.

def run_in_pty(argv, env, rows=30, cols=100, send: bytes | None = None, timeout=30.0,
               resize: tuple[int, int] | None = None):
    """Runs argv with stdin/stdout/stderr on a fresh pty of rows x cols; returns (status, output).
    Once the output shows READY: writes `send` to the terminal, or with `resize` (rows, cols)
    resizes it and sends the program SIGWINCH, as a terminal emulator's resize does."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    sent = send is None and resize is None
    try:
        while time.monotonic() < deadline:
            if not sent and b"READY" in out:
                if send is not None:
                    os.write(master, send)
                if resize is not None:
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", resize[0], resize[1], 0, 0))
                    p.send_signal(signal.SIGWINCH)
                sent = True
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave is closed
                    break
                if not data:
                    break
                out += data
            elif p.poll() is not None:
                # Exited; give the pty a moment to hand over what is left.
                r, _, _ = select.select([master], [], [], 0.3)
                if not r:
                    break
        else:
            p.kill()
            raise AssertionError(f"timed out after {timeout}s; output so far: {out!r}")
        return p.wait(timeout=10), out.decode(errors="replace")
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()


def kill_quietly(p: subprocess.Popen):
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def matches(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.M) is not None


def grants_aux_group_subids() -> bool:
    """GRANT_AUX_GROUP_SUBIDS yes in /etc/login.defs: newuidmap and newgidmap then accept a caller
    whose group is not its login group (as under sg or newgrp)."""
    try:
        with open("/etc/login.defs") as f:
            defs = [line.split()[:2] for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError:
        return False
    return ["GRANT_AUX_GROUP_SUBIDS", "yes"] in defs
