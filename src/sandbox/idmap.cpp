#include "hutch/sandbox/idmap.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"

namespace hutch {

static std::optional<uint32_t> to_host(const std::vector<IdRange>& ranges, uint32_t inside) {
    for (const auto& r : ranges)
        if (inside >= r.inside && inside - r.inside < r.count) return r.outside + (inside - r.inside);
    return std::nullopt;
}

bool IdMap::maps_uid(uint32_t inside) const { return to_host(uids, inside).has_value(); }
bool IdMap::maps_gid(uint32_t inside) const { return to_host(gids, inside).has_value(); }
std::optional<uint32_t> IdMap::host_uid(uint32_t inside) const { return to_host(uids, inside); }
std::optional<uint32_t> IdMap::host_gid(uint32_t inside) const { return to_host(gids, inside); }
std::pair<uint32_t, uint32_t> IdMap::root_owner() const {
    return {host_uid(0).value_or(::geteuid()), host_gid(0).value_or(::getegid())};
}

namespace idmap {

std::vector<SubIdRange> parse_subid(const std::string& text, const std::string& user, uid_t uid) {
    std::vector<SubIdRange> out;
    std::istringstream in(text);
    std::string line;
    const std::string uid_text = std::to_string(uid);
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        auto a = line.find(':');
        auto b = a == std::string::npos ? a : line.find(':', a + 1);
        if (b == std::string::npos) continue;
        std::string owner = line.substr(0, a);
        if (owner != user && owner != uid_text) continue;
        char* end = nullptr;
        unsigned long start = std::strtoul(line.c_str() + a + 1, &end, 10);
        if (end != line.c_str() + b) continue;
        unsigned long count = std::strtoul(line.c_str() + b + 1, &end, 10);
        if (count == 0 || start == 0 || start > UINT32_MAX || count > UINT32_MAX - start) continue;
        out.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(count)});
    }
    return out;
}

static std::vector<SubIdRange> subids(const char* file, const std::string& user, uid_t uid) {
    try {
        return parse_subid(fs::read_file(file), user, uid);
    } catch (const Error&) {
        return {};  // no file: no subordinate ids
    }
}

// Lays the subordinate ranges out contiguously after inside id 0.
static void append_ranges(std::vector<IdRange>& out, const std::vector<SubIdRange>& ranges) {
    uint32_t next = 1;
    for (const auto& r : ranges) {
        out.push_back({next, r.start, r.count});
        next += r.count;
    }
}

static IdMap root_map() {
    std::vector<SubIdRange> u = subids("/etc/subuid", "hutch", static_cast<uid_t>(-1));
    std::vector<SubIdRange> g = subids("/etc/subgid", "hutch", static_cast<uid_t>(-1));
    SubIdRange urange = u.empty() ? SubIdRange{1000000000u, 65536u} : u.front();
    SubIdRange grange = g.empty() ? urange : g.front();
    if (const char* env = std::getenv("HUTCH_ROOT_IDRANGE"); env && *env) {
        auto parsed = parse_subid(std::string("x:") + env, "x", static_cast<uid_t>(-1));
        if (parsed.empty())
            fail("invalid HUTCH_ROOT_IDRANGE", env, "expected START:COUNT with START > 0, e.g. 1000000000:65536");
        urange = grange = parsed.front();
    }
    IdMap m;
    m.uids.push_back({0, urange.start, urange.count});
    m.gids.push_back({0, grange.start, grange.count});
    return m;
}

static bool have_helpers() {
    return ::access("/usr/bin/newuidmap", X_OK) == 0 && ::access("/usr/bin/newgidmap", X_OK) == 0;
}

IdMap for_caller() {
    uid_t uid = ::geteuid();
    gid_t gid = ::getegid();
    if (uid == 0) return root_map();
    IdMap m;
    m.uids.push_back({0, uid, 1});
    m.gids.push_back({0, gid, 1});
    std::string name;
    if (struct passwd* pw = ::getpwuid(uid)) name = pw->pw_name;
    auto u = subids("/etc/subuid", name, uid);
    auto g = subids("/etc/subgid", name, uid);
    if (!u.empty() && !g.empty() && have_helpers()) {
        append_ranges(m.uids, u);
        append_ranges(m.gids, g);
        m.use_helpers = true;
    } else {
        m.deny_setgroups = true;
    }
    return m;
}

gid_t store_group() { return ::geteuid() == 0 ? root_map().root_owner().second : ::getegid(); }

std::string render(const std::vector<IdRange>& ranges) {
    std::string s;
    for (const auto& r : ranges)
        s += std::to_string(r.inside) + " " + std::to_string(r.outside) + " " + std::to_string(r.count) + "\n";
    return s;
}

bool write_map_file(pid_t pid, const char* name, const std::string& data) {
    std::string path = "/proc/" + std::to_string(pid) + "/" + name;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    // One write: the kernel takes a map in a single write(2) or not at all.
    return fd && ::write(fd.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size());
}

static void write_proc_file(pid_t pid, const char* name, const std::string& data) {
    if (!write_map_file(pid, name, data))
        throw_errno("cannot write user namespace map", "/proc/" + std::to_string(pid) + "/" + name,
                    "check /proc/sys/user/max_user_namespaces and that the range is not mapped twice");
}

// Starts newuidmap/newgidmap PID INSIDE OUTSIDE COUNT... with its stderr on `output`, and returns
// its pid.
static pid_t spawn_helper(const char* helper, pid_t pid, const std::vector<IdRange>& ranges, int output) {
    std::vector<std::string> args{helper, std::to_string(pid)};
    for (const auto& r : ranges) {
        args.push_back(std::to_string(r.inside));
        args.push_back(std::to_string(r.outside));
        args.push_back(std::to_string(r.count));
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, output, STDERR_FILENO);
    // posix_spawn (vfork underneath): no copy of our page tables for a process that execs at once.
    pid_t child = -1;
    int rc = ::posix_spawn(&child, argv[0], &actions, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        errno = rc;
        throw_errno("cannot run", helper, "install uidmap (apt-get install uidmap)");
    }
    return child;
}

std::string outside_login_group() {
    struct passwd* pw = ::getpwuid(::getuid());
    if (!pw || pw->pw_gid == ::getgid()) return {};
    return "your group (" + std::to_string(::getgid()) + ") is not your login group (" + std::to_string(pw->pw_gid) + ")";
}

// The likeliest reason for a helper's refusal: a group other than the login group (the helpers
// then say "Target process ... is owned by a different user"), else the ranges.
static std::string helper_hint() {
    std::string group = outside_login_group();
    if (!group.empty()) return group + ": run hutch from a shell of your login group, not under sg or newgrp";
    return "check your ranges in /etc/subuid and /etc/subgid, and that uidmap is installed";
}

void Writer::wait_helper(pid_t child, const char* helper) {
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
    // Its first line says why. (Our write end is closed; the other helper holds it until it exits.)
    std::string said;
    char buf[1024];
    ssize_t n = helper_output_ ? ::read(helper_output_.get(), buf, sizeof buf) : 0;
    if (n > 0) said.assign(buf, static_cast<size_t>(n));
    said = said.substr(0, said.find('\n'));
    if (said.empty())
        said = "status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    fail(std::string(helper) + " failed", said, helper_hint());
}

Writer::Writer(pid_t pid, const IdMap& map) {
    if (map.use_helpers) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("cannot create pipe");
        helper_output_.reset(fds[0]);
        UniqueFd output(fds[1]);
        // Both helpers run at once: each is a setuid exec costing about a millisecond.
        uid_helper_ = spawn_helper("/usr/bin/newuidmap", pid, map.uids, output.get());
        try {
            gid_helper_ = spawn_helper("/usr/bin/newgidmap", pid, map.gids, output.get());
        } catch (...) {
            finish_quietly();
            throw;
        }
        return;
    }
    if (map.deny_setgroups) write_proc_file(pid, "setgroups", "deny");
    write_proc_file(pid, "uid_map", render(map.uids));
    write_proc_file(pid, "gid_map", render(map.gids));
}

void Writer::finish_quietly() {
    for (pid_t* p : {&uid_helper_, &gid_helper_}) {
        if (*p > 0)
            while (::waitpid(*p, nullptr, 0) < 0 && errno == EINTR) {
            }
        *p = -1;
    }
}

Writer::~Writer() { finish_quietly(); }

void Writer::finish() {
    pid_t u = uid_helper_, g = gid_helper_;
    uid_helper_ = gid_helper_ = -1;
    if (u > 0) {
        try {
            wait_helper(u, "newuidmap");
        } catch (...) {
            gid_helper_ = g;
            finish_quietly();
            throw;
        }
    }
    if (g > 0) wait_helper(g, "newgidmap");
}

void write(pid_t pid, const IdMap& map) { Writer(pid, map).finish(); }

int run_as_sandbox_root(const IdMap& map, const std::function<int()>& fn) {
    // fork() then unshare(), not clone(CLONE_NEWUSER): callers may have threads (parallel
    // downloads), and only fork() runs libc's handlers that leave malloc's locks usable in the child.
    int to_child[2], to_parent[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0) throw_errno("cannot create pipe");
    UniqueFd child_rd(to_child[0]), parent_wr(to_child[1]);
    if (::pipe2(to_parent, O_CLOEXEC) != 0) throw_errno("cannot create pipe");
    UniqueFd parent_rd(to_parent[0]), child_wr(to_parent[1]);
    pid_t parent = ::getpid();
    pid_t child = ::fork();
    if (child < 0) throw_errno("cannot fork");
    if (child == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(125);
        parent_wr.reset();
        parent_rd.reset();
        char c = ::unshare(CLONE_NEWUSER) == 0 ? 'u' : 'e';
        if (::write(child_wr.get(), &c, 1) != 1 || c != 'u') ::_exit(125);
        if (::read(child_rd.get(), &c, 1) != 1) ::_exit(125);
        if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) ::_exit(125);
        ::_exit(fn());
    }
    child_rd.reset();
    child_wr.reset();
    int status = 0;
    try {
        char c = 0;
        if (::read(parent_rd.get(), &c, 1) != 1 || c != 'u')
            fail("cannot create a user namespace", "", "see 'hutch doctor'");
        write(child, map);
        if (::write(parent_wr.get(), "1", 1) != 1) throw_errno("cannot signal helper process");
    } catch (...) {
        ::kill(child, SIGKILL);
        while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        throw;
    }
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace idmap
}  // namespace hutch
