// DNS messages, as hutch's forwarder needs them: a client's query read, a query to the upstream
// resolver built, the resolver's answer read (its A/AAAA records and their TTLs), and refusals
// written. Both sides are untrusted input: every read is bounds-checked, and anything malformed
// makes the parse return nullopt (the packet is dropped), never an exception or a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hutch::net::dns {

constexpr uint16_t kTypeA = 1, kTypeCname = 5, kTypeAaaa = 28, kTypeOpt = 41;
constexpr uint16_t kClassIn = 1;
constexpr int kRcodeNoError = 0, kRcodeServFail = 2, kRcodeRefused = 5;

struct Question {
    std::string name;  // lowercase, no trailing dot; "" is the root
    uint16_t type = 0;
    uint16_t klass = 0;
};

struct Query {
    uint16_t id = 0;
    bool recursion_desired = false;
    Question question;
    uint16_t udp_size = 512;  // what the client can take over UDP (its EDNS size, or 512)
};

struct Address {
    int family = 0;  // AF_INET or AF_INET6
    uint8_t bytes[16] = {};
    uint32_t ttl = 0;
};

struct Response {
    uint16_t id = 0;
    int rcode = 0;
    bool truncated = false;
    Question question;
    // A/AAAA records of the question's name or of a name its CNAME chain leads to.
    std::vector<Address> addresses;
    size_t end_of_authority = 0;  // where the additional section starts (what is forwarded)
};

// A client's standard query with exactly one question; nullopt when malformed or not a query.
// Names may only hold letters, digits, '-' and '_' in their labels: a label with a '.' (or any
// other byte) would read as a different name than the resolver looks up.
std::optional<Query> parse_query(const uint8_t* data, size_t size);

// The message hutch sends upstream for `q`: its own id, RD, the question, and an EDNS0 OPT record.
std::vector<uint8_t> make_query(uint16_t id, const Question& q);

// The resolver's response; nullopt when malformed or not a response.
std::optional<Response> parse_response(const uint8_t* data, size_t size);

// What the client gets back for an answered query: the upstream message up to its additional
// section (EDNS records are hop by hop), with the client's id; or, when it does not fit the
// client's UDP size, a truncated reply (TC) with only the question.
std::vector<uint8_t> reply_for_client(const uint8_t* upstream, const Response& r, const Query& q);

// A reply with no records and `rcode` (REFUSED, SERVFAIL) for the client's query.
std::vector<uint8_t> error_reply(const Query& q, int rcode);

// "A", "AAAA", "MX", or "TYPE65" for messages.
std::string type_name(uint16_t type);

}  // namespace hutch::net::dns
