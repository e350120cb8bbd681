#include "hutch/sandbox/pause.hpp"

#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/lock.hpp"
#include "hutch/core/log.hpp"
#include "hutch/sandbox/idmap.hpp"
#include "hutch/sandbox/state.hpp"

namespace hutch::pause {

namespace {

// Long enough for an agent's pauses between commands; a cold start only costs the helpers once.
constexpr int kDefaultIdleSeconds = 600;

std::string state_file(const Paths& paths) { return paths.state + "/pause"; }

int idle_seconds() {
    const char* env = std::getenv("HUTCH_PAUSE_IDLE");
    if (!env || !*env) return kDefaultIdleSeconds;
    int v = std::atoi(env);
    return v > 0 ? v : kDefaultIdleSeconds;
}

// The state file: "PID START_TIME\n" then the map it holds (uid map, "--", gid map).
struct Record {
    pid_t pid = 0;
    unsigned long long start_time = 0;
    std::string map;
};

std::string map_text(const IdMap& map) { return idmap::render(map.uids) + "--\n" + idmap::render(map.gids); }

std::optional<Record> load(const std::string& file) {
    std::string text;
    try {
        text = fs::read_file(file);
    } catch (const Error&) {
        return std::nullopt;
    }
    size_t nl = text.find('\n');
    if (nl == std::string::npos) return std::nullopt;
    Record r;
    char* end = nullptr;
    long pid = std::strtol(text.c_str(), &end, 10);
    if (*end != ' ' || pid <= 1) return std::nullopt;
    r.pid = static_cast<pid_t>(pid);
    r.start_time = std::strtoull(end + 1, &end, 10);
    // 0 is what process_start_time says of a process gone or a zombie: it names nothing.
    if (end != text.c_str() + nl || r.start_time == 0) return std::nullopt;
    r.map = text.substr(nl + 1);
    return r;
}

// The keeper's user namespace if `r` names a live keeper of ours holding `want`.
std::optional<UniqueFd> open_kept(const Record& r, const std::string& want) {
    if (r.map != want) return std::nullopt;
    UniqueFd ns(::open(("/proc/" + std::to_string(r.pid) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    // Checked after opening: a pid reused in between would not have the keeper's start time.
    if (!ns || state::process_start_time(r.pid) != r.start_time) return std::nullopt;
    uid_t owner = static_cast<uid_t>(-1);
    if (::ioctl(ns.get(), NS_GET_OWNER_UID, &owner) != 0 || owner != ::geteuid()) return std::nullopt;
    // Made from our own user namespace: one made inside a sandbox (whose root is the caller's
    // uid on the host, so the owner matches) is nested deeper, and must never hold the next one.
    UniqueFd parent(::ioctl(ns.get(), NS_GET_PARENT));
    struct stat theirs {}, ours {};
    if (!parent || ::fstat(parent.get(), &theirs) != 0 || ::stat("/proc/self/ns/user", &ours) != 0 ||
        theirs.st_ino != ours.st_ino || theirs.st_dev != ours.st_dev)
        return std::nullopt;
    return ns;
}

// Starts a keeper: a process that is nobody's child here, in a user namespace of its own which
// this process maps with the helpers, then execs `hutch-pause` with none of our fds.
std::optional<UniqueFd> start_keeper(const Paths& paths, const IdMap& map, const std::string& want) {
    int up[2], down[2];
    if (::pipe2(up, O_CLOEXEC) != 0) throw_errno("cannot create pipe");
    UniqueFd up_rd(up[0]), up_wr(up[1]);
    if (::pipe2(down, O_CLOEXEC) != 0) throw_errno("cannot create pipe");
    UniqueFd down_rd(down[0]), down_wr(down[1]);
    const std::string file = state_file(paths);
    const std::string idle = std::to_string(idle_seconds());
    pid_t middle = ::fork();
    if (middle < 0) throw_errno("cannot fork the user namespace keeper");
    if (middle == 0) {
        pid_t keeper = ::fork();
        if (keeper != 0) ::_exit(keeper > 0 ? 0 : 1);
        ::setsid();
        up_rd.reset();
        down_wr.reset();
        pid_t self = ::getpid();
        if (::unshare(CLONE_NEWUSER) != 0 || !write_all(up_wr.get(), &self, sizeof self)) ::_exit(1);
        char go;
        if (::read(down_rd.get(), &go, 1) != 1) ::_exit(1);
        // Nothing of the front end's signal handling survives the exec: blocked signals and
        // ignored SIGPIPE would (a keeper must die of a plain SIGTERM).
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
        int null = ::open("/dev/null", O_RDWR);
        for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
        ::syscall(SYS_close_range, 3U, ~0U, 0U);
        if (::chdir("/") != 0) ::_exit(1);
        const char* argv[] = {"hutch-pause", file.c_str(), idle.c_str(), nullptr};
        const char* envp[] = {nullptr};
        ::execve("/proc/self/exe", const_cast<char**>(argv), const_cast<char**>(envp));
        ::_exit(127);
    }
    up_wr.reset();
    down_rd.reset();
    int status = 0;
    while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
    }
    pid_t keeper = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || ::read(up_rd.get(), &keeper, sizeof keeper) != sizeof keeper)
        return std::nullopt;  // no user namespace for it: the caller maps each sandbox itself
    try {
        idmap::write(keeper, map);
        Record r{keeper, state::process_start_time(keeper), want};
        if (r.start_time == 0) fail("the user namespace keeper exited at its start", "pid " + std::to_string(keeper));
        fs::write_file_atomic(file, std::to_string(r.pid) + " " + std::to_string(r.start_time) + "\n" + r.map, 0600);
    } catch (...) {
        ::kill(keeper, SIGKILL);
        throw;
    }
    if (!write_all(down_wr.get(), "1", 1)) return std::nullopt;
    auto r = load(file);
    return r ? open_kept(*r, want) : std::nullopt;
}

}  // namespace

// Extent by extent: the kernel maps each extent of a child onto one extent of its parent.
std::string nested_map(const std::vector<IdRange>& ranges) {
    std::string out;
    for (const auto& r : ranges)
        out += std::to_string(r.inside) + " " + std::to_string(r.inside) + " " + std::to_string(r.count) + "\n";
    return out;
}

std::optional<UniqueFd> user_namespace(const Paths& paths, const IdMap& map) {
    if (!map.use_helpers) return std::nullopt;
    const std::string want = map_text(map);
    const std::string file = state_file(paths);
    // The usual case: a keeper is there. Touching its file keeps it alive.
    if (auto r = load(file))
        if (auto ns = open_kept(*r, want)) {
            ::utimensat(AT_FDCWD, file.c_str(), nullptr, 0);
            return ns;
        }
    try {
        FileLock lock = FileLock::acquire(paths.state + "/pause.lock");
        if (auto r = load(file))  // another hutch may have started one meanwhile
            if (auto ns = open_kept(*r, want)) return ns;
        return start_keeper(paths, map, want);
    } catch (const Error& e) {
        log::debug(std::string("no user namespace keeper, the helpers map each sandbox: ") + e.what());
        return std::nullopt;
    }
}

void keeper_main(const std::string& state_file, int idle_seconds) {
    ::prctl(PR_SET_NAME, "hutch-pause", 0, 0, 0);  // exec'd as /proc/self/exe: its comm is "exe"
    const pid_t self = ::getpid();
    for (;;) {
        struct stat st;
        auto r = load(state_file);
        if (::stat(state_file.c_str(), &st) != 0 || !r || r->pid != self) ::_exit(0);
        struct timespec now;
        ::clock_gettime(CLOCK_REALTIME, &now);
        long idle = static_cast<long>(now.tv_sec - st.st_mtim.tv_sec);
        if (idle >= idle_seconds) {
            // Its record goes with it. (A front end that read it just now and joins the namespace
            // holds an fd of it; one that writes a new record meanwhile loses it, and its keeper
            // then leaves at once: the next start makes another.)
            ::unlink(state_file.c_str());
            ::_exit(0);
        }
        long wait = std::min<long>(idle_seconds - idle, 60);
        struct timespec ts{wait, 0};
        ::nanosleep(&ts, nullptr);
    }
}

}  // namespace hutch::pause
