// Seccomp: profiles compiled and installed on the real kernel, in forked children.
//
// Children only make calls that are harmless whether or not the filter stops them: invalid
// arguments, pipes instead of terminals, read-only queries, or namespaces that die with the child.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/sandbox/seccomp.hpp"

namespace sc = hutch::seccomp;

namespace {

const std::string kHutchProfile = HUTCH_SOURCE_DIR "/policies/seccomp/default.json";
const std::string kDockerProfile = HUTCH_SHARED_DIR "/specs/docker-seccomp-default.json";

// Docker's default capability set, which a sandbox typically holds.
const std::vector<std::string> kDefaultCaps = {
    "CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",     "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID",      "CAP_SETUID",           "CAP_SETFCAP",    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",     "CAP_AUDIT_WRITE",
};

constexpr int kPass = 0;  // a probe's expected errno when it must succeed

// One syscall made by the filtered child. `call` returns the syscall's result (-1 and errno on
// failure); the probe passes when it succeeds (want == kPass) or fails with errno `want`.
struct Probe {
    std::string name;
    std::function<long()> call;
    int want;
};

void write_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = ::write(fd, s.data() + off, s.size() - off);
        if (n <= 0) return;
        off += static_cast<size_t>(n);
    }
}

std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
}

std::string check_probe(const Probe& p) {
    errno = 0;
    long rc = p.call();
    int err = rc == -1 ? errno : 0;
    if (err == p.want) return "";
    return p.name + ": want " + (p.want == kPass ? std::string("success") : std::strerror(p.want)) + ", got " +
           (err == 0 ? "success (" + std::to_string(rc) + ")" : std::string(std::strerror(err))) + "\n";
}

// Runs the probes in a child that installed `prog`. Returns "" when all pass, else what went wrong.
std::string run_filtered(const sc::Program& prog, const std::vector<Probe>& probes) {
    int pipefd[2];
    REQUIRE(::pipe2(pipefd, O_CLOEXEC) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(pipefd[0]);
        std::string report;
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
            report = "cannot set no_new_privs\n";
        } else {
            try {
                sc::install(prog);
                for (const auto& p : probes) report += check_probe(p);
            } catch (const std::exception& e) {
                report = std::string("install failed: ") + e.what() + "\n";
            }
        }
        write_all(pipefd[1], report);
        ::_exit(report.empty() ? 0 : 1);
    }
    ::close(pipefd[1]);
    std::string report = read_all(pipefd[0]);
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) report += "child killed by signal " + std::to_string(WTERMSIG(status)) + "\n";
    return report;
}

// Waits for a child made by a probe; returns its pid, or -1 if it did not exit 0.
long reap(long pid) {
    if (pid <= 0) return pid;
    int status = 0;
    if (::waitpid(static_cast<pid_t>(pid), &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = ECHILD;
        return -1;
    }
    return pid;
}

long raw_clone(unsigned long flags) {
    long pid = ::syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) ::_exit(0);
    return reap(pid);
}

long fork_and_exit() {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    return reap(pid);
}

long run_shell(const char* script) {
    pid_t pid = ::fork();
    if (pid == 0) {
        ::execl("/bin/sh", "sh", "-c", script, static_cast<char*>(nullptr));
        ::_exit(127);
    }
    return reap(pid);
}

long start_thread() {
    bool ran = false;
    try {
        std::thread t([&] { ran = true; });
        t.join();
    } catch (const std::system_error& e) {
        errno = e.code().value();
        return -1;
    }
    return ran ? 0 : -1;
}

// ioctl on one end of a pipe: terminal requests fail there with ENOTTY unless the filter refuses first.
long pipe_ioctl(unsigned long request) {
    int fds[2];
    if (::pipe(fds) != 0) return -1;
    char c = 'x';
    int n = 0;
    void* arg = request == FIONREAD ? static_cast<void*>(&n) : static_cast<void*>(&c);
    long rc = ::syscall(SYS_ioctl, fds[0], request, arg);
    int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    errno = err;
    return rc;
}

long open_socket(unsigned long family, int type) {
    long fd = ::syscall(SYS_socket, family, type, 0);
    if (fd >= 0) ::close(static_cast<int>(fd));
    return fd;
}

long read_nonexistent_process() {
    char buf[8];
    struct iovec local{buf, sizeof buf}, remote{buf, sizeof buf};
    return ::syscall(SYS_process_vm_readv, 0x7fffffff, &local, 1, &remote, 1, 0);
}

long write_to_pipe() {
    int fds[2];
    if (::pipe(fds) != 0) return -1;
    long rc = ::write(fds[1], "x", 1);
    ::close(fds[0]);
    ::close(fds[1]);
    return rc;
}

// Calls that every allowlist profile must refuse, with the errno the profile refuses them with.
std::vector<Probe> denied_everywhere(int eperm) {
    return {
        {"keyctl", [] { return ::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0); }, eperm},
        {"bpf", [] { return ::syscall(SYS_bpf, 0, nullptr, 0); }, eperm},
        {"unshare(CLONE_NEWUSER)", [] { return static_cast<long>(::unshare(CLONE_NEWUSER)); }, eperm},
        {"clone(CLONE_NEWNS)", [] { return raw_clone(CLONE_NEWNS); }, eperm},
        {"clone(CLONE_NEWUSER|CLONE_NEWPID)", [] { return raw_clone(CLONE_NEWUSER | CLONE_NEWPID); }, eperm},
        {"mount", [] { return ::syscall(SYS_mount, nullptr, nullptr, nullptr, 0, nullptr); }, eperm},
        {"personality(ADDR_NO_RANDOMIZE)", [] { return ::syscall(SYS_personality, 0x0040000); }, eperm},
        {"clone3", [] { return ::syscall(SYS_clone3, nullptr, 0); }, ENOSYS},
    };
}

// Calls ordinary programs make, which every profile must let through.
std::vector<Probe> allowed_everywhere() {
    return {
        {"getpid", [] { return static_cast<long>(::getpid()); }, kPass},
        {"write", write_to_pipe, kPass},
        {"ioctl(FIONREAD)", [] { return pipe_ioctl(FIONREAD); }, kPass},
        {"ioctl(TCGETS)", [] { return pipe_ioctl(TCGETS); }, ENOTTY},
        {"fork", fork_and_exit, kPass},
        {"clone(SIGCHLD)", [] { return raw_clone(0); }, kPass},
        {"thread (clone3 falls back to clone)", start_thread, kPass},
        {"personality(0xffffffff)", [] { return ::syscall(SYS_personality, 0xffffffffUL); }, kPass},
        {"personality(PER_LINUX)", [] { return ::syscall(SYS_personality, 0UL); }, kPass},
        {"socket(AF_UNIX)", [] { return open_socket(AF_UNIX, SOCK_STREAM); }, kPass},
        {"socket(AF_INET)", [] { return open_socket(AF_INET, SOCK_DGRAM); }, kPass},
        {"ptrace (reaches the kernel)", [] { return ::syscall(SYS_ptrace, PTRACE_PEEKDATA, 0x7fffffff, 0, 0); }, ESRCH},
        {"process_vm_readv (reaches the kernel)", read_nonexistent_process, ESRCH},
        {"sh -c with a pipe", [] { return run_shell("x=$(echo hi | cat); test \"$x\" = hi"); }, kPass},
    };
}

std::vector<Probe> concat(std::vector<Probe> a, const std::vector<Probe>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// The message of the hutch::Error that `fn` throws ("" if it throws none).
template <typename Fn>
std::string error_of(Fn fn) {
    try {
        fn();
    } catch (const hutch::Error& e) {
        return e.what();
    }
    return "";
}

std::string compile_error(const std::string& text) {
    return error_of([&] { sc::compile(text, "/x/p.json", {}); });
}

std::string make_temp_dir() {
    char tmpl[] = "/tmp/hutch-seccomp-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    return tmpl;
}

ino_t inode_of(const std::string& path) {
    struct stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_ino;
}

std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (auto* e = ::readdir(d))
            if (e->d_name[0] != '.') out.push_back(e->d_name);
        ::closedir(d);
    }
    return out;
}

// A permissive profile with the given rules, so the child's own machinery keeps working.
std::string allow_by_default(const std::string& rules) {
    return R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [)" + rules + "]}";
}

#if defined(__x86_64__)
// A 32-bit syscall through int 0x80, which the kernel checks against the filter's i386 part.
long int80(long nr, long a = 0, long b = 0, long c = 0) {
    long ret;
    asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory", "r8", "r9", "r10", "r11");
    if (ret < 0 && ret > -4096) {
        errno = static_cast<int>(-ret);
        return -1;
    }
    return ret;
}

// Kernels may be built or booted without 32-bit emulation; then int 0x80 kills the caller.
bool ia32_available() {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(int80(20 /* i386 getpid */) > 0 ? 0 : 1);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
#endif

}  // namespace

// Calls hutch's profile leaves out of its allowlist, refused with its default errno `eperm`.
// Each argument list is refused by the kernel too, before any effect, should the filter ever let
// one through (the tests run as root).
std::vector<Probe> left_out_by_hutch(int eperm) {
    return {
        {"add_key", [] { return ::syscall(SYS_add_key, nullptr, nullptr, nullptr, 0, 0); }, eperm},
        {"request_key", [] { return ::syscall(SYS_request_key, nullptr, nullptr, nullptr, 0); }, eperm},
        {"kexec_load (bad flags)", [] { return ::syscall(SYS_kexec_load, 0, 0, nullptr, 0xdead0000UL); }, eperm},
        {"kexec_file_load (bad fds)", [] { return ::syscall(SYS_kexec_file_load, -1, -1, 0, nullptr, 0); }, eperm},
        {"init_module (no image)", [] { return ::syscall(SYS_init_module, nullptr, 0, ""); }, eperm},
        {"delete_module (no such)", [] { return ::syscall(SYS_delete_module, "hutch-no-such-module", O_NONBLOCK); }, eperm},
        {"acct (missing file)", [] { return ::syscall(SYS_acct, "/nonexistent-hutch-test/acct"); }, eperm},
        {"swapon (missing file)", [] { return ::syscall(SYS_swapon, "/nonexistent-hutch-test", 0); }, eperm},
        {"lookup_dcookie", [] { return ::syscall(SYS_lookup_dcookie, 0, nullptr, 0); }, eperm},
        {"clock_adjtime(read only)",
         [] {
             struct timex tx{};
             return ::syscall(SYS_clock_adjtime, CLOCK_REALTIME, &tx);
         },
         eperm},
    };
}

TEST_CASE("seccomp: hutch's default profile denies what it must and allows ordinary work") {
    sc::Program prog = sc::compile(hutch::fs::read_file(kHutchProfile), kHutchProfile, kDefaultCaps);
    REQUIRE(!prog.empty());
    CHECK(prog.bytes.size() % sizeof(sock_filter) == 0);
    CHECK(prog.bytes.size() / sizeof(sock_filter) <= 4096);
#if defined(__x86_64__)
    // The native stage is the compact search over runs of numbers (libseccomp's tree alone is
    // about 400 instructions): every sandbox's start pays for the size in the kernel's JIT.
    CHECK(prog.bytes.size() / sizeof(sock_filter) < 250);
#endif

    std::vector<Probe> hutch_only = {
        {"ioctl(TIOCSTI)", [] { return pipe_ioctl(TIOCSTI); }, EPERM},
        {"ioctl(TIOCSTI with high bits set)", [] { return pipe_ioctl(0x100000000UL | TIOCSTI); }, EPERM},
        {"ioctl(TIOCLINUX)", [] { return pipe_ioctl(TIOCLINUX); }, EPERM},
        {"socket(AF_VSOCK)", [] { return open_socket(40, SOCK_STREAM); }, EPERM},
        {"socket(AF_ALG)", [] { return open_socket(38, SOCK_SEQPACKET); }, EPERM},
        {"socket(AF_UNIX with high bits set)", [] { return open_socket(0x100000000UL | AF_UNIX, SOCK_STREAM); }, EPERM},
        {"socket(AF_NETLINK)", [] { return open_socket(AF_NETLINK, SOCK_RAW); }, kPass},
        {"personality(PER_LINUX with high bits set)", [] { return ::syscall(SYS_personality, 0x100000000UL); }, EPERM},
        {"perf_event_open", [] { return ::syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0); }, EPERM},
        {"userfaultfd", [] { return ::syscall(SYS_userfaultfd, O_CLOEXEC); }, EPERM},
        {"io_uring_setup", [] { return ::syscall(SYS_io_uring_setup, 0, nullptr); }, EPERM},
        {"io_uring_enter", [] { return ::syscall(SYS_io_uring_enter, -1, 0, 0, 0, nullptr, 0); }, EPERM},
        {"io_uring_register", [] { return ::syscall(SYS_io_uring_register, -1, 0, nullptr, 0); }, EPERM},
        {"umount2", [] { return ::syscall(SYS_umount2, "/nonexistent-hutch-test", 0); }, EPERM},
        {"pivot_root", [] { return ::syscall(SYS_pivot_root, "/nonexistent-a", "/nonexistent-b"); }, EPERM},
        {"setns", [] { return ::syscall(SYS_setns, -1, 0); }, EPERM},
        {"fsopen", [] { return ::syscall(SYS_fsopen, nullptr, 0); }, EPERM},
        {"open_tree", [] { return ::syscall(SYS_open_tree, -1, nullptr, 0); }, EPERM},
        {"open_by_handle_at", [] { return ::syscall(SYS_open_by_handle_at, -1, nullptr, 0); }, EPERM},
        {"name_to_handle_at", [] { return ::syscall(SYS_name_to_handle_at, -1, nullptr, nullptr, nullptr, 0); }, EPERM},
        {"finit_module", [] { return ::syscall(SYS_finit_module, -1, "", 0); }, EPERM},
        {"swapoff", [] { return ::syscall(SYS_swapoff, "/nonexistent-hutch-test"); }, EPERM},
        {"reboot (bad magic)", [] { return ::syscall(SYS_reboot, 0, 0, 0, nullptr); }, EPERM},
        {"syslog(SIZE_BUFFER)", [] { return ::syscall(SYS_syslog, 10, nullptr, 0); }, EPERM},
        {"settimeofday(NULL, NULL)", [] { return ::syscall(SYS_settimeofday, nullptr, nullptr); }, EPERM},
        {"clock_settime(bad clock)", [] { return ::syscall(SYS_clock_settime, -1, nullptr); }, EPERM},
        {"adjtimex(read only)",
         [] {
             struct timex tx{};
             return ::syscall(SYS_adjtimex, &tx);
         },
         EPERM},
        {"quotactl", [] { return ::syscall(SYS_quotactl, 0, nullptr, 0, nullptr); }, EPERM},
        {"chroot (needs CAP_SYS_CHROOT, held)", [] { return ::syscall(SYS_chroot, "/nonexistent-hutch-test"); }, ENOENT},
        {"getrandom", [] {
             char b[8];
             return ::syscall(SYS_getrandom, b, sizeof b, 0);
         }, kPass},
#if defined(__x86_64__)
        {"iopl(0)", [] { return ::syscall(SYS_iopl, 0); }, EPERM},
        {"arch_prctl(ARCH_GET_FS)", [] {
             unsigned long fs = 0;
             return ::syscall(SYS_arch_prctl, 0x1003, &fs);
         }, kPass},
#endif
    };
    std::string report = run_filtered(
        prog, concat(concat(concat(denied_everywhere(EPERM), allowed_everywhere()), hutch_only), left_out_by_hutch(EPERM)));
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("seccomp: refusals come from the filter, not from the kernel") {
    // With a distinctive default errno, everything the allowlist leaves out reports that errno;
    // explicit rules keep theirs (TIOCSTI: EPERM, clone3: ENOSYS).
    std::string text = hutch::fs::read_file(kHutchProfile);
    auto at = text.find("\"defaultErrnoRet\": 1,");
    REQUIRE(at != std::string::npos);
    text.replace(at, std::strlen("\"defaultErrnoRet\": 1,"), "\"defaultErrnoRet\": 133,");
    sc::Program prog = sc::compile(text, "modified default.json", kDefaultCaps);
    // (The kernel could refuse some of left_out_by_hutch itself, with EPERM: 133 is the filter's.)
    std::vector<Probe> probes = concat(denied_everywhere(133), left_out_by_hutch(133));
    probes.push_back({"ioctl(TIOCSTI)", [] { return pipe_ioctl(TIOCSTI); }, EPERM});
    // Numbers past the last syscall, and just below the x32 bit, fall in the default range.
    probes.push_back({"syscall 1000 (none)", [] { return ::syscall(1000); }, 133});
    probes.push_back({"syscall 0x3fffffff (none)", [] { return ::syscall(0x3fffffff); }, 133});
    std::string report = run_filtered(prog, concat(probes, allowed_everywhere()));
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("seccomp: Docker's default profile compiles and behaves") {
    sc::Program prog = sc::compile(hutch::fs::read_file(kDockerProfile), kDockerProfile, kDefaultCaps);
    std::vector<Probe> probes = concat(denied_everywhere(EPERM), allowed_everywhere());
    // Docker allows every ioctl: TIOCSTI reaches the kernel, which refuses it on a pipe.
    probes.push_back({"ioctl(TIOCSTI)", [] { return pipe_ioctl(TIOCSTI); }, ENOTTY});
    std::string report = run_filtered(prog, probes);
    CHECK_MESSAGE(report.empty(), report);

    // Capability-gated groups compile too (clone3 allowed, clone unrestricted).
    CHECK(!sc::compile(hutch::fs::read_file(kDockerProfile), kDockerProfile, {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}).empty());
    CHECK(!sc::compile(hutch::fs::read_file(kHutchProfile), kHutchProfile, {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}).empty());
}

#if defined(__x86_64__)
TEST_CASE("seccomp: the i386 part of the filter applies to int 0x80 calls") {
    if (!ia32_available()) {
        MESSAGE("kernel without 32-bit emulation; skipped");
        return;
    }
    // hutch's own profile covers only the native ABI: a 32-bit call kills the caller.
    sc::Program native = sc::compile(hutch::fs::read_file(kHutchProfile), kHutchProfile, kDefaultCaps);
    std::string killed = run_filtered(native, {{"i386 getpid", [] { return int80(20); }, kPass}});
    CHECK(killed == "child killed by signal " + std::to_string(SIGSYS) + "\n");
    // Docker's covers i386 too, with the same rules as x86_64.
    sc::Program prog = sc::compile(hutch::fs::read_file(kDockerProfile), kDockerProfile, kDefaultCaps);
    std::vector<Probe> probes = {
        {"i386 getpid", [] { return int80(20); }, kPass},
        {"i386 keyctl", [] { return int80(288, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING); }, EPERM},
        {"i386 unshare(CLONE_NEWUSER)", [] { return int80(310, CLONE_NEWUSER); }, EPERM},
        {"i386 personality(0xffffffff)", [] { return int80(136, 0xffffffffL); }, kPass},
        {"i386 personality(ADDR_NO_RANDOMIZE)", [] { return int80(136, 0x0040000); }, EPERM},
    };
    std::string report = run_filtered(prog, probes);
    CHECK_MESSAGE(report.empty(), report);

    // libseccomp would truncate 0x1_0000_0000 to 0 for the 32-bit ABI and refuse personality(0).
    std::string text = R"({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"], "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
         "args": [{"index": 0, "value": 4294967296, "op": "SCMP_CMP_EQ"}]}]})";
    report = run_filtered(sc::compile(text, "narrow.json", {}),
                          {
                              {"i386 personality(0)", [] { return int80(136, 0); }, kPass},
                              {"x86_64 personality(1<<32)", [] { return ::syscall(SYS_personality, 0x100000000UL); }, EXDEV},
                          });
    CHECK_MESSAGE(report.empty(), report);

    // Without i386 in the profile, a 32-bit call kills the process.
    text = allow_by_default("");
    report = run_filtered(sc::compile(text, "native-only.json", {}), {{"i386 getpid", [] { return int80(20); }, kPass}});
    CHECK(report == "child killed by signal " + std::to_string(SIGSYS) + "\n");
}
#endif

TEST_CASE("seccomp: conditional rules take precedence over unconditional ones") {
    // libseccomp alone lets an unconditional rule swallow every conditional rule for the syscall,
    // in whichever order they are added.
    std::string text = allow_by_default(R"(
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33},
        {"names": ["getpriority"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18, "args": [{"index": 0, "value": 424242, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33},
        {"names": ["getsid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18, "args": [{"index": 0, "value": 424242, "op": "SCMP_CMP_EQ"}]}
    )");
    sc::Program prog = sc::compile(text, "precedence.json", {});
    std::string report = run_filtered(prog, {
        {"getpriority(PRIO_PROCESS): conditional ALLOW", [] { return static_cast<long>(::getpriority(PRIO_PROCESS, 0)); }, kPass},
        {"getpriority(PRIO_PGRP): unconditional ERRNO", [] { return static_cast<long>(::getpriority(PRIO_PGRP, 0)); }, EDOM},
        {"getpgid(424242): conditional listed first", [] { return static_cast<long>(::getpgid(424242)); }, EXDEV},
        {"getpgid(0): unconditional listed last", [] { return static_cast<long>(::getpgid(0)); }, EDOM},
        {"getsid(424242): exception to an allowed syscall", [] { return static_cast<long>(::getsid(424242)); }, EXDEV},
        {"getsid(0)", [] { return static_cast<long>(::getsid(0)); }, kPass},
    });
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("seccomp: argument comparisons combine like Docker's") {
    std::string text = allow_by_default(R"(
        {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15,
         "args": [{"index": 0, "value": 111111, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 222222, "op": "SCMP_CMP_EQ"}]},
        {"names": ["ioprio_get"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 999999, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
         "args": [{"index": 0, "value": 4294901760, "valueTwo": 1048576, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
         "args": [{"index": 1, "value": 500000, "op": "SCMP_CMP_GT"}]}
    )");
    sc::Program prog = sc::compile(text, "args.json", {});
    std::string report = run_filtered(prog, {
        {"same index: first value", [] { return static_cast<long>(::getsid(111111)); }, ENOTBLK},
        {"same index: second value", [] { return static_cast<long>(::getsid(222222)); }, ENOTBLK},
        {"same index: other value", [] { return static_cast<long>(::getsid(0)); }, kPass},
        {"both indexes match", [] { return ::syscall(SYS_ioprio_get, 1, 999999); }, EXDEV},
        {"only the first index matches", [] { return ::syscall(SYS_ioprio_get, 1, 0); }, kPass},
        {"masked match", [] { return static_cast<long>(::getpgid(0x10ffff)); }, EDOM},
        {"masked miss", [] { return static_cast<long>(::getpgid(0)); }, kPass},
        {"GT match", [] { return static_cast<long>(::getpriority(PRIO_USER, 600000)); }, EDOM},
        {"GT miss", [] { return static_cast<long>(::getpriority(PRIO_USER, 0)); }, kPass},
    });
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("seccomp: includes and excludes follow capabilities, architecture and kernel version") {
    std::string native_arches = R"(["amd64", "arm64", "ppc64le", "s390x", "riscv64"])";
    std::string text = allow_by_default(R"(
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15, "includes": {"caps": ["CAP_SYS_NICE"]}},
        {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15, "excludes": {"caps": ["CAP_KILL"]}},
        {"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15, "includes": {"minKernel": "99.0"}},
        {"names": ["getgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15, "includes": {"minKernel": "3.0"}},
        {"names": ["getegid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15, "excludes": {"minKernel": "2.6"}},
        {"names": ["geteuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15, "includes": {"arches": ["sparc64"]}},
        {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15, "includes": {"arches": )" + native_arches + R"(}},
        {"names": ["hutch_no_such_syscall", "getresgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15}
    )");
    auto getresgid = [] {
        gid_t r, e, s;
        return static_cast<long>(::getresgid(&r, &e, &s));
    };
    sc::Program without = sc::compile(text, "caps.json", {});
    std::string report = run_filtered(without, {
        {"includes caps, not held", [] { return ::syscall(SYS_getppid); }, kPass},
        {"excludes caps, not held", [] { return ::syscall(SYS_getpgrp); }, ENOTBLK},
        {"includes minKernel 99.0", [] { return ::syscall(SYS_getuid); }, kPass},
        {"includes minKernel 3.0", [] { return ::syscall(SYS_getgid); }, ENOTBLK},
        {"excludes minKernel 2.6", [] { return ::syscall(SYS_getegid); }, kPass},
        {"includes another arch", [] { return ::syscall(SYS_geteuid); }, kPass},
        {"includes the native arch", [] { return ::syscall(SYS_umask, 022); }, ENOTBLK},
        {"unknown names are skipped, known ones kept", getresgid, ENOTBLK},
    });
    CHECK_MESSAGE(report.empty(), report);

    sc::Program with = sc::compile(text, "caps.json", {"sys_nice", "CAP_KILL"});
    report = run_filtered(with, {
        {"includes caps, held", [] { return ::syscall(SYS_getppid); }, ENOTBLK},
        {"excludes caps, held", [] { return ::syscall(SYS_getpgrp); }, kPass},
    });
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("seccomp: actions other than ERRNO") {
    auto killed_by = [](const char* action) {
        std::string text = allow_by_default(R"({"names": ["getppid"], "action": ")" + std::string(action) + R"("})");
        return run_filtered(sc::compile(text, "action.json", {}),
                            {{"getppid", [] { return ::syscall(SYS_getppid); }, kPass}});
    };
    std::string sigsys = "child killed by signal " + std::to_string(SIGSYS) + "\n";
    CHECK(killed_by("SCMP_ACT_KILL_PROCESS") == sigsys);
    CHECK(killed_by("SCMP_ACT_TRAP") == sigsys);
    CHECK(killed_by("SCMP_ACT_LOG") == "");
    CHECK(killed_by("SCMP_ACT_ALLOW") == "");
    // No tracer attached: the kernel fails a traced syscall with ENOSYS.
    std::string text = allow_by_default(R"({"names": ["getppid"], "action": "SCMP_ACT_TRACE"})");
    std::string report = run_filtered(sc::compile(text, "trace.json", {}),
                                      {{"getppid", [] { return ::syscall(SYS_getppid); }, ENOSYS}});
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("seccomp: malformed profiles name the problem") {
    CHECK_THROWS_AS(sc::compile("{", "/x/p.json", {}), hutch::Error);
    CHECK(compile_error("{").find("seccomp profile: /x/p.json: invalid JSON: ") == 0);
    CHECK(compile_error("[]") == "seccomp profile: /x/p.json: (top level): must be a JSON object");
    CHECK(compile_error(R"({"syscalls": []})") == "seccomp profile: /x/p.json: defaultAction: missing");
    CHECK(compile_error(R"({"defaultAction": "SCMP_ACT_NOPE"})") ==
          "seccomp profile: /x/p.json: defaultAction: unknown action \"SCMP_ACT_NOPE\"");

    std::string ok_rule = R"({"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}, )";
    auto with_rule = [&](const std::string& rule) {
        return compile_error(R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [)" + ok_rule + rule + "]}");
    };
    CHECK(with_rule(R"({"names": ["read"], "action": "SCMP_ACT_FOO"})") ==
          "seccomp profile: /x/p.json: syscalls[1].action: unknown action \"SCMP_ACT_FOO\"");
    CHECK(with_rule(R"({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_FOO"}]})") ==
          "seccomp profile: /x/p.json: syscalls[1].args[0].op: unknown operator \"SCMP_CMP_FOO\"");
    CHECK(with_rule(R"({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]})") ==
          "seccomp profile: /x/p.json: syscalls[1].args[0].index: 7 is out of range 0-5");
    CHECK(with_rule(R"({"action": "SCMP_ACT_ALLOW"})") ==
          "seccomp profile: /x/p.json: syscalls[1]: has neither \"names\" nor \"name\"");
    CHECK(with_rule(R"({"names": "read", "action": "SCMP_ACT_ALLOW"})") ==
          "seccomp profile: /x/p.json: syscalls[1].names: must be an array of strings");
    CHECK(with_rule(R"({"names": ["read"]})") == "seccomp profile: /x/p.json: syscalls[1].action: missing");
    CHECK(with_rule(R"({"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000})") ==
          "seccomp profile: /x/p.json: syscalls[1].errnoRet: 5000 is out of range 0-4095");
    CHECK(with_rule(R"({"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1})") ==
          "seccomp profile: /x/p.json: syscalls[1].errnoRet: only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE");
    CHECK(with_rule(R"({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]})") ==
          "seccomp profile: /x/p.json: syscalls[1].args[0].value: must be a non-negative integer");
    CHECK(with_rule(R"({"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "four"}})") ==
          "seccomp profile: /x/p.json: syscalls[1].includes.minKernel: \"four\" is not a kernel version like \"4.8\"");
    CHECK(with_rule(R"({"names": ["getpid"], "action": "SCMP_ACT_KILL"})") ==
          "seccomp profile: /x/p.json: syscalls[1]: \"getpid\" already has an unconditional rule with a different "
          "action (syscalls[0])");
    CHECK(compile_error(R"({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]})") ==
          "seccomp profile: /x/p.json: architectures[0]: unknown architecture \"SCMP_ARCH_VAX\"");
    // The same rule twice is harmless.
    CHECK(with_rule(R"({"names": ["getpid"], "action": "SCMP_ACT_ALLOW"})") == "");
}

TEST_CASE("seccomp: load caches compiled programs and ignores damaged cache files") {
    std::string dir = make_temp_dir();
    std::string cache = dir + "/cache";
    sc::Program fresh = sc::compile(hutch::fs::read_file(kHutchProfile), kHutchProfile, kDefaultCaps);

    sc::Program first = sc::load(kHutchProfile, kDefaultCaps, cache);
    CHECK(first.bytes == fresh.bytes);
    auto files = list_dir(cache);
    REQUIRE(files.size() == 1);
    std::string file = cache + "/" + files[0];
    CHECK(files[0].size() == 64 + 4);  // sha256 hex + ".bpf"

    // A hit returns the same bytes and leaves the file alone (a rewrite renames a new inode in).
    ino_t before = inode_of(file);
    sc::Program second = sc::load(kHutchProfile, kDefaultCaps, cache);
    CHECK(second.bytes == fresh.bytes);
    CHECK(inode_of(file) == before);

    // Capabilities are part of the key (order does not matter).
    std::vector<std::string> reversed(kDefaultCaps.rbegin(), kDefaultCaps.rend());
    CHECK(sc::load(kHutchProfile, reversed, cache).bytes == fresh.bytes);
    CHECK(list_dir(cache).size() == 1);
    sc::load(kHutchProfile, {"CAP_SYS_ADMIN"}, cache);
    CHECK(list_dir(cache).size() == 2);

    // Damage: wrong size, then right size with flipped bits. Both are recompiled and rewritten.
    hutch::fs::write_file_atomic(file, "garbage");
    CHECK(sc::load(kHutchProfile, kDefaultCaps, cache).bytes == fresh.bytes);
    std::string good = hutch::fs::read_file(file);
    CHECK(good.size() == fresh.bytes.size() + 32);
    std::string flipped = good;
    flipped[8] = static_cast<char>(flipped[8] ^ 0x55);
    hutch::fs::write_file_atomic(file, flipped);
    CHECK(sc::load(kHutchProfile, kDefaultCaps, cache).bytes == fresh.bytes);
    CHECK(hutch::fs::read_file(file) == good);
    // Too short to hold a program and its digest.
    hutch::fs::write_file_atomic(file, good.substr(good.size() - 32));
    CHECK(sc::load(kHutchProfile, kDefaultCaps, cache).bytes == fresh.bytes);
    CHECK(hutch::fs::read_file(file) == good);

    // An unwritable cache directory (its parent is a file) only costs the compile.
    hutch::fs::write_file_atomic(dir + "/plain", "x");
    CHECK(sc::load(kHutchProfile, kDefaultCaps, dir + "/plain/cache").bytes == fresh.bytes);
    // No cache at all.
    CHECK(sc::load(kHutchProfile, kDefaultCaps, "").bytes == fresh.bytes);

    hutch::fs::remove_tree(dir);
}

TEST_CASE("seccomp: an edited profile is compiled again, even at the same size") {
    std::string dir = make_temp_dir();
    std::string profile = dir + "/profile.json";
    std::string text = hutch::fs::read_file(kHutchProfile);
    hutch::fs::write_file_atomic(profile, text);
    sc::Program first = sc::load(profile, kDefaultCaps, dir + "/cache");
    CHECK(first.bytes == sc::compile(text, profile, kDefaultCaps).bytes);
    // Changed just now: not cached, so that an edit within the same timestamp tick cannot hit it.
    CHECK(list_dir(dir + "/cache").empty());
    // In place, same length: only the default errno changes (1 → 7).
    auto at = text.find("\"defaultErrnoRet\": 1,");
    REQUIRE(at != std::string::npos);
    text[at + std::strlen("\"defaultErrnoRet\": ")] = '7';
    {
        std::FILE* f = std::fopen(profile.c_str(), "r+");
        REQUIRE(f != nullptr);
        std::fwrite(text.data(), 1, text.size(), f);
        std::fclose(f);
    }
    sc::Program second = sc::load(profile, kDefaultCaps, dir + "/cache");
    CHECK(second.bytes == sc::compile(text, profile, kDefaultCaps).bytes);
    CHECK(second.bytes != first.bytes);
    // Unreadable now: refused, though a compiled program for it is cached.
    if (::geteuid() != 0) {
        ::chmod(profile.c_str(), 0);
        CHECK_THROWS_AS(sc::load(profile, kDefaultCaps, dir + "/cache"), hutch::Error);
    }
    hutch::fs::remove_tree(dir);
}

TEST_CASE("seccomp: load reports unreadable profiles; install refuses malformed programs") {
    CHECK(error_of([] { sc::load("/nonexistent/hutch/profile.json", {}, ""); }).find("/nonexistent/hutch/profile.json") !=
          std::string::npos);
    CHECK_THROWS_AS(sc::install(sc::Program{}), hutch::Error);
    CHECK_THROWS_AS(sc::install(sc::Program{"12345"}), hutch::Error);
}

TEST_CASE("seccomp: compiling is deterministic") {
    std::string text = hutch::fs::read_file(kDockerProfile);
    CHECK(sc::compile(text, "a", kDefaultCaps).bytes == sc::compile(text, "b", kDefaultCaps).bytes);
}
