// Reading policy files: TOML into a merged Policy, includes first, every mistake reported as
// file:line:column. toml++ is compiled (header-only) into this file alone: its headers are heavy.
// The decisions (ceilings, apply, rule algebra) live in apply.cpp.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <toml++/toml.h>

#include "hutch/core/duration.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/log.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/policy/policy.hpp"
#include "hutch/sandbox/caps.hpp"

namespace hutch::policy {

namespace {

constexpr const char* kAdminPolicy = "/etc/hutch/policy.toml";
constexpr const char* kSchema = "see docs/policy.md";
constexpr int64_t kMinMemory = 6 * 1024 * 1024;  // docker's (and run's) smallest memory limit

// ---------------------------------------------------------------------------------------------
// Locations and errors.

std::string at(const toml::source_region& r) {
    std::string file = r.path ? *r.path : std::string("<policy>");
    return file + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

[[noreturn]] void bad(const toml::source_region& r, const std::string& what, const std::string& hint = kSchema) {
    throw Error("policy " + at(r), what, 0, hint);
}

const char* type_name(const toml::node& n) {
    switch (n.type()) {
        case toml::node_type::table: return "a table";
        case toml::node_type::array: return "an array";
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a float";
        case toml::node_type::boolean: return "a boolean";
        default: return "a date or time";
    }
}

[[noreturn]] void wrong_type(const toml::node& n, const std::string& key, const std::string& expected) {
    bad(n.source(), key + " must be " + expected + ", not " + type_name(n));
}

const std::string& want_string(const toml::node& n, const std::string& key) {
    if (!n.is_string()) wrong_type(n, key, "a string");
    return n.as_string()->get();
}

bool want_bool(const toml::node& n, const std::string& key) {
    if (!n.is_boolean()) wrong_type(n, key, "true or false");
    return n.as_boolean()->get();
}

const toml::array& want_array(const toml::node& n, const std::string& key, const std::string& expected) {
    if (!n.is_array()) wrong_type(n, key, expected);
    return *n.as_array();
}

const toml::table& want_table(const toml::node& n, const std::string& key) {
    if (!n.is_table()) wrong_type(n, key, "a table ([" + key + "])");
    return *n.as_table();
}

std::string join(std::initializer_list<std::string_view> items) {
    std::string out;
    for (auto s : items) out += (out.empty() ? "" : ", ") + std::string(s);
    return out;
}

// Unknown keys are errors: a typo must not silently leave a limit unset.
void only_keys(const toml::table& t, const std::string& where, std::initializer_list<std::string_view> known) {
    for (auto&& [k, v] : t) {
        if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
        std::string prefix = where.substr(0, where.find(' '));  // "network.allow entries" -> "network.allow"
        std::string name = where.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
        std::string scope = where.empty() ? "the top-level keys are "
                            : where.find(' ') == std::string::npos ? "the keys of [" + where + "] are "
                                                                   : "the keys of " + where + " are ";
        bad(k.source(), "unknown key '" + name + "'", scope + join(known) + "; " + kSchema);
    }
}

// ---------------------------------------------------------------------------------------------
// Values.

int64_t size_value(const toml::node& n, const std::string& key, bool allow_unlimited) {
    const std::string expected = "a size (\"512m\", \"2g\", or a number of bytes)";
    int64_t bytes = 0;
    if (n.is_integer()) {
        bytes = n.as_integer()->get();
    } else if (n.is_string()) {
        const std::string& s = n.as_string()->get();
        if (s == "-1") {
            bytes = -1;
        } else {
            unsigned long long v = 0;
            try {
                v = parse_size(s, key);
            } catch (const Error& e) {
                if (e.hint() != kSizeTooLarge)
                    bad(n.source(), key + " = \"" + s + "\" is not a size", "write a number with k, m, g or t, e.g. \"512m\"");
                v = ~0ULL;
            }
            if (v > static_cast<unsigned long long>(INT64_MAX / 2)) bad(n.source(), key + " = \"" + s + "\" is too large");
            bytes = static_cast<int64_t>(v);
        }
    } else {
        wrong_type(n, key, expected);
    }
    if (bytes == -1 && allow_unlimited) return -1;
    if (bytes <= 0)
        bad(n.source(), key + " must be positive",
            allow_unlimited ? "write a size, or -1 for unlimited swap" : "omit the key for no limit");
    if (key.size() >= 6 && key.compare(key.size() - 6, 6, "memory") == 0 && bytes < kMinMemory)
        bad(n.source(), key + " is below 6m", "the smallest memory limit is 6m, as in docker");
    return bytes;
}

int64_t int_value(const toml::node& n, const std::string& key, int64_t lo, int64_t hi) {
    if (!n.is_integer()) wrong_type(n, key, "an integer");
    int64_t v = n.as_integer()->get();
    if (v < lo || v > hi)
        bad(n.source(), key + " = " + std::to_string(v) + " is out of range",
            "use " + std::to_string(lo) + "-" + std::to_string(hi));
    return v;
}

double number_value(const toml::node& n, const std::string& key) {
    double v = 0;
    if (n.is_integer()) v = static_cast<double>(n.as_integer()->get());
    else if (n.is_floating_point()) v = n.as_floating_point()->get();
    else wrong_type(n, key, "a number");
    if (!(v > 0) || !std::isfinite(v)) bad(n.source(), key + " must be a positive number", "e.g. 0.5 or 2");
    return v;
}

double duration_value(const toml::node& n, const std::string& key) {
    if (n.is_integer() || n.is_floating_point()) return number_value(n, key);
    const std::string& s = want_string(n, key);
    double v = 0;
    try {
        v = parse_duration(s, key);
    } catch (const Error&) {
        bad(n.source(), key + " = \"" + s + "\" is not a duration", "write a number with s, ms, m or h, e.g. \"30m\"");
    }
    if (!(v > 0)) bad(n.source(), key + " must be positive", "omit the key for no timeout");
    return v;
}

// An array of strings, each checked by `check` (which returns the normalised string, or throws).
template <typename Check>
std::vector<std::string> strings(const toml::node& n, const std::string& key, Check check) {
    std::vector<std::string> out;
    for (const auto& item : want_array(n, key, "an array of strings")) {
        std::string v = check(item, want_string(item, key + " entries"));
        if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
    return out;
}

void append_unique(std::vector<std::string>& to, const std::vector<std::string>& from) {
    for (const auto& s : from)
        if (std::find(to.begin(), to.end(), s) == to.end()) to.push_back(s);
}

std::string capability(const toml::node& n, const std::string& s) {
    std::string upper;
    for (char c : s) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (upper == "ALL" || upper == "CAP_ALL") return "ALL";
    try {
        return caps::name_of(caps::parse_name(s));
    } catch (const Error&) {
        bad(n.source(), "unknown capability '" + s + "'", "use names like NET_BIND_SERVICE or CAP_SYS_PTRACE, or ALL");
    }
}

std::string env_var_name(const toml::node& n, const std::string& s) {
    bool ok = !s.empty() && !(s[0] >= '0' && s[0] <= '9') && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
    if (!ok) bad(n.source(), "'" + s + "' is not an environment variable name", "use letters, digits and _ (not first)");
    return s;
}

std::string dir_of(const std::string& path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return "";
    return slash == 0 ? "/" : path.substr(0, slash);
}

std::string relative_to(const std::string& dir, const std::string& path) {
    if (path.empty() || path[0] == '/' || dir.empty()) return path;
    return dir == "/" ? "/" + path : dir + "/" + path;
}

// ---------------------------------------------------------------------------------------------
// Rules.

std::pair<uint16_t, uint16_t> port_range(const toml::node& n, const std::string& key) {
    const std::string hint = "write a port (443) or a range as a string (\"8000-8100\"), ports 1-65535";
    auto number = [&](const std::string& s) -> long {
        if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return -1;
        return std::stol(s);
    };
    long lo = -1, hi = -1;
    if (n.is_integer()) {
        lo = hi = static_cast<long>(std::clamp<int64_t>(n.as_integer()->get(), -1, 65536));
    } else if (n.is_string()) {
        const std::string& s = n.as_string()->get();
        size_t dash = s.find('-');
        lo = number(s.substr(0, dash));
        hi = dash == std::string::npos ? lo : number(s.substr(dash + 1));
    } else {
        wrong_type(n, key, "a port number or a \"LOW-HIGH\" string");
    }
    if (lo < 1 || hi > 65535 || hi < 1 || lo > hi) {
        std::string text = n.is_string() ? "\"" + n.as_string()->get() + "\"" : std::to_string(n.as_integer()->get());
        bad(n.source(), key + ": " + text + " is not a port or port range", hint);
    }
    return {static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)};
}

// Sorted, with overlapping and adjacent ranges joined, so equal sets compare equal.
std::vector<std::pair<uint16_t, uint16_t>> normal_ports(std::vector<std::pair<uint16_t, uint16_t>> ports) {
    std::sort(ports.begin(), ports.end());
    std::vector<std::pair<uint16_t, uint16_t>> out;
    for (auto r : ports) {
        if (!out.empty() && static_cast<uint32_t>(out.back().second) + 1 >= r.first)
            out.back().second = std::max(out.back().second, r.second);
        else
            out.push_back(r);
    }
    return out;
}

Rule read_rule(const toml::node& n, const std::string& list) {
    const toml::table& t = want_table(n, list + " entries");
    only_keys(t, list + " entries", {"host", "cidr", "ports", "proto"});
    const toml::node* host = t.get("host");
    const toml::node* cidr = t.get("cidr");
    if ((host != nullptr) == (cidr != nullptr))
        bad(t.source(), "a " + list + " entry needs exactly one of host or cidr",
            "e.g. {host = \"pypi.org\", ports = [443]} or {cidr = \"10.0.0.0/8\"}");
    Rule r;
    r.origin = at(t.source());
    if (host) {
        r.host = want_string(*host, list + " host");
        if (std::string why = host_problem(r.host); !why.empty())
            bad(host->source(), "invalid host name '" + r.host + "': " + why, "write a lowercase DNS name or *.suffix");
    } else {
        r.cidr = want_string(*cidr, list + " cidr");
        if (std::string why = cidr_problem(r.cidr); !why.empty())
            bad(cidr->source(), "invalid CIDR '" + r.cidr + "': " + why, "write an address or network, e.g. 10.1.2.0/24");
    }
    // An allow rule opens TCP unless it says otherwise (web APIs and package indexes); a deny rule
    // closes everything unless it says otherwise.
    r.proto = list == "network.deny" ? "any" : "tcp";
    if (const toml::node* proto = t.get("proto")) {
        r.proto = want_string(*proto, list + " proto");
        if (r.proto != "tcp" && r.proto != "udp" && r.proto != "icmp" && r.proto != "any")
            bad(proto->source(), "invalid proto '" + r.proto + "'", "use tcp, udp, icmp or any");
    }
    if (const toml::node* ports = t.get("ports")) {
        const toml::array& a = want_array(*ports, list + " ports", "an array of ports");
        if (a.empty()) bad(ports->source(), list + " ports is empty", "omit ports to mean any port");
        if (r.proto == "icmp") bad(ports->source(), "ICMP has no ports", "omit ports for proto = \"icmp\"");
        for (const auto& p : a) r.ports.push_back(port_range(p, list + " ports"));
        r.ports = normal_ports(r.ports);
    }
    return r;
}

bool same_rule(const Rule& a, const Rule& b) {
    return a.host == b.host && a.cidr == b.cidr && a.ports == b.ports && a.proto == b.proto;
}

void append_rules(std::vector<Rule>& to, const toml::node& n, const std::string& key) {
    for (const auto& item : want_array(n, key, "an array of rules ({host = ..., ports = [...]})")) {
        Rule r = read_rule(item, key);
        bool dup = std::any_of(to.begin(), to.end(), [&](const Rule& x) { return same_rule(x, r); });
        if (!dup) to.push_back(r);
    }
}

// ---------------------------------------------------------------------------------------------
// Shipped policies and references to them.

std::vector<std::string> shipped_names() {
    std::vector<std::string> out;
    DIR* d = ::opendir(policy_dir().c_str());
    if (!d) return out;
    while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > 5 && n.compare(n.size() - 5, 5, ".toml") == 0) out.push_back(n.substr(0, n.size() - 5));
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

std::string shipped_hint() {
    std::string names;
    for (const auto& n : shipped_names()) names += (names.empty() ? "" : ", ") + n;
    return "the shipped policies are " + (names.empty() ? std::string("none: is HUTCH_POLICY_DIR right?") : names) +
           "; name a file by a path with a '/' or the .toml suffix";
}

// "agent" is a shipped policy; anything with a '/' or ending in .toml is a file.
bool is_name(const std::string& ref) {
    return ref.find('/') == std::string::npos && !(ref.size() >= 5 && ref.compare(ref.size() - 5, 5, ".toml") == 0);
}

std::string resolve_ref(const std::string& ref, const std::string& including_dir) {
    if (is_name(ref)) return policy_dir() + "/" + ref + ".toml";
    return relative_to(including_dir, ref);
}

// ---------------------------------------------------------------------------------------------
// The loader: follows includes depth-first, then merges each file's own keys over them.

class Loader {
public:
    Policy policy;

    // `file` as shown in messages; `site` is the include entry that named it (null for the first).
    void load_file(const std::string& file, const toml::node* site);

private:
    using FileId = std::pair<dev_t, ino_t>;
    struct Opened {
        UniqueFd fd;
        FileId id;
    };
    Opened open(const std::string& file, const toml::node* site);
    std::string read(const Opened& o, const std::string& file, const toml::node* site);
    [[noreturn]] void cannot_read(const std::string& file, const toml::node* site, int err);
    toml::table parse(const std::string& text, const std::string& file);
    std::vector<FileId> stack_;              // the files being loaded, outermost first
    std::vector<std::string> stack_shown_;   // the same, as shown
    std::vector<FileId> merged_;             // files already merged (an include diamond is fine)

    void includes(const toml::node& n, const std::string& dir);
    void network(const toml::table& t);
    void limits(const toml::table& t, const std::string& section, Limits& out);
    void device_rates(const toml::node& n, const std::string& key, std::map<std::string, int64_t>& out);
    void capabilities(const toml::table& t);
    void seccomp(const toml::table& t, const std::string& dir);
    void mounts(const toml::table& t);
    void env(const toml::table& t);
    void set_origin(const std::string& key, const toml::node& n) { policy.origins[key] = at(n.source()); }
};

// The policy file, open, and its identity: a file named twice (through links or relative
// paths) is recognised by its inode, which realpath's walk would cost several calls to find.
Loader::Opened Loader::open(const std::string& file, const toml::node* site) {
    Opened o;
    int err = 0;
    o.fd.reset(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!o.fd || ::fstat(o.fd.get(), &st) != 0) err = errno;
    else if (S_ISDIR(st.st_mode)) err = EISDIR;  // a directory would read as an empty, valid policy
    if (err != 0) cannot_read(file, site, err);
    o.id = {st.st_dev, st.st_ino};
    return o;
}

std::string Loader::read(const Opened& o, const std::string& file, const toml::node* site) {
    try {
        return fs::read_fd(o.fd.get(), file);
    } catch (const Error& e) {
        cannot_read(file, site, e.error_number());
    }
}

void Loader::cannot_read(const std::string& file, const toml::node* site, int err) {
    if (site) bad(site->source(), "cannot read the included policy " + file + ": " + std::strerror(err),
                  "include paths are relative to the including file; " + shipped_hint());
    throw Error("cannot read policy", file, err, shipped_hint());
}

toml::table Loader::parse(const std::string& text, const std::string& file) {
    try {
        return toml::parse(text, std::string(file));
    } catch (const toml::parse_error& e) {
        bad(e.source(), "invalid TOML: " + std::string(e.description()), "fix the syntax; TOML is described at https://toml.io");
    }
}

void Loader::load_file(const std::string& file, const toml::node* site) {
    Opened f = open(file, site);
    const FileId key = f.id;
    if (auto it = std::find(stack_.begin(), stack_.end(), key); it != stack_.end()) {
        std::string cycle;
        for (auto s = stack_shown_.begin() + (it - stack_.begin()); s != stack_shown_.end(); ++s) cycle += *s + " -> ";
        bad(site->source(), "include cycle: " + cycle + file, "remove one of these includes");
    }
    if (std::find(merged_.begin(), merged_.end(), key) != merged_.end()) return;
    toml::table t = parse(read(f, file, site), file);
    stack_.push_back(key);
    stack_shown_.push_back(file);
    only_keys(t, "", {"include", "network", "limits", "ceilings", "capabilities", "seccomp", "mounts", "env"});
    if (const toml::node* inc = t.get("include")) includes(*inc, dir_of(file));
    // The file's own keys come after its includes: set keys replace theirs, lists of rules and
    // names add to theirs.
    if (const toml::node* n = t.get("network")) network(want_table(*n, "network"));
    if (const toml::node* n = t.get("limits")) limits(want_table(*n, "limits"), "limits", policy.defaults);
    if (const toml::node* n = t.get("ceilings")) limits(want_table(*n, "ceilings"), "ceilings", policy.ceilings);
    if (const toml::node* n = t.get("capabilities")) capabilities(want_table(*n, "capabilities"));
    if (const toml::node* n = t.get("seccomp")) seccomp(want_table(*n, "seccomp"), dir_of(file));
    if (const toml::node* n = t.get("mounts")) mounts(want_table(*n, "mounts"));
    if (const toml::node* n = t.get("env")) env(want_table(*n, "env"));
    stack_.pop_back();
    stack_shown_.pop_back();
    merged_.push_back(key);
    policy.sources.push_back(file);
}

void Loader::includes(const toml::node& n, const std::string& dir) {
    for (const auto& item : want_array(n, "include", "an array of policy names or files, e.g. [\"registries\"]")) {
        const std::string& ref = want_string(item, "include entries");
        if (ref.empty()) bad(item.source(), "empty include", shipped_hint());
        std::string file = resolve_ref(ref, dir);
        if (is_name(ref) && !fs::exists(file))
            bad(item.source(), "include \"" + ref + "\": no shipped policy named " + ref + " in " + policy_dir(),
                shipped_hint());
        load_file(file, &item);
    }
}

void Loader::network(const toml::table& t) {
    only_keys(t, "network", {"mode", "allow", "deny", "icmp"});
    if (const toml::node* n = t.get("mode")) {
        std::string mode = want_string(*n, "network.mode");
        if (mode != "none" && mode != "egress")
            bad(n->source(), "network.mode = \"" + mode + "\" is not a mode", "use \"none\" or \"egress\"");
        policy.network = mode;
        set_origin("network.mode", *n);
    }
    if (const toml::node* n = t.get("allow")) {
        append_rules(policy.allow, *n, "network.allow");
        set_origin("network.allow", *n);
    }
    if (const toml::node* n = t.get("deny")) {
        append_rules(policy.deny, *n, "network.deny");
        set_origin("network.deny", *n);
    }
    if (const toml::node* n = t.get("icmp")) {
        policy.icmp = want_bool(*n, "network.icmp");
        set_origin("network.icmp", *n);
    }
}

// device_read_bps = { "/dev/vda" = "50m" }: a rate per block device. The devices are not looked
// up here: a policy may name devices of other hosts, and apply() skips those it does not find.
void Loader::device_rates(const toml::node& n, const std::string& key, std::map<std::string, int64_t>& out) {
    const toml::table* t = n.as_table();
    if (!t) wrong_type(n, key, "a table of device paths and rates, e.g. { \"/dev/vda\" = \"50m\" }");
    for (auto&& [k, v] : *t) {
        std::string dev(k.str());
        // Quotes, backslashes and control characters have no place in a device's path, and would
        // need escaping in the keys that messages name.
        bool plain = std::none_of(dev.begin(), dev.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f || c == '"' || c == '\\'; });
        if (dev.empty() || dev[0] != '/' || fs::lexical_normal(dev) != dev || !plain)
            bad(k.source(), key + ": '" + dev + "' is not a device path", "name a block device by its absolute path, e.g. \"/dev/vda\"");
        out[dev] = size_value(v, key + ".\"" + dev + "\"", false);
        set_origin(key + ".\"" + dev + "\"", v);
    }
}

void Loader::limits(const toml::table& t, const std::string& section, Limits& out) {
    only_keys(t, section, {"memory", "memory_swap", "pids", "cpus", "cpu_weight", "io_weight", "timeout",
                           "device_read_bps", "device_write_bps"});
    for (auto&& [k, n] : t) {
        std::string name(k.str());
        std::string key = section + "." + name;
        if (name == "device_read_bps" || name == "device_write_bps") {
            device_rates(n, key, name == "device_read_bps" ? out.device_read_bps : out.device_write_bps);
            continue;
        }
        if (name == "memory") out.memory = size_value(n, key, false);
        // -1 (unlimited swap) is a default one may ask for, never a ceiling.
        else if (name == "memory_swap") out.memory_swap = size_value(n, key, section == "limits");
        else if (name == "pids") out.pids = int_value(n, key, 1, INT32_MAX);
        else if (name == "cpus") out.cpus = number_value(n, key);
        else if (name == "cpu_weight") out.cpu_weight = int_value(n, key, 1, 10000);
        else if (name == "io_weight") out.io_weight = int_value(n, key, 1, 10000);
        else out.timeout = duration_value(n, key);
        set_origin(key, n);
    }
}

void Loader::capabilities(const toml::table& t) {
    only_keys(t, "capabilities", {"add", "drop", "allowed"});
    if (const toml::node* n = t.get("add")) {
        append_unique(policy.cap_add, strings(*n, "capabilities.add", capability));
        set_origin("capabilities.add", *n);
    }
    if (const toml::node* n = t.get("drop")) {
        append_unique(policy.cap_drop, strings(*n, "capabilities.drop", capability));
        set_origin("capabilities.drop", *n);
    }
    if (const toml::node* n = t.get("allowed")) {
        policy.cap_allowed = strings(*n, "capabilities.allowed", capability);
        set_origin("capabilities.allowed", *n);
    }
}

void Loader::seccomp(const toml::table& t, const std::string& dir) {
    only_keys(t, "seccomp", {"profile", "allow_unconfined"});
    if (const toml::node* n = t.get("profile")) {
        std::string profile = want_string(*n, "seccomp.profile");
        if (profile == "default") {
            profile.clear();
        } else if (profile != "unconfined") {
            if (profile.empty()) bad(n->source(), "seccomp.profile is empty", "use \"default\", \"unconfined\" or a file");
            profile = fs::absolute(relative_to(dir, profile));
            if (!fs::exists(profile))
                bad(n->source(), "seccomp.profile " + profile + ": no such file",
                    "a relative profile path is relative to the policy file's directory");
        }
        policy.seccomp_profile = profile;
        set_origin("seccomp.profile", *n);
    }
    if (const toml::node* n = t.get("allow_unconfined")) {
        policy.allow_unconfined = want_bool(*n, "seccomp.allow_unconfined");
        set_origin("seccomp.allow_unconfined", *n);
    }
}

void Loader::mounts(const toml::table& t) {
    only_keys(t, "mounts", {"allowed_sources", "read_only"});
    if (const toml::node* n = t.get("allowed_sources")) {
        policy.bind_sources = strings(*n, "mounts.allowed_sources", [](const toml::node& item, const std::string& s) {
            if (s.empty() || s[0] != '/')
                bad(item.source(), "mounts.allowed_sources: '" + s + "' is not an absolute path", "write /home, /srv, ...");
            // Normalised so that prefixes compare component by component.
            std::string out;
            for (size_t i = 0; i < s.size(); ++i)
                if (!(s[i] == '/' && (i + 1 == s.size() || s[i + 1] == '/'))) out += s[i];
            if (out.find("/./") != std::string::npos || out.find("/../") != std::string::npos || out.ends_with("/..") ||
                out.ends_with("/."))
                bad(item.source(), "mounts.allowed_sources: '" + s + "' has . or .. components", "write the plain path");
            return out.empty() ? std::string("/") : out;
        });
        set_origin("mounts.allowed_sources", *n);
    }
    if (const toml::node* n = t.get("read_only")) {
        policy.binds_read_only = want_bool(*n, "mounts.read_only");
        set_origin("mounts.read_only", *n);
    }
}

void Loader::env(const toml::table& t) {
    only_keys(t, "env", {"pass", "allowed"});
    if (const toml::node* n = t.get("pass")) {
        append_unique(policy.env_pass, strings(*n, "env.pass", env_var_name));
        set_origin("env.pass", *n);
    }
    if (const toml::node* n = t.get("allowed")) {
        policy.env_allowed = strings(*n, "env.allowed", env_var_name);
        set_origin("env.allowed", *n);
    }
}

// An admin policy that its users can write is no ceiling.
void require_admin_owned(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) throw_errno("cannot stat the admin policy", path);
    if (st.st_uid != 0 || (st.st_mode & 022) != 0)
        fail("refusing the admin policy", path + " is not owned by root or is writable by others",
             "chown root " + path + " && chmod go-w " + path);
}

}  // namespace

Policy load(const std::string& name_or_file) {
    if (name_or_file.empty()) fail("no policy given", "", shipped_hint());
    std::string file = resolve_ref(name_or_file, "");
    if (is_name(name_or_file) && !fs::exists(file))
        fail("no shipped policy named " + name_or_file, policy_dir(), shipped_hint());
    Loader loader;
    loader.load_file(file, nullptr);
    detail::finish_merged(loader.policy);
    return loader.policy;
}

std::optional<Policy> load_admin() {
    const char* env = std::getenv("HUTCH_ADMIN_POLICY");
    std::string override_path = env ? env : "";
    if (fs::exists(kAdminPolicy)) {
        // The variable is for tests: it must never let a user replace an administrator's ceilings.
        if (!override_path.empty() && override_path != kAdminPolicy)
            log::warn(std::string("HUTCH_ADMIN_POLICY is ignored: ") + kAdminPolicy + " exists and is the admin policy");
        require_admin_owned(kAdminPolicy);
        return load(kAdminPolicy);
    }
    if (!override_path.empty()) return load(override_path);
    return std::nullopt;
}

}  // namespace hutch::policy
