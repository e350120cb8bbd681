// sha256 digests in the OCI form "sha256:<64 lowercase hex>" (OpenSSL does the hashing).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace hutch::digest {

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* data, size_t n);
    // "sha256:<hex>"; the object cannot be updated afterwards.
    std::string finish();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

std::string of(const std::string& data);
// True for "sha256:" followed by exactly 64 lowercase hex digits.
bool valid(const std::string& digest);
// Throws hutch::Error naming `what` unless valid(digest).
void check(const std::string& digest, const std::string& what);
// The hex part.
std::string hex(const std::string& digest);

}  // namespace hutch::digest
