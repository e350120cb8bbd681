#include "hutch/net/sockets.hpp"

#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "hutch/core/error.hpp"
#include "hutch/net/rules.hpp"

namespace hutch::net {

namespace {

// Port 53 of `ip` in `ss`; returns the address's length.
socklen_t dns_address(const Ip& ip, unsigned scope_id, sockaddr_storage& ss) {
    ss = {};
    if (ip.family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(53);
        std::memcpy(&a->sin_addr, ip.bytes, 4);
        return sizeof *a;
    }
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(53);
    std::memcpy(&a->sin6_addr, ip.bytes, 16);
    a->sin6_scope_id = scope_id;
    return sizeof *a;
}

// A non-blocking UDP socket of `family`; invalid when the kernel does not offer the family.
UniqueFd udp_socket(int family, const char* what, const std::string& where) {
    UniqueFd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd && errno != EAFNOSUPPORT) throw_errno(what, where);
    return fd;
}

}  // namespace

UniqueFd listen_dns(int family) {
    const std::string where = family == AF_INET ? "127.0.0.1:53" : "[::1]:53";
    UniqueFd fd = udp_socket(family, "cannot open the DNS forwarder's socket", where);
    if (!fd && family == AF_INET6) return {};  // no IPv6 here
    if (!fd) throw_errno("cannot open the DNS forwarder's socket", where, "this kernel offers no IPv4");
    Ip loopback = *parse_ip(family == AF_INET ? "127.0.0.1" : "::1");
    if (family == AF_INET6) {
        int one = 1;
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    sockaddr_storage ss;
    socklen_t len = dns_address(loopback, 0, ss);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        if (family == AF_INET6 && errno == EADDRNOTAVAIL) return {};  // IPv6 off in this namespace: no ::1
        throw_errno("cannot listen for DNS", where);
    }
    return fd;
}

UniqueFd connect_resolver(const std::string& address) {
    std::string addr = address, scope;
    if (size_t pct = address.find('%'); pct != std::string::npos) {
        addr = address.substr(0, pct);
        scope = address.substr(pct + 1);
    }
    auto ip = parse_ip(addr);
    if (!ip) return {};
    UniqueFd fd = udp_socket(ip->family, "cannot open a socket to the host's resolver", address);
    if (!fd) return {};
    sockaddr_storage ss;
    socklen_t len = dns_address(*ip, scope.empty() ? 0 : ::if_nametoindex(scope.c_str()), ss);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return {};  // unreachable: skip it
    return fd;
}

}  // namespace hutch::net
