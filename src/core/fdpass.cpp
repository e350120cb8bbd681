#include "hutch/core/fdpass.hpp"

#include <sys/socket.h>

#include <cstring>

namespace hutch {

namespace {

// One byte of payload (a message must carry some) and room for one descriptor.
struct Message {
    char byte = 'F';
    struct iovec iov {&byte, 1};
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    struct msghdr msg {};
    Message() {
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
    }
    Message(const Message&) = delete;
    Message& operator=(const Message&) = delete;
};

}  // namespace

bool send_fd(int sock, int fd, int flags) {
    Message m;
    struct cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return ::sendmsg(sock, &m.msg, flags | MSG_NOSIGNAL) == 1;
}

UniqueFd recv_fd(int sock, int flags) {
    Message m;
    if (::recvmsg(sock, &m.msg, flags | MSG_CMSG_CLOEXEC) != 1) return UniqueFd();
    struct cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
        return UniqueFd();
    int fd;
    std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return UniqueFd(fd);
}

}  // namespace hutch
