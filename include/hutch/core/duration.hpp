#pragma once

#include <string>

namespace hutch {

// Parses "30", "1.5s", "250ms", "2m", "1h" into seconds; throws hutch::Error on anything else.
double parse_duration(const std::string& text, const std::string& flag);
// Parses "64m", "1g", "4096", "512k" into bytes.
unsigned long long parse_size(const std::string& text, const std::string& flag);

}  // namespace hutch
