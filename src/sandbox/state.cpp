#include "hutch/sandbox/state.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <string_view>
#include <nlohmann/json.hpp>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/sandbox/cgroup.hpp"
#include "hutch/sandbox/idmap.hpp"
#include "hutch/sandbox/seccomp.hpp"

namespace hutch {

// JSON forms of the spec (nlohmann's ADL hooks).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(IdRange, inside, outside, count)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(IdMap, uids, gids, use_helpers, deny_setgroups)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(BindMount, source, destination, read_only)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TmpfsMount, destination, options)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Rlimit, resource, soft, hard)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Resources, memory, memory_swap, pids, cpus, cpu_weight, io_weight,
                                                device_read_bps, device_write_bps)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ProcessSpec, argv, env, cwd, user, tty, stdin_open, cap_add,
                                                cap_drop, rlimits)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(SandboxSpec, name, hostname, rootfs, lower_dirs, image, read_only_root, binds, tmpfs,
                                                idmap, seccomp_profile, process, resources, limits_from_policy, stats, timeout, persistent)

namespace state {

void validate_name(const std::string& name) {
    auto ok_first = [](char c) { return std::isalnum(static_cast<unsigned char>(c)); };
    auto ok = [&](char c) { return ok_first(c) || c == '_' || c == '.' || c == '-'; };
    bool valid = !name.empty() && name.size() <= 128 && ok_first(name[0]);
    for (char c : name) valid = valid && ok(c);
    if (!valid)
        fail("invalid sandbox name", "'" + name + "'",
             "use letters, digits, '_', '.' and '-', starting with a letter or digit");
}

std::string random_name() {
    // getrandom(2), not std::random_device: libstdc++'s probes the CPU with cpuid first, which
    // traps to the hypervisor in a VM.
    unsigned char bytes[6];
    if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) throw_errno("cannot read random bytes");
    static const char hex[] = "0123456789abcdef";
    std::string s;
    for (unsigned char b : bytes) {
        s += hex[b >> 4];
        s += hex[b & 15];
    }
    return s;
}

static std::string dir_of(const Paths& paths, const std::string& name) {
    return paths.sandboxes_storage() + "/" + name;
}

static std::string config_path(const Paths& paths, const std::string& name) {
    return dir_of(paths, name) + "/config.json";
}

static std::string live_path(const Paths& paths, const std::string& name) {
    return paths.sandboxes_state() + "/" + name + ".json";
}

// A copy of the live record kept with the sandbox's config. The runtime directory can vanish
// while the init runs on (logind removes /run/user/UID when its user's last session ends), and a
// start that took the sandbox for stopped would mount its writable layer a second time, under
// the running one.
static std::string kept_live_path(const Paths& paths, const std::string& name) {
    return dir_of(paths, name) + "/live.json";
}

// Creators hold this shared, the sweeper exclusive: a directory being set up is never swept.
static std::string sweep_lock_path(const Paths& paths) { return paths.sandboxes_storage() + "/.sweep.lock"; }

Scratch plan_scratch(const Paths& paths, const std::string& name) {
    validate_name(name);
    Scratch s;
    s.dir = dir_of(paths, name);
    s.mount_point = paths.sandboxes_storage() + "/.root";
    return s;
}

static void ensure_mount_point(const Scratch& s) {
    if (::mkdir(s.mount_point.c_str(), 0700) != 0 && errno != EEXIST)
        throw_errno("cannot create the mount point", s.mount_point);
}

// The spare of one owner: a sandbox of root's may map another range than the last one did.
static std::string spare_name(uid_t owner_uid, gid_t owner_gid) {
    return ".spare-" + std::to_string(owner_uid) + "-" + std::to_string(owner_gid);
}
static constexpr std::string_view kSpareInProgress = ".spare-new-";

// Gives the directory behind `fd` exactly `mode` (whatever the umask) and, as root, to
// `uid`/`gid`: through its fd, never through a path a sandbox of the same ids could turn into a
// link meanwhile.
static void set_mode_and_owner(int fd, mode_t mode, uid_t uid, gid_t gid, const std::string& shown) {
    if (::fchmod(fd, mode) != 0) throw_errno("cannot chmod", shown);
    if (::geteuid() == 0 && ::fchown(fd, uid, gid) != 0) throw_errno("cannot chown", shown);
}

void reserve_scratch(Scratch& s, uid_t owner_uid, gid_t owner_gid) {
    const std::string parent = s.dir.substr(0, s.dir.rfind('/'));
    const std::string name = s.dir.substr(parent.size() + 1);
    FileLock guard = FileLock::acquire(parent + "/.sweep.lock", FileLock::Mode::Shared);
    ensure_mount_point(s);
    // Of two runs after the same spare, one gets it and the other ENOENT; an existing name EEXIST.
    // (A run without a writable layer takes it too: drop_unused_layers.)
    s.layers_made = ::renameat2(AT_FDCWD, (parent + "/" + spare_name(owner_uid, owner_gid)).c_str(), AT_FDCWD,
                                s.dir.c_str(), RENAME_NOREPLACE) == 0;
    if (!s.layers_made && ::mkdir(s.dir.c_str(), 0700) != 0) {
        if (errno == EEXIST) {
            // Without a config it is no sandbox 'hutch rm' knows: a run still going, one being
            // created, or what a run that ended abruptly left (which the sweep takes; from here,
            // under the creators' shared lock, it cannot be told from one being set up).
            const bool persistent = fs::exists(s.dir + "/config.json");
            fail("a sandbox with this name already exists", name,
                 persistent ? "pick another --name, or 'hutch rm " + name + "'"
                            : "a 'hutch run --name " + name + "' still going, or one being created; pick another "
                              "--name (what a run that ended abruptly left, 'hutch ps' clears)");
        }
        throw_errno("cannot create sandbox directory", s.dir);
    }
    try {
        s.lock = FileLock::acquire_directory(s.dir);
        // The sandbox's root (another uid when hutch runs as root) must reach its layers. (A
        // spare stays the caller's own until taken: no sandbox reaches into it before.)
        set_mode_and_owner(s.lock.fd(), 0700, owner_uid, owner_gid, s.dir);
    } catch (...) {
        try {
            fs::remove_tree(s.dir);
        } catch (const Error&) {
            // Left to the sweep: the first failure is the one to report.
        }
        throw;
    }
}

void create_layers(const Scratch& s, uid_t owner_uid, gid_t owner_gid) {
    if (s.layers_made) return;
    UniqueFd dir(::open(s.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_errno("cannot open", s.dir);
    // upper/ becomes the mode of the sandbox's "/" (0755, like an image's root); the sandbox
    // directory around it stays 0700. What is left on failure is the caller's to remove.
    for (auto [name, mode] : {std::pair{"upper", 0755}, std::pair{"work", 0700}}) {
        const std::string shown = s.dir + "/" + name;
        if (::mkdirat(dir.get(), name, static_cast<mode_t>(mode)) != 0) throw_errno("cannot create directory", shown);
        UniqueFd fd(::openat(dir.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) throw_errno("cannot open", shown);
        set_mode_and_owner(fd.get(), static_cast<mode_t>(mode), owner_uid, owner_gid, shown);
    }
}

void create_scratch(Scratch& s, uid_t owner_uid, gid_t owner_gid) {
    reserve_scratch(s, owner_uid, owner_gid);
    try {
        create_layers(s, owner_uid, owner_gid);
    } catch (...) {
        fs::remove_tree(s.dir);
        throw;
    }
}

void make_spare(const Paths& paths, uid_t owner_uid, gid_t owner_gid) {
    const std::string sandboxes = paths.sandboxes_storage();
    const std::string spare = sandboxes + "/" + spare_name(owner_uid, owner_gid);
    if (fs::exists(spare)) return;
    Scratch s;
    s.dir = sandboxes + "/" + std::string(kSpareInProgress) + std::to_string(::getpid());
    // Held while the spare is unfinished: a sweep removes unfinished spares a crash left. Not
    // waited for: the run's supervision (signals, --timeout) starts after this.
    FileLock guard = FileLock::try_acquire(sweep_lock_path(paths), FileLock::Mode::Shared);
    if (!guard || ::mkdir(s.dir.c_str(), 0700) != 0) return;
    try {
        // Its own directory stays the caller's (root's) until a run takes it, its layers are the
        // sandbox's root's.
        UniqueFd top(::open(s.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!top) throw_errno("cannot open", s.dir);
        set_mode_and_owner(top.get(), 0700, ::geteuid(), ::getegid(), s.dir);
        create_layers(s, owner_uid, owner_gid);
        // Another run's spare may have come first.
        if (::renameat2(AT_FDCWD, s.dir.c_str(), AT_FDCWD, spare.c_str(), RENAME_NOREPLACE) == 0) return;
    } catch (const Error&) {
    }
    try {
        fs::remove_tree(s.dir);
    } catch (const Error&) {
    }
}

Scratch create_scratch(const Paths& paths, const std::string& name, uid_t owner_uid, gid_t owner_gid) {
    Scratch s = plan_scratch(paths, name);
    create_scratch(s, owner_uid, owner_gid);
    return s;
}


Scratch open_scratch(const Paths& paths, const std::string& name) {
    Scratch s = plan_scratch(paths, name);
    // Held only while a start or an rm of the same sandbox is under way (a running init keeps no
    // host fd): waited for, so that concurrent starts all see it running, as docker's do.
    s.lock = FileLock::acquire_directory(s.dir);
    ensure_mount_point(s);  // made by `create`; a sandbox of an older hutch may predate it
    return s;
}

void empty_layer(int upper_fd) {
    int dir = ::openat(upper_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return;
    try {
        fs::remove_contents(dir, "sandbox layer");
    } catch (const Error&) {
        // Whatever is left is removed by the front end or the next sweep.
    }
    ::close(dir);
}

// What a volatile overlay mount leaves in its work dir (mode 0, owned by the sandbox's root):
// work/incompat/volatile/dirty. Removed from inside, where the sandbox's root may.
void remove_volatile_marker(int work_fd) {
    // Gone already when the front end took it (take_volatile_marker).
    if (::unlinkat(work_fd, "work/incompat/volatile/dirty", 0) != 0) return;
    (void)::unlinkat(work_fd, "work/incompat/volatile", AT_REMOVEDIR);
    (void)::unlinkat(work_fd, "work/incompat", AT_REMOVEDIR);
}

// A directory `name` under `at` (AT_FDCWD: a path), opened for *at calls only, never through a
// symbolic link: the sandbox's directories belong to the sandbox's root, and root's front end
// must not be led elsewhere by a link left in them.
static UniqueFd dir_at(int at, const char* name) {
    return UniqueFd(::openat(at, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

bool take_volatile_marker(const std::string& work) {
    // Made mode 0, the directories are opened up first when the caller is their owner (a user's
    // sandbox); root needs no permission.
    const bool owner = ::geteuid() != 0;
    auto step = [owner](int at, const char* name) {
        if (owner) (void)::fchmodat(at, name, 0700, AT_SYMLINK_NOFOLLOW);
        return dir_at(at, name);
    };
    UniqueFd top = dir_at(AT_FDCWD, work.c_str());
    UniqueFd base = top ? step(top.get(), "work") : UniqueFd();
    UniqueFd incompat = base ? step(base.get(), "incompat") : UniqueFd();
    UniqueFd dir = incompat ? step(incompat.get(), "volatile") : UniqueFd();
    // "dirty" comes last: once it is there, overlayfs is done with the marker's directories.
    if (!dir || ::unlinkat(dir.get(), "dirty", 0) != 0) return false;
    return ::unlinkat(incompat.get(), "volatile", AT_REMOVEDIR) == 0 && ::unlinkat(base.get(), "incompat", AT_REMOVEDIR) == 0;
}

// The usual case after a run: the init emptied upper/, and the front end or the init took the
// volatile mount's marker from work/work, so the known skeleton goes with a few rmdir calls and
// no directory listing. (A directory of an older hutch, with its lock file and mount point, or
// one a killed init left, fails an rmdir and goes the long way.)
static bool remove_empty_skeleton(const std::string& dir) {
    UniqueFd d = dir_at(AT_FDCWD, dir.c_str());
    if (!d) return false;
    auto gone = [](int at, const char* name) { return ::unlinkat(at, name, AT_REMOVEDIR) == 0 || errno == ENOENT; };
    if (!gone(d.get(), "upper")) return false;
    UniqueFd work = dir_at(d.get(), "work");
    if (work ? !gone(work.get(), "work") : errno != ENOENT) return false;
    return gone(d.get(), "work") && ::rmdir(dir.c_str()) == 0;
}

void drop_unused_layers(const Scratch& s) {
    if (s.writable || !s.layers_made) return;
    UniqueFd d = dir_at(AT_FDCWD, s.dir.c_str());
    if (!d) return;
    (void)::unlinkat(d.get(), "upper", AT_REMOVEDIR);
    (void)::unlinkat(d.get(), "work", AT_REMOVEDIR);
}

void remove_scratch(const std::string& dir, const IdMap& map) {
    if (remove_empty_skeleton(dir)) return;
    try {
        fs::remove_tree(dir);
        return;
    } catch (const Error& e) {
        if (::geteuid() == 0 || (e.error_number() != EACCES && e.error_number() != EPERM)) throw;
    }
    // Files owned by subordinate ids: only the sandbox's root can remove them.
    int rc = idmap::run_as_sandbox_root(map, [&] {
        try {
            UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (fd) fs::remove_contents(fd.get(), dir);
            return 0;
        } catch (const Error&) {
            return 1;
        }
    });
    if (rc != 0) fail("cannot remove sandbox files", dir, "remove them with 'podman unshare rm -rf' or as root");
    fs::remove_tree(dir);
}

void sweep(const Paths& paths, const IdMap& map) {
    FileLock guard = FileLock::try_acquire(sweep_lock_path(paths), FileLock::Mode::Exclusive);
    if (!guard) return;
    DIR* d = ::opendir(paths.sandboxes_storage().c_str());
    if (!d) return;
    // Each stale directory stays locked until it is gone: a sandbox of that name made meanwhile
    // would otherwise be taken for it.
    std::vector<std::pair<std::string, FileLock>> stale;
    // Spares a crash left half made (they are made under the shared lock), and spares of other
    // owners (another id range of root's, a user under another group) unused for an hour.
    std::vector<std::string> unwanted;
    const auto [owner_uid, owner_gid] = map.root_owner();
    const std::string own_spare = spare_name(owner_uid, owner_gid);
    const time_t hour_ago = ::time(nullptr) - 3600;
    while (struct dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (e->d_type != DT_DIR) continue;
        std::string dir = dir_of(paths, name);
        struct stat st;
        if (name.rfind(kSpareInProgress, 0) == 0 ||
            (name.rfind(".spare-", 0) == 0 && name != own_spare && ::lstat(dir.c_str(), &st) == 0 && st.st_mtime < hour_ago))
            unwanted.push_back(dir);
        if (name[0] == '.') continue;
        if (fs::exists(dir + "/config.json")) continue;  // persistent, and so for good: no lock needed
        try {
            FileLock l = FileLock::try_acquire_directory(dir);
            // A config makes it persistent, removed only by 'hutch rm'. Looked for under the
            // lock: `create` writes it while it holds the lock.
            if (l && !fs::exists(dir + "/config.json")) stale.emplace_back(dir, std::move(l));
        } catch (const Error&) {
            // Gone since readdir: its own run or 'hutch rm' removed it. Sweeping is best effort,
            // and must never fail the run that does it.
        }
    }
    ::closedir(d);
    for (const auto& dir : unwanted) {
        try {
            remove_scratch(dir, map);
        } catch (const Error&) {
        }
    }
    for (const auto& [dir, lock] : stale) {
        try {
            cgroup::remove_stale(cgroup::name_for(paths, dir.substr(dir.rfind('/') + 1)));
            remove_scratch(dir, map);
        } catch (const Error&) {
            // Left for a later sweep (files the user cannot remove, say): not this run's problem.
        }
    }
}

void save_config(const Paths& paths, const SandboxSpec& spec) {
    fs::write_file_atomic(config_path(paths, spec.name), spec_to_json(spec, 2) + "\n");
}

SandboxSpec load_config(const Paths& paths, const std::string& name) {
    validate_name(name);
    std::string path = config_path(paths, name);
    std::string text;
    try {
        text = fs::read_file(path);
    } catch (const Error& e) {
        if (e.error_number() == ENOENT) fail("no such sandbox", name, "see 'hutch ps'");
        throw;
    }
    try {
        return spec_from_json(text, path);
    } catch (const Error& e) {
        // stop and rm do without it (see launcher.cpp).
        throw Error(e.what_failed(), e.where(), 0, "'hutch rm -f " + name + "' removes the sandbox and its layer");
    }
}

// The program sealed as seccomp caches it; no instructions: unconfined.
static std::string filter_path(const Paths& paths, const std::string& name) { return dir_of(paths, name) + "/seccomp"; }

void save_filter(const Paths& paths, const std::string& name, const SavedFilter& filter) {
    fs::write_file_atomic(filter_path(paths, name), seccomp::seal(filter.unconfined ? "" : filter.program), 0600);
}

std::optional<SavedFilter> load_filter(const Paths& paths, const std::string& name) {
    const std::string path = filter_path(paths, name);
    std::string data;
    try {
        data = fs::read_file(path);
    } catch (const Error& e) {
        if (e.error_number() == ENOENT) return std::nullopt;
        throw;
    }
    std::optional<std::string> program = seccomp::unseal(data, true);
    if (!program) fail("the sandbox's seccomp program is damaged", path, "remove the sandbox and create it again");
    return SavedFilter{program->empty(), std::move(*program)};
}

bool exists(const Paths& paths, const std::string& name) {
    validate_name(name);
    return fs::exists(config_path(paths, name));
}

std::vector<std::string> list(const Paths& paths) {
    std::vector<std::string> out;
    DIR* d = ::opendir(paths.sandboxes_storage().c_str());
    if (!d) return out;
    while (struct dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name[0] != '.' && fs::exists(config_path(paths, name))) out.push_back(name);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

unsigned long long process_start_time(pid_t pid) {
    std::string stat;
    try {
        stat = fs::read_file("/proc/" + std::to_string(pid) + "/stat");
    } catch (const Error&) {
        return 0;
    }
    // Fields after the command name (which may contain spaces) start after the last ')': the
    // state is field 3, the start time field 22.
    size_t pos = stat.rfind(')');
    if (pos == std::string::npos) return 0;
    const char* p = stat.c_str() + pos + 1;
    for (int field = 3; field <= 22; ++field) {
        while (*p == ' ') ++p;
        if (!*p) return 0;
        // A zombie has exited: as a sandbox's init it is dead, waiting only for a parent to reap it.
        if (field == 3 && (*p == 'Z' || *p == 'X')) return 0;
        if (field == 22) return std::strtoull(p, nullptr, 10);
        while (*p && *p != ' ') ++p;
    }
    return 0;
}

void save_live(const Paths& paths, const std::string& name, const Live& live) {
    nlohmann::json j{{"pid", live.pid}, {"start_time", live.start_time}, {"cgroup", live.cgroup}};
    const std::string text = j.dump() + "\n";
    fs::write_file_atomic(kept_live_path(paths, name), text);
    fs::write_file_atomic(live_path(paths, name), text);
}

namespace {

std::optional<Live> parse_live(const std::string& path) {
    try {
        auto j = nlohmann::json::parse(fs::read_file(path));
        Live l{j.at("pid").get<pid_t>(), j.at("start_time").get<unsigned long long>(), j.value("cgroup", "")};
        if (l.pid <= 0 || l.start_time == 0) return std::nullopt;
        return l;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// The init recorded for sandbox `name`, not yet checked against the running processes: the
// runtime record, or the kept copy when the runtime directory has lost it.
std::optional<Live> read_live(const Paths& paths, const std::string& name) {
    if (std::optional<Live> l = parse_live(live_path(paths, name))) return l;
    return parse_live(kept_live_path(paths, name));
}

}  // namespace

std::optional<Live> load_live(const Paths& paths, const std::string& name) {
    // The init's pid and start time are the truth: a pid alone could have been reused.
    std::optional<Live> l = read_live(paths, name);
    if (!l || process_start_time(l->pid) != l->start_time) return std::nullopt;
    return l;
}

UniqueFd pin(const Live& live) {
    UniqueFd pidfd(pidfd_open(live.pid));
    // The start time is checked after opening: the pidfd then pins the process it names.
    if (pidfd && process_start_time(live.pid) != live.start_time) pidfd.reset();
    return pidfd;
}

std::optional<Running> open_running(const Paths& paths, const std::string& name) {
    std::optional<Live> l = read_live(paths, name);
    if (!l) return std::nullopt;
    UniqueFd pidfd = pin(*l);
    if (!pidfd) return std::nullopt;
    return Running{std::move(*l), std::move(pidfd)};
}

void remove_live(const Paths& paths, const std::string& name) {
    ::unlink(live_path(paths, name).c_str());
    ::unlink(kept_live_path(paths, name).c_str());
}

std::string spec_to_json(const SandboxSpec& spec, int indent) { return nlohmann::json(spec).dump(indent); }

SandboxSpec spec_from_json(const std::string& text, const std::string& source) {
    try {
        return nlohmann::json::parse(text).get<SandboxSpec>();
    } catch (const nlohmann::json::exception& e) {
        fail("corrupt sandbox config", source + ": " + e.what());
    }
}

}  // namespace state
}  // namespace hutch
