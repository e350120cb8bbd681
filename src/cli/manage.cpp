// start, ps, stop, rm, inspect: persistent sandboxes.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "hutch/core/error.hpp"
#include "hutch/net/egress.hpp"
#include "hutch/sandbox/cgroup.hpp"
#include "hutch/sandbox/launcher.hpp"
#include "hutch/sandbox/state.hpp"

namespace hutch::cli {

namespace {

nlohmann::json usage(const cgroup::Stats& s) {
    return {{"memory_peak", s.memory_peak},       {"memory_current", s.memory_current},
            {"cpu_usage_usec", s.cpu_usage_usec}, {"cpu_user_usec", s.cpu_user_usec},
            {"cpu_system_usec", s.cpu_system_usec}, {"cpu_nr_throttled", s.nr_throttled},
            {"pids_current", s.pids_current},     {"pids_peak", s.pids_peak},
            {"pids_limit_hits", s.pids_max_events}, {"oom_kills", s.oom_kills},
            {"io_read_bytes", s.io_read_bytes},   {"io_write_bytes", s.io_write_bytes}};
}

nlohmann::json describe(const Paths& paths, const std::string& name) {
    SandboxSpec spec = state::load_config(paths, name);
    auto live = state::load_live(paths, name);
    nlohmann::json j = nlohmann::json::parse(state::spec_to_json(spec));
    j["state"] = {{"status", live ? "running" : "stopped"}, {"pid", live ? live->pid : 0}};
    j["storage"] = paths.sandboxes_storage() + "/" + name;
    if (live && !live->cgroup.empty())
        if (auto cg = cgroup::Cgroup::open(live->cgroup)) {
            j["state"]["cgroup"] = live->cgroup;
            j["state"]["usage"] = usage(cg->stats());
        }
    // --network egress: the rules enforced and what the init's refusal log holds.
    policy::Egress egress = net::load_rules(paths, name);
    j["network"] = {{"mode", egress.mode}};
    if (egress.mode == "egress") j["network"]["refusals"] = nlohmann::json::parse(net::read_report(paths, name), nullptr, false);
    return j;
}

}  // namespace

int start(const GlobalOptions& g, const std::vector<std::string>& names) {
    Paths paths = prepare_paths(g);
    return for_each_arg(names, [&](const std::string& n) {
        start_sandbox(state::load_config(paths, n), paths);
        std::printf("%s\n", n.c_str());
    });
}

int ps(const GlobalOptions& g, const std::string& format, bool quiet) {
    Paths paths = prepare_paths(g);
    if (quiet) {
        for (const auto& n : state::list(paths)) std::printf("%s\n", n.c_str());
        return 0;
    }
    nlohmann::json all = nlohmann::json::array();
    for (const auto& n : state::list(paths)) {
        try {
            all.push_back(describe(paths, n));
        } catch (const Error& e) {
            std::fprintf(stderr, "hutch: %s\n", e.what());
        }
    }
    if (format == "json") {
        std::printf("%s\n", all.dump(2).c_str());
        return 0;
    }
    std::printf("%-24s %-8s %-8s %s\n", "NAME", "STATUS", "PID", "IMAGE");
    for (const auto& s : all)
        std::printf("%-24s %-8s %-8d %s\n", s["name"].get<std::string>().c_str(),
                    s["state"]["status"].get<std::string>().c_str(), s["state"]["pid"].get<int>(),
                    s["rootfs"].get<std::string>().c_str());
    return 0;
}

int stop(const GlobalOptions& g, const std::vector<std::string>& names, double grace) {
    Paths paths = prepare_paths(g);
    return for_each_arg(names, [&](const std::string& n) {
        stop_sandbox(paths, n, grace);
        std::printf("%s\n", n.c_str());
    });
}

int rm(const GlobalOptions& g, const std::vector<std::string>& names, bool force) {
    Paths paths = prepare_paths(g);
    return for_each_arg(names, [&](const std::string& n) {
        remove_sandbox(paths, n, force);
        std::printf("%s\n", n.c_str());
    });
}

int stats(const GlobalOptions& g, const std::vector<std::string>& names, const std::string& format) {
    Paths paths = prepare_paths(g);
    nlohmann::json out = nlohmann::json::array();
    int rc = for_each_arg(names, [&](const std::string& n) {
        state::load_config(paths, n);
        auto live = state::load_live(paths, n);
        if (!live) fail("sandbox is not running", n, "start it with 'hutch start " + n + "'");
        auto cg = live->cgroup.empty() ? std::nullopt : cgroup::Cgroup::open(live->cgroup);
        if (!cg)
            fail("sandbox has no cgroup", n,
                 "it was started where cgroup v2 could not be used (see 'hutch doctor'); its statistics need one");
        cgroup::Stats s = cg->stats();
        if (format == "json") {
            nlohmann::json j = usage(s);
            j["name"] = n;
            out.push_back(j);
        } else {
            std::printf("%s: %s\n", n.c_str(), cgroup::format_stats(s).substr(7).c_str());
        }
    });
    if (format == "json") std::printf("%s\n", out.dump(2).c_str());
    return rc;
}

int inspect(const GlobalOptions& g, const std::vector<std::string>& names) {
    Paths paths = prepare_paths(g);
    nlohmann::json out = nlohmann::json::array();
    int rc = for_each_arg(names, [&](const std::string& n) { out.push_back(describe(paths, n)); });
    std::printf("%s\n", out.dump(2).c_str());
    return rc;
}

}  // namespace hutch::cli
