#include "hutch/sandbox/user.hpp"

#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "hutch/core/error.hpp"

namespace hutch::user {

namespace {

// Calls fn on each `sep`-separated piece of `text`, the last one included even when empty.
template <typename Fn>
void split(std::string_view text, char sep, Fn&& fn) {
    for (;;) {
        size_t end = text.find(sep);
        fn(text.substr(0, end));
        if (end == std::string_view::npos) return;
        text.remove_prefix(end + 1);
    }
}

std::optional<unsigned long> number(std::string_view s) {
    if (s.empty() || s.size() > 10) return std::nullopt;
    unsigned long v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<unsigned long>(c - '0');
    }
    if (v >= 0xffffffffUL) return std::nullopt;
    return v;
}

// The lines of /etc/passwd or /etc/group with at least `min_fields` colon-separated fields and
// a numeric third one (the id); comments and blank lines are skipped. This runs in every
// command's start, so it splits in place rather than through a stream.
template <typename Fn>
void each_line(const std::string& text, size_t min_fields, Fn&& fn) {
    std::vector<std::string_view> f;
    split(text, '\n', [&](std::string_view line) {
        if (line.empty() || line[0] == '#') return;
        f.clear();
        split(line, ':', [&](std::string_view field) { f.push_back(field); });
        if (f.size() >= min_fields && number(f[2])) fn(f);
    });
}

}  // namespace

Resolved resolve(const std::string& spec, const std::string& passwd, const std::string& group) {
    std::string u = spec.substr(0, spec.find(':'));
    std::string g = spec.find(':') == std::string::npos ? "" : spec.substr(spec.find(':') + 1);
    if (u.empty()) u.push_back('0');  // the default user is root
    Resolved r;
    bool found = false;
    std::optional<unsigned long> uid_num = number(u);
    each_line(passwd, 7, [&](const std::vector<std::string_view>& f) {
        if (found) return;
        if (uid_num ? number(f[2]) == uid_num : f[0] == u) {
            found = true;
            r.name = std::string(f[0]);
            r.uid = static_cast<uid_t>(*number(f[2]));
            r.gid = static_cast<gid_t>(number(f[3]).value_or(0));
            r.home = f[5].empty() ? "/" : std::string(f[5]);
        }
    });
    if (!found) {
        if (!uid_num) fail("unknown user", u, "no such name in the sandbox's /etc/passwd; use a numeric UID");
        r.uid = static_cast<uid_t>(*uid_num);
        // Group 0, as docker's (runc's): images made for arbitrary uids (OpenShift's convention)
        // give group 0 what such a uid must write.
        r.gid = 0;
    }
    if (!g.empty()) {
        std::optional<unsigned long> gid_num = number(g);
        bool gfound = false;
        each_line(group, 3, [&](const std::vector<std::string_view>& f) {
            if (!gfound && !gid_num && f[0] == g) {
                gfound = true;
                r.gid = static_cast<gid_t>(*number(f[2]));
            }
        });
        if (gid_num) r.gid = static_cast<gid_t>(*gid_num);
        else if (!gfound) fail("unknown group", g, "no such name in the sandbox's /etc/group; use a numeric GID");
    } else if (!r.name.empty()) {
        // Supplementary groups only when the group was not given explicitly, as docker does.
        each_line(group, 4, [&](const std::vector<std::string_view>& f) {
            split(f[3], ',', [&](std::string_view m) {
                if (m == r.name) r.groups.push_back(static_cast<gid_t>(*number(f[2])));
            });
        });
    }
    return r;
}

}  // namespace hutch::user
