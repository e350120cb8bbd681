"""--network egress: a policy's allowlist, enforced by nftables inside the sandbox's own network
namespace, with hutch's DNS forwarder, over pasta.

Everything runs in a fake internet (netlab.py) made of network namespaces these tests create:
hutch runs inside its `outer` namespace, as root and as the test users. Nothing here touches the
host's own network. Each mode makes one sandbox that runs every probe (one line of output per
probe), so the suite stays quick.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import netlab
from hutchlib import assert_hutch_error, describe, guarded, host_processes, wait_until

REASON = netlab.unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"egress tests: {REASON}")

MAIN_POLICY = """\
[network]
mode = "egress"
allow = [
  { host = "a.test", ports = [80] },
  { host = "*.a.test", ports = [80] },
  { host = "v6only.test", ports = [80], proto = "tcp" },
  # Allowed names whose answers are traps: hutch must refuse the answers.
  { host = "rebind.test", ports = [80] },
  { host = "rebind6.test", ports = [80] },
  { host = "loop.test", ports = [80] },
  { host = "private.test", ports = [80] },
  # An address range without DNS: h2, only on 8080.
  { cidr = "192.0.2.20", ports = [8080], proto = "tcp" },
]
"""

ICMP_POLICY = """\
[network]
mode = "egress"
icmp = true
allow = [
  { host = "a.test", ports = [80] },
]
"""

# busybox 1.35's ping opens raw sockets only: ICMP is probed with ICMP datagram sockets ("ping
# sockets", what ping uses without CAP_NET_RAW) from the host's python, bound in read-only.
HOST_BINDS = ("-v", "/usr:/host/usr:ro", "-e", "PYTHONHOME=/host/usr")
HOST_LD = "/host/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /host/usr/lib/x86_64-linux-gnu"
ICMP_PROBE = r"""
import socket, struct, sys
fam, _, _, _, addr = socket.getaddrinfo(sys.argv[1], None, proto=socket.IPPROTO_TCP)[0]
s = socket.socket(fam, socket.SOCK_DGRAM, socket.IPPROTO_ICMP if fam == socket.AF_INET else socket.IPPROTO_ICMPV6)
s.settimeout(3)
s.sendto(struct.pack("!BBHHH", 8 if fam == socket.AF_INET else 128, 0, 0, 0, 1) + b"hutch", addr)
print("reply" if s.recv(1024)[0] in (0, 129) else "other")
"""


def icmp_probe(dest: str) -> str:
    return f"{HOST_LD} /host/usr/bin/python3 -c '{ICMP_PROBE}' {dest}"


# Fetches a URL that must be reachable. This pasta (2023-03) now and then, about once in a few
# hundred short IPv6 connections, keeps a server's answer in its socket and never relays it (seen
# as pasta's socket in CLOSE-WAIT with the reply unread): a stalled attempt is retried, so that the
# tests judge the policy, not that transport flake. A refused connection fails at once, retry or not.
FETCH = ('fetch() { for t in 1 2 3; do out=$(timeout -s KILL 6 wget -q -O- "$1" 2>&1); rc=$?; '
         '[ $rc -ne 137 ] && break; done; echo "$out"; return $rc; }')

# One probe per line: NAME, then a command whose exit status (and output) tells the result.
PROBES = [
    ("allowed-name", "fetch http://a.test/"),
    ("allowed-wildcard", "fetch http://www.a.test/"),
    ("allowed-ipv6", "fetch http://v6only.test/"),
    ("allowed-cidr", "fetch http://192.0.2.20:8080/"),
    ("refused-name", "nslookup b.test"),
    ("blocked-ip", "wget -q -O- http://192.0.2.20/"),
    ("blocked-ipv6", "wget -q -O- 'http://[2001:db8:b::20]/'"),
    ("blocked-port", "wget -q -O- http://a.test:8080/"),
    ("blocked-direct-dns", f"nslookup a.test {netlab.DNS_V4}"),
    ("blocked-direct-dns6", f"nslookup a.test {netlab.DNS_V6}"),
    ("rebind-metadata", "nslookup rebind.test"),
    ("rebind-metadata6", "nslookup rebind6.test"),
    ("rebind-loopback", "nslookup loop.test"),
    ("rebind-private", "nslookup private.test"),
    ("ping-not-allowed", icmp_probe("203.0.113.10")),
    ("ip-link-down", "ip link set lo down"),
    ("ip-route-add", "ip route add 10.0.0.0/8 dev lo"),
    ("nft-flush", f"{HOST_LD} /host/usr/sbin/nft flush ruleset"),
    ("caps", "grep CapEff /proc/self/status"),
]


def script(probes) -> str:
    lines = [FETCH]
    for name, cmd in probes:
        # The start of a probe's own output, on the same line, for the assertions' messages.
        # Each probe is bounded, so that a hang names its probe (rc=137) instead of timing out all.
        if not cmd.startswith("fetch "):
            cmd = f"timeout -s KILL 20 {cmd}"
        lines.append(f'out=$({cmd} 2>&1); rc=$?; echo "{name} rc=$rc $(echo "$out" | tr "\\n" " " | head -c 300)"')
    return "\n".join(lines)


def results(stdout: str) -> dict[str, tuple[int, str]]:
    out = {}
    for line in stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].startswith("rc="):
            out[parts[0]] = (int(parts[1][3:]), parts[2] if len(parts) > 2 else "")
    return out


@pytest.fixture(scope="module")
def lab():
    lab = netlab.Lab(f"hxt{os.getpid() % 1000}")
    lab.up()
    yield lab
    lab.down()


def tun_usable_by_others() -> bool:
    try:
        return (os.stat("/dev/net/tun").st_mode & 0o006) == 0o006
    except OSError:
        return False


def egress_argv(lab, h, *args) -> list[str]:
    """hutch ARGS inside the fake internet's outer namespace, as the mode's user."""
    argv = h.argv(*args)
    if h.mode.switch and not tun_usable_by_others():
        # This host keeps /dev/net/tun 0600 (udev normally makes it 0666). Rootless pasta needs it:
        # give the test user a usable node in a private mount namespace; the host's is untouched.
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o mode=755,size=4k tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200 '
                '&& exec "$@"', "sh"] + argv
    return lab.in_outer(argv)


def run_egress(lab, h, *args, timeout=90, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(egress_argv(lab, h, *args), capture_output=True, text=True, timeout=timeout,
                          env=h.environ(env), stdin=subprocess.DEVNULL)


def write_policy(h, name: str, text: str) -> Path:
    p = h.work / name
    p.write_text(text)
    p.chmod(0o644)
    return p


def test_egress_policy_is_enforced(lab, h):
    policy = write_policy(h, "egress.toml", MAIN_POLICY)
    cp = guarded(run_egress(lab, h, "run", "--policy", policy, *HOST_BINDS, "--", "sh", "-c",
                            h.guard + script(PROBES)))
    r = results(cp.stdout)
    assert set(r) == {name for name, _ in PROBES}, "every probe must report" + describe(cp)

    def allowed(name, body):
        assert r[name][0] == 0 and body in r[name][1], f"{name} should succeed" + describe(cp)

    def refused(name, *needles):
        assert r[name][0] != 0, f"{name} should fail" + describe(cp)
        for n in needles:
            assert n in r[name][1], f"{name} should fail with {n!r}" + describe(cp)

    allowed("allowed-name", "hello from h1")
    allowed("allowed-wildcard", "hello from h1")
    allowed("allowed-ipv6", "hello from h1")
    allowed("allowed-cidr", "hello from h2")
    refused("refused-name", "REFUSED")
    # Rejected at once (a TCP reset), not dropped into a timeout.
    refused("blocked-ip", "refused")
    refused("blocked-ipv6")
    refused("blocked-port", "refused")
    refused("blocked-direct-dns")
    refused("blocked-direct-dns6")
    for name in ("rebind-metadata", "rebind-metadata6", "rebind-loopback", "rebind-private"):
        refused(name, "REFUSED")
    refused("ping-not-allowed")
    refused("ip-link-down")
    refused("ip-route-add")
    refused("nft-flush")
    cap_eff = int(r["caps"][1].split()[-1], 16)
    assert not cap_eff & (1 << 12), "the command must not hold CAP_NET_ADMIN" + describe(cp)
    assert not cap_eff & (1 << 13), "the command must not hold CAP_NET_RAW" + describe(cp)
    # The exit summary names what was refused, and the names addresses came from.
    summary = [line for line in cp.stderr.splitlines() if line.startswith("hutch: egress:")]
    assert len(summary) == 1, "one summary line" + describe(cp)
    # (a.test:8080 is tried over IPv6 first: the name the refused address was resolved from.)
    for needle in ("refused 6 DNS lookups", "DNS b.test", "tcp 192.0.2.20:80", ":8080 (a.test)"):
        assert needle in summary[0], f"the summary should name {needle!r}" + describe(cp)


def test_icmp_follows_the_policy(lab, h):
    policy = write_policy(h, "icmp.toml", ICMP_POLICY)
    probes = [("ping-allowed", icmp_probe("a.test")), ("ping4-allowed", icmp_probe(netlab.H1_V4)),
              ("ping6-allowed", icmp_probe(netlab.H1_V6)), ("ping-other", icmp_probe(netlab.H2_V4))]
    cp = guarded(run_egress(lab, h, "run", "--policy", policy, *HOST_BINDS, "--", "sh", "-c",
                            h.guard + script(probes)))
    r = results(cp.stdout)
    for name in ("ping-allowed", "ping4-allowed", "ping6-allowed"):
        assert r[name][0] == 0 and "reply" in r[name][1], f"{name}: echo to a.test with icmp = true" + describe(cp)
    assert r["ping-other"][0] != 0, "ping elsewhere must fail" + describe(cp)
    assert "icmp 192.0.2.20" in cp.stderr, "the refused ping is in the summary" + describe(cp)


def test_quiet_suppresses_the_summary(lab, hroot):
    policy = write_policy(hroot, "egress.toml", MAIN_POLICY)
    cp = run_egress(lab, hroot, "run", "--quiet", "--policy", policy, "--", "nslookup", "b.test")
    assert cp.returncode != 0 and "REFUSED" in cp.stdout, describe(cp)
    assert "egress" not in cp.stderr, "--quiet prints no summary" + describe(cp)


def test_capabilities_that_undo_enforcement_are_refused(lab, hroot):
    policy = write_policy(hroot, "egress.toml", MAIN_POLICY)
    for cap in ("NET_ADMIN", "NET_RAW"):
        cp = run_egress(lab, hroot, "run", "--policy", policy, "--cap-add", cap, "--", "true")
        assert cp.returncode == 125 and f"CAP_{cap}" in cp.stderr, describe(cp)


def pasta_processes() -> dict[int, tuple]:
    return {pid: p for pid, p in host_processes().items() if p[4].startswith("pasta ")}


def test_pasta_dies_with_the_sandbox_even_when_hutch_is_killed(lab, h1):
    policy = write_policy(h1, "egress.toml", MAIN_POLICY)
    before = set(pasta_processes())
    p = subprocess.Popen(egress_argv(lab, h1, "run", "--policy", policy, "--", "sleep", "60"), env=h1.environ(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        assert wait_until(lambda: set(pasta_processes()) - before, 10), "pasta should run while the sandbox does"
        ours = set(pasta_processes()) - before
        time.sleep(0.3)
        # The hutch process itself (ip netns exec execs it, and setpriv too).
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        assert wait_until(lambda: not (set(pasta_processes()) & ours), 5), "pasta must die with hutch"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def exec_fetch(lab, h, name: str, url: str) -> subprocess.CompletedProcess:
    """wget URL in a persistent sandbox, retried when it stalls (see FETCH)."""
    return run_egress(lab, h, "exec", name, "--", "sh", "-c", f"{FETCH}; fetch {url}")


def test_persistent_sandbox_keeps_its_policy_and_reports(lab, h1):
    policy = write_policy(h1, "egress.toml", MAIN_POLICY)
    before = set(pasta_processes())
    cp = run_egress(lab, h1, "create", "--name", "egr", "--policy", policy)
    assert cp.returncode == 0, describe(cp)
    try:
        cp = exec_fetch(lab, h1, "egr", "http://a.test/")
        assert cp.returncode == 0 and "hello from h1" in cp.stdout, describe(cp)
        cp = run_egress(lab, h1, "exec", "egr", "--", "timeout", "-s", "KILL", "20", "nslookup", "b.test")
        assert cp.returncode != 0 and "REFUSED" in cp.stdout, describe(cp)
        cp = exec_fetch(lab, h1, "egr", "http://192.0.2.20/")
        assert cp.returncode != 0, describe(cp)
        cp = run_egress(lab, h1, "inspect", "egr")
        assert cp.returncode == 0, describe(cp)
        net = json.loads(cp.stdout)[0]["network"]
        assert net["mode"] == "egress", describe(cp)
        assert net["refusals"]["refused_dns"] >= 1 and net["refusals"]["blocked"] >= 1, describe(cp)
        kinds = {(e["kind"], e.get("name") or e.get("destination")) for e in net["refusals"]["events"]}
        assert ("dns", "b.test") in kinds and ("connect", "192.0.2.20") in kinds, describe(cp)
        # Restarted, it is enforced again.
        assert run_egress(lab, h1, "stop", "-t", "1", "egr").returncode == 0
        assert wait_until(lambda: not (set(pasta_processes()) - before), 5), "pasta must stop with the sandbox"
        assert run_egress(lab, h1, "start", "egr").returncode == 0
        cp = exec_fetch(lab, h1, "egr", "http://192.0.2.20/")
        assert cp.returncode != 0, describe(cp)
        cp = exec_fetch(lab, h1, "egr", "http://a.test/")
        assert cp.returncode == 0, describe(cp)
    finally:
        run_egress(lab, h1, "rm", "-f", "egr")
    assert wait_until(lambda: not (set(pasta_processes()) - before), 5), "no pasta may be left"


def test_network_none_stays_loopback_only(lab, h1):
    cp = run_egress(lab, h1, "run", "--network", "none", "--", "sh", "-c", "ip -o link; cat /etc/resolv.conf; "
                    "wget -q -O- http://203.0.113.10/")
    assert cp.returncode != 0, describe(cp)
    links = [line.split(":")[1].strip() for line in cp.stdout.splitlines() if line[:1].isdigit()]
    assert links == ["lo"], describe(cp)


def test_malformed_policy_is_refused_with_its_position(lab, h1):
    bad = write_policy(h1, "bad.toml", '[network]\nmode = "egress"\nallow = [\n  { host = "a.test", ports = [99999] },\n]\n')
    cp = run_egress(lab, h1, "run", "--policy", bad, "--", "true")
    assert cp.returncode == 125, describe(cp)
    assert f"{bad}:4:" in cp.stderr, "the error names file:line:column" + describe(cp)


def test_user_policy_cannot_widen_the_admin_ceiling(lab, h1):
    admin = write_policy(h1, "admin.toml", '[network]\nmode = "egress"\nallow = [\n  { host = "a.test", ports = [80] },\n]\n')
    user = write_policy(h1, "user.toml", '[network]\nmode = "egress"\nallow = [\n  { host = "b.test", ports = [80] },\n]\n')
    cp = run_egress(lab, h1, "run", "--policy", user, "--", "true", env={"HUTCH_ADMIN_POLICY": str(admin)})
    assert cp.returncode == 125, describe(cp)
    assert "b.test" in cp.stderr and f"{user}:" in cp.stderr, "the refusal names the rule and where" + describe(cp)


FAKE_PASTA = "#!/bin/sh\necho 'fake pasta: cannot open /dev/net/tun: No such device' >&2\nexit 1\n"


def test_pasta_failure_is_explained_by_pasta(lab, h1):
    """When pasta fails, its own message is the error, for run and for create (whose pasta a
    keeper owns)."""
    fake = h1.work / "fake-pasta"
    fake.write_text(FAKE_PASTA)
    fake.chmod(0o755)
    policy = write_policy(h1, "egress.toml", MAIN_POLICY)
    env = {"HUTCH_PASTA": str(fake)}
    cp = run_egress(lab, h1, "run", "--policy", policy, "--", "true", env=env)
    assert_hutch_error(cp, "network did not come up", "pasta said: fake pasta: cannot open /dev/net/tun")
    cp = run_egress(lab, h1, "create", "--name", "nopasta", "--policy", policy, env=env)
    try:
        assert_hutch_error(cp, "network did not come up", "pasta said: fake pasta: cannot open /dev/net/tun")
        assert run_egress(lab, h1, "inspect", "nopasta").returncode != 0, "a failed create leaves no sandbox"
    finally:
        run_egress(lab, h1, "rm", "-f", "nopasta")
