#include "hutch/core/error.hpp"

#include <cstdio>
#include <cstring>

namespace hutch {

std::string Error::format(const std::string& what, const std::string& where, int err,
                          const std::string& hint) {
    std::string s = what;
    if (!where.empty()) s += ": " + where;
    if (err != 0) s += std::string(": ") + std::strerror(err);
    if (!hint.empty()) s += " (" + hint + ")";
    return s;
}

Error::Error(std::string what, std::string where, int err, std::string hint, int exit_code)
    : std::runtime_error(format(what, where, err, hint)),
      what_(std::move(what)),
      where_(std::move(where)),
      hint_(std::move(hint)),
      errno_(err),
      exit_code_(exit_code) {}

int report_error(const std::exception& e) {
    std::fprintf(stderr, "hutch: %s\n", e.what());
    const auto* err = dynamic_cast<const Error*>(&e);
    return err ? err->exit_code() : kExitHutchError;
}

void throw_errno(std::string what, std::string where, std::string hint) {
    int err = errno;
    throw Error(std::move(what), std::move(where), err, std::move(hint));
}

void fail(std::string what, std::string where, std::string hint) {
    throw Error(std::move(what), std::move(where), 0, std::move(hint));
}

}  // namespace hutch
