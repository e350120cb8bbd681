// libnftables, loaded with dlopen only by sandboxes with egress: `hutch run` links no part of it
// (every shared library costs start-up time on the hot path, and --network none never needs it).
#pragma once

#include <string>

namespace hutch::net {

class Nft {
public:
    // Loads the library and makes a context. Call while the host's filesystem is still visible
    // (before pivot_root): the library, its dependencies and its configuration files live there,
    // and nothing of the sandbox's image should be read by a process that holds CAP_NET_ADMIN.
    // The context's netlink socket talks to the caller's network namespace.
    static Nft open();
    Nft() = default;
    Nft(Nft&& o) noexcept;
    Nft& operator=(Nft&& o) noexcept;
    Nft(const Nft&) = delete;
    Nft& operator=(const Nft&) = delete;
    ~Nft();

    explicit operator bool() const { return ctx_ != nullptr; }
    // Runs nft commands as one transaction; throws with nft's own message when they fail.
    void run(const std::string& commands, const std::string& what) const;
    // Same, but returns the error message instead of throwing (empty on success).
    std::string try_run(const std::string& commands) const;

    struct Api;  // the library's entry points (nft.cpp)

private:
    const Api* api_ = nullptr;
    void* ctx_ = nullptr;
};

}  // namespace hutch::net
