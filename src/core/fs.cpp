#include "hutch/core/fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <random>
#include <vector>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"

namespace hutch::fs {

std::string read_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("cannot read", path);
    return read_fd(fd.get(), path);
}

std::string read_fd(int fd, const std::string& shown_path) {
    std::string out;
    char buf[16384];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("cannot read", shown_path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

void write_file_atomic(const std::string& path, const std::string& data, mode_t mode) {
    std::string tmp = path + ".tmp" + std::to_string(::getpid());
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd) throw_errno("cannot create", tmp);
    try {
        if (!write_all(fd.get(), data.data(), data.size())) throw_errno("cannot write", tmp);
        if (::fsync(fd.get()) != 0) throw_errno("cannot sync", tmp);
        fd.reset();
        if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("cannot rename into place", path);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
}

std::string lexical_normal(const std::string& path) {
    std::vector<std::string> parts;
    size_t i = 0;
    while (i <= path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        std::string part = path.substr(i, j - i);
        if (part == "..") {
            if (!parts.empty()) parts.pop_back();
        } else if (!part.empty() && part != ".") {
            parts.push_back(part);
        }
        i = j + 1;
    }
    std::string out;
    for (const auto& p : parts) out += "/" + p;
    return out.empty() ? "/" : out;
}

std::string absolute(const std::string& path) {
    if (!path.empty() && path[0] == '/') return path;
    char cwd[PATH_MAX];
    if (!::getcwd(cwd, sizeof cwd)) throw_errno("cannot find the working directory for", path);
    return std::string(cwd) + "/" + path;
}

bool make_dirs(const std::string& path, mode_t mode) {
    if (path.empty()) return false;
    if (::mkdir(path.c_str(), mode) == 0) return true;
    if (errno == EEXIST) {
        struct stat st;
        if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return false;
        throw Error("not a directory", path, ENOTDIR);
    }
    if (errno != ENOENT) throw_errno("cannot create directory", path);
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos || slash == 0) throw_errno("cannot create directory", path);
    make_dirs(path.substr(0, slash), mode);
    if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw_errno("cannot create directory", path);
    return true;
}

void mark_top_of_hierarchies(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    int flags = 0;
    if (!fd || ::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0 || (flags & FS_TOPDIR_FL)) return;
    flags |= FS_TOPDIR_FL;
    (void)::ioctl(fd.get(), FS_IOC_SETFLAGS, &flags);
}

bool exists(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
}

void require_searchable(const std::string& path, const std::string& what, bool itself) {
    std::string prefix;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        if (pos == std::string::npos && !itself) break;
        prefix = path.substr(0, pos);
        struct stat st;
        if (prefix.empty() || ::stat(prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        if (!(st.st_mode & S_IXOTH))
            fail(what + " is not reachable by the sandbox's unprivileged uids", prefix,
                 "root's sandboxes run as a mapped uid range: make it searchable (chmod o+x " + prefix +
                     ") or use a path under one that is");
    }
}

// Unlinks what `dirfd` holds but directories, and returns the names of those.
static std::vector<std::string> unlink_all_but_directories(int dirfd, const std::string& shown_path) {
    int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw_errno("cannot duplicate directory fd", shown_path);
    DIR* dir = ::fdopendir(dup);
    if (!dir) {
        ::close(dup);
        throw_errno("cannot list", shown_path);
    }
    std::unique_ptr<DIR, int (*)(DIR*)> guard(dir, ::closedir);
    ::rewinddir(dir);
    std::vector<std::string> directories;
    while (struct dirent* e = ::readdir(dir)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) continue;
        if (errno != EISDIR && errno != EPERM) throw_errno("cannot remove", shown_path + "/" + name);
        directories.push_back(std::move(name));
    }
    return directories;
}

// Opens a directory to empty it, given back the permissions that needs.
static UniqueFd open_to_empty(int dirfd, const std::string& name, const std::string& shown) {
    UniqueFd child(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child && errno == EACCES) {
        // A directory its owner made mode 0 (the sandboxed command, or overlayfs' work dirs)
        // cannot even be opened: its owner may give the permissions back first. A symbolic
        // link is never followed (AT_SYMLINK_NOFOLLOW refuses links).
        if (::fchmodat(dirfd, name.c_str(), 0700, AT_SYMLINK_NOFOLLOW) == 0)
            child.reset(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        else
            errno = EACCES;
    }
    if (!child) throw_errno("cannot open", shown);
    // A directory without write or search permission (chmod 0 by the sandboxed command)
    // cannot be emptied; give it back the permissions needed to remove it.
    ::fchmod(child.get(), 0700);
    return child;
}

// Depth first, with one directory open at a time however deep the tree: a layer, or what a
// sandbox left in its own, may nest more directories than a process may hold fds. Each level
// keeps the names of the subdirectories it has still to empty; the way back up is "..", checked
// against the directory it must lead to.
void remove_contents(int dirfd, const std::string& shown_path) {
    struct Level {
        std::string name;  // in the level above ("" at the top)
        dev_t dev;
        ino_t ino;
        std::vector<std::string> pending;  // subdirectories still to empty and remove
    };
    UniqueFd cur(::fcntl(dirfd, F_DUPFD_CLOEXEC, 0));
    if (!cur) throw_errno("cannot duplicate directory fd", shown_path);
    std::vector<Level> levels;
    std::string shown = shown_path;
    auto enter = [&](std::string name) {
        struct stat st;
        if (::fstat(cur.get(), &st) != 0) throw_errno("cannot stat", shown);
        levels.push_back({std::move(name), st.st_dev, st.st_ino, {}});  // listed by the loop
    };
    enter("");
    for (;;) {
        Level& here = levels.back();
        // Listed on entry, and once more when its subdirectories are gone (made meanwhile?).
        if (here.pending.empty()) here.pending = unlink_all_but_directories(cur.get(), shown);
        if (!here.pending.empty()) {
            std::string name = std::move(here.pending.back());
            here.pending.pop_back();
            UniqueFd child = open_to_empty(cur.get(), name, shown + "/" + name);
            cur = std::move(child);
            shown += "/" + name;
            enter(std::move(name));
            continue;
        }
        if (levels.size() == 1) return;
        const std::string name = here.name;
        levels.pop_back();
        const Level& up = levels.back();
        UniqueFd parent(::openat(cur.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        struct stat st;
        if (!parent || ::fstat(parent.get(), &st) != 0) throw_errno("cannot open", shown + "/..");
        shown.resize(shown.size() - name.size() - 1);
        if (st.st_dev != up.dev || st.st_ino != up.ino)
            fail("the tree changed while it was being removed", shown, "remove what is left by hand");
        cur = std::move(parent);
        if (::unlinkat(cur.get(), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
            throw_errno("cannot remove", shown + "/" + name);
    }
}

void remove_tree(const std::string& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return;
        throw_errno("cannot stat", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove", path);
        return;
    }
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno("cannot open", path);
    remove_contents(fd.get(), path);
    fd.reset();
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove", path);
}

}  // namespace hutch::fs
