#pragma once

#include <string>

namespace hutch {

// Parses "30", "1.5s", "250ms", "2m", "1h" into seconds; throws hutch::Error on anything else.
double parse_duration(const std::string& text, const std::string& flag);
// Parses "64m", "1g", "4096", "512k" into bytes.
unsigned long long parse_size(const std::string& text, const std::string& flag);
// The hint of parse_size's error for a size beyond 2^63 bytes (a well-formed one, then).
inline constexpr const char* kSizeTooLarge = "the size is too large";

}  // namespace hutch
