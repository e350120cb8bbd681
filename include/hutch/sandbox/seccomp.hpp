// Seccomp: Docker-format JSON profiles compiled (with libseccomp) to a BPF program for the native
// architecture. Compiling costs milliseconds, so programs are cached on disk by a digest of their inputs.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace hutch::seccomp {

// A classic-BPF seccomp program: raw `struct sock_filter` array bytes.
struct Program {
    std::string bytes;
    bool empty() const { return bytes.empty(); }
};

// Compiles a Docker-format profile. `source` names the profile in errors. `caps` are the
// capability names ("CAP_SYS_ADMIN" form) the process will hold, for rules' includes/excludes.caps.
// Throws hutch::Error naming the offending rule or key on malformed input.
Program compile(const std::string& json_text, const std::string& source, const std::vector<std::string>& caps);

// Reads and compiles `path`, reusing `<cache_dir>/<sha256 of (profile, caps, arch)>.bpf` when present.
// An empty cache_dir disables the cache.
Program load(const std::string& path, const std::vector<std::string>& caps, const std::string& cache_dir);

// A program as kept on disk (the cache, a persistent sandbox's state): its instructions followed
// by their SHA-256, so that damage shows even where the size still looks like a program.
std::string seal(const std::string& program);
// The instructions of sealed data, or nullopt when damaged or no program (empty only when
// `allow_empty`).
std::optional<std::string> unseal(const std::string& data, bool allow_empty = false);

// Installs the program on the calling thread (seccomp(SECCOMP_SET_MODE_FILTER)). no_new_privs must be set.
void install(const Program& program);

// The filter of a persistent sandbox's init once it is set up: it keeps every capability in the
// sandbox's user namespace and must stay dumpable (`hutch exec` of a user joins it through a
// pidfd, which the kernel checks like a ptrace), so a command given CAP_SYS_PTRACE can make it
// run system calls. None of them may change the sandbox's mounts or namespaces, or trace.
void confine_init();

}  // namespace hutch::seccomp
