#include "hutch/sandbox/user.hpp"

#include <cstdlib>
#include <optional>
#include <sstream>

#include "hutch/core/error.hpp"

namespace hutch::user {

namespace {

// One colon-separated line of /etc/passwd or /etc/group.
std::vector<std::string> fields(const std::string& line) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : line) {
        if (c == ':') {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    out.push_back(cur);
    return out;
}

std::optional<unsigned long> number(const std::string& s) {
    if (s.empty() || s.size() > 10) return std::nullopt;
    for (char c : s)
        if (c < '0' || c > '9') return std::nullopt;
    unsigned long v = std::strtoul(s.c_str(), nullptr, 10);
    if (v >= 0xffffffffUL) return std::nullopt;
    return v;
}

template <typename Fn>
void each_line(const std::string& text, size_t min_fields, Fn&& fn) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        auto f = fields(line);
        if (f.size() >= min_fields && number(f[2])) fn(f);
    }
}

}  // namespace

Resolved resolve(const std::string& spec, const std::string& passwd, const std::string& group) {
    std::string u = spec.substr(0, spec.find(':'));
    std::string g = spec.find(':') == std::string::npos ? "" : spec.substr(spec.find(':') + 1);
    if (u.empty()) u = "0";
    Resolved r;
    bool found = false;
    std::optional<unsigned long> uid_num = number(u);
    each_line(passwd, 7, [&](const std::vector<std::string>& f) {
        if (found) return;
        if (uid_num ? number(f[2]) == uid_num : f[0] == u) {
            found = true;
            r.name = f[0];
            r.uid = static_cast<uid_t>(*number(f[2]));
            r.gid = static_cast<gid_t>(number(f[3]).value_or(0));
            r.home = f[5].empty() ? "/" : f[5];
        }
    });
    if (!found) {
        if (!uid_num) fail("unknown user", u, "no such name in the sandbox's /etc/passwd; use a numeric UID");
        r.uid = static_cast<uid_t>(*uid_num);
        r.gid = r.uid == 0 ? 0 : r.uid;  // docker uses gid = uid's primary group, or the uid's number
    }
    if (!g.empty()) {
        std::optional<unsigned long> gid_num = number(g);
        bool gfound = false;
        each_line(group, 3, [&](const std::vector<std::string>& f) {
            if (!gfound && !gid_num && f[0] == g) {
                gfound = true;
                r.gid = static_cast<gid_t>(*number(f[2]));
            }
        });
        if (gid_num) r.gid = static_cast<gid_t>(*gid_num);
        else if (!gfound) fail("unknown group", g, "no such name in the sandbox's /etc/group; use a numeric GID");
    } else if (!r.name.empty()) {
        // Supplementary groups only when the group was not given explicitly, as docker does.
        each_line(group, 4, [&](const std::vector<std::string>& f) {
            std::istringstream members(f[3]);
            std::string m;
            while (std::getline(members, m, ','))
                if (m == r.name) r.groups.push_back(static_cast<gid_t>(*number(f[2])));
        });
    }
    return r;
}

}  // namespace hutch::user
