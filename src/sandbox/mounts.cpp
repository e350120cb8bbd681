#include "hutch/sandbox/mounts.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <sstream>

#include "hutch/core/error.hpp"
#include "hutch/core/kernel.hpp"
#include "hutch/core/trace.hpp"

namespace hutch::mounts {

namespace {

constexpr const char* kDevices[] = {"null", "zero", "full", "random", "urandom", "tty"};

void set_attr(int fd, const char* path, unsigned flags, uint64_t attr, const std::string& shown,
              uint64_t propagation = 0) {
    struct mount_attr a {};
    a.attr_set = attr;
    a.propagation = propagation;
    if (::mount_setattr(fd, path, flags, &a, sizeof a) != 0) throw_errno("cannot set mount attributes", shown);
}

// A new detached filesystem instance (procfs, sysfs) with the given mount attributes.
UniqueFd new_fs(const char* type, uint64_t attrs) {
    UniqueFd fs(::fsopen(type, FSOPEN_CLOEXEC));
    if (!fs) throw_errno("cannot open filesystem context", type);
    if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0)
        throw_errno("cannot create filesystem instance", type);
    UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, static_cast<unsigned>(attrs)));
    if (!mnt) throw_errno("cannot mount filesystem instance", type);
    return mnt;
}

UniqueFd clone_tree(const std::string& path, bool recursive) {
    unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
    UniqueFd fd(::open_tree(AT_FDCWD, path.c_str(), flags));
    if (!fd) throw_errno("cannot open bind source", path, "the path must exist and be readable by you");
    return fd;
}

void attach(int mount_fd, const std::string& target) {
    if (::move_mount(mount_fd, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
        throw_errno("cannot attach mount", target);
}

}  // namespace

UniqueFd idmapped_tree(const std::string& dir, int userns_fd) {
    // overlayfs takes idmapped layers from Linux 5.19; before, the mount would refuse them.
    std::optional<Kernel> kernel = running_kernel();
    if (!kernel || !kernel->at_least(5, 19)) return {};
    UniqueFd tree(::open_tree(AT_FDCWD, dir.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    struct mount_attr a {};
    a.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY;
    a.propagation = MS_PRIVATE;  // cloned in the host's namespace: no peer of its mounts
    a.userns_fd = static_cast<uint64_t>(userns_fd);
    if (!tree || ::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &a, sizeof a) != 0) return {};
    return tree;
}

bool attach_over(int tree_fd, const std::string& dir) {
    return ::move_mount(tree_fd, "", AT_FDCWD, dir.c_str(), MOVE_MOUNT_F_EMPTY_PATH) == 0;
}

namespace {

// /proc, /dev and /sys must be directories of the root itself: mount(2) follows a symlink the
// image put there (a /dev -> / would have the tmpfs cover the whole root).
void ensure_fixed_mountpoint(const char* path) {
    struct stat st;
    if (::lstat(path, &st) != 0) {
        if (errno != ENOENT || ::mkdir(path, 0755) != 0) throw_errno("cannot create mount point", path);
        return;
    }
    if (!S_ISDIR(st.st_mode))
        fail(std::string("the image's ") + path + " is not a directory", path,
             S_ISLNK(st.st_mode) ? "it is a symbolic link; make it a directory in the image"
                                 : "make it a directory in the image");
}

bool is_dir_fd(int fd) {
    struct stat st;
    return ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

// `shown`: the path to name in an error, when `target` is a /proc/self/fd link.
void mount_tmpfs(const std::string& target, unsigned long flags, const std::string& options,
                 const std::string& shown = {}) {
    if (::mount("tmpfs", target.c_str(), "tmpfs", flags, options.c_str()) != 0)
        throw_errno("cannot mount tmpfs", shown.empty() ? target : shown);
}

// /dev is a tmpfs without exec, suid or device nodes of its own (the devices are bind mounts,
// which keep the host's flags), so /dev/shm can be a directory in it rather than a second tmpfs:
// Docker's /dev/shm has the same flags, and one superblock less is one less on every start.
void setup_dev(Detached& detached, bool tty_gid_mapped, bool with_tty) {
    mount_tmpfs("/dev", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_STRICTATIME, "mode=755,size=65536k");
    // The tmpfs is new and empty: each device's mount point is one mknod of a regular file.
    auto mount_point = [](const std::string& path) {
        if (::mknod(path.c_str(), S_IFREG | 0644, 0) != 0) throw_errno("cannot create mount point", path);
    };
    for (auto& [name, fd] : detached.devices) {
        std::string path = "/dev/" + name;
        mount_point(path);
        attach(fd.get(), path);
    }
    if (with_tty) mount_point("/dev/console");
    static constexpr std::pair<const char*, const char*> links[] = {
        {"/proc/self/fd", "/dev/fd"},     {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"},
        {"/proc/self/fd/2", "/dev/stderr"}, {"pts/ptmx", "/dev/ptmx"}};
    for (auto [target, link] : links)
        if (::symlink(target, link) != 0) throw_errno("cannot create symlink", link);
    for (const char* dir : {"/dev/pts", "/dev/shm", "/dev/mqueue"})
        if (::mkdir(dir, 0755) != 0) throw_errno("cannot create directory", dir);
    if (::chmod("/dev/shm", 01777) != 0) throw_errno("cannot chmod", "/dev/shm");
    std::string pts_opts = "newinstance,ptmxmode=0666,mode=0620";
    if (tty_gid_mapped) pts_opts += ",gid=5";
    if (::mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts_opts.c_str()) != 0)
        throw_errno("cannot mount devpts", "/dev/pts");
    if (::mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        throw_errno("cannot mount mqueue", "/dev/mqueue");
}

// Hides a path: a file under /dev/null, a directory under an empty read-only tmpfs. The first
// masked directory gets the tmpfs; the others get bind mounts of it, which are cheaper than a
// superblock each. `empty` remembers where that tmpfs is.
void mask(const std::string& path, std::string& empty) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return;  // nothing to hide
    if (!S_ISDIR(st.st_mode)) {
        if (::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr) != 0) throw_errno("cannot mask", path);
        return;
    }
    if (empty.empty()) {
        mount_tmpfs(path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
        empty = path;
    } else if (::mount(empty.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        throw_errno("cannot mask", path);
    }
}

void make_readonly(const std::string& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return;
    if (::mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
        throw_errno("cannot bind", path);
    set_attr(AT_FDCWD, path.c_str(), AT_RECURSIVE, MOUNT_ATTR_RDONLY, path);
}

}  // namespace

const std::vector<std::string>& masked_paths() {
    static const std::vector<std::string> paths{
        "/proc/acpi",         "/proc/asound",      "/proc/kcore",        "/proc/keys",
        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
        "/proc/scsi",         "/sys/firmware",     "/sys/devices/virtual/powercap"};
    return paths;
}

const std::vector<std::string>& readonly_paths() {
    static const std::vector<std::string> paths{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                                "/proc/sysrq-trigger"};
    return paths;
}

void make_private() {
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        throw_errno("cannot make mounts private", "/");
}

std::vector<UniqueFd> open_bind_sources(const std::vector<BindMount>& binds) {
    std::vector<UniqueFd> out;
    for (const auto& b : binds) {
        UniqueFd fd = clone_tree(b.source, true);
        // rprivate, as docker's binds. A clone made in the host's namespace (root's front end
        // makes them) would stay a peer of the host's mounts: what the sandbox mounts beneath
        // the destination would appear on the host, and what the host mounts beneath the source
        // later would appear in the sandbox, writable under a :ro bind.
        set_attr(fd.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, b.read_only ? MOUNT_ATTR_RDONLY : 0, b.source, MS_PRIVATE);
        out.push_back(std::move(fd));
    }
    return out;
}

Detached prepare(const SandboxSpec& spec, std::vector<UniqueFd> parent_binds) {
    Detached d;
    d.proc = new_fs("proc", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    trace("init: proc");
    // The kernel makes a sysfs in a user namespace only where one is fully visible in the mount
    // namespace, and the sandbox's is made once the init has joined its network namespace, after
    // the pivot: this read-only view of the host's stands on /sys until then (nothing of the
    // sandbox runs yet), and stays as runc's fallback when a new sysfs is refused.
    d.host_sys = clone_tree("/sys", true);
    set_attr(d.host_sys.get(), "", AT_EMPTY_PATH | AT_RECURSIVE,
             MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, "/sys");
    for (const char* name : kDevices) {
        std::string host = std::string("/dev/") + name;
        d.devices.emplace_back(name, clone_tree(host, false));
    }
    d.binds = parent_binds.empty() ? open_bind_sources(spec.binds) : std::move(parent_binds);
    return d;
}

// overlayfs splits its options on ',' and layer lists on ':'; both are escaped with a backslash.
static std::string escape_layer(const std::string& path) {
    std::string out;
    for (char c : path) {
        if (c == ',' || c == ':' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

// The lowerdir option names every layer. With the layers of an image side by side in the store,
// naming them relative to their common parent keeps the option short: the kernel takes at most a
// page of mount options, and an image of 60 layers named by absolute paths would not fit.
static std::string lowerdir_option(const std::vector<std::string>& layers, std::string* chdir_to) {
    std::string parent = layers.front().substr(0, layers.front().rfind('/'));
    bool common = layers.size() > 1;
    for (const auto& l : layers) common = common && l.rfind(parent + "/", 0) == 0 && l.find('/', parent.size() + 1) == std::string::npos;
    std::string option;
    for (const auto& l : layers) {
        if (!option.empty()) option += ':';
        option += escape_layer(common ? l.substr(parent.size() + 1) : l);
    }
    *chdir_to = common ? parent : "/";
    return option;
}

bool read_only_bind_will_do(const SandboxSpec& spec, bool may_remount) {
    // A sandbox that may remount / (CAP_SYS_ADMIN) could make the bind writable and change the
    // store's layer under every other sandbox; under an overlay it could reach only its own layer.
    if (!spec.read_only_root || spec.persistent || spec.lower_dirs.size() != 1 || may_remount) return false;
    UniqueFd base(::open(spec.lower_dirs.front().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!base) return false;
    // What `path` is inside the sandbox: resolved in the layer as in the sandbox's root (the
    // image's symlinks stay inside it), the last component not followed.
    auto type_of = [&](const std::string& path) -> mode_t {
        struct open_how how {};
        how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, base.get(), path.c_str(), &how, sizeof how)));
        struct stat st;
        return fd && ::fstat(fd.get(), &st) == 0 ? st.st_mode & S_IFMT : 0;
    };
    for (const char* p : {"/proc", "/dev", "/sys"})
        if (type_of(p) != S_IFDIR) return false;
    for (const auto& b : spec.binds) {
        mode_t t = type_of(b.destination);
        if (t == 0 || t == S_IFLNK) return false;
    }
    for (const auto& t : spec.tmpfs)
        if (type_of(t.destination) != S_IFDIR) return false;
    return true;
}

// pivot_root(".", ".") stacks the old root on the new one; detaching "." then drops it, and
// with it every host path. At once: while stacked, ".." from the root leads into it, and so does
// a mount whose target the image's symlinks turn into "/".
static void pivot_into(const std::string& target) {
    if (::chdir(target.c_str()) != 0) throw_errno("cannot enter the sandbox root", target);
    if (::syscall(SYS_pivot_root, ".", ".") != 0) throw_errno("cannot pivot_root into the sandbox root");
    if (::umount2(".", MNT_DETACH) != 0) throw_errno("cannot detach the host root");
    if (::chdir("/") != 0) throw_errno("cannot chdir", "/");
}

static void enter_bind_root(const HostSide& host) {
    const std::string& base = host.lower.front();
    if (::mount(base.c_str(), host.target.c_str(), nullptr, MS_BIND, nullptr) != 0)
        throw_errno("cannot bind the root filesystem", base);
    // A bind keeps the flags of the host's mount: device nodes in the tree would work (an
    // overlay mounted in the user namespace is nodev by itself).
    set_attr(AT_FDCWD, host.target.c_str(), 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID, host.target);
    pivot_into(host.target);
}

void enter_overlay_root(const HostSide& host, const std::function<void()>& mounted) {
    if (host.upper.empty()) return enter_bind_root(host);
    std::string cwd;
    std::string data = "lowerdir=" + lowerdir_option(host.lower, &cwd) + ",upperdir=" + escape_layer(host.upper) +
                       ",workdir=" + escape_layer(host.work) +
                       // In a user namespace the trusted.* xattrs overlayfs keeps its metadata in are
                       // unavailable; user.overlay.* it is, for this mount and the layers below it.
                       ",userxattr" +
                       // Without it, unmounting syncs the upper layer's whole filesystem (the
                       // user's home, say), a millisecond at best and seconds on a busy disk, for
                       // a layer about to be deleted. It leaves a marker in the work dir that
                       // state::remove_volatile_marker takes away.
                       std::string(host.discard ? ",volatile" : "");
    if (data.size() >= 4096)
        fail("too many image layers for one overlay mount", std::to_string(host.lower.size()) + " layers",
             "flatten the image (e.g. with a multi-stage build) to fewer layers");
    if (::chdir(cwd.c_str()) != 0) throw_errno("cannot enter the layer store", cwd);
    trace("init: overlay mounting");
    if (::mount("overlay", host.target.c_str(), "overlay", 0, data.c_str()) != 0)
        throw_errno("cannot mount the overlay root", host.upper,
                    "overlayfs in a user namespace needs Linux 5.11 or later, and the writable layer must be on a "
                    "filesystem overlayfs supports (not overlayfs itself); see 'hutch doctor'");
    trace("init: overlay mounted");
    if (mounted) mounted();
    pivot_into(host.target);
}

// Opens a bind's or tmpfs's destination in the new root (O_PATH), making what is missing of it
// as docker does. The image's symlinks are followed inside the root; magic links are not: a
// /proc/self/fd/N or /proc/self/cwd there would lead to the init's host directories.
static UniqueFd open_destination(const std::string& path, bool directory, const char* what) {
    UniqueFd root_fd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) throw_errno("cannot open the sandbox's root");
    const int root = root_fd.get();
    auto resolve = [root](const std::string& p, int flags) {
        struct open_how how {};
        how.flags = static_cast<uint64_t>(flags | O_PATH | O_CLOEXEC);
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        return UniqueFd(static_cast<int>(::syscall(SYS_openat2, root, p.c_str(), &how, sizeof how)));
    };
    UniqueFd parent(::dup(root));
    std::string cur;
    size_t pos = 0;
    while (pos < path.size()) {
        size_t next = path.find('/', pos);
        if (next == std::string::npos) next = path.size();
        const std::string name = path.substr(pos, next - pos);
        pos = next + 1;
        if (name.empty()) continue;
        cur += "/" + name;
        const bool last = pos > path.size();
        const bool want_dir = !last || directory;
        UniqueFd fd = resolve(cur, want_dir ? O_DIRECTORY : 0);
        if (!fd && errno == ENOENT) {
            int rc = want_dir ? ::mkdirat(parent.get(), name.c_str(), 0755)
                              // mknod, not open: a FIFO from the image would block an open for
                              // ever, and a big file would be copied up for nothing.
                              : ::mknodat(parent.get(), name.c_str(), S_IFREG | 0644, 0);
            if (rc != 0 && !want_dir && errno == EPERM) {  // vfat, exfat, some FUSE: no mknod
                rc = ::openat(parent.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (rc >= 0) rc = ::close(rc);
            }
            if (rc != 0 && errno != EEXIST) throw_errno("cannot create mount point", cur);
            fd = resolve(cur, want_dir ? O_DIRECTORY : 0);
        }
        if (!fd && errno == ELOOP)
            fail(std::string("the ") + what + " destination leads through a link of /proc or a symbolic link loop",
                 cur, "a symbolic link in the sandbox points it there; remove the link, or pick another container path");
        if (!fd) throw_errno(std::string("cannot open the ") + what + " destination", cur);
        parent = std::move(fd);
    }
    // Followed to where it leads, it must be neither the root nor in /proc (run.cpp checks its
    // text): a symlink the sandbox left in its layer could otherwise turn a bind given at
    // `create` onto them at a later `start`.
    struct statfs fs;
    struct stat st, top;
    bool in_proc = ::fstatfs(parent.get(), &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
    bool is_root = ::fstat(parent.get(), &st) == 0 && ::fstat(root, &top) == 0 && st.st_dev == top.st_dev &&
                   st.st_ino == top.st_ino;
    if (in_proc || is_root)
        fail(std::string("the ") + what + " destination leads to " + (in_proc ? "/proc" : "/"), path,
             "a symbolic link in the sandbox points it there; remove the link, or pick another container path");
    return parent;
}

void populate(const SandboxSpec& spec, Detached& detached, bool tty_gid_mapped,
              const std::function<void()>& enter_network) {
    ensure_fixed_mountpoint("/proc");
    attach(detached.proc.get(), "/proc");
    ensure_fixed_mountpoint("/dev");
    setup_dev(detached, tty_gid_mapped, spec.process.tty);
    // What is not under /sys first, while the network namespace may still be in the making (the
    // read-only paths are all in /proc).
    auto in_sys = [](const std::string& path) { return path.rfind("/sys/", 0) == 0; };
    std::string empty_dir;
    for (const auto& p : masked_paths())
        if (!in_sys(p)) mask(p, empty_dir);
    for (const auto& p : readonly_paths()) make_readonly(p);
    ensure_fixed_mountpoint("/sys");
    attach(detached.host_sys.get(), "/sys");
    if (enter_network) enter_network();
    // A sysfs shows the network devices of its maker's namespace: made only now.
    UniqueFd sys;
    try {
        sys = new_fs("sysfs", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    } catch (const Error& e) {
        // Refused where the host's /sys is not fully visible itself (masked, in a container):
        // its read-only view stays, as runc and crun fall back to. Any other failure is one.
        if (e.error_number() != EPERM) throw;
    }
    if (sys) {
        if (::umount2("/sys", MNT_DETACH | UMOUNT_NOFOLLOW) != 0) throw_errno("cannot detach the host's /sys", "/sys");
        attach(sys.get(), "/sys");
    }
    // Held open, the detached tree would stay alive in the init for the sandbox's life.
    detached.host_sys.reset();
    trace("init: sys");
    for (const auto& p : masked_paths())
        if (in_sys(p)) mask(p, empty_dir);
    for (size_t i = 0; i < spec.binds.size(); ++i) {
        const auto& b = spec.binds[i];
        UniqueFd dest = open_destination(b.destination, is_dir_fd(detached.binds[i].get()), "-v");
        if (::move_mount(detached.binds[i].get(), "", dest.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
            throw_errno("cannot attach mount", b.destination);
    }
    for (const auto& t : spec.tmpfs) {
        TmpfsOptions o = tmpfs_options(t.options, t.destination);
        UniqueFd dest = open_destination(t.destination, true, "--tmpfs");
        // On the very directory opened, through the sandbox's own /proc.
        mount_tmpfs("/proc/self/fd/" + std::to_string(dest.get()), o.flags, o.data, t.destination);
    }
}

TmpfsOptions tmpfs_options(const std::string& options, const std::string& shown) {
    static const std::pair<const char*, unsigned long> kSet[] = {
        {"ro", MS_RDONLY},          {"noexec", MS_NOEXEC},       {"noatime", MS_NOATIME},
        {"nodiratime", MS_NODIRATIME}, {"relatime", MS_RELATIME}, {"strictatime", MS_STRICTATIME},
        {"sync", MS_SYNCHRONOUS},   {"dirsync", MS_DIRSYNC},     {"lazytime", MS_LAZYTIME}};
    static const std::pair<const char*, unsigned long> kClear[] = {
        {"rw", MS_RDONLY}, {"exec", MS_NOEXEC}, {"atime", MS_NOATIME}, {"diratime", MS_NODIRATIME},
        {"norelatime", MS_RELATIME}, {"async", MS_SYNCHRONOUS}, {"nolazytime", MS_LAZYTIME}};
    static const char* const kInert[] = {"suid", "nosuid", "dev", "nodev"};
    // tmpfs' own parameters (Documentation/filesystems/tmpfs.rst); the kernel judges their values.
    static const char* const kData[] = {"size",     "mode",     "uid",      "gid",
                                        "nr_inodes", "nr_blocks", "mpol",    "huge",
                                        "inode64",  "inode32",  "noswap",   "quota",
                                        "usrquota", "grpquota", "usrquota_block_hardlimit",
                                        "usrquota_inode_hardlimit", "grpquota_block_hardlimit",
                                        "grpquota_inode_hardlimit", "casefold", "strict_encoding"};
    TmpfsOptions o;
    o.flags = MS_NOSUID | MS_NODEV;
    bool mode = false;
    std::istringstream in(options);
    std::string item;
    while (std::getline(in, item, ',')) {
        if (item.empty()) continue;
        auto is = [&item](const char* name) { return item == name; };
        if (auto f = std::find_if(std::begin(kSet), std::end(kSet), [&](auto& p) { return is(p.first); });
            f != std::end(kSet)) {
            o.flags |= f->second;
        } else if (auto c = std::find_if(std::begin(kClear), std::end(kClear), [&](auto& p) { return is(p.first); });
                   c != std::end(kClear)) {
            o.flags &= ~c->second;
        } else if (std::find_if(std::begin(kInert), std::end(kInert), is) == std::end(kInert)) {
            const std::string key = item.substr(0, item.find('='));
            if (std::find(std::begin(kData), std::end(kData), key) == std::end(kData))
                fail("invalid --tmpfs option", shown + ":" + options,
                     "'" + item + "' is none of ro, rw, exec, noexec, size=, mode=, uid=, gid=, nr_inodes=");
            mode = mode || key == "mode";
            o.data += (o.data.empty() ? "" : ",") + item;
        }
    }
    if (!mode) o.data = "mode=1777" + (o.data.empty() ? "" : "," + o.data);
    return o;
}

void bind_console(int slave_fd) {
    UniqueFd tree(::open_tree(slave_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
    if (!tree) throw_errno("cannot bind the terminal", "/dev/console");
    attach(tree.get(), "/dev/console");
}

void finish(const SandboxSpec& spec) {
    if (spec.read_only_root) set_attr(AT_FDCWD, "/", 0, MOUNT_ATTR_RDONLY, "/");
}

}  // namespace hutch::mounts
