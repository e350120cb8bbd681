// Placeholder: being written.
#include "commands.hpp"
#include "hutch/core/error.hpp"
namespace hutch::cli {
int doctor(const GlobalOptions&, const std::string&) { fail("not implemented yet"); }
}  // namespace hutch::cli
