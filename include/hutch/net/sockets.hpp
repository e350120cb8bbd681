// The DNS forwarder's UDP sockets, on both sides of the sandbox's network namespace. A family the
// kernel does not offer (IPv6 off with ipv6.disable=1, or filtered away) gives an invalid fd rather
// than an error: the other family still serves.
#pragma once

#include <string>

#include "hutch/core/fd.hpp"

namespace hutch::net {

// Bound to port 53 of the loopback address of `family` (AF_INET or AF_INET6), non-blocking.
UniqueFd listen_dns(int family);

// Connected to port 53 of `address` ("ADDR" or "ADDR%IFACE", as resolv.conf names it): the kernel
// then accepts datagrams from there only, and send() reaches nothing else. Invalid when the
// address is not one, its family is not offered, or it cannot be reached.
UniqueFd connect_resolver(const std::string& address);

}  // namespace hutch::net
