// The sandbox's DNS forwarder and refusal log, run by its init between signals (init::Service).
// Private to src/net.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "hutch/net/dns.hpp"
#include "hutch/net/nft.hpp"
#include "hutch/net/rules.hpp"
#include "hutch/policy/policy.hpp"
#include "hutch/sandbox/init.hpp"

namespace hutch::net {

class Forwarder : public init::Service {
public:
    // `upstream`: sockets connected to the host's resolvers (made in the host's network
    // namespace; they keep working from inside). `report`: the file the report is written to.
    Forwarder(const policy::Egress& rules, std::vector<Ip> host_addresses, std::vector<int> upstream,
              std::vector<std::string> resolver_names, int report, std::string sandbox, const Nft& nft);

    // Sockets on 127.0.0.1:53 and [::1]:53, and the NFLOG socket. Needs loopback up.
    void open();

    std::vector<int> fds() override;
    void ready(int fd) override;
    int timeout_ms() override;
    void tick() override;

private:
    struct Pending {
        dns::Query query;
        sockaddr_storage client{};
        socklen_t client_len = 0;
        int listener = -1;
        size_t resolver = 0;
        double deadline = 0;
        std::vector<size_t> groups;  // the set groups the answer's addresses go into
    };
    struct Event {
        std::string time, kind, name, destination, proto, reason;
        uint16_t port = 0;
    };

    void on_query(int fd);
    void on_upstream(size_t resolver);
    void on_log();
    bool send_upstream(uint16_t id, Pending& p);
    void reply(const Pending& p, const std::vector<uint8_t>& message);
    // Why the answer's addresses may not be given out, or "" (and then they are in the sets).
    std::string admit(const dns::Response& r, const Pending& p);
    void record(Event e);
    void write_report();

    const policy::Egress& rules_;
    std::vector<Ip> host_addresses_;
    std::vector<Cidr> allowed_cidrs_, denied_cidrs_;
    SetGroups groups_;  // set group of each rule
    std::vector<int> upstream_;
    std::vector<std::string> resolver_names_;
    int report_;
    std::string sandbox_;
    const Nft& nft_;
    std::vector<int> listeners_;
    int nflog_ = -1;
    std::map<uint16_t, Pending> pending_;
    std::map<std::string, std::string> names_;  // address → the name it was resolved from
    std::deque<Event> events_;
    uint64_t refused_dns_ = 0, blocked_ = 0;
};

}  // namespace hutch::net
