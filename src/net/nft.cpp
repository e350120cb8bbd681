#include "hutch/net/nft.hpp"

#include <dlfcn.h>

#include <utility>

#include "hutch/core/error.hpp"

namespace hutch::net {

// The few entry points hutch uses, declared here rather than taken from <nftables/libnftables.h>:
// the build then needs no nftables headers, and only the run-time library is a dependency.
struct Nft::Api {
    void* (*ctx_new)(unsigned flags);
    void (*ctx_free)(void* ctx);
    int (*buffer_output)(void* ctx);
    int (*buffer_error)(void* ctx);
    const char* (*get_error_buffer)(void* ctx);
    int (*run_cmd_from_buffer)(void* ctx, const char* buf);
};

namespace {

constexpr const char* kLibrary = "libnftables.so.1";

template <typename F>
void bind(void* lib, const char* name, F* out) {
    void* sym = ::dlsym(lib, name);
    if (!sym) fail("libnftables lacks a function hutch needs", name, "install nftables 0.9.3 or later");
    *out = reinterpret_cast<F>(sym);
}

const Nft::Api* load() {
    static Nft::Api api;
    static bool loaded = false;
    if (loaded) return &api;
    void* lib = ::dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        fail("cannot load libnftables for --network egress", ::dlerror(),
             "install the nftables package (Debian: apt-get install nftables)");
    bind(lib, "nft_ctx_new", &api.ctx_new);
    bind(lib, "nft_ctx_free", &api.ctx_free);
    bind(lib, "nft_ctx_buffer_output", &api.buffer_output);
    bind(lib, "nft_ctx_buffer_error", &api.buffer_error);
    bind(lib, "nft_ctx_get_error_buffer", &api.get_error_buffer);
    bind(lib, "nft_run_cmd_from_buffer", &api.run_cmd_from_buffer);
    loaded = true;
    return &api;
}

}  // namespace

Nft Nft::open() {
    Nft n;
    n.api_ = load();
    n.ctx_ = n.api_->ctx_new(0);
    if (!n.ctx_) fail("cannot create an nftables context", "nft_ctx_new", "is the nf_tables module available?");
    // Buffered: nothing of libnftables ever reaches the sandbox's stdout or stderr.
    n.api_->buffer_output(n.ctx_);
    n.api_->buffer_error(n.ctx_);
    return n;
}

Nft::Nft(Nft&& o) noexcept : api_(std::exchange(o.api_, nullptr)), ctx_(std::exchange(o.ctx_, nullptr)) {}

Nft& Nft::operator=(Nft&& o) noexcept {
    if (this != &o) {
        if (ctx_) api_->ctx_free(ctx_);
        api_ = std::exchange(o.api_, nullptr);
        ctx_ = std::exchange(o.ctx_, nullptr);
    }
    return *this;
}

Nft::~Nft() {
    if (ctx_) api_->ctx_free(ctx_);
}

std::string Nft::try_run(const std::string& commands) const {
    if (api_->run_cmd_from_buffer(ctx_, commands.c_str()) == 0) return {};
    std::string msg = api_->get_error_buffer(ctx_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    return msg.empty() ? "nft reported an error without a message" : msg;
}

void Nft::run(const std::string& commands, const std::string& what) const {
    std::string err = try_run(commands);
    if (!err.empty()) fail("cannot " + what + " in the sandbox's network namespace", err,
                           "the kernel needs nf_tables with inet tables, sets with timeouts, reject and NFLOG");
}

}  // namespace hutch::net
