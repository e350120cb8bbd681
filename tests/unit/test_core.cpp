// Unit tests of the plain-data pieces: errors, durations, sizes, users, names, the spec's JSON form.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "hutch/core/duration.hpp"
#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/lock.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/sandbox/state.hpp"
#include "hutch/sandbox/user.hpp"
#include "helpers.hpp"

using namespace hutch;

TEST_CASE("errors read 'what: where: errno (hint)'") {
    Error e("cannot open", "/x/y", ENOENT, "create it first");
    CHECK(std::string(e.what()) == "cannot open: /x/y: No such file or directory (create it first)");
    CHECK(e.exit_code() == 125);
    CHECK(std::string(Error("bad flag").what()) == "bad flag");
}

TEST_CASE("durations and sizes") {
    CHECK(parse_duration("30", "--timeout") == doctest::Approx(30));
    CHECK(parse_duration("250ms", "--timeout") == doctest::Approx(0.25));
    CHECK(parse_duration("2m", "--timeout") == doctest::Approx(120));
    CHECK(parse_duration("1.5h", "--timeout") == doctest::Approx(5400));
    CHECK_THROWS_AS(parse_duration("soon", "--timeout"), Error);
    CHECK_THROWS_AS(parse_duration("5parsecs", "--timeout"), Error);
    CHECK_THROWS_AS(parse_duration("-1s", "--timeout"), Error);
    CHECK(parse_size("64m", "--memory") == 64ULL << 20);
    CHECK(parse_size("1g", "--memory") == 1ULL << 30);
    CHECK(parse_size("512", "--memory") == 512);
    CHECK_THROWS_AS(parse_size("12q", "--memory"), Error);
}

TEST_CASE("users resolve against the sandbox's own passwd and group") {
    const std::string passwd =
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1001:App:/home/app:/bin/sh\n"
        "# comment\n"
        "broken line\n";
    const std::string group = "root:x:0:\nstaff:x:50:app,other\napp:x:1001:\nwheel:x:10:other\n";
    auto root = user::resolve("", passwd, group);
    CHECK(root.uid == 0);
    CHECK(root.home == "/root");
    auto app = user::resolve("app", passwd, group);
    CHECK(app.uid == 1000);
    CHECK(app.gid == 1001);
    CHECK(app.home == "/home/app");
    REQUIRE(app.groups.size() == 1);
    CHECK(app.groups[0] == 50);
    auto numeric = user::resolve("1000:50", passwd, group);
    CHECK(numeric.uid == 1000);
    CHECK(numeric.gid == 50);
    CHECK(numeric.groups.empty());
    auto by_name = user::resolve("app:wheel", passwd, group);
    CHECK(by_name.gid == 10);
    auto unknown_uid = user::resolve("4242", passwd, group);
    CHECK(unknown_uid.uid == 4242);
    CHECK(unknown_uid.gid == 0);  // as docker: group 0 for a uid without a passwd entry
    CHECK(unknown_uid.home == "/");
    CHECK_THROWS_WITH_AS(user::resolve("nosuchuser", passwd, group), doctest::Contains("unknown user"), Error);
    CHECK_THROWS_WITH_AS(user::resolve("app:nosuchgroup", passwd, group), doctest::Contains("unknown group"), Error);
    CHECK_THROWS_AS(user::resolve("99999999999", passwd, group), Error);
}

TEST_CASE("sandbox names follow docker's rules") {
    CHECK_NOTHROW(state::validate_name("agent-1.work_2"));
    CHECK_THROWS_AS(state::validate_name(""), Error);
    CHECK_THROWS_AS(state::validate_name("-x"), Error);
    CHECK_THROWS_AS(state::validate_name("a/b"), Error);
    CHECK_THROWS_AS(state::validate_name("../x"), Error);
    CHECK_THROWS_AS(state::validate_name(std::string(129, 'a')), Error);
    CHECK(state::random_name().size() == 12);
    CHECK(state::random_name() != state::random_name());
}

TEST_CASE("the spec survives its JSON form, and corrupt JSON is an error") {
    SandboxSpec s;
    s.name = "box";
    s.rootfs = "/r";
    s.binds.push_back({"/a", "/b", true});
    s.idmap.uids.push_back({0, 1000, 1});
    s.process.argv = {"sh", "-c", "echo hi"};
    s.process.rlimits.push_back({7, 100, 200});
    SandboxSpec back = state::spec_from_json(state::spec_to_json(s), "test");
    CHECK(back.name == "box");
    CHECK(back.binds.at(0).read_only);
    CHECK(back.idmap.uids.at(0).outside == 1000);
    CHECK(back.process.argv.at(2) == "echo hi");
    CHECK(back.process.rlimits.at(0).hard == 200);
    CHECK_THROWS_WITH_AS(state::spec_from_json("{not json", "/x/config.json"),
                         doctest::Contains("/x/config.json"), Error);
}

TEST_CASE("a persistent sandbox's saved seccomp program comes back as saved, and damage is an error") {
    char tmpl[] = "/tmp/hutch-unit-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    Paths paths = Paths::resolve(tmpl);
    REQUIRE(fs::make_dirs(paths.sandboxes_storage() + "/box"));
    CHECK_FALSE(state::load_filter(paths, "box"));  // none saved: an older hutch's sandbox
    std::string program("\x06\0\0\0\0\0\xff\x7f", 8);  // one instruction: allow
    state::save_filter(paths, "box", {false, program});
    auto back = state::load_filter(paths, "box");
    REQUIRE(back);
    CHECK_FALSE(back->unconfined);
    CHECK(back->program == program);
    state::save_filter(paths, "box", {true, ""});
    REQUIRE(state::load_filter(paths, "box"));
    CHECK(state::load_filter(paths, "box")->unconfined);
    // One byte changed after the digest line: refused, never installed as something else.
    state::save_filter(paths, "box", {false, program});
    std::string file = paths.sandboxes_storage() + "/box/seccomp";
    std::string data = fs::read_file(file);
    data.back() ^= 1;
    fs::write_file_atomic(file, data);
    CHECK(test::error_of([&] { state::load_filter(paths, "box"); }).find("seccomp program is damaged") !=
          std::string::npos);
    fs::remove_tree(tmpl);
}

TEST_CASE("a process's start time is read past a command name with spaces and parentheses") {
    unsigned long long mine = state::process_start_time(::getpid());
    REQUIRE(mine > 0);
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::prctl(PR_SET_NAME, ") 9 8 7 (", 0, 0, 0);
        (void)!::write(ready[1], "x", 1);
        ::pause();
        ::_exit(0);
    }
    char c;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    unsigned long long theirs = state::process_start_time(child);
    double uptime = std::stod(fs::read_file("/proc/uptime"));
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ::close(ready[0]);
    ::close(ready[1]);
    // Clock ticks since boot: not before this test's process, not after now.
    CHECK(theirs >= mine);
    CHECK(static_cast<double>(theirs) <= uptime * static_cast<double>(::sysconf(_SC_CLK_TCK)) + 1);
    CHECK(state::process_start_time(child) == 0);  // gone
}

TEST_CASE("remove_tree removes what a sandbox could leave, without following symlinks") {
    char tmpl[] = "/tmp/hutch-unit-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    std::string dir = tmpl;
    std::string outside = dir + "-outside";
    REQUIRE(::mkdir(outside.c_str(), 0700) == 0);
    fs::write_file_atomic(outside + "/keep", "x");
    REQUIRE(fs::make_dirs(dir + "/a/b/c"));
    fs::write_file_atomic(dir + "/a/b/c/f", "data");
    REQUIRE(::symlink(outside.c_str(), (dir + "/a/link").c_str()) == 0);
    REQUIRE(::chmod((dir + "/a/b").c_str(), 0) == 0);  // a directory the sandbox locked
    fs::remove_tree(dir);
    CHECK_FALSE(fs::exists(dir));
    CHECK(fs::exists(outside + "/keep"));
    fs::remove_tree(outside);
    CHECK_NOTHROW(fs::remove_tree(dir));  // missing is fine
}

TEST_CASE("file locks exclude each other and die with their holder") {
    char tmpl[] = "/tmp/hutch-lock-XXXXXX";
    int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    {
        FileLock a = FileLock::acquire(tmpl);
        CHECK(static_cast<bool>(a));
        FileLock b = FileLock::try_acquire(tmpl);
        CHECK_FALSE(static_cast<bool>(b));
    }
    FileLock c = FileLock::try_acquire(tmpl);
    CHECK(static_cast<bool>(c));
    ::unlink(tmpl);
}

// The marker a volatile overlay mount leaves: work/work/incompat/volatile/dirty, all mode 0.
TEST_CASE("the front end takes a volatile mount's marker only once it is complete") {
    char tmpl[] = "/tmp/hutch-marker-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string work = tmpl;
    const std::string base = work + "/work", dir = base + "/incompat/volatile";
    fs::make_dirs(dir, 0700);
    for (const std::string& d : {dir, base + "/incompat", base}) REQUIRE(::chmod(d.c_str(), 0) == 0);

    // Without "dirty" (made last), overlayfs may still be making it: nothing is removed.
    CHECK_FALSE(state::take_volatile_marker(work));
    struct stat st;
    CHECK(::stat(dir.c_str(), &st) == 0);

    REQUIRE(::chmod(dir.c_str(), 0700) == 0);
    int fd = ::open((dir + "/dirty").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    ::close(fd);
    REQUIRE(::chmod(dir.c_str(), 0) == 0);
    CHECK(state::take_volatile_marker(work));
    CHECK(::stat((base + "/incompat").c_str(), &st) != 0);
    CHECK(::stat(base.c_str(), &st) == 0);  // overlayfs' own work dir stays, for remove_scratch
    // A link in the way is not followed: what it points at stays.
    const std::string decoy = work + "/decoy";
    fs::make_dirs(decoy + "/volatile", 0700);
    fd = ::open((decoy + "/volatile/dirty").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
    ::chmod(base.c_str(), 0700);
    REQUIRE(::symlink(decoy.c_str(), (base + "/incompat").c_str()) == 0);
    CHECK_FALSE(state::take_volatile_marker(work));
    CHECK(::stat((decoy + "/volatile/dirty").c_str(), &st) == 0);
    fs::remove_tree(work);
}

// Runs of several agents at once: each run's sweep meets directories that other runs are making
// and removing.
TEST_CASE("a sweep removes crashed runs' directories, keeps persistent ones, and never fails its run") {
    char tmpl[] = "/tmp/hutch-sweep-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    Paths paths = Paths::resolve(tmpl);
    paths.ensure(::getegid());
    const std::string sandboxes = paths.sandboxes_storage();
    REQUIRE(fs::make_dirs(sandboxes + "/crashed/upper"));
    REQUIRE(fs::make_dirs(sandboxes + "/persistent"));
    fs::write_file_atomic(sandboxes + "/persistent/config.json", "{}");
    REQUIRE(fs::make_dirs(sandboxes + "/running"));
    FileLock running = FileLock::acquire_directory(sandboxes + "/running");
    // One it cannot open (as a user: mode 0), as it cannot one that vanished after readdir.
    REQUIRE(fs::make_dirs(sandboxes + "/unopenable"));
    REQUIRE(::chmod((sandboxes + "/unopenable").c_str(), 0) == 0);

    CHECK_NOTHROW(state::sweep(paths, IdMap{}));
    CHECK_FALSE(fs::exists(sandboxes + "/crashed"));
    CHECK(fs::exists(sandboxes + "/persistent/config.json"));
    CHECK(fs::exists(sandboxes + "/running"));
    running.release();
    fs::remove_tree(tmpl);
}

TEST_CASE("remove_tree removes a tree deeper than the fds a process may hold") {
    char tmpl[] = "/tmp/hutch-deep-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    const std::string dir = tmpl;
    {
        UniqueFd cur(::open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        for (int i = 0; i < 3000; ++i) {
            REQUIRE(::mkdirat(cur.get(), "d", 0700) == 0);
            if (i % 500 == 0) REQUIRE(::close(::openat(cur.get(), "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) == 0);
            cur.reset(::openat(cur.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            REQUIRE(cur);
        }
    }
    // In a child with few fds allowed: one open directory per level would run out at once.
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        struct rlimit few {64, 64};
        ::setrlimit(RLIMIT_NOFILE, &few);
        try {
            fs::remove_tree(dir);
        } catch (...) {
            ::_exit(1);
        }
        ::_exit(fs::exists(dir) ? 2 : 0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    if (fs::exists(dir)) ::system(("rm -rf " + dir).c_str());
}
