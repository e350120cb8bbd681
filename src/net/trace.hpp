// HUTCH_NET_TRACE=1: a timestamped line on stderr for each egress start-up step and DNS
// exchange, for start-up cost and forwarder work. Private to src/net.
#pragma once

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace hutch::net {

inline void trace(const std::string& what) {
    static const bool on = std::getenv("HUTCH_NET_TRACE") != nullptr;
    if (!on) return;
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    std::fprintf(stderr, "[%ld.%06ld %d] %s\n", static_cast<long>(ts.tv_sec % 1000), ts.tv_nsec / 1000, ::getpid(),
                 what.c_str());
}

}  // namespace hutch::net
