"""The command's process: exit status, environment, user, limits, timeout, signals, terminal."""
import os
import re
import select
import signal
import subprocess
import time

import pytest

from hutchlib import (alive, assert_hutch_error, describe, descendant_stats, kill_quietly, mount_count, ok, ps_args,
                      run_in_pty, wait_until)


# ---------------------------------------------------------------------------------------------
# Exit status.

@pytest.mark.parametrize("code", [0, 1, 3, 125])
def test_exit_code_propagates(h, code):
    cp = h.sh(f"echo out; exit {code}")
    assert cp.returncode == code, describe(cp)
    assert cp.stdout == "out\n"


def test_exit_code_not_executable(h):
    cp = h("run", "--", "/etc/passwd")
    assert cp.returncode == 126, describe(cp)
    assert "/etc/passwd" in cp.stderr, describe(cp)


def test_exit_code_not_found(h):
    cp = h("run", "--", "no-such-command-xyz")
    assert cp.returncode == 127, describe(cp)
    assert "no-such-command-xyz" in cp.stderr, describe(cp)
    cp = h("run", "--", "/no/such/path")
    assert cp.returncode == 127, describe(cp)


def test_a_first_word_that_is_neither_image_nor_command_is_explained(h):
    # With no image of that name the first word is the command (in busybox); docker would have
    # tried to pull it: the error says both.
    cp = h("run", "no-such-image-xyz", "true")
    line = assert_hutch_error(cp, "no-such-image-xyz", "hutch pull no-such-image-xyz", code=127)
    assert "command not found" in line
    # Not when the word was the image, or plainly the command.
    for args in (("busybox", "no-such-command-xyz"), ("--", "no-such-command-xyz")):
        line = assert_hutch_error(h("run", *args), "no-such-command-xyz", code=127)
        assert "pull" not in line, line


def test_exit_code_killed_by_signal(h):
    cp = h.sh("kill -9 $$")
    assert cp.returncode == 137, describe(cp)
    cp = h.sh("kill -TERM $$")
    assert cp.returncode == 143, describe(cp)


def test_image_forms(h):
    # busybox (the built-in base) as IMAGE, "--" without IMAGE, and the base's default command.
    assert ok(h("run", "busybox", "echo", "a")).stdout == "a\n"
    assert ok(h("run", "busybox", "--", "echo", "b")).stdout == "b\n"
    assert ok(h("run", "--", "echo", "c")).stdout == "c\n"
    assert ok(h("run", "-i", "busybox", input="echo from-stdin\n")).stdout == "from-stdin\n"


def test_stdin_only_with_i(h):
    cp = ok(h("run", "-i", "--", "cat", input="piped in\n"))
    assert cp.stdout == "piped in\n"
    # Without -i the command's stdin is /dev/null.
    cp = ok(h("run", "--", "cat", input="should not arrive\n"))
    assert cp.stdout == ""


def test_a_closed_stdin_becomes_dev_null_not_a_free_slot(h):
    # hutch started with fd 0 closed: the /dev/null it opens for the command lands on 0 itself,
    # and must stay there (a closed 0 would be taken by the command's first open).
    argv = h.argv("run", "--", "readlink", "/proc/self/fd/0")
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=h.environ(None),
                        preexec_fn=lambda: os.close(0))
    assert ok(cp).stdout == "/dev/null\n"


# ---------------------------------------------------------------------------------------------
# Environment, working directory, user, limits.

def test_env(h):
    cp = ok(h("run", "-e", "FOO=bar", "-e", "SPACED=a b  c", "-e", "EMPTY=", "--", "env"))
    env = dict(line.split("=", 1) for line in cp.stdout.splitlines() if "=" in line)
    assert env["FOO"] == "bar"
    assert env["SPACED"] == "a b  c"
    assert env["EMPTY"] == ""
    assert env["HOME"] == "/root"
    assert "/bin" in env["PATH"].split(":")
    # Nothing of the caller's environment leaks in.
    assert "HUTCH_DEFAULT_ROOTFS" not in env and "HUTCH_POLICY_DIR" not in env


def test_env_file(h):
    f = h.work / "vars.env"
    f.write_text("# a comment\n\nA=1\nB=two words\n  C=indented\nD=crlf\r\nOVER=file\n")
    f.chmod(0o644)
    cp = ok(h("run", "--env-file", str(f), "-e", "OVER=flag", "--", "sh", "-c",
              'printf "%s|" "$A" "$B" "$C" "$D" "$OVER"'))
    assert cp.stdout == "1|two words|indented|crlf|flag|"


def test_workdir(h):
    assert ok(h("run", "-w", "/tmp", "--", "pwd")).stdout == "/tmp\n"
    # A missing working directory is created, as docker does.
    assert ok(h("run", "-w", "/tmp/hutch-it-wd/new/dir", "--", "pwd")).stdout == "/tmp/hutch-it-wd/new/dir\n"


def test_user_uid_gid(h):
    if not h.mode.maps_uid(1000):
        pytest.skip(f"uid 1000 is not mapped in mode {h.mode.name}")
    # busybox's passwd has no uid 1000: group 0, as docker gives such a uid.
    assert ok(h("run", "-u", "1000", "--", "sh", "-c", "id -u; id -g")).stdout.split() == ["1000", "0"]
    cp = ok(h("run", "-u", "1000:2000", "--", "sh", "-c", "id -u; id -g"))
    assert cp.stdout.split() == ["1000", "2000"]
    cp = ok(h("run", "-u", "nobody", "--", "sh", "-c", "id -u; id -g; echo $HOME"))
    assert cp.stdout.split() == ["65534", "65534", "/nonexistent"]


def test_user_root(h):
    cp = ok(h("run", "-u", "0", "--", "sh", "-c", "id -u; id -g"))
    assert cp.stdout.split() == ["0", "0"]
    cp = ok(h("run", "-u", "root", "--", "id", "-un"))
    assert cp.stdout == "root\n"


def test_ulimit_nofile(h):
    cp = ok(h.sh("ulimit -n; ulimit -Hn", "--ulimit", "nofile=100:200"))
    assert cp.stdout.split() == ["100", "200"]
    cp = ok(h.sh("ulimit -n; ulimit -Hn", "--ulimit", "nofile=64"))
    assert cp.stdout.split() == ["64", "64"]
    # Given twice, the last counts (applying both in turn would fail: the first lowers the hard limit).
    cp = ok(h.sh("ulimit -n; ulimit -Hn", "--ulimit", "nofile=10:20", "--ulimit", "nofile=30:40"))
    assert cp.stdout.split() == ["30", "40"]



def _ignore_some_signals():
    """As nohup and a shell's background jobs do: the caller of hutch ignores these."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def test_commands_start_with_default_signal_actions(h):
    # Ignored signals survive execve; the command must not inherit the caller's (or hutch's own
    # SIGPIPE), nor any blocked signal, in a run or an exec.
    def status_of(*args):
        p = h.popen(*args, "--", "cat", "/proc/self/status", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, preexec_fn=_ignore_some_signals)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        return {k: int(v.split()[0], 16) for k, v in (l.split(":", 1) for l in out.splitlines())
                if k in ("SigIgn", "SigBlk", "SigCgt")}
    assert status_of("run") == {"SigIgn": 0, "SigBlk": 0, "SigCgt": 0}
    ok(h("create", "--name", "signals"))
    try:
        assert status_of("exec", "signals") == {"SigIgn": 0, "SigBlk": 0, "SigCgt": 0}
    finally:
        h("rm", "-f", "signals")


def _allowed_cpus(status: str) -> set[int]:
    """The CPUs of a Cpus_allowed_list line ("0-1,4")."""
    line = [l for l in status.splitlines() if l.startswith("Cpus_allowed_list:")][0]
    cpus = set()
    for part in line.split(":", 1)[1].strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def test_commands_may_use_every_cpu_the_caller_may(h):
    # The init starts on another CPU than the front end's, then takes back the caller's CPUs:
    # neither the command nor a later exec may stay pinned to that one CPU.
    caller = os.sched_getaffinity(0)
    if len(caller) < 2:
        pytest.skip("one CPU: hutch starts its init where it is")
    for i in range(3):
        cp = ok(h("run", "--", "cat", "/proc/self/status"))
        assert _allowed_cpus(cp.stdout) == caller, describe(cp)
    ok(h("create", "--name", "cpus"))
    try:
        cp = ok(h("exec", "cpus", "--", "cat", "/proc/1/status", "/proc/self/status"))
        init_status, exec_status = cp.stdout.split("Name:")[1:3]
        assert _allowed_cpus(init_status) == caller and _allowed_cpus(exec_status) == caller, describe(cp)
    finally:
        h("rm", "-f", "cpus")


# ---------------------------------------------------------------------------------------------
# Timeout and signals.

def _sleepers() -> dict[int, str]:
    return {pid: args for pid, args in ps_args().items() if args.strip() == "sleep 100"}


def test_timeout_kills_everything(h):
    before = _sleepers()
    t0 = time.monotonic()
    cp = h("run", "--timeout", "1s", "--", "sh", "-c", "sleep 100 & sleep 100", timeout=60)
    elapsed = time.monotonic() - t0
    assert cp.returncode == 137, describe(cp)
    assert elapsed < 8, f"--timeout 1s took {elapsed:.1f}s"
    assert elapsed >= 0.9, f"--timeout 1s ended after {elapsed:.2f}s"
    left = {pid: a for pid, a in _sleepers().items() if pid not in before}
    assert not left, f"sandbox processes survived the timeout: {left}"
    assert h.sandbox_dirs() == []


def test_sigterm_reaches_the_command(h):
    script = "trap 'echo got; exit 7' TERM; echo ready; while :; do sleep 0.1; done"
    p = h.popen("run", "--", "sh", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r, _, _ = select.select([p.stdout], [], [], 20)
        assert r, "the command did not start"
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 7, f"exit {p.returncode}\nstdout: {out}\nstderr: {err}"
        assert out == "got\n"
    finally:
        kill_quietly(p)
    assert h.sandbox_dirs() == []


def test_sigkill_of_hutch_leaves_nothing(h):
    mounts_before = mount_count()
    p = h.popen("run", "--name", "victim", "--", "sleep", "100",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs = {}
    try:
        # hutch (after setpriv's exec, the same pid) -> the sandbox's init -> sleep 100.
        def sandbox():
            procs = descendant_stats(p.pid)
            return procs if any(st[0] == "sleep" for st in procs.values()) else None

        assert wait_until(lambda: sandbox() is not None, 20), "the sandbox did not start"
        procs = sandbox()
        assert (h.root / "sandboxes" / "victim").is_dir()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert p.returncode == -signal.SIGKILL
        survivors = lambda: {pid: st[0] for pid, st in procs.items() if alive(pid, st[3])}
        assert wait_until(lambda: not survivors(), 5), f"still running after hutch was killed: {survivors()}"
    finally:
        kill_quietly(p)
        for pid, st in procs.items():  # whatever survived a failure above
            if alive(pid, st[3]):
                os.kill(pid, signal.SIGKILL)
    assert mount_count() == mounts_before
    # The next hutch sweeps the directory the killed one left behind.
    ok(h("run", "--", "true"))
    assert h.sandbox_dirs() == [], f"not swept: {h.sandbox_dirs()}"
    assert h.state_files() == []


# ---------------------------------------------------------------------------------------------
# Terminals.

def test_tty(h):
    script = ("tty; if test -t 0; then echo STDIN-IS-TTY; fi; if test -t 1; then echo STDOUT-IS-TTY; fi; stty size; "
              "echo CONSOLE $(stat -c %t:%T /dev/console) TTY $(stat -c %t:%T $(tty))")
    status, out = run_in_pty(h.argv("run", "-t", "--", "sh", "-c", script), h.environ(), rows=30, cols=100)
    lines = [line.strip() for line in out.splitlines()]
    assert status == 0, out
    assert any(re.fullmatch(r"/dev/pts/\d+", line) for line in lines), out
    # As docker does with -t, /dev/console is the terminal (the same device).
    console = next((line.split() for line in lines if line.startswith("CONSOLE ")), None)
    assert console and console[1] == console[3] and console[1].startswith("88:"), out
    assert "STDIN-IS-TTY" in lines and "STDOUT-IS-TTY" in lines, out
    assert "30 100" in lines, f"expected the 30x100 window size inside: {out!r}"


def test_tty_window_size_follows_a_resize(h):
    # SIGWINCH to hutch: the sandbox's terminal takes the new size, and its command hears of it.
    script = "trap 'echo SIZE $(stty size); exit 0' WINCH; echo READY; while :; do sleep 0.1; done"
    status, out = run_in_pty(h.argv("run", "-t", "--", "sh", "-c", script), h.environ(), rows=30, cols=100,
                             resize=(40, 120))
    assert status == 0, out
    assert "SIZE 40 120" in out, out


def test_tty_interactive_input(h):
    script = "echo READY; read line; echo \"got:$line\"; exit 4"
    status, out = run_in_pty(h.argv("run", "-i", "-t", "--", "sh", "-c", script), h.environ(),
                             send=b"hello\r")
    assert "got:hello" in out, out
    assert status == 4, out


def test_no_tty_without_t(h):
    cp = h.sh("tty; test -t 0 && echo STDIN-IS-TTY; true")
    assert cp.returncode == 0, describe(cp)
    assert "not a tty" in cp.stdout and "STDIN-IS-TTY" not in cp.stdout, cp.stdout

