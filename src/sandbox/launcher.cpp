// The story of a sandbox's birth, in order:
//
//   front end (host)                       sandbox init (pid 1 of the new namespaces)
//   ----------------                       ------------------------------------------
//   resolve caps, cgroup with the limits
//   clone3(NEWUSER|NEWPID) -------------->  unshare(NEWNS|NEWIPC|NEWUTS) (egress: and NEWNET)
//   write uid/gid maps, load the seccomp    private mounts, detached proc/dev/binds
//     program, create the scratch dir,      waits on the sync pipe
//     sweep what crashed runs left
//   release (with the seccomp program) -->  become root of the namespace
//   make the network namespace (a helper    overlay root, pivot_root, populate /proc /dev
//     in the sandbox's user namespace)
//   the network namespace -------------->   setns into it, then /sys and the rest; hostname
//   bring its lo up; "L" ---------------->  (--network egress: its own namespace, lo up here), pty
//                                           fork the command --> exec_process(): user, caps,
//   relay tty, forward signals, timeout         no_new_privs, seccomp, execve
//   wait for init                   <----   reap, kill what is left, empty the writable layer
//   remove scratch dir
//
// The clone makes only the user and pid namespaces: the others are made by the init, and the
// network namespace (which alone costs the kernel half a millisecond or more) by the front end,
// each on its own CPU.
// The front end never runs code the sandbox chose, and the sandbox never sees a host path.
#include "hutch/sandbox/launcher.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fdpass.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/log.hpp"
#include "hutch/core/trace.hpp"
#include "hutch/net/egress.hpp"
#include "hutch/sandbox/caps.hpp"
#include "hutch/sandbox/cgroup.hpp"
#include "hutch/sandbox/idmap.hpp"
#include "hutch/sandbox/init.hpp"
#include "hutch/sandbox/mounts.hpp"
#include "hutch/sandbox/pause.hpp"
#include "hutch/sandbox/process.hpp"
#include "hutch/sandbox/pty.hpp"
#include "hutch/sandbox/seccomp.hpp"
#include "hutch/sandbox/state.hpp"

namespace hutch {

namespace {

// glibc 2.36's <sys/pidfd.h> lacks C++ linkage; the syscall is simple enough to call directly.
int pidfd_send_signal(int pidfd, int sig, siginfo_t* info, unsigned flags) {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags));
}

// Ends the process behind `pidfd` (a child of ours) and reaps it.
void kill_and_reap(int pidfd) {
    pidfd_send_signal(pidfd, SIGKILL, nullptr, 0);
    while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), nullptr, WEXITED) != 0 && errno == EINTR) {
    }
}

// What clone3 makes: the init must be pid 1, and the owner of everything else it makes.
constexpr uint64_t kCloneNamespaces = CLONE_NEWUSER | CLONE_NEWPID;
// What the init makes at once, in parallel with the front end's work. The network namespace is
// made by the front end instead (make_network_of), but with --network egress.
constexpr int kInitNamespaces = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
// What `hutch exec` joins before its fork. The cgroup namespace is made by the init itself once
// clone3 has placed it in its cgroup (a namespace made by clone3 would be rooted at the front
// end's cgroup instead), and joined by the exec'd command after its own clone3.
constexpr int kJoinNamespaces = static_cast<int>(kCloneNamespaces) | kInitNamespaces;
constexpr double kTermGrace = 10.0;     // SIGTERM to hutch: the command gets this long to exit
constexpr double kTeardownGrace = 5.0;  // init gets this long to tear down before SIGKILL

// What the front end computes once for a sandbox: its capabilities, and its seccomp program.
struct Security {
    caps::Set caps;
    std::optional<seccomp::Program> seccomp;  // empty: unconfined
};

// The seccomp program for `caps` (nullopt: unconfined), from the cache or compiled.
std::optional<seccomp::Program> load_seccomp(const SandboxSpec& spec, const caps::Set& caps, const Paths& paths) {
    if (spec.seccomp_profile == "unconfined") return std::nullopt;
    std::string profile = spec.seccomp_profile.empty() ? policy_dir() + "/seccomp/default.json" : spec.seccomp_profile;
    return seccomp::load(profile, caps::names(caps), paths.cache() + "/seccomp");
}

Security resolve_security(const SandboxSpec& spec, const Paths& paths) {
    Security s;
    s.caps = caps::resolve(spec.process.cap_add, spec.process.cap_drop);
    s.seccomp = load_seccomp(spec, s.caps, paths);
    return s;
}

// A persistent sandbox's capabilities, and the seccomp program it was created with.
Security saved_security(const SandboxSpec& spec, const Paths& paths) {
    std::optional<state::SavedFilter> saved = state::load_filter(paths, spec.name);
    if (!saved) return resolve_security(spec, paths);  // created by an older hutch
    Security s;
    s.caps = caps::resolve(spec.process.cap_add, spec.process.cap_drop);
    if (!saved->unconfined) s.seccomp = seccomp::Program{std::move(saved->program)};
    return s;
}

// The release of the init carries the seccomp program, which the front end may load while the
// init makes its namespaces: "1", a 32-bit length (0: unconfined), the program.
std::string release_message(const Security& s) {
    uint32_t n = s.seccomp ? static_cast<uint32_t>(s.seccomp->bytes.size()) : 0;
    std::string msg = "1";
    msg.append(reinterpret_cast<const char*>(&n), sizeof n);
    if (s.seccomp) msg += s.seccomp->bytes;
    return msg;
}

struct Pipe {
    UniqueFd rd, wr;
    static Pipe make() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("cannot create pipe");
        return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
    }
};

struct SocketPair {
    UniqueFd parent, child;
    static SocketPair make() {
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("cannot create socket pair");
        return SocketPair{UniqueFd(fds[0]), UniqueFd(fds[1])};
    }
};

UniqueFd open_path(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno("cannot open", path);
    return fd;
}

// Checks, as the caller, that bind sources exist and can be read: a user cannot bind what they
// cannot read, even though the sandbox's mount call would not check the last component.
void check_bind_sources(const SandboxSpec& spec) {
    for (const auto& b : spec.binds) {
        if (b.source.empty() || b.source[0] != '/')
            fail("bind source must be an absolute path", b.source, "use -v /host/path:/container/path");
        if (::access(b.source.c_str(), R_OK) != 0)
            throw_errno("cannot use bind source", b.source, "the path must exist and be readable by you");
    }
}

// The layers must still be there: a persistent sandbox outlives `hutch rmi` of its image.
void check_layers(const SandboxSpec& spec) {
    if (spec.lower_dirs.empty()) fail("the sandbox has no root filesystem", spec.name, "pass an image or --rootfs DIR");
    for (const auto& dir : spec.lower_dirs)
        if (!fs::exists(dir))
            fail("root filesystem layer not found", dir, "pull the image again, or pass an existing directory to --rootfs");
}

void bring_up_loopback() {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("cannot open a socket to configure lo");
    struct ifreq ifr {};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) throw_errno("cannot read interface flags", "lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) throw_errno("cannot bring up", "lo");
}

// Everything the sandbox's init needs, prepared by the front end (the clone shares a copy).
struct Birth {
    const SandboxSpec* spec = nullptr;
    const Security* security = nullptr;  // its caps; the seccomp program comes with the release
    mounts::HostSide host;
    Pipe sync;     // front end → init: "the id maps are written", and the seccomp program
    Pipe report;   // init and command → front end: setup failures
    Pipe status;   // init → front end: the exit status, written before init's own exit
    Pipe unshared;   // init → front end: its namespaces exist ("1"); a run's overlay is up ("O")
    SocketPair tty;  // init → front end: the pty's master
    SocketPair lower_tree;  // front end → init: root's --rootfs, idmapped (mounts::idmapped_tree)
    SocketPair netns;  // front end → init: its network namespace (not with --network egress)
    struct winsize winsize {};
    bool have_winsize = false;
    int cgroup_fd = -1;  // the sandbox's cgroup (CLONE_INTO_CGROUP), or -1 without limits
    int parent_userns = -1;  // the kept user namespace to nest the sandbox's in (pause.hpp), or -1
    net::Egress* egress = nullptr;  // --network egress: ruleset, DNS forwarder, refusal log
    uint64_t reset_signals = ~uint64_t{0};  // the front end's non-default signal actions (the init's copy)
    cpu_set_t cpus;         // the front end's CPUs, which the init takes back once released
    bool spread = false;    // the init was started on another CPU than the front end's
};

// Fork balancing often queues a new task on its parent's CPU, where the init would wait until
// the front end sleeps (a third to a whole millisecond here) while the other CPU idles. Moved to
// another of the front end's CPUs, it makes its namespaces while the front end does its share;
// it widens its mask back to b.cpus once released, which the front end sends only after this.
void start_on_another_cpu(Birth& b, pid_t init) {
    if (!b.spread) return;
    // The next CPU after this one, so that concurrent starts on a large host spread out.
    int here = ::sched_getcpu();
    for (int i = 1; i < CPU_SETSIZE; ++i) {
        int cpu = (here + i) % CPU_SETSIZE;
        if (!CPU_ISSET(cpu, &b.cpus)) continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        ::sched_setaffinity(init, sizeof one, &one);  // best effort: a cpuset may refuse it
        return;
    }
}

// The command's process shares the init's memory until its execve (CLONE_VM|CLONE_VFORK, as
// posix_spawn does): no copy of the init's page tables and no copy-on-write faults afterwards,
// which a fork pays for on every start. The init waits meanwhile; the child has its own stack,
// file table, signal handlers and credentials, so nothing it changes but memory is shared, and
// what it allocates in that memory is only left behind.
int command_main(void* arg) { exec_process(*static_cast<const ProcessContext*>(arg)); }

// `pidfd`, when given, receives a pidfd of the command (CLONE_PIDFD).
pid_t spawn_command(const ProcessContext& ctx, int* pidfd = nullptr) {
    constexpr size_t kStack = 1 << 20;  // touched pages only; exec_process needs a few
    void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) throw_errno("cannot map a stack for the command");
    int flags = CLONE_VM | CLONE_VFORK | SIGCHLD | (pidfd ? CLONE_PIDFD : 0);
    pid_t pid = ::clone(command_main, static_cast<char*>(stack) + kStack, flags, const_cast<ProcessContext*>(&ctx),
                        pidfd);
    int err = errno;
    ::munmap(stack, kStack);  // the child has exec'd or exited: its stack is ours again
    if (pid < 0) {
        errno = err;
        throw_errno("cannot start the command");
    }
    return pid;
}

// Runs in the new namespaces as pid 1. Never returns.
[[noreturn]] void sandbox_main(Birth& b) {
    const SandboxSpec& spec = *b.spec;
    try {
        b.sync.wr.reset();
        b.report.rd.reset();
        b.tty.parent.reset();
        b.lower_tree.parent.reset();
        b.netns.parent.reset();
        b.status.rd.reset();
        b.unshared.rd.reset();
        // Without --network egress the front end makes the network namespace, with lo up, while
        // the init mounts its root: half a millisecond of the kernel's, off the init's path.
        const bool network_by_front_end = !b.egress;
        if (::unshare(network_by_front_end ? kInitNamespaces & ~CLONE_NEWNET : kInitNamespaces) != 0)
            throw_errno("cannot create the sandbox's namespaces", "unshare", "see 'hutch doctor'");
        trace("init: unshared");
        if (::write(b.unshared.wr.get(), "1", 1) != 1) ::_exit(kExitHutchError);
        // A run's volatile overlay: kept to say when it is up (its marker is the front end's).
        if (!b.host.discard) b.unshared.wr.reset();
        // What needs no id map is done before the maps exist.
        mounts::make_private();
        trace("init: private");
        mounts::Detached detached = mounts::prepare(spec, std::move(b.host.binds));
        trace("init: namespaces made");
        char go;
        // EOF instead of the byte: the front end died before the maps were written.
        if (::read(b.sync.rd.get(), &go, 1) != 1) ::_exit(kExitHutchError);
        uint32_t filter_size = 0;
        std::optional<seccomp::Program> filter;
        if (!read_exact(b.sync.rd.get(), &filter_size, sizeof filter_size)) ::_exit(kExitHutchError);
        if (filter_size > 0) {
            filter.emplace();
            filter->bytes.resize(filter_size);
            if (!read_exact(b.sync.rd.get(), filter->bytes.data(), filter_size)) ::_exit(kExitHutchError);
        }
        trace("init: released");
        if (b.spread) ::sched_setaffinity(0, sizeof b.cpus, &b.cpus);
        if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) throw_errno("cannot become root in the sandbox");
        if (!spec.persistent) {
            // Set only now: a change of uid (root's sandboxes) clears the parent-death signal.
            // The front end keeps its end of the sync pipe open for its whole life, so a hang-up
            // there means it died before the signal was armed.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            struct pollfd p {b.sync.rd.get(), POLLIN, 0};
            if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) ::_exit(kExitHutchError);
        }
        // A persistent init keeps it until its state is recorded (below), and the init waits for
        // the front end's "lo is up" on it.
        if (!network_by_front_end && !spec.persistent) b.sync.rd.reset();
        if (!spec.idmap.deny_setgroups && ::setgroups(0, nullptr) != 0) throw_errno("cannot drop host groups");
        if (::unshare(CLONE_NEWCGROUP) != 0) throw_errno("cannot create the cgroup namespace");
        trace("init: maps written, root of the namespace");

        // The writable layer is emptied at the end from inside (its files may belong to
        // subordinate ids the front end cannot remove); keep a handle that survives pivot_root.
        // (The work dir is the front end's to remove: after a run overlayfs has left it empty,
        // but for the marker of a volatile mount, which the front end takes while the sandbox
        // runs, and the init at its end when the front end could not.)
        UniqueFd upper, work;
        if (!b.host.upper.empty()) upper = open_path(b.host.upper);
        if (b.host.discard) work = open_path(b.host.work);
        // libnftables must be loaded while the host's libraries are still visible.
        if (b.egress) b.egress->sandbox_before_pivot(spec.idmap);
        bool idmapped = false;
        if (b.lower_tree.child) {
            // EOF instead of the tree: the tree's files keep the owners they have.
            UniqueFd tree = recv_fd(b.lower_tree.child.get());
            idmapped = tree && mounts::attach_over(tree.get(), spec.rootfs);
            if (idmapped) trace("init: idmapped --rootfs attached");
            b.lower_tree.child.reset();
        }
        bool mounted = false;
        auto overlay_up = [&b, &mounted] {
            mounted = true;
            if (!b.unshared.wr) return;
            ssize_t ignored = ::write(b.unshared.wr.get(), "O", 1);
            (void)ignored;
            b.unshared.wr.reset();
        };
        try {
            mounts::enter_overlay_root(b.host, overlay_up);
        } catch (const Error&) {
            // An overlayfs that refuses the idmapped layer: the tree as it is, then. (Not when
            // the mount worked and what came after it failed.)
            if (mounted || !idmapped || ::umount2(spec.rootfs.c_str(), MNT_DETACH) != 0) throw;
            // A volatile mount that failed on its lower layers may have left its marker, which
            // would make overlayfs refuse the work dir.
            if (work) state::remove_volatile_marker(work.get());
            mounts::enter_overlay_root(b.host, overlay_up);
        }
        trace("init: in the overlay root");
        std::function<void()> enter_network;  // --network egress: the init's own, made above
        if (network_by_front_end) enter_network = [&b] {
            // EOF instead of the namespace: the front end could not make it (it reports why) or died.
            UniqueFd net = recv_fd(b.netns.child.get());
            if (!net) ::_exit(kExitHutchError);
            if (::setns(net.get(), CLONE_NEWNET) != 0) throw_errno("cannot join the sandbox's network namespace");
            b.netns.child.reset();
            trace("init: in its network namespace");
        };
        mounts::populate(spec, detached, spec.idmap.maps_gid(5), enter_network);
        trace("init: mounts populated");
        if (::sethostname(spec.hostname.c_str(), spec.hostname.size()) != 0) throw_errno("cannot set hostname", spec.hostname);
        if (network_by_front_end) {
            // "L": lo is up. EOF: the front end could not bring it up (it reports why) or died.
            char lo;
            if (::read(b.sync.rd.get(), &lo, 1) != 1 || lo != 'L') ::_exit(kExitHutchError);
            if (!spec.persistent) b.sync.rd.reset();
        } else {
            bring_up_loopback();
        }
        trace("init: lo up");
        mounts::finish(spec);
        // Ruleset and DNS forwarder before the command exists; waits for pasta's routes.
        if (b.egress) b.egress->sandbox_start();

        init::block_signals();
        if (spec.persistent) {
            // Detach from the creator's session and stdio: `hutch create` returns at once, and
            // pipes of whoever ran it must see EOF.
            ::setsid();
            int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
            for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
            if (null > 2) ::close(null);
            // A long-lived init keeps no host file descriptor (layers, locks): `hutch exec` must
            // be able to join it, which needs it dumpable, and a dumpable process's fds are
            // reachable by whoever may ptrace it. Only its two pipes to the front end stay, until
            // its state is recorded.
            // (The egress forwarder's sockets and report stay: the command cannot reach an
            // init's fds without the init's capabilities, which it never holds.)
            const std::vector<int> pipes{b.report.wr.get(), b.sync.rd.get()};
            if (b.egress) b.egress->close_other_fds(pipes);
            else close_fds_except(pipes);
            // Before it says it is ready: a failure here is reported, and an exec may join it as
            // soon as `create` has returned.
            seccomp::confine_init();
            ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
            b.report.wr.reset();  // EOF tells the front end the sandbox is ready
            // "R": the front end has recorded the sandbox's state. EOF: it died first, and an
            // init nothing knows of must not live on (a later start would mount the same layer).
            char recorded = 0;
            if (::read(b.sync.rd.get(), &recorded, 1) != 1 || recorded != 'R') ::_exit(kExitHutchError);
            b.sync.rd.reset();
            ::_exit(init::run(-1, nullptr, b.egress ? b.egress->service() : nullptr));
        }

        pty::Pair tty;
        if (spec.process.tty) {
            tty = pty::open_pair();
            mounts::bind_console(tty.slave.get());
            if (b.have_winsize) ::ioctl(tty.master.get(), TIOCSWINSZ, &b.winsize);
            if (!send_fd(b.tty.child.get(), tty.master.get())) throw_errno("cannot pass the terminal to hutch");
            tty.master.reset();
        }
        // Named before the command exists: it may look at /proc/1/comm at once (init::run names
        // it too, but only after the fork, which a busy host lets the command outrun).
        ::prctl(PR_SET_NAME, "hutch-init", 0, 0, 0);
        // This init holds host directory fds (to empty the layers at the end): nothing in the
        // sandbox may read its memory or fds, even with CAP_SYS_PTRACE granted. Set before the
        // command exists, which may try at its first instruction.
        ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        trace("init: forking the command");
        ProcessContext ctx;
        ctx.process = &spec.process;
        ctx.reset_signals = b.reset_signals;
        ctx.idmap = &spec.idmap;
        ctx.caps = b.security->caps;
        ctx.seccomp = filter ? &*filter : nullptr;
        ctx.hostname = spec.hostname;
        ctx.report_fd = b.report.wr.get();
        ctx.tty_slave = tty.slave.get();
        pid_t command = spawn_command(ctx);
        tty.slave.reset();
        b.report.wr.reset();
        int code = init::run(command,
                             [&upper, &work] {
                                 if (upper) state::empty_layer(upper.get());
                                 if (work) state::remove_volatile_marker(work.get());
                             },
                             b.egress ? b.egress->service() : nullptr);
        // Tearing down the namespaces in exit(2) takes the kernel milliseconds; the front end
        // needs only the status, and every process of the sandbox is already gone.
        ssize_t ignored = ::write(b.status.wr.get(), &code, sizeof code);
        (void)ignored;
        ::_exit(code);
    } catch (const Error& e) {
        report_failure(b.report.wr.get(), e.exit_code(), e.what());
    } catch (const std::exception& e) {
        report_failure(b.report.wr.get(), kExitHutchError, e.what());
    }
    ::_exit(kExitHutchError);
}

struct clone_args init_clone_args(int* pidfd, int cgroup_fd) {
    struct clone_args args {};
    args.flags = kCloneNamespaces | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(pidfd);
    args.exit_signal = SIGCHLD;
    if (cgroup_fd >= 0) {
        // Born inside its cgroup: not one instruction runs outside the limits.
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = static_cast<uint64_t>(cgroup_fd);
    }
    return args;
}

// Runs fn(arg) in a short-lived helper that shares this process's memory and file table and
// suspends it until the helper has exited (CLONE_VM|CLONE_VFORK|CLONE_FILES, as posix_spawn
// does): nothing is copied, and what the helper leaves in `arg` is there on return. Not sharing
// the fs_struct lets the helper setns into a user namespace; this process never leaves its own.
void run_helper(int (*fn)(void*), void* arg, size_t stack_size) {
    void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) throw_errno("cannot map a stack");
    pid_t helper = ::clone(fn, static_cast<char*>(stack) + stack_size, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD,
                           arg);
    int err = errno;
    ::munmap(stack, stack_size);
    if (helper < 0) {
        errno = err;
        throw_errno("cannot start the sandbox", "clone");
    }
    while (::waitpid(helper, nullptr, 0) < 0 && errno == EINTR) {
    }
}

// A sandbox nested in the kept user namespace is cloned by a short-lived go-between that joins
// that namespace (setns needs a process of its own: the front end must stay in the host's), makes
// the init a child of the front end (CLONE_PARENT), and writes the init's maps from the parent
// namespace, where it holds CAP_SETUID. It shares the front end's memory and file table until it
// exits (CLONE_VM|CLONE_VFORK|CLONE_FILES), so the init's pid and pidfd land here directly.
struct GoBetween {
    Birth* birth;
    struct clone_args args;
    std::string uid_map, gid_map;
    pid_t init = -1;
    int err = 0;
    const char* failed = nullptr;
};

int go_between_main(void* arg) {
    auto* g = static_cast<GoBetween*>(arg);
    if (::setns(g->birth->parent_userns, CLONE_NEWUSER) != 0) {
        g->err = errno;
        g->failed = "cannot join the kept user namespace";
        ::_exit(1);
    }
    pid_t pid = static_cast<pid_t>(::syscall(SYS_clone3, &g->args, sizeof g->args));
    if (pid == 0) sandbox_main(*g->birth);
    if (pid < 0) {
        g->err = errno;
        g->failed = "cannot create the sandbox's namespaces";
        ::_exit(1);
    }
    g->init = pid;
    if (!idmap::write_map_file(pid, "uid_map", g->uid_map)) g->failed = "cannot write the sandbox's uid_map";
    else if (!idmap::write_map_file(pid, "gid_map", g->gid_map)) g->failed = "cannot write the sandbox's gid_map";
    if (g->failed) {
        g->err = errno;
        ::_exit(1);
    }
    ::_exit(0);
}

pid_t clone_nested(Birth& b, int* pidfd) {
    GoBetween g{&b, init_clone_args(pidfd, b.cgroup_fd), pause::nested_map(b.spec->idmap.uids),
                pause::nested_map(b.spec->idmap.gids)};
    g.args.flags |= CLONE_PARENT;
    g.args.exit_signal = 0;  // clone3 wants none with CLONE_PARENT: the go-between's (SIGCHLD) is used
    run_helper(go_between_main, &g, 256 << 10);
    if (g.failed) {
        if (g.init > 0) {
            kill_and_reap(*pidfd);
            ::close(*pidfd);
        }
        errno = g.err;
        throw_errno(g.failed, g.init > 0 ? "pid " + std::to_string(g.init) : "", "see 'hutch doctor'");
    }
    return g.init;
}

// A network namespace costs the kernel half a millisecond or more to make (its devices, IPv4
// and IPv6, netfilter), and bringing lo up a tenth more: more than anything else in a start.
// A short-lived helper of the front end's does both while the init mounts its root on the other
// CPU. It joins the sandbox's user namespace through the init's pidfd, which gives it the
// capabilities it needs there (run_helper), so that the new namespace belongs to the sandbox,
// as if the init had made it. It sends the namespace to the init on `sock` before it brings lo
// up, so that the init makes its /sys meanwhile; the init waits for "L" before the command.
struct NetworkHelper {
    int init_pidfd;
    int sock;
    std::optional<Error> error;
};

int network_helper_main(void* arg) {
    auto* h = static_cast<NetworkHelper*>(arg);
    try {
        if (::setns(h->init_pidfd, CLONE_NEWUSER) != 0) throw_errno("cannot join the sandbox's user namespace");
        if (::unshare(CLONE_NEWNET) != 0)
            throw_errno("cannot create the sandbox's network namespace", "unshare", "see 'hutch doctor'");
        // Closed before the helper exits: the file table is the front end's (CLONE_FILES).
        UniqueFd netns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
        if (!netns) throw_errno("cannot open the sandbox's network namespace", "/proc/thread-self/ns/net");
        if (!send_fd(h->sock, netns.get())) throw_errno("cannot pass the network namespace to the sandbox");
        bring_up_loopback();
    } catch (const Error& e) {
        h->error = e;
        ::_exit(1);
    }
    ::_exit(0);
}

// Makes the network namespace of the init behind `init_pidfd` and sends it there on `sock`.
void make_network_of(int init_pidfd, int sock) {
    NetworkHelper h{init_pidfd, sock, std::nullopt};
    run_helper(network_helper_main, &h, 64 << 10);
    if (h.error) throw *h.error;
}

pid_t clone_sandbox(Birth& b, int* pidfd) {
    if (b.parent_userns >= 0) return clone_nested(b, pidfd);
    struct clone_args args = init_clone_args(pidfd, b.cgroup_fd);
    pid_t pid = static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof args));
    if (pid == 0) sandbox_main(b);
    return pid;
}

// Signals the front end passes on to the command.
sigset_t forwarded_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM}) sigaddset(&set, sig);
    return set;
}

// Blocks forwarded signals for the lifetime of the object (they are read from a signalfd).
// The init inherits the mask: a signal forwarded, or the teardown signal sent, before it has
// blocked everything itself waits for it instead of killing it by its default action.
class BlockedSignals {
public:
    BlockedSignals() {
        sigset_t set = forwarded_signals();
        sigaddset(&set, init::teardown_signal());
        ::sigprocmask(SIG_BLOCK, &set, &old_);
        ::signal(SIGPIPE, SIG_IGN);
    }
    ~BlockedSignals() { ::sigprocmask(SIG_SETMASK, &old_, nullptr); }

private:
    sigset_t old_;
};

double now() {
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Copies what is available from `from` to `to`; false at EOF or error.
bool pump(int from, int to) {
    char buf[16384];
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return n < 0 && (errno == EAGAIN || errno == EINTR);
    return write_all(to, buf, static_cast<size_t>(n));
}

// The front end's side of a running process: relays the terminal, forwards signals, enforces the
// timeout, and returns the exit status of `child` (128+N when killed by signal N).
struct Supervision {
    int child_pidfd = -1;
    int status_fd = -1;     // when set, the child's exit status arrives here before its exit
    int signal_pidfd = -1;  // forwarded signals go here
    int tty_master = -1;
    bool relay_stdin = false;  // -i with -t: the caller's stdin goes to the pty
    double timeout = 0;
    std::string name;
    std::function<void()> teardown;  // asks for an immediate end of everything
    mutable bool timed_out = false;
};

// Output written just before the end is still in the pty: copy it out.
void drain(const Supervision& s, bool master_open) {
    if (!master_open) return;
    ::fcntl(s.tty_master, F_SETFL, ::fcntl(s.tty_master, F_GETFL) | O_NONBLOCK);
    while (pump(s.tty_master, STDOUT_FILENO)) {
    }
}

int supervise(const Supervision& s) {
    sigset_t set = forwarded_signals();
    UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd) throw_errno("cannot create signalfd");
    std::optional<pty::RawMode> raw;
    bool stdin_open = s.tty_master >= 0 && s.relay_stdin, master_open = s.tty_master >= 0;
    if (s.tty_master >= 0) {
        raw.emplace(STDIN_FILENO);
        pty::copy_winsize(STDIN_FILENO, s.tty_master);
    }
    const double start = now();
    double kill_at = 0;  // when set, SIGKILL the child if it is still there
    bool term_requested = false;
    auto request_teardown = [&](double grace) {
        if (kill_at == 0 || now() + grace < kill_at) kill_at = now() + grace;
        s.teardown();
    };
    for (;;) {
        struct pollfd fds[5] = {{s.child_pidfd, POLLIN, 0}, {sfd.get(), POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0},
                                {s.status_fd, POLLIN, 0}};
        if (stdin_open) fds[2].fd = STDIN_FILENO;
        if (master_open) fds[3].fd = s.tty_master;
        double deadline = 0;
        if (s.timeout > 0) deadline = start + s.timeout;
        if (kill_at > 0 && (deadline == 0 || kill_at < deadline)) deadline = kill_at;
        int wait_ms = -1;
        if (deadline > 0) wait_ms = std::max(0, static_cast<int>(std::ceil((deadline - now()) * 1000)));
        int n = ::poll(fds, 5, wait_ms);
        if (n < 0 && errno != EINTR) throw_errno("poll");
        if (kill_at > 0 && now() >= kill_at) {
            pidfd_send_signal(s.child_pidfd, SIGKILL, nullptr, 0);
            kill_at = now() + 3600;
        } else if (s.timeout > 0 && now() >= start + s.timeout && kill_at == 0) {
            s.timed_out = true;
            request_teardown(kTeardownGrace);
        }
        if (n <= 0) continue;
        if (fds[3].revents & (POLLIN | POLLHUP | POLLERR)) master_open = pump(s.tty_master, STDOUT_FILENO);
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) stdin_open = pump(STDIN_FILENO, s.tty_master);
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (::read(sfd.get(), &si, sizeof si) == sizeof si) {
                int sig = static_cast<int>(si.ssi_signo);
                if (sig == SIGWINCH) {
                    if (s.tty_master >= 0) pty::copy_winsize(STDIN_FILENO, s.tty_master);
                    continue;
                }
                pidfd_send_signal(s.signal_pidfd, sig, nullptr, 0);
                if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT) {
                    // The first asks the command to exit; a second, or the grace running out, ends it.
                    if (term_requested) request_teardown(kTeardownGrace);
                    else if (kill_at == 0) kill_at = now() + kTermGrace;
                    term_requested = true;
                }
            }
        }
        if (fds[4].revents & (POLLIN | POLLHUP)) {
            int status = 0;
            if (::read(s.status_fd, &status, sizeof status) == sizeof status) {
                drain(s, master_open);
                return status;
            }
            fds[4].fd = -1;
            break;  // init died without a word: fall back to its wait status
        }
        if (fds[0].revents & POLLIN) break;
    }
    drain(s, master_open);
    siginfo_t info {};
    while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s.child_pidfd), &info, WEXITED) != 0) {
        if (errno != EINTR) throw_errno("cannot wait for the sandbox");
    }
    if (info.si_code == CLD_EXITED) return info.si_status;
    return 128 + info.si_status;
}

// Turns a failure reported from inside the sandbox into the Error the front end throws.
void rethrow_reported(int report_fd) {
    ::fcntl(report_fd, F_SETFL, O_NONBLOCK);
    auto [code, message] = read_failure(report_fd);
    if (code != 0) throw Error(message, "", 0, "", code);
}

struct Started {
    pid_t pid = -1;
    UniqueFd pidfd;
    UniqueFd tty_master;
    UniqueFd report;
};

// Ends an init that cannot go on; what it reported, if anything, is the better error.
void abort_birth(const Birth& b, int pidfd) {
    kill_and_reap(pidfd);
    rethrow_reported(b.report.rd.get());
}

// Clones the sandbox's init, writes its id maps, and runs `meanwhile` while the init makes its
// namespaces. On return the init is setting itself up.
Started give_birth(Birth& b, const std::function<void()>& meanwhile) {
    const SandboxSpec& spec = *b.spec;
    if (spec.process.tty && ::ioctl(STDIN_FILENO, TIOCGWINSZ, &b.winsize) == 0) b.have_winsize = true;
    Started st;
    int pidfd = -1;
    b.spread = ::sched_getaffinity(0, sizeof b.cpus, &b.cpus) == 0 && CPU_COUNT(&b.cpus) > 1;
    b.reset_signals = non_default_signals();
    pid_t pid = clone_sandbox(b, &pidfd);
    if (pid < 0)
        throw_errno("cannot create the sandbox's namespaces", "clone3",
                    "unprivileged user namespaces must be enabled; see 'hutch doctor'");
    start_on_another_cpu(b, pid);
    trace("front end: cloned the init");
    st.pid = pid;
    st.pidfd.reset(pidfd);
    b.sync.rd.reset();
    b.report.wr.reset();
    b.status.wr.reset();
    b.tty.child.reset();
    b.lower_tree.child.reset();
    b.netns.child.reset();
    b.unshared.wr.reset();
    try {
        // Nested in the kept user namespace, the go-between wrote the maps already; otherwise
        // the helpers run while `meanwhile` does.
        std::optional<idmap::Writer> maps;
        if (b.parent_userns < 0) maps.emplace(pid, spec.idmap);
        if (meanwhile) meanwhile();
        if (maps) maps->finish();
        trace("front end: maps finished");
        // With --network egress pasta joins the init's network namespace by its /proc path: it
        // must exist by then.
        char byte;
        if (::read(b.unshared.rd.get(), &byte, 1) != 1)
            fail("the sandbox's init exited during setup", "pid " + std::to_string(pid));
    } catch (...) {
        abort_birth(b, pidfd);
        throw;
    }
    auto send = [&](const std::string& message) {
        if (::write(b.sync.wr.get(), message.data(), message.size()) == static_cast<ssize_t>(message.size())) return;
        int err = errno;
        abort_birth(b, pidfd);
        errno = err;
        throw_errno("cannot release the sandbox", "pid " + std::to_string(pid));
    };
    send(release_message(*b.security));
    trace("front end: id maps written");
    if (b.lower_tree.parent) {
        // While the init becomes root of its namespace; it waits for the tree before its overlay.
        UniqueFd ns(::open(("/proc/" + std::to_string(pid) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
        UniqueFd tree = ns ? mounts::idmapped_tree(spec.rootfs, ns.get()) : UniqueFd();
        if (!tree || !send_fd(b.lower_tree.parent.get(), tree.get())) b.lower_tree.parent.reset();
        trace("front end: idmapped --rootfs sent");
    }
    if (!b.egress) {
        try {
            make_network_of(pidfd, b.netns.parent.get());
        } catch (...) {
            abort_birth(b, pidfd);
            throw;
        }
        b.netns.parent.reset();
        send("L");
        trace("front end: network made, lo up");
    }
    // sync.wr stays open while the front end lives: the init checks it for a hang-up.
    st.report = std::move(b.report.rd);
    return st;
}

void prepare_birth(Birth& b, const SandboxSpec& spec, const Security& security, const state::Scratch& scratch) {
    b.spec = &spec;
    b.security = &security;
    b.host.lower = spec.lower_dirs;
    if (scratch.writable) {
        b.host.upper = scratch.upper();
        b.host.work = scratch.work();
        b.host.discard = !spec.persistent;
    }
    b.host.target = scratch.mount_point;
    // Root's sandbox runs as an unprivileged range that may not reach the caller's files: the
    // bind sources are opened here, with root's own access, and attached inside.
    if (::geteuid() == 0) {
        b.host.binds = mounts::open_bind_sources(spec.binds);
        // Its files owned by the host's root are then root's inside, not nobody's.
        if (!spec.rootfs.empty() && scratch.writable && spec.lower_dirs == std::vector<std::string>{spec.rootfs})
            b.lower_tree = SocketPair::make();
    }
    b.sync = Pipe::make();
    b.report = Pipe::make();
    b.status = Pipe::make();
    if (spec.process.tty) b.tty = SocketPair::make();
    if (!b.egress) b.netns = SocketPair::make();
    b.unshared = Pipe::make();
}

// Waits until a persistent sandbox's init closes its report pipe (ready) or reports a failure.
// A setup that hangs (a lower layer on a dead NFS server, say) can still be interrupted: the
// caller has blocked the forwarded signals, which are read here.
void wait_ready(Started& st) {
    sigset_t set = forwarded_signals();
    UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    for (;;) {
        struct pollfd fds[2] = {{st.report.get(), POLLIN, 0}, {sfd.get(), POLLIN, 0}};
        if (::poll(fds, sfd ? 2 : 1, -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("cannot wait for the sandbox's setup");
        }
        struct signalfd_siginfo si;
        while ((fds[1].revents & POLLIN) && ::read(sfd.get(), &si, sizeof si) == sizeof si) {
            int sig = static_cast<int>(si.ssi_signo);
            struct sigaction was {};
            ::sigaction(sig, nullptr, &was);  // blocked signals arrive even when ignored (nohup)
            if ((sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) && was.sa_handler != SIG_IGN)
                fail("interrupted while the sandbox was being set up", sigabbrev_np(sig), "nothing of it is left running");
        }
        if (fds[0].revents) break;
    }
    char buf[4096];
    ssize_t n;
    while ((n = ::read(st.report.get(), buf, sizeof buf)) < 0 && errno == EINTR) {
    }
    if (n > 0) {
        auto [code, message] = parse_failure(std::string(buf, static_cast<size_t>(n)));
        throw Error(message, "", 0, "", code);
    }
    struct pollfd p {st.pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) fail("the sandbox's init exited during setup", "pid " + std::to_string(st.pid));
}

UniqueFd open_pidfd(const state::Live& live, const std::string& name) {
    UniqueFd fd = state::pin(live);
    if (!fd)
        fail("sandbox is not running", name, "start it with 'hutch start " + name + "'");
    return fd;
}

bool wait_exit(int pidfd, double seconds) {
    struct pollfd p {pidfd, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(seconds * 1000)) == 1;
}

// The sandbox's cgroup, when it has limits or stats were asked for. An explicit limit on a host
// without usable cgroup v2 is an error (locate() says what is missing). A persistent sandbox
// gets one without them too where the host offers it, so that `hutch stats` has its figures (as
// docker has for every container); where it does not, it runs without.
std::optional<cgroup::Cgroup> make_cgroup(const SandboxSpec& spec, const Paths& paths) {
    const bool asked = !spec.resources.empty() || spec.stats;
    if (!asked && !spec.persistent) return std::nullopt;
    const bool for_stats = spec.stats || spec.persistent;  // `hutch stats` may ask any time
    // Usually the parent is there with its controllers from an earlier run: a dozen reads and
    // checks fewer. When it is not, writing the limits fails and the full way prepares it.
    // (Not for statistics: the parent may not have every controller whose files they read.)
    if (auto where = for_stats ? std::nullopt : cgroup::prepared_root_parent()) {
        try {
            return cgroup::Cgroup::create(*where, cgroup::name_for(paths, spec.name), spec.resources);
        } catch (const Error&) {
        }
    }
    try {
        static const std::vector<std::string> kStatistics{"memory", "pids", "cpu", "io"};
        cgroup::Hierarchy where =
            cgroup::locate(cgroup::controllers_for(spec.resources), for_stats ? kStatistics : std::vector<std::string>{});
        return cgroup::Cgroup::create(where, cgroup::name_for(paths, spec.name), spec.resources);
    } catch (const Error& e) {
        if (!asked) return std::nullopt;
        if (!spec.limits_from_policy || spec.stats) throw;
        log::warn(std::string("the policy's resource limits are not applied: ") + e.what());
        return std::nullopt;
    }
}

// Reads what the cgroup saw, then kills anything left in it and removes it.
void finish_cgroup(const cgroup::Cgroup& cg, const SandboxSpec& spec, pid_t init, RunResult& result) {
    if (spec.stats) result.stats = cgroup::format_stats(cg.stats());
    // A run that succeeded needs no read. Otherwise an OOM kill explains it: of the command
    // (137), or of another process of the sandbox (a compiler under make, say).
    if (result.exit_code != 0 && cg.oom_kills() > 0)
        result.note = cgroup::oom_message(spec.resources, result.exit_code == 128 + SIGKILL);
    if (init > 0) cg.evict(init);
    // After the init's report every process of the sandbox is gone and the init has left: the
    // cgroup is empty. Otherwise (a failed setup, an error of hutch's) kill what is there first.
    if (init > 0 && cg.remove_if_empty()) return;
    cg.kill();
    if (!cg.remove()) log::warn("cannot remove cgroup " + cg.path() + "; the next hutch run removes it");
}

}  // namespace

// --network egress: the front end's half (src/net), and the spec the sandbox is born from, which
// binds the forwarder's resolv.conf over /etc/resolv.conf.
struct EgressSide {
    std::unique_ptr<net::Egress> egress;
    SandboxSpec spec;

    EgressSide(const policy::Egress* rules, const SandboxSpec& s, const Security& security,
               const std::string& scratch_dir, const std::string& report) {
        if (!rules || rules->mode != "egress") return;
        egress = std::make_unique<net::Egress>(*rules, s, scratch_dir, report);
        egress->check_caps(security.caps);
        spec = s;
        spec.binds.push_back(egress->resolv_conf());
    }
    const SandboxSpec& of(const SandboxSpec& s) const { return egress ? spec : s; }
    // When the network did not come up, what pasta said is the reason.
    Error explain(const Error& e) const {
        if (!egress || std::string(e.what()).find("network did not come up") == std::string::npos) return e;
        std::string said = egress->pasta_messages();
        if (said.empty()) return e;
        return Error(e.what_failed(), e.where(), e.error_number(), "pasta said: " + said, e.exit_code());
    }
    // pasta once the id maps are written; the sandbox is killed when it cannot start.
    void start(const Started& st, bool outlive_caller) const {
        if (!egress) return;
        try {
            egress->start_pasta(st.pid, outlive_caller);
        } catch (...) {
            kill_and_reap(st.pidfd.get());
            throw;
        }
    }
};

RunResult run_sandbox(const SandboxSpec& spec, const Paths& paths, const policy::Egress* egress_rules) {
    trace("front end: run_sandbox");
    check_bind_sources(spec);
    check_layers(spec);
    // The seccomp program is loaded while the init makes its namespaces (below).
    Security security;
    security.caps = caps::resolve(spec.process.cap_add, spec.process.cap_drop);
    auto [owner_uid, owner_gid] = spec.idmap.root_owner();
    state::Scratch scratch = state::plan_scratch(paths, spec.name);
    bool scratch_made = false;
    RunResult result;
    std::optional<Error> error;
    std::optional<cgroup::Cgroup> cg;
    pid_t init_pid = -1;  // the sandbox's init, once it has reported (only its exit is left)
    Started st;
    std::optional<EgressSide> side;
    // The sandbox's directory reserves its name: before a cgroup of that name is made, which
    // would otherwise be taken for one a crashed run left (and another sandbox's killed).
    auto reserve = [&] {
        state::reserve_scratch(scratch, owner_uid, owner_gid);
        scratch_made = true;
    };
    // Cleaning up after crashed runs while the init makes its namespaces on the other CPU. Not
    // later: once released, the init is often woken on this CPU and waits for the front end to
    // sleep.
    auto sweep = [&] {
        state::sweep(paths, spec.idmap);
        trace("front end: swept");
    };
    const bool egress = egress_rules && egress_rules->mode == "egress";
    // --read-only on one layer: a read-only bind of it, no writable layer.
    const bool may_remount = std::find(security.caps.begin(), security.caps.end(), CAP_SYS_ADMIN) != security.caps.end();
    scratch.writable = egress || !mounts::read_only_bind_will_do(spec, may_remount);
    try {
        // The egress side keeps its resolv.conf in the directory.
        if (egress || !spec.resources.empty() || spec.stats) reserve();
        trace("front end: making the cgroup");
        cg = make_cgroup(spec, paths);
        if (cg) trace("front end: cgroup made");
        side.emplace(egress_rules, spec, security, scratch.dir, "");
        BlockedSignals blocked;
        Birth birth;
        birth.egress = side->egress.get();
        prepare_birth(birth, side->of(spec), security, scratch);
        if (cg) birth.cgroup_fd = cg->fd();
        std::optional<UniqueFd> kept = pause::user_namespace(paths, spec.idmap);
        if (kept) birth.parent_userns = kept->get();
        // The rest of the directory is made while the init makes its namespaces.
        st = give_birth(birth, [&] {
            security.seccomp = load_seccomp(spec, security.caps, paths);
            trace("front end: seccomp program loaded");
            if (!scratch_made) reserve();
            if (scratch.writable) state::create_layers(scratch, owner_uid, owner_gid);
            trace("front end: scratch created");
            sweep();
        });
        side->start(st, false);
        // The marker of the init's volatile mount goes while the init populates its root, not
        // after the command. "O": the root is mounted; EOF: the init failed before (and then
        // removes the marker itself at its end, if there is one).
        // The wait is short: signals and --timeout are not watched yet (a lower layer on a hung
        // filesystem must not make hutch deaf to them).
        if (birth.host.discard) {
            struct pollfd p {birth.unshared.rd.get(), POLLIN, 0};
            char up = 0;
            if (::poll(&p, 1, 50) == 1 && ::read(birth.unshared.rd.get(), &up, 1) == 1 && up == 'O')
                state::take_volatile_marker(birth.host.work);
        }
        birth.host = mounts::HostSide();
        // The next run's directory, while this one's init populates its root on the other CPU.
        state::drop_unused_layers(scratch);
        state::make_spare(paths, owner_uid, owner_gid);
        UniqueFd master;
        // The init sends the pty's master once /dev/pts exists; EOF if setup failed first.
        if (spec.process.tty) master = recv_fd(birth.tty.parent.get());
        Supervision sup;
        sup.child_pidfd = st.pidfd.get();
        sup.status_fd = birth.status.rd.get();
        sup.signal_pidfd = st.pidfd.get();
        sup.tty_master = master.get();
        sup.relay_stdin = spec.process.stdin_open;
        sup.timeout = spec.timeout;
        sup.name = spec.name;
        int pidfd = st.pidfd.get();
        sup.teardown = [pidfd] { pidfd_send_signal(pidfd, init::teardown_signal(), nullptr, 0); };
        result.exit_code = supervise(sup);
        result.timed_out = sup.timed_out;
        // Only now, with every process of the sandbox gone, may its init leave the cgroup.
        init_pid = st.pid;
        trace("front end: the sandbox ended");
        if (side->egress) result.egress = side->egress->finish();
        rethrow_reported(st.report.get());
    } catch (const Error& e) {
        error = side ? side->explain(e) : e;
    }
    // Supervision failed with the sandbox still running: it ends before its directory goes.
    if (st.pidfd && init_pid < 0) kill_and_reap(st.pidfd.get());
    side.reset();  // pasta is gone before the scratch directory is
    if (cg) {
        trace("front end: cgroup finishing");
        finish_cgroup(*cg, spec, init_pid, result);
        trace("front end: cgroup removed");
    }
    if (scratch_made) state::remove_scratch(scratch.dir, spec.idmap);
    trace("front end: scratch removed");
    if (error) throw *error;
    // Without a cgroup the init may still be in exit(2); it has PDEATHSIG and no process left, so
    // a caller that exits now loses nothing, and a long-lived caller reaps it with its others.
    return result;
}

// A persistent init stays dumpable and holds the egress ruleset's netlink sockets: a command
// that may trace it could rewrite the rules through it (seccomp::confine_init).
static void refuse_traceable_egress(const SandboxSpec& spec, const Security& security, const policy::Egress* rules) {
    if (rules && rules->mode == "egress" &&
        std::find(security.caps.begin(), security.caps.end(), CAP_SYS_PTRACE) != security.caps.end())
        fail("--cap-add SYS_PTRACE does not go with --network egress in a persistent sandbox", spec.name,
             "the command could trace the init that enforces the policy; drop one, or use 'hutch run'");
}

void start_sandbox(const SandboxSpec& spec, const Paths& paths) {
    state::Scratch scratch = state::open_scratch(paths, spec.name);
    if (state::load_live(paths, spec.name)) return;  // running already: nothing to do, as docker's start
    check_layers(spec);
    check_bind_sources(spec);
    Security security = saved_security(spec, paths);
    std::optional<cgroup::Cgroup> cg = make_cgroup(spec, paths);
    try {
        policy::Egress rules = net::load_rules(paths, spec.name);
        refuse_traceable_egress(spec, security, &rules);  // made by an older hutch
        EgressSide side(&rules, spec, security, scratch.dir, net::report_path(paths, spec.name));
        BlockedSignals blocked;
        Birth birth;
        birth.egress = side.egress.get();
        prepare_birth(birth, side.of(spec), security, scratch);
        if (cg) birth.cgroup_fd = cg->fd();
        std::optional<UniqueFd> kept = pause::user_namespace(paths, spec.idmap);
        if (kept) birth.parent_userns = kept->get();
        Started st = give_birth(birth, nullptr);
        side.start(st, true);
        try {
            wait_ready(st);
            state::save_live(paths, spec.name, {st.pid, state::process_start_time(st.pid), cg ? cg->path() : ""});
            if (::write(birth.sync.wr.get(), "R", 1) != 1) {
                state::remove_live(paths, spec.name);
                fail("the sandbox's init exited during setup", "pid " + std::to_string(st.pid));
            }
        } catch (const Error& e) {
            // The init is on its way out after its report; gone before the sandbox is removed
            // (it shares the lock on the sandbox's directory until it has exited).
            kill_and_reap(st.pidfd.get());
            throw side.explain(e);
        }
    } catch (...) {
        if (cg) {
            cg->kill();
            cg->remove();
        }
        throw;
    }
}

void create_sandbox(const SandboxSpec& spec, const Paths& paths, const policy::Egress* egress_rules) {
    check_bind_sources(spec);
    check_layers(spec);
    Security security = resolve_security(spec, paths);  // a bad profile is refused before anything exists
    refuse_traceable_egress(spec, security, egress_rules);
    auto [owner_uid, owner_gid] = spec.idmap.root_owner();
    {
        state::Scratch scratch = state::create_scratch(paths, spec.name, owner_uid, owner_gid);
        try {
            state::save_config(paths, spec);
            state::save_filter(paths, spec.name, {!security.seccomp, security.seccomp ? security.seccomp->bytes : ""});
            if (egress_rules && egress_rules->mode == "egress") net::save_rules(paths, spec.name, *egress_rules);
        } catch (...) {
            state::remove_scratch(scratch.dir, spec.idmap);
            throw;
        }
    }
    try {
        start_sandbox(spec, paths);
    } catch (...) {
        // Why it failed is the error to show, not a failure to clean up after it.
        try {
            remove_sandbox(paths, spec.name, true);
        } catch (const Error& e) {
            log::warn(std::string("cannot remove the sandbox that failed to start: ") + e.what() + "; 'hutch rm -f " +
                      spec.name + "' removes it");
        }
        throw;
    }
}

RunResult exec_in_sandbox(const Paths& paths, const std::string& name, const ProcessSpec& process) {
    trace("front end: exec_in_sandbox");
    SandboxSpec spec = state::load_config(paths, name);
    std::optional<state::Running> running = state::open_running(paths, name);
    trace("front end: config and state loaded");
    if (!running) fail("sandbox is not running", name, "start it with 'hutch start " + name + "'");
    const state::Live& live = running->live;
    const UniqueFd& init_fd = running->pidfd;
    // Capabilities and seccomp come from the sandbox, never from the exec request.
    ProcessSpec proc = process;
    proc.cap_add = spec.process.cap_add;
    proc.cap_drop = spec.process.cap_drop;
    std::vector<std::string> env = spec.process.env;
    env.insert(env.end(), process.env.begin(), process.env.end());
    proc.env = env;
    if (proc.user.empty()) proc.user = spec.process.user;
    if (proc.cwd.empty()) proc.cwd = spec.process.cwd;
    if (proc.rlimits.empty()) proc.rlimits = spec.process.rlimits;
    Security security = saved_security(spec, paths);
    // Opened while host paths are still reachable; the command is born in it, under the limits.
    // Without limits the cgroup is only for statistics: an exec that cannot join it (from a
    // session whose cgroup is not delegated, say) runs outside it, as it would on a host without.
    const bool cgroup_optional = spec.resources.empty();
    std::optional<cgroup::Cgroup> cg;
    if (!live.cgroup.empty() && !(cg = cgroup::Cgroup::open(live.cgroup)) && !cgroup_optional)
        fail("the sandbox's cgroup is gone", live.cgroup, "restart the sandbox: hutch stop " + name + " && hutch start " + name);
    uint64_t ooms_before = cg ? cg->oom_kills() : 0;
    // Opened here, with the host's view and credentials, which the kernel checks the move
    // against: the command moves itself in before its execve.
    // (With a pids limit the command is born in the cgroup instead: see below.)
    const bool born_in_cgroup = cg && spec.resources.pids > 0;
    UniqueFd cgroup_procs;
    if (cg && !born_in_cgroup &&
        !(cgroup_procs = UniqueFd(::openat(cg->fd(), "cgroup.procs", O_WRONLY | O_CLOEXEC))) && !cgroup_optional)
        throw_errno("cannot open the sandbox's cgroup", live.cgroup + "/cgroup.procs");
    trace("front end: seccomp program and cgroup");

    BlockedSignals blocked;
    const uint64_t reset_signals = non_default_signals();
    Pipe report = Pipe::make();
    // Joining the namespaces at once through the pidfd; this process becomes the command's parent
    // and, from here on, sees only the sandbox's filesystem. The cgroup namespace waits: a process
    // inside it could not place the command into the sandbox's cgroup from where we are.
    if (::setns(init_fd.get(), kJoinNamespaces) != 0)
        throw_errno("cannot join the sandbox's namespaces", name);
    trace("front end: joined the namespaces");
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    pty::Pair tty;
    if (proc.tty) {
        tty = pty::open_pair();
        pty::copy_winsize(STDIN_FILENO, tty.master.get());
    }
    ProcessContext ctx;
    ctx.process = &proc;
    ctx.reset_signals = reset_signals;
    ctx.idmap = &spec.idmap;
    ctx.caps = security.caps;
    ctx.seccomp = security.seccomp ? &*security.seccomp : nullptr;
    ctx.hostname = spec.hostname;
    ctx.report_fd = report.wr.get();
    ctx.tty_slave = tty.slave.get();
    ctx.cgroupns_of = init_fd.get();
    UniqueFd self(pidfd_open(::getpid()));
    if (!self) throw_errno("cannot open a pidfd of hutch itself");
    ctx.parent_pidfd = self.get();
    int child_pidfd = -1;
    if (born_in_cgroup) {
        // A move into a cgroup is not bounded by its pids.max (the kernel lets organisational
        // moves through); a birth inside it is. With a pids limit the command is born there.
        struct clone_args args {};
        args.flags = CLONE_PIDFD | CLONE_INTO_CGROUP;
        args.pidfd = reinterpret_cast<uint64_t>(&child_pidfd);
        args.exit_signal = SIGCHLD;
        args.cgroup = static_cast<uint64_t>(cg->fd());
        pid_t pid = static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof args));
        if (pid < 0) throw_errno("cannot start the command", name);
        if (pid == 0) exec_process(ctx);
    } else {
        ctx.cgroup_procs_fd = cgroup_procs.get();
        ctx.cgroup_optional = cgroup_optional;
        spawn_command(ctx, &child_pidfd);
    }
    UniqueFd child(child_pidfd);
    report.wr.reset();
    tty.slave.reset();
    Supervision sup;
    sup.child_pidfd = child.get();
    sup.signal_pidfd = child.get();
    sup.tty_master = tty.master.get();
    sup.relay_stdin = proc.stdin_open;
    sup.name = name;
    int cfd = child.get();
    sup.teardown = [cfd] { pidfd_send_signal(cfd, SIGKILL, nullptr, 0); };
    RunResult result;
    result.exit_code = supervise(sup);
    result.timed_out = sup.timed_out;
    rethrow_reported(report.rd.get());
    if (cg && result.exit_code != 0 && cg->oom_kills() > ooms_before)
        result.note = cgroup::oom_message(spec.resources, result.exit_code == 128 + SIGKILL);
    return result;
}

namespace {

// Stops sandbox `name`, whose live state (nullopt: stopped) the caller has read.
void stop_loaded(const Paths& paths, const std::string& name, const std::optional<state::Live>& live, double grace) {
    if (!live) {
        // Already stopped. An init that died without hutch (killed, or its `hutch create`
        // killed before it was recorded) leaves its cgroup: no process is in it any more, since
        // they all died with the init's pid namespace. Not while the sandbox's lock is held: a
        // `start` in progress (its state not written yet) holds it, as a live init does.
        if (FileLock unused = FileLock::try_acquire_directory(state::plan_scratch(paths, name).dir))
            cgroup::remove_stale(cgroup::name_for(paths, name));
        state::remove_live(paths, name);
        return;
    }
    UniqueFd fd = open_pidfd(*live, name);
    // SIGTERM asks the init to pass SIGTERM to every process and exit when they are gone.
    pidfd_send_signal(fd.get(), SIGTERM, nullptr, 0);
    if (!wait_exit(fd.get(), grace)) {
        pidfd_send_signal(fd.get(), SIGKILL, nullptr, 0);
        wait_exit(fd.get(), 10);
    }
    if (!live->cgroup.empty())
        if (auto cg = cgroup::Cgroup::open(live->cgroup)) {
            cg->kill();  // exec'd processes are not the init's children: they may still be there
            if (!cg->remove()) log::warn("cannot remove cgroup " + cg->path());
        }
    state::remove_live(paths, name);
}

// Stop and rm need no config: one that is damaged must not keep a sandbox running or on disk.
void require_sandbox(const Paths& paths, const std::string& name) {
    if (!state::exists(paths, name)) fail("no such sandbox", name, "see 'hutch ps'");
}

}  // namespace

void stop_sandbox(const Paths& paths, const std::string& name, double grace) {
    require_sandbox(paths, name);
    stop_loaded(paths, name, state::load_live(paths, name), grace);
}

void remove_sandbox(const Paths& paths, const std::string& name, bool force) {
    require_sandbox(paths, name);
    // The map its files were made with; from a damaged config, the caller's own (as the sweep's).
    IdMap map;
    try {
        map = state::load_config(paths, name).idmap;
    } catch (const Error&) {
        map = idmap::for_caller();
    }
    std::optional<state::Live> live = state::load_live(paths, name);
    if (!force && live) fail("sandbox is running", name, "stop it first, or use 'hutch rm -f " + name + "'");
    stop_loaded(paths, name, live, 0);  // when stopped: what an init that died without hutch left
    state::Scratch scratch = state::open_scratch(paths, name);
    state::remove_scratch(scratch.dir, map);
    state::remove_live(paths, name);
}

}  // namespace hutch
