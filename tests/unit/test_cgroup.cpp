// Unit tests of cgroup.cpp's pure parts: sandboxes' cgroup names, the controllers limits need,
// and the texts of an OOM kill and of --stats. What touches a cgroup2 hierarchy is tested in
// tests/vm, inside User-Mode Linux.
#include <doctest/doctest.h>

#include <regex>
#include <string>

#include "hutch/sandbox/cgroup.hpp"

using namespace hutch;

TEST_CASE("cgroup: a sandbox's cgroup is NAME-TAG, TAG fixed by its state directory") {
    Paths a{"/run/hutch", "/var/lib/hutch"};
    Paths b{"/tmp/x/run", "/tmp/x"};
    const std::string name = cgroup::name_for(a, "web");
    CHECK(std::regex_match(name, std::regex("web-[0-9a-f]{12}")));
    CHECK(cgroup::name_for(a, "web") == name);                  // stable from run to run
    CHECK(cgroup::name_for(b, "web") != name);                  // another state, another cgroup
    CHECK(cgroup::name_for(a, "db").substr(3) == name.substr(4));  // one tag per state
}

TEST_CASE("cgroup: the controllers each limit needs") {
    Resources r;
    CHECK(cgroup::controllers_for(r).empty());
    r.memory = 64 << 20;
    r.pids = 10;
    r.cpus = 1.5;
    r.device_read_bps = {"/dev/vda:1m"};
    CHECK(cgroup::controllers_for(r) == std::vector<std::string>{"memory", "pids", "cpu", "io"});
    Resources w;
    w.cpu_weight = 50;
    w.io_weight = 50;
    CHECK(cgroup::controllers_for(w) == std::vector<std::string>{"cpu", "io"});
}

TEST_CASE("cgroup: what an OOM kill is reported as") {
    Resources r;
    r.memory = 64 << 20;
    CHECK(cgroup::oom_message(r, true) == "out of memory: the sandbox reached its 64 MiB memory limit");
    CHECK(cgroup::oom_message(r, false) == "out of memory: a process of the sandbox was killed at its 64 MiB memory limit");
    r.memory = 100 << 20 | 512 << 10;
    CHECK(cgroup::oom_message(r, true) == "out of memory: the sandbox reached its 100.5 MiB memory limit");
    CHECK(cgroup::oom_message(Resources{}, true) == "out of memory: the kernel's OOM killer ended a process of the sandbox");
}

TEST_CASE("cgroup: the --stats line") {
    cgroup::Stats s;
    s.memory_peak = 3 << 20;
    s.cpu_usage_usec = 1500000;
    s.cpu_user_usec = 1000000;
    s.cpu_system_usec = 500000;
    s.nr_throttled = 7;
    s.pids_peak = 4;
    s.io_read_bytes = 10;
    s.io_write_bytes = 20;
    CHECK(cgroup::format_stats(s) ==
          "stats: peak memory 3 MiB, cpu 1.500s (user 1.000s, system 0.500s, throttled 7 times), pids peak 4, "
          "io read 10 bytes, written 20 bytes");
}
