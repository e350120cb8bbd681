#include "hutch/net/nflog.hpp"

#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fcntl.h>
#include <sys/time.h>

#include <cstring>

#include "hutch/core/error.hpp"

namespace hutch::net {

namespace {

// Sends one NFULNL_MSG_CONFIG request with a single attribute and checks the kernel's ack.
void configure(int fd, uint16_t group, uint16_t attr_type, const void* payload, size_t len) {
    alignas(NLMSG_ALIGNTO) char buf[128] = {};
    auto* nlh = reinterpret_cast<nlmsghdr*>(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    auto* nfg = reinterpret_cast<nfgenmsg*>(NLMSG_DATA(nlh));
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(group);
    auto* attr = reinterpret_cast<nlattr*>(reinterpret_cast<char*>(nfg) + NLMSG_ALIGN(sizeof(nfgenmsg)));
    attr->nla_type = attr_type;
    attr->nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    std::memcpy(reinterpret_cast<char*>(attr) + NLA_HDRLEN, payload, len);
    nlh->nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(NLMSG_ALIGN(sizeof(nfgenmsg)) + NLA_ALIGN(attr->nla_len)));
    if (::send(fd, buf, nlh->nlmsg_len, 0) < 0) throw_errno("cannot configure the refusal log", "NFLOG");
    alignas(NLMSG_ALIGNTO) char reply[512];
    ssize_t n = ::recv(fd, reply, sizeof reply, 0);
    if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr)))) throw_errno("no answer from NFLOG", "netlink");
    auto* rh = reinterpret_cast<nlmsghdr*>(reply);
    if (rh->nlmsg_type == NLMSG_ERROR) {
        int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(rh))->error;
        if (err != 0) {
            errno = err;
            throw_errno("cannot bind the refusal log", "NFLOG group " + std::to_string(group),
                        "the kernel needs nfnetlink_log (CONFIG_NETFILTER_NETLINK_LOG)");
        }
    }
}

}  // namespace

UniqueFd open_nflog(int group) {
    // Blocking for the configuration round trips (bounded by a receive timeout), then
    // non-blocking: init reads it from its poll loop.
    UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
    if (!fd) throw_errno("cannot open a netfilter netlink socket", "NFLOG");
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw_errno("cannot bind", "NFLOG socket");
    struct timeval tv {1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    nfulnl_msg_config_cmd cmd{NFULNL_CFG_CMD_BIND};
    configure(fd.get(), static_cast<uint16_t>(group), NFULA_CFG_CMD, &cmd, sizeof cmd);
    // Enough of each packet for its IP and transport headers (IPv6 with a few extension headers).
    nfulnl_msg_config_mode mode{};
    mode.copy_range = htonl(160);
    mode.copy_mode = NFULNL_COPY_PACKET;
    configure(fd.get(), static_cast<uint16_t>(group), NFULA_CFG_MODE, &mode, sizeof mode);
    // Each packet at once: the default batches up to 100 for up to a second, and a short-lived
    // command would be gone (and its init too) before the batch arrived.
    uint32_t one = htonl(1), none = htonl(0);
    configure(fd.get(), static_cast<uint16_t>(group), NFULA_CFG_QTHRESH, &one, sizeof one);
    configure(fd.get(), static_cast<uint16_t>(group), NFULA_CFG_TIMEOUT, &none, sizeof none);
    // A big receive buffer: a burst of refusals should be counted, not lost.
    int size = 1 << 20;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    int flags = ::fcntl(fd.get(), F_GETFL);
    ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
    return fd;
}

std::optional<Packet> parse_ip_packet(const uint8_t* p, size_t n) {
    Packet pkt;
    size_t l4 = 0;
    int proto = -1;
    if (n >= 20 && (p[0] >> 4) == 4) {
        size_t ihl = static_cast<size_t>(p[0] & 0xF) * 4;
        if (ihl < 20 || ihl > n) return std::nullopt;
        pkt.destination.family = AF_INET;
        std::memcpy(pkt.destination.bytes, p + 16, 4);
        proto = p[9];
        l4 = ihl;
    } else if (n >= 40 && (p[0] >> 4) == 6) {
        pkt.destination.family = AF_INET6;
        std::memcpy(pkt.destination.bytes, p + 24, 16);
        proto = p[6];
        l4 = 40;
        // Hop-by-hop, routing and destination options headers: skip to the transport header.
        for (int hops = 0; hops < 4 && (proto == 0 || proto == 43 || proto == 60); ++hops) {
            if (l4 + 8 > n) return pkt;
            proto = p[l4];
            l4 += (static_cast<size_t>(p[l4 + 1]) + 1) * 8;
        }
    } else {
        return std::nullopt;
    }
    switch (proto) {
        case IPPROTO_TCP: pkt.proto = "tcp"; break;
        case IPPROTO_UDP: pkt.proto = "udp"; break;
        case IPPROTO_ICMP: pkt.proto = "icmp"; break;
        case IPPROTO_ICMPV6: pkt.proto = "icmpv6"; break;
        default: pkt.proto = "proto " + std::to_string(proto);
    }
    if ((proto == IPPROTO_TCP || proto == IPPROTO_UDP) && l4 + 4 <= n)
        pkt.port = static_cast<uint16_t>(p[l4 + 2] << 8 | p[l4 + 3]);
    return pkt;
}

std::vector<Packet> parse_nflog(const uint8_t* data, size_t size) {
    std::vector<Packet> out;
    size_t off = 0;
    while (size - off >= NLMSG_HDRLEN) {
        nlmsghdr h;
        std::memcpy(&h, data + off, sizeof h);
        if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > size - off) break;
        size_t end = off + h.nlmsg_len;
        if (h.nlmsg_type == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)) {
            size_t at = off + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
            while (at + NLA_HDRLEN <= end) {
                nlattr a;
                std::memcpy(&a, data + at, sizeof a);
                if (a.nla_len < NLA_HDRLEN || a.nla_len > end - at) break;
                if ((a.nla_type & NLA_TYPE_MASK) == NFULA_PAYLOAD)
                    if (auto pkt = parse_ip_packet(data + at + NLA_HDRLEN, a.nla_len - NLA_HDRLEN)) out.push_back(*pkt);
                at += NLA_ALIGN(a.nla_len);
            }
        }
        off += NLMSG_ALIGN(h.nlmsg_len);
    }
    return out;
}

}  // namespace hutch::net
