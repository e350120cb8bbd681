"""What a sandbox can see of the host: processes, hostname, network, ids and paths."""
import json
import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

from hutchlib import descendant_stats, kill_quietly, ok, parse_idmap


def test_pid1_is_hutch_init(h):
    cp = ok(h.sh("cat /proc/1/comm; echo $$"))
    comm, mypid = cp.stdout.split()
    assert comm == "hutch-init", cp.stdout
    # The command is init's first child: pid 2 of a fresh pid namespace.
    assert mypid == "2", cp.stdout


def test_every_namespace_is_the_sandboxs_own(h):
    kinds = ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup")
    cp = ok(h.sh("for k in " + " ".join(kinds) + "; do echo $k $(readlink /proc/self/ns/$k); done"))
    inside = dict(line.split() for line in cp.stdout.splitlines())
    for k in kinds:
        assert inside[k] != os.readlink(f"/proc/self/ns/{k}"), f"{k} namespace is the host's: {inside[k]}"
    # The cgroup namespace is rooted at the sandbox's cgroup: it sees its own as "/".
    cp = ok(h.sh("cat /proc/self/cgroup"))
    assert all(line.endswith(":/") for line in cp.stdout.splitlines()), cp.stdout


def test_init_reaps_orphans(h):
    # A double fork leaves orphans to pid 1: the init must reap them, or they stay zombies.
    script = ("for i in 1 2 3; do ( sleep 0.1 & ); done; sleep 1; "
              "for f in /proc/[0-9]*/stat; do read -r line < $f && echo \"$line\"; done")
    cp = ok(h.sh(script))
    states = [line.rsplit(")", 1)[1].split()[0] for line in cp.stdout.splitlines() if ")" in line]
    assert states and "Z" not in states, cp.stdout


def test_no_host_process_visible(h):
    me = os.getpid()
    script = (
        "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; "
        f"if test -e /proc/{me}; then echo SEEN-HOST-PID; fi; "
        "ps -o pid,comm"
    )
    cp = ok(h.sh(script))
    lines = cp.stdout.splitlines()
    pids = [int(p) for p in lines[0].split()]
    assert pids and max(pids) < 20, f"unexpected pids inside: {pids}"
    assert 1 in pids
    assert "SEEN-HOST-PID" not in cp.stdout, f"the test's own pid {me} is visible inside"
    ps = [line.split(None, 1) for line in lines[2:] if line.strip()]
    comms = {int(p): c.strip() for p, c in ps}
    assert comms.get(1) == "hutch-init", cp.stdout
    # Only the sandbox's own processes: its init, the shell and ps itself.
    assert set(comms.values()) <= {"hutch-init", "sh", "ps"}, cp.stdout
    assert len(comms) <= 3, cp.stdout


def test_hostname_flag(h):
    cp = ok(h.sh("hostname; cat /proc/sys/kernel/hostname; uname -n", "--hostname", "hutch-test-host"))
    assert cp.stdout.split() == ["hutch-test-host"] * 3


def test_hostname_defaults_to_name(h):
    cp = ok(h.sh("hostname; echo $HOSTNAME", "--name", "box-42.a_b"))
    assert cp.stdout.split() == ["box-42.a_b"] * 2


def test_hostname_default_is_generated_name(h):
    cp = ok(h("run", "--", "hostname"))
    name = cp.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", name), f"expected a generated 12-hex-digit name, got {name!r}"
    assert name != socket.gethostname()


def test_only_loopback(h):
    cp = ok(h.sh("ls /sys/class/net; echo --; tail -n +3 /proc/net/dev | cut -d: -f1; echo --; "
                 "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"))
    sysfs, procnet, lo = cp.stdout.split("--\n")
    assert sysfs.split() == ["lo"], cp.stdout
    assert procnet.split() == ["lo"], cp.stdout
    # lo is up (IFF_UP is bit 0 of the flags).
    assert int(lo.split()[1], 16) & 1, cp.stdout


def test_network_namespace_belongs_to_the_sandbox(h):
    # The front end makes it for the init: it must still be owned by the sandbox's user namespace,
    # where a granted CAP_NET_ADMIN applies, and be what /sys shows.
    cp = ok(h.sh("ip link set lo mtu 1400 && cat /sys/class/net/lo/mtu", "--cap-add", "NET_ADMIN"))
    assert cp.stdout.split() == ["1400"], cp.stdout


def _has_hutch_range():
    try:
        return any(line.split(":")[0] == "hutch" for line in open("/etc/subuid"))
    except OSError:
        return False


def _host_view(pid: int) -> tuple:
    """A process's uid and gid maps as the host sees them: ids of the host's own namespace,
    whatever namespaces lie in between."""
    return (parse_idmap(Path(f"/proc/{pid}/uid_map").read_text()),
            parse_idmap(Path(f"/proc/{pid}/gid_map").read_text()))


def test_uid_and_gid_map(h):
    name = f"maps-{uuid.uuid4().hex[:8]}"
    ok(h("create", "--name", name))
    try:
        pid = json.loads(ok(h("inspect", name)).stdout)[0]["state"]["pid"]
        uid_map, gid_map = _host_view(pid)
        cp = ok(h("exec", name, "--", "sh", "-c",
                  "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; cat /proc/self/setgroups"))
    finally:
        h("rm", "-f", name)
    inner_uid, inner_gid, setgroups = cp.stdout.split("--\n")
    assert uid_map == h.mode.uid_map, (uid_map, cp.stdout)
    assert gid_map == h.mode.gid_map, (gid_map, cp.stdout)
    # Seen from inside, ids are those of the namespace above: the host's, or (rootless with
    # subordinate ids) those of the kept namespace, which holds the same ranges under the same
    # inside numbers (sandbox/pause.hpp).
    if h.mode.name == "subuid":
        assert parse_idmap(inner_uid) == [(i, i, c) for i, _, c in h.mode.uid_map], cp.stdout
        assert parse_idmap(inner_gid) == [(i, i, c) for i, _, c in h.mode.gid_map], cp.stdout
    else:
        assert parse_idmap(inner_uid) == uid_map and parse_idmap(inner_gid) == gid_map, cp.stdout
    if h.mode.name == "root" and not _has_hutch_range():
        assert uid_map == [(0, 1000000000, 65536)], uid_map
    if h.mode.name == "subuid" and h.mode.switch:
        # tools/test-users.sh gives hutch-t-sub exactly 300000:65536.
        assert uid_map == [(0, h.mode.uid, 1), (1, 300000, 65536)], uid_map
        assert gid_map == [(0, h.mode.gid, 1), (1, 300000, 65536)], gid_map
    if h.mode.name == "solo":
        assert uid_map == [(0, h.mode.uid, 1)], uid_map
        # Without newgidmap a user namespace may not call setgroups.
        assert setgroups.strip() == "deny", cp.stdout


def test_root_idrange_override(hroot):
    h = hroot
    cp = ok(h.sh("cat /proc/self/uid_map; cat /proc/self/gid_map", env={"HUTCH_ROOT_IDRANGE": "1500000000:65536"}))
    assert parse_idmap(cp.stdout) == [(0, 1500000000, 65536)] * 2, cp.stdout


def test_host_paths_invisible(h):
    marker = h.work / f"marker-{uuid.uuid4().hex}"
    marker.write_text("host secret\n")
    probes = [str(marker), str(h.work), str(h.root), str(h.world.dir), "/work", "/work/main",
              "/home/hutch-t-sub", "/root/.bashrc"]
    script = "".join(f"if test -e '{p}'; then echo 'VISIBLE {p}'; fi; " for p in probes)
    script += f"ls -a /tmp; grep -rl 'host secret' /tmp /home /root /run /var 2>/dev/null; true"
    cp = ok(h.sh(script))
    assert "VISIBLE" not in cp.stdout, cp.stdout
    assert marker.name not in cp.stdout, cp.stdout
    assert "host secret" not in cp.stdout


def test_root_is_the_base_tree(h):
    # / is the busybox base: its /etc/passwd, and a busybox userland.
    cp = ok(h.sh("cat /etc/passwd; readlink -f /bin/sh; ls /"))
    assert cp.stdout.startswith("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:")
    assert "/bin/busybox" in cp.stdout
    host_only = {"boot", "lib64", "srv", "opt", "mnt"} - set(os.listdir(h.world.rootfs))
    inside = set(cp.stdout.split())
    assert not (host_only & inside), f"host directories inside: {host_only & inside}"


def test_the_init_holds_nothing_of_the_hosts_sys(h):
    # A read-only clone of the host's /sys stands on /sys while the sandbox's own is made; once
    # replaced, the init must not keep it (its fds would pin the host's mounts for the run's life).
    p = h.popen("run", "-i", "--", "sh", "-c", "echo READY; read line", stdout=subprocess.PIPE,
                stdin=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "READY\n"
        inits = [pid for pid, st in descendant_stats(p.pid).items() if st[0] == "hutch-init"]
        assert len(inits) == 1, descendant_stats(p.pid)
        host_sys = os.stat("/sys").st_dev
        held = []
        for fd in os.listdir(f"/proc/{inits[0]}/fd"):
            try:
                if os.stat(f"/proc/{inits[0]}/fd/{fd}").st_dev == host_sys:
                    held.append(os.readlink(f"/proc/{inits[0]}/fd/{fd}"))
            except OSError:
                continue
        assert held == [], held
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0
    finally:
        kill_quietly(p)
