// cgroup v2 limits for sandboxes. Only a pure v2 hierarchy is used; a v1 or hybrid host gets an
// error that says so (never a write to a v1 hierarchy).
//
// Where sandboxes' cgroups go:
//  - root: <cgroup2 mount>/hutch/<name> (HUTCH_CGROUP_PARENT overrides the parent);
//  - rootless: under the caller's delegated subtree, the systemd user@UID.service model: the
//    highest ancestor of our own cgroup that we own is the delegation root D, sandboxes go to
//    D/hutch/<name>; D and D/hutch get the needed controllers in cgroup.subtree_control.
// The command is placed atomically with clone3(CLONE_INTO_CGROUP): it never runs a single
// instruction outside its limits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hutch/core/fd.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::cgroup {

// Controllers `r` needs ("memory", "pids", "cpu", "io").
std::vector<std::string> controllers_for(const Resources& r);

struct Hierarchy {
    std::string mount;   // where cgroup2 is mounted, e.g. /sys/fs/cgroup
    std::string parent;  // absolute directory sandboxes' cgroups are created in
};

// Finds (and prepares) the parent for sandboxes' cgroups with `controllers` available. Throws
// hutch::Error saying what is missing (no cgroup2, hybrid host, no delegation, controller not
// delegated) and how to fix it.
Hierarchy locate(const std::vector<std::string>& controllers);

struct Stats {
    uint64_t memory_peak = 0, memory_current = 0;
    uint64_t cpu_usage_usec = 0, cpu_user_usec = 0, cpu_system_usec = 0, nr_throttled = 0;
    uint64_t pids_current = 0, pids_peak = 0;
    uint64_t io_read_bytes = 0, io_write_bytes = 0;
    uint64_t oom_kills = 0, pids_max_events = 0;
};

class Cgroup {
public:
    Cgroup() = default;
    // Creates <parent>/<name> and writes the limits. Throws naming the file that refused a value.
    static Cgroup create(const Hierarchy& where, const std::string& name, const Resources& limits);
    // An existing cgroup (a persistent sandbox's), or nullopt if it is gone.
    static std::optional<Cgroup> open(const std::string& path);

    explicit operator bool() const { return static_cast<bool>(fd_); }
    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }

    Stats stats() const;
    // Kills every process in the cgroup (cgroup.kill; freeze and SIGKILL on kernels before 5.14).
    void kill() const;
    // rmdir, retrying briefly while exiting processes leave it. Returns false if it stays busy.
    bool remove() const;

private:
    std::string path_;
    UniqueFd fd_;
};

// The one-line explanation of an OOM kill, e.g.
// "out of memory: the sandbox reached its 64 MiB memory limit".
std::string oom_message(const Resources& r);
// Human-readable summary for --stats.
std::string format_stats(const Stats& s);

// Removes a stale sandbox cgroup left by a crashed hutch (best effort; no error if none).
void remove_stale(const std::string& name);

}  // namespace hutch::cgroup
