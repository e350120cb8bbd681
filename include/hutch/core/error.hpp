// The one error type of libhutch. It is thrown by value and printed once, at the edge, as
//   hutch: <what failed>: <where>: <errno text> (<what to do>)
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace hutch {

// Exit statuses shared by every front end (docker's conventions).
inline constexpr int kExitHutchError = 125;
inline constexpr int kExitNotExecutable = 126;
inline constexpr int kExitNotFound = 127;

class Error : public std::runtime_error {
public:
    Error(std::string what, std::string where = {}, int err = 0, std::string hint = {},
          int exit_code = kExitHutchError);

    const std::string& what_failed() const noexcept { return what_; }
    const std::string& where() const noexcept { return where_; }
    int error_number() const noexcept { return errno_; }
    const std::string& hint() const noexcept { return hint_; }
    int exit_code() const noexcept { return exit_code_; }

    // The one-line message, without the "hutch: " prefix.
    static std::string format(const std::string& what, const std::string& where, int err,
                              const std::string& hint);

private:
    std::string what_, where_, hint_;
    int errno_;
    int exit_code_;
};

// Prints "hutch: <message>" on stderr for an error that reached a front end's top, and returns the
// exit status it calls for (an Error's own, 125 for anything else).
int report_error(const std::exception& e);

// Throws an Error carrying the current errno.
[[noreturn]] void throw_errno(std::string what, std::string where = {}, std::string hint = {});

// Throws an Error without an errno.
[[noreturn]] void fail(std::string what, std::string where = {}, std::string hint = {});

// For syscalls returning -1 on error: returns the result, or throws with errno.
template <typename T>
T check(T result, const char* what, const std::string& where = {}, const char* hint = nullptr) {
    if (result == static_cast<T>(-1)) throw_errno(what, where, hint ? hint : "");
    return result;
}

}  // namespace hutch
