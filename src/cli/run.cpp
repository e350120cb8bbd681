// run, create and exec: turning flags into a SandboxSpec.
#include <fcntl.h>
#include <linux/limits.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "commands.hpp"
#include "hutch_config.h"
#include "hutch/core/duration.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/trace.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/image/reference.hpp"
#include "hutch/policy/policy.hpp"
#include "hutch/image/store.hpp"
#include "hutch/sandbox/idmap.hpp"
#include "hutch/sandbox/launcher.hpp"
#include "hutch/sandbox/mounts.hpp"
#include "hutch/sandbox/spec.hpp"
#include "hutch/sandbox/state.hpp"

namespace hutch::cli {

namespace {

void check_env_entry(const std::string& e, const std::string& origin) {
    if (e.empty() || e[0] == '=') fail("invalid environment variable", origin + ": '" + e + "'", "use KEY=VALUE");
}

// KEY=VALUE stays; a bare KEY takes the caller's value and is dropped when unset (docker's rule).
void add_env(std::vector<std::string>& out, const std::string& e, const std::string& origin) {
    check_env_entry(e, origin);
    if (e.find('=') != std::string::npos) {
        out.push_back(e);
    } else if (const char* v = std::getenv(e.c_str())) {
        out.push_back(e + "=" + v);
    }
}

std::vector<std::string> collect_env(const ProcessOptions& o) {
    std::vector<std::string> env;
    for (const auto& file : o.env_files) {
        std::istringstream in(fs::read_file(file));
        std::string line;
        int n = 0;
        while (std::getline(in, line)) {
            ++n;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            size_t start = line.find_first_not_of(" \t");
            if (start == std::string::npos || line[start] == '#') continue;
            const std::string entry = line.substr(start);
            const std::string where = file + ":" + std::to_string(n);
            // As docker's: a name with a blank in it ("export A=1", "A = 1") is a mistake.
            if (entry.substr(0, entry.find('=')).find_first_of(" \t") != std::string::npos)
                fail("invalid line in --env-file", where + ": '" + entry + "'",
                     "a variable's name may not contain blanks; write NAME=VALUE");
            add_env(env, entry, where);
        }
    }
    for (const auto& e : o.env) add_env(env, e, "-e");
    return env;
}

int rlimit_resource(const std::string& name) {
    static const std::pair<const char*, int> table[] = {
        {"as", RLIMIT_AS},           {"core", RLIMIT_CORE},       {"cpu", RLIMIT_CPU},
        {"data", RLIMIT_DATA},       {"fsize", RLIMIT_FSIZE},     {"locks", RLIMIT_LOCKS},
        {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
        {"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},     {"rss", RLIMIT_RSS},
        {"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},   {"sigpending", RLIMIT_SIGPENDING},
        {"stack", RLIMIT_STACK}};
    for (auto [n, r] : table)
        if (name == n) return r;
    fail("unknown --ulimit", name, "use one of nofile, nproc, core, stack, cpu, as, fsize, memlock, ...");
}

uint64_t rlimit_value(const std::string& text, const std::string& flag) {
    if (text == "unlimited" || text == "-1") return RLIM_INFINITY;
    char* end = nullptr;
    unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0') fail("invalid --ulimit value", flag, "use NAME=SOFT[:HARD] with numbers");
    return v;
}

Rlimit parse_ulimit(const std::string& text) {
    size_t eq = text.find('=');
    if (eq == std::string::npos) fail("invalid --ulimit", text, "use NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    Rlimit r;
    r.resource = rlimit_resource(text.substr(0, eq));
    std::string values = text.substr(eq + 1);
    size_t colon = values.find(':');
    r.soft = rlimit_value(values.substr(0, colon), text);
    r.hard = colon == std::string::npos ? r.soft : rlimit_value(values.substr(colon + 1), text);
    if (r.soft > r.hard) fail("invalid --ulimit", text, "the soft limit cannot exceed the hard limit");
    return r;
}

// A container path a bind or tmpfs may not cover: the root, and /proc, whose masked and
// read-only files it would undo (runc and docker refuse both).
void check_destination(const std::string& dest, const std::string& text, const char* flag) {
    if (("/" + dest + "/").find("/../") != std::string::npos)
        fail(std::string("invalid ") + flag + " destination", text, "the container path may not contain '..'");
    // Normalized: "//proc/", "/./proc" and "/proc" are the same place.
    const std::string d = fs::lexical_normal(dest);
    if (d == "/" || d == "/proc" || d.rfind("/proc/", 0) == 0)
        fail(std::string("invalid ") + flag + " destination", text,
             "the sandbox's / and /proc cannot be covered; pick another container path");
}

// Docker's options of a bind, comma-separated: ro or rw; z and Z (SELinux relabelling, which
// hutch does not do: nothing to relabel without SELinux, as docker on such a host), cached,
// delegated and consistent (docker ignores them on Linux too); and a propagation, where hutch's
// binds are rprivate (see mounts.cpp): private or rprivate is what they are, shared and slave
// they cannot be.
void apply_volume_options(BindMount& b, const std::string& options, const std::string& text) {
    static const char* const kNoOps[] = {"z", "Z", "cached", "delegated", "consistent", "private", "rprivate"};
    std::istringstream in(options);
    std::string o;
    bool mode = false;
    while (std::getline(in, o, ',')) {
        if (o == "ro" || o == "rw") {
            if (mode) fail("invalid -v option", text, "give ro or rw once");
            mode = true;
            b.read_only = o == "ro";
        } else if (o == "shared" || o == "rshared" || o == "slave" || o == "rslave") {
            fail("unsupported -v option", text, "hutch's binds are rprivate: mounts never propagate between host and sandbox");
        } else if (std::find(std::begin(kNoOps), std::end(kNoOps), o) == std::end(kNoOps)) {
            fail("invalid -v option", text, "'" + o + "' is not one of ro, rw, z, Z, rprivate");
        }
    }
}

BindMount parse_volume(const std::string& text) {
    std::vector<std::string> parts;
    std::istringstream in(text);
    std::string part;
    while (std::getline(in, part, ':')) parts.push_back(part);
    if (parts.size() < 2 || parts.size() > 3)
        fail("invalid -v", text, "use HOST:CONTAINER or HOST:CONTAINER:ro (absolute paths)");
    BindMount b{parts[0], parts[1], false};
    if (parts.size() == 3) apply_volume_options(b, parts[2], text);
    if (b.source.empty() || b.source[0] != '/')
        fail("invalid -v source", text, "named volumes are not supported; give an absolute host path");
    if (b.destination.empty() || b.destination[0] != '/')
        fail("invalid -v destination", text, "the container path must be absolute");
    check_destination(b.destination, text, "-v");
    char resolved[PATH_MAX];
    if (!::realpath(b.source.c_str(), resolved))
        throw_errno("cannot use bind source", b.source, "the path must exist and be readable by you");
    b.source = resolved;
    return b;
}

TmpfsMount parse_tmpfs(const std::string& text) {
    size_t colon = text.find(':');
    TmpfsMount t{text.substr(0, colon), colon == std::string::npos ? "" : text.substr(colon + 1)};
    if (t.destination.empty() || t.destination[0] != '/') fail("invalid --tmpfs", text, "the path must be absolute");
    check_destination(t.destination, text, "--tmpfs");
    mounts::tmpfs_options(t.options, t.destination);  // an unknown option is an error now, not in the sandbox
    return t;
}

void apply_security_opts(SandboxSpec& spec, const std::vector<std::string>& opts) {
    for (const auto& o : opts) {
        if (o.rfind("seccomp=", 0) == 0 || o.rfind("seccomp:", 0) == 0) {
            std::string v = o.substr(8);
            if (v != "unconfined") {
                char resolved[PATH_MAX];
                if (v.empty()) fail("--security-opt seccomp= needs a profile", o, "seccomp=FILE or seccomp=unconfined");
                if (!::realpath(v.c_str(), resolved)) throw_errno("cannot read seccomp profile", v);
                v = resolved;
            }
            spec.seccomp_profile = v;
        } else if (o == "no-new-privileges" || o == "no-new-privileges:true" || o == "no-new-privileges=true") {
            // Always on.
        } else if (o == "apparmor=unconfined" || o == "apparmor:unconfined" || o == "label=disable" ||
                   o == "label:disable") {
            // hutch puts a sandbox under no AppArmor profile or SELinux label: what these ask for
            // is already so. (A profile or label asked for is refused below: it would not be had.)
        } else {
            fail("unsupported --security-opt", o,
                 "hutch supports seccomp=FILE, seccomp=unconfined and no-new-privileges (always on), and takes "
                 "apparmor=unconfined and label=disable as they are: it applies no AppArmor profile or SELinux label");
        }
    }
}

// Splits [IMAGE | --] COMMAND... into the root filesystem and the command.
// Runs hutch-image (pull ...) and waits: the image code with its libraries stays out of this
// process. Its own messages reach the terminal; a failure becomes an Error with its status.
void run_image_helper(const GlobalOptions& g, std::vector<std::string> args, bool quiet) {
    const char* env = std::getenv("HUTCH_IMAGE_HELPER");
    std::string helper = env && *env ? env : HUTCH_IMAGE_HELPER;
    std::vector<std::string> argv{helper};
    if (!g.root.empty()) argv.insert(argv.end(), {"--root", g.root});
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("cannot fork the image helper");
    if (pid == 0) {
        // stdout belongs to the sandboxed command: progress goes to stderr, or nowhere when quiet
        // (errors still reach stderr).
        int out = quiet ? ::open("/dev/null", O_WRONLY | O_CLOEXEC) : STDERR_FILENO;
        ::dup2(out, STDOUT_FILENO);
        ::execv(helper.c_str(), cargv.data());
        std::fprintf(stderr, "hutch: cannot run the image helper: %s: %s\n", helper.c_str(), std::strerror(errno));
        ::_exit(kExitHutchError);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error("could not get image", args.back(), 0, "", kExitHutchError);
}

bool is_embedded_default(const std::string& name) {
    try {
        return image::Reference::parse(name).str() == "docker.io/library/busybox:latest";
    } catch (const Error&) {
        return false;
    }
}

std::string embedded_layout() {
    const char* env = std::getenv("HUTCH_DEFAULT_IMAGE_LAYOUT");
    return env && *env ? env : HUTCH_DEFAULT_IMAGE_LAYOUT;
}

// Whether the first word after the options names an image rather than a command: an image in the
// store, or something only a reference looks like (registry/repo, repo:tag, repo@digest).
bool names_an_image(const image::Store& store, const std::string& word) {
    if (word.empty() || word[0] == '/' || word[0] == '.' || word[0] == '-') return false;
    if (is_embedded_default(word) || store.find(word)) return true;
    if (word.find_first_of("/:@") == std::string::npos) return false;
    try {
        image::Reference::parse(word);
        return true;
    } catch (const Error&) {
        return false;
    }
}

// A first word taken for the command (no image has that name) that is not found in the sandbox
// may have been meant as an image: say so. Docker would have tried to pull it.
Error with_image_hint(const Error& e, const SandboxOptions& o, const SandboxSpec& spec) {
    if (e.exit_code() != kExitNotFound || !o.rootfs.empty() || o.args.empty() || o.args[0] == "--" ||
        o.args[0] == spec.rootfs || o.args[0].find('/') != std::string::npos)
        return e;
    try {
        image::Reference::parse(o.args[0]);
    } catch (const Error&) {
        return e;
    }
    return Error(e.what(), "", 0, "nor is there an image '" + o.args[0] + "': 'hutch pull " + o.args[0] + "' gets one",
                 e.exit_code());
}

// Finds the image in the store, getting it first as --pull says. The embedded default comes from
// the OCI layout the build made, so `hutch run busybox` needs no registry.
image::ImageRecord get_image(const GlobalOptions& g, const image::Store& store, const std::string& name,
                             const std::string& pull) {
    auto found = store.find(name);
    if (found && pull != "always") return *found;
    if (pull == "never") fail("no such image", name, "pull it first: hutch pull " + name);
    if (is_embedded_default(name))
        run_image_helper(g, {"pull", "-q", "--tag", "busybox:latest", "oci:" + embedded_layout() + ":latest"}, true);
    else
        run_image_helper(g, {"pull", name}, false);
    found = store.find(name);
    if (!found) fail("image not found after pulling it", name);
    return *found;
}

// The image's Entrypoint, Cmd, Env, WorkingDir and User under what the flags say (docker's rules).
void apply_image_config(const image::Config& c, const SandboxOptions& o, std::vector<std::string> args,
                        SandboxSpec& spec, bool need_command) {
    ProcessSpec& p = spec.process;
    std::vector<std::string> env = c.env;
    env.insert(env.end(), p.env.begin(), p.env.end());
    p.env = env;
    std::vector<std::string> entrypoint = c.entrypoint;
    if (o.entrypoint_set) entrypoint = o.entrypoint.empty() ? std::vector<std::string>{} : std::vector<std::string>{o.entrypoint};
    std::vector<std::string> cmd = args.empty() && !o.entrypoint_set ? c.cmd : args;
    p.argv = entrypoint;
    p.argv.insert(p.argv.end(), cmd.begin(), cmd.end());
    if (p.argv.empty() && need_command)
        fail("no command given", spec.rootfs, "the image has no Entrypoint or Cmd: hutch run IMAGE COMMAND [ARG...]");
    if (p.cwd.empty()) p.cwd = c.working_dir;
    if (p.user.empty()) p.user = c.user;
}

// A persistent sandbox runs no command of its own (its init waits for execs): a command given to
// create would be ignored, and one who gave it expected it to run.
void refuse_command(const std::vector<std::string>& command, const std::string& name) {
    if (command.empty()) return;
    std::string given;
    for (const auto& w : command) given += (given.empty() ? "" : " ") + w;
    fail("create takes no command", given,
         "a persistent sandbox runs what you give 'hutch exec " + name + " COMMAND'; or use 'hutch run'");
}

// Splits [IMAGE | --rootfs DIR] [--] COMMAND... into the root filesystem and the command (none
// for a persistent sandbox: `need_command` false).
// `pins` receives the locks that keep the image's layers from a prune (Store::pin_layers), which
// the caller holds until its sandbox ends or has its config recorded.
void resolve_root_and_command(const GlobalOptions& g, const Paths& paths, SandboxSpec& spec, const SandboxOptions& o,
                              bool need_command, std::vector<FileLock>& pins) {
    std::vector<std::string> args = o.args;
    bool explicit_dashes = !args.empty() && args[0] == "--";
    if (explicit_dashes) args.erase(args.begin());
    if (!o.rootfs.empty()) {
        char resolved[PATH_MAX];
        if (!::realpath(o.rootfs.c_str(), resolved))
            throw_errno("root filesystem not found", o.rootfs, "pass an existing directory to --rootfs");
        spec.rootfs = resolved;
        struct stat st;
        if (::stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode))
            fail("--rootfs is not a directory", o.rootfs, "pass the directory of a root filesystem");
        if (::geteuid() == 0) fs::require_searchable(spec.rootfs, "--rootfs");
        spec.lower_dirs = {spec.rootfs};
        if (!args.empty() && args[0] == "--") args.erase(args.begin());
        if (args.empty() && need_command)
            fail("no command given", "", "hutch run [OPTIONS] --rootfs DIR [--] COMMAND [ARG...]");
        if (!need_command) refuse_command(args, spec.name);
        spec.process.argv = args;
        return;
    }
    image::Store store(paths);
    std::string name = "busybox";
    if (!explicit_dashes && !args.empty() && names_an_image(store, args[0])) {
        name = args[0];
        args.erase(args.begin());
    }
    if (!args.empty() && args[0] == "--") args.erase(args.begin());
    if (!need_command) refuse_command(args, spec.name);
    image::ImageRecord img = get_image(g, store, name, o.pull);
    spec.rootfs = name;
    spec.image = img.id;
    spec.lower_dirs = store.lower_dirs(img);
    if (spec.lower_dirs.empty()) fail("the image has no layers", name, "an image needs at least one layer to run");
    pins = store.pin_layers(img);
    apply_image_config(store.config(img), o, args, spec, need_command);
}

// The policy a sandbox runs under (--policy, default offline) and the admin's ceiling, read once.
struct Policies {
    policy::Policy user;
    std::optional<policy::Policy> admin;
};

Policies load_policies(const SandboxOptions& o) {
    return {policy::load(o.policy.empty() ? "offline" : o.policy), policy::load_admin()};
}

// The policy fills defaults and refuses what exceeds a ceiling. It runs before the image's config
// is applied: the image's own environment is not the user's to pass through, so env.allowed must
// not judge it.
void apply_policy(const Policies& pols, const SandboxOptions& o, SandboxSpec& spec) {
    policy::Explicit given;
    given.memory = !o.memory.empty();
    given.pids = o.pids_limit != 0;
    given.cpus = !o.cpus.empty();
    given.timeout = !o.timeout.empty();
    given.network = !o.network.empty();
    for (const auto& s : o.security_opts) given.seccomp = given.seccomp || s.rfind("seccomp", 0) == 0;
    policy::apply(pols.user, pols.admin, given, spec);
}

SandboxSpec build_spec(const GlobalOptions& g, const Paths& paths, const SandboxOptions& o, const Policies& pols,
                       bool persistent, std::vector<FileLock>& pins) {
    SandboxSpec spec;
    spec.persistent = persistent;
    spec.name = o.name.empty() ? state::random_name() : o.name;
    state::validate_name(spec.name);
    spec.hostname = o.hostname.empty() ? spec.name.substr(0, 63) : o.hostname;
    if (spec.hostname.size() > 64)  // HOST_NAME_MAX: sethostname(2) refuses more
        fail("invalid --hostname", spec.hostname, "a hostname has at most 64 characters");
    spec.idmap = idmap::for_caller();
    spec.read_only_root = o.read_only;
    for (const auto& v : o.volumes) spec.binds.push_back(parse_volume(v));
    for (const auto& t : o.tmpfs) spec.tmpfs.push_back(parse_tmpfs(t));
    apply_security_opts(spec, o.security_opts);
    if (!o.timeout.empty()) spec.timeout = parse_duration(o.timeout, "--timeout");
    ProcessSpec& p = spec.process;
    p.env = collect_env(o.process);
    p.cwd = o.process.workdir;
    if (!p.cwd.empty() && p.cwd[0] != '/') fail("invalid -w", p.cwd, "the working directory must be absolute");
    p.user = o.process.user;
    p.tty = o.process.tty;
    p.stdin_open = o.process.interactive;
    p.cap_add = o.cap_add;
    p.cap_drop = o.cap_drop;
    // A limit given twice: the last one counts, as in docker (setting both in turn would fail
    // when the first lowered the hard limit below the second).
    for (const auto& u : o.ulimits) {
        Rlimit r = parse_ulimit(u);
        std::erase_if(p.rlimits, [&](const Rlimit& old) { return old.resource == r.resource; });
        p.rlimits.push_back(r);
    }
    Resources& r = spec.resources;
    if (!o.memory.empty()) r.memory = static_cast<int64_t>(parse_size(o.memory, "--memory"));
    if (!o.memory_swap.empty())
        r.memory_swap = o.memory_swap == "-1" ? -1 : static_cast<int64_t>(parse_size(o.memory_swap, "--memory-swap"));
    if (r.memory_swap > 0 && r.memory_swap < r.memory)
        fail("invalid --memory-swap", o.memory_swap, "it counts memory plus swap, so it must be at least --memory");
    if (r.memory > 0 && r.memory < 6 * 1024 * 1024)
        fail("invalid --memory", o.memory, "the smallest memory limit is 6m, as in docker");
    r.pids = o.pids_limit;
    if (!o.cpus.empty()) {
        char* end = nullptr;
        r.cpus = std::strtod(o.cpus.c_str(), &end);
        if (*end != '\0' || !(r.cpus > 0)) fail("invalid --cpus", o.cpus, "give a positive number, e.g. 0.5 or 2");
    }
    r.cpu_weight = o.cpu_weight;
    r.io_weight = o.io_weight;
    r.device_read_bps = o.device_read_bps;
    r.device_write_bps = o.device_write_bps;
    spec.stats = o.stats;
    const bool limits_given = !r.empty();
    apply_policy(pols, o, spec);
    spec.limits_from_policy = !limits_given && !spec.resources.empty();
    resolve_root_and_command(g, paths, spec, o, !persistent, pins);
    return spec;
}

// What --network egress may reach, as the policy decides (--policy, --network, the admin's
// ceiling); nullopt: loopback only.
std::optional<policy::Egress> egress_rules(const Policies& pols, const SandboxOptions& o) {
    if (o.network == "none" || (o.network.empty() && o.policy.empty())) return std::nullopt;
    policy::Egress e = policy::egress(pols.user, pols.admin, o.network);
    if (e.mode != "egress") return std::nullopt;
    return e;
}

// Says why a run ended when hutch knows better than the bare status.
int report(const RunResult& r, const SandboxSpec& spec) {
    if (r.timed_out)
        std::fprintf(stderr, "hutch: timeout: sandbox %s ran longer than its --timeout and was killed\n", spec.name.c_str());
    else if (!r.note.empty())
        std::fprintf(stderr, "hutch: %s\n", r.note.c_str());
    if (!r.stats.empty()) std::fprintf(stderr, "hutch: %s\n", r.stats.c_str());
    return r.exit_code;
}

}  // namespace

Paths prepare_paths(const GlobalOptions& g, bool sweep) {
    Paths paths = Paths::resolve(g.root);
    paths.ensure(idmap::store_group());
    // (A run sweeps later, with its spec's map, while its init makes its namespaces.)
    if (sweep) state::sweep(paths, idmap::for_caller());
    return paths;
}

int run(const GlobalOptions& g, const SandboxOptions& o) {
    trace("front end: arguments parsed");
    Paths paths = prepare_paths(g, false);
    trace("front end: paths ready");
    Policies pols = load_policies(o);
    trace("front end: policies loaded");
    std::optional<policy::Egress> egress = egress_rules(pols, o);
    std::vector<FileLock> pins;  // until the sandbox is gone
    SandboxSpec spec = build_spec(g, paths, o, pols, false, pins);
    RunResult result;
    try {
        result = run_sandbox(spec, paths, egress ? &*egress : nullptr);
    } catch (const Error& e) {
        throw with_image_hint(e, o, spec);
    }
    if (!result.egress.empty() && !o.quiet) std::fprintf(stderr, "hutch: %s\n", result.egress.c_str());
    return report(result, spec);
}

int create(const GlobalOptions& g, const SandboxOptions& o) {
    if (o.name.empty()) fail("create needs --name", "", "hutch create --name NAME [OPTIONS] [IMAGE]");
    if (o.rm)
        fail("create does not take --rm", o.name,
             "a persistent sandbox lives until 'hutch rm " + o.name + "'; --rm is for 'hutch run', where it is always on");
    Paths paths = prepare_paths(g);
    Policies pols = load_policies(o);
    std::optional<policy::Egress> egress = egress_rules(pols, o);
    std::vector<FileLock> pins;  // until the config, which names the layers, is recorded
    SandboxSpec spec = build_spec(g, paths, o, pols, true, pins);
    spec.process.tty = false;  // ttys belong to each exec
    create_sandbox(spec, paths, egress ? &*egress : nullptr);
    std::printf("%s\n", spec.name.c_str());
    return 0;
}

int exec(const GlobalOptions& g, const ProcessOptions& o, const std::string& name, std::vector<std::string> command) {
    if (!command.empty() && command[0] == "--") command.erase(command.begin());
    if (command.empty()) fail("exec needs a command", name, "hutch exec NAME [--] COMMAND [ARG...]");
    Paths paths = prepare_paths(g, false);
    ProcessSpec p;
    p.argv = command;
    p.env = collect_env(o);
    p.cwd = o.workdir;
    p.user = o.user;
    p.tty = o.tty;
    p.stdin_open = o.interactive;
    SandboxSpec spec;
    spec.name = name;
    return report(exec_in_sandbox(paths, name, p), spec);
}

}  // namespace hutch::cli
