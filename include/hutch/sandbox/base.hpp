// The built-in busybox base. The build produces one tree owned by whoever built it; each user
// gets a copy in their own store whose files belong to the sandbox's root as seen from the host
// (the caller when rootless, the mapped range when root), so that copy-up in the overlay works.
#pragma once

#include <string>

#include "hutch/core/paths.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::base {

// Returns the path of the caller's copy of the default base, creating it on first use.
std::string ensure_default(const Paths& paths, const IdMap& map);

}  // namespace hutch::base
