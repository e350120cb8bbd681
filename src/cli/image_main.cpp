// hutch-image: the commands that move image data (pull, load, save, login, logout). `hutch`
// execs this binary for those words with its own argv, so the global options are the same.
// It is separate because libcurl and libarchive cost start-up time `hutch run` must not pay.
#include <CLI/CLI.hpp>
#include <curl/curl.h>
#include <signal.h>
#include <sys/utsname.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>

#include "hutch/core/error.hpp"
#include "hutch/core/log.hpp"
#include "hutch/core/paths.hpp"
#include "hutch/image/reference.hpp"
#include "hutch/image/store.hpp"
#include "hutch/image/transfer.hpp"
#include "hutch/sandbox/idmap.hpp"

namespace {

using hutch::image::PullOptions;

struct Globals {
    std::string root;
    std::string log_level = "warn";
};

hutch::image::Store open_store(const Globals& g) {
    hutch::Paths paths = hutch::Paths::resolve(g.root);
    paths.ensure(hutch::idmap::store_group());
    return hutch::image::Store(paths);
}

// How docker prints a name: "busybox:latest" rather than "docker.io/library/busybox:latest".
std::string familiar(const std::string& name) {
    try {
        return hutch::image::Reference::parse(name).familiar();
    } catch (const hutch::Error&) {
        return name;
    }
}

// The platform images are pulled for unless --platform says otherwise: the machine's own, since
// a sandbox runs them natively (linux/amd64 when the architecture has no OCI name we know).
std::string host_platform() {
    struct utsname u{};
    if (::uname(&u) != 0) return "linux/amd64";
    std::string m = u.machine;
    if (m == "x86_64") return "linux/amd64";
    if (m == "aarch64") return "linux/arm64";
    if (m == "armv7l") return "linux/arm/v7";
    if (m == "armv6l") return "linux/arm/v6";
    if (m == "ppc64le" || m == "s390x" || m == "riscv64") return "linux/" + m;
    if (m == "i686" || m == "i386") return "linux/386";
    return "linux/amd64";
}

// Reads a line from the terminal with echo off (for a password prompt).
std::string read_secret(const char* prompt) {
    std::fprintf(stderr, "%s", prompt);
    std::fflush(stderr);
    struct termios old{};
    bool tty = ::tcgetattr(0, &old) == 0;
    if (tty) {
        struct termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(0, TCSAFLUSH, &quiet);
    }
    std::string line;
    std::getline(std::cin, line);
    if (tty) {
        ::tcsetattr(0, TCSAFLUSH, &old);
        std::fprintf(stderr, "\n");
    }
    return line;
}

std::string password_from_stdin() {
    std::string all{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    while (!all.empty() && (all.back() == '\n' || all.back() == '\r')) all.pop_back();
    return all;
}

int do_pull(const Globals& g, const std::string& source, PullOptions& opts, const std::vector<std::string>& names) {
    hutch::image::Store store = open_store(g);
    hutch::image::ImageRecord rec = hutch::image::pull(store, hutch::idmap::for_caller(), source, opts, names);
    // Quiet: only what was pulled, for scripts (docker prints the reference too).
    if (opts.quiet) std::printf("%s\n", rec.names.empty() ? rec.id.c_str() : rec.names.front().c_str());
    return 0;
}

int do_load(const Globals& g, const std::string& file, PullOptions& opts) {
    hutch::image::Store store = open_store(g);
    auto records = hutch::image::load(store, hutch::idmap::for_caller(), file, opts);
    for (const auto& r : records) {
        if (r.names.empty()) std::printf("Loaded image ID: %s\n", r.id.c_str());
        for (const auto& n : r.names) std::printf("Loaded image: %s\n", familiar(n).c_str());
    }
    return 0;
}

int do_login(const std::string& host, std::string user, std::string password, bool password_stdin,
             const PullOptions& opts) {
    if (password_stdin) {
        if (!password.empty()) hutch::fail("--password and --password-stdin are exclusive", "", "use one of them");
        if (user.empty()) hutch::fail("--password-stdin needs --username", "", "pass -u USER");
        password = password_from_stdin();
    }
    if (user.empty()) {
        if (!::isatty(0)) hutch::fail("login needs a user name", host, "pass -u USER");
        std::fprintf(stderr, "Username: ");
        std::getline(std::cin, user);
    }
    if (password.empty()) {
        if (!::isatty(0)) hutch::fail("login needs a password", host, "pass --password-stdin or -p PASSWORD");
        password = read_secret("Password: ");
    }
    hutch::image::login(host, user, password, opts);
    std::printf("Login Succeeded\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // A closed pipe must turn into an error return, not a silent death halfway through a store write.
    ::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"hutch image transfer: pull, load, save, login, logout", "hutch"};
    app.require_subcommand(1);
    Globals g;
    app.add_option("--root", g.root, "Keep state and storage under this directory");
    app.add_option("--log-level", g.log_level, "debug, info, warn or error")
        ->check(CLI::IsMember({"debug", "info", "warn", "error"}));

    PullOptions opts;
    opts.platform = host_platform();
    std::string source;
    auto* pull = app.add_subcommand("pull", "Pull an image: [docker://]REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], "
                                            "docker-archive:FILE[:REF]");
    pull->add_option("--platform", opts.platform, "os/arch[/variant] to pick from a multi-platform image")
        ->default_str(opts.platform);
    pull->add_flag("-q,--quiet", opts.quiet, "No progress; print the image's name");
    pull->add_option("--insecure-registry", opts.insecure_registries, "Talk plain HTTP to this registry (repeatable)")
        ->allow_extra_args(false)
        ->take_all();
    pull->add_option("SOURCE", source, "What to pull")->required();
    std::vector<std::string> extra_names;
    pull->add_option("--tag", extra_names, "Also name the image NAME (repeatable)")->allow_extra_args(false)->take_all();

    std::string load_file;
    auto* load = app.add_subcommand("load", "Load images from a docker save (or OCI) archive");
    load->add_option("-i,--input", load_file, "The archive")->required();
    load->add_flag("-q,--quiet", opts.quiet, "No progress");

    std::string save_file;
    std::vector<std::string> save_refs;
    auto* save = app.add_subcommand("save", "Write images to a docker save archive");
    save->add_option("-o,--output", save_file, "The archive to write")->required();
    save->add_option("IMAGE", save_refs, "Images")->required();

    std::string login_host = "docker.io", login_user, login_password;
    bool password_stdin = false;
    auto* login = app.add_subcommand("login", "Log in to a registry (stores the credentials in the docker config)");
    login->add_option("-u,--username", login_user, "User name");
    login->add_option("-p,--password", login_password, "Password");
    login->add_flag("--password-stdin", password_stdin, "Read the password from stdin");
    login->add_option("HOST", login_host, "Registry, e.g. localhost:5000 (default: docker.io)");

    std::string logout_host = "docker.io";
    auto* logout = app.add_subcommand("logout", "Remove a registry's credentials from the docker config");
    logout->add_option("HOST", logout_host, "Registry (default: docker.io)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --version arrive as "errors" with exit code 0: CLI11 prints them.
        if (e.get_exit_code() == 0) return app.exit(e);
        std::fprintf(stderr, "hutch: %s (see 'hutch --help')\n", e.what());
        return hutch::kExitHutchError;
    }

    try {
        hutch::log::set_level(g.log_level);
        // Before any thread exists: libcurl's global state is not thread-safe to set up.
        curl_global_init(CURL_GLOBAL_DEFAULT);
        if (pull->parsed()) return do_pull(g, source, opts, extra_names);
        if (load->parsed()) return do_load(g, load_file, opts);
        if (save->parsed()) {
            hutch::image::Store store = open_store(g);
            hutch::image::save(store, save_refs, save_file);
            return 0;
        }
        if (login->parsed()) return do_login(login_host, login_user, login_password, password_stdin, opts);
        if (logout->parsed()) {
            hutch::image::logout(logout_host, opts);
            return 0;
        }
    } catch (const std::exception& e) {
        return hutch::report_error(e);
    }
    return hutch::kExitHutchError;
}
