#include "hutch/net/egress.hpp"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <ifaddrs.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "forwarder.hpp"
#include "hutch/core/trace.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/fdpass.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/net/sockets.hpp"

namespace hutch::net {

namespace {

constexpr double kRoutesTimeout = 5;  // seconds pasta gets to configure the sandbox's interface
// NET_ADMIN rewrites the ruleset, NET_RAW forges packets past it, SYS_PTRACE reaches a
// persistent init (which holds NET_ADMIN), SYS_MODULE is the host's.
constexpr int kCapsRefused[] = {CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE, CAP_SYS_MODULE};

double monotonic() {
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// AVX2 usable: the CPU has it and the kernel saves the YMM registers. Asked with cpuid here, on
// the egress path only: __builtin_cpu_supports would link libgcc's constructor that probes the
// CPU at every start of hutch, and cpuid traps to the hypervisor in a VM.
bool cpu_has_avx2() {
#if !defined(__x86_64__)
    return false;
#else
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX)) return false;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0x6) != 0x6) return false;  // XMM and YMM state enabled by the kernel
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2);
#endif
}

std::string find_pasta() {
    if (const char* env = std::getenv("HUTCH_PASTA"); env && *env) {
        if (::access(env, X_OK) != 0) throw_errno("cannot run pasta", env, "HUTCH_PASTA must name the pasta binary");
        return env;
    }
    // pasta re-executes itself as pasta.avx2 where the CPU has AVX2: going there at once saves
    // an exec and a dynamic link on the start-up path.
    bool avx2 = cpu_has_avx2();
    for (const char* dir : {"/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"}) {
        std::string p = std::string(dir) + "/pasta";
        if (avx2 && ::access((p + ".avx2").c_str(), X_OK) == 0) return p + ".avx2";
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    fail("--network egress needs pasta (user-mode networking)", "pasta not found in /usr/bin, /usr/sbin or /usr/local/bin",
         "install it (Debian: apt-get install passt), or set HUTCH_PASTA to its path");
}

// "nameserver" lines of the host's resolv.conf (at most three, as glibc reads); 127.0.0.1 when
// there are none, as glibc assumes.
std::vector<std::string> host_resolvers() {
    std::vector<std::string> out;
    std::ifstream in("/etc/resolv.conf");
    std::string line;
    while (std::getline(in, line) && out.size() < 3) {
        std::istringstream words(line);
        std::string key, value;
        if (words >> key >> value && key == "nameserver") out.push_back(value);
    }
    if (out.empty()) out.push_back("127.0.0.1");
    return out;
}

std::vector<Ip> host_addresses() {
    std::vector<Ip> out;
    struct ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) throw_errno("cannot list the host's addresses", "getifaddrs");
    for (auto* a = list; a; a = a->ifa_next) {
        if (!a->ifa_addr) continue;
        Ip ip;
        ip.family = a->ifa_addr->sa_family;
        if (ip.family == AF_INET) std::memcpy(ip.bytes, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, 4);
        else if (ip.family == AF_INET6) std::memcpy(ip.bytes, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, 16);
        else continue;
        out.push_back(ip);
    }
    ::freeifaddrs(list);
    return out;
}

// Whether the host has a default route of each family (pasta copies those).
std::pair<bool, bool> host_default_routes() {
    bool v4 = false, v6 = false;
    std::ifstream r4("/proc/net/route");
    std::string line;
    std::getline(r4, line);  // header
    while (std::getline(r4, line)) {
        std::istringstream w(line);
        std::string ifname, dest, gw, flags, refcnt, use, metric, mask;
        if (w >> ifname >> dest >> gw >> flags >> refcnt >> use >> metric >> mask && dest == "00000000" && mask == "00000000")
            v4 = true;
    }
    std::ifstream r6("/proc/net/ipv6_route");
    while (std::getline(r6, line)) {
        std::istringstream w(line);
        std::string dest, plen, src, slen, next, metric, ref, use, flags, ifname;
        if (w >> dest >> plen >> src >> slen >> next >> metric >> ref >> use >> flags >> ifname &&
            dest == std::string(32, '0') && plen == "00" && ifname != "lo")
            v6 = true;
    }
    return {v4, v6};
}

bool policy_uses_icmp(const policy::Egress& e) {
    if (e.icmp) return true;
    for (const auto& r : e.allow)
        if (r.proto == "icmp" || (r.proto == "any" && r.ports.empty())) return true;
    return false;
}

bool policy_allows(const policy::Egress& e, const std::string& proto) {
    for (const auto& r : e.allow)
        if (r.proto == proto || r.proto == "any") return true;
    return false;
}

// Hands a pidfd of pasta to the init, which watches it while it waits for the routes: when pasta
// dies first, the sandbox fails at once instead of after the timeout. The init may be gone
// already: then there is nobody to tell.
void send_pidfd(int sock, int pidfd) { send_fd(sock, pidfd, MSG_DONTWAIT); }

std::set<int> open_fds() {
    std::set<int> out;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (auto* e = ::readdir(d))
            if (e->d_name[0] != '.') out.insert(std::atoi(e->d_name));
        ::closedir(d);
    }
    return out;
}

std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    off_t off = 0;
    ssize_t n;
    while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
        out.append(buf, static_cast<size_t>(n));
        off += n;
    }
    return out;
}

nlohmann::json rule_json(const policy::Rule& r) {
    nlohmann::json ports = nlohmann::json::array();
    for (auto [lo, hi] : r.ports) ports.push_back({lo, hi});
    return {{"host", r.host}, {"cidr", r.cidr}, {"ports", ports}, {"proto", r.proto}, {"origin", r.origin}};
}

policy::Rule rule_from(const nlohmann::json& j) {
    policy::Rule r;
    r.host = j.at("host").get<std::string>();
    r.cidr = j.at("cidr").get<std::string>();
    for (const auto& p : j.at("ports")) r.ports.emplace_back(p.at(0).get<uint16_t>(), p.at(1).get<uint16_t>());
    r.proto = j.at("proto").get<std::string>();
    r.origin = j.value("origin", "");
    return r;
}

// "tcp 192.0.2.20:80", "tcp [2001:db8::1]:443 (a.test)", "DNS evil.test".
std::string describe_event(const nlohmann::json& e) {
    if (e.value("kind", "") == "dns") return "DNS " + e.value("name", "?");
    std::string dest = e.value("destination", "?");
    if (dest.find(':') != std::string::npos && e.contains("port")) dest = "[" + dest + "]";
    std::string out = e.value("proto", "?") + " " + dest;
    if (e.contains("port")) out += ":" + std::to_string(e["port"].get<int>());
    if (e.contains("name")) out += " (" + e["name"].get<std::string>() + ")";
    return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Persistent sandboxes' files.

std::string rules_path(const Paths& paths, const std::string& name) {
    return paths.sandboxes_storage() + "/" + name + "/egress.json";
}

std::string report_path(const Paths& paths, const std::string& name) {
    return paths.sandboxes_storage() + "/" + name + "/egress-report.json";
}

void save_rules(const Paths& paths, const std::string& name, const policy::Egress& e) {
    nlohmann::json allow = nlohmann::json::array(), deny = nlohmann::json::array();
    for (const auto& r : e.allow) allow.push_back(rule_json(r));
    for (const auto& r : e.deny) deny.push_back(rule_json(r));
    nlohmann::json j{{"mode", e.mode}, {"allow", allow}, {"deny", deny}, {"icmp", e.icmp}};
    fs::write_file_atomic(rules_path(paths, name), j.dump(2) + "\n");
}

policy::Egress load_rules(const Paths& paths, const std::string& name) {
    policy::Egress e;
    std::string path = rules_path(paths, name);
    if (!fs::exists(path)) return e;
    try {
        auto j = nlohmann::json::parse(fs::read_file(path));
        e.mode = j.at("mode").get<std::string>();
        for (const auto& r : j.at("allow")) e.allow.push_back(rule_from(r));
        for (const auto& r : j.at("deny")) e.deny.push_back(rule_from(r));
        e.icmp = j.at("icmp").get<bool>();
    } catch (const nlohmann::json::exception& ex) {
        fail("corrupt egress rules", path + ": " + ex.what(), "recreate the sandbox: hutch rm -f " + name);
    }
    return e;
}

std::string read_report(const Paths& paths, const std::string& name) {
    std::string path = report_path(paths, name);
    if (!fs::exists(path)) return "null";
    std::string text = fs::read_file(path);
    return text.empty() ? "null" : text;
}

// ------------------------------------------------------------------------------------------------
// Front end.

namespace {

// Whether pasta needs a tun node of its own. pasta opens /dev/net/tun as the sandbox's root (the
// caller, rootless). udev makes it 0666; where it is not, root can give pasta a private node
// (see spawn_pasta_child), a user cannot.
bool needs_private_tun() {
    struct stat st;
    if (::stat("/dev/net/tun", &st) != 0 || !S_ISCHR(st.st_mode))
        throw_errno("--network egress needs the tun device", "/dev/net/tun", "load the tun module (modprobe tun)");
    if ((st.st_mode & 0006) == 0006) return false;
    if (::geteuid() == 0) return true;
    if (::access("/dev/net/tun", R_OK | W_OK) != 0)
        throw_errno("rootless --network egress needs /dev/net/tun usable by you", "/dev/net/tun",
                    "make it mode 0666 as udev does (it only creates devices in your own namespaces)");
    return false;
}

// Written plainly, not synced: the scratch directory does not outlive the sandbox, and an fsync
// costs the start-up milliseconds.
void write_resolv_conf(const std::string& path) {
    static const char kText[] =
        "# hutch: the sandbox's DNS forwarder (answers only what the policy allows)\n"
        "nameserver 127.0.0.1\nnameserver ::1\n"
        // EDNS lets answers up to 1200 bytes come over UDP: the forwarder speaks no TCP.
        "options edns0\n";
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd || ::write(fd.get(), kText, sizeof kText - 1) != static_cast<ssize_t>(sizeof kText - 1))
        throw_errno("cannot write the sandbox's resolv.conf", path);
}

// The report file, or an anonymous one (a run's, read back by finish()).
UniqueFd open_report(const std::string& path) {
    UniqueFd fd(path.empty() ? ::memfd_create("hutch-egress-report", MFD_CLOEXEC)
                             : ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) throw_errno("cannot create the egress report", path.empty() ? "memfd" : path);
    return fd;
}

}  // namespace

Egress::Egress(const policy::Egress& rules, const SandboxSpec& spec, const std::string& scratch_dir,
               const std::string& report)
    : rules_(rules), sandbox_(spec.name) {
    trace("egress: front end prepares");
    pasta_ = find_pasta();
    setup_tun_ = needs_private_tun();
    for (const auto& r : host_resolvers())
        if (UniqueFd fd = connect_resolver(r)) {
            upstream_.push_back(std::move(fd));
            resolvers_.push_back(r);
        }
    if (upstream_.empty())
        fail("no usable resolver for the sandbox's DNS forwarder", "/etc/resolv.conf",
             "name an IPv4 or IPv6 nameserver there");
    host_addresses_ = host_addresses();
    std::tie(want_v4_, want_v6_) = host_default_routes();
    if (!want_v4_ && !want_v6_)
        fail("--network egress needs a default route on the host", "no default route",
             "pasta copies the host's; without one the sandbox could reach nothing");
    resolv_path_ = scratch_dir + "/resolv.conf";
    write_resolv_conf(resolv_path_);
    report_ = open_report(report);
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
        throw_errno("cannot create a socket pair", "pasta's watch");
    pasta_watch_host_.reset(pair[0]);
    pasta_watch_init_.reset(pair[1]);
    trace("egress: front end prepared");
}

Egress::~Egress() {
    stop_pasta();
    delete forwarder_;
}

void Egress::stop_pasta() {
    if (!pasta_pidfd_) return;
    // Not waited for: tearing down pasta's buffers and the last reference to the namespace
    // takes the kernel tens of milliseconds, and nothing here needs it gone. Reaped when it is
    // (a short-lived caller exits first and leaves that to its parent).
    ::syscall(SYS_pidfd_send_signal, pasta_pidfd_.get(), SIGKILL, nullptr, 0);
    ::waitpid(pasta_pid_, nullptr, WNOHANG);
    pasta_pidfd_.reset();
}

BindMount Egress::resolv_conf() const { return BindMount{resolv_path_, "/etc/resolv.conf", true}; }

void Egress::check_caps(const caps::Set& set) const {
    for (int cap : kCapsRefused)
        if (std::find(set.begin(), set.end(), cap) != set.end())
            fail("--network egress cannot be combined with CAP_" + caps::name_of(cap),
                 "--cap-add " + caps::name_of(cap),
                 "with it the command could rewrite or bypass the sandbox's firewall; drop the capability");
}

void Egress::spawn_pasta_child(int userns, int netns, int log) const {
    // In the child of a fork: every failure is one line on the log (fd 2 once it is moved there).
    int err = log;
    auto die = [&err](const char* what) {
        std::string msg = std::string("cannot start pasta: ") + what + ": " + std::strerror(errno) + "\n";
        ssize_t ignored = ::write(err, msg.data(), msg.size());
        (void)ignored;
        ::_exit(127);
    };
    pid_t parent = ::getppid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    if (setup_tun_) {
        // Root's sandbox runs pasta as its own unprivileged root, which cannot open a 0600 tun
        // node: a node of its own in a private mount namespace (the host's stays as it is).
        if (::unshare(CLONE_NEWNS) != 0) die("unshare");
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("make mounts private");
        if (::mount("tmpfs", "/dev/net", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=4k") != 0) die("mount /dev/net");
        if (::mknod("/dev/net/tun", S_IFCHR | 0666, makedev(10, 200)) != 0 || ::chmod("/dev/net/tun", 0666) != 0)
            die("create /dev/net/tun");
    }
    // As the sandbox's root: pasta has the capabilities it needs over the sandbox's namespace
    // and no more over the host than the sandbox itself.
    if (::setns(userns, CLONE_NEWUSER) != 0) die("join the sandbox's user namespace");
    ::setgroups(0, nullptr);  // refused where the map denies setgroups: then the caller's stay
    if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) die("become the sandbox's root");
    // Set after the credential change, which clears it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    int keep[2] = {netns, log};
    for (int& fd : keep) fd = ::fcntl(fd, F_DUPFD, 100);
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(keep[1], 2);
    err = 2;
    ::dup2(keep[0], 3);
    ::syscall(SYS_close_range, 4U, ~0U, 0U);
    std::vector<const char*> argv{"pasta", "--config-net", "--netns", "/proc/self/fd/3", "--netns-only",
                                  "--runas", "0:0",
                                  // No port forwarding in either direction, and the gateway's address
                                  // is the gateway, not the host's loopback.
                                  "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw",
                                  // Addresses and routes come from --config-net; nothing to offer.
                                  "--no-dhcp", "--no-dhcpv6", "--no-ra", "-f", "-q"};
    // A protocol no rule allows is not even handled (less to set up, less to attack). (Not
    // --no-icmp: this pasta then ignores ICMPv6 altogether, neighbour discovery included, and
    // IPv6 stops working. The ruleset decides where ICMP echo may go.)
    if (!policy_allows(rules_, "udp")) argv.push_back("--no-udp");
    if (!policy_allows(rules_, "tcp")) argv.push_back("--no-tcp");
    argv.push_back(nullptr);
    ::execv(pasta_.c_str(), const_cast<char* const*>(argv.data()));
    die(pasta_.c_str());
    ::_exit(127);
}

void Egress::start_pasta(pid_t init_pid, bool outlive_caller) {
    trace("pasta: start");
    std::string ns = "/proc/" + std::to_string(init_pid) + "/ns/";
    UniqueFd userns(::open((ns + "user").c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd netns(::open((ns + "net").c_str(), O_RDONLY | O_CLOEXEC));
    if (!userns || !netns) throw_errno("cannot open the sandbox's namespaces for pasta", ns);
    pasta_watch_init_.reset();  // the init's end
    pasta_log_.reset(::memfd_create("hutch-pasta-log", MFD_CLOEXEC));
    if (!pasta_log_) throw_errno("cannot create pasta's log", "memfd");
    if (!outlive_caller) {
        pid_t pid = ::fork();
        if (pid < 0) throw_errno("cannot fork pasta");
        if (pid == 0) spawn_pasta_child(userns.get(), netns.get(), pasta_log_.get());
        pasta_pid_ = pid;
        pasta_pidfd_.reset(pidfd_open(pid));
        if (!pasta_pidfd_) {
            // Without it pasta could be neither ended nor watched: end it now, while we know it.
            int err = errno;
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
            pasta_pid_ = -1;
            errno = err;
            throw_errno("cannot watch pasta", "pid " + std::to_string(pid));
        }
        send_pidfd(pasta_watch_host_.get(), pasta_pidfd_.get());
        pasta_watch_host_.reset();
        return;
    }
    // Persistent: a keeper outlives this command, owns pasta (which dies with it: PDEATHSIG),
    // and ends pasta when the init exits, whatever way it does. Forked twice, so that it is
    // never this process's child (no zombie for a long-lived caller to reap).
    UniqueFd init_fd(pidfd_open(init_pid));
    if (!init_fd) throw_errno("cannot watch the sandbox's init", std::to_string(init_pid));
    pid_t middle = ::fork();
    if (middle < 0) throw_errno("cannot fork pasta's keeper");
    if (middle > 0) {
        int status = 0;
        while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("cannot start pasta's keeper", "fork");
        return;
    }
    pid_t keeper = ::fork();  // the middle one: its child is the keeper
    if (keeper < 0) ::_exit(1);  // says "cannot start pasta's keeper" above
    if (keeper > 0) ::_exit(0);
    run_keeper(init_fd.get(), userns.get(), netns.get(), pasta_watch_host_.get(), pasta_log_.get());
}

void Egress::run_keeper(int init_fd, int userns, int netns, int watch, int log) const {
    ::setsid();
    ::prctl(PR_SET_NAME, "hutch-pasta", 0, 0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Nothing of the caller's: not its stdio (whoever ran `hutch create` waits for EOF), not the
    // sandbox's lock. pasta's messages go to the log the front end reads if the network fails.
    int keep[5] = {init_fd, userns, netns, watch, log};
    for (int& fd : keep) fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 100);
    for (int i = 0; i < 5; ++i) ::dup3(keep[i], 3 + i, O_CLOEXEC);
    ::syscall(SYS_close_range, 8U, ~0U, 0U);
    int null = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
    if (null > 2) ::close(null);
    pid_t pasta = ::fork();
    if (pasta < 0) ::_exit(1);
    if (pasta == 0) spawn_pasta_child(4, 5, 7);
    int pasta_fd = pidfd_open(pasta);
    send_pidfd(6, pasta_fd);
    ::close(6);
    struct pollfd fds[2] = {{3, POLLIN, 0}, {pasta_fd, POLLIN, 0}};
    while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
    }
    ::kill(pasta, SIGKILL);
    ::waitpid(pasta, nullptr, 0);
    ::_exit(0);
}

std::string Egress::pasta_messages() const {
    if (!pasta_log_) return {};
    std::istringstream in(read_all(pasta_log_.get()));
    std::string line, out;
    while (std::getline(in, line)) {
        if (line.empty() || line.find("to syslog") != std::string::npos) continue;  // no syslog in its namespace
        if (!out.empty()) out += "; ";
        out += line;
    }
    return out;
}

std::string Egress::finish() {
    stop_pasta();
    nlohmann::json report;
    try {
        report = nlohmann::json::parse(read_all(report_.get()));
    } catch (const nlohmann::json::exception&) {
        return {};
    }
    uint64_t dns = report.value("refused_dns", 0), blocked = report.value("blocked", 0);
    if (dns + blocked == 0) return {};
    std::vector<std::string> seen;
    for (const auto& e : report["events"]) {
        std::string d = describe_event(e);
        if (std::find(seen.begin(), seen.end(), d) == seen.end()) seen.push_back(d);
    }
    std::string out = "egress:";
    if (dns) out += " refused " + std::to_string(dns) + " DNS " + (dns == 1 ? "lookup" : "lookups");
    if (dns && blocked) out += " and";
    if (blocked) out += " blocked " + std::to_string(blocked) + (blocked == 1 ? " connection attempt" : " connection attempts");
    out += ": ";
    for (size_t i = 0; i < seen.size() && i < 5; ++i) out += (i ? ", " : "") + seen[i];
    if (seen.size() > 5) out += ", and " + std::to_string(seen.size() - 5) + " more";
    return out;
}

// ------------------------------------------------------------------------------------------------
// Inside the sandbox's init.

void Egress::sandbox_before_pivot(const IdMap& map) {
    pasta_watch_host_.reset();  // the front end's end
    trace("init: dlopen");
    nft_ = Nft::open();
    trace("init: nft open");
    if (!policy_uses_icmp(rules_)) return;
    // ICMP datagram sockets ("ping" without CAP_NET_RAW) for every gid of the sandbox; /proc/sys
    // of this network namespace is still writable here (read-only once the sandbox's /proc is).
    uint32_t high = 0;
    for (const auto& r : map.gids) high = std::max(high, r.inside + r.count - 1);
    std::string range = "0 " + std::to_string(high) + "\n";
    UniqueFd fd(::open("/proc/sys/net/ipv4/ping_group_range", O_WRONLY | O_CLOEXEC));
    if (!fd || ::write(fd.get(), range.data(), range.size()) < 0)
        throw_errno("cannot allow ICMP echo in the sandbox", "/proc/sys/net/ipv4/ping_group_range");
}

void Egress::sandbox_start() {
    trace("init: ruleset");
    nft_.run(ruleset(rules_), "load the egress ruleset");
    trace("init: ruleset loaded");
    // libnftables keeps a netfilter netlink socket of its own (opened when it first needs it): a
    // persistent init must keep it open, and nothing else of what this init has open.
    for (int fd : open_fds()) {
        int domain = 0, protocol = 0;
        socklen_t len = sizeof domain;
        if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_NETLINK) continue;
        len = sizeof protocol;
        if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == NETLINK_NETFILTER)
            nft_fds_.push_back(fd);
    }
    std::vector<int> up;
    for (const auto& fd : upstream_) up.push_back(fd.get());
    forwarder_ = new Forwarder(rules_, host_addresses_, up, resolvers_, report_.get(), sandbox_, nft_);
    forwarder_->open();
    trace("init: forwarder open");
    wait_for_routes();
    trace("init: routes");
}

void Egress::close_other_fds(std::vector<int> keep) {
    if (forwarder_) {
        std::vector<int> fds = forwarder_->fds();
        keep.insert(keep.end(), fds.begin(), fds.end());
    }
    keep.push_back(report_.get());
    keep.insert(keep.end(), nft_fds_.begin(), nft_fds_.end());
    close_fds_except(std::move(keep));
}

init::Service* Egress::service() { return forwarder_; }

namespace {

// Whether the main table has a default route of `family` (one dump over `fd`).
std::pair<bool, bool> default_routes(int fd) {
    struct {
        nlmsghdr h;
        rtmsg r;
    } req{};
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = RTM_GETROUTE;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.rtm_family = AF_UNSPEC;
    if (::send(fd, &req, sizeof req, 0) < 0) throw_errno("cannot list the sandbox's routes", "rtnetlink");
    bool v4 = false, v6 = false;
    alignas(NLMSG_ALIGNTO) char buf[32768];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("cannot read the sandbox's routes", "rtnetlink");
        }
        size_t len = static_cast<size_t>(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) return {v4, v6};
            if (h->nlmsg_type != RTM_NEWROUTE) continue;
            auto* r = static_cast<rtmsg*>(NLMSG_DATA(h));
            if (r->rtm_dst_len != 0 || r->rtm_table != RT_TABLE_MAIN || r->rtm_type != RTN_UNICAST) continue;
            (r->rtm_family == AF_INET ? v4 : v6) = true;
        }
    }
}

}  // namespace

void Egress::wait_for_routes() {
    // pasta configures the interface from outside while this init sets up the filesystem; the
    // command may start once the routes pasta copies from the host are there.
    UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd) throw_errno("cannot open a routing socket", "rtnetlink");
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw_errno("cannot bind", "rtnetlink");
    UniqueFd dump(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!dump) throw_errno("cannot open a routing socket", "rtnetlink");
    UniqueFd pasta;  // pasta's pidfd, once the front end has sent it
    const double deadline = monotonic() + kRoutesTimeout;
    for (;;) {
        auto [v4, v6] = default_routes(dump.get());
        if ((v4 || !want_v4_) && (v6 || !want_v6_)) break;
        double left = deadline - monotonic();
        if (left <= 0)
            fail("the sandbox's network did not come up", "pasta configured no default route in " +
                 std::to_string(static_cast<int>(kRoutesTimeout)) + " s",
                 "check that 'pasta --version' works and that /dev/net/tun exists");
        struct pollfd p[3] = {{fd.get(), POLLIN, 0}, {pasta ? -1 : pasta_watch_init_.get(), POLLIN, 0},
                              {pasta.get(), POLLIN, 0}};
        if (::poll(p, 3, static_cast<int>(left * 1000) + 1) <= 0) continue;
        if (p[0].revents) {
            char drain[8192];
            while (::recv(fd.get(), drain, sizeof drain, MSG_DONTWAIT) > 0) {
            }
        }
        if (p[1].revents & POLLIN) pasta = recv_fd(pasta_watch_init_.get(), MSG_DONTWAIT);
        if (p[2].revents & POLLIN)
            fail("the sandbox's network did not come up", "pasta exited before it configured the namespace",
                 "check that 'pasta --version' works");
    }
    pasta_watch_init_.reset();
}

}  // namespace hutch::net
