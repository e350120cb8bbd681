#include "hutch/core/duration.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "hutch/core/error.hpp"

namespace hutch {

// Splits "1.5s" into 1.5 and "s"; throws on no number or trailing garbage after the unit.
static std::pair<double, std::string> split_number(const std::string& text, const std::string& flag) {
    const char* begin = text.c_str();
    char* end = nullptr;
    double v = std::strtod(begin, &end);
    if (end == begin || !std::isfinite(v) || v < 0)
        fail("invalid value for " + flag, "'" + text + "'", "expected a non-negative number with an optional unit");
    std::string unit(end);
    for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return {v, unit};
}

double parse_duration(const std::string& text, const std::string& flag) {
    auto [v, unit] = split_number(text, flag);
    if (unit.empty() || unit == "s") return v;
    if (unit == "ms") return v / 1000;
    if (unit == "m") return v * 60;
    if (unit == "h") return v * 3600;
    fail("invalid duration for " + flag, "'" + text + "'", "use a number with s, ms, m or h, e.g. 30s");
}

unsigned long long parse_size(const std::string& text, const std::string& flag) {
    auto [v, unit] = split_number(text, flag);
    if (!unit.empty() && unit.back() == 'b') unit.pop_back();
    double mult = 1;
    if (unit == "k") mult = 1024.0;
    else if (unit == "m") mult = 1024.0 * 1024;
    else if (unit == "g") mult = 1024.0 * 1024 * 1024;
    else if (unit == "t") mult = 1024.0 * 1024 * 1024 * 1024;
    else if (!unit.empty()) fail("invalid size for " + flag, "'" + text + "'", "use a number with k, m or g, e.g. 64m");
    // Beyond 2^63 bytes a size is no limit any kernel takes, and the conversion below would be
    // undefined.
    if (!(v * mult < 9223372036854775808.0)) fail("invalid size for " + flag, "'" + text + "'", kSizeTooLarge);
    return static_cast<unsigned long long>(v * mult);
}

}  // namespace hutch
