#include "hutch/sandbox/caps.hpp"

#include <linux/capability.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cctype>

#include "hutch/core/error.hpp"

namespace hutch::caps {

Set default_set() {
    // Docker's default list without CAP_NET_RAW (raw sockets allow spoofing inside the network
    // namespace and are not needed by ping on modern kernels, which use ICMP datagram sockets).
    return {CAP_CHOWN,   CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,     CAP_MKNOD,
            CAP_SETGID,  CAP_SETUID,       CAP_SETFCAP,          CAP_SETPCAP,    CAP_NET_BIND_SERVICE,
            CAP_SYS_CHROOT, CAP_KILL,      CAP_AUDIT_WRITE};
}

static int last_cap() {
    static const int last = [] {
        int n = static_cast<int>(cap_max_bits()) - 1;
        return n > 0 ? n : CAP_LAST_CAP;
    }();
    return last;
}

int parse_name(const std::string& name) {
    std::string lower;
    for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.rfind("cap_", 0) != 0) lower = "cap_" + lower;
    cap_value_t v;
    if (cap_from_name(lower.c_str(), &v) != 0 || v < 0 || v > last_cap())
        fail("unknown capability", name, "use names like CAP_NET_BIND_SERVICE or NET_BIND_SERVICE");
    return v;
}

std::string name_of(int cap) {
    char* n = cap_to_name(cap);
    std::string s = n ? n : std::to_string(cap);
    cap_free(n);
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

std::vector<std::string> names(const Set& set) {
    std::vector<std::string> out;
    for (int c : set) out.push_back(name_of(c));
    return out;
}

static bool is_all(const std::string& s) {
    std::string u;
    for (char c : s) u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return u == "ALL" || u == "CAP_ALL";
}

Set resolve(const std::vector<std::string>& add, const std::vector<std::string>& drop) {
    Set set = default_set();
    for (const auto& d : drop) {
        if (is_all(d)) {
            set.clear();
            continue;
        }
        int c = parse_name(d);
        set.erase(std::remove(set.begin(), set.end(), c), set.end());
    }
    for (const auto& a : add) {
        if (is_all(a)) {
            set.clear();
            for (int c = 0; c <= last_cap(); ++c) set.push_back(c);
            continue;
        }
        int c = parse_name(a);
        if (std::find(set.begin(), set.end(), c) == set.end()) set.push_back(c);
    }
    std::sort(set.begin(), set.end());
    return set;
}

Set added_only(const Set& final_set, const std::vector<std::string>& add) {
    Set out;
    for (const auto& a : add) {
        if (is_all(a)) return final_set;
        int c = parse_name(a);
        if (std::find(final_set.begin(), final_set.end(), c) != final_set.end()) out.push_back(c);
    }
    return out;
}

void restrict_bounding(const Set& keep) {
    for (int c = 0; c <= last_cap(); ++c) {
        if (std::find(keep.begin(), keep.end(), c) != keep.end()) continue;
        if (::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
            throw_errno("cannot drop capability from the bounding set", name_of(c));
    }
}

void apply(const Set& process, bool ambient) {
    cap_t caps = cap_init();
    if (!caps) throw_errno("cannot allocate capability state");
    std::vector<cap_value_t> values(process.begin(), process.end());
    if (!values.empty()) {
        cap_set_flag(caps, CAP_PERMITTED, static_cast<int>(values.size()), values.data(), CAP_SET);
        cap_set_flag(caps, CAP_EFFECTIVE, static_cast<int>(values.size()), values.data(), CAP_SET);
        cap_set_flag(caps, CAP_INHERITABLE, static_cast<int>(values.size()), values.data(), CAP_SET);
    }
    int rc = cap_set_proc(caps);
    cap_free(caps);
    if (rc != 0) throw_errno("cannot set capabilities");
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) throw_errno("cannot clear ambient capabilities");
    if (!ambient) return;
    for (int c : process)
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0)
            throw_errno("cannot raise ambient capability", name_of(c));
}

unsigned long long mask(const Set& set) {
    unsigned long long m = 0;
    for (int c : set) m |= 1ULL << c;
    return m;
}

}  // namespace hutch::caps
