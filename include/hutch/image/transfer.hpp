// Moving images in and out of the store: registries (OCI Distribution API over libcurl),
// OCI layouts and archives, docker-save archives. Lives in hutch-image, which links libcurl and
// libarchive; `hutch` execs it for pull, load, save, login and logout.
#pragma once

#include <string>
#include <vector>

#include "hutch/image/store.hpp"
#include "hutch/image/unpack.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::image {

struct PullOptions {
    std::string platform = "linux/amd64";    // os/arch[/variant]
    bool quiet = false;                      // no progress output
    std::vector<std::string> insecure_registries;  // plain HTTP allowed (loopback always is)
    std::string docker_config;               // credentials file; default ~/.docker/config.json
    int parallel = 4;                        // layer downloads at once
    UnpackLimits limits;
};

// Imports the image named by `source` (see Source::parse) with all its layers, unpacks them, and
// records it under its own name plus `extra_names`. Nothing is recorded unless all of it succeeded.
ImageRecord pull(Store& store, const IdMap& map, const std::string& source, const PullOptions& options,
                 const std::vector<std::string>& extra_names = {});

// `docker load -i FILE`: every image of a docker-save (or OCI) archive. Returns what was loaded.
std::vector<ImageRecord> load(Store& store, const IdMap& map, const std::string& file, const PullOptions& options);

// `docker save -o FILE REF...`: a docker-archive that `docker load` and skopeo read.
void save(const Store& store, const std::vector<std::string>& refs, const std::string& file);

// `docker login`/`logout`: verifies the credentials against the registry, then writes or removes
// them in the docker config file (auths, base64 "user:password"), mode 0600.
void login(const std::string& registry, const std::string& user, const std::string& password,
           const PullOptions& options);
void logout(const std::string& registry, const PullOptions& options);

}  // namespace hutch::image
