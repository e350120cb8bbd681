// Placeholder: being written (images, image inspect, rmi, image prune, system df, tag).
#include "commands.hpp"
#include "hutch/core/error.hpp"

namespace hutch::cli {
int images(const GlobalOptions&, const std::string&, bool) { fail("not implemented yet"); }
int image_inspect(const GlobalOptions&, const std::vector<std::string>&) { fail("not implemented yet"); }
int rmi(const GlobalOptions&, const std::vector<std::string>&, bool) { fail("not implemented yet"); }
int image_prune(const GlobalOptions&) { fail("not implemented yet"); }
int system_df(const GlobalOptions&, const std::string&) { fail("not implemented yet"); }
int tag(const GlobalOptions&, const std::string&, const std::string&) { fail("not implemented yet"); }
}  // namespace hutch::cli
