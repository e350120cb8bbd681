#include "hutch/sandbox/init.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

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

int run(pid_t command, const std::function<void()>& before_exit) {
    ::prctl(PR_SET_NAME, "hutch-init", 0, 0, 0);
    sigset_t all;
    sigfillset(&all);
    int status = 0;
    const bool persistent = command < 0;
    bool terminating = false;
    for (;;) {
        siginfo_t info;
        int sig = ::sigwaitinfo(&all, &info);
        if (sig < 0) continue;
        if (sig == SIGCHLD) {
            if (reap(command, &status)) break;
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
    if (before_exit) before_exit();
    return exit_code_of(status);
}

}  // namespace hutch::init
