// Pid 1 of a sandbox: reaps zombies, forwards signals to the command, and on the way out kills
// everything left in the pid namespace, so nothing outlives the sandbox.
#pragma once

#include <sys/types.h>

#include <functional>
#include <vector>

#include <csignal>

namespace hutch::init {

// Sent by the front end to ask init for an immediate teardown (timeout, second SIGTERM, stop).
inline int teardown_signal() { return SIGRTMIN + 1; }

// Blocks every catchable signal in the calling process; init waits for them with sigwaitinfo.
void block_signals();

// Work init does between signals (the egress DNS forwarder and refusal log, src/net): init waits
// on these fds as well and hands each readable one to ready(); tick() runs after every wake-up.
class Service {
public:
    virtual ~Service() = default;
    virtual std::vector<int> fds() = 0;
    virtual void ready(int fd) = 0;
    virtual int timeout_ms() = 0;  // -1: no timer
    virtual void tick() = 0;
};

// Runs the init loop. `command` is the first command's pid, or -1 for a persistent sandbox that
// idles until SIGTERM or the teardown signal. Returns the exit status to report: the command's
// own, or 128+N if it was killed by signal N. `before_exit` runs after every process is gone.
// With a `service`, init polls a signalfd and the service's fds instead of sigwaitinfo.
int run(pid_t command, const std::function<void()>& before_exit, Service* service = nullptr);

// Encodes a wait(2) status the way shells do: the exit code, or 128+signal.
int exit_code_of(int wait_status);

}  // namespace hutch::init
