// The sandbox's filesystem view. Order matters and is the reason this file exists:
//  1. make every inherited mount private, so nothing we do propagates back to the host;
//  2. create detached mounts (proc, sysfs, device nodes, bind sources) while the host's tree is
//     still reachable: procfs and sysfs may only be mounted in a user namespace while a full proc
//     is visible, and bind sources are host paths;
//  3. mount the overlay root (lower never written, upper in the sandbox's scratch dir) and
//     pivot_root into it, detaching the old root: from here no host path can be named at all;
//  4. attach everything inside the new root, where symlinks planted by the image cannot point
//     outside it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "hutch/core/fd.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::mounts {

// What the front end prepares before the namespaces exist. The overlay's layers are passed as
// paths, not fds: overlayfs only accepts layers reachable in the mounting process's own mount
// namespace, so the sandbox looks them up itself (the store is searchable by the sandbox's root).
struct HostSide {
    std::vector<std::string> lower;  // read-only layers, top first
    std::string upper;   // the sandbox's writable layer; empty: a read-only bind of the one layer
    std::string work;    // overlayfs' work dir
    std::string target;  // where the overlay is mounted before pivot_root
    // There is a writable layer, and it is thrown away at the end (`hutch run`): mounted
    // volatile, so that overlayfs does not sync the whole filesystem under it when the sandbox ends.
    bool discard = false;
    std::vector<UniqueFd> binds;  // detached bind trees (root: opened by the front end) or empty
};

// Detached mounts created in step 2.
struct Detached {
    UniqueFd proc;
    UniqueFd host_sys;  // read-only, recursive: on /sys until the sandbox's own sysfs is made
    std::vector<std::pair<std::string, UniqueFd>> devices;  // name under /dev → detached bind
    std::vector<UniqueFd> binds;                              // one per spec.binds entry
};

// Step 1.
void make_private();
// Step 2. `binds` are taken over from HostFds when the parent could open them.
Detached prepare(const SandboxSpec& spec, std::vector<UniqueFd> parent_binds);
// Opens detached clones of the spec's bind sources as the current credentials (used by the parent
// when it is root, by the sandbox otherwise).
std::vector<UniqueFd> open_bind_sources(const std::vector<BindMount>& binds);
// Root's sandboxes run as an unprivileged id range, so a --rootfs tree owned by the host's root
// would be read-only inside (its owners unmapped there). An idmapped mount of it through the
// sandbox's user namespace (`userns_fd`) shows the tree's uid N as uid N inside, which the
// writable layer then copies up from. Made by the front end (only root may idmap a host
// filesystem), read-only; invalid when the kernel or the filesystem cannot (overlayfs takes
// idmapped layers from Linux 5.19, tmpfs is idmapped from 6.3): the tree is then used as it is.
UniqueFd idmapped_tree(const std::string& dir, int userns_fd);
// In the init, before step 3: attaches that tree over `dir` in the sandbox's mount namespace,
// where the overlay then finds it by its usual path. False when it could not.
bool attach_over(int tree_fd, const std::string& dir);
// Step 3. `mounted` runs once the root is mounted, before the pivot.
void enter_overlay_root(const HostSide& host, const std::function<void()>& mounted = {});

// Whether a sandbox can do without a writable layer: a --read-only run of one layer that already
// has every mount point the sandbox needs (nothing may be created in the base), and whose
// processes may not remount / (`may_remount`: CAP_SYS_ADMIN). Its root is then a read-only bind of
// that layer, with no writable layer and no overlay to set up.
bool read_only_bind_will_do(const SandboxSpec& spec, bool may_remount);
// Step 4. `tty_gid_mapped`: gid 5 exists in the namespace, so devpts can give ptys group tty.
// `enter_network` runs after /proc and /dev, before /sys: a sysfs shows the network devices of
// the namespace its maker was in, and the kernel refuses one made in a namespace the sandbox does
// not own, so the init must be in its own network namespace by then.
void populate(const SandboxSpec& spec, Detached& detached, bool tty_gid_mapped,
              const std::function<void()>& enter_network);
// With -t, as docker does: the terminal's slave (an open fd) is bound over /dev/console.
void bind_console(int slave_fd);

// A --tmpfs's options as docker takes them: mount flags (ro, rw, exec, noexec, atime and sync
// flags; suid and dev, which change nothing under no_new_privs and a user namespace) and the
// rest for tmpfs itself (size, mode, uid, gid, nr_inodes, ...). An error names one it does not know.
struct TmpfsOptions {
    unsigned long flags = 0;  // MS_NOSUID | MS_NODEV always
    std::string data;         // mode=1777 unless given
};
TmpfsOptions tmpfs_options(const std::string& options, const std::string& shown);
// Last: make / read-only when asked (after everything that needs to create mount points).
void finish(const SandboxSpec& spec);

// OCI's default masked and read-only paths.
const std::vector<std::string>& masked_paths();
const std::vector<std::string>& readonly_paths();

}  // namespace hutch::mounts
