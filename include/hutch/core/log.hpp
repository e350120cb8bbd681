// Logging for hutch's own diagnostics (never the sandboxed command's output). spdlog stays
// inside log.cpp so its heavy headers are compiled once.
#pragma once

#include <string>

namespace hutch::log {

enum class Level { Debug, Info, Warn, Error };
void set_level(Level level);
// "debug", "info", "warn" or "error" (the --log-level values); anything else is ignored.
void set_level(const std::string& name);
void debug(const std::string& msg);
void info(const std::string& msg);
void warn(const std::string& msg);
void error(const std::string& msg);

}  // namespace hutch::log
