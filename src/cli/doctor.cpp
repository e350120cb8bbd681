// hutch doctor: what this host offers hutch, one line per check, with the fix for what is missing.
//
// Everything here only looks. The probes that need more than reading (a user namespace, an overlay
// mount) run in forked children inside namespaces of their own, in a temporary directory that is
// removed again; nothing kernel-global (sysctls, cgroup files) is ever written.
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/kernel.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/sandbox/caps.hpp"
#include "hutch/sandbox/cgroup.hpp"
#include "hutch/sandbox/idmap.hpp"
#include "hutch/sandbox/seccomp.hpp"
#include "hutch/sandbox/state.hpp"

namespace hutch::cli {

namespace {

enum class Status { Ok, Warn, Fail };

struct Check {
    std::string name;
    Status status = Status::Ok;
    std::string detail;
    std::string fix;  // empty when there is nothing to do
};

Check ok(std::string name, std::string detail) { return {std::move(name), Status::Ok, std::move(detail), {}}; }
Check warn(std::string name, std::string detail, std::string fix) {
    return {std::move(name), Status::Warn, std::move(detail), std::move(fix)};
}
Check failed(std::string name, std::string detail, std::string fix) {
    return {std::move(name), Status::Fail, std::move(detail), std::move(fix)};
}

// Accumulates the findings of one check: the worst status wins, details and fixes are joined.
struct Findings {
    Status status = Status::Ok;
    std::vector<std::string> details, fixes;
    void note(const std::string& d) { details.push_back(d); }
    void problem(Status s, const std::string& d, const std::string& fix) {
        status = std::max(status, s);
        details.push_back(d);
        if (!fix.empty() && std::find(fixes.begin(), fixes.end(), fix) == fixes.end()) fixes.push_back(fix);
    }
    Check to_check(const std::string& name) const {
        auto join = [](const std::vector<std::string>& v, const char* sep) {
            std::string s;
            for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
            return s;
        };
        return {name, status, join(details, "; "), join(fixes, "; also: ")};
    }
};

const char* status_word(Status s) { return s == Status::Ok ? "ok" : s == Status::Warn ? "warn" : "FAIL"; }
const char* status_json(Status s) { return s == Status::Ok ? "ok" : s == Status::Warn ? "warn" : "fail"; }

std::string errno_text(int err) { return std::strerror(err); }

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
    return s;
}

std::optional<std::string> read_optional(const std::string& path) {
    try {
        return trimmed(fs::read_file(path));
    } catch (const Error&) {
        return std::nullopt;
    }
}

std::string human_bytes(unsigned long long bytes) {
    const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    char buf[64];
    if (u == 0) std::snprintf(buf, sizeof buf, "%llu bytes", bytes);
    else std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
    return buf;
}

std::string octal_mode(mode_t m) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
    return buf;
}

std::string fs_type_name(const std::string& path) {
    struct statfs st;
    if (::statfs(path.c_str(), &st) != 0) return "unknown filesystem";
    switch (static_cast<unsigned long>(st.f_type)) {
        case EXT4_SUPER_MAGIC: return "ext4";
        case XFS_SUPER_MAGIC: return "xfs";
        case BTRFS_SUPER_MAGIC: return "btrfs";
        case TMPFS_MAGIC: return "tmpfs";
        case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
        case NFS_SUPER_MAGIC: return "nfs";
        case FUSE_SUPER_MAGIC: return "fuse";
        case CIFS_SUPER_MAGIC: return "cifs";
        case 0xFE534D42: return "smb2";
        case 0x2FC12FC1: return "zfs";
        case 0xF2F52010: return "f2fs";
        default: {
            char buf[48];
            std::snprintf(buf, sizeof buf, "filesystem 0x%lx", static_cast<unsigned long>(st.f_type));
            return buf;
        }
    }
}

bool is_dir(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string parent_of(const std::string& path) {
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// The closest existing path at or above `path` (itself when it exists).
std::string nearest_existing(std::string path) {
    struct stat st;
    while (::stat(path.c_str(), &st) != 0 && path != "/" && path != ".") path = parent_of(path);
    return path;
}

// The closest directory at or above `path` that we may create entries in, or "".
std::string nearest_writable_dir(std::string path) {
    for (;;) {
        if (is_dir(path) && ::access(path.c_str(), W_OK | X_OK) == 0) return path;
        if (path == "/" || path == ".") return {};
        path = parent_of(path);
    }
}

// An executable on PATH or in the usual bin and sbin directories (users' PATHs often lack sbin).
std::string find_program(const std::string& name) {
    std::vector<std::string> dirs;
    if (const char* p = std::getenv("PATH")) {
        std::istringstream in(p);
        std::string d;
        while (std::getline(in, d, ':'))
            if (!d.empty()) dirs.push_back(d);
    }
    for (const char* d : {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"})
        dirs.push_back(d);
    for (const auto& d : dirs) {
        std::string path = d + "/" + name;
        struct stat st;
        if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0) return path;
    }
    return {};
}

// A shared library in the dynamic loader's usual directories, found without loading it.
std::string find_library(const std::string& soname) {
    for (const char* dir : {"/usr/lib/*-linux-gnu*", "/lib/*-linux-gnu*", "/usr/lib64", "/lib64", "/usr/lib",
                            "/lib", "/usr/local/lib", "/usr/local/lib64"}) {
        std::string pattern = std::string(dir) + "/" + soname;
        glob_t g{};
        if (::glob(pattern.c_str(), 0, nullptr, &g) == 0 && g.gl_pathc > 0) {
            std::string found = g.gl_pathv[0];
            ::globfree(&g);
            return found;
        }
        ::globfree(&g);
    }
    return {};
}

std::string user_name(uid_t uid) {
    if (struct passwd* pw = ::getpwuid(uid)) return pw->pw_name;
    return std::to_string(uid);
}

// ---- probes in children -----------------------------------------------------------------------

// Runs fn in a forked child and returns "" when it succeeded, else what went wrong (fn's answer).
// The child dies with us, and is killed if it takes longer than a few seconds.
std::string in_child(const std::function<std::string()>& fn) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return "cannot create a pipe: " + errno_text(errno);
    UniqueFd rd(p[0]), wr(p[1]);
    std::fflush(nullptr);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) return "cannot fork: " + errno_text(errno);
    if (pid == 0) {
        rd.reset();
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(125);
        std::string err;
        try {
            err = fn();
        } catch (const std::exception& e) {
            err = e.what();
        } catch (...) {
            err = "unexpected error";
        }
        if (!err.empty()) {
            ssize_t n = ::write(wr.get(), err.data(), err.size());
            (void)n;
        }
        ::_exit(err.empty() ? 0 : 1);
    }
    wr.reset();
    std::string msg;
    bool timed_out = false;
    for (;;) {
        struct pollfd pf {rd.get(), POLLIN, 0};
        int r = ::poll(&pf, 1, 5000);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            timed_out = true;
            ::kill(pid, SIGKILL);
            break;
        }
        char buf[512];
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        msg.append(buf, static_cast<size_t>(n));
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) return "the probe did not finish within 5 seconds";
    if (WIFSIGNALED(status)) return "the probe was killed by signal " + std::to_string(WTERMSIG(status));
    if (WEXITSTATUS(status) != 0 && msg.empty()) return "the probe failed (status " + std::to_string(WEXITSTATUS(status)) + ")";
    return msg;
}

std::string write_proc_self(const char* name, const std::string& data) {
    std::string path = std::string("/proc/self/") + name;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return errno == ENOENT && std::string(name) == "setgroups" ? "" : "cannot open " + path + ": " + errno_text(errno);
    if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
        return "cannot write " + path + ": " + errno_text(errno);
    return {};
}

// ---- kernel -----------------------------------------------------------------------------------

Check check_kernel() {
    std::optional<Kernel> kernel = running_kernel();
    if (!kernel) return failed("kernel", "uname: " + errno_text(errno), "");
    auto at_least = [&](int a, int b) { return kernel->at_least(a, b); };
    const std::string& release = kernel->release;
    struct Feature {
        int major, minor;
        const char* what;
    };
    static constexpr Feature required[] = {{5, 3, "clone3 and pidfd"},
                                           {5, 7, "CLONE_INTO_CGROUP"},
                                           {5, 11, "overlayfs in a user namespace"},
                                           {5, 12, "mount_setattr"}};
    if (!at_least(5, 12)) {
        std::string missing;
        for (const auto& f : required)
            if (!at_least(f.major, f.minor))
                missing += (missing.empty() ? "" : ", ") + std::string(f.what) + " (" + std::to_string(f.major) +
                           "." + std::to_string(f.minor) + ")";
        return failed("kernel", release + " (need 5.12; missing " + missing + ")",
                      "upgrade to Linux 5.12 or later (5.14 or later for cgroup.kill)");
    }
    if (!at_least(5, 14))
        return warn("kernel", release + " (need 5.12; no cgroup.kill before 5.14: sandboxes are frozen and killed one by one)",
                    "upgrade to Linux 5.14 or later");
    return ok("kernel", release + " (need 5.12)");
}

// ---- user namespaces --------------------------------------------------------------------------

std::string self_exe() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("/usr/bin/hutch");
}

Check check_userns() {
    const bool root = ::geteuid() == 0;
    Findings f;
    if (auto max = read_optional("/proc/sys/user/max_user_namespaces")) {
        if (std::strtoll(max->c_str(), nullptr, 10) <= 0)
            f.problem(Status::Fail, "user.max_user_namespaces is " + *max,
                      "sysctl user.max_user_namespaces=15000 (and persist it in /etc/sysctl.d/)");
        else
            f.note("max_user_namespaces " + *max);
    }
    if (auto clone = read_optional("/proc/sys/kernel/unprivileged_userns_clone")) {
        if (*clone == "0" && !root)
            f.problem(Status::Fail, "kernel.unprivileged_userns_clone is 0 (Debian's switch)",
                      "sysctl kernel.unprivileged_userns_clone=1 (and persist it in /etc/sysctl.d/)");
        else
            f.note("unprivileged_userns_clone " + *clone + (*clone == "0" ? " (root is exempt)" : ""));
    }
    if (auto aa = read_optional("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")) {
        if (*aa == "1" && !root)
            f.problem(Status::Fail,
                      "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)",
                      "allow hutch in an AppArmor profile, e.g. /etc/apparmor.d/hutch: 'abi <abi/4.0>, include "
                      "<tunables/global> profile hutch " + self_exe() +
                          " flags=(unconfined) { userns, }' then 'apparmor_parser -r /etc/apparmor.d/hutch'; or, "
                          "for the whole host, sysctl kernel.apparmor_restrict_unprivileged_userns=0");
        else
            f.note("apparmor_restrict_unprivileged_userns " + *aa + (*aa == "1" ? " (root is exempt)" : ""));
    }
    std::string err = in_child([] {
        if (::unshare(CLONE_NEWUSER) != 0) return "unshare(CLONE_NEWUSER): " + errno_text(errno);
        return std::string();
    });
    if (err.empty()) f.note("unshare(CLONE_NEWUSER) works");
    else
        f.problem(Status::Fail, "cannot create a user namespace: " + err,
                  "allow user namespaces (see the settings above; in a container, run it with user namespaces allowed, "
                  "e.g. without a seccomp profile that blocks unshare)");
    return f.to_check("userns");
}

// ---- subordinate ids and the uidmap helpers ---------------------------------------------------

struct SubIdFile {
    std::string path;
    bool present = false;
    std::string text;
    // Every owner named in the file, in order of appearance.
    std::vector<std::string> owners() const {
        std::vector<std::string> out;
        std::istringstream in(text);
        std::string line;
        while (std::getline(in, line)) {
            if (line.empty() || line[0] == '#') continue;
            auto colon = line.find(':');
            if (colon == std::string::npos) continue;
            std::string o = line.substr(0, colon);
            if (std::find(out.begin(), out.end(), o) == out.end()) out.push_back(o);
        }
        return out;
    }
};

SubIdFile read_subid_file(const std::string& path) {
    SubIdFile f;
    f.path = path;
    try {
        f.text = fs::read_file(path);
        f.present = true;
    } catch (const Error&) {
    }
    return f;
}

std::string ranges_text(const std::vector<idmap::SubIdRange>& ranges) {
    std::string s;
    for (const auto& r : ranges) s += (s.empty() ? "" : ", ") + std::to_string(r.start) + ":" + std::to_string(r.count);
    return s;
}

// The first 65536-aligned range past every range in the files: a safe suggestion for usermod.
uint64_t free_range_start(const std::vector<const SubIdFile*>& files) {
    uint64_t end = 100000;
    for (const SubIdFile* f : files)
        for (const auto& owner : f->owners())
            for (const auto& r : idmap::parse_subid(f->text, owner, static_cast<uid_t>(-1)))
                end = std::max<uint64_t>(end, uint64_t{r.start} + r.count);
    return (end + 65535) / 65536 * 65536;
}

Check check_subids_user() {
    uid_t uid = ::geteuid();
    std::string name = user_name(uid);
    SubIdFile su = read_subid_file("/etc/subuid"), sg = read_subid_file("/etc/subgid");
    auto u = idmap::parse_subid(su.text, name, uid);
    auto g = idmap::parse_subid(sg.text, name, uid);
    if (!u.empty() && !g.empty()) {
        uint64_t inside = 1;
        for (const auto& r : u) inside += r.count;
        return ok("subids", name + ": /etc/subuid " + ranges_text(u) + ", /etc/subgid " + ranges_text(g) + " (" +
                                std::to_string(inside) + " uids inside a sandbox)");
    }
    std::string where;
    if (u.empty()) where = su.present ? "/etc/subuid" : "/etc/subuid (no such file)";
    if (g.empty()) where += std::string(where.empty() ? "" : " or ") + (sg.present ? "/etc/subgid" : "/etc/subgid (no such file)");
    uint64_t start = free_range_start({&su, &sg});
    std::string range = std::to_string(start) + "-" + std::to_string(start + 65535);
    return warn("subids",
                "no range for " + name + " in " + where + ": sandboxes map only uid " + std::to_string(uid) +
                    " (as 0); other ids (chown, images with several users) are unavailable",
                "as root: usermod --add-subuids " + range + " --add-subgids " + range + " " + name);
}

bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) { return a < b + blen && b < a + alen; }

Check check_subids_root() {
    IdMap m;
    try {
        m = idmap::for_caller();
    } catch (const Error& e) {
        return failed("subids", e.what_failed() + ": " + e.where(), e.hint());
    }
    if (m.uids.empty() || m.gids.empty()) return failed("subids", "no id range for root's sandboxes", "");
    const IdRange ur = m.uids.front(), gr = m.gids.front();
    SubIdFile su = read_subid_file("/etc/subuid"), sg = read_subid_file("/etc/subgid");
    std::string source = "built-in default; an /etc/subuid entry for user hutch or HUTCH_ROOT_IDRANGE overrides it";
    if (const char* env = std::getenv("HUTCH_ROOT_IDRANGE"); env && *env) source = "HUTCH_ROOT_IDRANGE";
    else if (!idmap::parse_subid(su.text, "hutch", static_cast<uid_t>(-1)).empty()) source = "/etc/subuid entry of user hutch";
    auto span = [](const IdRange& r) {
        return std::to_string(r.outside) + "-" + std::to_string(uint64_t{r.outside} + r.count - 1);
    };
    Findings f;
    f.note("root's sandboxes map ids 0-" + std::to_string(ur.count - 1) + " to uids " + span(ur) + ", gids " + span(gr) +
           " (" + source + ")");
    std::vector<std::string> clashes;
    auto scan = [&](const SubIdFile& file, const IdRange& mine) {
        for (const auto& owner : file.owners()) {
            if (owner == "hutch") continue;
            for (const auto& r : idmap::parse_subid(file.text, owner, static_cast<uid_t>(-1)))
                if (overlaps(mine.outside, mine.count, r.start, r.count))
                    clashes.push_back(owner + "'s " + std::to_string(r.start) + ":" + std::to_string(r.count) + " in " +
                                      file.path);
        }
    };
    scan(su, ur);
    scan(sg, gr);
    if (clashes.empty()) {
        f.note("no overlap with any user's range in /etc/subuid, /etc/subgid");
    } else {
        std::string list;
        for (const auto& c : clashes) list += (list.empty() ? "" : ", ") + c;
        uint64_t start = free_range_start({&su, &sg});
        f.problem(Status::Warn, "overlaps " + list + ": that user's sandboxes and root's would share ids",
                  "give root's sandboxes a range of their own: add 'hutch:" + std::to_string(start) +
                      ":65536' to /etc/subuid and /etc/subgid, or set HUTCH_ROOT_IDRANGE=START:COUNT outside "
                      "every user's range");
    }
    return f.to_check("subids");
}

// GRANT_AUX_GROUP_SUBIDS yes in /etc/login.defs: the id-map helpers accept any group of the caller.
bool grants_aux_group_subids() {
    std::string text;
    try {
        text = fs::read_file("/etc/login.defs");
    } catch (const Error&) {
        return false;
    }
    std::istringstream defs(text);
    std::string key, value;
    for (std::string line; std::getline(defs, line);) {
        std::istringstream words(line);
        if (words >> key >> value && key == "GRANT_AUX_GROUP_SUBIDS") return value == "yes";
    }
    return false;
}

Check check_uidmap() {
    const bool root = ::geteuid() == 0;
    std::string name = user_name(::geteuid());
    bool has_ranges = !root && !idmap::parse_subid(read_subid_file("/etc/subuid").text, name, ::geteuid()).empty() &&
                      !idmap::parse_subid(read_subid_file("/etc/subgid").text, name, ::geteuid()).empty();
    Findings f;
    std::vector<std::string> missing;
    for (const char* path : {"/usr/bin/newuidmap", "/usr/bin/newgidmap"}) {
        struct stat st;
        if (::stat(path, &st) != 0 || ::access(path, X_OK) != 0) {
            missing.push_back(path);
            continue;
        }
        bool setuid_root = st.st_uid == 0 && (st.st_mode & S_ISUID);
        bool fcaps = ::getxattr(path, "security.capability", nullptr, 0) > 0;
        if (setuid_root) f.note(std::string(path) + " setuid root");
        else if (fcaps) f.note(std::string(path) + " with file capabilities");
        else if (root) f.note(std::string(path) + " present (neither setuid root nor with file capabilities)");
        else
            f.problem(has_ranges ? Status::Fail : Status::Warn,
                      std::string(path) + " is neither setuid root nor has file capabilities" +
                          (has_ranges ? ": your sandboxes cannot map their ranges" : ""),
                      "reinstall it (apt-get install --reinstall uidmap), or chmod u+s " + std::string(path));
    }
    if (!missing.empty()) {
        std::string list;
        for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
        if (root)
            f.note(list + " missing (not needed by root)");
        else
            f.problem(Status::Warn,
                      list + " missing: " +
                          (has_ranges ? std::string("your subordinate ranges go unused, sandboxes map only your uid")
                                      : std::string("needed once you have subordinate ranges")),
                      "apt-get install uidmap (Fedora: shadow-utils)");
    } else if (root) {
        f.note("not needed by root");
    }
    // Both refuse a caller whose group is not its login group (sg, newgrp), unless login.defs
    // grants GRANT_AUX_GROUP_SUBIDS.
    std::string group = idmap::outside_login_group();
    if (has_ranges && missing.empty() && !group.empty() && !grants_aux_group_subids())
        f.problem(Status::Warn, group + ": newuidmap and newgidmap refuse to map your ranges",
                  "run hutch from a shell of your login group, not under sg or newgrp");
    return f.to_check("uidmap");
}

// ---- store and state directories --------------------------------------------------------------

Check check_directory(const std::string& name, const std::string& path, bool is_store) {
    const bool root = ::geteuid() == 0;
    const std::string what = is_store ? "the store" : "the state directory";
    const std::string elsewhere = "pass --root DIR with a directory of your own";
    Findings f;
    struct stat st;
    std::string space_at;  // where free space is measured
    if (::stat(path.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return failed(name, path + " is not a directory", "remove it, or " + elsewhere);
        if (st.st_uid != ::geteuid())
            return failed(name, path + " is owned by " + user_name(st.st_uid) + ", not by you", elsewhere);
        if (::access(path.c_str(), R_OK | W_OK | X_OK) != 0)
            return failed(name, path + " (mode " + octal_mode(st.st_mode) + ") is not usable by you: " + errno_text(errno),
                          "chmod 700 " + path);
        f.note(path + " (mode " + octal_mode(st.st_mode) + ")");
        if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH))
            f.problem(Status::Warn, "other users may list or change it",
                      std::string("chmod ") + (root && is_store ? "710 " : "700 ") + path +
                          " (hutch does so on its next run)");
        space_at = path;
    } else if (errno == ENOENT) {
        std::string existing = nearest_existing(parent_of(path));
        if (!is_dir(existing))
            return failed(name, path + " cannot be created: " + existing + " is not a directory",
                          "remove " + existing + ", or " + elsewhere);
        if (::access(existing.c_str(), W_OK | X_OK) != 0)
            return failed(name, path + " cannot be created: " + existing + " is not writable by you", elsewhere);
        f.note(path + " (not there yet; hutch creates it)");
        space_at = existing;
    } else {
        int err = errno;
        std::string existing = nearest_existing(parent_of(path));
        if (err == ENOTDIR)
            return failed(name, path + " cannot be created: " + existing + " is not a directory",
                          "remove " + existing + ", or " + elsewhere);
        return failed(name, path + ": " + errno_text(err), elsewhere);
    }
    if (root && is_store) {
        try {
            fs::require_searchable(path, what, false);  // the store itself is 0710, its group the sandboxes'
        } catch (const Error& e) {
            f.problem(Status::Fail, e.what_failed() + ": " + e.where(), e.hint());
        }
    }
    if (is_store) {
        struct statvfs vfs;
        if (::statvfs(space_at.c_str(), &vfs) == 0) {
            unsigned long long free_bytes = static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize;
            std::string info = human_bytes(free_bytes) + " free on " + fs_type_name(space_at);
            if (free_bytes < (1ull << 30))
                f.problem(Status::Warn, "only " + info, "free some space, or pass --root DIR on a larger filesystem");
            else
                f.note(info);
        }
    }
    return f.to_check(name);
}

// ---- overlayfs in a user namespace ------------------------------------------------------------

// Where the probe makes its temporary directory: the store's tmp/, else the store, else the
// closest directory above it we can write (the store would be created on that filesystem).
std::string probe_base(const Paths& paths) {
    if (is_dir(paths.storage + "/tmp") && ::access((paths.storage + "/tmp").c_str(), W_OK | X_OK) == 0)
        return paths.storage + "/tmp";
    return nearest_writable_dir(paths.storage);
}

Check check_overlay(const std::optional<Paths>& paths) {
    if (!paths) return warn("overlay", "not probed: no store directory", "see the store check");
    // A store that exists but is not ours to use: the store check fails already, and probing
    // somewhere else would prove nothing about it.
    struct stat st;
    if (::stat(paths->storage.c_str(), &st) == 0 && (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()))
        return warn("overlay", "not probed: the store " + paths->storage + " is unusable", "see the store check");
    if (::stat(paths->storage.c_str(), &st) != 0 && errno != ENOENT)
        return warn("overlay", "not probed: the store " + paths->storage + " is unusable: " + errno_text(errno),
                    "see the store check");
    std::string base = probe_base(*paths);
    if (base.empty())
        return failed("overlay", "not probed: no writable directory at or above " + paths->storage, "see the store check");
    std::string fstype = fs_type_name(base);
    // Named like the store's own temporary directories (PURPOSE-PID-STARTTIME-RANDOM), so that
    // 'hutch image prune' leaves it alone while we live and removes it if we crash.
    pid_t self = ::getpid();
    std::string templ = base + "/doctor-" + std::to_string(self) + "-" + std::to_string(state::process_start_time(self)) +
                        "-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data()))
        return failed("overlay", "not probed: cannot create a temporary directory in " + base + ": " + errno_text(errno),
                      "see the store check");
    const std::string dir = buf.data();
    std::string err;
    for (const char* sub : {"lower", "upper", "work", "merged"})
        if (err.empty() && ::mkdir((dir + "/" + sub).c_str(), 0700) != 0)
            err = "cannot create " + dir + "/" + sub + ": " + errno_text(errno);
    if (err.empty()) {
        UniqueFd fd(::open((dir + "/lower/file").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd || ::write(fd.get(), "lower\n", 6) != 6) err = "cannot write " + dir + "/lower/file: " + errno_text(errno);
    }
    if (err.empty()) {
        const uid_t uid = ::geteuid();
        const gid_t gid = ::getegid();
        err = in_child([&]() -> std::string {
            if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
                return "unshare(CLONE_NEWUSER|CLONE_NEWNS): " + errno_text(errno);
            for (auto [file, data] : {std::pair<const char*, std::string>{"setgroups", "deny"},
                                      {"uid_map", "0 " + std::to_string(uid) + " 1\n"},
                                      {"gid_map", "0 " + std::to_string(gid) + " 1\n"}})
                if (std::string e = write_proc_self(file, data); !e.empty()) return e;
            if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
                return "cannot make mounts private: " + errno_text(errno);
            if (::chdir(dir.c_str()) != 0) return "cannot enter " + dir + ": " + errno_text(errno);
            if (::mount("overlay", "merged", "overlay", 0, "lowerdir=lower,upperdir=upper,workdir=work,userxattr") != 0)
                return "mount -t overlay -o userxattr in a user namespace: " + errno_text(errno);
            std::string e;
            // A copy-up (a lower file changed) and a new file: both land in the upper layer.
            UniqueFd f(::open("merged/file", O_WRONLY | O_APPEND | O_CLOEXEC));
            if (!f || ::write(f.get(), "upper\n", 6) != 6) e = "cannot change a lower file through the overlay: " + errno_text(errno);
            f.reset();
            if (e.empty() && ::mkdir("merged/new", 0700) != 0) e = "cannot create a directory in the overlay: " + errno_text(errno);
            struct stat st;
            if (e.empty() && (::stat("upper/file", &st) != 0 || ::stat("upper/new", &st) != 0))
                e = "the overlay's changes did not reach the upper layer";
            ::umount2("merged", MNT_DETACH);
            return e;
        });
    }
    // overlayfs leaves work/work (and work/index) with mode 0; give them back to their owner.
    for (const char* sub : {"/work/work", "/work/index"}) ::chmod((dir + sub).c_str(), 0700);
    std::string cleanup;
    try {
        fs::remove_tree(dir);
    } catch (const Error& e) {
        cleanup = std::string("; cannot remove the probe's directory: ") + e.what();
    }
    std::string on = " (" + fstype + " at " + base + ")";
    if (err.empty()) {
        if (!cleanup.empty()) return warn("overlay", "mounts in a user namespace with userxattr" + on + cleanup, "rm -rf " + dir);
        return ok("overlay", "mounts in a user namespace with userxattr" + on);
    }
    std::string fix;
    if (fstype == "overlayfs" || fstype == "nfs" || fstype == "cifs" || fstype == "smb2" || fstype == "fuse")
        fix = "the writable layers cannot live on " + fstype + ": put the store on a local filesystem such as ext4, xfs or "
              "btrfs (pass --root DIR, or set XDG_DATA_HOME)";
    else
        fix = "overlayfs in a user namespace needs Linux 5.11 or later with user namespaces allowed (see the userns check), "
              "and the store on a local filesystem such as ext4, xfs or btrfs (pass --root DIR)";
    return failed("overlay", err + on + cleanup, fix);
}

// ---- cgroups: what cgroup::inspect() finds, which is what cgroup::locate() goes by -------------

constexpr const char* kDelegateFix =
    "systemctl edit user@.service with [Service] Delegate=cpu cpuset io memory pids, then log in again";

Check check_cgroups() {
    const std::string limits_fix =
        "boot with systemd.unified_cgroup_hierarchy=1 for --memory, --cpus, --pids-limit and the other limits "
        "(sandboxes without limits run fine)";
    const cgroup::Inspection in = cgroup::inspect();
    switch (in.layout) {
        case cgroup::Layout::PureV2: break;
        case cgroup::Layout::Hybrid: {
            const auto& ctl = in.mount_controllers;
            std::string offers = ctl && !ctl->empty() ? *ctl : "no controllers";
            return warn("cgroups",
                        "hybrid v1/v2 at /sys/fs/cgroup (v1 controllers; the cgroup2 at " + in.mount + " offers " +
                            offers + "; own cgroup " + in.own.value_or("unknown") + "): resource limits are unavailable",
                        limits_fix);
        }
        case cgroup::Layout::V1Only:
            return warn("cgroups", "cgroup v1 only at /sys/fs/cgroup: resource limits are unavailable", limits_fix);
        case cgroup::Layout::None:
            return warn("cgroups", "no cgroup filesystem at /sys/fs/cgroup: resource limits are unavailable",
                        "mount cgroup2 at /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup), or " + limits_fix);
    }
    const std::vector<std::string> wanted{"cpu", "io", "memory", "pids"};
    Findings f;
    f.note("pure v2 at " + in.mount);
    if (!in.own) {
        f.problem(Status::Warn, "cannot find our own cgroup in /proc/self/cgroup", kDelegateFix);
        return f.to_check("cgroups");
    }
    f.note("own cgroup " + *in.own);
    std::string fix;
    if (in.root) {
        fix = "this kernel does not offer it (check CONFIG_MEMCG, CONFIG_CGROUP_PIDS, ...)";
        if (in.parent_from_env) {
            if (in.parent_outside_mount)
                f.problem(Status::Warn, "HUTCH_CGROUP_PARENT=" + in.parent + " is outside " + in.mount,
                          "set it to a directory under " + in.mount + ", e.g. " + in.mount + "/hutch");
            else
                f.note("sandboxes under HUTCH_CGROUP_PARENT=" + in.parent);
        }
    } else {
        if (in.delegation_root.empty()) {
            f.problem(Status::Warn, "your cgroup is not delegated to you: resource limits are unavailable", kDelegateFix);
            return f.to_check("cgroups");
        }
        fix = kDelegateFix;
        f.note("delegated to you at " + in.delegation_root);
    }
    if (!in.controllers) {
        f.problem(Status::Warn, "cannot read " + in.controllers_dir + "/cgroup.controllers", fix);
        return f.to_check("cgroups");
    }
    std::string missing;
    for (const auto& c : wanted)
        if (std::find(in.available.begin(), in.available.end(), c) == in.available.end())
            missing += (missing.empty() ? "" : " ") + c;
    f.note("controllers: " + (in.controllers->empty() ? std::string("none") : *in.controllers));
    if (!missing.empty())
        f.problem(Status::Warn, "missing " + missing + ": the limits that need them are unavailable", fix);
    return f.to_check("cgroups");
}

// ---- seccomp ----------------------------------------------------------------------------------

Check check_seccomp() {
    Findings f;
    std::string mode;
    if (auto status = read_optional("/proc/self/status")) {
        std::istringstream in(*status);
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("Seccomp:", 0) == 0) mode = trimmed(line.substr(8));
    }
    while (!mode.empty() && (mode.front() == ' ' || mode.front() == '\t')) mode.erase(mode.begin());
    bool kernel_ok = ::prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0;
    uint32_t action = SECCOMP_RET_ERRNO;
    bool filters_ok = ::syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
    if (!kernel_ok || !filters_ok)
        f.problem(Status::Fail, std::string("the kernel has no seccomp filters (") + (kernel_ok ? "SECCOMP_GET_ACTION_AVAIL" : "PR_GET_SECCOMP") +
                                    ": " + errno_text(errno) + ")",
                  "use a kernel built with CONFIG_SECCOMP_FILTER=y");
    else
        f.note("filters supported (Seccomp: " + (mode.empty() ? std::string("?") : mode) + " in /proc/self/status)");
    std::string profile = policy_dir() + "/seccomp/default.json";
    try {
        auto prog = seccomp::load(profile, caps::names(caps::default_set()), "");
        f.note("default profile " + profile + " compiles (" + std::to_string(prog.bytes.size() / 8) + " instructions)");
    } catch (const Error& e) {
        f.problem(Status::Fail, std::string("default profile: ") + e.what(),
                  "reinstall hutch, or set HUTCH_POLICY_DIR to the directory holding seccomp/default.json");
    }
    return f.to_check("seccomp");
}

// ---- optional helpers -------------------------------------------------------------------------

Check check_nftables() {
    std::string lib = find_library("libnftables.so.1");
    std::string nft = find_program("nft");
    if (lib.empty() && nft.empty())
        return warn("nftables", "neither libnftables.so.1 nor nft found (needed for egress rules)",
                    "apt-get install nftables libnftables1");
    std::string d;
    if (!lib.empty()) d = "libnftables.so.1 at " + lib;
    if (!nft.empty()) d += (d.empty() ? "" : ", ") + std::string("nft at ") + nft;
    return ok("nftables", d);
}

Check check_network() {
    std::vector<std::string> found;
    for (const char* p : {"pasta", "slirp4netns"})
        if (std::string path = find_program(p); !path.empty()) found.push_back(std::string(p) + " at " + path);
    if (found.empty())
        return warn("network", "neither pasta nor slirp4netns found (needed for sandboxes with network access)",
                    "apt-get install passt (or slirp4netns)");
    std::string d;
    for (const auto& s : found) d += (d.empty() ? "" : ", ") + s;
    return ok("network", d);
}

// Runs one check; an unexpected error is that check's failure, never the doctor's.
Check guarded(const std::string& name, const std::function<Check()>& fn) {
    try {
        return fn();
    } catch (const std::exception& e) {
        return failed(name, std::string("the check itself failed: ") + e.what(), "");
    }
}

}  // namespace

int doctor(const GlobalOptions& g, const std::string& format) {
    std::vector<Check> checks;
    checks.push_back(guarded("kernel", check_kernel));
    checks.push_back(guarded("userns", check_userns));
    checks.push_back(guarded("subids", ::geteuid() == 0 ? check_subids_root : check_subids_user));
    checks.push_back(guarded("uidmap", check_uidmap));
    std::optional<Paths> paths;
    try {
        paths = Paths::resolve(g.root);
    } catch (const Error& e) {
        checks.push_back(failed("store", e.what(), e.hint()));
        checks.push_back(failed("state", e.what(), e.hint()));
    }
    if (paths) {
        checks.push_back(guarded("store", [&] { return check_directory("store", paths->storage, true); }));
        checks.push_back(guarded("state", [&] { return check_directory("state", paths->state, false); }));
    }
    checks.push_back(guarded("overlay", [&] { return check_overlay(paths); }));
    checks.push_back(guarded("cgroups", check_cgroups));
    checks.push_back(guarded("seccomp", check_seccomp));
    checks.push_back(guarded("nftables", check_nftables));
    checks.push_back(guarded("network", check_network));

    bool all_ok = std::none_of(checks.begin(), checks.end(), [](const Check& c) { return c.status == Status::Fail; });
    if (format == "json") {
        nlohmann::ordered_json list = nlohmann::ordered_json::array();
        for (const auto& c : checks)
            list.push_back({{"name", c.name}, {"status", status_json(c.status)}, {"detail", c.detail}, {"fix", c.fix}});
        nlohmann::ordered_json out{{"checks", list}, {"ok", all_ok}};
        std::printf("%s\n", out.dump(2).c_str());
    } else {
        for (const auto& c : checks) {
            std::string line = c.detail;
            if (c.status != Status::Ok && !c.fix.empty()) line += " — fix: " + c.fix;
            std::printf("%-6s%-17s%s\n", status_word(c.status), c.name.c_str(), line.c_str());
        }
    }
    std::fflush(stdout);
    return all_ok ? 0 : 1;
}

}  // namespace hutch::cli
