// Birth, life and death of sandboxes, from the front end's side.
#pragma once

#include <string>

#include "hutch/core/paths.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch {

struct RunResult {
    int exit_code = 0;      // the command's status, 128+N when killed by signal N
    bool timed_out = false;  // killed because it ran past spec.timeout
    std::string note;       // why it ended, when hutch knows better than the status (OOM)
    std::string stats;      // --stats summary
};

// Runs spec.process in a new sandbox and removes the sandbox when it ends. Throws hutch::Error
// when the sandbox cannot be set up or the command cannot be started (exit_code() 125, 126, 127).
RunResult run_sandbox(const SandboxSpec& spec, const Paths& paths);

// Starts a persistent sandbox (its init idles until stopped) and returns once it is ready.
// The sandbox directory must exist (create_sandbox) and be stopped.
void start_sandbox(const SandboxSpec& spec, const Paths& paths);
// Records a persistent sandbox (directory and config) and starts it.
void create_sandbox(const SandboxSpec& spec, const Paths& paths);
// Runs a process inside a running persistent sandbox, under its restrictions.
RunResult exec_in_sandbox(const Paths& paths, const std::string& name, const ProcessSpec& process);
// Stops a persistent sandbox: SIGTERM to its processes, SIGKILL after `grace` seconds.
void stop_sandbox(const Paths& paths, const std::string& name, double grace);
// Stops (when `force`) and removes a persistent sandbox with its writable layer.
void remove_sandbox(const Paths& paths, const std::string& name, bool force);

}  // namespace hutch
