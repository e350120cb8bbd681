#include "hutch/sandbox/base.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/lock.hpp"

namespace hutch::base {

namespace {

// Identifies the build's tree: the busybox binary's size and mtime and the tree's own mtime.
std::string source_stamp(const std::string& src) {
    struct stat bb, top;
    if (::stat((src + "/bin/busybox").c_str(), &bb) != 0 || ::stat(src.c_str(), &top) != 0)
        fail("the built-in base root filesystem is missing", src,
             "build it with 'meson compile -C build' (it needs busybox-static), or pass --rootfs DIR");
    return std::to_string(bb.st_size) + ":" + std::to_string(bb.st_mtim.tv_sec) + ":" +
           std::to_string(top.st_mtim.tv_sec) + "." + std::to_string(top.st_mtim.tv_nsec);
}

struct Owner {
    const IdMap& map;
    bool root;
    void apply(int dirfd, const char* name, const struct stat& st) const {
        if (!root) return;  // rootless: everything belongs to the caller, who is root inside
        auto uid = map.host_uid(st.st_uid);
        auto gid = map.host_gid(st.st_gid);
        if (!uid || !gid) return;
        if (::fchownat(dirfd, name, *uid, *gid, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("cannot chown", name);
    }
};

void copy_file(int sfd, int dfd, const char* name, const struct stat& st) {
    UniqueFd in(::openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) throw_errno("cannot read", name);
    UniqueFd out(::openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777));
    if (!out) throw_errno("cannot create", name);
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(in.get(), buf, sizeof buf);
        if (n < 0) throw_errno("cannot read", name);
        if (n == 0) break;
        if (::write(out.get(), buf, static_cast<size_t>(n)) != n) throw_errno("cannot write", name);
    }
    ::fchmod(out.get(), st.st_mode & 07777);
}

void copy_tree(int sfd, int dfd, const Owner& owner) {
    int dup = ::fcntl(sfd, F_DUPFD_CLOEXEC, 0);
    DIR* dir = dup >= 0 ? ::fdopendir(dup) : nullptr;
    if (!dir) throw_errno("cannot list the base tree");
    struct Closer {
        DIR* d;
        ~Closer() { ::closedir(d); }
    } closer{dir};
    while (struct dirent* e = ::readdir(dir)) {
        const char* name = e->d_name;
        if (!std::strcmp(name, ".") || !std::strcmp(name, "..")) continue;
        struct stat st;
        if (::fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("cannot stat", name);
        if (S_ISDIR(st.st_mode)) {
            if (::mkdirat(dfd, name, st.st_mode & 07777) != 0) throw_errno("cannot create", name);
            UniqueFd s(::openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            UniqueFd d(::openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!d || (!s && errno != EACCES)) throw_errno("cannot open", name);
            // A directory only its owner may read (/root) is copied empty, which it is in the base.
            if (s) copy_tree(s.get(), d.get(), owner);
            ::fchmod(d.get(), st.st_mode & 07777);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = ::readlinkat(sfd, name, target, sizeof target - 1);
            if (n < 0) throw_errno("cannot read link", name);
            target[n] = 0;
            if (::symlinkat(target, dfd, name) != 0) throw_errno("cannot create link", name);
        } else if (S_ISREG(st.st_mode)) {
            copy_file(sfd, dfd, name, st);
        } else {
            continue;  // the base has no devices, fifos or sockets
        }
        owner.apply(dfd, name, st);
    }
}

}  // namespace

std::string ensure_default(const Paths& paths, const IdMap& map) {
    const std::string src = default_rootfs_source();
    const std::string stamp = source_stamp(src);
    const std::string dst = paths.bases() + "/busybox";
    // Kept beside the tree, not in it: the tree is the sandbox's /.
    const std::string stamp_file = dst + ".source";
    auto current = [&] {
        try {
            return fs::exists(dst) && fs::read_file(stamp_file) == stamp;
        } catch (const Error&) {
            return false;
        }
    };
    if (current()) return dst;
    fs::make_dirs(paths.bases(), 0700);
    FileLock lock = FileLock::acquire(paths.bases() + "/.lock");
    if (current()) return dst;  // another hutch made it while we waited
    std::string tmp = dst + ".tmp";
    fs::remove_tree(tmp);
    if (::mkdir(tmp.c_str(), 0755) != 0) throw_errno("cannot create", tmp);
    UniqueFd s(::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    UniqueFd d(::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!s || !d) throw_errno("cannot open", src);
    Owner owner{map, ::geteuid() == 0};
    copy_tree(s.get(), d.get(), owner);
    struct stat st;
    if (::fstat(s.get(), &st) == 0) owner.apply(AT_FDCWD, tmp.c_str(), st);
    std::string old = dst + ".old";
    fs::remove_tree(old);
    if (fs::exists(dst) && ::rename(dst.c_str(), old.c_str()) != 0) throw_errno("cannot replace", dst);
    if (::rename(tmp.c_str(), dst.c_str()) != 0) throw_errno("cannot rename into place", dst);
    fs::remove_tree(old);
    fs::write_file_atomic(stamp_file, stamp, 0644);
    return dst;
}

}  // namespace hutch::base
