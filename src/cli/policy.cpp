// hutch policy check FILE | show [NAME|FILE]: validate a policy; print the effective, merged one.
#include <cstdio>

#include "commands.hpp"
#include "hutch/core/error.hpp"
#include "hutch/policy/policy.hpp"

namespace hutch::cli {

namespace {

// `policy check` exits 1 for a policy that will be refused (like a linter), so scripts can tell
// "invalid" from hutch's own failures (125).
constexpr int kExitInvalidPolicy = 1;

}  // namespace

int policy_check(const GlobalOptions&, const std::string& file) {
    try {
        policy::Policy p = policy::load(file);
        // The same check `run` makes: a policy the admin's ceilings refuse is not ok here.
        if (std::optional<policy::Policy> admin = policy::load_admin()) policy::check_within(p, *admin);
    } catch (const Error& e) {
        std::fprintf(stderr, "hutch: %s\n", e.what());
        return kExitInvalidPolicy;
    }
    std::printf("%s: ok\n", file.c_str());
    return 0;
}

int policy_show(const GlobalOptions&, const std::string& name_or_file) {
    policy::Policy p = policy::load(name_or_file.empty() ? std::string("offline") : name_or_file);
    std::fputs(policy::to_toml(p).c_str(), stdout);
    return 0;
}

}  // namespace hutch::cli
