#include "hutch/core/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace hutch::log {

// One logger to stderr, created on first use; messages read "hutch: warning: ...".
static spdlog::logger& logger() {
    static auto instance = [] {
        auto l = spdlog::stderr_logger_st("hutch");
        l->set_pattern("hutch: %^%l%$: %v");
        l->set_level(spdlog::level::warn);
        return l;
    }();
    return *instance;
}

void set_level(Level level) {
    static constexpr spdlog::level::level_enum map[] = {spdlog::level::debug, spdlog::level::info,
                                                        spdlog::level::warn, spdlog::level::err};
    logger().set_level(map[static_cast<int>(level)]);
}

void set_level(const std::string& name) {
    static const std::pair<const char*, Level> levels[] = {
        {"debug", Level::Debug}, {"info", Level::Info}, {"warn", Level::Warn}, {"error", Level::Error}};
    for (auto [n, level] : levels)
        if (name == n) set_level(level);
}

void debug(const std::string& msg) { logger().debug(msg); }
void info(const std::string& msg) { logger().info(msg); }
void warn(const std::string& msg) { logger().warn(msg); }
void error(const std::string& msg) { logger().error(msg); }

}  // namespace hutch::log
