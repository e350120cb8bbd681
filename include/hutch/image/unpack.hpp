// Unpacking layer tarballs (libarchive), hostile by default. Everything in a layer is untrusted:
// entries are created relative to directory fds with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so no
// path, symlink or hardlink of the layer can make hutch write outside the layer's directory.
// Lives in hutch-image (with libarchive), never in the `hutch run` binary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hutch/image/store.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::image {

struct UnpackLimits {
    uint64_t max_bytes = 64ULL << 30;  // uncompressed size of one layer
    double max_ratio = 1000.0;         // uncompressed / compressed; beyond this it is a bomb...
    // ...once this much has come out: gzip reaches ~1000:1 on zero-filled files, which real
    // layers have, so small layers are held to max_bytes alone.
    uint64_t ratio_applies_above = 256ULL << 20;
};

// Whether `out` bytes made from `in` compressed ones are a decompression bomb by `limits`, and
// the ratio as their messages name it ("1000").
bool exceeds_ratio(const UnpackLimits& limits, uint64_t out, uint64_t in);
std::string ratio_text(const UnpackLimits& limits);

struct UnpackResult {
    std::string diff_id;                       // sha256 of the uncompressed tar stream
    uint64_t bytes = 0;                        // uncompressed bytes read
    std::vector<std::string> skipped_devices;  // device nodes that could not be created
};

// Extracts the (gzip, zstd or uncompressed) tar `blob_path` into the empty directory `dest`.
// Applies .wh. whiteouts as overlayfs whiteouts and .wh..wh..opq as the user.overlay.opaque
// xattr; keeps modes (setuid/setgid included), owners (as the calling process can map them),
// mtimes, symlinks, hardlinks, fifos, sparse files and xattrs where permitted. Throws hutch::Error
// naming the entry on anything hostile; the caller removes `dest` then.
UnpackResult unpack_layer(const std::string& blob_path, const std::string& dest, const UnpackLimits& limits,
                          int64_t compressed_size);

// Makes sure the store has the layer `diff_id`, unpacking blob `blob_digest` if needed: in a user
// namespace with `map` (so files get the owners the sandbox will see), into a temp dir, checked
// against diff_id, then published. Safe against concurrent callers (the layer lock).
void ensure_layer(Store& store, const IdMap& map, const std::string& blob_digest, const std::string& diff_id,
                  const UnpackLimits& limits);

}  // namespace hutch::image
