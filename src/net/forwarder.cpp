#include "forwarder.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "hutch/core/error.hpp"
#include "hutch/net/nflog.hpp"
#include "hutch/net/sockets.hpp"
#include "hutch/core/trace.hpp"

namespace hutch::net {

namespace {

constexpr size_t kMaxPending = 512;     // queries waiting for the resolver at once
constexpr double kUpstreamTimeout = 2;  // seconds before the next resolver is asked
constexpr size_t kMaxEvents = 100;      // refusals kept in the report (the counts are exact)
constexpr size_t kMaxNames = 4096;      // address → name entries for refusal messages

double monotonic() {
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::string wall_time() {
    struct timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    ::gmtime_r(&ts.tv_sec, &tm);
    char buf[80];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    return buf;
}

}  // namespace

Forwarder::Forwarder(const policy::Egress& rules, std::vector<Ip> host_addresses, std::vector<int> upstream,
                     std::vector<std::string> resolver_names, int report, std::string sandbox, const Nft& nft)
    : rules_(rules),
      host_addresses_(std::move(host_addresses)),
      upstream_(std::move(upstream)),
      resolver_names_(std::move(resolver_names)),
      report_(report),
      sandbox_(std::move(sandbox)),
      nft_(nft) {
    groups_ = set_groups(rules_);
    for (const auto& r : rules_.allow)
        if (auto c = parse_cidr(r.cidr)) allowed_cidrs_.push_back(*c);
    for (const auto& r : rules_.deny)
        if (auto c = parse_cidr(r.cidr)) denied_cidrs_.push_back(*c);
}

void Forwarder::open() {
    for (int family : {AF_INET, AF_INET6})
        if (UniqueFd fd = listen_dns(family)) listeners_.push_back(fd.release());
    nflog_ = open_nflog(kLogGroup).release();
    write_report();
}

std::vector<int> Forwarder::fds() {
    std::vector<int> out = listeners_;
    out.insert(out.end(), upstream_.begin(), upstream_.end());
    out.push_back(nflog_);
    return out;
}

void Forwarder::ready(int fd) {
    // Nothing a packet says may end the init: every failure here costs at most that packet.
    try {
        if (fd == nflog_) return on_log();
        for (size_t i = 0; i < upstream_.size(); ++i)
            if (upstream_[i] == fd) return on_upstream(i);
        on_query(fd);
    } catch (...) {
    }
}

int Forwarder::timeout_ms() {
    if (pending_.empty()) return -1;
    double next = 1e18;
    for (const auto& [id, p] : pending_) next = std::min(next, p.deadline);
    double ms = (next - monotonic()) * 1000;
    return ms <= 0 ? 0 : static_cast<int>(ms) + 1;
}

void Forwarder::tick() {
    double now = monotonic();
    for (auto it = pending_.begin(); it != pending_.end();) {
        Pending& p = it->second;
        if (p.deadline > now) {
            ++it;
            continue;
        }
        // Try the next resolver, as the host's own stub would; SERVFAIL when all were silent.
        if (++p.resolver < upstream_.size() && send_upstream(it->first, p)) {
            ++it;
            continue;
        }
        reply(p, dns::error_reply(p.query, dns::kRcodeServFail));
        it = pending_.erase(it);
    }
}

void Forwarder::on_query(int fd) {
    uint8_t buf[4096];
    for (int budget = 64; budget > 0; --budget) {  // bounded: signals and other fds get their turn
        Pending p;
        p.client_len = sizeof p.client;
        ssize_t n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&p.client), &p.client_len);
        if (n < 0) return;
        auto q = dns::parse_query(buf, static_cast<size_t>(n));
        trace("query " + std::to_string(n) + (q ? " " + q->question.name + " " + dns::type_name(q->question.type) : " malformed"));
        if (!q) continue;  // not a well-formed query: no answer at all
        p.query = *q;
        p.listener = fd;
        const std::string& name = q->question.name;
        bool denied = q->question.klass != dns::kClassIn, allowed = false;
        auto add_group = [&p](size_t g) {
            if (std::find(p.groups.begin(), p.groups.end(), g) == p.groups.end()) p.groups.push_back(g);
        };
        for (size_t i = 0; i < rules_.deny.size(); ++i) {
            const auto& r = rules_.deny[i];
            if (r.host.empty() || !name_matches(r.host, name)) continue;
            if (denies_everything(r)) denied = true;
            else add_group(groups_.deny[i]);  // refused on its ports only, by the ruleset
        }
        for (size_t i = 0; i < rules_.allow.size() && !denied; ++i)
            if (!rules_.allow[i].host.empty() && name_matches(rules_.allow[i].host, name)) {
                allowed = true;
                add_group(groups_.allow[i]);
            }
        if (denied || !allowed) {
            reply(p, dns::error_reply(p.query, dns::kRcodeRefused));
            record({wall_time(), "dns", name, "", dns::type_name(q->question.type), "name not allowed by the policy", 0});
            continue;
        }
        if (pending_.size() >= kMaxPending || upstream_.empty()) {
            reply(p, dns::error_reply(p.query, dns::kRcodeServFail));
            continue;
        }
        uint16_t id = 0;
        do {
            if (::getrandom(&id, sizeof id, 0) != sizeof id) id = static_cast<uint16_t>(monotonic() * 1e6);
        } while (pending_.count(id));
        if (send_upstream(id, p)) pending_.emplace(id, std::move(p));
        else reply(p, dns::error_reply(p.query, dns::kRcodeServFail));
    }
}

bool Forwarder::send_upstream(uint16_t id, Pending& p) {
    std::vector<uint8_t> msg = dns::make_query(id, p.query.question);
    for (; p.resolver < upstream_.size(); ++p.resolver) {
        // send(), never sendto(): the socket is connected to this resolver and to nothing else.
        if (::send(upstream_[p.resolver], msg.data(), msg.size(), 0) == static_cast<ssize_t>(msg.size())) {
            p.deadline = monotonic() + kUpstreamTimeout;
            return true;
        }
    }
    return false;
}

void Forwarder::on_upstream(size_t resolver) {
    uint8_t buf[65536];
    for (int budget = 64; budget > 0; --budget) {
        ssize_t n = ::recv(upstream_[resolver], buf, sizeof buf, 0);
        if (n < 0) return;
        auto r = dns::parse_response(buf, static_cast<size_t>(n));
        trace("answer " + std::to_string(n) + (r ? " " + r->question.name : " malformed"));
        if (!r) continue;
        auto it = pending_.find(r->id);
        // The answer must come from the resolver asked, to the question asked; anything else is
        // stale or forged and is ignored (the real answer may still come).
        if (it == pending_.end() || it->second.resolver != resolver) continue;
        const dns::Question& q = it->second.query.question;
        if (r->question.name != q.name || r->question.type != q.type || r->question.klass != q.klass) continue;
        Pending p = std::move(it->second);
        pending_.erase(it);
        const dns::Question& asked = p.query.question;
        std::string why = admit(*r, p);
        if (!why.empty()) {
            reply(p, dns::error_reply(p.query, dns::kRcodeRefused));
            record({wall_time(), "dns", asked.name, "", dns::type_name(asked.type), why, 0});
            continue;
        }
        reply(p, dns::reply_for_client(buf, *r, p.query));
    }
}

std::string Forwarder::admit(const dns::Response& r, const Pending& p) {
    for (const auto& a : r.addresses) {
        Ip ip;
        ip.family = a.family;
        std::memcpy(ip.bytes, a.bytes, sizeof ip.bytes);
        for (const auto& c : denied_cidrs_)
            if (c.contains(ip)) return "resolves to " + format_ip(ip) + ", denied by the policy";
        if (const char* why = forbidden_reason(ip, host_addresses_, allowed_cidrs_))
            return "resolves to " + std::string(why) + " (" + format_ip(ip) + ")";
    }
    std::string batch;
    for (const auto& a : r.addresses) {
        Ip ip;
        ip.family = a.family;
        std::memcpy(ip.bytes, a.bytes, sizeof ip.bytes);
        batch += add_elements(p.groups, ip, a.ttl);
        if (names_.size() >= kMaxNames) names_.clear();
        names_[format_ip(ip)] = p.query.question.name;
    }
    if (!batch.empty()) {
        std::string err = nft_.try_run(batch);
        // The sets refuse it (full?): the client would be blocked anyway; say so at once.
        if (!err.empty()) return "cannot add its addresses to the allowed set: " + err;
    }
    return {};
}

void Forwarder::reply(const Pending& p, const std::vector<uint8_t>& message) {
    trace("reply " + std::to_string(message.size()) + " " + p.query.question.name);
    ::sendto(p.listener, message.data(), message.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&p.client),
             p.client_len);
}

void Forwarder::on_log() {
    alignas(4) uint8_t buf[65536];
    for (int budget = 64; budget > 0; --budget) {
        ssize_t n = ::recv(nflog_, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == ENOBUFS) continue;  // the kernel dropped some: the counts fall short, no more
            return;
        }
        for (const auto& pkt : parse_nflog(buf, static_cast<size_t>(n))) {
            std::string dest = format_ip(pkt.destination);
            auto name = names_.find(dest);
            record({wall_time(), "connect", name == names_.end() ? "" : name->second, dest, pkt.proto,
                    "destination not allowed by the policy", pkt.port});
        }
    }
}

void Forwarder::record(Event e) {
    (e.kind == "dns" ? refused_dns_ : blocked_)++;
    if (events_.size() >= kMaxEvents) events_.pop_front();
    events_.push_back(std::move(e));
    write_report();
}

void Forwarder::write_report() {
    nlohmann::json events = nlohmann::json::array();
    for (const auto& e : events_) {
        nlohmann::json j{{"time", e.time}, {"sandbox", sandbox_}, {"kind", e.kind}, {"reason", e.reason}};
        if (!e.name.empty()) j["name"] = e.name;
        if (e.kind == "dns") j["type"] = e.proto;
        if (!e.destination.empty()) j["destination"] = e.destination;
        if (e.kind == "connect") j["proto"] = e.proto;
        if (e.port) j["port"] = e.port;
        events.push_back(j);
    }
    nlohmann::json report{{"sandbox", sandbox_}, {"refused_dns", refused_dns_}, {"blocked", blocked_},
                          {"resolvers", resolver_names_}, {"events", events}};
    std::string text = report.dump() + "\n";
    // Readers take the whole file: write it in one go from the start, then cut what is left.
    if (::pwrite(report_, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()))
        ::ftruncate(report_, static_cast<off_t>(text.size()));
}

}  // namespace hutch::net
