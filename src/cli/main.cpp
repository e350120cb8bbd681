// hutch's command line: parses flags into plain structs and hands them to the commands.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "commands.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/log.hpp"
#include "hutch/core/trace.hpp"
#include "hutch/sandbox/pause.hpp"
#include "hutch_config.h"

namespace {

using hutch::cli::GlobalOptions;
using hutch::cli::ProcessOptions;
using hutch::cli::SandboxOptions;

// Each occurrence of a repeatable flag takes exactly one value (-e A=1 -e B=2), as in docker.
template <typename T>
CLI::Option* repeatable(CLI::App* app, const std::string& name, std::vector<T>& into, const std::string& help) {
    return app->add_option(name, into, help)->allow_extra_args(false)->take_all();
}

void add_process_options(CLI::App* app, ProcessOptions& p) {
    repeatable(app, "-e,--env", p.env, "Set an environment variable (KEY=VALUE, or KEY to pass yours)");
    repeatable(app, "--env-file", p.env_files, "Read environment variables from a file");
    app->add_option("-w,--workdir", p.workdir, "Working directory inside the sandbox");
    app->add_option("-u,--user", p.user, "UID[:GID] or NAME[:GROUP] to run as");
    app->add_flag("-i,--interactive", p.interactive, "Keep stdin open");
    app->add_flag("-t,--tty", p.tty, "Allocate a pseudo-terminal");
}

// A count such as --pids-limit: CLI's PositiveNumber would print its range as a 300-digit double.
const CLI::Validator kPositiveWhole(
    [](std::string& v) -> std::string {
        bool digits = !v.empty() && v.size() <= 18 && v.find_first_not_of("0123456789") == std::string::npos;
        if (digits && std::strtoll(v.c_str(), nullptr, 10) > 0) return {};
        return "'" + v + "' is not a positive whole number (e.g. 256)";
    },
    "N");

void add_sandbox_options(CLI::App* app, SandboxOptions& o) {
    add_process_options(app, o.process);
    app->add_option("--name", o.name, "Name of the sandbox");
    app->add_option("--hostname", o.hostname, "Hostname inside the sandbox (default: its name)");
    app->add_option("--rootfs", o.rootfs, "Use this directory as the (read-only) base root filesystem");
    app->add_flag("--read-only", o.read_only, "Mount the sandbox's root filesystem read-only");
    repeatable(app, "--tmpfs", o.tmpfs, "Mount a tmpfs at PATH[:OPTIONS]");
    repeatable(app, "-v,--volume", o.volumes, "Bind mount HOST:CONTAINER[:ro]");
    repeatable(app, "--cap-add", o.cap_add, "Add a capability");
    repeatable(app, "--cap-drop", o.cap_drop, "Drop a capability (ALL for every one)");
    repeatable(app, "--security-opt", o.security_opts, "seccomp=FILE|unconfined, no-new-privileges");
    repeatable(app, "--ulimit", o.ulimits, "Resource limit NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    app->add_option("--timeout", o.timeout, "Kill the whole sandbox after this long (e.g. 30s, 5m)");
    app->add_option("-m,--memory", o.memory, "Memory limit (e.g. 512m, 2g): memory.max");
    app->add_option("--memory-swap", o.memory_swap, "Memory plus swap limit (-1: unlimited swap; default: no swap)");
    app->add_option("--pids-limit", o.pids_limit, "Most processes and threads at once: pids.max")->check(kPositiveWhole);
    app->add_option("--cpus", o.cpus, "CPUs the sandbox may use (e.g. 1.5): cpu.max");
    app->add_option("--cpu-weight", o.cpu_weight, "Relative CPU share 1-10000: cpu.weight")->check(CLI::Range(1, 10000));
    app->add_option("--io-weight", o.io_weight, "Relative I/O share 1-10000: io.weight")->check(CLI::Range(1, 10000));
    repeatable(app, "--device-read-bps", o.device_read_bps, "Read rate limit DEVICE:RATE, e.g. /dev/vda:10m: io.max");
    repeatable(app, "--device-write-bps", o.device_write_bps, "Write rate limit DEVICE:RATE: io.max");
    app->add_flag("--stats", o.stats, "Report peak memory, CPU time, pids and I/O when the command ends");
    app->add_option("--pull", o.pull, "Get the image: missing (default), always, never")
        ->check(CLI::IsMember({"missing", "always", "never"}));
    app->add_option("--entrypoint", o.entrypoint, "Replace the image's entrypoint (\"\" for none)")
        ->each([&o](const std::string&) { o.entrypoint_set = true; });
    app->add_option("--policy", o.policy, "Policy NAME (shipped) or FILE; default: offline");
    app->add_option("--network", o.network, "none (loopback only) or egress (what the policy allows)")
        ->check(CLI::IsMember({"none", "egress"}));
    app->add_flag("-q,--quiet", o.quiet, "Do not print the summary of refused network attempts at exit");
    app->add_flag("--rm", o.rm, "run: remove the sandbox when the command exits (always on); not for create");
    // Everything from the first positional on belongs to the command.
    app->prefix_command();
}

// Commands that move image data run in hutch-image (it links libcurl and libarchive, which
// `hutch run` must not pay for). Returns the index of the subcommand word in argv, or 0.
int subcommand_index(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--root" || a == "--log-level") {
            ++i;
            continue;
        }
        if (a.rfind("--", 0) == 0 || a == "-h") continue;
        return i;
    }
    return 0;
}

[[noreturn]] void exec_image_helper(char** argv) {
    const char* env = std::getenv("HUTCH_IMAGE_HELPER");
    std::string helper = env && *env ? env : HUTCH_IMAGE_HELPER;
    argv[0] = const_cast<char*>(helper.c_str());
    ::execv(helper.c_str(), argv);
    std::fprintf(stderr, "hutch: cannot run the image helper: %s: %s (rebuild hutch, or set HUTCH_IMAGE_HELPER)\n",
                 helper.c_str(), std::strerror(errno));
    std::exit(hutch::kExitHutchError);
}

}  // namespace

int main(int argc, char** argv) {
    // The rootless user namespace keeper re-executes hutch under this name (sandbox/pause.hpp).
    if (argc == 3 && std::strcmp(argv[0], "hutch-pause") == 0) hutch::pause::keeper_main(argv[1], std::atoi(argv[2]));
    hutch::trace("front end: main");
    // Started with 0-2 closed (by a daemon, or `>&-`), hutch's own pipes and locks would get
    // those numbers, and every dup2 onto stdio in the sandbox would clobber them.
    for (int fd = 0; fd < 3; ++fd)
        if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF && ::open("/dev/null", O_RDWR) != fd) {
            std::perror("hutch: cannot open /dev/null on a closed standard fd");
            return hutch::kExitHutchError;
        }
    const int word_at = subcommand_index(argc, argv);
    const std::string word = word_at ? argv[word_at] : "";
    if (word == "pull" || word == "load" || word == "save" || word == "login" || word == "logout")
        exec_image_helper(argv);
    // CLI11 takes microseconds per option, and `run` alone has forty: only the options of the
    // command given are built (all of them for `hutch --help` or a word that is no command).
    static const char* const commands[] = {"run",  "create", "start",   "exec",    "ps",    "stop",  "rm",
                                           "policy", "doctor", "stats", "inspect", "images", "image", "rmi",
                                           "tag",  "system"};
    const bool all = std::find(std::begin(commands), std::end(commands), word) == std::end(commands);
    auto build = [&](const char* name) { return all || word == name; };

    CLI::App app{"hutch: sandboxes for AI coding agents, rootless and daemonless"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("hutch ") + HUTCH_VERSION);
    GlobalOptions g;
    app.add_option("--root", g.root, "Keep state and storage under this directory");
    app.add_option("--log-level", g.log_level, "debug, info, warn or error")
        ->check(CLI::IsMember({"debug", "info", "warn", "error"}));

    // A command not given is not built at all (nullptr), except for `hutch --help`.
    auto command = [&](CLI::App& parent, const char* name, const std::string& help) -> CLI::App* {
        return build(name) ? parent.add_subcommand(name, help) : nullptr;
    };
    auto parsed = [](const CLI::App* a) { return a && a->parsed(); };

    SandboxOptions run_opts, create_opts;
    auto* run = command(app, "run", "Run a command in a new sandbox: [IMAGE | --rootfs DIR] [--] [COMMAND [ARG...]]");
    if (run) add_sandbox_options(run, run_opts);
    auto* create = command(app, "create", "Create and start a persistent sandbox (needs --name)");
    if (create) add_sandbox_options(create, create_opts);

    auto* start = command(app, "start", "Start stopped sandboxes");
    std::vector<std::string> start_names;
    if (start) start->add_option("NAME", start_names, "Sandbox names")->required();

    ProcessOptions exec_opts;
    auto* exec = command(app, "exec", "Run a command in a running sandbox: NAME [--] COMMAND [ARG...]");
    if (exec) {
        add_process_options(exec, exec_opts);
        exec->prefix_command();
    }

    auto* ps = command(app, "ps", "List persistent sandboxes");
    std::string ps_format = "table";
    bool ps_all = false, ps_quiet = false;
    if (ps) {
        ps->add_option("--format", ps_format, "table or json")->check(CLI::IsMember({"table", "json"}));
        ps->add_flag("-a,--all", ps_all, "Accepted for docker compatibility: stopped sandboxes are always listed");
        ps->add_flag("-q,--quiet", ps_quiet, "Only show names, one per line");
    }

    auto* stop = command(app, "stop", "Stop sandboxes (SIGTERM, then SIGKILL after the grace period)");
    std::vector<std::string> stop_names;
    double grace = 10;
    if (stop) {
        stop->add_option("-t,--time", grace, "Seconds to wait before killing")->check(CLI::NonNegativeNumber);
        stop->add_option("NAME", stop_names, "Sandbox names")->required();
    }

    auto* rm = command(app, "rm", "Remove sandboxes and their writable layers");
    std::vector<std::string> rm_names;
    bool force = false;
    if (rm) {
        rm->add_flag("-f,--force", force, "Stop running sandboxes first");
        rm->add_option("NAME", rm_names, "Sandbox names")->required();
    }

    std::string policy_arg;
    CLI::App *policy_check = nullptr, *policy_show = nullptr;
    if (auto* policy = command(app, "policy", "Check and show policies")) {
        policy->require_subcommand(1);
        policy_check = policy->add_subcommand("check", "Validate a policy file");
        policy_check->add_option("FILE", policy_arg, "Policy file")->required();
        policy_show = policy->add_subcommand("show", "Print the effective, merged policy");
        policy_show->add_option("NAME|FILE", policy_arg, "Policy name or file (default: offline)");
    }

    auto* doctor = command(app, "doctor", "Check what this host offers hutch, and how to fix what is missing");
    std::string doctor_format = "table";
    if (doctor) doctor->add_option("--format", doctor_format, "table or json")->check(CLI::IsMember({"table", "json"}));

    auto* stats = command(app, "stats", "Show resource usage of running sandboxes");
    std::vector<std::string> stats_names;
    std::string stats_format = "table";
    if (stats) {
        stats->add_option("--format", stats_format, "table or json")->check(CLI::IsMember({"table", "json"}));
        stats->add_option("NAME", stats_names, "Sandbox names")->required();
    }

    auto* inspect = command(app, "inspect", "Show sandboxes as JSON");
    std::vector<std::string> inspect_names;
    if (inspect) inspect->add_option("NAME", inspect_names, "Sandbox names")->required();

    // Image store commands; pull, load, save, login and logout are listed for --help only
    // (main() hands them to hutch-image before parsing).
    if (all)
        for (const char* name : {"pull", "load", "save", "login", "logout"})
            app.add_subcommand(name, std::string("Image transfer: see 'hutch ") + name + " --help'")->allow_extras();
    std::string images_format = "table";
    bool images_quiet = false;
    auto add_images_options = [&](CLI::App* a) {
        a->add_option("--format", images_format, "table or json")->check(CLI::IsMember({"table", "json"}));
        a->add_flag("-q,--quiet", images_quiet, "Only show image ids");
    };
    auto* images = command(app, "images", "List images");
    if (images) add_images_options(images);
    std::vector<std::string> image_refs;
    bool image_force = false;
    CLI::App *image_ls = nullptr, *image_inspect = nullptr, *image_rm = nullptr, *image_prune = nullptr;
    if (auto* image = command(app, "image", "Manage images")) {
        image->require_subcommand(1);
        image_ls = image->add_subcommand("ls", "List images");
        add_images_options(image_ls);
        image_inspect = image->add_subcommand("inspect", "Show images as JSON");
        image_inspect->add_option("IMAGE", image_refs, "Images")->required();
        image_rm = image->add_subcommand("rm", "Remove images");
        image_rm->add_flag("-f,--force", image_force, "Remove the image even if it has other names");
        image_rm->add_option("IMAGE", image_refs, "Images")->required();
        image_prune = image->add_subcommand("prune", "Remove layers and blobs no image uses");
    }
    auto* rmi = command(app, "rmi", "Remove images");
    if (rmi) {
        rmi->add_flag("-f,--force", image_force, "Remove the image even if it has other names");
        rmi->add_option("IMAGE", image_refs, "Images")->required();
    }
    std::string tag_source, tag_target;
    auto* tag = command(app, "tag", "Give an image another name: SOURCE TARGET");
    if (tag) {
        tag->add_option("SOURCE", tag_source, "Existing image")->required();
        tag->add_option("TARGET", tag_target, "New name")->required();
    }
    std::string df_format = "table";
    CLI::App* df = nullptr;
    if (auto* system = command(app, "system", "Store-wide information")) {
        system->require_subcommand(1);
        df = system->add_subcommand("df", "Show disk usage of images, layers and blobs");
        df->add_option("--format", df_format, "table or json")->check(CLI::IsMember({"table", "json"}));
    }

    // CLI11 does not hand back what follows "--" to a prefix command, so split it off first:
    // everything after the first "--" is the command, verbatim.
    std::vector<std::string> before, after;
    bool dashes = false;
    for (int i = argc - 1; i >= 1; --i) before.push_back(argv[i]);  // CLI11 wants them reversed
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--") {
            dashes = true;
            before.assign(argv + 1, argv + i);
            std::reverse(before.begin(), before.end());
            after.assign(argv + i + 1, argv + argc);
            break;
        }
    auto remaining = [&](CLI::App* sub) {
        std::vector<std::string> args = sub->remaining();
        // A prefix command keeps unknown flags as if they were the command; they are mistakes.
        if (!args.empty() && args[0].size() > 1 && args[0][0] == '-')
            throw hutch::Error("unknown flag", args[0], 0, "see 'hutch " + sub->get_name() + " --help'");
        if (dashes) {
            args.push_back("--");
            args.insert(args.end(), after.begin(), after.end());
        }
        return args;
    };

    try {
        app.parse(before);
    } catch (const CLI::ParseError& e) {
        // --help and --version arrive as "errors" with exit code 0: CLI11 prints them.
        if (e.get_exit_code() == 0) return app.exit(e);
        // Name an unknown command instead of CLI11's "A subcommand is required" (a word that is
        // no command is what made `all` true).
        if (word_at && all) {
            std::fprintf(stderr, "hutch: unknown command: %s (see 'hutch --help')\n", argv[word_at]);
            return hutch::kExitHutchError;
        }
        std::fprintf(stderr, "hutch: %s (see 'hutch --help')\n", e.what());
        return hutch::kExitHutchError;
    }

    try {
        hutch::log::set_level(g.log_level);
        if (parsed(run)) {
            run_opts.args = remaining(run);
            return hutch::cli::run(g, run_opts);
        }
        if (parsed(create)) {
            create_opts.args = remaining(create);
            return hutch::cli::create(g, create_opts);
        }
        if (parsed(start)) return hutch::cli::start(g, start_names);
        if (parsed(exec)) {
            auto args = remaining(exec);
            if (args.empty() || args[0] == "--")
                throw hutch::Error("exec needs a sandbox name", "", 0, "hutch exec NAME [--] COMMAND [ARG...]");
            std::string name = args[0];
            args.erase(args.begin());
            return hutch::cli::exec(g, exec_opts, name, args);
        }
        if (parsed(ps)) return hutch::cli::ps(g, ps_format, ps_quiet);
        if (parsed(stop)) return hutch::cli::stop(g, stop_names, grace);
        if (parsed(rm)) return hutch::cli::rm(g, rm_names, force);
        if (parsed(inspect)) return hutch::cli::inspect(g, inspect_names);
        if (parsed(stats)) return hutch::cli::stats(g, stats_names, stats_format);
        if (parsed(doctor)) return hutch::cli::doctor(g, doctor_format);
        if (parsed(policy_check)) return hutch::cli::policy_check(g, policy_arg);
        if (parsed(policy_show)) return hutch::cli::policy_show(g, policy_arg);
        if (parsed(images) || parsed(image_ls)) return hutch::cli::images(g, images_format, images_quiet);
        if (parsed(image_inspect)) return hutch::cli::image_inspect(g, image_refs);
        if (parsed(image_rm) || parsed(rmi)) return hutch::cli::rmi(g, image_refs, image_force);
        if (parsed(image_prune)) return hutch::cli::image_prune(g);
        if (parsed(tag)) return hutch::cli::tag(g, tag_source, tag_target);
        if (parsed(df)) return hutch::cli::system_df(g, df_format);
    } catch (const std::exception& e) {
        return hutch::report_error(e);
    }
    return hutch::kExitHutchError;
}
