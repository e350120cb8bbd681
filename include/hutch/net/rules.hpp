// From a policy's egress rules to what the kernel enforces: the nftables ruleset of a sandbox's
// network namespace, which names the DNS forwarder answers, which set an answer's addresses go
// into, and which answers are refused (rebinding to loopback, metadata, private or host addresses).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hutch/policy/policy.hpp"

namespace hutch::net {

struct Ip {
    int family = 0;  // AF_INET or AF_INET6
    uint8_t bytes[16] = {};
    bool operator==(const Ip& o) const;
};

std::optional<Ip> parse_ip(const std::string& text);
std::string format_ip(const Ip& ip);

struct Cidr {
    Ip base;
    int prefix = 0;
    bool contains(const Ip& ip) const;
};
// "10.0.0.0/8", "2001:db8::/32" or a bare address (a /32 or /128).
std::optional<Cidr> parse_cidr(const std::string& text);

// "a.example" matches only itself; "*.example" matches every name under example (not example
// itself); "*" matches every name. Names are compared lowercase, without a trailing dot.
bool name_matches(const std::string& pattern, const std::string& name);

// Why a DNS answer's address may not be handed to the sandbox, or nullptr: loopback, link-local,
// cloud metadata, private (RFC 1918, CGNAT, ULA), unspecified, multicast or reserved ranges, and
// the host's own addresses. `allowed` are the policy's allow CIDRs: naming a range there is
// consent to reach it.
const char* forbidden_reason(const Ip& ip, const std::vector<Ip>& host_addresses, const std::vector<Cidr>& allowed);

// Rules by name with the same protocol and ports share a pair of nftables sets (a set per rule
// would cost the start-up a millisecond per few rules); allow and deny rules never share. Per
// rule: its set group, or SIZE_MAX for a CIDR rule.
struct SetGroups {
    std::vector<size_t> allow, deny;
};
SetGroups set_groups(const policy::Egress& egress);
// A deny rule for every port and protocol: its names are refused at the DNS forwarder already.
// Narrower deny rules by name put the answers' addresses into their own sets, checked first.
bool denies_everything(const policy::Rule& rule);
// The set that holds the resolved addresses of set group `group` for `family`.
std::string set_name(size_t group, int family);

// Group of the NFLOG messages the ruleset sends for refused packets.
constexpr int kLogGroup = 7;
// How long a resolved address stays in its set beyond the record's TTL: clients cache answers
// a little longer than they should, and connections in progress must not be cut at the edge.
constexpr uint32_t kTtlGrace = 30;
constexpr uint32_t kTtlMax = 86400;

// The whole ruleset (table inet hutch), loaded atomically before the command starts.
std::string ruleset(const policy::Egress& egress);

// One batch that puts `ip` into the sets of `groups` for ttl + kTtlGrace seconds, refreshing the
// timeout of an address already there.
std::string add_elements(const std::vector<size_t>& groups, const Ip& ip, uint32_t ttl);

}  // namespace hutch::net
