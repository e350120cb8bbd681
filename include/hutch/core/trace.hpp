// HUTCH_TRACE=1: a timestamped line on stderr for each step of a sandbox's start-up (and of
// egress's DNS exchanges), for measuring where start-up time goes. Off, it costs one getenv.
#pragma once

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace hutch {

// A C string, so that a trace point costs no allocation when tracing is off.
inline void trace(const char* what) {
    static const bool on = std::getenv("HUTCH_TRACE") != nullptr;
    if (!on) return;
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    std::fprintf(stderr, "[%ld.%06ld %d] %s\n", static_cast<long>(ts.tv_sec), ts.tv_nsec / 1000, ::getpid(),
                 what);
}

inline void trace(const std::string& what) { trace(what.c_str()); }

}  // namespace hutch
