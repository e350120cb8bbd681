// User namespace id maps: which host ids a sandbox's ids are, and writing them for a new namespace.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "hutch/core/fd.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::idmap {

struct SubIdRange {
    uint32_t start = 0;
    uint32_t count = 0;
};

// Ranges of /etc/subuid-format `text` that belong to `user` (by name or by numeric uid).
std::vector<SubIdRange> parse_subid(const std::string& text, const std::string& user, uid_t uid);

// The map for sandboxes of the calling user:
//  - root: inside 0..N-1 → a dedicated unprivileged range (the /etc/subuid entry of user "hutch",
//    else HUTCH_ROOT_IDRANGE=START:COUNT, else 1000000000:65536); host root is never mapped;
//  - unprivileged with /etc/subuid and /etc/subgid ranges and newuidmap: 0 → caller, 1.. → ranges;
//  - unprivileged otherwise: 0 → caller only.
IdMap for_caller();

// The group the caller's store belongs to (Paths::ensure): for root, the host gid of its
// sandboxes' root (its map is read for that); for anyone else, their own, with nothing read.
gid_t store_group();

// "your group (G) is not your login group (L)" when the caller runs under sg or newgrp, whom
// newuidmap and newgidmap refuse (unless /etc/login.defs grants GRANT_AUX_GROUP_SUBIDS);
// empty otherwise.
std::string outside_login_group();

// Writes /proc/PID/NAME (uid_map, gid_map, setgroups) in one write; false with errno set. Throws
// nothing: a vfork-style child (launcher.cpp's go-between) calls it.
bool write_map_file(pid_t pid, const char* name, const std::string& data);

// Renders one map in /proc/PID/uid_map format.
std::string render(const std::vector<IdRange>& ranges);

// Writes the maps of the user namespace of `pid` (newuidmap/newgidmap when needed).
void write(pid_t pid, const IdMap& map);

// The same in two halves: the constructor starts the helpers (or writes the maps itself),
// finish() waits for them, so that the caller can work meanwhile. A Writer destroyed unfinished
// still waits for its helpers (no zombie is left), without checking their status.
class Writer {
public:
    Writer(pid_t pid, const IdMap& map);
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    void finish();

private:
    void finish_quietly();
    void wait_helper(pid_t child, const char* helper);
    pid_t uid_helper_ = -1, gid_helper_ = -1;
    UniqueFd helper_output_;  // what the helpers wrote on stderr: shown only if one fails
};

// Runs fn in a child process inside a fresh user namespace with `map` applied, as uid 0 there, and
// returns its exit status. Used to remove files owned by a sandbox's subordinate ids.
int run_as_sandbox_root(const IdMap& map, const std::function<int()>& fn);

}  // namespace hutch::idmap
