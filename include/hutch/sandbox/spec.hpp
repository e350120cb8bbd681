// SandboxSpec: everything a sandbox is made of, as plain data. Front ends (CLI, API, agent) fill it;
// the launcher turns it into namespaces, mounts and credentials. No behaviour lives here.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <string>
#include <vector>

namespace hutch {

// One contiguous id mapping line: ids [inside, inside+count) map to [outside, outside+count).
struct IdRange {
    uint32_t inside = 0;
    uint32_t outside = 0;
    uint32_t count = 0;
};

struct IdMap {
    std::vector<IdRange> uids;
    std::vector<IdRange> gids;
    // True when the maps need newuidmap/newgidmap (an unprivileged caller with subordinate ids).
    bool use_helpers = false;
    // Unprivileged single-id maps require setgroups to be denied first.
    bool deny_setgroups = false;

    bool maps_uid(uint32_t inside) const;
    bool maps_gid(uint32_t inside) const;
    // Host id that appears as `inside` in the sandbox, if mapped.
    std::optional<uint32_t> host_uid(uint32_t inside) const;
    std::optional<uint32_t> host_gid(uint32_t inside) const;
    // Who owns a sandbox's directories on the host: its root, or the caller where 0 is unmapped.
    std::pair<uint32_t, uint32_t> root_owner() const;
};

struct BindMount {
    std::string source;       // host path, resolved as the caller
    std::string destination;  // path inside the sandbox
    bool read_only = false;
};

struct TmpfsMount {
    std::string destination;
    std::string options;  // extra mount options, e.g. "size=64m"
};

struct Rlimit {
    int resource = 0;
    uint64_t soft = 0;
    uint64_t hard = 0;
};

// cgroup v2 limits of a sandbox (all optional). Docker's flag names and meanings.
struct Resources {
    int64_t memory = 0;       // --memory, bytes (memory.max); 0: none
    int64_t memory_swap = 0;  // --memory-swap, memory + swap bytes; -1 unlimited swap; 0: not set
    int64_t pids = 0;         // --pids-limit (pids.max); 0: none
    double cpus = 0;          // --cpus (cpu.max quota over a 100 ms period); 0: none
    int64_t cpu_weight = 0;   // --cpu-weight 1..10000 (cpu.weight)
    int64_t io_weight = 0;    // --io-weight 1..10000 (io.weight)
    std::vector<std::string> device_read_bps;   // "DEVICE:BYTES", e.g. /dev/vda:10m (io.max rbps)
    std::vector<std::string> device_write_bps;  // (io.max wbps)

    bool empty() const {
        return memory == 0 && memory_swap == 0 && pids == 0 && cpus == 0 && cpu_weight == 0 && io_weight == 0 &&
               device_read_bps.empty() && device_write_bps.empty();
    }
};

// The process a sandbox runs (the first command, or an exec).
struct ProcessSpec {
    std::vector<std::string> argv;
    std::vector<std::string> env;  // KEY=VALUE
    std::string cwd;               // empty: the user's home or "/"
    std::string user;              // "UID[:GID]" or "NAME[:GROUP]"; empty: 0:0
    bool tty = false;
    bool stdin_open = false;  // -i: keep stdin; otherwise stdin is /dev/null
    std::vector<std::string> cap_add;
    std::vector<std::string> cap_drop;
    std::vector<Rlimit> rlimits;
};

struct SandboxSpec {
    std::string name;      // unique per user
    std::string hostname;  // defaults to name
    std::string rootfs;    // where the root comes from, as the user named it: an image or a directory
    std::vector<std::string> lower_dirs;  // the overlay's read-only layers, top first (never written)
    std::string image;                    // the image's id when the root is an image
    bool read_only_root = false;
    std::vector<BindMount> binds;
    std::vector<TmpfsMount> tmpfs;
    IdMap idmap;
    // Seccomp profile: a Docker-format JSON file, or "unconfined".
    std::string seccomp_profile;
    ProcessSpec process;
    Resources resources;
    // The limits came from a policy's defaults, not from flags: on a host without usable cgroup
    // v2 they are skipped with one warning instead of failing the run.
    bool limits_from_policy = false;
    bool stats = false;  // report peak memory, CPU time, pids and I/O at the end (--stats)
    // Seconds; 0 means no timeout.
    double timeout = 0;
    bool persistent = false;
};

}  // namespace hutch
