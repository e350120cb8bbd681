// Private to hutch-image: what registry.cpp, sources.cpp and pull.cpp share. An ImageSource is
// anything images come from (a registry, an OCI layout, an archive); pull.cpp drives it the same
// way for all of them: manifest (or index) → platform manifest → config → layer blobs.
#pragma once

#include <archive.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "hutch/core/digest.hpp"
#include "hutch/image/reference.hpp"
#include "hutch/image/store.hpp"
#include "hutch/image/transfer.hpp"
#include "archive_message.hpp"

namespace hutch::image::detail {

namespace media {
inline constexpr const char* kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr const char* kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr const char* kDockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr const char* kDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws";
inline constexpr const char* kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr const char* kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr const char* kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr const char* kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr const char* kDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr const char* kDockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar";
// Accept header for manifest requests: every manifest kind hutch understands, and nothing else.
inline constexpr const char* kManifestAccept =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";
}  // namespace media

// Manifests and configs are small; anything bigger is not what it claims to be.
inline constexpr int64_t kMaxManifestBytes = 4 << 20;
inline constexpr int64_t kMaxConfigBytes = 16 << 20;

// An OCI content descriptor (also the entries of an index, with their platform).
struct Descriptor {
    std::string media_type;
    std::string digest;
    int64_t size = -1;
    std::string os, architecture, variant;           // index entries only
    std::map<std::string, std::string> annotations;  // index entries of OCI layouts carry the tag
    // Validates digest and size; throws naming `where`.
    static Descriptor from_json(const nlohmann::json& j, const std::string& where);
    std::string platform() const;  // "os/arch[/variant]"
};

// A manifest or index as fetched: bytes exactly as served (the digest is over them).
struct RawManifest {
    std::string bytes;
    std::string media_type;  // normalised by classify()
    std::string digest;
};

// Settles the media type of `m` (served type, else the document's own mediaType field) and
// refuses schema 1, unknown types, and documents whose mediaType contradicts the served one.
// Returns true for an index/manifest list, false for an image manifest.
bool classify(RawManifest& m, const std::string& where);

struct ImageManifest {
    Descriptor config;
    std::vector<Descriptor> layers;
    static ImageManifest parse(const RawManifest& m, const std::string& where);
};

// Refuses layer media types hutch cannot (or must not) unpack, naming the layer.
void check_layer_media_type(const Descriptor& layer, const std::string& where);

// Receives the bytes of one blob on their way into the store: refuses more than the descriptor's
// size the moment it arrives, hashes, and reports progress.
class BlobSink {
public:
    BlobSink(Store::BlobWriter& writer, const Descriptor& d, std::string where);
    void write(const void* data, size_t n);
    int64_t received() const { return received_; }
    // Throws unless exactly the descriptor's bytes (size and digest) arrived.
    void verify();
    const Descriptor& descriptor() const { return d_; }
    const std::string& where() const { return where_; }

    std::function<void(int64_t)> on_progress;  // total bytes so far
    const std::atomic<bool>* cancel = nullptr;  // set when another download failed

private:
    Store::BlobWriter& writer_;
    Descriptor d_;
    std::string where_;
    digest::Sha256 hash_;
    int64_t received_ = 0;
};

// Checks that `data` is what `d` describes (size and digest); throws naming `where`.
void verify_bytes(const std::string& data, const Descriptor& d, const std::string& where);

class ImageSource {
public:
    virtual ~ImageSource() = default;
    // How messages name this source: "127.0.0.1:5000/x:1", "oci:/path:tag".
    virtual std::string display() const = 0;
    // The manifest or index the source names.
    virtual RawManifest root() = 0;
    // A manifest an index points to, verified against `d`.
    virtual RawManifest manifest(const Descriptor& d) = 0;
    // A small blob (the config), verified against `d`.
    virtual std::string small_blob(const Descriptor& d) = 0;
    // Streams a blob into `sink` (which enforces size and digest).
    virtual void blob(BlobSink& sink) = 0;
    // Names to record the image under (normalised references).
    virtual std::vector<std::string> names() const = 0;
    // How many blobs to fetch at once: network sources in parallel, local ones one by one.
    virtual bool remote() const { return false; }
};

// registry.cpp
std::unique_ptr<ImageSource> open_registry(const Reference& ref, const PullOptions& options);
// GET /v2/ with the credentials given, following the registry's auth challenge. Throws
// "unauthorized" when the registry refuses them.
void check_login(const std::string& registry, const std::string& user, const std::string& password,
                 const PullOptions& options);

// Docker config (credentials). Shared by registry.cpp (reading) and pull.cpp (login/logout).
std::string docker_config_path(const PullOptions& options);
// "host", or docker.io's historical key for docker.io and its aliases.
std::string auth_key(const std::string& registry);
// The keys an entry for `registry` may be stored under (docker wrote several forms over time).
std::vector<std::string> auth_key_aliases(const std::string& registry);
// "127.0.0.1:5000" from "https://127.0.0.1:5000/" and friends; docker.io aliases → "docker.io".
std::string normalize_registry_host(const std::string& text);
std::string base64_encode(const std::string& in);
std::string base64_decode(const std::string& in, const std::string& where);

// sources.cpp: the local transports. Archives are extracted under the store's tmp/ and removed
// when the source goes.
std::unique_ptr<ImageSource> open_local(const Source& source, Store& store);
// Every image of a docker-save archive (or an OCI archive), for `load`.
std::vector<std::unique_ptr<ImageSource>> open_archive_images(const std::string& file, Store& store);

}  // namespace hutch::image::detail
