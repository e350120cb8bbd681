// Image references as docker understands them: [REGISTRY/]REPOSITORY[:TAG][@DIGEST], with
// docker.io and library/ implied, and the transports hutch can pull from.
#pragma once

#include <string>

namespace hutch::image {

struct Reference {
    std::string registry;    // "docker.io", "localhost:5000", "127.0.0.1:5000"
    std::string repository;  // "library/busybox"
    std::string tag;         // "latest" unless a digest alone was given
    std::string digest;      // "sha256:..." or empty

    // Throws hutch::Error with the offending text on anything docker would refuse.
    static Reference parse(const std::string& text);
    // Normalized: "docker.io/library/busybox:latest" (digest appended with '@' when present).
    std::string str() const;
    // How docker prints it: "busybox:latest", "localhost:5000/x/y:1".
    std::string familiar() const;
    // Host to talk to: registry-1.docker.io for docker.io, the registry otherwise.
    std::string api_host() const;
    // localhost, 127.0.0.0/8 and ::1 are spoken to over plain HTTP, like docker does.
    bool is_loopback() const;
};

// Where an image comes from: "docker://REF" (or a bare REF), "oci:DIR[:TAG]",
// "oci-archive:FILE[:TAG]", "docker-archive:FILE[:REF]".
struct Source {
    enum class Kind { Registry, OciLayout, OciArchive, DockerArchive } kind = Kind::Registry;
    std::string path;   // directory or file for the local kinds
    std::string tag;    // tag or reference inside the layout/archive (may be empty)
    Reference ref;      // for Registry
    static Source parse(const std::string& text);
};

}  // namespace hutch::image
