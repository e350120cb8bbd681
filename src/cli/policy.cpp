// Placeholder: being written.
#include "commands.hpp"
#include "hutch/core/error.hpp"
namespace hutch::cli {
int policy_check(const GlobalOptions&, const std::string&) { fail("not implemented yet"); }
int policy_show(const GlobalOptions&, const std::string&) { fail("not implemented yet"); }
}  // namespace hutch::cli
