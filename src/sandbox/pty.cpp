#include "hutch/sandbox/pty.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "hutch/core/error.hpp"

namespace hutch::pty {

Pair open_pair() {
    Pair p;
    p.master.reset(::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!p.master) throw_errno("cannot open a pty", "/dev/pts/ptmx");
    if (::unlockpt(p.master.get()) != 0) throw_errno("cannot unlock pty");
    // TIOCGPTPEER opens the slave through the master, never by a path the sandbox could swap.
    p.slave.reset(::ioctl(p.master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!p.slave) throw_errno("cannot open pty slave");
    return p;
}

void copy_winsize(int from, int to) {
    struct winsize ws {};
    if (::ioctl(from, TIOCGWINSZ, &ws) == 0) ::ioctl(to, TIOCSWINSZ, &ws);
}

RawMode::RawMode(int fd) : fd_(fd) {
    if (!::isatty(fd) || ::tcgetattr(fd, &saved_) != 0) return;
    struct termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(fd, TCSANOW, &raw) == 0) active_ = true;
}

RawMode::~RawMode() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
}

}  // namespace hutch::pty
