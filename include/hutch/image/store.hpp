// The image store, shared by run, create and (later) the API server. Layout under <storage>:
//   blobs/sha256/<hex>           content-addressed blobs (manifests, configs, compressed layers);
//                                verified when written and whenever read as trusted
//   layers/<hex of diff_id>/     one unpacked layer per diff_id, shared by every image using it;
//                                whiteouts are overlayfs whiteouts (0:0 char devices, and the
//                                user.overlay.opaque xattr) so layers stack as overlay lowerdirs
//   images.json                  names and ids of images (atomic rewrite under images.lock)
//   tmp/                         partial downloads and unpacks, named <purpose>-<pid>-<start
//                                time>-<random>; prune() sweeps those whose process is gone
//   locks/                       blob-<hex>.lock, layer-<hex>.lock, and writers.lock: every Store
//                                object that writes (blobs, temp dirs, blob/layer locks) holds
//                                writers.lock shared from its first write until it is destroyed,
//                                and prune() takes it exclusive, so a prune never deletes what a
//                                pull has fetched but not yet recorded. Keep writing Store objects
//                                as short-lived as the pull they serve.
//   images.lock                  flock for images.json (shared to read, exclusive to rewrite)
// Every write goes to tmp/ first and is renamed into place, so a killed pull or unpack leaves no
// half layer and no dangling name. Per-blob and per-layer locks make two concurrent pulls of
// images sharing layers download and unpack each layer once.
// When the caller is root, layers/ and the layer directories are searchable by others (0711 or
// the layer's own mode): root's sandboxes run as an unprivileged id range that looks its layers
// up by path. Everything else is 0700.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hutch/core/lock.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::image {

// The parts of an image config (application/vnd.oci.image.config.v1+json) that hutch uses.
struct Config {
    std::string os, architecture, variant;
    std::vector<std::string> entrypoint, cmd, env;
    std::string working_dir, user;
    std::vector<std::string> diff_ids;  // bottom → top
    std::string created;
    // Parses and validates (diff_ids must be sha256 digests); throws hutch::Error naming `source`.
    static Config parse(const std::string& json, const std::string& source);
};

struct ImageRecord {
    std::string id;               // the config digest
    std::string manifest_digest;  // the platform manifest this image came from
    std::vector<std::string> names;  // normalized references, e.g. docker.io/library/busybox:latest
    std::vector<std::string> layers; // blob digests of the (compressed) layers, bottom → top
    std::vector<std::string> diff_ids;
    int64_t size = 0;             // sum of the compressed layer sizes
    std::string created;
};

struct DiskUsage {
    int64_t images = 0, image_bytes = 0;
    int64_t layers = 0, layer_bytes = 0, unreferenced_layers = 0;
    int64_t blobs = 0, blob_bytes = 0;
    // What prune() would free: dangling (nameless) images, and the layers and blobs that no
    // other image references once those are gone.
    int64_t dangling_images = 0;
    int64_t unreferenced_layer_bytes = 0;
    int64_t unreferenced_blobs = 0, unreferenced_blob_bytes = 0;
};

// What remove() did, for `rmi` to report like docker.
struct Removal {
    std::vector<std::string> untagged;  // normalized names taken away
    std::vector<std::string> deleted;   // ids of the image records deleted
};

class Store {
public:
    explicit Store(const Paths& paths);

    const std::string& root() const { return root_; }

    // Blobs.
    bool has_blob(const std::string& digest) const;
    std::string blob_path(const std::string& digest) const;
    // Reads a blob (at most max_bytes) and checks its digest; throws on mismatch.
    std::string read_blob(const std::string& digest, size_t max_bytes = 16 << 20) const;

    // Streams data into tmp/ while hashing; commit() checks digest and size, then renames into
    // blobs/. Destroyed without commit, it removes its temp file.
    class BlobWriter {
    public:
        BlobWriter(BlobWriter&&) noexcept;
        BlobWriter& operator=(BlobWriter&&) noexcept;
        ~BlobWriter();
        void write(const void* data, size_t n);
        int64_t written() const;
        // expected_size < 0: unknown. Returns the digest.
        std::string commit(const std::string& expected_digest, int64_t expected_size = -1);

    private:
        friend class Store;
        BlobWriter();
        struct Impl;
        Impl* impl_;
    };
    BlobWriter begin_blob();
    // Convenience for small blobs; returns the digest.
    std::string put_blob(const std::string& bytes, const std::string& expected_digest = {});

    // A lock held while a blob or layer is fetched or unpacked: the second of two concurrent
    // pulls waits here and then finds the work done.
    FileLock lock_blob(const std::string& digest) const;
    FileLock lock_layer(const std::string& diff_id) const;

    // Layers.
    bool has_layer(const std::string& diff_id) const;
    std::string layer_path(const std::string& diff_id) const;
    // A fresh empty directory in tmp/ for unpacking, and the rename that publishes it.
    std::string new_temp_dir(const std::string& purpose) const;
    void publish_layer(const std::string& temp_dir, const std::string& diff_id);

    // Images.
    // Records an image whose manifest blob, config blob, layer blobs and unpacked layers (the
    // config's diff_ids) are all present; throws naming what is missing. `names` are normalized and
    // added (and moved away from any image that had them, which may leave it nameless).
    ImageRecord add_image(const std::string& manifest_digest, const std::string& config_digest,
                          const std::vector<std::string>& layer_digests, const std::vector<std::string>& names);
    // By name ("busybox", "localhost:5000/x:1", normalized or familiar; NAME@DIGEST also matches
    // an image of that repository pulled from the manifest DIGEST), full id, or id prefix (≥ 4 hex,
    // with or without "sha256:"). A name wins over an id prefix, as in docker. Throws on an
    // ambiguous prefix, and on text that is neither a valid reference nor a hex prefix.
    std::optional<ImageRecord> find(const std::string& name_or_id) const;
    std::vector<ImageRecord> list() const;
    Config config(const ImageRecord& image) const;
    void tag(const std::string& source, const std::string& target);
    // By name: removes that name, and the image when it was its last. By id (or id prefix): removes
    // the image and all its names; an image named in several repositories needs `force` (docker's
    // rule). Throws "no such image" when nothing matches. Returns the ids of removed images.
    // Layers and blobs stay until prune().
    std::vector<std::string> remove(const std::string& name_or_id, bool force);
    Removal remove_detailed(const std::string& name_or_id, bool force);
    // Deletes dangling (nameless) images like `docker image prune`, then the layers and blobs no
    // image references, and stale tmp/ entries. Fails, deleting nothing, while another Store object
    // is writing (a pull or load in progress). Returns the bytes freed.
    int64_t prune();
    DiskUsage disk_usage() const;

    // The overlay lowerdir stack for an image: layer paths, top first. Throws if a layer is missing.
    std::vector<std::string> lower_dirs(const ImageRecord& image) const;
    // Shared locks on the image's layers, which prune() leaves alone while they are held: a run
    // holds them from before its mount to its end (a persistent sandbox's config names its
    // layers instead). Throws when a layer is gone or being removed.
    std::vector<FileLock> pin_layers(const ImageRecord& image) const;

private:
    // Takes writers.lock shared for this object (and its copies) if not held yet.
    void hold_writers_lock() const;

    std::string root_;
    mutable std::shared_ptr<FileLock> writers_lock_;
};

}  // namespace hutch::image
