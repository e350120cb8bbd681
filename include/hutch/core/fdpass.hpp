// Passing a file descriptor to another process over a unix socket (SCM_RIGHTS): the pty's master
// from a sandbox's init to the front end, pasta's pidfd to the init.
#pragma once

#include <vector>

#include "hutch/core/fd.hpp"

namespace hutch {

// Sends `fd` with one byte of data. `flags` are sendmsg's (MSG_NOSIGNAL is always added).
// Returns false with errno set when it could not be sent.
bool send_fd(int sock, int fd, int flags = 0);
// Receives a descriptor sent by send_fd (close-on-exec); invalid at EOF, on error, or when the
// message carried none. `flags` are recvmsg's.
UniqueFd recv_fd(int sock, int flags = 0);

// Closes every descriptor from 3 up but those in `keep`.
void close_fds_except(std::vector<int> keep);

}  // namespace hutch
