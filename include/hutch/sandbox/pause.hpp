// A user namespace holding the caller's whole /etc/subuid and /etc/subgid map, kept by a small
// idle process ("hutch-pause", as podman keeps one), so that a rootless sandbox can have its own
// user namespace nested inside it, with the same host ids, without running the setuid helpers
// newuidmap and newgidmap on every start (two execs: most of a rootless start-up).
//
// Each sandbox still gets a user namespace of its own (identity-mapped onto the kept one, so its
// ids on the host are exactly what /etc/subuid gives). Running sandboxes do not need the keeper:
// it only lets new ones be born, and it exits after a while without use (its state file's mtime
// is the last use). Nothing but the caller may join it: joining needs CAP_SYS_ADMIN in it, which
// only processes of the caller's own uid on the host have.
#pragma once

#include <optional>
#include <string>

#include "hutch/core/fd.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::pause {

// The kept user namespace for `map` (which must use the helpers), started if needed; nullopt when
// it cannot be had (the caller then maps each sandbox with the helpers, as without a keeper).
std::optional<UniqueFd> user_namespace(const Paths& paths, const IdMap& map);

// The map a sandbox's own user namespace gets inside the kept one: the identity over all of it.
std::string nested_map(const std::vector<IdRange>& ranges);

// The keeper's main loop, run as `hutch-pause STATE_FILE IDLE_SECONDS` (main() hands argv[0]
// "hutch-pause" here). Exits when the state file is gone, names another pid, or was not touched
// for IDLE_SECONDS.
[[noreturn]] void keeper_main(const std::string& state_file, int idle_seconds);

}  // namespace hutch::pause
