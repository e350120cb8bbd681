// Policy decisions: the egress rule algebra (matching, covering, overlapping), the admin's
// ceilings over a user's policy, applying a policy to a SandboxSpec, and printing a policy back
// as TOML. Reading files lives in load.cpp, the only file that compiles toml++.
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "hutch/core/duration.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/log.hpp"
#include "hutch/policy/policy.hpp"
#include "hutch/sandbox/caps.hpp"

namespace hutch::policy {

namespace {

constexpr const char* kTightenOnly = "a user policy can tighten the admin policy, never widen it";

// ---------------------------------------------------------------------------------------------
// Destinations: host names and networks.

struct Net {
    int family = 0;
    std::array<uint8_t, 16> bytes{};
    int prefix = 0;
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

int width(const Net& n) { return n.family == AF_INET ? 32 : 128; }

bool bit(const Net& n, int i) { return (n.bytes[i / 8] >> (7 - i % 8)) & 1; }

std::optional<Net> parse_address(const std::string& text) {
    Net n;
    if (::inet_pton(AF_INET, text.c_str(), n.bytes.data()) == 1) {
        n.family = AF_INET;
    } else if (::inet_pton(AF_INET6, text.c_str(), n.bytes.data()) == 1) {
        n.family = AF_INET6;
        // An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address: rules written for one
        // must match the other, or a sandbox could slip past a v4 deny over a v6 socket.
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (std::memcmp(n.bytes.data(), mapped, 12) == 0) {
            std::memmove(n.bytes.data(), n.bytes.data() + 12, 4);
            std::fill(n.bytes.begin() + 4, n.bytes.end(), 0);
            n.family = AF_INET;
        }
    } else {
        return std::nullopt;
    }
    n.prefix = width(n);
    return n;
}

std::string address_text(const Net& n) {
    char buf[INET6_ADDRSTRLEN];
    ::inet_ntop(n.family, n.bytes.data(), buf, sizeof buf);
    return buf;
}

// Parses "addr" or "addr/prefix"; on failure returns nullopt and says why in *why.
std::optional<Net> parse_cidr(const std::string& text, std::string* why) {
    size_t slash = text.find('/');
    std::string addr = text.substr(0, slash);
    std::optional<Net> n = parse_address(addr);
    if (!n) {
        *why = "'" + addr + "' is not an IPv4 or IPv6 address";
        return std::nullopt;
    }
    if (n->family == AF_INET && addr.find(':') != std::string::npos) {
        *why = "write the IPv4-mapped address '" + addr + "' as the IPv4 address " + address_text(*n);
        return std::nullopt;
    }
    if (slash != std::string::npos) {
        std::string p = text.substr(slash + 1);
        bool digits = !p.empty() && p.size() <= 3 && std::all_of(p.begin(), p.end(), is_digit);
        if (!digits || std::stoi(p) > width(*n)) {
            *why = "'/" + p + "' is not a prefix length (0-" + std::to_string(width(*n)) + ")";
            return std::nullopt;
        }
        n->prefix = std::stoi(p);
    }
    for (int i = n->prefix; i < width(*n); ++i) {
        if (!bit(*n, i)) continue;
        Net net = *n;
        for (int j = n->prefix; j < width(net); ++j) net.bytes[j / 8] &= static_cast<uint8_t>(~(0x80 >> (j % 8)));
        *why = "host bits are set after the /" + std::to_string(n->prefix) + "; the network is " + address_text(net) +
               "/" + std::to_string(n->prefix);
        return std::nullopt;
    }
    return n;
}

Net must_parse_cidr(const std::string& text) {
    std::string why;
    std::optional<Net> n = parse_cidr(text, &why);
    if (!n) fail("invalid CIDR in a policy rule", text, why);  // rules are validated when loaded
    return *n;
}

bool net_covers(const Net& a, const Net& b) {
    if (a.family != b.family || a.prefix > b.prefix) return false;
    for (int i = 0; i < a.prefix; ++i)
        if (bit(a, i) != bit(b, i)) return false;
    return true;
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "*" matches any name; "*.example.com" any name below example.com (not example.com itself).
bool host_matches(const std::string& pattern, const std::string& name) {
    if (pattern == "*") return !name.empty();
    if (pattern.rfind("*.", 0) == 0) return name.size() > pattern.size() - 1 && ends_with(name, pattern.substr(1));
    return pattern == name;
}

// Whether every name that b matches, a matches too.
bool host_covers(const std::string& a, const std::string& b) {
    if (a == "*") return true;
    if (b == "*") return false;
    if (a.rfind("*.", 0) == 0 && b.rfind("*.", 0) == 0) {
        std::string s = a.substr(2), n = b.substr(2);
        return n == s || ends_with(n, "." + s);
    }
    return host_matches(a, b);
}

// Names a rule by host or CIDR; a host rule and a CIDR rule never cover or overlap each other
// statically (which addresses a name has is known only at the lookup).
bool dest_covers(const Rule& a, const Rule& b) {
    if (!a.host.empty() && !b.host.empty()) return host_covers(a.host, b.host);
    if (!a.cidr.empty() && !b.cidr.empty()) return net_covers(must_parse_cidr(a.cidr), must_parse_cidr(b.cidr));
    return false;
}

bool dest_overlaps(const Rule& a, const Rule& b) { return dest_covers(a, b) || dest_covers(b, a); }

// ---------------------------------------------------------------------------------------------
// Ports and protocols.

using Ranges = std::vector<std::pair<uint16_t, uint16_t>>;

Ranges ports_of(const Rule& r) { return r.ports.empty() ? Ranges{{1, 65535}} : r.ports; }

bool ranges_cover(Ranges have, std::pair<uint16_t, uint16_t> need) {
    std::sort(have.begin(), have.end());
    uint32_t next = need.first;
    for (auto [lo, hi] : have) {
        if (lo > next) break;
        if (hi >= next) next = static_cast<uint32_t>(hi) + 1;
        if (next > need.second) return true;
    }
    return next > need.second;
}

Ranges intersect(const Ranges& a, const Ranges& b) {
    Ranges out;
    for (auto [alo, ahi] : a)
        for (auto [blo, bhi] : b) {
            uint16_t lo = std::max(alo, blo), hi = std::min(ahi, bhi);
            if (lo <= hi) out.emplace_back(lo, hi);
        }
    return out;
}

// The protocols a rule lets through. ICMP has no ports: a rule with ports is about TCP and UDP.
std::vector<std::string> protos_of(const Rule& r) {
    if (r.proto != "any") return {r.proto};
    if (r.ports.empty()) return {"tcp", "udp", "icmp"};
    return {"tcp", "udp"};
}

bool proto_lets(const Rule& r, const std::string& proto) {
    auto ps = protos_of(r);
    return std::find(ps.begin(), ps.end(), proto) != ps.end();
}

// Whether the rules in `by`, together, let through everything `r` lets through. icmp_to_allowed:
// the rules' network.icmp (ICMP echo to every destination they allow).
bool covered(const Rule& r, const std::vector<Rule>& by, bool icmp_to_allowed) {
    for (const auto& p : protos_of(r)) {
        if (p == "icmp") {
            bool ok = std::any_of(by.begin(), by.end(), [&](const Rule& x) {
                return dest_covers(x, r) && (proto_lets(x, "icmp") || icmp_to_allowed);
            });
            if (!ok) return false;
            continue;
        }
        Ranges have;
        for (const auto& x : by)
            if (dest_covers(x, r) && proto_lets(x, p)) {
                Ranges xs = ports_of(x);
                have.insert(have.end(), xs.begin(), xs.end());
            }
        for (auto need : ports_of(r))
            if (!ranges_cover(have, need)) return false;
    }
    return true;
}

// What a and b both let through, as rules (one per protocol); empty when they do not overlap.
std::vector<Rule> intersection(const Rule& a, const Rule& b) {
    std::vector<Rule> out;
    if (!dest_overlaps(a, b)) return out;
    const Rule& narrow = dest_covers(a, b) ? b : a;
    for (const auto& p : protos_of(a)) {
        if (!proto_lets(b, p)) continue;
        Rule r;
        r.host = narrow.host;
        r.cidr = narrow.cidr;
        r.proto = p;
        if (p != "icmp") {
            r.ports = intersect(ports_of(a), ports_of(b));
            if (r.ports.empty()) continue;
        }
        out.push_back(r);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Printing values the way a policy file writes them.

std::string quote(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

std::string list(const std::vector<std::string>& items, bool quoted) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + (quoted ? quote(items[i]) : items[i]);
    return out + "]";
}

std::string ports_text(const Ranges& ports) {
    std::string out = "[";
    for (size_t i = 0; i < ports.size(); ++i) {
        auto [lo, hi] = ports[i];
        out += i ? ", " : "";
        out += lo == hi ? std::to_string(lo) : "\"" + std::to_string(lo) + "-" + std::to_string(hi) + "\"";
    }
    return out + "]";
}

// A rule as the inline table a policy file would write it.
std::string describe(const Rule& r) {
    std::string out = "{";
    out += r.host.empty() ? "cidr = " + quote(r.cidr) : "host = " + quote(r.host);
    if (!r.ports.empty()) out += ", ports = " + ports_text(r.ports);
    out += ", proto = " + quote(r.proto) + "}";
    return out;
}

std::string format_size(int64_t bytes) {
    if (bytes == -1) return "-1";
    static const std::pair<char, int64_t> units[] = {{'t', 1LL << 40}, {'g', 1LL << 30}, {'m', 1LL << 20}, {'k', 1LL << 10}};
    for (auto [suffix, unit] : units)
        if (bytes >= unit && bytes % unit == 0) return std::to_string(bytes / unit) + suffix;
    return std::to_string(bytes);
}

std::string format_seconds(double s) {
    if (s == std::floor(s) && s < 1e15) {
        auto n = static_cast<long long>(s);
        if (n >= 3600 && n % 3600 == 0) return std::to_string(n / 3600) + "h";
        if (n >= 60 && n % 60 == 0) return std::to_string(n / 60) + "m";
        return std::to_string(n) + "s";
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%gs", s);
    return buf;
}

std::string format_number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// ---------------------------------------------------------------------------------------------
// Limits, by key, so that defaults, ceilings and flags are handled by one loop.

enum class Kind { Size, Count, Cpus, Weight, Duration };

struct LimitKey {
    const char* name;
    Kind kind;
    const char* flag;
};

constexpr LimitKey kLimitKeys[] = {
    {"memory", Kind::Size, "--memory"},        {"memory_swap", Kind::Size, "--memory-swap"},
    {"pids", Kind::Count, "--pids-limit"},     {"cpus", Kind::Cpus, "--cpus"},
    {"cpu_weight", Kind::Weight, "--cpu-weight"}, {"io_weight", Kind::Weight, "--io-weight"},
    {"timeout", Kind::Duration, "--timeout"},
};

// A limit key's value as a double (sizes stay exact below 2^53 bytes, 8 PiB).
std::optional<double> limit(const Limits& l, size_t i) {
    auto wide = [](const std::optional<int64_t>& v) {
        return v ? std::optional<double>(static_cast<double>(*v)) : std::nullopt;
    };
    switch (i) {
        case 0: return wide(l.memory);
        case 1: return wide(l.memory_swap);
        case 2: return wide(l.pids);
        case 3: return l.cpus;
        case 4: return wide(l.cpu_weight);
        case 5: return wide(l.io_weight);
        default: return l.timeout;
    }
}

std::string format_limit(size_t i, double v) {
    switch (kLimitKeys[i].kind) {
        case Kind::Size: return format_size(static_cast<int64_t>(v));
        case Kind::Duration: return format_seconds(v);
        case Kind::Cpus: return format_number(v);
        default: return std::to_string(static_cast<long long>(v));
    }
}

// -1 (unlimited swap) exceeds every ceiling.
bool exceeds(double value, double ceiling) { return value == -1 || value > ceiling; }

// The spec's value of a limit key; 0 is "not set" (and -1 unlimited swap).
double spec_limit(const SandboxSpec& s, size_t i) {
    const Resources& r = s.resources;
    switch (i) {
        case 0: return static_cast<double>(r.memory);
        case 1: return static_cast<double>(r.memory_swap);
        case 2: return static_cast<double>(r.pids);
        case 3: return r.cpus;
        case 4: return static_cast<double>(r.cpu_weight);
        case 5: return static_cast<double>(r.io_weight);
        default: return s.timeout;
    }
}

void set_spec_limit(SandboxSpec& s, size_t i, double v) {
    Resources& r = s.resources;
    switch (i) {
        case 0: r.memory = static_cast<int64_t>(v); break;
        case 1: r.memory_swap = static_cast<int64_t>(v); break;
        case 2: r.pids = static_cast<int64_t>(v); break;
        case 3: r.cpus = v; break;
        case 4: r.cpu_weight = static_cast<int64_t>(v); break;
        case 5: r.io_weight = static_cast<int64_t>(v); break;
        default: s.timeout = v;
    }
}

bool given_flag(const Explicit& g, size_t i) {
    switch (i) {
        case 0: return g.memory;
        case 2: return g.pids;
        case 3: return g.cpus;
        case 6: return g.timeout;
        default: return false;  // no Explicit field: the spec's non-zero value says it was given
    }
}

// The per-device I/O rates: keyed by device, so they are not among kLimitKeys.
struct DeviceKey {
    const char* name;
    const char* flag;
    std::map<std::string, int64_t> Limits::*rates;
    std::vector<std::string> Resources::*entries;  // "DEVICE:RATE", as the flag takes them
};

constexpr DeviceKey kDeviceKeys[] = {
    {"device_read_bps", "--device-read-bps", &Limits::device_read_bps, &Resources::device_read_bps},
    {"device_write_bps", "--device-write-bps", &Limits::device_write_bps, &Resources::device_write_bps},
};

// What a device is, so that /dev/vda and a link to it are one: "b" and its number when the path
// is a block device here, "p" and the path otherwise (nullopt from block_device()).
std::optional<std::string> block_device(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) return std::nullopt;
    return "b" + std::to_string(st.st_rdev);
}

std::string device_identity(const std::string& path) {
    if (auto b = block_device(path)) return *b;
    return "p" + fs::lexical_normal(path);
}

std::string device_key(const DeviceKey& k, const std::string& section, const std::string& dev) {
    return section + "." + k.name + "." + quote(dev);
}

// The first rate of `rates` above the ceiling of its device in `ceilings`: (device, rate,
// ceiling's device, ceiling); nullopt when each is within.
struct RateAbove {
    std::string dev;
    int64_t rate;
    std::string ceiling_dev;
    int64_t ceiling;
};
std::optional<RateAbove> rate_above(const std::map<std::string, int64_t>& rates, const std::map<std::string, int64_t>& ceilings) {
    for (const auto& [cdev, ceiling] : ceilings)
        for (const auto& [dev, rate] : rates)
            if (rate > ceiling && device_identity(dev) == device_identity(cdev)) return RateAbove{dev, rate, cdev, ceiling};
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Origins: where a key was set, for messages.

std::string origin_of(const Policy& p, const std::string& key) {
    auto it = p.origins.find(key);
    if (it != p.origins.end()) return it->second;
    std::string file = p.sources.empty() ? "the built-in defaults" : p.sources.back();
    return file + ", where " + key + " is not set: the default";
}

// A ceiling of one key, from one policy.
struct Ceiling {
    std::string key;     // "ceilings.memory", "capabilities.allowed"
    std::string origin;  // file:line:column
    bool admin = false;
};

std::string ceiling_name(const Ceiling& c) { return std::string(c.admin ? "the admin ceiling " : "the ceiling ") + c.key; }

[[noreturn]] void widen(const Policy& user, const std::string& user_key, const std::string& what,
                        const Policy& admin, const std::string& admin_key, const std::string& admin_value) {
    throw Error("policy " + origin_of(user, user_key),
                what + " exceeds the admin ceiling " + admin_key + " = " + admin_value + " (" +
                    origin_of(admin, admin_key) + ")",
                0, kTightenOnly);
}

// ---------------------------------------------------------------------------------------------
// Capabilities, environment names and paths.

caps::Set cap_numbers(const std::vector<std::string>& names) {
    caps::Set out;
    for (const auto& n : names) {
        caps::Set s = caps::resolve({n}, {"ALL"});  // "ALL" expands; a name is itself
        out.insert(out.end(), s.begin(), s.end());
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

bool has_cap(const caps::Set& s, int c) { return std::find(s.begin(), s.end(), c) != s.end(); }

bool contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

// The real path when it exists (symlinks resolved, as bind sources are), else the lexical form.
std::string canonical(const std::string& path) {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf)) return buf;
    return fs::lexical_normal(path);
}

// Component-wise: /home/u is under /home, /home2 is not.
bool path_under(const std::string& path, const std::string& prefix) {
    if (prefix == "/") return true;
    return path == prefix || (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
                              path[prefix.size()] == '/');
}

bool under_any(const std::string& path, const std::vector<std::string>& prefixes, bool resolve) {
    return std::any_of(prefixes.begin(), prefixes.end(),
                       [&](const std::string& p) { return path_under(path, resolve ? canonical(p) : p); });
}

// ---------------------------------------------------------------------------------------------
// check_within, one area at a time.

void within_network(const Policy& user, const Policy& admin) {
    if (user.network == "egress" && admin.network != "egress")
        widen(user, "network.mode", "network.mode = \"egress\"", admin, "network.mode", quote(admin.network));
    if (admin.network != "egress") return;  // no egress at all: the rules can never take effect
    if (user.icmp && !admin.icmp) widen(user, "network.icmp", "network.icmp = true", admin, "network.icmp", "false");
    for (const auto& u : user.allow) {
        if (!covered(u, admin.allow, admin.icmp))
            throw Error("policy " + u.origin,
                        "network.allow " + describe(u) + " is not covered by the admin policy's network.allow (" +
                            origin_of(admin, "network.allow") + ")",
                        0, "allow only destinations, ports and protocols the admin policy allows; " + std::string(kTightenOnly));
        for (const auto& d : admin.deny)
            for (const auto& region : intersection(u, d))
                if (!covered(region, user.deny, false))
                    throw Error("policy " + u.origin,
                                "network.allow " + describe(u) + " reaches " + describe(region) +
                                    ", which the admin policy denies with network.deny " + describe(d) + " (" + d.origin + ")",
                                0, "narrow the allow rule, or add a deny rule that excludes it");
    }
}

void within_limits(const Policy& user, const Policy& admin) {
    for (size_t i = 0; i < std::size(kLimitKeys); ++i) {
        std::optional<double> ceiling = limit(admin.ceilings, i);
        if (!ceiling) continue;
        std::string name = kLimitKeys[i].name;
        for (const auto& [section, limits] : {std::pair<std::string, const Limits*>{"limits", &user.defaults},
                                              std::pair<std::string, const Limits*>{"ceilings", &user.ceilings}}) {
            std::optional<double> v = limit(*limits, i);
            if (v && exceeds(*v, *ceiling))
                widen(user, section + "." + name, section + "." + name + " = " + format_limit(i, *v), admin,
                      "ceilings." + name, format_limit(i, *ceiling));
        }
    }
}

void within_device_rates(const Policy& user, const Policy& admin) {
    for (const auto& k : kDeviceKeys)
        for (const auto& [section, limits] : {std::pair<std::string, const Limits*>{"limits", &user.defaults},
                                              std::pair<std::string, const Limits*>{"ceilings", &user.ceilings}})
            if (auto a = rate_above((*limits).*k.rates, admin.ceilings.*k.rates))
                widen(user, device_key(k, section, a->dev), device_key(k, section, a->dev) + " = " + format_size(a->rate),
                      admin, device_key(k, "ceilings", a->ceiling_dev), format_size(a->ceiling));
}

void within_capabilities(const Policy& user, const Policy& admin) {
    if (!admin.cap_allowed) return;
    caps::Set allowed = cap_numbers(*admin.cap_allowed);
    auto check = [&](const std::vector<std::string>& names, const std::string& key) {
        for (int c : cap_numbers(names))
            if (!has_cap(allowed, c))
                widen(user, key, key + " includes " + caps::name_of(c) + ", which", admin, "capabilities.allowed",
                      list(caps::names(allowed), false));
    };
    check(user.cap_add, "capabilities.add");
    if (user.cap_allowed) check(*user.cap_allowed, "capabilities.allowed");
}

void within_seccomp(const Policy& user, const Policy& admin) {
    if (admin.allow_unconfined) return;
    if (user.seccomp_profile == "unconfined")
        widen(user, "seccomp.profile", "seccomp.profile = \"unconfined\"", admin, "seccomp.allow_unconfined", "false");
    if (user.allow_unconfined && user.origins.count("seccomp.allow_unconfined"))
        widen(user, "seccomp.allow_unconfined", "seccomp.allow_unconfined = true", admin, "seccomp.allow_unconfined",
              "false");
}

void within_mounts(const Policy& user, const Policy& admin) {
    if (admin.bind_sources && user.bind_sources)
        for (const auto& s : *user.bind_sources)
            if (!under_any(fs::lexical_normal(s), *admin.bind_sources, false))
                widen(user, "mounts.allowed_sources", "mounts.allowed_sources includes " + quote(s) + ", which", admin,
                      "mounts.allowed_sources", list(*admin.bind_sources, true));
    if (admin.binds_read_only && !user.binds_read_only && user.origins.count("mounts.read_only"))
        widen(user, "mounts.read_only", "mounts.read_only = false", admin, "mounts.read_only", "true");
}

void within_env(const Policy& user, const Policy& admin) {
    if (!admin.env_allowed) return;
    auto check = [&](const std::vector<std::string>& names, const std::string& key) {
        for (const auto& n : names)
            if (!contains(*admin.env_allowed, n))
                widen(user, key, key + " includes " + n + ", which", admin, "env.allowed", list(*admin.env_allowed, true));
    };
    check(user.env_pass, "env.pass");
    if (user.env_allowed) check(*user.env_allowed, "env.allowed");
}

// ---------------------------------------------------------------------------------------------
// apply, one area at a time.

[[noreturn]] void refuse(const std::string& what, const Ceiling& c, const std::string& value, const std::string& hint,
                         const std::string& verb = "exceeds") {
    throw Error("refused by policy", what + " " + verb + " " + ceiling_name(c) + " = " + value + " (" + c.origin + ")", 0,
                hint);
}

// The lower of the policy's and the admin's ceiling of a limit key (the admin's on a tie).
std::optional<std::pair<double, Ceiling>> tightest_limit(const Policy& p, const std::optional<Policy>& admin, size_t i) {
    std::string key = std::string("ceilings.") + kLimitKeys[i].name;
    std::optional<std::pair<double, Ceiling>> best;
    if (auto v = limit(p.ceilings, i)) best = {{*v, Ceiling{key, origin_of(p, key), false}}};
    if (admin)
        if (auto v = limit(admin->ceilings, i); v && (!best || *v <= best->first))
            best = {{*v, Ceiling{key, origin_of(*admin, key), true}}};
    return best;
}

// Fills a limit from the policy's default (the admin's when the policy has none); returns how to
// name the value in messages.
std::string fill_default(const Policy& p, const std::optional<Policy>& admin, const Explicit& given, size_t i,
                         SandboxSpec& spec) {
    const LimitKey& k = kLimitKeys[i];
    double v = spec_limit(spec, i);
    if (given_flag(given, i) || v != 0) return std::string(k.flag) + " " + format_limit(i, v);
    std::string key = std::string("limits.") + k.name;
    for (const Policy* src : {&p, admin ? &*admin : nullptr}) {
        if (!src) continue;
        if (auto d = limit(src->defaults, i)) {
            set_spec_limit(spec, i, *d);
            return key + " = " + format_limit(i, *d) + " (" + origin_of(*src, key) + ")";
        }
    }
    return {};
}

// A value under a ceiling; an unset one gets the ceiling where that is a limit (not for weights
// above the kernel's default of 100, which would raise the sandbox's share, nor for swap).
void enforce_ceiling(size_t i, const std::string& source, const std::pair<double, Ceiling>& c, SandboxSpec& spec) {
    double v = spec_limit(spec, i);
    const LimitKey& k = kLimitKeys[i];
    if (v != 0) {
        if (exceeds(v, c.first))
            refuse(source.empty() ? std::string(k.flag) + " " + format_limit(i, v) : source, c.second,
                   format_limit(i, c.first),
                   std::string("ask for at most ") + format_limit(i, c.first) + " with " + k.flag +
                       ", or use a policy with a higher ceiling");
        return;
    }
    if (k.kind == Kind::Weight) {
        if (c.first < 100) set_spec_limit(spec, i, c.first);
    } else if (i != 1) {
        set_spec_limit(spec, i, c.first);
    }
}

void apply_limits(const Policy& p, const std::optional<Policy>& admin, const Explicit& given, SandboxSpec& spec) {
    std::string sources[std::size(kLimitKeys)];
    for (size_t i = 0; i < std::size(kLimitKeys); ++i) {
        sources[i] = fill_default(p, admin, given, i, spec);
        if (auto c = tightest_limit(p, admin, i)) enforce_ceiling(i, sources[i], *c, spec);
    }
    const Resources& r = spec.resources;
    if (r.memory_swap > 0 && r.memory > 0 && r.memory_swap < r.memory)
        fail("refused by policy",
             "the memory+swap limit " + format_size(r.memory_swap) + " is below the memory limit " + format_size(r.memory) +
                 (sources[0].empty() ? std::string(" (the memory ceiling)") : " (" + sources[0] + ")"),
             "--memory-swap counts memory plus swap: give at least the memory limit");
}

// One device's rate in a spec, and how to name it in messages.
struct DeviceRate {
    std::string identity;
    uint64_t rate = 0;
    std::string source;  // "--device-read-bps /dev/vda:10m" or the policy key and where it is set
};

// Defaults fill the devices the flags leave out (the policy's first, then the admin's); the
// lowest ceiling of a device caps it, and becomes its limit when nothing else set one, as for
// memory. One device named by two paths (a link, a by-id name) counts once, at the lower rate. A
// device this host does not have is skipped: a default with one warning, a ceiling silently (it
// has nothing to cap).
void apply_device_rates(const Policy& p, const std::optional<Policy>& admin, SandboxSpec& spec) {
    for (const auto& k : kDeviceKeys) {
        std::vector<std::string>& entries = spec.resources.*k.entries;
        std::vector<DeviceRate> rates;
        std::vector<std::string> flag_paths;
        for (const auto& e : entries) {
            size_t colon = e.rfind(':');
            if (colon == std::string::npos) fail(std::string("invalid ") + k.flag, e, "use DEVICE:RATE, e.g. /dev/vda:10m");
            rates.push_back({device_identity(e.substr(0, colon)), parse_size(e.substr(colon + 1), k.flag),
                             std::string(k.flag) + " " + e});
            flag_paths.push_back(fs::lexical_normal(e.substr(0, colon)));
        }
        auto given = [&](const std::string& identity) {
            return std::any_of(rates.begin(), rates.end(), [&](const DeviceRate& r) { return r.identity == identity; });
        };
        auto add = [&](const std::string& dev, const std::string& identity, int64_t rate, const std::string& source) {
            entries.push_back(dev + ":" + std::to_string(rate));
            rates.push_back({identity, static_cast<uint64_t>(rate), source});
        };
        struct Named {
            std::string dev;
            int64_t rate = 0;
            Ceiling where;
        };
        std::vector<std::string> warned;
        for (const Policy* src : {&p, admin ? &*admin : nullptr}) {
            if (!src) continue;
            std::map<std::string, Named> lowest;  // by identity
            for (const auto& [dev, rate] : src->defaults.*k.rates) {
                std::string key = device_key(k, "limits", dev);
                auto id = block_device(dev);
                if (!id) {
                    if (!contains(flag_paths, dev) && !contains(warned, dev))
                        log::warn("policy default " + key + " (" + origin_of(*src, key) + ") is skipped: " + dev +
                                  " is not a block device on this host");
                    warned.push_back(dev);
                    continue;
                }
                auto it = lowest.find(*id);
                if (it == lowest.end() || rate < it->second.rate) lowest[*id] = {dev, rate, {key, origin_of(*src, key)}};
            }
            for (const auto& [id, d] : lowest)
                if (!given(id)) add(d.dev, id, d.rate, d.where.key + " = " + format_size(d.rate) + " (" + d.where.origin + ")");
        }
        std::map<std::string, Named> tightest;  // by identity; the admin's on a tie
        for (const Policy* src : {&p, admin ? &*admin : nullptr}) {
            if (!src) continue;
            for (const auto& [dev, ceiling] : src->ceilings.*k.rates) {
                auto id = block_device(dev);
                if (!id) continue;
                std::string key = device_key(k, "ceilings", dev);
                auto it = tightest.find(*id);
                if (it == tightest.end() || ceiling <= it->second.rate)
                    tightest[*id] = {dev, ceiling, {key, origin_of(*src, key), src != &p}};
            }
        }
        for (const auto& [id, c] : tightest) {
            if (!given(id)) {
                add(c.dev, id, c.rate, c.where.key + " = " + format_size(c.rate) + " (" + c.where.origin + ")");
                continue;
            }
            for (const auto& r : rates)
                if (r.identity == id && r.rate > static_cast<uint64_t>(c.rate))
                    refuse(r.source, c.where, format_size(c.rate),
                           "ask for at most " + format_size(c.rate) + " on " + c.dev + " with " + k.flag +
                               ", or use a policy with a higher ceiling");
        }
    }
}

struct CapCeiling {
    caps::Set allowed;
    Ceiling where;
};

void apply_capabilities(const Policy& p, const std::optional<Policy>& admin, SandboxSpec& spec) {
    ProcessSpec& proc = spec.process;
    const std::vector<std::string> user_add = proc.cap_add;
    const caps::Set user_dropped = cap_numbers(proc.cap_drop);
    // The user's --cap-drop beats the policy's add (caps::resolve would let any add win).
    for (const auto& a : p.cap_add) {
        caps::Set s = cap_numbers({a});
        bool dropped = std::all_of(s.begin(), s.end(), [&](int c) { return has_cap(user_dropped, c); });
        if (!dropped) proc.cap_add.push_back(a);
    }
    proc.cap_drop.insert(proc.cap_drop.end(), p.cap_drop.begin(), p.cap_drop.end());

    std::vector<CapCeiling> ceilings;
    if (p.cap_allowed)
        ceilings.push_back({cap_numbers(*p.cap_allowed), {"capabilities.allowed", origin_of(p, "capabilities.allowed"), false}});
    if (admin && admin->cap_allowed)
        ceilings.push_back(
            {cap_numbers(*admin->cap_allowed), {"capabilities.allowed", origin_of(*admin, "capabilities.allowed"), true}});
    if (ceilings.empty()) return;

    const caps::Set asked_by_user = cap_numbers(user_add);
    const caps::Set asked = cap_numbers(proc.cap_add);
    for (int c : caps::resolve(proc.cap_add, proc.cap_drop)) {
        for (const auto& ceil : ceilings) {
            if (has_cap(ceil.allowed, c)) continue;
            // A default capability outside the ceiling is quietly dropped (tightening is always
            // safe); one that was asked for is refused, so the asker learns why it is missing.
            if (!has_cap(asked, c)) {
                proc.cap_drop.push_back(caps::name_of(c));
                break;
            }
            std::string what = has_cap(asked_by_user, c) ? "--cap-add " + caps::name_of(c)
                                                          : "capabilities.add " + caps::name_of(c) + " (" +
                                                                origin_of(p, "capabilities.add") + ")";
            refuse(what, ceil.where, list(caps::names(ceil.allowed), false),
                   "add only capabilities the ceiling lists");
        }
    }
}

void apply_seccomp(const Policy& p, const std::optional<Policy>& admin, const Explicit& given, SandboxSpec& spec) {
    std::string source = "--security-opt seccomp=unconfined";
    if (!given.seccomp && spec.seccomp_profile.empty()) {
        for (const Policy* src : {&p, admin ? &*admin : nullptr}) {
            if (!src || src->seccomp_profile.empty()) continue;
            spec.seccomp_profile = src->seccomp_profile;
            source = "seccomp.profile = \"unconfined\" (" + origin_of(*src, "seccomp.profile") + ")";
            break;
        }
    }
    if (spec.seccomp_profile != "unconfined") return;
    for (const Policy* src : {&p, admin ? &*admin : nullptr}) {
        if (!src || src->allow_unconfined) continue;
        refuse(source, {"seccomp.allow_unconfined", origin_of(*src, "seccomp.allow_unconfined"), src != &p}, "false",
               "run with a seccomp profile (the default, or --security-opt seccomp=FILE)");
    }
}

void apply_mounts(const Policy& p, const std::optional<Policy>& admin, SandboxSpec& spec) {
    bool read_only = p.binds_read_only || (admin && admin->binds_read_only);
    for (auto& b : spec.binds) {
        std::string source = canonical(b.source);
        for (const Policy* src : {&p, admin ? &*admin : nullptr}) {
            if (!src || !src->bind_sources || under_any(source, *src->bind_sources, true)) continue;
            refuse("-v " + b.source + ":" + b.destination,
                   {"mounts.allowed_sources", origin_of(*src, "mounts.allowed_sources"), src != &p},
                   list(*src->bind_sources, true), "bind only paths under the allowed sources", "is outside");
        }
        if (read_only) b.read_only = true;
    }
}

std::string env_name(const std::string& entry) { return entry.substr(0, entry.find('=')); }

void apply_env(const Policy& p, const std::optional<Policy>& admin, SandboxSpec& spec) {
    std::vector<std::string>& env = spec.process.env;
    for (const auto& name : p.env_pass) {
        bool set = std::any_of(env.begin(), env.end(), [&](const std::string& e) { return env_name(e) == name; });
        const char* value = std::getenv(name.c_str());
        if (!set && value) env.push_back(name + "=" + value);  // -e NAME=... given by the user wins
    }
    for (const auto& e : env) {
        std::string name = env_name(e);
        for (const Policy* src : {&p, admin ? &*admin : nullptr}) {
            if (!src || !src->env_allowed || contains(*src->env_allowed, name)) continue;
            throw Error("refused by policy",
                        "the environment variable " + name + " is not in " +
                            (src != &p ? std::string("the admin's env.allowed = ") : std::string("env.allowed = ")) +
                            list(*src->env_allowed, true) + " (" + origin_of(*src, "env.allowed") + ")",
                        0, "pass only the variables the policy allows");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// finish_merged: what no single key can check.

[[noreturn]] void contradiction(const Policy& p, const std::string& key, const std::string& what, const std::string& hint) {
    throw Error("policy " + origin_of(p, key), what, 0, hint);
}

void check_defaults_within_ceilings(const Policy& p) {
    for (size_t i = 0; i < std::size(kLimitKeys); ++i) {
        std::string name = kLimitKeys[i].name;
        auto d = limit(p.defaults, i), c = limit(p.ceilings, i);
        if (d && c && exceeds(*d, *c))
            contradiction(p, "limits." + name,
                          "limits." + name + " = " + format_limit(i, *d) + " exceeds ceilings." + name + " = " +
                              format_limit(i, *c) + " (" + origin_of(p, "ceilings." + name) + ")",
                          "a default must be within its ceiling: lower the default or raise the ceiling");
    }
    for (const auto& k : kDeviceKeys)
        if (auto a = rate_above(p.defaults.*k.rates, p.ceilings.*k.rates)) {
            const std::string ceiling_key = device_key(k, "ceilings", a->ceiling_dev);
            contradiction(p, device_key(k, "limits", a->dev),
                          device_key(k, "limits", a->dev) + " = " + format_size(a->rate) + " exceeds " + ceiling_key +
                              " = " + format_size(a->ceiling) + " (" + origin_of(p, ceiling_key) + ")",
                          "a default must be within its ceiling: lower the default or raise the ceiling");
        }
    const Limits& d = p.defaults;
    if (d.memory && d.memory_swap && *d.memory_swap > 0 && *d.memory_swap < *d.memory)
        contradiction(p, "limits.memory_swap",
                      "limits.memory_swap = " + format_size(*d.memory_swap) + " is below limits.memory = " +
                          format_size(*d.memory),
                      "memory_swap counts memory plus swap: make it at least memory (or -1 for unlimited swap)");
}

void check_lists_within_allowed(const Policy& p) {
    if (p.cap_allowed) {
        caps::Set allowed = cap_numbers(*p.cap_allowed);
        for (int c : cap_numbers(p.cap_add))
            if (!has_cap(allowed, c))
                contradiction(p, "capabilities.add",
                              "capabilities.add includes " + caps::name_of(c) + ", which capabilities.allowed (" +
                                  origin_of(p, "capabilities.allowed") + ") does not",
                              "add it to capabilities.allowed or remove it from capabilities.add");
    }
    if (p.env_allowed)
        for (const auto& n : p.env_pass)
            if (!contains(*p.env_allowed, n))
                contradiction(p, "env.pass",
                              "env.pass includes " + n + ", which env.allowed (" + origin_of(p, "env.allowed") + ") does not",
                              "add it to env.allowed or remove it from env.pass");
    if (p.seccomp_profile == "unconfined" && !p.allow_unconfined)
        contradiction(p, "seccomp.profile", "seccomp.profile = \"unconfined\" contradicts seccomp.allow_unconfined = false (" +
                                                origin_of(p, "seccomp.allow_unconfined") + ")",
                      "choose one");
}

// ---------------------------------------------------------------------------------------------
// to_toml, one section at a time.

void print_limits(std::string& out, const char* section, const Limits& l) {
    out += std::string("\n[") + section + "]\n";
    bool any = false;
    for (size_t i = 0; i < std::size(kLimitKeys); ++i) {
        auto v = limit(l, i);
        if (!v) continue;
        any = true;
        Kind kind = kLimitKeys[i].kind;
        bool text = kind == Kind::Size || kind == Kind::Duration;
        std::string value = format_limit(i, *v);
        out += std::string(kLimitKeys[i].name) + " = " + (text && *v != -1 ? quote(value) : value) + "\n";
    }
    for (const auto& k : kDeviceKeys) {
        const auto& rates = l.*k.rates;
        if (rates.empty()) continue;
        any = true;
        std::string table;
        for (const auto& [dev, rate] : rates) table += (table.empty() ? "" : ", ") + quote(dev) + " = " + quote(format_size(rate));
        out += std::string(k.name) + " = { " + table + " }\n";
    }
    if (!any) out += "# none set\n";
}

void print_rules(std::string& out, const char* key, const std::vector<Rule>& rules) {
    if (rules.empty()) {
        out += std::string(key) + " = []\n";
        return;
    }
    out += std::string(key) + " = [\n";
    for (const auto& r : rules) out += "  " + describe(r) + ",  # " + r.origin + "\n";
    out += "]\n";
}

void print_optional_list(std::string& out, const char* key, const std::optional<std::vector<std::string>>& v,
                         const char* unset) {
    if (v) out += std::string(key) + " = " + list(*v, true) + "\n";
    else out += std::string("# ") + key + ": not set (" + unset + ")\n";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions.

std::string host_problem(const std::string& host) {
    if (host.empty()) return "the host name is empty";
    if (host == "*") return {};
    std::string name = host.rfind("*.", 0) == 0 ? host.substr(2) : host;
    if (name.find('*') != std::string::npos) return "a wildcard is only allowed as the whole first label, as in *.example.com";
    if (!name.empty() && name.back() == '.') return "drop the trailing dot";
    if (parse_address(name)) return "'" + name + "' is an address: write it as cidr = \"" + name + "\"";
    if (name.size() > 253) return "a DNS name is at most 253 characters";
    size_t start = 0;
    std::string last;
    while (start <= name.size()) {
        size_t dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        std::string label = name.substr(start, dot - start);
        if (label.empty()) return "empty label (two dots, or a leading dot)";
        if (label.size() > 63) return "the label '" + label + "' is longer than 63 characters";
        for (char c : label) {
            if (c >= 'A' && c <= 'Z') return "host names must be lowercase";
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                return std::string("'") + c + "' is not allowed in a DNS name (letters, digits, '-' and '.')";
        }
        if (label.front() == '-' || label.back() == '-') return "the label '" + label + "' starts or ends with '-'";
        last = label;
        start = dot + 1;
    }
    if (std::all_of(last.begin(), last.end(), is_digit)) return "the last label of a DNS name cannot be all digits";
    return {};
}

std::string cidr_problem(const std::string& cidr) {
    std::string why;
    return parse_cidr(cidr, &why) ? std::string() : why;
}

void check_within(const Policy& user, const Policy& admin) {
    within_network(user, admin);
    within_limits(user, admin);
    within_device_rates(user, admin);
    within_capabilities(user, admin);
    within_seccomp(user, admin);
    within_mounts(user, admin);
    within_env(user, admin);
}

void apply(const Policy& policy, const std::optional<Policy>& admin, const Explicit& given, SandboxSpec& spec) {
    if (admin) check_within(policy, *admin);
    apply_limits(policy, admin, given, spec);
    apply_device_rates(policy, admin, spec);
    apply_capabilities(policy, admin, spec);
    apply_seccomp(policy, admin, given, spec);
    apply_mounts(policy, admin, spec);
    apply_env(policy, admin, spec);
}

Egress egress(const Policy& policy, const std::optional<Policy>& admin, const std::string& network_flag) {
    if (!network_flag.empty() && network_flag != "none" && network_flag != "egress")
        fail("invalid --network", network_flag, "use none or egress");
    Egress e;
    e.mode = network_flag.empty() ? policy.network : network_flag;
    if (e.mode != "egress") return e;
    if (admin) {
        check_within(policy, *admin);
        if (admin->network != "egress")
            throw Error("refused by policy",
                        "egress exceeds the admin ceiling network.mode = " + quote(admin->network) + " (" +
                            origin_of(*admin, "network.mode") + ")",
                        0, "run with --network none; this host allows no egress");
    }
    if (policy.allow.empty())
        fail("no egress to give",
             (policy.sources.empty() ? std::string("the policy") : policy.sources.back()) + " allows no destination",
             "use --policy registries or agent, or a policy with [network] allow rules");
    e.allow = policy.allow;
    e.deny = policy.deny;
    if (admin) e.deny.insert(e.deny.end(), admin->deny.begin(), admin->deny.end());
    e.icmp = policy.icmp && (!admin || admin->icmp);
    return e;
}

bool permits(const Egress& rules, const std::string& host, const std::string& addr, uint16_t port,
             const std::string& proto) {
    if (rules.mode != "egress") return false;
    std::string name;
    for (char c : host) name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!name.empty() && name.back() == '.') name.pop_back();
    std::optional<Net> a = addr.empty() ? std::nullopt : parse_address(addr);
    auto dest = [&](const Rule& r) {
        if (!r.host.empty()) return !name.empty() && host_matches(r.host, name);
        return a && net_covers(must_parse_cidr(r.cidr), *a);
    };
    auto matches = [&](const Rule& r) {
        if (!dest(r) || !proto_lets(r, proto)) return false;
        return proto == "icmp" || r.ports.empty() ||
               std::any_of(r.ports.begin(), r.ports.end(), [&](auto rg) { return rg.first <= port && port <= rg.second; });
    };
    if (std::any_of(rules.deny.begin(), rules.deny.end(), matches)) return false;
    if (proto == "icmp" && rules.icmp && std::any_of(rules.allow.begin(), rules.allow.end(), dest)) return true;
    return std::any_of(rules.allow.begin(), rules.allow.end(), matches);
}

std::string to_toml(const Policy& p) {
    std::string out = "# The effective policy, merged from:\n";
    for (const auto& s : p.sources) out += "#   " + s + "\n";
    out += "\n[network]\nmode = " + quote(p.network) + "\n";
    out += std::string("icmp = ") + (p.icmp ? "true" : "false") + "\n";
    print_rules(out, "allow", p.allow);
    print_rules(out, "deny", p.deny);
    print_limits(out, "limits", p.defaults);
    print_limits(out, "ceilings", p.ceilings);
    out += "\n[capabilities]\nadd = " + list(p.cap_add, true) + "\ndrop = " + list(p.cap_drop, true) + "\n";
    print_optional_list(out, "allowed", p.cap_allowed, "no ceiling");
    out += "\n[seccomp]\nprofile = " + quote(p.seccomp_profile.empty() ? "default" : p.seccomp_profile) + "\n";
    out += std::string("allow_unconfined = ") + (p.allow_unconfined ? "true" : "false") + "\n";
    out += "\n[mounts]\n";
    print_optional_list(out, "allowed_sources", p.bind_sources, "any path the caller can read");
    out += std::string("read_only = ") + (p.binds_read_only ? "true" : "false") + "\n";
    out += "\n[env]\npass = " + list(p.env_pass, true) + "\n";
    print_optional_list(out, "allowed", p.env_allowed, "any variable");
    return out;
}

namespace detail {

void finish_merged(Policy& merged) {
    check_defaults_within_ceilings(merged);
    check_lists_within_allowed(merged);
    // Deny beats allow: an allow rule that deny rules cover entirely can never match, so it is
    // dropped from the effective policy. One that overlaps a deny only in part stays, and
    // permits() checks deny rules first.
    auto& allow = merged.allow;
    allow.erase(std::remove_if(allow.begin(), allow.end(),
                               [&](const Rule& r) { return covered(r, merged.deny, false); }),
                allow.end());
}

}  // namespace detail

}  // namespace hutch::policy
