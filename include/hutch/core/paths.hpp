// Where hutch keeps things. Rootless: state under $XDG_RUNTIME_DIR/hutch (/tmp/hutch-run-UID
// without a runtime directory of our own), storage under $XDG_DATA_HOME/hutch. Root: /run/hutch
// and /var/lib/hutch. `--root DIR` puts both under DIR.
#pragma once

#include <string>

namespace hutch {

struct Paths {
    std::string state;    // live sandboxes' state files and locks (tmpfs is fine)
    std::string storage;  // base root filesystems and sandboxes' writable layers (on disk)
    // State is a directory of /tmp, where anyone may have made that name first: it must be a
    // real directory of ours, not a symbolic link.
    bool state_in_shared_tmp = false;

    // `root_override` is the --root flag (empty when not given).
    static Paths resolve(const std::string& root_override);

    std::string sandboxes_state() const { return state + "/sandboxes"; }
    std::string sandboxes_storage() const { return storage + "/sandboxes"; }
    std::string cache() const { return storage + "/cache"; }
    // Creates state and storage with mode 0700 (another user must not read them). Root's storage
    // is 0710 and belongs to `store_group`, the host gid of its sandboxes' root: they reach their
    // layers through it, and no other user reaches anything in it (the layers hold images'
    // files as the images have them: setuid programs, a world-writable /tmp).
    void ensure(gid_t store_group) const;
};

// The directory of shipped policies (the default seccomp profile lives under it).
std::string policy_dir();

}  // namespace hutch
