// The CLI's commands, as plain functions over plain option structs: only main.cpp sees CLI11.
#pragma once

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "hutch/core/paths.hpp"

namespace hutch::cli {

struct GlobalOptions {
    std::string root;
    std::string log_level = "warn";
};

// Options shared by run, create and exec.
struct ProcessOptions {
    std::vector<std::string> env;
    std::vector<std::string> env_files;
    std::string workdir;
    std::string user;
    bool interactive = false;
    bool tty = false;
};

struct SandboxOptions {
    ProcessOptions process;
    std::string name;
    std::string hostname;
    std::string rootfs;
    bool read_only = false;
    std::vector<std::string> tmpfs;
    std::vector<std::string> volumes;
    std::vector<std::string> cap_add;
    std::vector<std::string> cap_drop;
    std::vector<std::string> security_opts;
    std::vector<std::string> ulimits;
    std::string timeout;
    // cgroup v2 limits (docker's flags)
    std::string memory, memory_swap, cpus;
    int64_t pids_limit = 0, cpu_weight = 0, io_weight = 0;
    std::vector<std::string> device_read_bps, device_write_bps;
    bool stats = false;
    std::string pull = "missing";  // --pull missing|always|never
    std::string entrypoint;        // --entrypoint (set: replaces the image's; "": none)
    bool entrypoint_set = false;
    std::string policy;   // --policy NAME|FILE (default: offline)
    std::string network;  // --network none|egress (default: the policy's)
    bool quiet = false;   // --quiet: no summary of refused network attempts at exit
    bool rm = false;  // given: run removes its sandbox anyway (docker's muscle memory); create refuses it
    // [IMAGE] COMMAND [ARG...] as typed, "--" included when given.
    std::vector<std::string> args;
};

int run(const GlobalOptions& g, const SandboxOptions& o);
int create(const GlobalOptions& g, const SandboxOptions& o);
int start(const GlobalOptions& g, const std::vector<std::string>& names);
int exec(const GlobalOptions& g, const ProcessOptions& o, const std::string& name, std::vector<std::string> command);
// `quiet`: names only, as docker ps -q gives ids (stopped ones too, which hutch always lists).
int ps(const GlobalOptions& g, const std::string& format, bool quiet);
int stop(const GlobalOptions& g, const std::vector<std::string>& names, double grace);
int rm(const GlobalOptions& g, const std::vector<std::string>& names, bool force);
int inspect(const GlobalOptions& g, const std::vector<std::string>& names);
int stats(const GlobalOptions& g, const std::vector<std::string>& names, const std::string& format);

// The image store (src/cli/images.cpp). Pulling, loading, saving and logging in are done by the
// hutch-image executable, which main() execs for those commands.
int images(const GlobalOptions& g, const std::string& format, bool quiet);
int image_inspect(const GlobalOptions& g, const std::vector<std::string>& refs);
int rmi(const GlobalOptions& g, const std::vector<std::string>& refs, bool force);
int image_prune(const GlobalOptions& g);
int system_df(const GlobalOptions& g, const std::string& format);
int tag(const GlobalOptions& g, const std::string& source, const std::string& target);

// Policies (src/cli/policy.cpp): validate a file; print the effective merged rules.
int policy_check(const GlobalOptions& g, const std::string& file);
int policy_show(const GlobalOptions& g, const std::string& name_or_file);

// Checks the host and explains what is missing (src/cli/doctor.cpp). Non-zero if something required is.
int doctor(const GlobalOptions& g, const std::string& format);

// The directories hutch keeps state and storage in, created if needed; `sweep`: remove what
// crashed runs left (`run` does that itself while its sandbox starts, `exec` makes nothing).
Paths prepare_paths(const GlobalOptions& g, bool sweep = true);

// Runs fn for each argument (sandbox or image names), reporting each failure on its own line as
// docker does; returns 1 if any failed, else 0.
template <typename Fn>
int for_each_arg(const std::vector<std::string>& args, Fn&& fn) {
    int rc = 0;
    for (const auto& a : args) {
        try {
            fn(a);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "hutch: %s\n", e.what());
            rc = 1;
        }
    }
    return rc;
}

}  // namespace hutch::cli
