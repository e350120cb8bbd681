// The OCI Distribution API over libcurl: ping, manifests, blobs, and the auth dance
// (anonymous → WWW-Authenticate: Bearer token or Basic). Also reading the docker config file for
// credentials, which login/logout (pull.cpp) write.
//
// One easy handle per request and one thread per parallel download (pull.cpp): simple, and each
// transfer can be aborted on its own through its callbacks. The bearer token is shared between
// the threads of one pull under a mutex.
#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/log.hpp"
#include "transfer_internal.hpp"

namespace hutch::image::detail {

using nlohmann::json;

// ------------------------------------------------------------------------------------------------
// Small text helpers.

namespace {

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return {};
    size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

constexpr const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

std::string base64_encode(const std::string& in) {
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
        for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
    }
    if (i + 1 == in.size()) {
        uint32_t v = uint8_t(in[i]) << 16;
        out += kB64[(v >> 18) & 63];
        out += kB64[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
        out += kB64[(v >> 18) & 63];
        out += kB64[(v >> 12) & 63];
        out += kB64[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

std::string base64_decode(const std::string& in, const std::string& where) {
    std::string out;
    uint32_t v = 0;
    int bits = 0;
    for (char c : in) {
        if (c == '=' || c == '\n' || c == '\r') continue;
        const char* p = std::strchr(kB64, c);
        if (!p || c == 0) fail("invalid base64", where, "log in again with 'hutch login'");
        v = (v << 6) | static_cast<uint32_t>(p - kB64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((v >> bits) & 0xff);
        }
    }
    return out;
}

// ------------------------------------------------------------------------------------------------
// Docker config: where credentials live.

std::string normalize_registry_host(const std::string& text) {
    std::string h = trim(text);
    for (const char* scheme : {"https://", "http://"})
        if (starts_with(lower(h), scheme)) h = h.substr(std::strlen(scheme));
    // "index.docker.io/v1/" and any other path: the host is what matters.
    if (auto slash = h.find('/'); slash != std::string::npos) h = h.substr(0, slash);
    h = lower(h);
    if (h == "index.docker.io" || h == "registry-1.docker.io" || h == "registry.hub.docker.com") h = "docker.io";
    if (h.empty()) fail("empty registry name", "'" + text + "'", "give a host such as localhost:5000");
    return h;
}

std::string auth_key(const std::string& registry) {
    std::string h = normalize_registry_host(registry);
    // docker (and every tool reading its config) stores Docker Hub under this historical key.
    return h == "docker.io" ? "https://index.docker.io/v1/" : h;
}

std::vector<std::string> auth_key_aliases(const std::string& registry) {
    std::string h = normalize_registry_host(registry);
    std::vector<std::string> keys = {h, "https://" + h, "http://" + h, "https://" + h + "/", "http://" + h + "/",
                                     "https://" + h + "/v1/", "https://" + h + "/v2/"};
    if (h == "docker.io")
        for (const char* k : {"https://index.docker.io/v1/", "index.docker.io", "https://index.docker.io",
                              "registry-1.docker.io", "https://registry-1.docker.io"})
            keys.push_back(k);
    return keys;
}

std::string docker_config_path(const PullOptions& options) {
    if (!options.docker_config.empty()) return options.docker_config;
    if (const char* dir = std::getenv("DOCKER_CONFIG"); dir && *dir) return std::string(dir) + "/config.json";
    const char* home = std::getenv("HOME");
    if (!home || !*home) return {};
    return std::string(home) + "/.docker/config.json";
}

namespace {

struct Credentials {
    std::string user, password;
};

// The credentials the docker config has for `registry`, if any. A broken config file is an
// error (silently pulling anonymously would hide it).
std::optional<Credentials> find_credentials(const std::string& registry, const PullOptions& options) {
    std::string path = docker_config_path(options);
    if (path.empty() || !fs::exists(path)) return std::nullopt;
    json cfg = json::parse(fs::read_file(path), nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
        fail("invalid docker config (not a JSON object)", path, "fix or remove the file");
    auto auths = cfg.find("auths");
    if (auths == cfg.end() || !auths->is_object()) return std::nullopt;
    for (const auto& key : auth_key_aliases(registry)) {
        auto e = auths->find(key);
        if (e == auths->end() || !e->is_object()) continue;
        if (auto a = e->find("auth"); a != e->end() && a->is_string() && !a->get<std::string>().empty()) {
            std::string plain = base64_decode(a->get<std::string>(), path + ": auths." + key);
            auto colon = plain.find(':');
            if (colon == std::string::npos)
                fail("invalid credentials (no ':' in the decoded auth)", path + ": auths." + key,
                     "log in again with 'hutch login " + registry + "'");
            return Credentials{plain.substr(0, colon), plain.substr(colon + 1)};
        }
        auto u = e->find("username"), p = e->find("password");
        if (u != e->end() && p != e->end() && u->is_string() && p->is_string())
            return Credentials{u->get<std::string>(), p->get<std::string>()};
    }
    return std::nullopt;
}

// ------------------------------------------------------------------------------------------------
// HTTP.

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) fail("cannot initialise libcurl");
    });
}

// Seconds below 1 KB/s before a transfer is abandoned. Overridable so tests need not wait a minute.
long low_speed_time() {
    if (const char* v = std::getenv("HUTCH_HTTP_LOW_SPEED_TIME"); v && *v) {
        long n = std::strtol(v, nullptr, 10);
        if (n > 0) return n;
    }
    return 60;
}

struct Response {
    long status = 0;
    std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, final response
    std::string body;  // error bodies and buffered (non-sink) bodies
    std::string url;   // after redirects

    std::string header(const std::string& name) const {
        for (const auto& [k, v] : headers)
            if (k == name) return v;
        return {};
    }
    std::vector<std::string> all(const std::string& name) const {
        std::vector<std::string> out;
        for (const auto& [k, v] : headers)
            if (k == name) out.push_back(v);
        return out;
    }
};

struct Request {
    std::string url;
    std::vector<std::string> headers;
    std::string authorization;  // full header value, or empty
    BlobSink* sink = nullptr;   // 2xx bodies go here instead of Response::body
    int64_t max_body = kMaxManifestBytes;
    bool https_only = false;    // for redirects: never downgrade an https registry to http
};

// State shared with curl's callbacks during one transfer.
struct Transfer {
    Request* req;
    Response* resp;
    long current_status = 0;
    std::exception_ptr error;  // thrown from a callback, rethrown after curl returns
};

size_t on_header(char* data, size_t size, size_t n, void* p) {
    auto* t = static_cast<Transfer*>(p);
    std::string line(data, size * n);
    if (starts_with(line, "HTTP/")) {
        // A new response (after a redirect or 100-continue): forget the previous one's headers.
        t->resp->headers.clear();
        auto sp = line.find(' ');
        t->current_status = sp == std::string::npos ? 0 : std::strtol(line.c_str() + sp + 1, nullptr, 10);
        return size * n;
    }
    auto colon = line.find(':');
    if (colon == std::string::npos) return size * n;
    std::string name = lower(trim(line.substr(0, colon)));
    std::string value = trim(line.substr(colon + 1));
    t->resp->headers.emplace_back(name, value);
    // A blob whose announced length exceeds its descriptor is refused before its first byte.
    if (name == "content-length" && t->req->sink && t->current_status / 100 == 2) {
        long long len = std::strtoll(value.c_str(), nullptr, 10);
        const auto& d = t->req->sink->descriptor();
        if (d.size >= 0 && len > d.size) {
            t->error = std::make_exception_ptr(Error(
                "blob larger than its descriptor: " + d.digest + " is " + std::to_string(d.size) +
                    " bytes, the registry sends " + std::to_string(len),
                t->req->url, 0, "the manifest or the registry's copy is wrong; nothing was stored"));
            return 0;
        }
    }
    return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* p) {
    auto* t = static_cast<Transfer*>(p);
    size_t len = size * n;
    try {
        if (t->req->sink && t->current_status / 100 == 2) {
            t->req->sink->write(data, len);
            return len;
        }
        if (static_cast<int64_t>(t->resp->body.size() + len) > t->req->max_body) {
            if (t->current_status / 100 != 2) return len;  // an error page: its head is enough
            fail("response too large (more than " + std::to_string(t->req->max_body) + " bytes)", t->req->url,
                 "a manifest is never this big; check the registry");
        }
        t->resp->body.append(data, len);
        return len;
    } catch (...) {
        t->error = std::current_exception();
        return 0;  // aborts the transfer at once
    }
}

int on_progress(void* p, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto* t = static_cast<Transfer*>(p);
    return t->req->sink && t->req->sink->cancel && t->req->sink->cancel->load() ? 1 : 0;
}

// One HTTP GET. Transport failures throw with curl's own words and the URL; HTTP statuses are
// returned for the caller to judge.
Response http_get(Request& req) {
    global_init();
    CURL* h = curl_easy_init();
    if (!h) fail("cannot create a libcurl handle", req.url);
    std::unique_ptr<CURL, void (*)(CURL*)> guard(h, curl_easy_cleanup);
    Response resp;
    Transfer t{&req, &resp, 0, nullptr};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_slist* hdrs = nullptr;
    std::vector<std::string> lines = req.headers;
    if (!req.authorization.empty()) lines.push_back("Authorization: " + req.authorization);
    for (const auto& l : lines) hdrs = curl_slist_append(hdrs, l.c_str());
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> hguard(hdrs, curl_slist_free_all);

    curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM-based DNS timeouts
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);  // blobs are often redirected to storage
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, req.https_only ? "https" : "http,https");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, low_speed_time());
    curl_easy_setopt(h, CURLOPT_USERAGENT, "hutch/0.1");
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    // Registry bodies are gzip'd tarballs already; ask for nothing else (no transparent decoding).
    CURLcode rc = curl_easy_perform(h);
    if (t.error) std::rethrow_exception(t.error);
    if (rc == CURLE_ABORTED_BY_CALLBACK) fail("download cancelled", req.url, "another download of this pull failed");
    if (rc != CURLE_OK) {
        std::string why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        // Cut off mid-body (reset, truncated): the registry was reached, the download failed.
        if (rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING ||
            rc == CURLE_HTTP2_STREAM)
            fail("download failed: " + why, req.url, "the connection broke; retry the pull");
        std::string hint = rc == CURLE_OPERATION_TIMEDOUT ? "the registry is too slow or not answering; retry later"
                           : rc == CURLE_COULDNT_CONNECT ? "is the registry running and the address right?"
                           : rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION
                               ? "for a registry without TLS pass --insecure-registry HOST"
                               : "check the address and the network";
        fail("cannot reach the registry: " + why, req.url, hint);
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp.status);
    char* eff = nullptr;
    if (curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff) resp.url = eff;
    log::debug("GET " + req.url + (resp.url != req.url ? " (→ " + resp.url + ")" : "") + ": HTTP " +
               std::to_string(resp.status));
    return resp;
}

// "CODE: message" from a registry's JSON error body, or the start of whatever it sent.
std::string registry_message(const Response& r) {
    json j = json::parse(r.body, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("errors") && j["errors"].is_array()) {
        std::string out;
        for (const auto& e : j["errors"]) {
            if (!e.is_object()) continue;
            if (!out.empty()) out += "; ";
            if (e.contains("code") && e["code"].is_string()) out += e["code"].get<std::string>();
            if (e.contains("message") && e["message"].is_string()) out += ": " + e["message"].get<std::string>();
        }
        if (!out.empty()) return out;
    }
    std::string s = trim(r.body.substr(0, 200));
    for (auto& c : s)
        if (c == '\n' || c == '\r') c = ' ';
    return s;
}

// ------------------------------------------------------------------------------------------------
// Auth challenges: WWW-Authenticate: Bearer realm="…",service="…",scope="…" | Basic realm="…".

struct Challenge {
    std::string scheme;  // lowercased
    std::map<std::string, std::string> params;
};

// Parses one header value, which may hold several challenges.
std::vector<Challenge> parse_challenges(const std::string& v) {
    std::vector<Challenge> out;
    size_t i = 0;
    auto skip_space = [&] {
        while (i < v.size() && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) ++i;
    };
    auto token = [&] {
        size_t b = i;
        while (i < v.size() && v[i] != ' ' && v[i] != '\t' && v[i] != ',' && v[i] != '=') ++i;
        return v.substr(b, i - b);
    };
    while (true) {
        skip_space();
        if (i >= v.size()) break;
        std::string t = token();
        if (i < v.size() && v[i] == '=' && !out.empty()) {  // key=value of the current challenge
            ++i;
            std::string value;
            if (i < v.size() && v[i] == '"') {
                for (++i; i < v.size() && v[i] != '"'; ++i) {
                    if (v[i] == '\\' && i + 1 < v.size()) ++i;
                    value += v[i];
                }
                ++i;
            } else {
                value = token();
            }
            out.back().params[lower(t)] = value;
        } else if (!t.empty()) {
            out.push_back({lower(t), {}});
        } else {
            ++i;  // stray '=': skip it
        }
    }
    return out;
}

std::string url_encode(const std::string& s) {
    std::string out;
    static const char hex[] = "0123456789ABCDEF";
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// Talks to one registry (and one repository, for token scopes).
class Client {
public:
    Client(std::string registry, std::string repository, const PullOptions& options,
           std::optional<Credentials> creds)
        : registry_(std::move(registry)), repository_(std::move(repository)), creds_(std::move(creds)) {
        Reference r;
        r.registry = registry_;
        host_ = r.api_host();
        insecure_ = r.is_loopback();
        for (const auto& flag : options.insecure_registries)
            if (normalize_registry_host(flag) == normalize_registry_host(registry_)) insecure_ = true;
        base_ = (insecure_ ? "http://" : "https://") + host_;
    }

    const std::string& registry() const { return registry_; }
    const std::string& base() const { return base_; }

    // GET base+path with the current authorization; on 401 answers the challenge once and retries.
    Response get(const std::string& path, std::vector<std::string> headers, BlobSink* sink = nullptr,
                 int64_t max_body = kMaxManifestBytes) {
        Request req;
        req.url = base_ + path;
        req.headers = std::move(headers);
        req.sink = sink;
        req.max_body = max_body;
        req.https_only = !insecure_;
        std::string sent = authorization();
        req.authorization = sent;
        Response r = http_get(req);
        if (r.status != 401) return r;
        if (!answer_challenge(r, sent)) return r;
        req.authorization = authorization();
        return http_get(req);
    }

    [[noreturn]] void unauthorized(const Response& r, const std::string& what) const {
        std::string msg = registry_message(r);
        std::string hint = creds_ ? "the credentials stored for " + registry_ +
                                        " were refused; run 'hutch login " + registry_ + "' again"
                                  : "run 'hutch login " + registry_ + "' if the image is private";
        fail("unauthorized: " + what + (msg.empty() ? "" : ": " + msg) + " (HTTP " + std::to_string(r.status) + ")",
             r.url.empty() ? base_ : r.url, hint);
    }

private:
    std::string authorization() {
        std::lock_guard lk(mu_);
        return auth_;
    }

    // Works out new authorization from a 401's challenge. Returns false when there is nothing
    // new to try (so the caller reports the 401).
    bool answer_challenge(const Response& r, const std::string& sent) {
        std::lock_guard lk(mu_);
        if (auth_ != sent) return true;  // another thread already answered it: just retry
        for (const auto& header : r.all("www-authenticate"))
            for (const auto& c : parse_challenges(header)) {
                if (c.scheme == "bearer") {
                    std::string token = fetch_token(c);
                    if (token.empty() || "Bearer " + token == sent) return false;
                    auth_ = "Bearer " + token;
                    return true;
                }
                if (c.scheme == "basic") {
                    if (!creds_) return false;
                    std::string basic = "Basic " + base64_encode(creds_->user + ":" + creds_->password);
                    if (basic == sent) return false;
                    auth_ = basic;
                    return true;
                }
            }
        return false;
    }

    bool plain_http_allowed(const std::string& url) const {
        if (!starts_with(url, "http://")) return true;
        // The realm may be another host; credentials go to it in clear only when the registry
        // itself is spoken to in clear (loopback or --insecure-registry).
        return insecure_;
    }

    // GET realm?service=…&scope=… (with basic credentials when we have them) → token.
    std::string fetch_token(const Challenge& c) {
        auto realm = c.params.find("realm");
        if (realm == c.params.end() || realm->second.empty())
            fail("registry sent a Bearer challenge without a realm", base_, "the registry is misconfigured");
        std::string url = realm->second;
        if (!starts_with(url, "https://") && !starts_with(url, "http://"))
            fail("token realm is not an http(s) URL", url, "the registry is misconfigured");
        if (!plain_http_allowed(url))
            fail("token realm uses plain HTTP for a TLS registry", url,
                 "refusing to send credentials in clear; pass --insecure-registry " + registry_ + " if intended");
        std::string query;
        auto add = [&](const std::string& k, const std::string& v) {
            query += (query.empty() ? "" : "&") + k + "=" + url_encode(v);
        };
        if (auto s = c.params.find("service"); s != c.params.end()) add("service", s->second);
        if (auto s = c.params.find("scope"); s != c.params.end())
            add("scope", s->second);
        else if (!repository_.empty())
            add("scope", "repository:" + repository_ + ":pull");
        if (!query.empty()) url += (url.find('?') == std::string::npos ? "?" : "&") + query;
        Request req;
        req.url = url;
        req.https_only = starts_with(url, "https://");
        if (creds_) req.authorization = "Basic " + base64_encode(creds_->user + ":" + creds_->password);
        Response r = http_get(req);
        if (r.status == 401 || r.status == 403) {
            std::string msg = registry_message(r);
            fail(std::string("unauthorized: the token server refused ") +
                     (creds_ ? "the credentials" : "anonymous access") + (msg.empty() ? "" : ": " + msg) +
                     " (HTTP " + std::to_string(r.status) + ")",
                 url,
                 creds_ ? "run 'hutch login " + registry_ + "' again with the right password"
                        : "run 'hutch login " + registry_ + "'");
        }
        if (r.status != 200)
            fail("token server answered HTTP " + std::to_string(r.status) + ": " + registry_message(r), url,
                 "check the registry's auth configuration");
        json j = json::parse(r.body, nullptr, false);
        if (j.is_discarded() || !j.is_object()) fail("token server sent no JSON", url, "check the registry");
        for (const char* k : {"token", "access_token"})
            if (j.contains(k) && j[k].is_string() && !j[k].get<std::string>().empty()) return j[k].get<std::string>();
        fail("token server's answer has no token", url, "check the registry");
    }

    std::string registry_, repository_, host_, base_;
    bool insecure_ = false;
    std::optional<Credentials> creds_;
    std::mutex mu_;
    std::string auth_;  // "Bearer …" / "Basic …" once a challenge was answered
};

// ------------------------------------------------------------------------------------------------
// The registry as an ImageSource.

class RegistrySource : public ImageSource {
public:
    RegistrySource(const Reference& ref, const PullOptions& options)
        : ref_(ref), client_(ref.registry, ref.repository, options, find_credentials(ref.registry, options)) {}

    std::string display() const override { return ref_.familiar(); }
    bool remote() const override { return true; }

    std::vector<std::string> names() const override {
        // By digest alone the image is named REPO@DIGEST (docker's RepoDigests); with a tag, by
        // the tag only (the digest was a check, not a name).
        if (ref_.tag.empty()) return {ref_.str()};
        Reference named = ref_;
        named.digest.clear();
        return {named.str()};
    }

    RawManifest root() override {
        const std::string& which = ref_.digest.empty() ? ref_.tag : ref_.digest;
        RawManifest m = fetch_manifest(which);
        if (!ref_.digest.empty() && m.digest != ref_.digest)
            fail("digest mismatch: manifest " + ref_.digest + " of " + ref_.familiar() + " hashes to " + m.digest,
                 client_.base(), "the registry's copy is corrupt or was tampered with; nothing was stored");
        return m;
    }

    RawManifest manifest(const Descriptor& d) override {
        if (d.size > kMaxManifestBytes)
            fail("manifest too large (" + std::to_string(d.size) + " bytes)", display() + "@" + d.digest);
        RawManifest m = fetch_manifest(d.digest);
        verify_bytes(m.bytes, d, "manifest of " + display());
        if (m.media_type.empty()) m.media_type = d.media_type;
        return m;
    }

    std::string small_blob(const Descriptor& d) override {
        if (d.size > kMaxConfigBytes)
            fail("config blob too large (" + std::to_string(d.size) + " bytes)", display() + "@" + d.digest,
                 "this is not a container image");
        Response r = client_.get(blob_path(d.digest), {}, nullptr, kMaxConfigBytes);
        check_status(r, "blob " + d.digest);
        verify_bytes(r.body, d, "config of " + display());
        return r.body;
    }

    void blob(BlobSink& sink) override {
        Response r = client_.get(blob_path(sink.descriptor().digest), {}, &sink);
        check_status(r, "blob " + sink.descriptor().digest);
        sink.verify();
    }

private:
    std::string blob_path(const std::string& digest) const {
        return "/v2/" + ref_.repository + "/blobs/" + digest;
    }

    RawManifest fetch_manifest(const std::string& tag_or_digest) {
        Response r = client_.get("/v2/" + ref_.repository + "/manifests/" + tag_or_digest,
                                 {std::string("Accept: ") + media::kManifestAccept}, nullptr, kMaxManifestBytes);
        if (r.status == 404) {
            Reference shown = ref_;
            if (starts_with(tag_or_digest, "sha256:")) shown.digest = tag_or_digest;
            fail("manifest unknown: " + shown.familiar(), r.url,
                 "check the name and tag; the registry says: " + registry_message(r));
        }
        check_status(r, "manifest " + tag_or_digest);
        RawManifest m;
        m.bytes = r.body;
        m.digest = digest::of(r.body);
        std::string ct = r.header("content-type");
        m.media_type = trim(ct.substr(0, ct.find(';')));
        // By tag the registry's Docker-Content-Digest must agree with what we got.
        if (std::string dcd = r.header("docker-content-digest"); !dcd.empty() && digest::valid(dcd) &&
                                                                 dcd != m.digest && !starts_with(tag_or_digest, "sha256:"))
            fail("digest mismatch: manifest of " + display() + " hashes to " + m.digest + ", the registry says " + dcd,
                 r.url, "the registry's copy is corrupt or was tampered with; nothing was stored");
        return m;
    }

    void check_status(const Response& r, const std::string& what) const {
        if (r.status / 100 == 2) return;
        if (r.status == 401 || r.status == 403) client_.unauthorized(r, "access to " + ref_.familiar() + " denied");
        if (r.status == 404)
            fail(what + " unknown in " + ref_.familiar(), r.url + (registry_message(r).empty() ? "" : ": " + registry_message(r)),
                 "the registry lost the blob or the manifest is broken");
        if (r.status == 429)
            fail("too many requests (HTTP 429)", r.url, "the registry rate-limits pulls; retry later or log in");
        fail("registry error: HTTP " + std::to_string(r.status) + " for " + what + " of " + ref_.familiar() +
                 (registry_message(r).empty() ? "" : ": " + registry_message(r)),
             r.url, "retry later; if it persists the registry is broken");
    }

    Reference ref_;
    mutable Client client_;
};

}  // namespace

std::unique_ptr<ImageSource> open_registry(const Reference& ref, const PullOptions& options) {
    return std::make_unique<RegistrySource>(ref, options);
}

void check_login(const std::string& registry, const std::string& user, const std::string& password,
                 const PullOptions& options) {
    Client client(registry, "", options, Credentials{user, password});
    Response r = client.get("/v2/", {});
    if (r.status == 401 || r.status == 403) {
        std::string msg = registry_message(r);
        fail("unauthorized: " + registry + " refused the login for '" + user + "'" + (msg.empty() ? "" : ": " + msg),
             client.base() + "/v2/", "check the user name and password");
    }
    if (r.status / 100 != 2)
        fail("registry answered HTTP " + std::to_string(r.status) + " to /v2/: " + registry_message(r),
             client.base() + "/v2/", "is this a container registry?");
    log::debug("login to " + registry + " verified at " + client.base());
}

}  // namespace hutch::image::detail
