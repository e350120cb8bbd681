// Capabilities of the sandboxed process. The default is Docker's set for uid 0 minus CAP_NET_RAW;
// any other uid gets none in its effective set. The bounding set is reduced to the same set, so
// nothing can regain more (setuid binaries are powerless anyway under no_new_privs).
#pragma once

#include <string>
#include <vector>

namespace hutch::caps {

// Capability numbers.
using Set = std::vector<int>;

Set default_set();
// "SYS_ADMIN", "cap_sys_admin", "CAP_SYS_ADMIN" → number; "ALL" handled by resolve(). Throws if unknown.
int parse_name(const std::string& name);
std::string name_of(int cap);
std::vector<std::string> names(const Set& set);

// The final set: defaults, minus --cap-drop, plus --cap-add (docker's order: drop ALL then add works).
Set resolve(const std::vector<std::string>& add, const std::vector<std::string>& drop);
// The caps a non-root user gets: only those explicitly added (and kept).
Set added_only(const Set& final_set, const std::vector<std::string>& add);

// Step 1, while still privileged in the namespace: shrink the bounding set to `keep`.
void restrict_bounding(const Set& keep);
// Step 2, after setresuid: set permitted/effective/inheritable to `process`, ambient too when
// `ambient` (non-root users need ambient capabilities to keep them across execve).
void apply(const Set& process, bool ambient);
// The capability bitmask (as in /proc/PID/status CapEff) of a set.
unsigned long long mask(const Set& set);

}  // namespace hutch::caps
