// Resolves the -u USER[:GROUP] of a sandboxed process against the sandbox's own /etc/passwd and
// /etc/group (parsed directly: no NSS module of the host may run on the image's files).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace hutch::user {

struct Resolved {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups from /etc/group
    std::string home = "/";
    std::string name;  // empty when the uid has no passwd entry
};

// `spec` is "", "UID", "UID:GID", "NAME", "NAME:GROUP" (mixed forms too). Throws hutch::Error for an
// unknown name or an invalid number.
Resolved resolve(const std::string& spec, const std::string& passwd, const std::string& group);

}  // namespace hutch::user
