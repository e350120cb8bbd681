#include <doctest/doctest.h>

#include "hutch/sandbox/idmap.hpp"

using namespace hutch;

TEST_CASE("subordinate id ranges are found by name or uid, bad lines ignored") {
    const std::string text =
        "alice:100000:65536\n"
        "1001:200000:1000\n"
        "bob:300000:65536\n"
        "alice:400000:10\n"
        "alice:notanumber:5\n"
        "alice:0:5\n"
        "alice:5:0\n"
        "# comment\n";
    auto a = idmap::parse_subid(text, "alice", 1000);
    REQUIRE(a.size() == 2);
    CHECK(a[0].start == 100000);
    CHECK(a[0].count == 65536);
    CHECK(a[1].start == 400000);
    auto by_uid = idmap::parse_subid(text, "carol", 1001);
    REQUIRE(by_uid.size() == 1);
    CHECK(by_uid[0].count == 1000);
    CHECK(idmap::parse_subid(text, "dave", 1002).empty());
}

TEST_CASE("maps translate ids and render in /proc's format") {
    IdMap m;
    m.uids = {{0, 1000, 1}, {1, 100000, 65536}};
    CHECK(m.host_uid(0) == 1000u);
    CHECK(m.host_uid(1) == 100000u);
    CHECK(m.host_uid(65536) == 165535u);
    CHECK_FALSE(m.host_uid(65537).has_value());
    CHECK(m.maps_uid(1000));
    CHECK_FALSE(m.maps_gid(0));
    CHECK(idmap::render(m.uids) == "0 1000 1\n1 100000 65536\n");
}

TEST_CASE("the caller's map never maps host root") {
    IdMap m = idmap::for_caller();
    REQUIRE_FALSE(m.uids.empty());
    for (const auto& r : m.uids) CHECK(r.outside != 0);
    for (const auto& r : m.gids) CHECK(r.outside != 0);
    CHECK(m.host_uid(0).has_value());
}
