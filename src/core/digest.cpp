#include "hutch/core/digest.hpp"

// OpenSSL's SHA256_* functions, not EVP: in OpenSSL 3 the first EVP digest fetches providers and
// builds name tables, about 5 million instructions (1.5 ms here) that every short-lived hutch
// process would pay; the low-level functions hash directly. They are deprecated, not removed.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "hutch/core/error.hpp"

namespace hutch::digest {

namespace {

constexpr const char kPrefix[] = "sha256:";
constexpr size_t kPrefixLen = sizeof kPrefix - 1;
constexpr size_t kHexLen = 64;

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

struct Sha256::Impl {
    SHA256_CTX ctx;
    bool finished = false;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
    if (SHA256_Init(&impl_->ctx) != 1) fail("cannot initialise sha256", "OpenSSL", "check the libcrypto installation");
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t n) {
    if (impl_->finished) fail("sha256 updated after finish()", "internal error");
    if (n == 0) return;
    if (SHA256_Update(&impl_->ctx, data, n) != 1) fail("sha256 update failed", "OpenSSL");
}

std::string Sha256::finish() {
    if (impl_->finished) fail("sha256 finished twice", "internal error");
    unsigned char md[SHA256_DIGEST_LENGTH];
    const unsigned int len = SHA256_DIGEST_LENGTH;
    if (SHA256_Final(md, &impl_->ctx) != 1) fail("sha256 finish failed", "OpenSSL");
    impl_->finished = true;
    static const char hexdigits[] = "0123456789abcdef";
    std::string out = kPrefix;
    for (unsigned int i = 0; i < len; ++i) {
        out += hexdigits[md[i] >> 4];
        out += hexdigits[md[i] & 0xf];
    }
    return out;
}

std::string of(const std::string& data) {
    Sha256 h;
    h.update(data.data(), data.size());
    return h.finish();
}

bool valid(const std::string& digest) {
    if (digest.size() != kPrefixLen + kHexLen || digest.compare(0, kPrefixLen, kPrefix) != 0) return false;
    for (size_t i = kPrefixLen; i < digest.size(); ++i)
        if (!is_lower_hex(digest[i])) return false;
    return true;
}

void check(const std::string& digest, const std::string& what) {
    if (!valid(digest))
        fail("invalid digest in " + what, "'" + digest + "'", "expected sha256: followed by 64 lowercase hex digits");
}

std::string hex(const std::string& digest) {
    check(digest, "digest");
    return digest.substr(kPrefixLen);
}

}  // namespace hutch::digest
