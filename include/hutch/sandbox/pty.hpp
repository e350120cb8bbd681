// Terminals: a pty from the sandbox's own devpts instance, handed to the front end, which relays
// bytes and window sizes between the caller's terminal and the pty's master.
#pragma once

#include <termios.h>

#include "hutch/core/fd.hpp"

namespace hutch::pty {

struct Pair {
    UniqueFd master;
    UniqueFd slave;
};

// Opens a pty from the devpts mounted at /dev/pts (call after the sandbox's /dev is set up).
Pair open_pair();

// Copies the window size of terminal `from` to terminal `to`; no-op when `from` is not a terminal.
void copy_winsize(int from, int to);

// Puts the caller's terminal in raw mode for the lifetime of the object (no-op if not a tty).
class RawMode {
public:
    explicit RawMode(int fd);
    ~RawMode();
    RawMode(const RawMode&) = delete;
    RawMode& operator=(const RawMode&) = delete;

private:
    int fd_;
    bool active_ = false;
    struct termios saved_ {};
};

}  // namespace hutch::pty
