// Docker's reference grammar (as in distribution/reference), written out as small predicates:
//   reference  := name [ ":" tag ] [ "@" digest ]
//   name       := [domain "/"] path          (at most 255 characters)
//   domain     := host [":" port]             host: dns-ish components, or "[" ipv6 "]"
//   path       := component ("/" component)*  component: [a-z0-9]+ joined by ".", "_", "__" or "-"+
//   tag        := [\w][\w.-]{0,127}
//   digest     := "sha256:" 64 lowercase hex  (the only algorithm OCI registries use)
// The first "/"-separated part is a registry only when it contains "." or ":", is "localhost", or
// has uppercase letters (docker's rule); otherwise docker.io is implied, and "library/" for
// one-component names on docker.io.
#include "hutch/image/reference.hpp"

#include <sys/stat.h>

#include <cctype>
#include <vector>

#include "hutch/core/error.hpp"
#include "hutch/core/digest.hpp"

namespace hutch::image {

namespace {

constexpr size_t kNameMax = 255;
constexpr size_t kTagMax = 128;
const char kDockerHub[] = "docker.io";

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_word(char c) { return is_alnum(c) || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

[[noreturn]] void reject(const std::string& text, const std::string& why) {
    fail("invalid image reference", "'" + text + "'", why);
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
        size_t pos = s.find(sep, start);
        parts.push_back(s.substr(start, pos - start));
        if (pos == std::string::npos) return parts;
        start = pos + 1;
    }
}

// [a-z0-9]+ ( ("." | "_" | "__" | "-"+) [a-z0-9]+ )*
bool valid_path_component(const std::string& c) {
    size_t i = 0;
    auto alnum_run = [&] {
        size_t start = i;
        while (i < c.size() && is_lower_alnum(c[i])) ++i;
        return i > start;
    };
    if (!alnum_run()) return false;
    while (i < c.size()) {
        if (c[i] == '.') {
            ++i;
        } else if (c[i] == '_') {
            ++i;
            if (i < c.size() && c[i] == '_') ++i;
        } else if (c[i] == '-') {
            while (i < c.size() && c[i] == '-') ++i;
        } else {
            return false;
        }
        if (!alnum_run()) return false;
    }
    return true;
}

// [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
bool valid_domain_component(const std::string& c) {
    if (c.empty() || !is_alnum(c.front()) || !is_alnum(c.back())) return false;
    for (char ch : c)
        if (!is_alnum(ch) && ch != '-') return false;
    return true;
}

bool valid_port(const std::string& p) {
    if (p.empty() || p.size() > 5) return false;
    for (char c : p)
        if (!is_digit(c)) return false;
    return true;
}

bool valid_domain(const std::string& d) {
    std::string host = d, port;
    bool has_port = false;
    if (!d.empty() && d[0] == '[') {
        size_t close = d.find(']');
        if (close == std::string::npos || close == 1) return false;
        for (size_t i = 1; i < close; ++i)
            if (!is_hex(d[i]) && d[i] != ':') return false;
        std::string rest = d.substr(close + 1);
        if (rest.empty()) return true;
        return rest[0] == ':' && valid_port(rest.substr(1));
    }
    size_t colon = d.find(':');
    if (colon != std::string::npos) {
        host = d.substr(0, colon);
        port = d.substr(colon + 1);
        has_port = true;
    }
    for (const auto& c : split(host, '.'))
        if (!valid_domain_component(c)) return false;
    return !has_port || valid_port(port);
}

bool valid_tag(const std::string& t) {
    if (t.empty() || t.size() > kTagMax || !is_word(t[0])) return false;
    for (char c : t)
        if (!is_word(c) && c != '.' && c != '-') return false;
    return true;
}

bool is_full_hex_id(const std::string& s) {
    if (s.size() != 64) return false;
    for (char c : s)
        if (!is_lower_alnum(c) || !is_hex(c)) return false;
    return true;
}

bool has_upper(const std::string& s) {
    for (char c : s)
        if (c >= 'A' && c <= 'Z') return true;
    return false;
}

// Docker's split: the first component is a registry if it looks like a host.
void split_domain(const std::string& name, std::string& domain, std::string& path) {
    size_t slash = name.find('/');
    std::string first = slash == std::string::npos ? std::string() : name.substr(0, slash);
    bool looks_like_host = slash != std::string::npos &&
                           (first.find_first_of(".:") != std::string::npos || first == "localhost" || has_upper(first));
    if (looks_like_host) {
        domain = first;
        path = name.substr(slash + 1);
    } else {
        domain = kDockerHub;
        path = name;
    }
    if (domain == "index.docker.io") domain = kDockerHub;
    if (domain == kDockerHub && path.find('/') == std::string::npos) path = "library/" + path;
}

void check_path(const std::string& text, const std::string& path) {
    if (has_upper(path)) reject(text, "repository name must be lowercase");
    for (const auto& c : split(path, '/'))
        if (!valid_path_component(c))
            reject(text, c.empty() ? "empty path component in the repository name"
                                   : "invalid repository component '" + c +
                                         "': use a-z, 0-9 and single '.', '_', '__' or '-' separators");
}

bool is_ipv4_loopback(const std::string& host) {
    auto parts = split(host, '.');
    if (parts.size() != 4 || parts[0] != "127") return false;
    for (const auto& p : parts) {
        if (p.empty() || p.size() > 3) return false;
        for (char c : p)
            if (!is_digit(c)) return false;
        if (std::stoi(p) > 255) return false;
    }
    return true;
}

}  // namespace

Reference Reference::parse(const std::string& text) {
    if (text.empty()) reject(text, "the reference is empty");
    for (char c : text)
        if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
            reject(text, "references cannot contain spaces or control characters");
    Reference r;
    std::string rest = text;
    size_t at = rest.find('@');
    if (at != std::string::npos) {
        r.digest = rest.substr(at + 1);
        rest = rest.substr(0, at);
        if (!digest::valid(r.digest)) reject(text, "the digest must be sha256: followed by 64 lowercase hex digits");
    }
    // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
    size_t colon = rest.rfind(':');
    size_t slash = rest.rfind('/');
    if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
        r.tag = rest.substr(colon + 1);
        rest = rest.substr(0, colon);
        if (!valid_tag(r.tag))
            reject(text, "invalid tag '" + r.tag + "': use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'");
    }
    if (rest.empty()) reject(text, "the repository name is empty");
    if (is_full_hex_id(rest)) reject(text, "a repository name cannot be a 64-character hex string (that is an image id)");
    split_domain(rest, r.registry, r.repository);
    if (!valid_domain(r.registry)) reject(text, "invalid registry host '" + r.registry + "'");
    check_path(text, r.repository);
    if (r.registry.size() + 1 + r.repository.size() > kNameMax)
        reject(text, "the repository name is longer than 255 characters");
    if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
    return r;
}

std::string Reference::str() const {
    std::string s = registry + "/" + repository;
    if (!tag.empty()) s += ":" + tag;
    if (!digest.empty()) s += "@" + digest;
    return s;
}

std::string Reference::familiar() const {
    std::string name = registry + "/" + repository;
    if (registry == kDockerHub) {
        name = repository;
        const std::string lib = "library/";
        if (name.compare(0, lib.size(), lib) == 0 && name.find('/', lib.size()) == std::string::npos)
            name = name.substr(lib.size());
    }
    if (!tag.empty()) name += ":" + tag;
    if (!digest.empty()) name += "@" + digest;
    return name;
}

std::string Reference::api_host() const { return registry == kDockerHub ? "registry-1.docker.io" : registry; }

bool Reference::is_loopback() const {
    std::string host = registry;
    if (!host.empty() && host[0] == '[') {
        host = host.substr(0, host.find(']') + 1);
        return host == "[::1]" || host == "[0:0:0:0:0:0:0:1]";
    }
    host = host.substr(0, host.find(':'));
    return host == "localhost" || is_ipv4_loopback(host);
}

// ---- Sources ----------------------------------------------------------------------------------
//
// Splitting "oci:PATH[:TAG]", "oci-archive:PATH[:TAG]" and "docker-archive:PATH[:REF]": skopeo
// splits at the first ':', so its paths cannot contain ':'. hutch accepts such paths when they
// exist, with this rule:
//   1. if the whole text after the transport names an existing file or directory, it is the path
//      and there is no tag;
//   2. otherwise the longest prefix ending before a ':' that exists on disk is the path, and what
//      follows is the tag (it must be a valid tag or reference);
//   3. otherwise (nothing exists: the error comes later, naming the path) split at the first ':',
//      as skopeo does.
// The tag of oci: and oci-archive: follows the OCI image-layout ref.name grammar (which allows
// ':' and '/'); the REF of docker-archive: is a docker reference, stored normalized
// ("docker.io/library/busybox:latest"), or "@N" for the N-th image of the archive.

namespace {

const char kDockerTransport[] = "docker://";

bool path_exists(const std::string& p) {
    struct stat st;
    return !p.empty() && ::stat(p.c_str(), &st) == 0;
}

// OCI image-layout ref.name: component ("/" component)*, component: [A-Za-z0-9]+ joined by one
// of - . _ : @ + or by "--".
bool valid_oci_ref_name(const std::string& ref) {
    for (const auto& comp : split(ref, '/')) {
        if (comp.empty() || !is_alnum(comp.front()) || !is_alnum(comp.back())) return false;
        for (size_t i = 0; i < comp.size(); ++i) {
            char c = comp[i];
            if (is_alnum(c)) continue;
            bool sep = c == '-' || c == '.' || c == '_' || c == ':' || c == '@' || c == '+';
            if (!sep || !is_alnum(comp[i - 1])) return false;
            if (c == '-' && comp[i + 1] == '-') ++i;  // "--" is one separator
            if (!is_alnum(comp[i + 1])) return false;
        }
    }
    return true;
}

bool valid_archive_ref(const std::string& ref) {
    if (ref.size() > 1 && ref[0] == '@') {
        for (size_t i = 1; i < ref.size(); ++i)
            if (!is_digit(ref[i])) return false;
        return true;
    }
    try {
        Reference::parse(ref);
        return true;
    } catch (const Error&) {
        return false;
    }
}

void split_path_and_tag(const std::string& text, const std::string& body, Source& s) {
    if (body.empty()) fail("invalid image source", "'" + text + "'", "give a path after the transport, e.g. oci:DIR[:TAG]");
    auto valid = [&](const std::string& tag) {
        return s.kind == Source::Kind::DockerArchive ? valid_archive_ref(tag) : valid_oci_ref_name(tag);
    };
    size_t cut = std::string::npos;
    if (!path_exists(body)) {
        for (size_t i = body.rfind(':'); i != std::string::npos && i > 0; i = body.rfind(':', i - 1))
            if (path_exists(body.substr(0, i)) && valid(body.substr(i + 1))) {
                cut = i;
                break;
            }
        if (cut == std::string::npos) cut = body.find(':');
    }
    s.path = body.substr(0, cut);
    if (cut != std::string::npos) s.tag = body.substr(cut + 1);
    if (s.path.empty()) fail("invalid image source", "'" + text + "'", "the path before ':' is empty");
    if (cut != std::string::npos && !valid(s.tag))
        fail("invalid image source", "'" + text + "'",
             s.kind == Source::Kind::DockerArchive ? "the part after the path must be an image reference or @INDEX"
                                                   : "the part after the path must be an OCI ref name (tag)");
    if (s.kind == Source::Kind::DockerArchive && !s.tag.empty() && s.tag[0] != '@')
        s.tag = Reference::parse(s.tag).str();
}

}  // namespace

Source Source::parse(const std::string& text) {
    Source s;
    static const std::pair<const char*, Kind> local[] = {
        {"oci:", Kind::OciLayout}, {"oci-archive:", Kind::OciArchive}, {"docker-archive:", Kind::DockerArchive}};
    for (auto [prefix, kind] : local) {
        std::string p = prefix;
        if (text.compare(0, p.size(), p) == 0) {
            s.kind = kind;
            split_path_and_tag(text, text.substr(p.size()), s);
            return s;
        }
    }
    std::string ref = text;
    if (text.compare(0, sizeof kDockerTransport - 1, kDockerTransport) == 0) {
        ref = text.substr(sizeof kDockerTransport - 1);
    } else if (text.find("://") != std::string::npos) {
        fail("unsupported image transport", "'" + text + "'",
             "use docker://REF (or a bare REF), oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]");
    }
    s.kind = Kind::Registry;
    s.ref = Reference::parse(ref);
    return s;
}

}  // namespace hutch::image
