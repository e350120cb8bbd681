#include "hutch/sandbox/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/trace.hpp"
#include "hutch/sandbox/user.hpp"

namespace hutch {

namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::string read_or_empty(const char* path) {
    try {
        return fs::read_file(path);
    } catch (const Error&) {
        return {};
    }
}

// Every signal in `reset` back to its default action, then none blocked. execve resets caught
// signals by itself but keeps ignored ones (a caller under nohup, hutch's own SIGPIPE); caught
// ones are reset too, since this process shares its creator's memory until its execve. Only
// those: one system call per signal set, not one per signal.
void reset_signals(uint64_t reset) {
    for (int sig = 1; sig < NSIG; ++sig)
        if (sig > 64 || (reset & (uint64_t{1} << (sig - 1)))) ::signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

void setup_stdio(const ProcessContext& ctx) {
    if (::setsid() < 0) throw_errno("cannot start a session");
    if (ctx.process->tty) {
        if (::ioctl(ctx.tty_slave, TIOCSCTTY, 0) != 0) throw_errno("cannot set controlling terminal");
        for (int fd = 0; fd < 3; ++fd)
            if (::dup2(ctx.tty_slave, fd) < 0) throw_errno("cannot attach terminal");
        // Opened close-on-exec: on 0-2 already (a caller started with them closed), dup2 left
        // the flag on it.
        if (ctx.tty_slave > 2) ::close(ctx.tty_slave);
        else if (::fcntl(ctx.tty_slave, F_SETFD, 0) != 0) throw_errno("cannot attach terminal");
    } else if (!ctx.process->stdin_open) {
        // Lands on 0 itself when the caller's stdin was closed; then it stays.
        int null = ::open("/dev/null", O_RDONLY);
        if (null < 0) throw_errno("cannot open", "/dev/null");
        if (null != 0) {
            if (::dup2(null, 0) < 0) throw_errno("cannot open", "/dev/null");
            ::close(null);
        }
    }
}

void set_rlimits(const ProcessSpec& p) {
    auto shown = [](rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v); };
    for (const auto& r : p.rlimits) {
        struct rlimit rl {static_cast<rlim_t>(r.soft), static_cast<rlim_t>(r.hard)};
        if (::setrlimit(r.resource, &rl) != 0)
            throw_errno("cannot set --ulimit", shown(rl.rlim_cur) + ":" + shown(rl.rlim_max),
                        "a hard limit cannot be raised above hutch's own (see ulimit -H)");
    }
}

void switch_user(const user::Resolved& u, const IdMap& map) {
    // (Inside the sandbox geteuid() is the sandbox's uid: the map tells whose sandbox this is.
    // Root's maps one range and needs no helper; a user's maps their own id first.)
    const bool roots = !map.use_helpers && !map.deny_setgroups;
    if (!map.maps_uid(u.uid))
        fail("user is not mapped in the sandbox's user namespace", "uid " + std::to_string(u.uid),
             roots ? "root's sandboxes map the range of user 'hutch' in /etc/subuid (or HUTCH_ROOT_IDRANGE): "
                                "make it cover this uid"
                              : "only uids with a host range can be used; add a range for your user to /etc/subuid");
    if (!map.maps_gid(u.gid))
        fail("group is not mapped in the sandbox's user namespace", "gid " + std::to_string(u.gid),
             roots ? "root's sandboxes map the range of user 'hutch' in /etc/subgid (or HUTCH_ROOT_IDRANGE): "
                                "make it cover this gid"
                              : "add a range for your user to /etc/subgid");
    if (!map.deny_setgroups) {
        std::vector<gid_t> groups;
        for (gid_t g : u.groups)
            if (map.maps_gid(g)) groups.push_back(g);
        if (::setgroups(groups.size(), groups.data()) != 0) throw_errno("cannot set supplementary groups");
    }
    if (::setresgid(u.gid, u.gid, u.gid) != 0) throw_errno("cannot set gid", std::to_string(u.gid));
    if (::setresuid(u.uid, u.uid, u.uid) != 0) throw_errno("cannot set uid", std::to_string(u.uid));
}

// Searches PATH like execvp but with the sandbox's PATH, remembering EACCES to report 126.
[[noreturn]] void exec_command(const ProcessContext& ctx, const std::vector<std::string>& env) {
    const auto& args = ctx.process->argv;
    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const std::string& file = args[0];
    int err = ENOENT;
    if (file.find('/') != std::string::npos) {
        ::execve(file.c_str(), argv.data(), envp.data());
        err = errno;
    } else {
        std::string path = kDefaultPath;
        for (const auto& e : env)
            if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
        size_t pos = 0;
        bool denied = false;
        while (pos <= path.size()) {
            size_t end = path.find(':', pos);
            if (end == std::string::npos) end = path.size();
            std::string dir = path.substr(pos, end - pos);
            std::string candidate = (dir.empty() ? "." : dir) + "/" + file;
            ::execve(candidate.c_str(), argv.data(), envp.data());
            if (errno == EACCES) denied = true;
            else if (errno != ENOENT && errno != ENOTDIR) err = errno;
            pos = end + 1;
        }
        if (denied && err == ENOENT) err = EACCES;
    }
    int code = (err == ENOENT || err == ENOTDIR) ? kExitNotFound : kExitNotExecutable;
    std::string what = code == kExitNotFound ? "command not found in the sandbox" : "cannot execute";
    report_failure(ctx.report_fd, code, Error::format(what, file, err, ""));
    ::_exit(code);
}

}  // namespace

std::vector<std::string> build_env(const ProcessSpec& p, const std::string& hostname, const std::string& home) {
    std::vector<std::string> env{std::string("PATH=") + kDefaultPath, "HOSTNAME=" + hostname, "HOME=" + home};
    if (p.tty) env.push_back("TERM=xterm");
    for (const auto& e : p.env) {
        std::string key = e.substr(0, e.find('='));
        bool replaced = false;
        for (auto& existing : env)
            if (existing.compare(0, key.size() + 1, key + "=") == 0) {
                existing = e;
                replaced = true;
            }
        if (!replaced) env.push_back(e);
    }
    return env;
}

void report_failure(int fd, int exit_code, const std::string& message) {
    if (fd < 0) return;
    std::string msg = std::to_string(exit_code) + " " + message;
    if (msg.size() > 4000) msg.resize(4000);  // one atomic pipe write
    ssize_t ignored = ::write(fd, msg.data(), msg.size());
    (void)ignored;
}

std::pair<int, std::string> parse_failure(const std::string& msg) {
    size_t sp = msg.find(' ');
    int code = std::atoi(msg.substr(0, sp).c_str());
    return {code == 0 ? kExitHutchError : code, sp == std::string::npos ? msg : msg.substr(sp + 1)};
}

std::pair<int, std::string> read_failure(int fd) {
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return {0, {}};
    return parse_failure(std::string(buf, static_cast<size_t>(n)));
}

uint64_t non_default_signals() {
    // Asked of the kernel, signal by signal: cheaper than reading /proc/self/status, and needs no /proc.
    uint64_t bits = 0;
    for (int sig = 1; sig <= 64; ++sig) {
        struct sigaction action {};
        // (glibc refuses its own two real-time signals: they stay in the set, and resetting
        // them is refused as harmlessly.)
        if (::sigaction(sig, nullptr, &action) != 0 || action.sa_handler != SIG_DFL) bits |= uint64_t{1} << (sig - 1);
    }
    return bits;
}

void exec_process(const ProcessContext& ctx) {
    try {
        const ProcessSpec& p = *ctx.process;
        // Into the sandbox's cgroup first: nothing of the command runs outside its limits.
        if (ctx.cgroup_procs_fd >= 0 && ::write(ctx.cgroup_procs_fd, "0", 1) != 1 && !ctx.cgroup_optional)
            throw_errno("cannot join the sandbox's cgroup");
        if (ctx.cgroupns_of >= 0 && ::setns(ctx.cgroupns_of, CLONE_NEWCGROUP) != 0)
            throw_errno("cannot join the sandbox's cgroup namespace");
        // An exec'd process arrives with the host credentials of `hutch exec`: for root that uid
        // is not mapped in the namespace, and files it made would be unownable. Be its root first.
        trace("command: forked");
        if (!ctx.idmap->deny_setgroups && ::setgroups(0, nullptr) != 0) throw_errno("cannot drop host groups");
        if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) throw_errno("cannot become root in the sandbox");
        reset_signals(ctx.reset_signals);
        setup_stdio(ctx);
        trace("command: stdio");
        user::Resolved u = user::resolve(p.user, read_or_empty("/etc/passwd"), read_or_empty("/etc/group"));
        std::vector<std::string> env = build_env(p, ctx.hostname, u.home);
        trace("command: user resolved");
        std::string cwd = p.cwd.empty() ? "/" : p.cwd;
        if (!p.cwd.empty()) {
            try {
                fs::make_dirs(cwd, 0755);  // docker creates a missing working directory
            } catch (const Error& e) {
                throw Error("cannot use the working directory (-w)", e.where(), e.error_number(),
                            "give a directory, or a path where one can be made");
            }
        }
        set_rlimits(p);
        caps::restrict_bounding(ctx.caps);
        bool root = u.uid == 0;
        if (!root && ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) throw_errno("cannot keep capabilities");
        switch_user(u, *ctx.idmap);
        if (::chdir(cwd.c_str()) != 0) throw_errno("cannot change to working directory", cwd);
        caps::apply(root ? ctx.caps : caps::added_only(ctx.caps, p.cap_add), !root);
        ::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
        trace("command: caps");
        // Nothing of hutch's (store dirs, locks, sockets) may leak into the command.
        if (::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) throw_errno("cannot close inherited fds");
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw_errno("cannot set no_new_privs");
        // Armed after the last change of credentials (which clears it); a parent gone before
        // that shows on its pidfd (getppid() cannot tell: it lives outside the pid namespace).
        if (ctx.parent_pidfd >= 0) {
            struct pollfd gone {ctx.parent_pidfd, POLLIN, 0};
            if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) throw_errno("cannot tie the command to hutch exec");
            // (A poll that fails, under --ulimit nofile=0, says nothing either way.)
            if (::poll(&gone, 1, 0) == 1) ::_exit(kExitHutchError);
        }
        trace("command: no_new_privs");
        if (ctx.seccomp) seccomp::install(*ctx.seccomp);
        trace("command: seccomp loaded, execve");
        exec_command(ctx, env);
    } catch (const Error& e) {
        report_failure(ctx.report_fd, e.exit_code(), e.what());
        ::_exit(e.exit_code());
    } catch (const std::exception& e) {
        report_failure(ctx.report_fd, kExitHutchError, e.what());
        ::_exit(kExitHutchError);
    }
}

}  // namespace hutch
