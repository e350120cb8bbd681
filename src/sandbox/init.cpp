#include "hutch/sandbox/init.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "hutch/core/trace.hpp"

namespace hutch::init {

void block_signals() {
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_BLOCK, &all, nullptr);
}

int exit_code_of(int wait_status) {
    if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
    if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
    return 125;
}

// Reaps every zombie; returns true when `command` was among them (its status in *status).
static bool reap(pid_t command, int* status) {
    bool done = false;
    for (;;) {
        int st = 0;
        pid_t pid = ::waitpid(-1, &st, WNOHANG);
        if (pid <= 0) return done;
        if (pid == command) {
            *status = st;
            done = true;
        }
    }
}

// Kills what is left of the pid namespace and waits until it is empty.
static void kill_all() {
    ::kill(-1, SIGKILL);
    while (::waitpid(-1, nullptr, 0) > 0 || errno == EINTR) {
    }
}

static bool no_children_left() {
    return ::waitpid(-1, nullptr, WNOHANG) < 0 && errno == ECHILD;
}

// The next signal, as sigwaitinfo returns it; with a service, its fds are served meanwhile.
static int next_signal(const sigset_t& all, Service* service) {
    siginfo_t info;
    if (!service) return ::sigwaitinfo(&all, &info);
    static int sfd = ::signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) return ::sigwaitinfo(&all, &info);  // no signalfd: signals before service
    for (;;) {
        // The service's fds are served before a signal is returned: what was queued before the
        // command's exit (its last refused connection) is handled before init leaves.
        std::vector<struct pollfd> fds{{sfd, POLLIN, 0}};
        for (int fd : service->fds()) fds.push_back({fd, POLLIN, 0});
        int n = ::poll(fds.data(), fds.size(), service->timeout_ms());
        if (n < 0 && errno != EINTR) return -1;
        for (size_t i = 1; n > 0 && i < fds.size(); ++i)
            if (fds[i].revents) service->ready(fds[i].fd);
        service->tick();
        struct signalfd_siginfo si;
        if (::read(sfd, &si, sizeof si) == sizeof si) return static_cast<int>(si.ssi_signo);
    }
}

int run(pid_t command, const std::function<void()>& before_exit, Service* service) {
    ::prctl(PR_SET_NAME, "hutch-init", 0, 0, 0);
    sigset_t all;
    sigfillset(&all);
    int status = 0;
    const bool persistent = command < 0;
    bool terminating = false;
    for (;;) {
        int sig = next_signal(all, service);
        if (sig < 0) continue;
        if (sig == SIGCHLD) {
            if (reap(command, &status)) {
                trace("init: command reaped");
                break;
            }
            if (terminating && no_children_left()) break;
            continue;
        }
        if (sig == teardown_signal()) {
            status = SIGKILL;  // a wait status meaning "killed by SIGKILL": reported as 137
            break;
        }
        if (persistent && (sig == SIGTERM || sig == SIGINT)) {
            // `hutch stop`: pass SIGTERM to everyone, leave once they are gone (the front end
            // sends SIGKILL when its grace period ends).
            terminating = true;
            ::kill(-1, SIGTERM);
            if (no_children_left()) break;
            continue;
        }
        if (!persistent) ::kill(command, sig);
    }
    kill_all();
    trace("init: namespace empty");
    if (before_exit) before_exit();
    trace("init: layers emptied");
    return exit_code_of(status);
}

}  // namespace hutch::init
