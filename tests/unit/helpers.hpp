// Small helpers shared by the unit tests.
#pragma once

#include <string>

#include "hutch/core/error.hpp"

namespace hutch::test {

// The message of the hutch::Error that fn throws, or "" when it does not throw.
template <typename Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace hutch::test
