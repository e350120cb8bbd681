#include <doctest/doctest.h>
#include <linux/capability.h>

#include <algorithm>

#include "hutch/core/error.hpp"
#include "hutch/sandbox/caps.hpp"

using namespace hutch;

static bool has(const caps::Set& s, int c) { return std::find(s.begin(), s.end(), c) != s.end(); }

TEST_CASE("the default set is docker's without NET_RAW and never grants the dangerous ones") {
    auto d = caps::resolve({}, {});
    CHECK(caps::mask(d) == 0xa80405fbULL);
    for (int c : {CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_NET_RAW})
        CHECK_FALSE(has(d, c));
}

TEST_CASE("cap-add and cap-drop accept docker's spellings") {
    auto s = caps::resolve({"net_raw", "CAP_SYS_PTRACE"}, {"CHOWN"});
    CHECK(has(s, CAP_NET_RAW));
    CHECK(has(s, CAP_SYS_PTRACE));
    CHECK_FALSE(has(s, CAP_CHOWN));
    auto none = caps::resolve({}, {"ALL"});
    CHECK(none.empty());
    auto one = caps::resolve({"NET_BIND_SERVICE"}, {"all"});
    CHECK(caps::mask(one) == (1ULL << CAP_NET_BIND_SERVICE));
    CHECK(caps::added_only(one, {"NET_BIND_SERVICE"}) == one);
    CHECK(caps::added_only(caps::resolve({}, {}), {}).empty());
    CHECK_THROWS_WITH_AS(caps::resolve({"CAP_MAKE_COFFEE"}, {}), doctest::Contains("CAP_MAKE_COFFEE"), Error);
    CHECK(caps::name_of(CAP_SYS_ADMIN) == "CAP_SYS_ADMIN");
}
