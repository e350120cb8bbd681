#include "hutch/core/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace hutch::log {

// One logger to stderr, created when the first message at an enabled level comes (most runs
// log nothing, and making the logger costs a start-up tens of microseconds); messages read
// "hutch: warning: ...".
struct State {
    spdlog::level::level_enum level = spdlog::level::warn;
    std::shared_ptr<spdlog::logger> logger;
};

static State& state() {
    static State s;
    return s;
}

static void emit(spdlog::level::level_enum level, const std::string& msg) {
    State& s = state();
    if (level < s.level) return;
    if (!s.logger) {
        s.logger = spdlog::stderr_logger_st("hutch");
        s.logger->set_pattern("hutch: %^%l%$: %v");
        s.logger->set_level(s.level);
    }
    s.logger->log(level, msg);
}

void set_level(Level level) {
    static constexpr spdlog::level::level_enum map[] = {spdlog::level::debug, spdlog::level::info,
                                                        spdlog::level::warn, spdlog::level::err};
    State& s = state();
    s.level = map[static_cast<int>(level)];
    if (s.logger) s.logger->set_level(s.level);
}

void set_level(const std::string& name) {
    static const std::pair<const char*, Level> levels[] = {
        {"debug", Level::Debug}, {"info", Level::Info}, {"warn", Level::Warn}, {"error", Level::Error}};
    for (auto [n, level] : levels)
        if (name == n) set_level(level);
}

void debug(const std::string& msg) { emit(spdlog::level::debug, msg); }
void info(const std::string& msg) { emit(spdlog::level::info, msg); }
void warn(const std::string& msg) { emit(spdlog::level::warn, msg); }
void error(const std::string& msg) { emit(spdlog::level::err, msg); }

}  // namespace hutch::log
