// cgroup v2 limits for sandboxes. Only a pure v2 hierarchy is used; a v1 or hybrid host gets an
// error that says so (never a write to a v1 hierarchy).
//
// Where sandboxes' cgroups go:
//  - root: <cgroup2 mount>/hutch/<name>-<tag> (name_for; HUTCH_CGROUP_PARENT overrides the parent);
//  - rootless: under the caller's delegated subtree, the systemd user@UID.service model: the
//    highest ancestor of our own cgroup that we own is the delegation root D, sandboxes go to
//    D/hutch/<name>-<tag>; D and D/hutch get the needed controllers in cgroup.subtree_control.
// The command is placed atomically with clone3(CLONE_INTO_CGROUP): it never runs a single
// instruction outside its limits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hutch/core/fd.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::cgroup {

// The name of the cgroup of sandbox `sandbox` of the state under `paths`: the sandbox's name and
// a tag of the state's directory. Two states (two --root, or /run/hutch and a --root) may each
// have a sandbox of the same name; their cgroups share a parent, and must never be taken, or
// killed as stale, for each other.
std::string name_for(const Paths& paths, const std::string& sandbox);

// Controllers `r` needs ("memory", "pids", "cpu", "io").
std::vector<std::string> controllers_for(const Resources& r);

struct Hierarchy {
    std::string mount;   // where cgroup2 is mounted, e.g. /sys/fs/cgroup
    std::string parent;  // absolute directory sandboxes' cgroups are created in
};

// How cgroups are mounted at /sys/fs/cgroup.
enum class Layout {
    PureV2,  // cgroup2 at /sys/fs/cgroup: the only layout sandboxes get limits on
    Hybrid,  // v1 controllers at /sys/fs/cgroup, a cgroup2 beside them at /sys/fs/cgroup/unified
    V1Only,  // cgroup v1 and no cgroup2
    None,    // no cgroup filesystem there
};

// What inspect() found: the rules locate() follows, without any of its writes.
struct Inspection {
    Layout layout = Layout::None;
    // The cgroup2 mount: /sys/fs/cgroup (pure v2) or /sys/fs/cgroup/unified (hybrid); "" without one.
    std::string mount;
    // The mount's own cgroup.controllers, trimmed (what a hybrid host's v2 part offers); nullopt
    // when there is no mount or it cannot be read.
    std::optional<std::string> mount_controllers;
    // Our cgroup v2 path relative to the mount ("/" for its root), from /proc/self/cgroup's
    // "0::PATH" line; nullopt when there is none, or the file cannot be read (own_errno says why).
    std::optional<std::string> own;
    int own_errno = 0;
    // mount + own: our own cgroup's directory; "" when either is unknown.
    std::string own_dir;

    // The rest is filled in for a pure v2 host only.
    bool root = false;  // the caller is root (euid 0)
    // Where sandboxes' cgroups are created. Root: HUTCH_CGROUP_PARENT, or <mount>/hutch. Others:
    // <delegation_root>/hutch, "" when our cgroup is not delegated.
    std::string parent;
    bool parent_from_env = false;       // root: parent came from HUTCH_CGROUP_PARENT
    bool parent_outside_mount = false;  // root: ... and is not inside the mount, so unusable
    // Not root: the highest ancestor of own_dir (itself included) that we own, the systemd
    // user@UID.service model; "" when own_dir is unknown or not ours.
    std::string delegation_root;
    // The directory whose cgroup.controllers say what sandboxes may use: the mount for root, the
    // delegation root for others; "" when there is none.
    std::string controllers_dir;
    // Its cgroup.controllers, trimmed, and split into names; nullopt when controllers_dir is ""
    // or the file cannot be read (controllers_errno says why).
    std::optional<std::string> controllers;
    int controllers_errno = 0;
    std::vector<std::string> available;
};

// Looks at this host's cgroups and our place in them for the calling user, as locate() would.
// Only reads: it never writes, creates, mounts or moves anything. Never throws hutch::Error.
Inspection inspect();

// Finds (and prepares) the parent for sandboxes' cgroups with the `required` controllers
// enabled, and `if_available` too where they are offered (what --stats reads). Throws
// hutch::Error saying what is missing (no cgroup2, hybrid host, no delegation, controller not
// delegated) and how to fix it.
Hierarchy locate(const std::vector<std::string>& required, const std::vector<std::string>& if_available = {});
// Where root's sandboxes' cgroups go when nothing needs checking, as an earlier run left it: a
// pure cgroup v2 host and root. nullopt otherwise (rootless callers, other layouts): use locate().
// A parent not prepared yet shows when Cgroup::create cannot write the limits.
std::optional<Hierarchy> prepared_root_parent();

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
    // memory.events' oom_kill alone: one read, for runs that want no other statistic.
    uint64_t oom_kills() const;
    // Kills every process in the cgroup (cgroup.kill; freeze and SIGKILL on kernels before 5.14).
    void kill() const;
    // One rmdir: true when the cgroup was empty (or is gone already).
    bool remove_if_empty() const;
    // rmdir, retrying briefly while exiting processes leave it. Returns false if it stays busy.
    bool remove() const;
    // Moves `pid` to a leaf shared by exiting inits beside the sandboxes' cgroups. A sandbox's
    // init that has reported the status is only left with the kernel's teardown of its
    // namespaces, milliseconds that need not keep the sandbox's cgroup (and its caller) waiting.
    void evict(pid_t pid) const;

private:
    std::string path_;
    UniqueFd fd_;
};

// The one-line explanation of an OOM kill, e.g.
// "out of memory: the sandbox reached its 64 MiB memory limit".
// `command_killed`: the command itself was (status 137); otherwise another process of the
// sandbox was, and the command ended some other way.
std::string oom_message(const Resources& r, bool command_killed);
// Human-readable summary for --stats.
std::string format_stats(const Stats& s);

// Removes a stale sandbox cgroup left by a crashed hutch (best effort; no error if none).
// `name` is name_for()'s.
void remove_stale(const std::string& name);

}  // namespace hutch::cgroup
