#include "hutch/sandbox/cgroup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string_view>

#include "hutch/core/duration.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"

namespace hutch::cgroup {

namespace {

constexpr const char* kDelegateHint =
    "delegate controllers to your user: 'systemctl edit user@.service' with [Service] "
    "Delegate=cpu cpuset io memory pids, then log in again; see 'hutch doctor'";

bool is_cgroup2(const std::string& path) {
    struct statfs st;
    return ::statfs(path.c_str(), &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
}

bool is_cgroup1(const std::string& path) {
    struct statfs st;
    return ::statfs(path.c_str(), &st) == 0 && st.f_type == CGROUP_SUPER_MAGIC;
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

std::string read_trimmed(const std::string& path) { return trim(fs::read_file(path)); }

// The file's text, or nullopt with the errno in `err`.
std::optional<std::string> try_read(const std::string& path, int& err) {
    try {
        return fs::read_file(path);
    } catch (const Error& e) {
        err = e.error_number();
        return std::nullopt;
    }
}

std::vector<std::string> words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    std::string w;
    while (in >> w) out.push_back(w);
    return out;
}

void write_file(const std::string& path, const std::string& value) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd || ::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
        throw_errno("cannot write '" + value + "' to", path);
}

// Says what is missing for `wanted`, from what inspect() read.
void require_controllers(const Inspection& in, const std::vector<std::string>& wanted, const std::string& hint) {
    if (!in.controllers) throw Error("cannot read", in.controllers_dir + "/cgroup.controllers", in.controllers_errno);
    for (const auto& c : wanted)
        if (std::find(in.available.begin(), in.available.end(), c) == in.available.end())
            fail("the " + c + " controller is not available", in.controllers_dir,
                 hint + " (available: " + (in.available.empty() ? "none" : *in.controllers) + ")");
}

// Enables `wanted` for the children of `dir` (those not enabled yet).
void enable_for_children(const std::string& dir, const std::vector<std::string>& wanted) {
    auto enabled = words(read_trimmed(dir + "/cgroup.subtree_control"));
    std::string add;
    for (const auto& c : wanted)
        if (std::find(enabled.begin(), enabled.end(), c) == enabled.end()) add += (add.empty() ? "+" : " +") + c;
    if (add.empty()) return;
    try {
        write_file(dir + "/cgroup.subtree_control", add);
    } catch (const Error& e) {
        if (e.error_number() == EBUSY)
            fail("cannot enable cgroup controllers: the cgroup holds processes", dir,
                 "cgroup v2 allows controllers only for cgroups without processes of their own; run hutch in a scope "
                 "of its own, e.g. 'systemd-run --user --scope -p Delegate=yes hutch ...'");
        throw;
    }
}

bool owned_by_us(const std::string& dir) {
    struct stat st;
    return ::stat(dir.c_str(), &st) == 0 && st.st_uid == ::geteuid() &&
           ::access((dir + "/cgroup.procs").c_str(), W_OK) == 0;
}

// The highest ancestor of `own_dir` (itself included) that we own: systemd's user@UID.service.
// "" when own_dir is not ours.
std::string delegation_root(const std::string& mount, const std::string& own_dir) {
    if (!owned_by_us(own_dir)) return {};
    std::string dir = own_dir;
    for (;;) {
        std::string up = dir.substr(0, dir.rfind('/'));
        if (up.size() < mount.size() || !owned_by_us(up)) return dir;
        dir = up;
    }
}

std::string read_or_empty(const std::string& path) {
    try {
        return fs::read_file(path);
    } catch (const Error&) {
        return {};
    }
}

// A rootless user namespace keeper of ours (sandbox/pause.hpp), which a run without limits may
// have left in the delegation root.
bool is_our_keeper(const std::string& pid) {
    struct stat st;
    return ::stat(("/proc/" + pid).c_str(), &st) == 0 && st.st_uid == ::geteuid() &&
           read_or_empty("/proc/" + pid + "/comm") == "hutch-pause\n";
}

// A delegation root that still holds processes cannot have controllers for its children. When
// they are only this process and hutch's keeper, each steps aside into a leaf of its own, as
// `systemd-run --scope` would.
void make_room(const std::string& root) {
    auto procs = words(read_trimmed(root + "/cgroup.procs"));
    const std::string self = std::to_string(::getpid());
    for (const auto& pid : procs)
        if (pid != self && !is_our_keeper(pid)) return;  // not ours to move: enabling will say so
    if (procs.empty()) return;
    // The leaves earlier front ends stepped into are empty once they exited: remove them (rmdir
    // leaves a live one alone), or every run started from this cgroup would leave one behind.
    if (DIR* d = ::opendir(root.c_str())) {
        while (struct dirent* e = ::readdir(d))
            if (std::string(e->d_name).rfind("hutch-front-", 0) == 0) ::unlinkat(::dirfd(d), e->d_name, AT_REMOVEDIR);
        ::closedir(d);
    }
    for (const auto& pid : procs) {
        std::string leaf = root + (pid == self ? "/hutch-front-" + self : std::string("/hutch-pause"));
        if (::mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("cannot create cgroup", leaf);
        write_file(leaf + "/cgroup.procs", pid);
    }
}

// Creates every directory from `from` (exclusive) down to `to`, enabling `wanted` for the
// children of each, `to` included: sandboxes' cgroups are its children.
// `optional` ones are enabled one at a time where they can be, and skipped where they cannot (a
// cpu controller refused for a real-time task in the subtree, say): statistics do without them.
void prepare_path(const std::string& from, const std::string& to, const std::vector<std::string>& wanted,
                  const std::vector<std::string>& optional) {
    auto enable = [&](const std::string& dir) {
        enable_for_children(dir, wanted);
        for (const auto& c : optional) {
            try {
                enable_for_children(dir, {c});
            } catch (const Error&) {
            }
        }
    };
    std::string dir = from;
    enable(dir);
    while (dir != to) {
        dir = to.substr(0, to.find('/', dir.size() + 1));
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("cannot create cgroup", dir);
        enable(dir);
    }
}

uint64_t stat_field(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    std::string k;
    uint64_t v;
    while (in >> k >> v)
        if (k == key) return v;
    return 0;
}

// Reads a file of the cgroup through its directory fd: `hutch exec` reads the sandbox's usage
// after joining its mount namespace, where the host's cgroup paths do not exist.
std::string read_at(int dirfd, const char* name) {
    UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC));
    if (!fd) return {};
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
}

uint64_t number_at(int dirfd, const char* name) { return std::strtoull(read_at(dirfd, name).c_str(), nullptr, 10); }

// "DEVICE:RATE" → "MAJ:MIN", bytes per second.
std::pair<std::string, uint64_t> device_rate(const std::string& spec, const std::string& flag) {
    size_t colon = spec.rfind(':');
    if (colon == std::string::npos) fail("invalid " + flag, spec, "use DEVICE:RATE, e.g. /dev/vda:10m");
    std::string dev = spec.substr(0, colon);
    struct stat st;
    if (::stat(dev.c_str(), &st) != 0) throw_errno("cannot use device for " + flag, dev);
    if (!S_ISBLK(st.st_mode)) fail("not a block device", dev, flag + " needs a block device such as /dev/vda");
    return {std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev)),
            parse_size(spec.substr(colon + 1), flag)};
}

// File descriptors closed together when it goes out of scope, one close_range per run of
// consecutive numbers: a sandbox's control files are opened one after the other, so usually one
// system call closes them all (each costs tens of microseconds in a VM like User-Mode Linux).
class OpenFds {
public:
    OpenFds() = default;
    OpenFds(const OpenFds&) = delete;
    OpenFds& operator=(const OpenFds&) = delete;
    ~OpenFds() {
        std::sort(fds_.begin(), fds_.end());
        for (size_t i = 0; i < fds_.size();) {
            size_t j = i;
            while (j + 1 < fds_.size() && fds_[j + 1] == fds_[j] + 1) ++j;
            ::syscall(SYS_close_range, static_cast<unsigned>(fds_[i]), static_cast<unsigned>(fds_[j]), 0U);
            i = j + 1;
        }
    }
    void keep(int fd) { fds_.push_back(fd); }

private:
    std::vector<int> fds_;
};

// Writes the limits that are set into the control files of the cgroup `dir`, opened as `dirfd`;
// false when it wrote none. The files stay open until the return (OpenFds).
bool write_limits(int dirfd, const std::string& dir, const Resources& r) {
    bool wrote = false;
    OpenFds opened;
    auto put = [&](const char* name, const std::string& value) {
        int fd = ::openat(dirfd, name, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) opened.keep(fd);
        if (fd < 0 || ::write(fd, value.data(), value.size()) != static_cast<ssize_t>(value.size()))
            throw_errno("cannot write '" + value + "' to", dir + "/" + name);
        wrote = true;
    };
    if (r.memory > 0) put("memory.max", std::to_string(r.memory));
    if (r.memory > 0 || r.memory_swap != 0) {
        // Docker's --memory-swap is memory plus swap; without it hutch allows no swap, so that a
        // memory limit means what it says on hosts with swap too.
        std::string swap = "0";
        if (r.memory_swap < 0) swap = "max";
        else if (r.memory_swap > 0) swap = std::to_string(std::max<int64_t>(0, r.memory_swap - r.memory));
        try {
            put("memory.swap.max", swap);
        } catch (const Error& e) {
            // A kernel without swap accounting: no swap to forbid, but swap asked for cannot be
            // given (--memory-swap above --memory; -1, unlimited, is what such a kernel does).
            if (e.error_number() != ENOENT) throw;
            if (r.memory_swap > r.memory)
                fail("--memory-swap needs swap accounting", dir + "/memory.swap.max",
                     "this kernel does not account swap (CONFIG_MEMCG_SWAP, or swapaccount=0 on its command "
                     "line); drop --memory-swap");
        }
    }
    if (r.pids > 0) put("pids.max", std::to_string(r.pids));
    if (r.cpus > 0) {
        const int64_t period = 100000;
        // Rounded to the nearest microsecond (cpus > 0) without llround: hutch then needs no libm,
        // one shared library fewer to load on every start.
        auto quota = static_cast<int64_t>(r.cpus * static_cast<double>(period) + 0.5);
        put("cpu.max", std::to_string(std::max<int64_t>(quota, 1000)) + " " + std::to_string(period));
    }
    if (r.cpu_weight > 0) put("cpu.weight", std::to_string(r.cpu_weight));
    if (r.io_weight > 0) {
        if (!fs::exists(dir + "/io.weight"))
            fail("io.weight is not available", dir,
                 "this kernel has no proportional I/O control (it needs BFQ or CONFIG_BLK_CGROUP_IOCOST); drop --io-weight");
        put("io.weight", "default " + std::to_string(r.io_weight));
    }
    for (const auto& d : r.device_read_bps) {
        auto [dev, rate] = device_rate(d, "--device-read-bps");
        put("io.max", dev + " rbps=" + std::to_string(rate));
    }
    for (const auto& d : r.device_write_bps) {
        auto [dev, rate] = device_rate(d, "--device-write-bps");
        put("io.max", dev + " wbps=" + std::to_string(rate));
    }
    return wrote;
}

std::string mib(uint64_t bytes) {
    char buf[64];
    if (bytes % (1024 * 1024) == 0) std::snprintf(buf, sizeof buf, "%llu MiB", static_cast<unsigned long long>(bytes >> 20));
    else std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
    return buf;
}

}  // namespace

std::string name_for(const Paths& paths, const std::string& sandbox) {
    // FNV-1a of the storage directory, which holds the sandboxes' directories and so reserves
    // their names: 48 bits tell a host's few states apart.
    uint64_t h = 14695981039346656037ULL;
    for (unsigned char c : paths.storage) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    char tag[16];
    std::snprintf(tag, sizeof tag, "%012llx", static_cast<unsigned long long>(h & 0xffffffffffffULL));
    return sandbox + "-" + tag;
}

std::vector<std::string> controllers_for(const Resources& r) {
    std::vector<std::string> c;
    if (r.memory || r.memory_swap) c.push_back("memory");
    if (r.pids) c.push_back("pids");
    if (r.cpus > 0 || r.cpu_weight) c.push_back("cpu");
    if (r.io_weight || !r.device_read_bps.empty() || !r.device_write_bps.empty()) c.push_back("io");
    return c;
}

Inspection inspect() {
    Inspection in;
    if (is_cgroup2("/sys/fs/cgroup")) {
        in.layout = Layout::PureV2;
        in.mount = "/sys/fs/cgroup";
    } else if (is_cgroup2("/sys/fs/cgroup/unified")) {
        in.layout = Layout::Hybrid;
        in.mount = "/sys/fs/cgroup/unified";
    } else if (is_cgroup1("/sys/fs/cgroup/memory") || is_cgroup1("/sys/fs/cgroup/pids") || is_cgroup1("/sys/fs/cgroup")) {
        in.layout = Layout::V1Only;
    }
    int mount_errno = 0;
    if (!in.mount.empty())
        if (auto text = try_read(in.mount + "/cgroup.controllers", mount_errno)) in.mount_controllers = trim(*text);

    if (auto text = try_read("/proc/self/cgroup", in.own_errno)) {
        std::istringstream lines(*text);
        std::string line;
        while (std::getline(lines, line))
            if (line.rfind("0::", 0) == 0) {
                in.own = line.substr(3);
                break;
            }
    }
    if (in.own && !in.mount.empty()) in.own_dir = in.mount + (*in.own == "/" ? "" : *in.own);
    if (in.layout != Layout::PureV2) return in;

    in.root = ::geteuid() == 0;
    if (in.root) {
        const char* env = std::getenv("HUTCH_CGROUP_PARENT");
        in.parent_from_env = env && *env;
        in.parent = in.parent_from_env ? std::string(env) : in.mount + "/hutch";
        in.parent_outside_mount = in.parent.rfind(in.mount + "/", 0) != 0;
        in.controllers_dir = in.mount;
        in.controllers = in.mount_controllers;
        in.controllers_errno = mount_errno;
    } else if (!in.own_dir.empty()) {
        in.delegation_root = delegation_root(in.mount, in.own_dir);
        if (!in.delegation_root.empty()) {
            in.parent = in.delegation_root + "/hutch";
            in.controllers_dir = in.delegation_root;
            if (auto text = try_read(in.controllers_dir + "/cgroup.controllers", in.controllers_errno))
                in.controllers = trim(*text);
        }
    }
    if (in.controllers) in.available = words(*in.controllers);
    return in;
}

Hierarchy locate(const std::vector<std::string>& required, const std::vector<std::string>& if_available) {
    const Inspection in = inspect();
    // --stats reads every controller's files: those available are enabled too, so that
    // memory.peak, pids.peak and io.stat exist; a missing one leaves its figures at 0.
    std::vector<std::string> optional;
    for (const auto& c : if_available)
        if (std::find(in.available.begin(), in.available.end(), c) != in.available.end() &&
            std::find(required.begin(), required.end(), c) == required.end())
            optional.push_back(c);
    // A hybrid host (v1 controllers at /sys/fs/cgroup, an empty v2 beside them) is refused
    // outright: its v2 part has no controllers, and v1 is never written.
    if (in.layout == Layout::Hybrid)
        fail("cgroup limits need a pure cgroup v2 host", "/sys/fs/cgroup",
             "this host runs cgroups in hybrid mode: the controllers are v1's, the v2 part at /sys/fs/cgroup/unified "
             "offers " + (in.mount_controllers && !in.mount_controllers->empty() ? "only " + *in.mount_controllers : "none") +
                 "; boot with systemd.unified_cgroup_hierarchy=1, or run without resource limits and --stats");
    if (in.layout != Layout::PureV2)
        fail("cgroup limits need cgroup v2", "/sys/fs/cgroup",
             "no cgroup2 filesystem is mounted there; boot with systemd.unified_cgroup_hierarchy=1, or run without "
             "resource limits and --stats");
    Hierarchy h{in.mount, in.parent};
    if (in.root) {
        if (in.parent_outside_mount)
            fail("HUTCH_CGROUP_PARENT must be inside the cgroup2 mount", in.parent, "e.g. " + in.mount + "/hutch");
        require_controllers(in, required, "this kernel does not offer it");
        prepare_path(in.mount, in.parent, required, optional);
        return h;
    }
    if (!in.own) {
        if (in.own_errno != 0) throw Error("cannot read", "/proc/self/cgroup", in.own_errno);
        fail("cannot find this process's cgroup v2", "/proc/self/cgroup", kDelegateHint);
    }
    if (in.delegation_root.empty()) fail("your cgroup is not delegated to you", in.own_dir, kDelegateHint);
    require_controllers(in, required, kDelegateHint);
    make_room(in.delegation_root);
    prepare_path(in.delegation_root, in.parent, required, optional);
    return h;
}

std::optional<Hierarchy> prepared_root_parent() {
    // Whether this is cgroup2 at all shows in Cgroup::create, without a statfs here: a mkdir into a
    // parent that is missing writes nothing, and only a cgroup has control files to write.
    // As inspect() reads it: an empty HUTCH_CGROUP_PARENT is no parent given.
    const char* env = std::getenv("HUTCH_CGROUP_PARENT");
    if (::geteuid() != 0 || (env && *env)) return std::nullopt;
    return Hierarchy{"/sys/fs/cgroup", "/sys/fs/cgroup/hutch"};
}

Cgroup Cgroup::create(const Hierarchy& where, const std::string& name, const Resources& limits) {
    Cgroup cg;
    cg.path_ = where.parent + "/" + name;
    if (::mkdir(cg.path_.c_str(), 0755) != 0) {
        if (errno != EEXIST) throw_errno("cannot create cgroup", cg.path_);
        // Left by a crashed hutch of the same name (its scratch dir was swept already).
        if (auto old = open(cg.path_)) {
            old->kill();
            old->remove();
        }
        if (::mkdir(cg.path_.c_str(), 0755) != 0) throw_errno("cannot create cgroup", cg.path_);
    }
    try {
        // A control file is opened, never created: a limit written proves this is a cgroup;
        // without one, the kernel is asked.
        cg.fd_.reset(::open(cg.path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!cg.fd_) throw_errno("cannot open cgroup", cg.path_);
        bool wrote = write_limits(cg.fd_.get(), cg.path_, limits);
        struct statfs st;
        if (!wrote && (::fstatfs(cg.fd_.get(), &st) != 0 || st.f_type != CGROUP2_SUPER_MAGIC))
            fail("not a cgroup v2 directory", cg.path_, "see 'hutch doctor'");
    } catch (...) {
        ::rmdir(cg.path_.c_str());
        throw;
    }
    return cg;
}

std::optional<Cgroup> Cgroup::open(const std::string& path) {
    Cgroup cg;
    cg.path_ = path;
    cg.fd_.reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg.fd_) return std::nullopt;
    return cg;
}

uint64_t Cgroup::oom_kills() const { return stat_field(read_at(fd_.get(), "memory.events"), "oom_kill"); }

Stats Cgroup::stats() const {
    Stats s;
    const int d = fd_.get();
    s.memory_peak = number_at(d, "memory.peak");
    s.memory_current = number_at(d, "memory.current");
    std::string cpu = read_at(d, "cpu.stat");
    s.cpu_usage_usec = stat_field(cpu, "usage_usec");
    s.cpu_user_usec = stat_field(cpu, "user_usec");
    s.cpu_system_usec = stat_field(cpu, "system_usec");
    s.nr_throttled = stat_field(cpu, "nr_throttled");
    s.pids_current = number_at(d, "pids.current");
    s.pids_peak = number_at(d, "pids.peak");
    std::istringstream io(read_at(d, "io.stat"));
    std::string line;
    while (std::getline(io, line)) {
        std::istringstream f(line);
        std::string w;
        while (f >> w) {
            if (w.rfind("rbytes=", 0) == 0) s.io_read_bytes += std::strtoull(w.c_str() + 7, nullptr, 10);
            if (w.rfind("wbytes=", 0) == 0) s.io_write_bytes += std::strtoull(w.c_str() + 7, nullptr, 10);
        }
    }
    s.oom_kills = oom_kills();
    s.pids_max_events = stat_field(read_at(d, "pids.events"), "max");
    return s;
}

namespace {

// The processes of the cgroup `dir` and of every cgroup below it (a sandbox with CAP_SYS_ADMIN
// may have made some), as cgroup.kill would reach them.
void procs_of_tree(const std::string& dir, std::vector<std::string>& out) {
    for (auto& pid : words(read_or_empty(dir + "/cgroup.procs"))) out.push_back(std::move(pid));
    DIR* d = ::opendir(dir.c_str());
    if (!d) return;
    while (struct dirent* e = ::readdir(d))
        if (e->d_type == DT_DIR && std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
            procs_of_tree(dir + "/" + e->d_name, out);
    ::closedir(d);
}

// Waits up to `tries` times 10 ms for the cgroup.events file open as `fd` to show `want`
// ("populated 0", "frozen 1"): the kernel wakes POLLPRI on each change.
void await_event(int fd, std::string_view want, int tries) {
    for (int i = 0;; ++i) {
        char buf[256];
        ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
        if ((n > 0 && std::string_view(buf, static_cast<size_t>(n)).find(want) != std::string_view::npos) || i == tries)
            return;
        struct pollfd p {fd, POLLPRI, 0};
        ::poll(&p, 1, 10);
    }
}

}  // namespace

void Cgroup::kill() const {
    if (fs::exists(path_ + "/cgroup.kill")) {
        write_file(path_ + "/cgroup.kill", "1");
        return;
    }
    // Before Linux 5.14: freeze so nothing forks while we kill, then thaw to let SIGKILL land.
    // Freezing takes effect task by task; cgroup.events says "frozen 1" once all are stopped (a
    // second at most here). Until then one may still fork, so the processes are listed again
    // until no process is left unkilled. The freeze covers the cgroups below as well.
    write_file(path_ + "/cgroup.freeze", "1");
    if (UniqueFd ev{::open((path_ + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC)}) await_event(ev.get(), "frozen 1", 100);
    std::vector<std::string> killed;
    for (bool fresh = true; fresh;) {
        fresh = false;
        std::vector<std::string> procs;
        procs_of_tree(path_, procs);
        for (const auto& pid : procs) {
            if (std::find(killed.begin(), killed.end(), pid) != killed.end()) continue;
            ::kill(std::stoi(pid), SIGKILL);
            killed.push_back(pid);
            fresh = true;
        }
    }
    write_file(path_ + "/cgroup.freeze", "0");
}

void Cgroup::evict(pid_t pid) const {
    std::string leaf = path_.substr(0, path_.rfind('/')) + "/hutch-exiting";
    const std::string procs_path = leaf + "/cgroup.procs";
    // Made by the first sandbox that ended, and kept: one syscall fewer on every later end.
    UniqueFd procs(::open(procs_path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!procs && errno == ENOENT) {
        if (::mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) return;
        procs.reset(::open(procs_path.c_str(), O_WRONLY | O_CLOEXEC));
    }
    std::string text = std::to_string(pid);
    // ESRCH: it is gone already, which is what was wanted.
    if (procs) (void)!::write(procs.get(), text.data(), text.size());
}

bool Cgroup::remove_if_empty() const { return ::rmdir(path_.c_str()) == 0 || errno == ENOENT; }

bool Cgroup::remove() const {
    UniqueFd ev;
    for (int attempt = 0; attempt < 200; ++attempt) {
        if (::rmdir(path_.c_str()) == 0 || errno == ENOENT) return true;
        if (errno != EBUSY) return false;
        // Processes leave a cgroup only at the very end of exit(2); wait for "populated 0".
        if (!ev && !(ev = UniqueFd(::open((path_ + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC)))) return false;
        await_event(ev.get(), "populated 0", 1);
    }
    return false;
}

std::string oom_message(const Resources& r, bool command_killed) {
    if (r.memory <= 0) return "out of memory: the kernel's OOM killer ended a process of the sandbox";
    const std::string limit = mib(static_cast<uint64_t>(r.memory));
    if (command_killed) return "out of memory: the sandbox reached its " + limit + " memory limit";
    return "out of memory: a process of the sandbox was killed at its " + limit + " memory limit";
}

std::string format_stats(const Stats& s) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "stats: peak memory %s, cpu %.3fs (user %.3fs, system %.3fs, throttled %llu times), pids peak %llu, "
                  "io read %llu bytes, written %llu bytes",
                  mib(s.memory_peak).c_str(), static_cast<double>(s.cpu_usage_usec) / 1e6,
                  static_cast<double>(s.cpu_user_usec) / 1e6, static_cast<double>(s.cpu_system_usec) / 1e6,
                  static_cast<unsigned long long>(s.nr_throttled), static_cast<unsigned long long>(s.pids_peak),
                  static_cast<unsigned long long>(s.io_read_bytes), static_cast<unsigned long long>(s.io_write_bytes));
    return buf;
}

void remove_stale(const std::string& name) {
    // Without a usable cgroup v2 parent here, no sandbox cgroup was ever created.
    const Inspection in = inspect();
    if (in.layout != Layout::PureV2 || in.parent.empty() || in.parent_outside_mount) return;
    try {
        if (auto cg = Cgroup::open(in.parent + "/" + name)) {
            cg->kill();
            cg->remove();
        }
    } catch (const Error&) {
        // Best effort.
    }
}

}  // namespace hutch::cgroup
