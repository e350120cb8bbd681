// Refused packets, as the sandbox's ruleset reports them: an NFLOG netlink socket bound to the
// ruleset's log group, read by the sandbox's init.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hutch/core/fd.hpp"
#include "hutch/net/rules.hpp"

namespace hutch::net {

struct Packet {
    Ip destination;
    std::string proto;  // "tcp", "udp", "icmp", "icmpv6", or the protocol number
    uint16_t port = 0;  // destination port (tcp, udp); 0 otherwise
};

// Opens the socket and binds it to `group` in the caller's network namespace (CAP_NET_ADMIN).
UniqueFd open_nflog(int group);

// The packets of one datagram read from the socket (malformed messages are skipped).
std::vector<Packet> parse_nflog(const uint8_t* data, size_t size);

// The destination of a raw IPv4 or IPv6 packet; nullopt when it is too short to tell.
std::optional<Packet> parse_ip_packet(const uint8_t* data, size_t size);

}  // namespace hutch::net
