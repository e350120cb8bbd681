"""Persistent sandboxes: create, exec, ps, inspect, stop, start, rm."""
import json
import os
import platform
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from hutchlib import (CAP_NET_RAW, DEFAULT_CAPS, alive, assert_hutch_error, caps_of, descendants, describe,
                      descendant_stats, guarded, host_processes, kill_quietly, ok, parse_status, proc_stat,
                      wait_until)


def create(h, name, *opts):
    cp = ok(h("create", "--name", name, *opts))
    assert cp.stdout == f"{name}\n", describe(cp)
    return cp


def inspect(h, name) -> dict:
    cp = ok(h("inspect", name))
    data = json.loads(cp.stdout)
    assert isinstance(data, list) and len(data) == 1, cp.stdout
    assert data[0]["name"] == name
    return data[0]


def ps_status(h) -> dict:
    return {s["name"]: s["state"]["status"] for s in h.ps_json()}


def sandbox_processes(pid: int) -> dict:
    """The init and everything under it: pid -> (comm, state, ppid, starttime)."""
    out = {}
    for p in [pid] + descendants(pid):
        st = proc_stat(p)
        if st:
            out[p] = st
    return out


def test_create_and_exec_share_the_layer(h):
    create(h, "box")
    assert (h.root / "sandboxes" / "box").is_dir()
    ok(guarded(h("exec", "box", "--", "sh", "-c",
                 h.guard + "echo hello > /data.txt; mkdir -p /srv/x; echo deeper > /srv/x/y")))
    cp = ok(h("exec", "box", "sh", "-c", "cat /data.txt /srv/x/y; hostname; cat /proc/1/comm"))
    assert cp.stdout.split() == ["hello", "deeper", "box", "hutch-init"]
    # An exec's environment, working directory and user.
    cp = ok(h("exec", "-e", "X=1", "-w", "/srv", "box", "sh", "-c", 'echo "$X $(pwd) $(id -u)"'))
    assert cp.stdout == "1 /srv 0\n"
    # Exit codes of exec are the command's own.
    assert h("exec", "box", "sh", "-c", "exit 3").returncode == 3
    assert h("exec", "box", "no-such-command").returncode == 127
    # Nothing of it reached the base.
    assert not any((layer / "data.txt").exists() for layer in (h.root / "layers").iterdir())


def test_exec_cannot_escape_the_sandbox_restrictions(h):
    create(h, "locked", "--cap-add", "NET_RAW", "--ulimit", "nofile=64:128")
    # The limits of create apply to every exec.
    assert ok(h("exec", "locked", "sh", "-c", "ulimit -n; ulimit -Hn")).stdout.split() == ["64", "128"]
    want = DEFAULT_CAPS | (1 << CAP_NET_RAW)
    st = parse_status(ok(h("exec", "locked", "cat", "/proc/self/status")).stdout)
    assert st["NoNewPrivs"] == "1"
    assert caps_of(st, "CapEff") == want, f"CapEff {st['CapEff']}: --cap-add at create must apply to exec"
    assert caps_of(st, "CapBnd") == want, f"CapBnd {st['CapBnd']}"
    # exec takes no capability or security options of its own.
    cp = h("exec", "--cap-add", "ALL", "locked", "true")
    assert_hutch_error(cp, "--cap-add")
    cp = h("exec", "--security-opt", "seccomp=unconfined", "locked", "true")
    assert_hutch_error(cp, "--security-opt")
    # Same pid namespace as the sandbox, not the host's.
    cp = ok(h("exec", "locked", "sh", "-c", "ls /proc | grep -cE '^[0-9]+$'"))
    assert int(cp.stdout) < 10, cp.stdout
    assert st["Seccomp"] == "2", f"Seccomp: {st['Seccomp']} in exec"


def test_exec_and_restart_keep_the_seccomp_filter_of_create(h):
    """The seccomp program is fixed when the sandbox is created: editing the profile file later
    changes neither exec nor a restart (docker keeps a container's profile the same way)."""
    base = json.loads((Path(h.world.policies) / "seccomp" / "default.json").read_text())
    profile = h.work / "profile.json"
    profile.write_text(json.dumps(base))
    profile.chmod(0o644)
    create(h, "fixed", "--security-opt", f"seccomp={profile}")
    try:
        # The same file now denies mkdir (the default action, EPERM, for what no rule names).
        for rule in base["syscalls"]:
            rule["names"] = [n for n in rule.get("names", []) if n not in ("mkdir", "mkdirat")]
        profile.write_text(json.dumps(base))
        cp = h("run", "--security-opt", f"seccomp={profile}", "--", "mkdir", "/tmp/d")
        assert cp.returncode != 0 and "Operation not permitted" in cp.stderr, describe(cp)
        ok(h("exec", "fixed", "mkdir", "/tmp/d1"))
        ok(h("stop", "-t", "1", "fixed"))
        ok(h("start", "fixed"))
        ok(h("exec", "fixed", "mkdir", "/tmp/d2"))
        st = parse_status(ok(h("exec", "fixed", "cat", "/proc/self/status")).stdout)
        assert st["Seccomp"] == "2", st
    finally:
        h("rm", "-f", "fixed")


def test_exec_after_cap_drop_all(h):
    create(h, "dropped", "--cap-drop", "ALL")
    st = parse_status(ok(h("exec", "dropped", "cat", "/proc/self/status")).stdout)
    assert caps_of(st, "CapEff") == 0 and caps_of(st, "CapBnd") == 0, st


def test_exec_other_uid(h):
    if not h.mode.maps_uid(1000):
        pytest.skip(f"uid 1000 is not mapped in mode {h.mode.name}")
    create(h, "users")
    cp = ok(h("exec", "-u", "1000", "users", "cat", "/proc/self/status"))
    st = parse_status(cp.stdout)
    assert st["Uid"].split()[0] == "1000"
    assert caps_of(st, "CapEff") == 0 and st["NoNewPrivs"] == "1"


def test_ps_and_inspect(h):
    create(h, "alpha", "--hostname", "alpha-host")
    create(h, "beta")
    assert ps_status(h) == {"alpha": "running", "beta": "running"}
    info = inspect(h, "alpha")
    assert info["state"]["status"] == "running"
    assert info["hostname"] == "alpha-host"
    assert info["state"]["pid"] > 0
    assert alive(info["state"]["pid"], proc_stat(info["state"]["pid"])[3])
    table = ok(h("ps")).stdout
    assert "alpha" in table and "beta" in table and "running" in table
    cp = h("inspect", "alpha", "nosuch")
    assert cp.returncode != 0
    assert "nosuch" in cp.stderr
    assert [s["name"] for s in json.loads(cp.stdout)] == ["alpha"]
    # -q: names only, stopped ones too (for 'hutch rm -f $(hutch ps -q)', as with docker ps -aq).
    ok(h("stop", "beta"))
    assert ok(h("ps", "-q")).stdout == "alpha\nbeta\n"


def test_a_sandbox_with_a_damaged_config_can_be_stopped_and_removed(h):
    # A config.json cut short (a full disk, a hand edit) must not keep the sandbox running, or its
    # layer on disk: its files may belong to subordinate ids that the user cannot remove alone.
    create(h, "damaged")
    pid = inspect(h, "damaged")["state"]["pid"]
    start_time = proc_stat(pid)[3]
    try:
        ok(guarded(h("exec", "damaged", "sh", "-c",
                     h.guard + "mkdir -p /d/e && echo x > /d/e/f && (chown -R 5:5 /d 2>/dev/null || true)")))
        config = h.root / "sandboxes" / "damaged" / "config.json"
        config.write_text(config.read_text()[:20])
        assert_hutch_error(h("exec", "damaged", "true"), "corrupt sandbox config", "config.json",
                           "hutch rm -f damaged")
        assert ok(h("stop", "damaged")).stdout == "damaged\n"
        assert wait_until(lambda: not alive(pid, start_time), 5), "stop left the init running"
        assert ok(h("rm", "damaged")).stdout == "damaged\n"
        assert not (h.root / "sandboxes" / "damaged").exists()
        assert_hutch_error(h("rm", "damaged"), "no such sandbox", "damaged", code=1)  # as docker rm
    finally:
        h("rm", "-f", "damaged")
        if alive(pid, start_time):
            os.kill(pid, signal.SIGKILL)


def test_a_running_sandbox_outlives_the_loss_of_its_runtime_state(h):
    # logind removes /run/user/UID, and hutch's runtime state in it, when the user's last session
    # ends, while a persistent sandbox's init runs on. Taken for stopped, that sandbox would get
    # a second init on its writable layer from `start`, and `rm` would delete the layer under it.
    create(h, "kept")
    pid = inspect(h, "kept")["state"]["pid"]
    start_time = proc_stat(pid)[3]
    shutil.rmtree(h.root / "run")
    inits = {pid: start_time}
    try:
        assert ps_status(h) == {"kept": "running"}
        assert inspect(h, "kept")["state"]["pid"] == pid
        before = host_processes()
        assert ok(h("start", "kept")).stdout == "kept\n"  # running already: nothing to do
        second = {p: st[3] for p, st in host_processes().items()
                  if st[0] == "hutch-init" and (p not in before or before[p][3] != st[3])}
        inits.update(second)
        assert not second, f"a second init on the same layer: {second}"
        assert ok(h("exec", "kept", "echo", "joined")).stdout == "joined\n"
        ok(h("stop", "kept"))
        assert wait_until(lambda: not alive(pid, start_time), 5), "stop left the init running"
        assert ps_status(h) == {"kept": "stopped"}
    finally:
        h("rm", "-f", "kept")
        for p, st in inits.items():  # what a failure above may have left
            if alive(p, st):
                os.kill(p, signal.SIGKILL)


def test_stop_start_keeps_the_layer(h):
    create(h, "keeper")
    ok(guarded(h("exec", "keeper", "sh", "-c", h.guard + "echo persisted > /state; sleep 100 >/dev/null 2>&1 &")))
    pid = inspect(h, "keeper")["state"]["pid"]
    procs = sandbox_processes(pid)
    assert any(st[0] == "sleep" for st in procs.values()), procs
    cp = ok(h("stop", "-t", "2", "keeper"))
    assert cp.stdout == "keeper\n"
    assert wait_until(lambda: not any(alive(p, st[3]) for p, st in procs.items()), 5), \
        f"processes survived stop: {sandbox_processes(pid)}"
    assert ps_status(h) == {"keeper": "stopped"}
    assert inspect(h, "keeper")["state"]["status"] == "stopped"
    cp = h("exec", "keeper", "true")
    assert_hutch_error(cp, "keeper", "not running")
    assert (h.root / "sandboxes" / "keeper").is_dir()
    cp = ok(h("start", "keeper"))
    assert cp.stdout == "keeper\n"
    assert ps_status(h) == {"keeper": "running"}
    assert ok(h("exec", "keeper", "cat", "/state")).stdout == "persisted\n"
    # Stopping a stopped sandbox and starting a running one do nothing, as docker's stop and start.
    ok(h("stop", "keeper"))
    ok(h("stop", "keeper"))
    ok(h("start", "keeper"))
    pid = inspect(h, "keeper")["state"]["pid"]
    assert ok(h("start", "keeper")).stdout == "keeper\n"
    assert inspect(h, "keeper")["state"]["pid"] == pid


def test_rm(h):
    create(h, "doomed")
    pid = inspect(h, "doomed")["state"]["pid"]
    procs = sandbox_processes(pid)
    assert procs and procs[pid][0] == "hutch-init", procs
    # A running sandbox needs -f.
    cp = h("rm", "doomed")
    assert cp.returncode != 0 and "doomed" in cp.stderr, describe(cp)
    assert (h.root / "sandboxes" / "doomed").is_dir()
    assert ps_status(h) == {"doomed": "running"}
    cp = ok(h("rm", "-f", "doomed"))
    assert cp.stdout == "doomed\n"
    assert not (h.root / "sandboxes" / "doomed").exists()
    assert h.state_files() == []
    assert h.ps_json() == []
    assert wait_until(lambda: not any(alive(p, st[3]) for p, st in procs.items()), 5), \
        f"processes survived rm -f: {procs}"
    assert_hutch_error(h("exec", "doomed", "true"), "doomed")
    # The name is free again.
    create(h, "doomed")
    assert ps_status(h) == {"doomed": "running"}


def test_rm_kills_what_exec_started(h):
    create(h, "busy")
    ok(guarded(h("exec", "busy", "sh", "-c", h.guard + "echo x > /file; sleep 100 >/dev/null 2>&1 &")))
    pid = inspect(h, "busy")["state"]["pid"]
    procs = sandbox_processes(pid)
    assert any(st[0] == "sleep" for st in procs.values()), procs
    ok(h("rm", "-f", "busy"))
    assert not (h.root / "sandboxes" / "busy").exists()
    assert wait_until(lambda: not any(alive(p, st[3]) for p, st in procs.items()), 5), \
        f"processes survived rm -f: {procs}"


def test_exec_into_stopped_sandbox(h):
    create(h, "sleeper")
    pid = inspect(h, "sleeper")["state"]["pid"]
    start_time = proc_stat(pid)[3]
    cp = ok(h("stop", "-t", "2", "sleeper"))
    assert cp.stdout == "sleeper\n"
    assert wait_until(lambda: not alive(pid, start_time), 5), "the init survived stop"
    assert ps_status(h) == {"sleeper": "stopped"}
    info = inspect(h, "sleeper")
    assert info["state"]["status"] == "stopped"
    assert_hutch_error(h("exec", "sleeper", "true"), "sleeper", "not running")
    assert (h.root / "sandboxes" / "sleeper").is_dir()
    ok(h("start", "sleeper"))
    assert ps_status(h) == {"sleeper": "running"}


def test_rm_stopped(h):
    create(h, "stopped-one")
    ok(h("stop", "stopped-one"))
    ok(h("rm", "stopped-one"))
    assert h.sandbox_dirs() == [] and h.ps_json() == []


def test_exec_unknown_sandbox(h):
    assert_hutch_error(h("exec", "nosuch", "true"), "nosuch")
    assert_hutch_error(h("exec", "nosuch", "--", "true"), "nosuch")


def test_create_needs_a_fresh_name(h):
    create(h, "twice")
    assert_hutch_error(h("create", "--name", "twice"), "twice")
    assert ps_status(h) == {"twice": "running"}
    assert_hutch_error(h("create"), "--name")


def test_create_with_binds_and_env(h):
    d = h.host_dir("shared", {"in": "bound\n"})
    create(h, "bound", "-v", f"{d}:/shared", "-e", "FROM_CREATE=yes", "-w", "/shared")
    cp = ok(h("exec", "bound", "sh", "-c", 'cat in; echo "$FROM_CREATE"; pwd; echo out > /shared/out'))
    assert cp.stdout == "bound\nyes\n/shared\n"
    assert (d / "out").read_text() == "out\n"


def test_exec_creates_files_as_the_sandbox_root(h):
    """An exec'd command starts as the sandbox's root whatever the caller's host uid: it can
    create its working directory and files there (root's exec arrives with an unmapped uid 0)."""
    assert h("create", "--name", "wd", "-w", "/work").returncode == 0
    try:
        r = h("exec", "wd", "--", "sh", "-c", "echo data > notes && id -u && pwd && stat -c %u notes")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0", "/work", "0"]
    finally:
        h("rm", "-f", "wd")


def test_create_refuses_a_command_it_would_not_run(h):
    # A persistent sandbox's init runs nothing of its own; a command given to create (docker's
    # 'create IMAGE CMD' habit) would be ignored without a word.
    for args in (("--", "sleep", "infinity"), ("busybox", "sh", "-c", "touch /x"),
                 ("--rootfs", h.world.rootfs, "--", "true")):
        cp = h("create", "--name", "cmd", *args)
        assert_hutch_error(cp, "create takes no command", args[-1], "hutch exec cmd")
        assert h.sandbox_dirs() == [], h.sandbox_dirs()
    create(h, "cmd", "busybox")  # the image alone is fine
    h("rm", "-f", "cmd")
    # Nor --rm, which would promise a removal nothing does (a persistent sandbox lives until rm).
    assert_hutch_error(h("create", "--rm", "--name", "cmd"), "--rm", "hutch rm cmd")
    assert h.sandbox_dirs() == [], h.sandbox_dirs()


def test_a_taken_name_says_what_took_it(h):
    create(h, "taken")
    try:
        assert_hutch_error(h("run", "--name", "taken", "--", "true"), "already exists", "hutch rm taken")
        # A run of that name still going.
        p = subprocess.Popen(h.argv("run", "--name", "busy", "--", "sleep", "30"), env=h.environ(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_until(lambda: "busy" in h.sandbox_dirs(), 10), h.sandbox_dirs()
            assert_hutch_error(h("create", "--name", "busy"), "already exists", "hutch run --name busy", "still going")
        finally:
            p.terminate()
            p.wait(timeout=30)
        # What a run killed with its front end (SIGKILL of both) leaves: a directory without config.
        left = h.root / "sandboxes" / "left"
        left.mkdir()
        os.chown(left, h.mode.uid, h.mode.gid)
        assert_hutch_error(h("run", "--name", "left", "--", "true"), "already exists", "ended abruptly", "hutch ps")
        ok(h("ps"))
        ok(h("run", "--name", "left", "--", "true"))
    finally:
        h("rm", "-f", "taken")


def test_concurrent_creates_of_one_name_make_one_sandbox(h):
    # Eight hutch processes at once on the same state: the name is taken once, by one of them,
    # and the others fail cleanly without harming it.
    procs = [subprocess.Popen(h.argv("create", "--name", "race"), env=h.environ(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True) for _ in range(8)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results) == [0] + [125] * 7, results
    assert all("already exists" in err for code, err in results if code), results
    assert [s["name"] for s in h.ps_json()] == ["race"]
    assert ok(h("exec", "race", "echo", "alive")).stdout == "alive\n"
    ok(h("rm", "-f", "race"))
    assert h.sandbox_dirs() == [] and h.state_files() == []


def test_concurrent_starts_make_one_init(h):
    # Starts of one stopped sandbox at once: one starts it; the others wait for it, find it
    # running and, as docker's, do nothing.
    create(h, "starts")
    ok(h("stop", "starts"))
    before = host_processes()
    procs = [subprocess.Popen(h.argv("start", "starts"), env=h.environ(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    try:
        assert all(code == 0 and out == "starts\n" for code, out, _ in results), results
        inits = [p for p, st in host_processes().items()
                 if st[0] == "hutch-init" and str(h.root) in st[4] and (p not in before or before[p][3] != st[3])]
        assert len(inits) == 1, f"inits: {inits}"
        assert inspect(h, "starts")["state"]["pid"] == inits[0]
    finally:
        h("rm", "-f", "starts")


def test_a_symlink_left_in_the_layer_cannot_turn_a_bind_onto_proc(h):
    # Binds given at create are attached again at every start, in the sandbox's own layer: a link
    # the sandbox put on their path must not lead them over /proc.
    src = h.host_dir("bindsrc")
    create(h, "sl", "-v", f"{src}:/a/sys")
    ok(h("exec", "sl", "sh", "-c", "mv /a /b && ln -s /proc /a"))
    ok(h("stop", "sl"))
    cp = h("start", "sl")
    assert cp.returncode != 0 and "leads to /proc" in cp.stderr, describe(cp)
    assert ps_status(h)["sl"] == "stopped"


def test_the_command_of_a_killed_exec_ends_with_it(h):
    # An agent's harness that kills `hutch exec` on its own timeout must not leave the command
    # running in the sandbox (what it started in the background stays, as with docker exec).
    create(h, "orphans")
    p = h.popen("exec", "orphans", "--", "sh", "-c", "sleep 1000 & exec sleep 999",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = {}
    try:
        def sleeps():
            return {pid: st for pid, st in descendant_stats(p.pid).items() if st[0] == "sleep"}
        assert wait_until(lambda: len(sleeps()) == 2, 20), "the command did not start"
        procs = {pid: st for pid, st in sleeps().items() if st[2] == p.pid}  # the command itself
        assert len(procs) == 1, sleeps()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert wait_until(lambda: not any(alive(pid, st[3]) for pid, st in procs.items()), 5), \
            f"the command outlived hutch exec: {procs}"
        cp = ok(h("exec", "orphans", "--", "ps", "-o", "args"))
        assert "sleep 1000" in cp.stdout and "sleep 999" not in cp.stdout, cp.stdout
    finally:
        if p.poll() is None:
            p.kill()
        for pid, st in procs.items():
            if alive(pid, st[3]):
                os.kill(pid, signal.SIGKILL)
        h("rm", "-f", "orphans")


def test_an_init_whose_state_cannot_be_recorded_does_not_live_on(h):
    # The front end fails (or dies) after the init is ready but before it has recorded the
    # sandbox: nothing would know of that init, and a later start would mount the same layer.
    # A directory where the state file goes makes its rename fail, for root too.
    ok(h("ps"))  # hutch's directories, with their owner
    blocker = h.root / "run" / "sandboxes" / "unrecorded.json"
    blocker.mkdir()
    os.chown(blocker, h.mode.uid, h.mode.gid)
    before = host_processes()
    cp = h("create", "--name", "unrecorded")
    assert_hutch_error(cp, "unrecorded.json")

    def inits():  # clones of the front end: named hutch-init only once recorded
        return {pid: p for pid, p in host_processes().items()
                if h.world.bin in p[4] and "unrecorded" in p[4] and p[1] != "Z"
                and (pid not in before or before[pid][3] != p[3])}
    assert wait_until(lambda: not inits(), 5), f"an init outlived the failed create: {inits()}"
    assert not (h.root / "sandboxes" / "unrecorded").exists()


def test_a_command_that_may_trace_the_init_cannot_make_it_change_mounts(h):
    # A persistent init keeps its capabilities and stays dumpable (a user's `hutch exec` joins it
    # through a pidfd, which the kernel checks as it checks ptrace): a command given
    # CAP_SYS_PTRACE can attach to it and make it run system calls. Here: umount2 of the mask
    # over /proc/keys, which would leave the key list readable.
    if platform.machine() != "x86_64":
        pytest.skip(f"the injecting program is written for x86_64, not {platform.machine()}")
    cc = shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler for the injecting program (install build-essential)")
    tools = h.work / "tools"
    tools.mkdir()
    src = Path(__file__).parent / "programs" / "make_init_umount.c"
    subprocess.run([cc, "-static", "-O1", "-o", str(tools / "inject"), str(src)], check=True)
    tools.chmod(0o755)
    create(h, "traced", "--cap-add", "SYS_PTRACE", "-v", f"{tools}:/t:ro")
    try:
        cp = ok(guarded(h("exec", "traced", "--", "sh", "-c",
                          h.guard + "/t/inject 1 /proc/keys; grep -c ' /proc/keys ' /proc/self/mountinfo")))
        assert cp.stdout.splitlines() == ["umount2: Operation not permitted", "1"], cp.stdout
        assert ok(h("exec", "traced", "--", "echo", "still there")).stdout == "still there\n"
    finally:
        h("rm", "-f", "traced")


def test_a_persistent_sandbox_with_egress_refuses_cap_sys_ptrace(h):
    # Its init holds the netlink sockets of the egress ruleset: a tracer could rewrite the rules.
    for cap in ("SYS_PTRACE", "ALL"):
        cp = h("create", "--name", "tracer", "--network", "egress", "--policy", "agent", "--cap-add", cap)
        assert_hutch_error(cp, "SYS_PTRACE does not go with --network egress")
        assert not (h.root / "sandboxes" / "tracer").exists()



def test_a_sandbox_keeps_its_base_when_its_image_is_removed_and_pruned(h):
    # As a docker container does: the image's names may go, its layers stay while a sandbox
    # stands on them.
    create(h, "based")
    try:
        ids = {i["Id"] for i in json.loads(ok(h("images", "--format", "json")).stdout)}
        assert len(ids) == 1, ids
        ok(h("rmi", "-f", ids.pop()))
        ok(h("image", "prune"))
        assert ok(h("exec", "based", "--", "ls", "/bin/sh")).stdout == "/bin/sh\n"
        ok(h("stop", "based"))
        ok(h("start", "based"))
    finally:
        h("rm", "-f", "based")
    ok(h("image", "prune"))
    assert list((h.root / "layers").iterdir()) == []


def test_a_run_keeps_its_base_when_its_image_is_removed_and_pruned_meanwhile(h):
    # A run has no config naming its layers: it holds them (Store::pin_layers) until it ends.
    p = h.popen("run", "-i", "--", "sh", "-c", "echo READY; read line; ls /bin/sh", stdout=subprocess.PIPE,
                stdin=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "READY\n"
        ids = {i["Id"] for i in json.loads(ok(h("images", "--format", "json")).stdout)}
        ok(h("rmi", "-f", ids.pop()))
        ok(h("image", "prune"))
        assert list((h.root / "layers").iterdir()) != [], "prune must leave a running sandbox's layers"
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.read() == "/bin/sh\n"
        assert p.wait(timeout=30) == 0
    finally:
        kill_quietly(p)
    ok(h("image", "prune"))
    assert list((h.root / "layers").iterdir()) == [], "once the run has ended, prune removes them"
