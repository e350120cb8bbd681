// --network egress: a sandbox that reaches what its policy allows, and nothing else.
//
//   front end (host netns)                      sandbox init (its own netns)
//   ----------------------                      ----------------------------
//   Egress(): sockets connected to the host's   (clone: inherits them, and a copy of this object)
//     resolvers, the host's addresses, the
//     sandbox's resolv.conf, the report file
//                                               sandbox_before_pivot(): dlopen libnftables
//                                                 while the host's libraries are visible
//   start_pasta(): pasta joins the sandbox's    sandbox_start(), before the command exists:
//     netns (user-mode networking, no port        ruleset (default drop), DNS forwarder on
//     forwards, no gateway mapping)               127.0.0.1:53 and [::1]:53, NFLOG socket,
//                                                 then waits for pasta's routes
//                                               service(): init's poll loop answers DNS (only
//                                                 allowed names; each answer's addresses go
//                                                 into nft sets with the record's TTL) and
//                                                 records every refusal in the report
//   finish(): one line of what was refused
//
// The command never holds CAP_NET_ADMIN or CAP_NET_RAW (refused with egress), so the ruleset is
// out of its reach; the forwarder is the only way to learn addresses the sets will accept.
//
// Why the forwarder lives in the init: it lasts exactly as long as the sandbox, holds
// CAP_NET_ADMIN over the sandbox's netns (set updates) and nothing over the host's, and its
// sockets to the host's resolvers, made by the front end before clone, keep working from inside
// without giving the command any path to them.
//
// Environment: HUTCH_PASTA names the pasta binary; HUTCH_NET_TRACE=1 times the start-up steps.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "hutch/core/fd.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/net/nft.hpp"
#include "hutch/net/rules.hpp"
#include "hutch/policy/policy.hpp"
#include "hutch/sandbox/caps.hpp"
#include "hutch/sandbox/init.hpp"
#include "hutch/sandbox/spec.hpp"

namespace hutch::net {

class Forwarder;

// A persistent sandbox's egress rules and refusal report, next to its config.json.
std::string rules_path(const Paths& paths, const std::string& name);
std::string report_path(const Paths& paths, const std::string& name);
void save_rules(const Paths& paths, const std::string& name, const policy::Egress& rules);
// The saved rules, or mode "none" when the sandbox was created without egress.
policy::Egress load_rules(const Paths& paths, const std::string& name);
// The report of a persistent sandbox as JSON text ("null" when it has none).
std::string read_report(const Paths& paths, const std::string& name);

class Egress {
public:
    // Front end, before clone. `scratch_dir` receives the sandbox's resolv.conf; `report` is
    // the file the init keeps its refusal report in (empty: an anonymous one, read by summary()).
    Egress(const policy::Egress& rules, const SandboxSpec& spec, const std::string& scratch_dir,
           const std::string& report = {});
    ~Egress();
    Egress(const Egress&) = delete;
    Egress& operator=(const Egress&) = delete;

    // The bind of the generated resolv.conf over /etc/resolv.conf (read-only).
    BindMount resolv_conf() const;
    // Refuses capabilities that would let the command undo the enforcement.
    void check_caps(const caps::Set& caps) const;

    // Front end, once the id maps are written: pasta on the sandbox's network namespace. With
    // `outlive_caller` (persistent sandboxes) a small keeper process owns pasta and ends it when
    // the init exits; otherwise pasta is this process's child and dies with it (PDEATHSIG).
    void start_pasta(pid_t init_pid, bool outlive_caller);
    // Front end, once the sandbox has ended: stops pasta; the one-line refusal summary, or "".
    std::string finish();
    // What pasta said, for an error message when the sandbox's network did not come up.
    std::string pasta_messages() const;

    // Inside the init, before pivot_root: loads libnftables and lets the sandbox's gids use
    // ICMP datagram sockets (the ruleset decides where they may go).
    void sandbox_before_pivot(const IdMap& map);
    // Inside the init, before the command starts: ruleset, DNS forwarder, refusal log, and the
    // wait for pasta's routes.
    void sandbox_start();
    // A persistent init keeps no fd but its own: closes every fd above 2 except egress's
    // (resolver and forwarder sockets, refusal log, report, libnftables' netlink socket) and
    // those in `keep`.
    void close_other_fds(std::vector<int> keep);
    init::Service* service();

private:
    [[noreturn]] void spawn_pasta_child(int userns, int netns, int log) const;
    [[noreturn]] void run_keeper(int init_fd, int userns, int netns, int watch, int log) const;
    void wait_for_routes();
    void stop_pasta();

    policy::Egress rules_;
    std::string sandbox_;
    std::vector<UniqueFd> upstream_;   // UDP sockets connected to the host's resolvers
    std::vector<std::string> resolvers_;
    std::vector<Ip> host_addresses_;
    bool want_v4_ = false, want_v6_ = false;  // the host has a default route: pasta sets one up
    bool setup_tun_ = false;                  // /dev/net/tun is not usable by the sandbox's ids
    std::string resolv_path_;
    std::string pasta_;
    UniqueFd report_;
    // Front end: pasta (or its keeper).
    pid_t pasta_pid_ = -1;
    UniqueFd pasta_pidfd_;
    UniqueFd pasta_log_;
    // Front end → init: pasta's pidfd, so that the init stops waiting for routes when pasta dies.
    UniqueFd pasta_watch_host_, pasta_watch_init_;
    // Init.
    Nft nft_;
    std::vector<int> nft_fds_;  // what libnftables opened (its netlink socket)
    Forwarder* forwarder_ = nullptr;
};

}  // namespace hutch::net
