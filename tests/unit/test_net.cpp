// The pure parts of --network egress: DNS parsing (hostile input from both sides), name matching,
// rebinding checks, the ruleset, and NFLOG packet parsing.
#include <doctest/doctest.h>
#include <seccomp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <cstring>
#include <random>

#include "hutch/net/dns.hpp"
#include "hutch/net/nflog.hpp"
#include "hutch/net/rules.hpp"
#include "hutch/net/sockets.hpp"

using namespace hutch;
using namespace hutch::net;

namespace {

std::vector<uint8_t> query_for(const std::string& name, uint16_t type) {
    return dns::make_query(0x1234, dns::Question{name, type, dns::kClassIn});
}

// A response to `q` (as make_query built it) with the given answer records appended.
std::vector<uint8_t> response(std::vector<uint8_t> q, const std::vector<std::vector<uint8_t>>& answers) {
    q.resize(q.size() - 11);  // drop the OPT record
    q[2] |= 0x80;             // QR
    q[7] = static_cast<uint8_t>(answers.size());
    q[11] = 0;
    for (const auto& a : answers) q.insert(q.end(), a.begin(), a.end());
    return q;
}

// An answer record owned by the question's name (a pointer to offset 12).
std::vector<uint8_t> a_record(const uint8_t (&ip)[4], uint32_t ttl) {
    return {0xC0, 12, 0, 1, 0, 1, uint8_t(ttl >> 24), uint8_t(ttl >> 16), uint8_t(ttl >> 8), uint8_t(ttl), 0, 4,
            ip[0], ip[1], ip[2], ip[3]};
}

}  // namespace

TEST_CASE("a client's query is read, and what is not a plain query is rejected") {
    auto q = query_for("Example.COM", dns::kTypeA);
    auto parsed = dns::parse_query(q.data(), q.size());
    REQUIRE(parsed);
    CHECK(parsed->question.name == "example.com");
    CHECK(parsed->question.type == dns::kTypeA);
    CHECK(parsed->udp_size == 1232);
    auto resp = response(q, {});
    CHECK_FALSE(dns::parse_query(resp.data(), resp.size()));  // a response, not a query
    for (size_t n = 0; n < q.size(); ++n) CHECK_FALSE(dns::parse_query(q.data(), n));  // every truncation
}

TEST_CASE("a label holding a dot or another odd byte is refused, so names cannot be smuggled") {
    // "a.test" as ONE label under "evil": would read as a.test.evil if dots were let through.
    std::vector<uint8_t> q = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                              6, 'a', '.', 't', 'e', 's', 't', 4, 'e', 'v', 'i', 'l', 0, 0, 1, 0, 1};
    CHECK_FALSE(dns::parse_query(q.data(), q.size()));
    q[14] = 0;  // a NUL byte instead of the dot
    CHECK_FALSE(dns::parse_query(q.data(), q.size()));
}

TEST_CASE("compression loops and out-of-bounds pointers are malformed") {
    std::vector<uint8_t> q = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1};
    CHECK_FALSE(dns::parse_query(q.data(), q.size()));  // points at itself
    q[13] = 200;
    CHECK_FALSE(dns::parse_query(q.data(), q.size()));
}

TEST_CASE("a response yields the addresses of the question's name and its CNAME chain only") {
    auto q = query_for("a.test", dns::kTypeA);
    uint8_t ip1[4] = {203, 0, 113, 10};
    auto resp = response(q, {a_record(ip1, 60)});
    auto r = dns::parse_response(resp.data(), resp.size());
    REQUIRE(r);
    CHECK(r->question.name == "a.test");
    REQUIRE(r->addresses.size() == 1);
    CHECK(r->addresses[0].family == AF_INET);
    CHECK(r->addresses[0].ttl == 60);
    // A record for another owner ("x", a new name) is ignored.
    std::vector<uint8_t> other = {1, 'x', 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1};
    auto resp2 = response(q, {a_record(ip1, 60), other});
    auto r2 = dns::parse_response(resp2.data(), resp2.size());
    REQUIRE(r2);
    CHECK(r2->addresses.size() == 1);
    // An A record of the wrong length is malformed.
    auto bad = response(q, {{0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 1, 2, 3}});
    CHECK_FALSE(dns::parse_response(bad.data(), bad.size()));
}

TEST_CASE("random bytes never crash the parsers") {
    std::mt19937 rng(42);
    auto q = query_for("a.b.example.test", dns::kTypeAaaa);
    uint8_t ip[4] = {1, 2, 3, 4};
    auto base = response(q, {a_record(ip, 5)});
    for (int i = 0; i < 20000; ++i) {
        std::vector<uint8_t> m = base;
        int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) m[rng() % m.size()] = static_cast<uint8_t>(rng());
        m.resize(rng() % (m.size() + 1));
        dns::parse_query(m.data(), m.size());
        if (auto r = dns::parse_response(m.data(), m.size())) CHECK(r->end_of_authority <= m.size());
        parse_ip_packet(m.data(), m.size());
        parse_nflog(m.data(), m.size());
    }
}

TEST_CASE("replies keep the client's id and question") {
    auto q = query_for("a.test", dns::kTypeA);
    auto parsed = dns::parse_query(q.data(), q.size());
    auto refused = dns::error_reply(*parsed, dns::kRcodeRefused);
    auto back = dns::parse_response(refused.data(), refused.size());
    REQUIRE(back);
    CHECK(back->id == 0x1234);
    CHECK(back->rcode == dns::kRcodeRefused);
    CHECK(back->question.name == "a.test");
}

TEST_CASE("names match exactly, or under a wildcard's suffix") {
    CHECK(name_matches("a.test", "a.test"));
    CHECK_FALSE(name_matches("a.test", "b.a.test"));
    CHECK(name_matches("*.a.test", "b.a.test"));
    CHECK(name_matches("*.a.test", "c.b.a.test"));
    CHECK_FALSE(name_matches("*.a.test", "a.test"));
    CHECK_FALSE(name_matches("*.a.test", "xa.test"));
    CHECK(name_matches("*", "anything"));
    CHECK(name_matches("A.Test.", "a.test"));
}

TEST_CASE("answers that would reach inward are refused, unless a CIDR rule names the range") {
    auto ip = [](const char* s) { return *parse_ip(s); };
    std::vector<Ip> host{ip("198.51.100.2")};
    for (const char* bad : {"127.0.0.1", "169.254.169.254", "169.254.1.1", "10.1.2.3", "172.16.0.1",
                            "192.168.1.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fd00:ec2::254",
                            "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "198.51.100.2"})
        CHECK_MESSAGE(forbidden_reason(ip(bad), host, {}) != nullptr, bad);
    for (const char* good : {"203.0.113.10", "2001:db8:a::10", "8.8.8.8"})
        CHECK_MESSAGE(forbidden_reason(ip(good), host, {}) == nullptr, good);
    CHECK(forbidden_reason(ip("10.1.2.3"), host, {*parse_cidr("10.0.0.0/8")}) == nullptr);
}

TEST_CASE("the ruleset drops by default, shares sets between rules alike, and refuses DNS elsewhere") {
    policy::Egress e;
    e.mode = "egress";
    policy::Rule a, b, c, d;
    a.host = "a.test";
    a.ports = {{443, 443}};
    b.host = "b.test";
    b.ports = {{443, 443}};
    c.cidr = "192.0.2.0/24";
    c.ports = {{8000, 8100}};
    c.proto = "tcp";
    d.cidr = "10.0.0.0/8";
    d.proto = "any";
    e.allow = {a, b, c};
    e.deny = {d};
    std::string rs = ruleset(e);
    CHECK(rs.find("policy drop;") != std::string::npos);
    CHECK(rs.find("set r0_4") != std::string::npos);
    CHECK(rs.find("set r1_4") == std::string::npos);  // b.test shares a.test's set
    CHECK(rs.find("ip daddr 192.0.2.0/24 tcp dport { 8000-8100 } accept") != std::string::npos);
    CHECK(rs.find("ip daddr 10.0.0.0/8 jump refuse") < rs.find("ip daddr @r0_4"));
    CHECK(rs.find("th dport { 53, 853 } jump refuse") != std::string::npos);
    CHECK(set_groups(e).allow == std::vector<size_t>{0, 0, SIZE_MAX});
    // A deny rule by name on some ports only: its own set, checked before the allow rules.
    policy::Rule ssh;
    ssh.host = "internal.a.test";
    ssh.ports = {{22, 22}};
    ssh.proto = "tcp";
    e.deny.push_back(ssh);
    CHECK_FALSE(denies_everything(ssh));
    CHECK(denies_everything(d));
    CHECK(set_groups(e).deny == std::vector<size_t>{SIZE_MAX, 1});
    rs = ruleset(e);
    CHECK(rs.find("ip daddr @r1_4 tcp dport { 22 } jump refuse") < rs.find("ip daddr @r0_4"));
    std::string add = add_elements({0}, *parse_ip("203.0.113.10"), 60);
    CHECK(add.find("add element inet hutch r0_4 { 203.0.113.10 timeout 90s }") != std::string::npos);
}

TEST_CASE("an NFLOG'd packet's destination, protocol and port are read") {
    uint8_t v4[24] = {0x45, 0, 0, 24, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 20, 0x9c, 0x40, 0, 80};
    auto p = parse_ip_packet(v4, sizeof v4);
    REQUIRE(p);
    CHECK(format_ip(p->destination) == "192.0.2.20");
    CHECK(p->proto == "tcp");
    CHECK(p->port == 80);
    CHECK_FALSE(parse_ip_packet(v4, 10));
}

// A kernel without IPv6 (ipv6.disable=1) refuses AF_INET6 sockets with EAFNOSUPPORT. A seccomp
// filter in a child gives the same answer here, and the DNS forwarder must lose only its IPv6
// sockets: an IPv6 nameserver is skipped, not fatal, and IPv4 still works.
TEST_CASE("DNS sockets: without IPv6 only the IPv6 sockets are missing") {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                                     SCMP_A0(SCMP_CMP_EQ, AF_INET6)) != 0 ||
            seccomp_load(ctx) != 0)
            ::_exit(10);
        if (::socket(AF_INET6, SOCK_DGRAM, 0) >= 0 || errno != EAFNOSUPPORT) ::_exit(11);
        try {
            if (connect_resolver("::1")) ::_exit(12);
            if (connect_resolver("fe80::1%lo")) ::_exit(13);
            if (!connect_resolver("127.0.0.1")) ::_exit(14);
            if (listen_dns(AF_INET6)) ::_exit(15);
        } catch (...) {
            ::_exit(16);
        }
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}
