#include "hutch/core/paths.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch_config.h"

namespace hutch {

static std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? std::string(v) : std::string();
}

static std::string home_dir() {
    std::string home = env_or_empty("HOME");
    if (!home.empty()) return home;
    if (struct passwd* pw = ::getpwuid(::getuid())) return pw->pw_dir;
    fail("cannot find the home directory", "uid " + std::to_string(::getuid()),
         "set HOME or XDG_DATA_HOME, or pass --root DIR");
}

Paths Paths::resolve(const std::string& root_override) {
    Paths p;
    if (!root_override.empty()) {
        // Absolute and lexically normal: the same --root names the same state wherever hutch is
        // started, however it is spelled (sandboxes' cgroups are named after it).
        p.storage = fs::lexical_normal(fs::absolute(root_override));
        p.state = p.storage + "/run";
        return p;
    }
    if (::getuid() == 0) {
        p.state = "/run/hutch";
        p.storage = "/var/lib/hutch";
        return p;
    }
    std::string runtime = env_or_empty("XDG_RUNTIME_DIR");
    struct stat st;
    // A runtime dir that is not ours (a stale variable after su) must not be used.
    if (runtime.empty() || ::stat(runtime.c_str(), &st) != 0 || st.st_uid != ::getuid()) {
        p.state = "/tmp/hutch-run-" + std::to_string(::getuid());
        p.state_in_shared_tmp = true;
    } else {
        p.state = runtime + "/hutch";
    }
    std::string data = env_or_empty("XDG_DATA_HOME");
    if (data.empty()) data = home_dir() + "/.local/share";
    p.storage = data + "/hutch";
    return p;
}

// `mode` is 0700, or for root's storage 0710 (the top, with the sandboxes' group) and 0711 below:
// root's sandboxes run as an unprivileged range that must search (never list) its way to its
// layers.
// `exact`: the path itself must be the directory (lstat: a symbolic link is refused).
// Returns true if it was created now. `group`: the group it must belong to (-1: any).
static bool ensure_private_dir(const std::string& path, mode_t mode, bool exact = false,
                               gid_t group = static_cast<gid_t>(-1)) {
    struct stat st;
    bool created = false;
    auto look = [&] { return exact ? ::lstat(path.c_str(), &st) : ::stat(path.c_str(), &st); };
    // One stat in the usual case, where it is there already.
    if (look() != 0 || (!exact && !S_ISDIR(st.st_mode))) {
        created = fs::make_dirs(path, mode);
        if (look() != 0) throw_errno("cannot stat", path);
    }
    if (!S_ISDIR(st.st_mode))
        fail("not a directory of its own", path,
             "another user may have made it first; remove it, or set XDG_RUNTIME_DIR or pass --root DIR");
    if (st.st_uid != ::geteuid())
        fail("directory is owned by another user", path, "pass --root DIR with a directory of your own");
    if (group != static_cast<gid_t>(-1) && st.st_gid != group && ::chown(path.c_str(), static_cast<uid_t>(-1), group) != 0)
        throw_errno("cannot chown", path);
    if ((st.st_mode & 07777) != mode && ::chmod(path.c_str(), mode) != 0) throw_errno("cannot chmod", path);
    return created;
}

void Paths::ensure(gid_t store_group) const {
    const bool root = ::geteuid() == 0;
    // Storage first: with --root, state lives inside it, and creating state first would make
    // the missing parents 0700, out of reach of root's sandboxes.
    ensure_private_dir(storage, root ? 0710 : 0700, false, root ? store_group : static_cast<gid_t>(-1));
    ensure_private_dir(state, 0700, state_in_shared_tmp);
    ensure_private_dir(sandboxes_state(), 0700);
    // Every run creates and deletes a writable layer and overlayfs' work files in it. On ext4
    // without a journal, a new inode is searched for past the free ones of its block group that
    // were deleted in the last minutes, so packed into one group, runs slowed each other down
    // (overlayfs' mount took 0.75 ms instead of 0.3 ms after some hundred runs): spread them.
    if (ensure_private_dir(sandboxes_storage(), root ? 0711 : 0700)) fs::mark_top_of_hierarchies(sandboxes_storage());
    if (root) fs::require_searchable(storage, "the store", false);
}

std::string policy_dir() {
    std::string dir = env_or_empty("HUTCH_POLICY_DIR");
    return dir.empty() ? std::string(HUTCH_POLICY_DIR) : dir;
}


}  // namespace hutch
