// Birth, life and death of sandboxes, from the front end's side.
#pragma once

#include <string>

#include "hutch/core/paths.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch {

namespace policy {
struct Egress;
}

struct RunResult {
    int exit_code = 0;      // the command's status, 128+N when killed by signal N
    bool timed_out = false;  // killed because it ran past spec.timeout
    std::string note;       // why it ended, when hutch knows better than the status (OOM)
    std::string stats;      // --stats summary
    std::string egress;     // --network egress: one line of what was refused, or empty
};

// Runs spec.process in a new sandbox and removes the sandbox when it ends. Throws hutch::Error
// when the sandbox cannot be set up or the command cannot be started (exit_code() 125, 126, 127).
// `egress`: what --network egress allows (policy::egress()); nullptr or mode "none": loopback only.
RunResult run_sandbox(const SandboxSpec& spec, const Paths& paths, const policy::Egress* egress = nullptr);

// Starts a persistent sandbox (its init idles until stopped) and returns once it is ready.
// The sandbox directory must exist (create_sandbox) and be stopped.
void start_sandbox(const SandboxSpec& spec, const Paths& paths);
// Records a persistent sandbox (directory and config) and starts it.
// `egress` is saved with the sandbox and enforced on every start.
void create_sandbox(const SandboxSpec& spec, const Paths& paths, const policy::Egress* egress = nullptr);
// Runs a process inside a running persistent sandbox, under its restrictions.
RunResult exec_in_sandbox(const Paths& paths, const std::string& name, const ProcessSpec& process);
// Stops a persistent sandbox: SIGTERM to its processes, SIGKILL after `grace` seconds.
void stop_sandbox(const Paths& paths, const std::string& name, double grace);
// Stops (when `force`) and removes a persistent sandbox with its writable layer.
void remove_sandbox(const Paths& paths, const std::string& name, bool force);

}  // namespace hutch
