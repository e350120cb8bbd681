// Sandboxes on disk. Each has a directory under <storage>/sandboxes/<name>/ with:
//   upper/ work/ the overlay's writable layer and work dir;
//   config.json  persistent sandboxes only: the spec, so exec/start/inspect can reuse it;
//   seccomp      persistent sandboxes only: the seccomp program it was created with.
// The directory itself is flock'ed by the front end of a run for its whole life, and by commands
// that start or remove a persistent sandbox while they do; a free lock on a directory without
// config.json means a crashed run left it.
// <storage>/sandboxes/.root is the overlay's mount point before pivot_root, shared by every
// sandbox (each mounts on it in its own mount namespace): nothing to create or remove per run.
// <storage>/sandboxes/.spare-UID-GID is the next run's directory, made ready (make_spare), and
// .sweep.lock is taken shared by whoever makes a directory there, exclusively by the sweep.
// A persistent sandbox's live state (init pid and its start time) is <state>/sandboxes/<name>.json,
// with a copy in <storage>/sandboxes/<name>/live.json that outlives a runtime directory removed
// under a running sandbox.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "hutch/core/fd.hpp"
#include "hutch/core/lock.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::state {

// Names are what docker accepts: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters.
void validate_name(const std::string& name);
std::string random_name();

struct Scratch {
    std::string dir;
    std::string mount_point;
    FileLock lock;
    bool writable = true;  // false: the root is a read-only bind, no upper/ or work/ to make
    bool layers_made = false;  // taken from a spare (make_spare): upper/ and work/ are there
    std::string upper() const { return dir + "/upper"; }
    std::string work() const { return dir + "/work"; }
};

// Where a sandbox's directory would be; creates nothing.
Scratch plan_scratch(const Paths& paths, const std::string& name);
// Creates the planned directory (or takes the spare, make_spare) and takes its lock, which
// reserves the name (a cgroup or state of that name is then stale); fails if the name is in use.
// `owner_uid`/`owner_gid`: who must own the directory and its layers (the sandbox's root, seen
// from the host).
void reserve_scratch(Scratch& s, uid_t owner_uid, gid_t owner_gid);
// upper/ and work/ in a reserved directory (nothing when it was a spare).
void create_layers(const Scratch& s, uid_t owner_uid, gid_t owner_gid);
// Both of the above.
void create_scratch(Scratch& s, uid_t owner_uid, gid_t owner_gid);
Scratch create_scratch(const Paths& paths, const std::string& name, uid_t owner_uid, gid_t owner_gid);
// Makes a spare sandbox directory for the next run of the same owner, unless there is one: an
// empty directory (the caller's own until taken) with upper/ and work/, which reserve_scratch
// takes with one rename instead of three mkdir calls on the start's critical path (with the
// sandboxes' directory marked as a top of hierarchies, ext4 compares all its block groups for
// each new directory there). A run makes it while its sandbox runs. Best effort: never fails.
void make_spare(const Paths& paths, uid_t owner_uid, gid_t owner_gid);
// Takes the lock of an existing sandbox directory, to start or remove it (waiting while another
// start or rm holds it).
Scratch open_scratch(const Paths& paths, const std::string& name);
// A spare taken by a run without a writable layer: its empty upper/ and work/ are removed while
// the sandbox runs rather than after it. (On an ext4 mounted with `discard` and without a
// journal, as this project's VM has, each directory removed waits for a discard of its block.)
void drop_unused_layers(const Scratch& s);
// Removes a sandbox directory whatever its files' owners (subordinate ids included).
void remove_scratch(const std::string& dir, const IdMap& map);
// Empties upper/ from inside the sandbox (its root may remove what it created). work/ is left to
// remove_scratch: overlayfs leaves it empty after a run, and in the rare case it does not,
// remove_scratch acts as the sandbox's root as well.
void empty_layer(int upper_fd);
// Removes the marker a volatile overlay mount leaves in its work dir, from the init (at its end,
// or before it mounts again after a refusal).
void remove_volatile_marker(int work_fd);
// The same from the front end, by path, while the sandbox runs (off the path to its end); false
// when the mount has not finished making it (the init's removal at the end then does).
bool take_volatile_marker(const std::string& work);

// Removes what crashed runs left behind: directories without config.json whose lock is free, and
// half-made spares; and spares of other owners unused for an hour. Cheap when there is nothing
// to do; skipped when another hutch is sweeping.
void sweep(const Paths& paths, const IdMap& map);

struct Live {
    pid_t pid = 0;
    unsigned long long start_time = 0;  // /proc/PID/stat field 22, to detect pid reuse
    std::string cgroup;                 // the sandbox's cgroup directory, if it has one
};

void save_config(const Paths& paths, const SandboxSpec& spec);
SandboxSpec load_config(const Paths& paths, const std::string& name);
// Whether persistent sandbox `name` exists (its config, readable or not); an error for a bad name.
bool exists(const Paths& paths, const std::string& name);
std::vector<std::string> list(const Paths& paths);

// The seccomp program of a persistent sandbox, fixed when it is created: its restarts and every
// exec get this one, whatever has become of the profile file since (docker keeps a container's
// profile in its config the same way), and no exec compiles or hashes a profile.
struct SavedFilter {
    bool unconfined = false;
    std::string program;  // the BPF instructions, when confined
};
void save_filter(const Paths& paths, const std::string& name, const SavedFilter& filter);
// nullopt when none was saved (a sandbox of an older hutch); an error when the file is damaged.
std::optional<SavedFilter> load_filter(const Paths& paths, const std::string& name);

void save_live(const Paths& paths, const std::string& name, const Live& live);
// The init of a running sandbox, or nullopt if it is not running.
std::optional<Live> load_live(const Paths& paths, const std::string& name);
// A pidfd of the init `live` names, or none (-1) if that process is gone.
UniqueFd pin(const Live& live);
// The init of a running sandbox with a pidfd that pins it (one look at /proc instead of two, for
// load_live and then pin); nullopt if it is not running.
struct Running {
    Live live;
    UniqueFd pidfd;
};
std::optional<Running> open_running(const Paths& paths, const std::string& name);
void remove_live(const Paths& paths, const std::string& name);
unsigned long long process_start_time(pid_t pid);

// JSON of the spec (for config.json and `hutch inspect`).
std::string spec_to_json(const SandboxSpec& spec, int indent = -1);
SandboxSpec spec_from_json(const std::string& text, const std::string& source);

}  // namespace hutch::state
