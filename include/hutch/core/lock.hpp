// An flock(2) held for the lifetime of the object. Locks die with their process, so a crashed
// hutch never leaves a lock behind; a free lock on a sandbox's file therefore means "nobody owns it".
#pragma once

#include <string>

#include "hutch/core/fd.hpp"

namespace hutch {

class FileLock {
public:
    enum class Mode { Shared, Exclusive };
    FileLock() = default;
    // Blocks until the lock is held. Creates the file (0600) if needed.
    static FileLock acquire(const std::string& path, Mode mode = Mode::Exclusive);
    // Returns an unlocked FileLock (operator bool false) when someone else holds it.
    static FileLock try_acquire(const std::string& path, Mode mode = Mode::Exclusive);
    // The same on a directory (which must exist), exclusive: no lock file to create and remove.
    static FileLock acquire_directory(const std::string& path);
    static FileLock try_acquire_directory(const std::string& path);

    explicit operator bool() const { return static_cast<bool>(fd_); }
    int fd() const { return fd_.get(); }
    void release() { fd_.reset(); }

private:
    UniqueFd fd_;
};

}  // namespace hutch
