#include "hutch/core/lock.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "hutch/core/error.hpp"

namespace hutch {

// Opens and locks `path`; returns an invalid fd when `wait` is false and the lock is taken.
static UniqueFd open_locked(const std::string& path, FileLock::Mode mode, bool wait, bool directory = false) {
    UniqueFd fd(directory ? ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                          : ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) throw_errno(directory ? "cannot open directory to lock" : "cannot open lock file", path);
    int op = (mode == FileLock::Mode::Shared ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB);
    while (::flock(fd.get(), op) != 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK && !wait) return UniqueFd();
        throw_errno("cannot lock", path);
    }
    return fd;
}

FileLock FileLock::acquire(const std::string& path, Mode mode) {
    FileLock l;
    l.fd_ = open_locked(path, mode, true);
    return l;
}

FileLock FileLock::acquire_directory(const std::string& path) {
    FileLock l;
    l.fd_ = open_locked(path, Mode::Exclusive, true, true);
    return l;
}

FileLock FileLock::try_acquire_directory(const std::string& path) {
    FileLock l;
    l.fd_ = open_locked(path, Mode::Exclusive, false, true);
    return l;
}

FileLock FileLock::try_acquire(const std::string& path, Mode mode) {
    FileLock l;
    l.fd_ = open_locked(path, mode, false);
    return l;
}

}  // namespace hutch
