#include "hutch/net/dns.hpp"

#include <sys/socket.h>

#include <cstring>
#include <set>

namespace hutch::net::dns {

namespace {

constexpr size_t kHeader = 12;
constexpr uint16_t kFlagQr = 0x8000, kFlagTc = 0x0200, kFlagRd = 0x0100, kFlagRa = 0x0080;
constexpr uint16_t kOurUdpSize = 1232;  // the size that avoids IP fragmentation (DNS flag day 2020)

// A bounds-checked reader over one message.
class Reader {
public:
    Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

    bool u16(uint16_t* out) {
        if (size_ - pos_ < 2) return false;
        *out = static_cast<uint16_t>(data_[pos_] << 8 | data_[pos_ + 1]);
        pos_ += 2;
        return true;
    }
    bool u32(uint32_t* out) {
        uint16_t hi, lo;
        if (!u16(&hi) || !u16(&lo)) return false;
        *out = static_cast<uint32_t>(hi) << 16 | lo;
        return true;
    }
    bool skip(size_t n) {
        if (size_ - pos_ < n) return false;
        pos_ += n;
        return true;
    }
    // Reads a possibly compressed name at the cursor. Pointers must go strictly backwards (no
    // loops), labels hold only LDH and '_' bytes, and the whole name fits 255 bytes.
    bool name(std::string* out) {
        out->clear();
        size_t at = pos_, wire = 0, limit = pos_;
        bool jumped = false;
        for (;;) {
            if (at >= size_) return false;
            uint8_t len = data_[at];
            if ((len & 0xC0) == 0xC0) {
                if (at + 1 >= size_) return false;
                size_t target = static_cast<size_t>(len & 0x3F) << 8 | data_[at + 1];
                if (target >= limit) return false;  // forwards or onto itself: a loop
                if (!jumped) pos_ = at + 2;
                jumped = true;
                limit = target;
                at = target;
                continue;
            }
            if (len & 0xC0) return false;  // 0x40 and 0x80 label types are obsolete
            if (len == 0) {
                if (!jumped) pos_ = at + 1;
                return true;
            }
            wire += len + 1u;
            if (wire > 254 || at + 1 + len > size_) return false;
            if (!out->empty()) *out += '.';
            for (size_t i = at + 1; i <= at + len; ++i) {
                char c = static_cast<char>(data_[i]);
                if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
                bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
                if (!ok) return false;
                *out += c;
            }
            at += 1u + len;
        }
    }
    size_t pos() const { return pos_; }
    const uint8_t* at(size_t offset) const { return data_ + offset; }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

struct Header {
    uint16_t id = 0, flags = 0, qd = 0, an = 0, ns = 0, ar = 0;
};

bool read_header(Reader& r, Header* h) {
    return r.u16(&h->id) && r.u16(&h->flags) && r.u16(&h->qd) && r.u16(&h->an) && r.u16(&h->ns) && r.u16(&h->ar);
}

bool read_question(Reader& r, Question* q) { return r.name(&q->name) && r.u16(&q->type) && r.u16(&q->klass); }

void put16(std::vector<uint8_t>& out, uint16_t v) {
    out.push_back(static_cast<uint8_t>(v >> 8));
    out.push_back(static_cast<uint8_t>(v));
}

void put_name(std::vector<uint8_t>& out, const std::string& name) {
    size_t start = 0;
    while (start < name.size()) {
        size_t dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        out.push_back(static_cast<uint8_t>(dot - start));
        out.insert(out.end(), name.begin() + static_cast<long>(start), name.begin() + static_cast<long>(dot));
        start = dot + 1;
    }
    out.push_back(0);
}

std::vector<uint8_t> header_and_question(uint16_t id, uint16_t flags, const Question& q) {
    std::vector<uint8_t> out;
    put16(out, id);
    put16(out, flags);
    for (uint16_t count : {1, 0, 0, 0}) put16(out, count);
    put_name(out, q.name);
    put16(out, q.type);
    put16(out, q.klass);
    return out;
}

// Reads one resource record's fixed part; leaves the cursor after its data.
struct Record {
    std::string owner;
    uint16_t type = 0, klass = 0, rdlength = 0;
    uint32_t ttl = 0;
    size_t rdata = 0;  // offset of the data
};

bool read_record(Reader& r, Record* rec) {
    if (!r.name(&rec->owner) || !r.u16(&rec->type) || !r.u16(&rec->klass) || !r.u32(&rec->ttl) ||
        !r.u16(&rec->rdlength))
        return false;
    rec->rdata = r.pos();
    return r.skip(rec->rdlength);
}

}  // namespace

std::optional<Query> parse_query(const uint8_t* data, size_t size) {
    Reader r(data, size);
    Header h;
    if (!read_header(r, &h)) return std::nullopt;
    // A query (QR clear), opcode QUERY, one question, no answers: anything else is not for us.
    if ((h.flags & kFlagQr) || ((h.flags >> 11) & 0xF) != 0 || h.qd != 1 || h.an != 0) return std::nullopt;
    Query q;
    q.id = h.id;
    q.recursion_desired = h.flags & kFlagRd;
    if (!read_question(r, &q.question)) return std::nullopt;
    // The client's EDNS size, if it sent an OPT record; other additional records are ignored.
    for (uint16_t i = 0; i < h.ns + h.ar; ++i) {
        Record rec;
        if (!read_record(r, &rec)) return std::nullopt;
        if (rec.type == kTypeOpt && rec.owner.empty() && rec.klass > 512) q.udp_size = rec.klass;
    }
    return q;
}

std::vector<uint8_t> make_query(uint16_t id, const Question& q) {
    std::vector<uint8_t> out = header_and_question(id, kFlagRd, q);
    out[11] = 1;  // ARCOUNT: the OPT record below
    // OPT: root owner, type 41, class = our UDP size, TTL 0 (no extended rcode, no DO), no data.
    out.push_back(0);
    put16(out, kTypeOpt);
    put16(out, kOurUdpSize);
    for (int i = 0; i < 4; ++i) out.push_back(0);
    put16(out, 0);
    return out;
}

std::optional<Response> parse_response(const uint8_t* data, size_t size) {
    Reader r(data, size);
    Header h;
    if (!read_header(r, &h)) return std::nullopt;
    if (!(h.flags & kFlagQr) || ((h.flags >> 11) & 0xF) != 0 || h.qd != 1) return std::nullopt;
    Response resp;
    resp.id = h.id;
    resp.rcode = h.flags & 0xF;
    resp.truncated = h.flags & kFlagTc;
    if (!read_question(r, &resp.question)) return std::nullopt;
    std::vector<Record> answers;
    for (uint16_t i = 0; i < h.an; ++i) {
        Record rec;
        if (!read_record(r, &rec)) return std::nullopt;
        answers.push_back(rec);
    }
    for (uint16_t i = 0; i < h.ns; ++i) {
        Record rec;
        if (!read_record(r, &rec)) return std::nullopt;
    }
    resp.end_of_authority = r.pos();
    // Follow the CNAME chain from the question (in any order, at most 16 links): only addresses
    // of names on it answer the question; anything else in the message is ignored.
    std::set<std::string> chain{resp.question.name};
    for (int round = 0; round < 16; ++round) {
        size_t before = chain.size();
        for (const auto& rec : answers) {
            if (rec.type != kTypeCname || rec.klass != kClassIn || !chain.count(rec.owner)) continue;
            Reader target(data, rec.rdata + rec.rdlength);
            target.skip(rec.rdata);
            std::string name;
            if (!target.name(&name)) return std::nullopt;
            chain.insert(name);
        }
        if (chain.size() == before) break;
    }
    for (const auto& rec : answers) {
        if (rec.klass != kClassIn || !chain.count(rec.owner)) continue;
        Address a;
        a.ttl = rec.ttl > 0x7FFFFFFF ? 0 : rec.ttl;  // RFC 2181: a TTL with the top bit set is 0
        if (rec.type == kTypeA && rec.rdlength == 4) {
            a.family = AF_INET;
            std::memcpy(a.bytes, data + rec.rdata, 4);
        } else if (rec.type == kTypeAaaa && rec.rdlength == 16) {
            a.family = AF_INET6;
            std::memcpy(a.bytes, data + rec.rdata, 16);
        } else if (rec.type == kTypeA || rec.type == kTypeAaaa) {
            return std::nullopt;  // an address record of the wrong size
        } else {
            continue;
        }
        resp.addresses.push_back(a);
    }
    return resp;
}

std::vector<uint8_t> reply_for_client(const uint8_t* upstream, const Response& r, const Query& q) {
    size_t limit = q.udp_size < 512 ? 512 : q.udp_size;
    if (r.end_of_authority > limit) {
        uint16_t flags = kFlagQr | kFlagTc | kFlagRa | (q.recursion_desired ? kFlagRd : 0);
        return header_and_question(q.id, flags, q.question);
    }
    std::vector<uint8_t> out(upstream, upstream + r.end_of_authority);
    out[0] = static_cast<uint8_t>(q.id >> 8);
    out[1] = static_cast<uint8_t>(q.id);
    out[10] = out[11] = 0;  // ARCOUNT: the additional section is not forwarded
    return out;
}

std::vector<uint8_t> error_reply(const Query& q, int rcode) {
    uint16_t flags = kFlagQr | kFlagRa | (q.recursion_desired ? kFlagRd : 0) | static_cast<uint16_t>(rcode & 0xF);
    return header_and_question(q.id, flags, q.question);
}

std::string type_name(uint16_t type) {
    switch (type) {
        case 1: return "A";
        case 2: return "NS";
        case 5: return "CNAME";
        case 6: return "SOA";
        case 12: return "PTR";
        case 15: return "MX";
        case 16: return "TXT";
        case 28: return "AAAA";
        case 33: return "SRV";
        case 64: return "SVCB";
        case 65: return "HTTPS";
        case 255: return "ANY";
        default: return "TYPE" + std::to_string(type);
    }
}

}  // namespace hutch::net::dns
