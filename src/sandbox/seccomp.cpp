// Docker-format seccomp profiles compiled with libseccomp into one classic-BPF program.
//
// libseccomp's rule database does not do what a profile says in three cases, so the program is
// assembled from several libseccomp filters ("stages") chained together:
//  - An unconditional rule for a syscall swallows every conditional rule for it, whatever their
//    actions (ioctl ALLOW + ioctl TIOCSTI ERRNO compiles to "ioctl ALLOW"). Here conditional rules
//    are checked first, in their own stage; when none matches, the unconditional stage decides.
//  - On 32-bit ABIs libseccomp truncates 64-bit comparison data (EQ 0x1_0000_0000 becomes EQ 0).
//    Each architecture gets its own stages, and comparisons the 32-bit argument can never reach are
//    decided here (see narrow_to_32bit).
//  - libseccomp 2.5.4 knows no syscall after futex_requeue (Linux 6.7), and a multi-architecture
//    filter rejects raw numbers; a native-only one accepts them (see kNewerSyscalls).
// A stage's "not mine" result is a marker action that linking turns into a jump to the next stage.
#include "hutch/sandbox/seccomp.hpp"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "hutch/core/digest.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"

namespace hutch::seccomp {
namespace {

using json = nlohmann::json;

// Bump whenever compile() can produce different bytes for the same inputs: it keys the cache.
constexpr const char* kCompilerTag = "hutch-seccomp-compiler-5";

// The kernel's limit on a classic-BPF program (BPF_MAXINSNS).
constexpr size_t kMaxInstructions = 4096;

// What running a program for an architecture it does not cover does (libseccomp's default only
// kills the thread, leaving the rest of the process running without its syscalls).
constexpr uint32_t kBadArchAction = SCMP_ACT_KILL_PROCESS;

// ---------------------------------------------------------------------------------------------
// The machine the program is compiled for.

struct Host {
    uint32_t arch = 0;                  // libseccomp token of the native architecture
    std::set<std::string> arch_names;   // how profiles' includes/excludes.arches name it
    std::array<unsigned, 3> kernel{};   // running kernel version, for minKernel
    std::set<std::string> caps;         // capabilities the process will hold, "CAP_X" form
};

// Names Docker profiles use for an architecture in includes/excludes.arches (Go's GOARCH names,
// plus the kernel's names so hand-written profiles can use either).
std::set<std::string> arch_aliases(uint32_t arch) {
    switch (arch) {
        case SCMP_ARCH_X86_64: return {"amd64", "x86_64"};
        case SCMP_ARCH_X86: return {"386", "x86", "i386"};
        case SCMP_ARCH_X32: return {"x32"};
        case SCMP_ARCH_AARCH64: return {"arm64", "aarch64"};
        case SCMP_ARCH_ARM: return {"arm"};
        case SCMP_ARCH_PPC64LE: return {"ppc64le"};
        case SCMP_ARCH_PPC64: return {"ppc64"};
        case SCMP_ARCH_S390X: return {"s390x"};
        case SCMP_ARCH_S390: return {"s390"};
        case SCMP_ARCH_RISCV64: return {"riscv64"};
        case SCMP_ARCH_MIPS64: return {"mips64"};
        case SCMP_ARCH_MIPSEL64: return {"mips64le"};
        case SCMP_ARCH_MIPS: return {"mips"};
        case SCMP_ARCH_MIPSEL: return {"mipsle"};
        default: return {};
    }
}

// Whether libseccomp compares all 64 bits of arguments on this ABI. It compares only the low 32
// bits on the others, x32 included (whose registers are really 64-bit; treating them as 32-bit
// values, as for i386 and arm, is the closest the filter can get).
bool has_64bit_args(uint32_t arch) {
    switch (arch) {
        case SCMP_ARCH_X86_64:
        case SCMP_ARCH_AARCH64:
        case SCMP_ARCH_PPC64:
        case SCMP_ARCH_PPC64LE:
        case SCMP_ARCH_S390X:
        case SCMP_ARCH_RISCV64:
        case SCMP_ARCH_MIPS64:
        case SCMP_ARCH_MIPSEL64:
        case SCMP_ARCH_PARISC64: return true;
        default: return false;
    }
}

// Since Linux 5.1 new syscalls get the same number on these architectures (mips offsets them).
bool has_unified_numbers(uint32_t arch) {
    switch (arch) {
        case SCMP_ARCH_X86_64:
        case SCMP_ARCH_X86:
        case SCMP_ARCH_AARCH64:
        case SCMP_ARCH_ARM:
        case SCMP_ARCH_RISCV64:
        case SCMP_ARCH_S390X:
        case SCMP_ARCH_S390:
        case SCMP_ARCH_PPC64LE:
        case SCMP_ARCH_PPC64:
        case SCMP_ARCH_PPC: return true;
        default: return false;
    }
}

// Syscalls too new for libseccomp 2.5.4, with their unified numbers (Linux 6.8 to 6.17). Used only
// when libseccomp cannot resolve the name, and only for the native architecture, so the sandbox
// gets what the profile says for them instead of the default action.
constexpr std::pair<const char*, int> kNewerSyscalls[] = {
    {"statmount", 457},     {"listmount", 458},         {"lsm_get_self_attr", 459},
    {"lsm_set_self_attr", 460}, {"lsm_list_modules", 461}, {"mseal", 462},
    {"setxattrat", 463},    {"getxattrat", 464},        {"listxattrat", 465},
    {"removexattrat", 466}, {"open_tree_attr", 467},    {"file_getattr", 468},
    {"file_setattr", 469},
};

// "6.18.44-fc" -> {6, 18, 44}; missing parts are 0. Returns nullopt unless it starts "N.N".
std::optional<std::array<unsigned, 3>> parse_version(const std::string& text) {
    std::array<unsigned, 3> v{};
    size_t pos = 0;
    for (size_t part = 0; part < v.size(); ++part) {
        if (pos >= text.size() || !std::isdigit(static_cast<unsigned char>(text[pos]))) {
            if (part < 2) return std::nullopt;
            break;
        }
        unsigned n = 0;
        while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])) && n < 100000)
            n = n * 10 + static_cast<unsigned>(text[pos++] - '0');
        v[part] = n;
        if (pos >= text.size() || text[pos] != '.') {
            if (part < 1) return std::nullopt;
            break;
        }
        ++pos;
    }
    return v;
}

std::string kernel_release() {
    struct utsname u;
    if (::uname(&u) != 0) throw_errno("cannot read the kernel version", "uname");
    return u.release;
}

// "sys_admin" and "CAP_SYS_ADMIN" name the same capability.
std::string normalize_cap(std::string cap) {
    for (char& c : cap) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return cap.rfind("CAP_", 0) == 0 ? cap : "CAP_" + cap;
}

Host current_host(const std::vector<std::string>& caps) {
    Host host;
    host.arch = seccomp_arch_native();
    host.arch_names = arch_aliases(host.arch);
    std::string release = kernel_release();
    auto version = parse_version(release);
    if (!version) fail("cannot parse the kernel version", release);
    host.kernel = *version;
    for (const auto& c : caps) host.caps.insert(normalize_cap(c));
    return host;
}

// ---------------------------------------------------------------------------------------------
// The profile, parsed and reduced to the rules that apply on this host.

// One argument comparison. For SCMP_CMP_MASKED_EQ, `a` is the mask and `b` the value, which is
// both libseccomp's order and Docker's (value = mask, valueTwo = expected).
struct Cond {
    unsigned arg;
    scmp_compare op;
    uint64_t a;
    uint64_t b;
};

struct Rule {
    std::string where;               // "syscalls[3]", for messages
    std::vector<std::string> names;
    uint32_t action;
    std::vector<Cond> conds;         // all must hold; empty means unconditional
};

struct Profile {
    uint32_t default_action = 0;
    std::vector<uint32_t> arches;    // native first
    std::vector<Rule> rules;
};

class Parser {
public:
    Parser(const std::string& source, const Host& host) : source_(source), host_(host) {}

    Profile parse(const std::string& text) const {
        json doc = parse_json(text);
        if (!doc.is_object()) bad("(top level)", "must be a JSON object");
        Profile p;
        p.default_action = default_action(doc);
        p.arches = arches(doc);
        const json* syscalls = find(doc, "syscalls");
        if (syscalls && !syscalls->is_null()) {
            if (!syscalls->is_array()) bad("syscalls", "must be an array");
            for (size_t i = 0; i < syscalls->size(); ++i) add_rules((*syscalls)[i], "syscalls[" + std::to_string(i) + "]", p);
        }
        return p;
    }

    [[noreturn]] void bad(const std::string& key, const std::string& problem) const {
        fail("seccomp profile", source_ + ": " + key + ": " + problem);
    }

private:
    const std::string& source_;
    const Host& host_;

    json parse_json(const std::string& text) const {
        try {
            return json::parse(text);
        } catch (const json::parse_error& e) {
            // e.what() is "[json.exception.parse_error.101] parse error at line 1, ..."; drop the tag.
            std::string msg = e.what();
            auto close = msg.find("] ");
            if (close != std::string::npos) msg = msg.substr(close + 2);
            fail("seccomp profile", source_ + ": invalid JSON: " + msg);
        }
    }

    static const json* find(const json& obj, const char* key) {
        auto it = obj.find(key);
        return it == obj.end() ? nullptr : &*it;
    }

    std::string string_at(const json& v, const std::string& key) const {
        if (!v.is_string()) bad(key, "must be a string");
        return v.get<std::string>();
    }

    uint64_t uint_at(const json& v, const std::string& key, uint64_t max) const {
        if (!v.is_number_unsigned()) bad(key, "must be a non-negative integer");
        uint64_t n = v.get<uint64_t>();
        if (n > max) bad(key, std::to_string(n) + " is out of range 0-" + std::to_string(max));
        return n;
    }

    // A missing or null list is empty.
    std::vector<std::string> strings_at(const json& obj, const char* field, const std::string& where) const {
        const json* v = find(obj, field);
        std::vector<std::string> out;
        if (!v || v->is_null()) return out;
        std::string key = where.empty() ? std::string(field) : where + "." + field;
        if (!v->is_array()) bad(key, "must be an array of strings");
        for (size_t i = 0; i < v->size(); ++i) out.push_back(string_at((*v)[i], key + "[" + std::to_string(i) + "]"));
        return out;
    }

    // errnoRet for ERRNO (an errno, capped by the kernel at 4095) and TRACE (a 16-bit tracer message).
    // A rule's errnoRet with another action is a mistake; defaultErrnoRet is often set regardless.
    uint32_t action_from(const std::string& name, const std::string& key, std::optional<uint64_t> ret,
                         uint64_t default_ret, const std::string& ret_key, bool ret_only_for_errno) const {
        if (name == "SCMP_ACT_ERRNO") {
            uint64_t e = ret.value_or(default_ret);
            if (e > 4095) bad(ret_key, std::to_string(e) + " is out of range 0-4095");
            return SCMP_ACT_ERRNO(static_cast<uint32_t>(e));
        }
        if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(static_cast<uint32_t>(ret.value_or(default_ret)));
        if (ret && ret_only_for_errno)
            bad(ret_key, "only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE");
        if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
        if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
        if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
        if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
        if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
        if (name == "SCMP_ACT_NOTIFY") bad(key, "SCMP_ACT_NOTIFY is not supported by hutch");
        bad(key, "unknown action \"" + name + "\"");
    }

    std::optional<uint64_t> optional_uint(const json& obj, const char* field, const std::string& key,
                                          uint64_t max) const {
        const json* v = find(obj, field);
        if (!v || v->is_null()) return std::nullopt;
        return uint_at(*v, key, max);
    }

    uint32_t default_action(const json& doc) const {
        const json* v = find(doc, "defaultAction");
        if (!v) bad("defaultAction", "missing");
        auto ret = optional_uint(doc, "defaultErrnoRet", "defaultErrnoRet", 0xffff);
        return action_from(string_at(*v, "defaultAction"), "defaultAction", ret, EPERM, "defaultErrnoRet", false);
    }

    uint32_t arch_token(const std::string& name, const std::string& key, bool required) const {
        std::string s = name.rfind("SCMP_ARCH_", 0) == 0 ? name.substr(10) : name;
        for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        uint32_t token = seccomp_arch_resolve_name(s.c_str());
        if (token == 0 && required) bad(key, "unknown architecture \"" + name + "\"");
        return token;
    }

    // The native architecture, the sub-architectures archMap gives it, and any listed in
    // `architectures`. Entries for other native architectures are ignored (libseccomp may not know
    // them: 2.5.4 has no loongarch64).
    std::vector<uint32_t> arches(const json& doc) const {
        std::vector<uint32_t> out{host_.arch};
        auto add = [&](uint32_t t) {
            if (t != 0 && std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
        };
        if (const json* map = find(doc, "archMap"); map && !map->is_null()) {
            if (!map->is_array()) bad("archMap", "must be an array");
            for (size_t i = 0; i < map->size(); ++i) {
                std::string where = "archMap[" + std::to_string(i) + "]";
                const json& e = (*map)[i];
                if (!e.is_object() || !find(e, "architecture")) bad(where, "must be an object with \"architecture\"");
                std::string arch = string_at(e["architecture"], where + ".architecture");
                if (arch_token(arch, where + ".architecture", false) != host_.arch) continue;
                auto subs = strings_at(e, "subArchitectures", where);
                for (size_t j = 0; j < subs.size(); ++j)
                    add(arch_token(subs[j], where + ".subArchitectures[" + std::to_string(j) + "]", true));
            }
        }
        auto listed = strings_at(doc, "architectures", "");
        for (size_t i = 0; i < listed.size(); ++i)
            add(arch_token(listed[i], "architectures[" + std::to_string(i) + "]", true));
        return out;
    }

    // Docker's semantics: includes need every listed cap, any listed arch, and kernel >= minKernel;
    // excludes skip the rule on any listed cap, any listed arch, or kernel >= minKernel.
    bool filter_matches(const json& rule, const char* field, const std::string& where, bool includes) const {
        const json* f = find(rule, field);
        if (!f || f->is_null()) return includes;
        std::string key = where + "." + field;
        if (!f->is_object()) bad(key, "must be an object");
        auto caps = strings_at(*f, "caps", key);
        auto arches = strings_at(*f, "arches", key);
        bool any_cap = false, all_caps = true;
        for (const auto& c : caps) {
            bool held = host_.caps.count(normalize_cap(c)) > 0;
            any_cap = any_cap || held;
            all_caps = all_caps && held;
        }
        bool arch_listed = std::any_of(arches.begin(), arches.end(), [&](const std::string& a) {
            return host_.arch_names.count(a) > 0;
        });
        std::optional<bool> kernel_new_enough;
        if (const json* mk = find(*f, "minKernel"); mk && !mk->is_null()) {
            std::string text = string_at(*mk, key + ".minKernel");
            auto v = parse_version(text);
            if (!v) bad(key + ".minKernel", "\"" + text + "\" is not a kernel version like \"4.8\"");
            kernel_new_enough = host_.kernel >= *v;
        }
        if (includes)
            return (caps.empty() || all_caps) && (arches.empty() || arch_listed) && kernel_new_enough.value_or(true);
        return (!caps.empty() && any_cap) || arch_listed || kernel_new_enough.value_or(false);
    }

    bool applies(const json& rule, const std::string& where) const {
        return filter_matches(rule, "includes", where, true) && !filter_matches(rule, "excludes", where, false);
    }

    std::vector<std::string> names(const json& rule, const std::string& where) const {
        std::vector<std::string> out = strings_at(rule, "names", where);
        if (const json* one = find(rule, "name"); one && !one->is_null())
            out.push_back(string_at(*one, where + ".name"));
        if (out.empty()) bad(where, "has neither \"names\" nor \"name\"");
        for (const auto& n : out)
            if (n.empty()) bad(where + ".names", "empty syscall name");
        return out;
    }

    static std::optional<scmp_compare> op_from(const std::string& op) {
        static const std::map<std::string, scmp_compare> ops = {
            {"SCMP_CMP_NE", SCMP_CMP_NE}, {"SCMP_CMP_LT", SCMP_CMP_LT}, {"SCMP_CMP_LE", SCMP_CMP_LE},
            {"SCMP_CMP_EQ", SCMP_CMP_EQ}, {"SCMP_CMP_GE", SCMP_CMP_GE}, {"SCMP_CMP_GT", SCMP_CMP_GT},
            {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
        };
        auto it = ops.find(op);
        if (it == ops.end()) return std::nullopt;
        return it->second;
    }

    Cond cond(const json& arg, const std::string& key) const {
        if (!arg.is_object()) bad(key, "must be an object");
        const json* index = find(arg, "index");
        const json* op = find(arg, "op");
        if (!index) bad(key + ".index", "missing");
        if (!op) bad(key + ".op", "missing");
        Cond c{};
        c.arg = static_cast<unsigned>(uint_at(*index, key + ".index", 5));
        std::string op_name = string_at(*op, key + ".op");
        auto parsed = op_from(op_name);
        if (!parsed) bad(key + ".op", "unknown operator \"" + op_name + "\"");
        c.op = *parsed;
        c.a = optional_uint(arg, "value", key + ".value", UINT64_MAX).value_or(0);
        c.b = optional_uint(arg, "valueTwo", key + ".valueTwo", UINT64_MAX).value_or(0);
        return c;
    }

    std::vector<Cond> conds(const json& rule, const std::string& where) const {
        std::vector<Cond> out;
        const json* args = find(rule, "args");
        if (!args || args->is_null()) return out;
        if (!args->is_array()) bad(where + ".args", "must be an array");
        for (size_t i = 0; i < args->size(); ++i) out.push_back(cond((*args)[i], where + ".args[" + std::to_string(i) + "]"));
        return out;
    }

    // libseccomp refuses two comparisons of one argument in a rule. runc (Docker's runtime) then
    // adds each comparison as a rule of its own, which ORs them; do the same so profiles behave alike.
    static std::vector<std::vector<Cond>> split_like_runc(const std::vector<Cond>& conds) {
        std::array<int, 6> per_arg{};
        bool repeated = false;
        for (const auto& c : conds) repeated = repeated || ++per_arg[c.arg] > 1;
        if (!repeated) return {conds};
        std::vector<std::vector<Cond>> out;
        for (const auto& c : conds) out.push_back({c});
        return out;
    }

    void add_rules(const json& rule, const std::string& where, Profile& p) const {
        if (!rule.is_object()) bad(where, "must be an object");
        auto syscall_names = names(rule, where);
        const json* action = find(rule, "action");
        if (!action) bad(where + ".action", "missing");
        auto ret = optional_uint(rule, "errnoRet", where + ".errnoRet", 0xffff);
        uint32_t act = action_from(string_at(*action, where + ".action"), where + ".action", ret, EPERM,
                                   where + ".errnoRet", true);
        auto all_conds = conds(rule, where);  // validated even when the rule does not apply
        if (!applies(rule, where)) return;
        for (auto& c : split_like_runc(all_conds)) p.rules.push_back(Rule{where, syscall_names, act, std::move(c)});
    }
};

// ---------------------------------------------------------------------------------------------
// Rules for one architecture.

// Decides a comparison against data above 32 bits for an ABI whose arguments are 32-bit values
// (the kernel zero-extends them): nullopt if it can never hold, otherwise the comparison to keep
// (an empty one if it always holds).
std::optional<std::optional<Cond>> narrow_to_32bit(const Cond& c) {
    constexpr uint64_t kLow = 0xffffffffULL;
    switch (c.op) {
        case SCMP_CMP_MASKED_EQ:
            if (c.b > kLow) return std::nullopt;  // the masked argument has no high bits
            return std::optional<Cond>(Cond{c.arg, c.op, c.a & kLow, c.b});
        case SCMP_CMP_EQ:
        case SCMP_CMP_GT:
        case SCMP_CMP_GE:
            if (c.a > kLow) return std::nullopt;
            break;
        case SCMP_CMP_NE:
        case SCMP_CMP_LT:
        case SCMP_CMP_LE:
            if (c.a > kLow) return std::optional<Cond>();  // always true
            break;
        default: break;
    }
    return std::optional<Cond>(c);
}

// The comparisons of `rule` as libseccomp should see them on `arch`; nullopt if the rule can never
// match there.
std::optional<std::vector<Cond>> conds_for_arch(const std::vector<Cond>& conds, uint32_t arch) {
    if (has_64bit_args(arch)) return conds;
    std::vector<Cond> out;
    for (const auto& c : conds) {
        auto narrowed = narrow_to_32bit(c);
        if (!narrowed) return std::nullopt;
        if (*narrowed) out.push_back(**narrowed);
    }
    return out;
}

// The number to give libseccomp for `name` in a filter for `arch`, or nullopt to skip the name
// there, as Docker skips names unknown to an architecture. libseccomp expects native numbers (or
// its negative pseudo-numbers) and translates them by name for other architectures.
std::optional<int> syscall_number(const std::string& name, uint32_t arch, uint32_t native) {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr == __NR_SCMP_ERROR) {
        if (arch != native || !has_unified_numbers(arch)) return std::nullopt;
        for (const auto& [known, number] : kNewerSyscalls)
            if (name == known) return number;
        return std::nullopt;
    }
    int on_arch = seccomp_syscall_resolve_name_arch(arch, name.c_str());
    // Socket and IPC calls multiplexed through socketcall/ipc have pseudo-numbers in
    // [__PNR_shmctl, __PNR_socket]; libseccomp rewrites rules for them. Other negative numbers
    // mean the syscall does not exist on this architecture.
    bool multiplexed = on_arch <= __PNR_socket && on_arch >= __PNR_shmctl;
    if (on_arch == __NR_SCMP_ERROR || (on_arch < 0 && !multiplexed)) return std::nullopt;
    return nr;
}

struct Entry {
    int nr;
    std::string name;
    const Rule* rule;
    std::vector<Cond> conds;
};

struct ArchRules {
    std::vector<Entry> conditional;
    std::vector<Entry> unconditional;
};

ArchRules rules_for_arch(const Profile& p, uint32_t arch, uint32_t native, const Parser& parser) {
    ArchRules out;
    std::map<int, const Rule*> unconditional;  // by syscall number, to catch contradictions
    for (const Rule& rule : p.rules) {
        auto conds = conds_for_arch(rule.conds, arch);
        if (!conds) continue;
        for (const auto& name : rule.names) {
            auto nr = syscall_number(name, arch, native);
            if (!nr) continue;
            if (!conds->empty()) {
                out.conditional.push_back(Entry{*nr, name, &rule, *conds});
                continue;
            }
            // libseccomp would silently keep the first; a profile saying both is a mistake.
            auto [it, fresh] = unconditional.emplace(*nr, &rule);
            if (!fresh && it->second->action != rule.action)
                parser.bad(rule.where, "\"" + name + "\" already has an unconditional rule with a different action (" +
                                           it->second->where + ")");
            if (fresh) out.unconditional.push_back(Entry{*nr, name, &rule, {}});
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Stages: one libseccomp filter each.

struct CtxDeleter {
    void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

void check_rc(int rc, const char* what) {
    if (rc < 0) throw Error("libseccomp", what, -rc);
}

// A filter for `arch` alone whose other architectures get `marker`, i.e. "next stage".
Ctx new_stage(uint32_t arch, uint32_t default_action, uint32_t marker) {
    Ctx ctx(seccomp_init(default_action));
    if (!ctx) fail("libseccomp", "cannot create a filter");
    if (arch != seccomp_arch_native()) {
        check_rc(seccomp_arch_add(ctx.get(), arch), "cannot add an architecture");
        check_rc(seccomp_arch_remove(ctx.get(), SCMP_ARCH_NATIVE), "cannot remove the native architecture");
    }
    check_rc(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, marker), "cannot set the bad-arch action");
    // The caller sets no_new_privs itself; the filter is exported, never loaded by libseccomp.
    check_rc(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "cannot clear the no_new_privs attribute");
    // A binary search over syscall numbers instead of a linear scan: the allowlist is long.
    check_rc(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2), "cannot enable the binary tree");
    return ctx;
}

void add_entry(void* ctx, const Entry& e, const std::string& source) {
    std::vector<scmp_arg_cmp> cmps;
    for (const auto& c : e.conds) cmps.push_back(scmp_arg_cmp{c.arg, c.op, c.a, c.b});
    int rc = seccomp_rule_add_array(ctx, e.rule->action, e.nr, static_cast<unsigned>(cmps.size()), cmps.data());
    if (rc < 0)
        throw Error("seccomp profile", source + ": " + e.rule->where + ": cannot add a rule for \"" + e.name + "\"", -rc);
}

std::vector<sock_filter> export_bpf(void* ctx) {
    UniqueFd fd(::memfd_create("hutch-seccomp", MFD_CLOEXEC));
    if (!fd) throw_errno("cannot create a memfd for the seccomp program");
    check_rc(seccomp_export_bpf(ctx, fd.get()), "cannot export the BPF program");
    off_t size = ::lseek(fd.get(), 0, SEEK_END);
    if (size < 0 || size % sizeof(sock_filter) != 0) fail("libseccomp", "exported a malformed BPF program");
    std::vector<sock_filter> prog(static_cast<size_t>(size) / sizeof(sock_filter));
    if (::pread(fd.get(), prog.data(), static_cast<size_t>(size), 0) != size)
        throw_errno("cannot read back the seccomp program");
    return prog;
}

// Conditional rules only; whatever none of them matches goes on to the next stage.
std::vector<sock_filter> conditional_stage(uint32_t arch, const std::vector<Entry>& entries, uint32_t marker,
                                           const std::string& source) {
    Ctx ctx = new_stage(arch, marker, marker);
    for (const auto& e : entries) add_entry(ctx.get(), e, source);
    return export_bpf(ctx.get());
}

// Unconditional rules and the profile's default action: the last word for this architecture.
std::vector<sock_filter> unconditional_stage(uint32_t arch, const std::vector<Entry>& entries,
                                             uint32_t default_action, uint32_t marker, const std::string& source) {
    Ctx ctx = new_stage(arch, default_action, marker);
    for (const auto& e : entries)
        if (e.rule->action != default_action) add_entry(ctx.get(), e, source);  // libseccomp refuses those
    return export_bpf(ctx.get());
}

// ---------------------------------------------------------------------------------------------
// A compact form of the unconditional stage.
//
// libseccomp's binary tree tests syscall numbers one at a time, two instructions or so for each
// listed syscall. An allowlist is mostly runs of consecutive numbers: a search over those runs is
// a third of the size, and the kernel's checker and JIT, which run at every sandbox's start, take
// that much less time. The compact stage is used only when an emulation over every syscall
// number (and the ABI bits around them) gives exactly libseccomp's answers.

// Runs a seccomp program on a call with number `nr` from architecture `arch` (arguments zero);
// nullopt for an instruction outside what the two stage builders emit.
std::optional<uint32_t> emulate(const std::vector<sock_filter>& prog, uint32_t nr, uint32_t arch) {
    uint32_t a = 0;
    size_t pc = 0;
    for (size_t steps = 0; pc < prog.size() && steps < prog.size(); ++steps) {
        const sock_filter& i = prog[pc];
        switch (i.code) {
            case BPF_LD | BPF_W | BPF_ABS:
                if (i.k == offsetof(struct seccomp_data, nr)) a = nr;
                else if (i.k == offsetof(struct seccomp_data, arch)) a = arch;
                else return std::nullopt;
                ++pc;
                break;
            case BPF_JMP | BPF_JA: pc += 1 + i.k; break;
            case BPF_JMP | BPF_JEQ | BPF_K: pc += 1 + (a == i.k ? i.jt : i.jf); break;
            case BPF_JMP | BPF_JGT | BPF_K: pc += 1 + (a > i.k ? i.jt : i.jf); break;
            case BPF_JMP | BPF_JGE | BPF_K: pc += 1 + (a >= i.k ? i.jt : i.jf); break;
            case BPF_JMP | BPF_JSET | BPF_K: pc += 1 + ((a & i.k) ? i.jt : i.jf); break;
            case BPF_RET | BPF_K: return i.k;
            default: return std::nullopt;
        }
    }
    return std::nullopt;
}

// A search over ranges of syscall numbers with one action each (used where it answers as
// libseccomp's stage does: see compile()).
std::vector<sock_filter> compact_stage(uint32_t arch, const std::vector<Entry>& entries,
                                     uint32_t default_action, uint32_t marker) {
    std::map<uint32_t, uint32_t> actions;
    for (const auto& e : entries) {
        // A pseudo-number (socketcall's recv on x86_64) is no number on this architecture; if
        // libseccomp made something of it, the comparison below says so.
        if (e.nr < 0) continue;
        if (e.rule->action != default_action) actions[static_cast<uint32_t>(e.nr)] = e.rule->action;
    }
    // Ranges as their first number and action, each up to the next one's first number.
    struct Range {
        uint32_t first, action;
    };
    std::vector<Range> ranges;
    auto start = [&](uint32_t first, uint32_t action) {
        if (!ranges.empty() && ranges.back().first == first) ranges.pop_back();
        if (ranges.empty() || ranges.back().action != action) ranges.push_back({first, action});
    };
    start(0, default_action);
    for (auto [nr, action] : actions) {
        start(nr, action);
        if (nr != UINT32_MAX) start(nr + 1, default_action);
    }
    // The tree: "nr >= first of the middle range" jumps over the left half.
    std::function<std::vector<sock_filter>(size_t, size_t)> tree = [&](size_t lo, size_t hi) {
        if (hi - lo == 1) return std::vector<sock_filter>{{BPF_RET | BPF_K, 0, 0, ranges[lo].action}};
        size_t mid = (lo + hi) / 2;
        std::vector<sock_filter> left = tree(lo, mid), right = tree(mid, hi), out;
        if (left.size() <= 255) {
            out.push_back({BPF_JMP | BPF_JGE | BPF_K, static_cast<uint8_t>(left.size()), 0, ranges[mid].first});
        } else {
            out.push_back({BPF_JMP | BPF_JGE | BPF_K, 0, 1, ranges[mid].first});
            out.push_back({BPF_JMP | BPF_JA, 0, 0, static_cast<uint32_t>(left.size())});
        }
        out.insert(out.end(), left.begin(), left.end());
        out.insert(out.end(), right.begin(), right.end());
        return out;
    };
    std::vector<sock_filter> out{
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, static_cast<uint32_t>(offsetof(struct seccomp_data, arch))},
        {BPF_JMP | BPF_JEQ | BPF_K, 1, 0, arch},
        {BPF_RET | BPF_K, 0, 0, marker},
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, static_cast<uint32_t>(offsetof(struct seccomp_data, nr))},
    };
    if (arch == SCMP_ARCH_X86_64) {
        // x32 calls arrive as x86_64 with bit 30 set: not this stage's (-1 is, as in libseccomp).
        out.push_back({BPF_JMP | BPF_JGE | BPF_K, 0, 2, 0x40000000});
        out.push_back({BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0xffffffff});
        out.push_back({BPF_RET | BPF_K, 0, 0, marker});
    }
    std::vector<sock_filter> search = tree(0, ranges.size());
    out.insert(out.end(), search.begin(), search.end());
    return out;
}

// Both stages answer alike for every syscall number below 4096, around each ABI bit, at the
// extremes, and for a foreign architecture.
bool same_answers(const std::vector<sock_filter>& a, const std::vector<sock_filter>& b, uint32_t arch) {
    std::vector<uint32_t> numbers;
    for (uint32_t base : {0u, 0x40000000u, 0x80000000u})
        for (uint32_t n = 0; n < 4096; ++n) numbers.push_back(base + n);
    for (uint32_t n : {0x3fffffffu, 0x7fffffffu, 0xbfffffffu, 0xfffffffeu, 0xffffffffu}) numbers.push_back(n);
    for (uint32_t on : {arch, arch ^ 0x1u, 0u}) {
        for (uint32_t nr : numbers) {
            auto x = emulate(a, nr, on), y = emulate(b, nr, on);
            if (!x || !y || *x != *y) return false;
        }
    }
    return true;
}

// A TRACE action no rule uses, to mean "not decided here". TRACE carries 16 bits to choose from.
uint32_t pick_marker(const Profile& p) {
    std::set<uint32_t> used{p.default_action, kBadArchAction};
    for (const auto& r : p.rules) used.insert(r.action);
    for (uint32_t data = 0xffff;; --data)
        if (!used.count(SCMP_ACT_TRACE(data))) return SCMP_ACT_TRACE(data);
}

// Concatenates stages, turning each "return marker" into a jump to the start of the next stage.
// Every stage begins by loading what it tests, so no state carries over a jump.
std::vector<sock_filter> link_stages(const std::vector<std::vector<sock_filter>>& stages, uint32_t marker) {
    std::vector<sock_filter> out;
    for (const auto& stage : stages) {
        size_t next = out.size() + stage.size();
        for (const sock_filter& insn : stage) {
            if (insn.code == (BPF_RET | BPF_K) && insn.k == marker) {
                uint32_t skip = static_cast<uint32_t>(next - out.size() - 1);
                out.push_back(sock_filter{BPF_JMP | BPF_JA, 0, 0, skip});
            } else {
                out.push_back(insn);
            }
        }
    }
    out.push_back(sock_filter{BPF_RET | BPF_K, 0, 0, kBadArchAction});  // no stage claimed the arch
    return out;
}

std::string to_bytes(const std::vector<sock_filter>& prog) {
    return std::string(reinterpret_cast<const char*>(prog.data()), prog.size() * sizeof(sock_filter));
}

// ---------------------------------------------------------------------------------------------
// The on-disk cache.

constexpr size_t kDigestSize = 32;

// The 32 raw bytes of the sha256 of `data`.
std::string sha256(const std::string& data) {
    std::string hexd = digest::hex(digest::of(data));
    std::string raw;
    for (size_t i = 0; i < kDigestSize; ++i) raw += static_cast<char>(std::stoi(hexd.substr(2 * i, 2), nullptr, 16));
    return raw;
}

std::string hex(const std::string& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char b : bytes) {
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

// Everything compile() depends on. Each field is length-prefixed so no two inputs collide.
// `profile` identifies the profile file's current contents (see load()).
std::string cache_key(const std::string& profile, const std::vector<std::string>& caps) {
    std::set<std::string> sorted;
    for (const auto& c : caps) sorted.insert(normalize_cap(c));
    std::string cap_list;
    for (const auto& c : sorted) cap_list += c + "\n";
    const scmp_version* v = seccomp_version();
    const std::string fields[] = {
        kCompilerTag,
        profile,
        cap_list,
        std::to_string(seccomp_arch_native()),
        std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->micro),
        kernel_release(),  // minKernel and libseccomp's checks of actions depend on it
    };
    std::string material;
    for (const auto& f : fields) material += std::to_string(f.size()) + ":" + f;
    return hex(sha256(material));
}

std::optional<std::string> read_cached(const std::string& file) {
    try {
        return unseal(fs::read_file(file));
    } catch (const Error&) {
        return std::nullopt;
    }
}

// The cache only saves time: failing to write it is not an error.
void write_cached(const std::string& dir, const std::string& file, const std::string& prog) {
    try {
        fs::make_dirs(dir, 0700);
        fs::write_file_atomic(file, seal(prog), 0600);
    } catch (const Error&) {
    }
}

}  // namespace

std::string seal(const std::string& program) { return program + sha256(program); }

std::optional<std::string> unseal(const std::string& data, bool allow_empty) {
    if (data.size() < kDigestSize) return std::nullopt;
    std::string prog = data.substr(0, data.size() - kDigestSize);
    if ((prog.empty() && !allow_empty) || prog.size() % sizeof(sock_filter) != 0 ||
        prog.size() / sizeof(sock_filter) > kMaxInstructions)
        return std::nullopt;
    if (sha256(prog) != data.substr(prog.size())) return std::nullopt;
    return prog;
}

Program compile(const std::string& json_text, const std::string& source, const std::vector<std::string>& caps) {
    Host host = current_host(caps);
    Parser parser(source, host);
    Profile profile = parser.parse(json_text);
    uint32_t marker = pick_marker(profile);
    std::vector<std::vector<sock_filter>> stages;
    for (uint32_t arch : profile.arches) {
        ArchRules rules = rules_for_arch(profile, arch, host.arch, parser);
        if (!rules.conditional.empty()) stages.push_back(conditional_stage(arch, rules.conditional, marker, source));
        std::vector<sock_filter> stage = unconditional_stage(arch, rules.unconditional, profile.default_action, marker, source);
        std::vector<sock_filter> compact = compact_stage(arch, rules.unconditional, profile.default_action, marker);
        stages.push_back(same_answers(stage, compact, arch) ? compact : stage);
    }
    std::vector<sock_filter> prog = link_stages(stages, marker);
    if (prog.size() > kMaxInstructions)
        parser.bad("(whole profile)", "compiles to " + std::to_string(prog.size()) + " BPF instructions, more than the kernel's limit of " +
                                          std::to_string(kMaxInstructions));
    return Program{to_bytes(prog)};
}

Program load(const std::string& path, const std::vector<std::string>& caps, const std::string& cache_dir) {
    if (cache_dir.empty()) return compile(fs::read_file(path), path, caps);
    // The profile is keyed by which file it is and when it last changed, not by its text: a hit
    // then reads and hashes nothing of a 20 KB profile. Any write changes ctime (which no one can
    // set back; see below for its granularity), and a replaced file is another inode. Opening it checks that the caller may
    // read it, as compiling it would.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0) throw_errno("cannot read seccomp profile", path);
    const std::string identity = path + "\n" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
                                 std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
                                 std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ctim.tv_sec) + "." +
                                 std::to_string(st.st_ctim.tv_nsec);
    std::string file = cache_dir + "/" + cache_key(identity, caps) + ".bpf";
    if (auto cached = read_cached(file)) return Program{std::move(*cached)};
    Program prog = compile(fs::read_fd(fd.get(), path), path, caps);
    // Timestamps are coarse (a clock tick, seconds on some filesystems): a profile changed just
    // now may change again with the same ctime, which would then hit this entry. Such a profile
    // is compiled each time until it is older than any tick.
    struct timespec now;
    ::clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec - st.st_ctim.tv_sec >= 3) write_cached(cache_dir, file, prog.bytes);
    return prog;
}

void install(const Program& program) {
    size_t count = program.bytes.size() / sizeof(sock_filter);
    if (program.empty() || program.bytes.size() % sizeof(sock_filter) != 0 || count > kMaxInstructions)
        fail("cannot install seccomp filter", "malformed program of " + std::to_string(program.bytes.size()) + " bytes");
    // The kernel copies the array in; the pointer needs no alignment on our side.
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(count);
    prog.filter = reinterpret_cast<sock_filter*>(const_cast<char*>(program.bytes.data()));
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        const char* hint = errno == EACCES ? "set no_new_privs first" : "";
        throw_errno("cannot install seccomp filter", "", hint);
    }
}

void confine_init() {
    Ctx ctx(seccomp_init(SCMP_ACT_ALLOW));
    if (!ctx) fail("libseccomp", "cannot create a filter");
    // The kernel's numbers, not names: a libseccomp older than a call would leave it out by name.
    // Other architectures' system calls (int 0x80) kill instead: libseccomp's default.
    for (long nr : {SYS_mount, SYS_umount2, SYS_mount_setattr, SYS_move_mount, SYS_open_tree, SYS_fsopen, SYS_fsconfig,
                    SYS_fsmount, SYS_fspick, SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_ptrace,
                    SYS_process_vm_writev, SYS_process_vm_readv})
        check_rc(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), static_cast<int>(nr), 0),
                 "cannot add a rule to the init's filter");
    check_rc(seccomp_load(ctx.get()), "cannot load the init's filter");
}

}  // namespace hutch::seccomp
