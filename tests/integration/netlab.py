"""A fake internet in network namespaces, for the egress tests and benchmark.

Never the host's own network: every address, route, sysctl and server lives in namespaces made
here (`ip netns add`), and `down()` removes them with every process started in them.

    outer ("the host")  198.51.100.2/24  2001:db8:1::2/64   default route via inet
        |  veth
    inet (router + DNS) 198.51.100.1     2001:db8:1::1      dnsmasq on :53, forwarding on
        |  veth                    |  veth
    h1  203.0.113.10  2001:db8:a::10     h2  192.0.2.20  2001:db8:b::20
        HTTP on :80 and :8080 (IPv4 and IPv6), each answering "hello from hN"

The addresses are documentation ranges (RFC 5737, RFC 3849): never routed anywhere real, and not
private, so hutch's DNS forwarder accepts them as public answers. dnsmasq knows the names in
`NAMES` plus rebinding traps (a name that resolves to the metadata address, one to loopback, one
to a private range). hutch runs inside `outer`, whose /etc/resolv.conf (through ip netns exec's
/etc/netns/NAME/ bind) names the dnsmasq.

Command line (for tools/bench/egress.sh and manual runs, as root):
    python3 netlab.py up PREFIX      # prints the outer namespace's name
    python3 netlab.py down PREFIX
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

H1_V4, H1_V6 = "203.0.113.10", "2001:db8:a::10"
H2_V4, H2_V6 = "192.0.2.20", "2001:db8:b::20"
DNS_V4, DNS_V6 = "198.51.100.1", "2001:db8:1::1"
OUTER_V4, OUTER_V6 = "198.51.100.2", "2001:db8:1::2"

# name -> addresses dnsmasq answers with.
NAMES = {
    "a.test": [H1_V4, H1_V6],
    "www.a.test": [H1_V4, H1_V6],
    "b.test": [H2_V4, H2_V6],
    "v6only.test": [H1_V6],
    "rebind.test": ["169.254.169.254"],
    "rebind6.test": ["fd00:ec2::254"],
    "loop.test": ["127.0.0.1"],
    "private.test": ["10.9.8.7"],
    "outer.test": [OUTER_V4],
}
# Twenty more names (for the 20-domain benchmark policy), all on h2.
NAMES.update({f"d{i}.test": [H2_V4] for i in range(20)})

HTTP_SERVER = r"""
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = sys.argv[1].encode() + b"\n"
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
servers = [S(("::", int(p)), H) for p in sys.argv[2:]]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
servers[0].serve_forever()
"""


def run(*argv, check=True, **kw):
    cp = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if check and cp.returncode != 0:
        raise RuntimeError(f"netlab: {' '.join(map(str, argv))} failed (exit {cp.returncode}): {cp.stderr.strip()}")
    return cp


def unavailable() -> str | None:
    """Why a lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the fake internet needs root (ip netns add)"
    for tool in ("ip", "dnsmasq", "pasta"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}") and not os.path.exists(f"/usr/bin/{tool}"):
            return f"{tool} is not installed"
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return "libnftables is not installed (Debian: nftables)"
    probe = f"hxprobe{os.getpid()}"
    cp = run("ip", "netns", "add", probe, check=False)
    if cp.returncode != 0:
        return f"cannot create a network namespace: {cp.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


class Lab:
    def __init__(self, prefix: str):
        # Interface names are at most 15 characters: keep the prefix short.
        self.prefix = prefix[:6]
        self.outer = f"{self.prefix}-outer"
        self.inet = f"{self.prefix}-inet"
        self.h1 = f"{self.prefix}-h1"
        self.h2 = f"{self.prefix}-h2"
        self.state = Path(f"/run/{self.prefix}-netlab")
        self.procs: list[subprocess.Popen] = []

    # -- building -----------------------------------------------------------------------------
    def ns(self, name, *argv, **kw):
        return run("ip", "netns", "exec", name, *argv, **kw)

    def _veth(self, a_ns, a_if, b_ns, b_if):
        run("ip", "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if, "netns", b_ns)
        for ns, ifname in ((a_ns, a_if), (b_ns, b_if)):
            self.ns(ns, "ip", "link", "set", ifname, "up")

    def _addr(self, ns, ifname, *addrs):
        for a in addrs:
            extra = ["nodad"] if ":" in a else []
            self.ns(ns, "ip", "addr", "add", a, "dev", ifname, *extra)

    def up(self) -> "Lab":
        self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self):
        for n in (self.outer, self.inet, self.h1, self.h2):
            run("ip", "netns", "add", n)
            self.ns(n, "ip", "link", "set", "lo", "up")
        # Forwarding inside the router namespace only (a per-namespace sysctl).
        self.ns(self.inet, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        # pasta forwards the sandbox's pings through ICMP datagram sockets of the "host": allow
        # every group to open them there (the outer namespace's own setting).
        self.ns(self.outer, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
        self._veth(self.outer, "eth0", self.inet, "to-outer")
        self._addr(self.outer, "eth0", f"{OUTER_V4}/24", f"{OUTER_V6}/64")
        self._addr(self.inet, "to-outer", f"{DNS_V4}/24", f"{DNS_V6}/64")
        self.ns(self.outer, "ip", "route", "add", "default", "via", DNS_V4)
        self.ns(self.outer, "ip", "-6", "route", "add", "default", "via", DNS_V6)
        for host, v4, v6, net4, gw4, gw6 in ((self.h1, H1_V4, H1_V6, 24, "203.0.113.1", "2001:db8:a::1"),
                                            (self.h2, H2_V4, H2_V6, 24, "192.0.2.1", "2001:db8:b::1")):
            ifname = "to-" + host.rsplit("-", 1)[1]
            self._veth(host, "eth0", self.inet, ifname)
            self._addr(host, "eth0", f"{v4}/{net4}", f"{v6}/64")
            self._addr(self.inet, ifname, f"{gw4}/{net4}", f"{gw6}/64")
            self.ns(host, "ip", "route", "add", "default", "via", gw4)
            self.ns(host, "ip", "-6", "route", "add", "default", "via", gw6)
        # The outer namespace's resolver, as `ip netns exec` shows it to hutch.
        etc = Path("/etc/netns") / self.outer
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_V4}\n")
        self.state.mkdir(parents=True, exist_ok=True)
        self._start_http(self.h1, "hello from h1")
        self._start_http(self.h2, "hello from h2")
        self._start_dns()
        self._save()

    def _spawn(self, ns, argv, ready: str | None = None):
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if ready else subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.procs.append(p)
        if ready:
            line = p.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"netlab: {argv[0]} in {ns} did not start: {line!r}")
        return p

    def _start_http(self, ns, body):
        self._spawn(ns, [sys.executable, "-c", HTTP_SERVER, body, "80", "8080"], ready="ready")

    def _start_dns(self):
        argv = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                f"--listen-address={DNS_V4},{DNS_V6}", "--except-interface=lo", "--local-ttl=60",
                "--user=root", "--pid-file=", "--conf-file=/dev/null", "--log-facility=/dev/null"]
        for name, addrs in NAMES.items():
            argv.append(f"--host-record={name},{','.join(addrs)}")
        self._spawn(self.inet, argv)
        # Ready when it answers.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cp = self.ns(self.outer, sys.executable, "-c", QUERY, DNS_V4, "a.test", check=False)
            if cp.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("netlab: dnsmasq did not answer within 10 s")

    def _save(self):
        (self.state / "pids.json").write_text(json.dumps([p.pid for p in self.procs]))

    # -- tearing down -------------------------------------------------------------------------
    def down(self):
        pids = [p.pid for p in self.procs]
        try:
            pids += json.loads((self.state / "pids.json").read_text())
        except (OSError, ValueError):
            pass
        for pid in set(pids):
            try:
                os.killpg(pid, signal.SIGKILL)  # its own session: ip netns exec and the server
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            p.wait()
        self.procs = []
        for n in (self.h1, self.h2, self.inet, self.outer):
            run("ip", "netns", "del", n, check=False)
        shutil.rmtree(Path("/etc/netns") / self.outer, ignore_errors=True)
        try:
            Path("/etc/netns").rmdir()  # only when no one else uses it
        except OSError:
            pass
        shutil.rmtree(self.state, ignore_errors=True)

    # -- using --------------------------------------------------------------------------------
    def in_outer(self, argv: list[str], user: tuple[int, int] | None = None) -> list[str]:
        """argv run inside the outer namespace (with its resolv.conf), as `user` (uid, gid) if given."""
        prefix = ["ip", "netns", "exec", self.outer]
        if user:
            prefix += ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--init-groups", "--"]
        return prefix + argv


# A one-shot A query (stdlib only): exit 0 when the server answers NOERROR with an address.
QUERY = r"""
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.sendto(q, (server, 53))
r = s.recv(4096)
sys.exit(0 if r[:2] == q[:2] and (r[3] & 15) == 0 and struct.unpack(">H", r[6:8])[0] > 0 else 1)
"""


def main(argv):
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        print("usage: netlab.py up|down PREFIX", file=sys.stderr)
        return 2
    lab = Lab(argv[2])
    if argv[1] == "down":
        lab.down()
        return 0
    why = unavailable()
    if why:
        print(f"netlab: {why}", file=sys.stderr)
        return 1
    lab.up()
    # Detach: the servers live on until `down` (their pids are in the state dir).
    for p in lab.procs:
        if p.stdout:
            p.stdout.close()
    print(lab.outer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
