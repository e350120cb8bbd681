// Policies: what a sandbox is allowed. One TOML file describes egress rules and the defaults and
// ceilings of everything else hutch enforces (limits, capabilities, seccomp, bind sources,
// timeout, environment passthrough). Policies include others; deny beats allow. An admin policy
// (/etc/hutch/policy.toml) caps every user's: a user can tighten, never widen. This module only
// decides; sandbox/ and net/ enforce. Schema: docs/policy.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "hutch/sandbox/spec.hpp"

namespace hutch::policy {

// One egress rule: a destination (a host name, "*.suffix" wildcard, or CIDR), optional ports
// (empty: any), and a protocol ("tcp", "udp", "icmp" or "any").
struct Rule {
    std::string host;   // exact name or "*.example.com"; empty when cidr is set
    std::string cidr;   // "10.0.0.0/8", "2001:db8::/32", or a single address
    std::vector<std::pair<uint16_t, uint16_t>> ports;  // inclusive ranges; empty: any port
    std::string proto = "any";
    std::string origin;  // "file:line:column" it was written at, for messages
};

struct Limits {
    std::optional<int64_t> memory, memory_swap, pids;
    std::optional<double> cpus;
    std::optional<int64_t> cpu_weight, io_weight;
    std::optional<double> timeout;  // seconds
    // io.max rates per block device, by its path as written ("/dev/vda" -> bytes per second). Keyed
    // by device, so a file's entry replaces an include's for the same path and keeps the others.
    std::map<std::string, int64_t> device_read_bps, device_write_bps;
};

struct Policy {
    std::vector<std::string> sources;  // files merged into this policy, in order

    // [network]
    std::string network = "none";  // "none" or "egress"
    std::vector<Rule> allow;
    std::vector<Rule> deny;
    bool icmp = false;             // ICMP echo to allowed destinations

    // [limits] defaults and [ceilings] maxima
    Limits defaults;
    Limits ceilings;

    // [capabilities]: added by default, and the most a sandbox may hold
    std::vector<std::string> cap_add, cap_drop;
    std::optional<std::vector<std::string>> cap_allowed;  // unset: no ceiling

    // [seccomp]
    std::string seccomp_profile;  // empty: hutch's default
    bool allow_unconfined = true;

    // [mounts]: host paths that may be bound (prefixes); unset: any the caller can read
    std::optional<std::vector<std::string>> bind_sources;
    bool binds_read_only = false;  // every bind is forced read-only

    // [env]: host variables passed through by name (and only these may be passed when set)
    std::vector<std::string> env_pass;
    std::optional<std::vector<std::string>> env_allowed;

    // Where each key was last set: "limits.memory" -> "file:line:column". Messages name a ceiling
    // and where it is set with it, and check_within() judges only what a file set (a key left at
    // its default widens nothing).
    std::map<std::string, std::string> origins;
};

// Loads NAME (a shipped policy under policy_dir(), e.g. "agent") or FILE, following includes.
// Unknown keys and bad values throw hutch::Error with file:line:column.
Policy load(const std::string& name_or_file);

// The admin ceiling: HUTCH_ADMIN_POLICY or /etc/hutch/policy.toml; nullopt if absent.
std::optional<Policy> load_admin();

// Checks that `user` stays within `admin` (egress, limits, capabilities, seccomp, binds, env);
// throws naming the ceiling that `user` would widen and where it is set.
void check_within(const Policy& user, const Policy& admin);

// What the user asked for on the command line, so defaults fill only what was not given.
struct Explicit {
    bool memory = false, pids = false, cpus = false, timeout = false, seccomp = false, network = false;
};

// Fills spec's unset values from the policy's defaults, then checks the spec against the policy's
// ceilings (and the admin's, when given). Throws naming the ceiling a flag exceeds.
void apply(const Policy& policy, const std::optional<Policy>& admin, const Explicit& given, SandboxSpec& spec);

// The effective, merged policy as TOML (for `hutch policy show`).
std::string to_toml(const Policy& policy);

// The egress of one sandbox, for the enforcer (net/): its mode, and the rules to enforce: the
// policy's, plus the admin's deny rules (a name can resolve into an address the admin denies,
// which no check made before the lookup can see).
struct Egress {
    std::string mode = "none";  // "none" or "egress"
    std::vector<Rule> allow, deny;
    bool icmp = false;
};

// network_flag is --network ("none", "egress", or empty when not given; then the policy's mode).
// Refuses egress when the admin policy allows none, or when the policy allows no destination.
Egress egress(const Policy& policy, const std::optional<Policy>& admin, const std::string& network_flag);

// Whether `rules` let a sandbox reach a destination: deny rules first, then allow rules. host is
// the name the sandbox looked up (empty for a bare address), addr the address (empty before the
// lookup), proto "tcp", "udp" or "icmp" (port ignored).
bool permits(const Egress& rules, const std::string& host, const std::string& addr, uint16_t port,
             const std::string& proto);

// What is wrong with a rule's destination; empty when it is valid. Host: a lowercase DNS name,
// "*.suffix" or "*". CIDR: an IPv4 or IPv6 address with an optional /prefix, no host bits set.
std::string host_problem(const std::string& host);
std::string cidr_problem(const std::string& cidr);

namespace detail {
// Shared by load.cpp (the only file that sees toml++) and apply.cpp; not for other callers.
// Checks what no single key can (defaults within ceilings, capabilities.add within allowed, ...)
// and drops allow rules that a deny rule covers entirely.
void finish_merged(Policy& merged);
}  // namespace detail

}  // namespace hutch::policy
