// The running kernel's version, for what came with a release (doctor's checks, idmapped layers).
#pragma once

#include <sys/utsname.h>

#include <cstdio>
#include <optional>
#include <string>

namespace hutch {

struct Kernel {
    std::string release;  // uname -r
    int major = 0, minor = 0;
    bool at_least(int a, int b) const { return major > a || (major == a && minor >= b); }
};

// nullopt when uname(2) fails.
inline std::optional<Kernel> running_kernel() {
    struct utsname u {};
    if (::uname(&u) != 0) return std::nullopt;
    Kernel k;
    k.release = u.release;
    std::sscanf(u.release, "%d.%d", &k.major, &k.minor);
    return k;
}

}  // namespace hutch
