#include "hutch/net/rules.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace hutch::net {

bool Ip::operator==(const Ip& o) const {
    return family == o.family && std::memcmp(bytes, o.bytes, family == AF_INET ? 4 : 16) == 0;
}

std::optional<Ip> parse_ip(const std::string& text) {
    Ip ip;
    if (::inet_pton(AF_INET, text.c_str(), ip.bytes) == 1) {
        ip.family = AF_INET;
        return ip;
    }
    if (::inet_pton(AF_INET6, text.c_str(), ip.bytes) == 1) {
        ip.family = AF_INET6;
        return ip;
    }
    return std::nullopt;
}

std::string format_ip(const Ip& ip) {
    char buf[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(ip.family, ip.bytes, buf, sizeof buf);
    return buf;
}

bool Cidr::contains(const Ip& ip) const {
    if (ip.family != base.family) return false;
    int full = prefix / 8, rest = prefix % 8;
    if (std::memcmp(ip.bytes, base.bytes, static_cast<size_t>(full)) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
    return (ip.bytes[full] & mask) == (base.bytes[full] & mask);
}

std::optional<Cidr> parse_cidr(const std::string& text) {
    size_t slash = text.find('/');
    auto ip = parse_ip(text.substr(0, slash));
    if (!ip) return std::nullopt;
    int max = ip->family == AF_INET ? 32 : 128;
    int prefix = max;
    if (slash != std::string::npos) {
        std::string p = text.substr(slash + 1);
        if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
        prefix = std::stoi(p);
        if (prefix > max) return std::nullopt;
    }
    return Cidr{*ip, prefix};
}

bool name_matches(const std::string& pattern_in, const std::string& name) {
    std::string pattern = pattern_in;
    if (!pattern.empty() && pattern.back() == '.') pattern.pop_back();
    for (auto& c : pattern) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (pattern == "*") return !name.empty();
    if (pattern.rfind("*.", 0) == 0) {
        std::string suffix = pattern.substr(1);  // ".example"
        return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    }
    return pattern == name;
}

namespace {

struct Range {
    const char* cidr;
    const char* reason;
};

// Order matters: the metadata addresses sit inside link-local and ULA ranges.
constexpr Range kForbidden4[] = {
    {"169.254.169.254/32", "the cloud metadata address"},
    {"0.0.0.0/8", "an unspecified address"},
    {"127.0.0.0/8", "a loopback address"},
    {"169.254.0.0/16", "a link-local address"},
    {"10.0.0.0/8", "a private address"},
    {"172.16.0.0/12", "a private address"},
    {"192.168.0.0/16", "a private address"},
    {"100.64.0.0/10", "a shared (carrier-grade NAT) address"},
    {"192.0.0.0/24", "an IETF protocol address"},
    {"224.0.0.0/4", "a multicast address"},
    {"240.0.0.0/4", "a reserved address"},
};
constexpr Range kForbidden6[] = {
    {"fd00:ec2::254/128", "the cloud metadata address"},
    {"::/128", "an unspecified address"},
    {"::1/128", "a loopback address"},
    {"fe80::/10", "a link-local address"},
    {"fc00::/7", "a private (unique local) address"},
    {"ff00::/8", "a multicast address"},
};

const char* classify(const Ip& ip) {
    if (ip.family == AF_INET6) {
        // IPv4-mapped and NAT64 addresses reach the IPv4 address inside them.
        static const Cidr mapped = *parse_cidr("::ffff:0:0/96"), nat64 = *parse_cidr("64:ff9b::/96");
        if (mapped.contains(ip) || nat64.contains(ip)) {
            Ip v4;
            v4.family = AF_INET;
            std::memcpy(v4.bytes, ip.bytes + 12, 4);
            return classify(v4);
        }
        for (const auto& r : kForbidden6)
            if (parse_cidr(r.cidr)->contains(ip)) return r.reason;
        return nullptr;
    }
    for (const auto& r : kForbidden4)
        if (parse_cidr(r.cidr)->contains(ip)) return r.reason;
    return nullptr;
}

std::string ports_expr(const policy::Rule& r) {
    std::string out = "{ ";
    for (size_t i = 0; i < r.ports.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(r.ports[i].first);
        if (r.ports[i].second != r.ports[i].first) out += "-" + std::to_string(r.ports[i].second);
    }
    return out + " }";
}

// The destination of a CIDR rule: "ip daddr 192.0.2.0/24", "ip6 daddr 2001:db8::/32".
std::vector<std::string> destinations(const policy::Rule& r) {
    auto c = parse_cidr(r.cidr);
    if (!c) return {};  // the policy module validated it; nothing to enforce if it did not parse
    return {std::string(c->base.family == AF_INET ? "ip" : "ip6") + " daddr " + r.cidr};
}

std::string echo_match(const std::string& dest) {
    return dest.rfind("ip6", 0) == 0 ? "icmpv6 type echo-request" : "icmp type echo-request";
}

// The match part of an allow rule's statements for one destination (no verdict).
std::vector<std::string> allow_matches(const policy::Rule& r, const std::string& dest, bool icmp) {
    std::vector<std::string> out;
    if (r.proto == "icmp") return {dest + " " + echo_match(dest)};
    std::string protos = r.proto == "any" ? "meta l4proto { tcp, udp }" : "meta l4proto " + r.proto;
    if (r.ports.empty()) out.push_back(dest + " " + protos);
    else if (r.proto == "any") out.push_back(dest + " " + protos + " th dport " + ports_expr(r));
    else out.push_back(dest + " " + r.proto + " dport " + ports_expr(r));
    // As the policy module reads rules: "any" protocol with no ports includes ICMP echo.
    if (icmp || (r.proto == "any" && r.ports.empty())) out.push_back(dest + " " + echo_match(dest));
    return out;
}

}  // namespace

const char* forbidden_reason(const Ip& ip, const std::vector<Ip>& host_addresses, const std::vector<Cidr>& allowed) {
    for (const auto& c : allowed)
        if (c.contains(ip)) return nullptr;
    if (const char* why = classify(ip)) return why;
    for (const auto& h : host_addresses)
        if (h == ip) return "an address of the host";
    return nullptr;
}

std::string set_name(size_t index, int family) {
    return "r" + std::to_string(index) + (family == AF_INET ? "_4" : "_6");
}

namespace {

// Per rule: its set group (numbered from `first`), or SIZE_MAX for a CIDR rule.
std::vector<size_t> groups_of(const std::vector<policy::Rule>& rules, size_t first, size_t* next) {
    std::vector<size_t> out;
    std::vector<std::string> signatures;
    for (const auto& r : rules) {
        if (r.host.empty()) {
            out.push_back(SIZE_MAX);
            continue;
        }
        std::string sig = r.proto + " " + ports_expr(r);
        auto it = std::find(signatures.begin(), signatures.end(), sig);
        out.push_back(first + static_cast<size_t>(it - signatures.begin()));
        if (it == signatures.end()) signatures.push_back(sig);
    }
    *next = first + signatures.size();
    return out;
}

// The statements of `rules` ending in `verdict`; sets of name rules are declared in `sets`.
// `split`: rules with ports go to `with_ports`, the others to `any_port` (allow rules: DNS is
// refused between them).
void emit(const std::vector<policy::Rule>& rules, const std::vector<size_t>& groups, bool icmp, bool deny,
          std::string& sets, std::string& with_ports, std::string& any_port) {
    std::vector<size_t> done;
    for (size_t i = 0; i < rules.size(); ++i) {
        const auto& r = rules[i];
        std::vector<std::string> dests;
        if (!r.host.empty()) {
            // The first rule of a group stands for all of them: they differ only in names.
            size_t g = groups[i];
            if (std::find(done.begin(), done.end(), g) != done.end()) continue;
            done.push_back(g);
            sets += "  set " + set_name(g, AF_INET) + " { type ipv4_addr; flags timeout; size 4096; }\n";
            sets += "  set " + set_name(g, AF_INET6) + " { type ipv6_addr; flags timeout; size 4096; }\n";
            dests = {"ip daddr @" + set_name(g, AF_INET), "ip6 daddr @" + set_name(g, AF_INET6)};
        } else {
            dests = destinations(r);
        }
        std::string& out = r.ports.empty() ? any_port : with_ports;
        for (const auto& dest : dests) {
            if (deny && denies_everything(r)) out += "    " + dest + " jump refuse\n";
            else
                for (const auto& m : allow_matches(r, dest, icmp)) out += "    " + m + (deny ? " jump refuse\n" : " accept\n");
        }
    }
}

}  // namespace

bool denies_everything(const policy::Rule& r) { return r.proto == "any" && r.ports.empty(); }

SetGroups set_groups(const policy::Egress& e) {
    SetGroups g;
    size_t next = 0;
    g.allow = groups_of(e.allow, 0, &next);
    g.deny = groups_of(e.deny, next, &next);
    return g;
}

std::string ruleset(const policy::Egress& e) {
    std::string sets, deny, with_ports, any_port;
    SetGroups groups = set_groups(e);
    // Deny rules come first, whatever their ports: deny beats allow.
    emit(e.deny, groups.deny, false, true, sets, deny, deny);
    emit(e.allow, groups.allow, e.icmp, false, sets, with_ports, any_port);
    // The namespace is new and empty: no table to replace.
    std::string out = "table inet hutch {\n" + sets;
    out +=
        "  chain refuse {\n"
        // NFLOG tells init about the refusal; limited, so that a flood cannot busy the init.
        "    limit rate 50/second burst 100 packets log group " + std::to_string(kLogGroup) + "\n"
        // Refused at once rather than dropped: the client fails now instead of after a timeout.
        "    meta l4proto tcp reject with tcp reset\n"
        "    reject with icmpx admin-prohibited\n"
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority filter; policy drop;\n"
        "    oifname \"lo\" accept\n"
        "    ct state established,related accept\n"

        // Neighbour discovery and multicast listener reports: the kernel's own, answered by
        // pasta on the link and never forwarded, so nothing leaves through them.
        "    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, "
        "mld2-listener-report } accept\n";
    out += deny + with_ports;
    // DNS and DNS over TLS go to the forwarder on loopback; only a rule that names the port
    // (above) reaches another server.
    out += "    meta l4proto { tcp, udp } th dport { 53, 853 } jump refuse\n";
    out += any_port;
    out += "    jump refuse\n  }\n}\n";
    return out;
}

std::string add_elements(const std::vector<size_t>& groups, const Ip& ip, uint32_t ttl) {
    if (ttl > kTtlMax) ttl = kTtlMax;
    std::string addr = format_ip(ip), timeout = std::to_string(ttl + kTtlGrace) + "s", out;
    for (size_t g : groups) {
        std::string set = "inet hutch " + set_name(g, ip.family);
        // add (so that the delete finds it), delete, add: one transaction that refreshes the
        // timeout without a moment in which the address is missing.
        out += "add element " + set + " { " + addr + " timeout " + timeout + " }\n";
        out += "delete element " + set + " { " + addr + " }\n";
        out += "add element " + set + " { " + addr + " timeout " + timeout + " }\n";
    }
    return out;
}

}  // namespace hutch::net
