// The last steps before the sandboxed command runs, inside every namespace: terminal, user,
// environment, limits, capabilities, no_new_privs, seccomp, execve. Shared by `run` (forked by the
// sandbox's init) and `exec` (forked after setns).
#pragma once

#include <cstdint>
#include <string>

#include "hutch/sandbox/caps.hpp"
#include "hutch/sandbox/seccomp.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch {

struct ProcessContext {
    const ProcessSpec* process = nullptr;
    const IdMap* idmap = nullptr;
    caps::Set caps;                           // resolved final set (bounding set)
    const seccomp::Program* seccomp = nullptr;  // nullptr: unconfined
    std::string hostname;
    int report_fd = -1;   // where setup and exec failures are reported (close-on-exec)
    int tty_slave = -1;   // the pty's slave when process->tty
    // `hutch exec`: the command joins the sandbox's cgroup (its cgroup.procs, opened on the
    // host) and then the cgroup namespace of the init whose pidfd this is; -1: nothing to join.
    int cgroup_procs_fd = -1;
    bool cgroup_optional = false;  // a refused move into it is no error (a cgroup for statistics only)
    int cgroupns_of = -1;
    // The signals whose actions the command puts back to default (bit N-1: signal N): those its
    // creator ignores or catches (non_default_signals). Default: all of them.
    uint64_t reset_signals = ~uint64_t{0};
    // `hutch exec`: a pidfd of the process that starts the command, with which it dies (a caller
    // that kills `hutch exec` on a timeout must not leave its command running); -1: no such tie.
    int parent_pidfd = -1;
};

// The signals this process ignores or catches (bit N-1: signal N). Its children start with the
// same actions.
uint64_t non_default_signals();

// Never returns: execs the command, or reports why not and exits 125/126/127.
[[noreturn]] void exec_process(const ProcessContext& ctx);

// Failures crossing from a sandbox process to the front end, one message per write(2).
void report_failure(int fd, int exit_code, const std::string& message);
// Splits a reported failure into exit code and message.
std::pair<int, std::string> parse_failure(const std::string& text);
// Reads a reported failure, if any. Returns exit code 0 when none.
std::pair<int, std::string> read_failure(int fd);

// The environment a process starts with: defaults (PATH, HOSTNAME, HOME, TERM) under the spec's.
std::vector<std::string> build_env(const ProcessSpec& p, const std::string& hostname, const std::string& home);

}  // namespace hutch
