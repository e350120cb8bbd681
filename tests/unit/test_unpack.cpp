// Layer unpacking: tar streams are built here with libarchive's writer, unpacked with
// unpack_layer, and the results checked on disk. Hostile streams must be refused with an error
// naming the entry, with nothing written outside the layer directory.
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/image/store.hpp"
#include "hutch/image/unpack.hpp"
#include "hutch/sandbox/idmap.hpp"

using namespace hutch;
using namespace hutch::image;

namespace {

// ---- building tar streams ---------------------------------------------------------------------

struct Entry {
    std::string path;
    unsigned type = AE_IFREG;
    mode_t perm = 0644;
    std::string data;
    std::string symlink, hardlink;
    int64_t uid = 0, gid = 0;
    time_t mtime = 1600000000;
    long mtime_nsec = 0;
    std::vector<std::pair<std::string, std::string>> xattrs;
    unsigned rdev_major = 0, rdev_minor = 0;
    std::vector<std::pair<int64_t, int64_t>> sparse;  // offset, length of the data regions
};

Entry file(const std::string& path, const std::string& data, mode_t perm = 0644) {
    Entry e;
    e.path = path;
    e.data = data;
    e.perm = perm;
    return e;
}
Entry dir(const std::string& path, mode_t perm = 0755) {
    Entry e;
    e.path = path;
    e.type = AE_IFDIR;
    e.perm = perm;
    return e;
}
Entry slink(const std::string& path, const std::string& target) {
    Entry e;
    e.path = path;
    e.type = AE_IFLNK;
    e.perm = 0777;
    e.symlink = target;
    return e;
}
Entry hardlink(const std::string& path, const std::string& target) {
    Entry e;
    e.path = path;
    e.hardlink = target;
    return e;
}
Entry special(const std::string& path, unsigned type, unsigned major = 0, unsigned minor = 0) {
    Entry e;
    e.path = path;
    e.type = type;
    e.rdev_major = major;
    e.rdev_minor = minor;
    return e;
}

la_ssize_t append_to_string(struct archive*, void* out, const void* buf, size_t n) {
    static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
}

// A pax tar, padded to libarchive's default 10240-byte blocks (so the stream has trailing zeros
// after the end-of-archive marker, as real layers often do).
std::string make_tar(const std::vector<Entry>& entries) {
    std::string out;
    struct archive* w = archive_write_new();
    REQUIRE(archive_write_set_format_pax_restricted(w) == ARCHIVE_OK);
    REQUIRE(archive_write_open(w, &out, nullptr, append_to_string, nullptr) == ARCHIVE_OK);
    for (const auto& x : entries) {
        struct archive_entry* e = archive_entry_new();
        archive_entry_copy_pathname(e, x.path.c_str());
        archive_entry_set_filetype(e, x.type);
        archive_entry_set_perm(e, x.perm);
        archive_entry_set_uid(e, x.uid);
        archive_entry_set_gid(e, x.gid);
        archive_entry_set_mtime(e, x.mtime, x.mtime_nsec);
        if (!x.symlink.empty()) archive_entry_copy_symlink(e, x.symlink.c_str());
        if (!x.hardlink.empty()) archive_entry_copy_hardlink(e, x.hardlink.c_str());
        for (const auto& [k, v] : x.xattrs) archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
        archive_entry_set_rdevmajor(e, x.rdev_major);
        archive_entry_set_rdevminor(e, x.rdev_minor);
        bool has_data = x.type == AE_IFREG && x.hardlink.empty();
        archive_entry_set_size(e, has_data ? static_cast<int64_t>(x.data.size()) : 0);  // before the sparse map: it clears it
        for (const auto& [off, len] : x.sparse) archive_entry_sparse_add_entry(e, off, len);
        REQUIRE_MESSAGE(archive_write_header(w, e) >= ARCHIVE_WARN, archive_error_string(w));
        if (has_data && !x.data.empty())
            REQUIRE(archive_write_data(w, x.data.data(), x.data.size()) == static_cast<la_ssize_t>(x.data.size()));
        archive_entry_free(e);
    }
    REQUIRE(archive_write_close(w) == ARCHIVE_OK);
    archive_write_free(w);
    return out;
}

enum class Compression { None, Gzip, Zstd };

// Compresses bytes with libarchive's "raw" writer (one entry, data only, through the filter).
std::string compress(const std::string& bytes, Compression c) {
    if (c == Compression::None) return bytes;
    std::string out;
    struct archive* w = archive_write_new();
    REQUIRE((c == Compression::Gzip ? archive_write_add_filter_gzip(w) : archive_write_add_filter_zstd(w)) == ARCHIVE_OK);
    REQUIRE(archive_write_set_format_raw(w) == ARCHIVE_OK);
    REQUIRE(archive_write_set_bytes_in_last_block(w, 1) == ARCHIVE_OK);  // no zeros after the frame
    REQUIRE(archive_write_open(w, &out, nullptr, append_to_string, nullptr) == ARCHIVE_OK);
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, "layer.tar");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_size(e, static_cast<int64_t>(bytes.size()));
    REQUIRE(archive_write_header(w, e) == ARCHIVE_OK);
    REQUIRE(archive_write_data(w, bytes.data(), bytes.size()) == static_cast<la_ssize_t>(bytes.size()));
    archive_entry_free(e);
    REQUIRE(archive_write_close(w) == ARCHIVE_OK);
    archive_write_free(w);
    return out;
}

// OpenSSL's one-shot digest, independent of hutch's digest code.
std::string independent_sha256(const std::string& data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    REQUIRE(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1);
    std::string out = "sha256:";
    char hex[3];
    for (unsigned i = 0; i < len; ++i) {
        std::snprintf(hex, sizeof hex, "%02x", md[i]);
        out += hex;
    }
    return out;
}

// ---- the scratch area -------------------------------------------------------------------------

// <tmp>/layer (the destination), <tmp>/outside (a sentinel that must stay empty), <tmp>/victim
// (a file hardlinks must not reach) and <tmp>/blob. All searchable, so a user namespace child
// mapped to another uid can use them.
struct Scratch {
    std::string dir, layer, outside, victim, blob;

    Scratch() {
        char tmpl[] = "/tmp/hutch-unpack-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir = tmpl;
        ::chmod(dir.c_str(), 0755);
        layer = dir + "/layer";
        outside = dir + "/outside";
        victim = dir + "/victim";
        blob = dir + "/blob";
        REQUIRE(::mkdir(layer.c_str(), 0755) == 0);
        REQUIRE(::mkdir(outside.c_str(), 0755) == 0);
        write(victim, "do not touch");
    }
    ~Scratch() {
        try {
            fs::remove_tree(dir);
        } catch (...) {
        }
    }

    static void write(const std::string& path, const std::string& bytes) {
        FILE* f = std::fopen(path.c_str(), "w");
        REQUIRE(f != nullptr);
        REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
        std::fclose(f);
        ::chmod(path.c_str(), 0644);
    }

    UnpackResult unpack(const std::string& blob_bytes, const UnpackLimits& limits = {}) {
        write(blob, blob_bytes);
        return unpack_layer(blob, layer, limits, static_cast<int64_t>(blob_bytes.size()));
    }

    // The error message of unpacking `entries` (gzip), or "" if it succeeded.
    std::string refused(const std::vector<Entry>& entries, const UnpackLimits& limits = {}) {
        try {
            unpack(compress(make_tar(entries), Compression::Gzip), limits);
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    }

    std::string at(const std::string& rel) const { return layer + "/" + rel; }

    // Nothing may have reached the sentinel directory, the victim file, or the layer's parent.
    void check_nothing_escaped() const {
        CHECK(names_in(outside).empty());
        auto siblings = names_in(dir);
        std::sort(siblings.begin(), siblings.end());
        CHECK(siblings == std::vector<std::string>{"blob", "layer", "outside", "victim"});
        struct stat st;
        REQUIRE(::stat(victim.c_str(), &st) == 0);
        CHECK(st.st_nlink == 1);
        CHECK(fs::read_file(victim) == "do not touch");
    }

    static std::vector<std::string> names_in(const std::string& path) {
        std::vector<std::string> out;
        DIR* d = ::opendir(path.c_str());
        if (!d) return out;
        while (struct dirent* e = ::readdir(d))
            if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
        ::closedir(d);
        return out;
    }
};

struct stat lstat_of(const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::lstat(path.c_str(), &st) == 0, path);
    return st;
}

std::string xattr_of(const std::string& path, const char* name) {
    char buf[256];
    ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof buf);
    return n < 0 ? std::string("<none>") : std::string(buf, static_cast<size_t>(n));
}

bool contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

// ---- shared inputs ----------------------------------------------------------------------------

std::vector<Entry> everyday_layer() {
    Entry root = dir("./", 0755);
    Entry etc = dir("etc/", 0755);
    etc.mtime = 1500000000;
    Entry passwd = file("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    passwd.mtime = 1600000000;
    passwd.mtime_nsec = 123456789;
    passwd.xattrs = {{"user.origin", "test"}};
    Entry su = file("bin/su", "#!/bin/sh\n", 04755);
    su.uid = 1234;
    su.gid = 5678;
    Entry shared = dir("shared/", 02775);
    shared.gid = 100;
    shared.xattrs = {{"user.colour", "blue"}};
    Entry tmp = dir("tmp/", 01777);
    Entry locked = dir("locked/", 0555);  // filled after its entry: our chmod must wait
    return {root,
            etc,
            passwd,
            dir("bin/"),
            su,
            slink("bin/sh", "busybox"),
            slink("etc/mtab", "/proc/self/mounts"),
            hardlink("bin/su-again", "bin/su"),
            special("run/fifo", AE_IFIFO),
            shared,
            tmp,
            locked,
            file("locked/inside", "x"),
            file("usr/lib/deep/implicit", "parents were never listed")};
}

}  // namespace

// ---- what a layer holds -----------------------------------------------------------------------

TEST_CASE("unpack: files, modes, owners, links, fifos, mtimes and xattrs arrive as in the tar") {
    Scratch s;
    const std::string tar = make_tar(everyday_layer());
    UnpackResult r = s.unpack(compress(tar, Compression::Gzip));

    CHECK(fs::read_file(s.at("etc/passwd")) == "root:x:0:0::/root:/bin/sh\n");
    struct stat passwd = lstat_of(s.at("etc/passwd"));
    CHECK((passwd.st_mode & 07777) == 0644);
    CHECK(passwd.st_mtim.tv_sec == 1600000000);
    CHECK(passwd.st_mtim.tv_nsec == 123456789);
    CHECK(xattr_of(s.at("etc/passwd"), "user.origin") == "test");
    // A directory's mtime survives the files created in it afterwards.
    CHECK(lstat_of(s.at("etc")).st_mtim.tv_sec == 1500000000);

    struct stat su = lstat_of(s.at("bin/su"));
    if (::geteuid() == 0) {
        CHECK(su.st_uid == 1234u);
        CHECK(su.st_gid == 5678u);
        CHECK((su.st_mode & 07777) == 04755);  // setuid kept although chown clears it
        CHECK((lstat_of(s.at("shared")).st_mode & 07777) == 02775);
    }
    CHECK((lstat_of(s.at("tmp")).st_mode & 07777) == 01777);
    CHECK((lstat_of(s.at("locked")).st_mode & 07777) == 0555);
    CHECK(fs::read_file(s.at("locked/inside")) == "x");
    CHECK(xattr_of(s.at("shared"), "user.colour") == "blue");

    CHECK(S_ISLNK(lstat_of(s.at("bin/sh")).st_mode));
    char target[64] = {};
    CHECK(::readlink(s.at("etc/mtab").c_str(), target, sizeof target - 1) > 0);
    CHECK(std::string(target) == "/proc/self/mounts");

    struct stat again = lstat_of(s.at("bin/su-again"));
    CHECK(again.st_ino == su.st_ino);
    CHECK(again.st_nlink == 2);
    CHECK(S_ISFIFO(lstat_of(s.at("run/fifo")).st_mode));
    CHECK(fs::read_file(s.at("usr/lib/deep/implicit")) == "parents were never listed");
    CHECK((lstat_of(s.at("usr/lib")).st_mode & 07777) == 0755);
    CHECK((lstat_of(s.layer).st_mode & 07777) == 0755);

    CHECK(r.diff_id == independent_sha256(tar));
    CHECK(r.bytes == tar.size());
    CHECK(r.skipped_devices.empty());
}

TEST_CASE("unpack: the diff_id is the sha256 of the uncompressed stream, whatever the compression") {
    const std::string tar = make_tar({file("a", "alpha"), dir("d/"), file("d/b", std::string(100000, 'b'))});
    REQUIRE(tar.size() % 10240 == 0);  // trailing padding after the end marker is part of it
    for (Compression c : {Compression::None, Compression::Gzip, Compression::Zstd}) {
        CAPTURE(static_cast<int>(c));
        Scratch s;
        UnpackResult r = s.unpack(compress(tar, c));
        CHECK(r.diff_id == independent_sha256(tar));
        CHECK(r.bytes == tar.size());
        CHECK(fs::read_file(s.at("d/b")).size() == 100000);
    }
}

TEST_CASE("unpack: bytes after the end-of-archive marker are part of the diff_id") {
    // Far more than libarchive reads ahead, so only an explicit drain hashes all of it.
    const std::string stream = make_tar({file("a", "alpha")}) + std::string(4 << 20, '\0');
    for (Compression c : {Compression::None, Compression::Gzip}) {
        CAPTURE(static_cast<int>(c));
        Scratch s;
        UnpackLimits limits;
        limits.max_ratio = 1e6;  // 4 MiB of zeros compress ~1000:1
        UnpackResult r = s.unpack(compress(stream, c), limits);
        CHECK(r.diff_id == independent_sha256(stream));
        CHECK(r.bytes == stream.size());
    }
}

TEST_CASE("unpack: a sparse file keeps its holes and its content") {
    Scratch s;
    const size_t size = 16 << 20;
    std::string content(size, '\0');
    std::fill(content.begin(), content.begin() + 4096, 'A');
    std::fill(content.begin() + (8 << 20), content.begin() + (8 << 20) + 4096, 'B');
    Entry sparse = file("sparse", content);
    sparse.sparse = {{0, 4096}, {8 << 20, 4096}};
    const std::string tar = make_tar({sparse});
    REQUIRE(tar.size() < (1 << 20));  // the holes are not in the stream
    UnpackResult r = s.unpack(compress(tar, Compression::Gzip));
    struct stat st = lstat_of(s.at("sparse"));
    CHECK(st.st_size == static_cast<off_t>(size));
    CHECK(st.st_blocks * 512 < (1 << 20));
    CHECK(fs::read_file(s.at("sparse")) == content);
    CHECK(r.diff_id == independent_sha256(tar));
}

TEST_CASE("unpack: whiteouts become overlayfs whiteouts; overlay xattrs never come from the tar") {
    Scratch s;
    Entry forged = dir("forged/");
    forged.xattrs = {{"user.overlay.opaque", "y"}, {"user.overlay.redirect", "/etc"}, {"user.kept", "1"}};
    s.unpack(compress(make_tar({dir("var/"), file("var/.wh.cache", ""), dir("opaque/"), file("opaque/.wh..wh..opq", ""),
                                file("opaque/new", "n"), file("nested/.wh.gone", ""), file(".wh..wh.plnk", ""), forged}),
                      Compression::Gzip));
    struct stat wh = lstat_of(s.at("var/cache"));
    CHECK(S_ISCHR(wh.st_mode));
    CHECK(wh.st_rdev == makedev(0, 0));
    CHECK(S_ISCHR(lstat_of(s.at("nested/gone")).st_mode));
    CHECK_FALSE(fs::exists(s.at("var/.wh.cache")));
    CHECK(xattr_of(s.at("opaque"), "user.overlay.opaque") == "y");
    CHECK(fs::read_file(s.at("opaque/new")) == "n");
    CHECK_FALSE(fs::exists(s.at("opaque/.wh..wh..opq")));
    CHECK_FALSE(fs::exists(s.at(".wh..wh.plnk")));
    CHECK(xattr_of(s.at("forged"), "user.overlay.opaque") == "<none>");
    CHECK(xattr_of(s.at("forged"), "user.overlay.redirect") == "<none>");
    CHECK(xattr_of(s.at("forged"), "user.kept") == "1");
}

TEST_CASE("unpack: xattrs are copied where permitted, overlay ones never") {
    Scratch s;
    Entry f = file("f", "data");
    f.xattrs = {{"user.a", "1"}, {"trusted.hutch", "t"}, {"trusted.overlay.opaque", "y"}, {"user.overlay.origin", "o"}};
    Entry l = slink("l", "f");
    l.xattrs = {{"trusted.on-link", "s"}, {"user.on-link", "refused by the kernel on symlinks"}};
    Entry p = special("p", AE_IFIFO);
    p.xattrs = {{"trusted.on-fifo", "p"}};
    s.unpack(compress(make_tar({f, l, p}), Compression::Gzip));
    CHECK(xattr_of(s.at("f"), "user.a") == "1");
    CHECK(xattr_of(s.at("f"), "trusted.overlay.opaque") == "<none>");
    CHECK(xattr_of(s.at("f"), "user.overlay.origin") == "<none>");
    CHECK(xattr_of(s.at("l"), "user.on-link") == "<none>");  // skipped with a warning, not fatal
    if (::geteuid() == 0) {  // trusted.* needs CAP_SYS_ADMIN
        CHECK(xattr_of(s.at("f"), "trusted.hutch") == "t");
        CHECK(xattr_of(s.at("l"), "trusted.on-link") == "s");  // set on the link, not on f
        CHECK(xattr_of(s.at("f"), "trusted.on-link") == "<none>");
        CHECK(xattr_of(s.at("p"), "trusted.on-fifo") == "p");
    } else {
        CHECK(xattr_of(s.at("f"), "trusted.hutch") == "<none>");
    }
}

TEST_CASE("unpack: a later entry replaces an earlier one, but a directory stays a directory") {
    Scratch s;
    Entry d2 = dir("d/", 0700);
    d2.mtime = 1400000000;
    s.unpack(compress(make_tar({file("f", "old"), file("f", "new"), dir("d/"), file("d/kept", "k"), d2,
                                dir("was-dir/"), file("was-dir/child", "c"), file("was-dir", "now a file"),
                                file("was-file", "x"), dir("was-file/"), slink("s", s.outside), file("s", "plain")}),
                      Compression::Gzip));
    CHECK(fs::read_file(s.at("f")) == "new");
    CHECK(fs::read_file(s.at("d/kept")) == "k");
    CHECK((lstat_of(s.at("d")).st_mode & 07777) == 0700);
    CHECK(lstat_of(s.at("d")).st_mtim.tv_sec == 1400000000);
    CHECK(fs::read_file(s.at("was-dir")) == "now a file");
    CHECK(S_ISDIR(lstat_of(s.at("was-file")).st_mode));
    // Replacing a symlink replaces the link, it does not write through it.
    CHECK(S_ISREG(lstat_of(s.at("s")).st_mode));
    s.check_nothing_escaped();
}

TEST_CASE("unpack: paths longer than PATH_MAX are created one directory at a time") {
    Scratch s;
    std::string deep;
    for (int i = 0; i < 45; ++i) deep += std::string(100, static_cast<char>('a' + i % 26)) + "/";
    REQUIRE(deep.size() > 4096);
    Entry d = dir(deep, 0750);
    d.mtime = 1234567890;
    s.unpack(compress(make_tar({d, file(deep + "leaf", "deep")}), Compression::Gzip));
    // Checked through a chain of directory fds, since the whole path is too long for one call.
    int fd = ::open(s.layer.c_str(), O_RDONLY | O_DIRECTORY);
    for (size_t pos = 0; pos < deep.size();) {
        size_t slash = deep.find('/', pos);
        int next = ::openat(fd, deep.substr(pos, slash - pos).c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        ::close(fd);
        REQUIRE(next >= 0);
        fd = next;
        pos = slash + 1;
    }
    struct stat st;
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK((st.st_mode & 07777) == 0750);
    CHECK(st.st_mtim.tv_sec == 1234567890);
    char buf[8] = {};
    int leaf = ::openat(fd, "leaf", O_RDONLY);
    CHECK(::read(leaf, buf, sizeof buf) == 4);
    CHECK(std::string(buf) == "deep");
    ::close(leaf);
    ::close(fd);
}

TEST_CASE("unpack: a hardlink to a symlink links the symlink itself") {
    Scratch s;
    s.unpack(compress(make_tar({slink("s", s.victim), hardlink("h", "s")}), Compression::Gzip));
    CHECK(S_ISLNK(lstat_of(s.at("h")).st_mode));
    s.check_nothing_escaped();
}

TEST_CASE("unpack: device nodes are created when permitted, else skipped and listed") {
    Scratch s;
    UnpackResult r = s.unpack(compress(make_tar({special("dev/null", AE_IFCHR, 1, 3)}), Compression::Gzip));
    struct stat st;
    if (::lstat(s.at("dev/null").c_str(), &st) == 0) {
        CHECK(S_ISCHR(st.st_mode));
        CHECK(st.st_rdev == makedev(1, 3));
        CHECK(r.skipped_devices.empty());
    } else {
        REQUIRE(r.skipped_devices.size() == 1);
        CHECK(r.skipped_devices[0] == "/dev/null");
    }
}

// ---- hostile layers ---------------------------------------------------------------------------

TEST_CASE("unpack: names that leave the layer are refused, naming the entry") {
    Scratch s;
    std::string err = s.refused({file("ok", "1"), file(s.outside + "/abs", "x")});
    CHECK(contains(err, "entry \"" + s.outside + "/abs\""));
    CHECK(contains(err, "absolute"));
    s.check_nothing_escaped();

    err = s.refused({file("../outside/x", "x")});
    CHECK(contains(err, "entry \"../outside/x\": leaves the layer"));
    s.check_nothing_escaped();

    err = s.refused({file("a/b/../../../outside/y", "y")});
    CHECK(contains(err, "entry \"a/b/../../../outside/y\": leaves the layer"));
    s.check_nothing_escaped();

    // Control bytes in a hostile name are escaped, so the message cannot drive the terminal.
    err = s.refused({file("../\x1b[2J\nfake", "z")});
    CHECK(contains(err, "entry \"../\\x1b[2J\\x0afake\": leaves the layer"));
    s.check_nothing_escaped();
}

TEST_CASE("unpack: nothing is written through a symlink planted by an earlier entry") {
    // Out of the layer, to its parent, and to a directory inside it: all refused alike.
    for (const std::string& target : {std::string("ABS"), std::string(".."), std::string("d")}) {
        for (Entry second : {file("link/x", "x"), dir("link/sub/"), slink("link/s", "y"), file("link/.wh.z", ""),
                             file("link/.wh..wh..opq", ""), special("link/f", AE_IFIFO), hardlink("link/h", "ok")}) {
            Scratch s;
            CAPTURE(target);
            CAPTURE(second.path);
            std::string err =
                s.refused({file("ok", "1"), dir("d/"), slink("link", target == "ABS" ? s.outside : target), second});
            CHECK(contains(err, "entry \"" + second.path + "\": it would be written through the symlink \"link\""));
            s.check_nothing_escaped();
            CHECK(xattr_of(s.outside, "user.overlay.opaque") == "<none>");
            CHECK(xattr_of(s.dir, "user.overlay.opaque") == "<none>");
        }
    }
}

TEST_CASE("unpack: hardlinks must point at a file inside the layer") {
    Scratch s;
    std::string err = s.refused({hardlink("h", "../victim")});
    CHECK(contains(err, "entry \"h\": its hardlink target \"../victim\" is outside the layer"));
    s.check_nothing_escaped();

    err = s.refused({hardlink("h", s.victim)});
    CHECK(contains(err, "entry \"h\": its hardlink target \"" + s.victim + "\" is outside the layer"));
    s.check_nothing_escaped();

    err = s.refused({hardlink("h", "missing")});
    CHECK(contains(err, "entry \"h\": its hardlink target \"missing\" does not exist in the layer"));

    err = s.refused({hardlink("h", "nodir/missing")});
    CHECK(contains(err, "does not exist in the layer"));

    err = s.refused({slink("up", s.dir), hardlink("h", "up/victim")});
    CHECK(contains(err, "entry \"h\": its hardlink target would be resolved through the symlink \"up\""));
    s.check_nothing_escaped();

    err = s.refused({dir("d/"), hardlink("h", "d")});
    CHECK(contains(err, "is a directory"));
}

TEST_CASE("unpack: decompression bombs, oversized layers and damaged streams are refused") {
    const std::string zeros = make_tar({file("zeros", std::string(8 << 20, '\0'))});
    {
        Scratch s;
        UnpackLimits limits;
        limits.max_ratio = 10;
        limits.ratio_applies_above = 0;
        const std::string gz = compress(zeros, Compression::Gzip);
        REQUIRE(gz.size() * 10 < zeros.size());
        try {
            s.unpack(gz, limits);
            FAIL("a decompression bomb was unpacked");
        } catch (const Error& e) {
            CHECK(contains(e.what(), "decompression bomb"));
            CHECK(contains(e.what(), "10 times its compressed size"));
        }
    }
    {
        Scratch s;
        UnpackLimits limits;
        limits.max_bytes = 1 << 20;
        try {
            s.unpack(zeros, limits);
            FAIL("a layer over max_bytes was unpacked");
        } catch (const Error& e) {
            CHECK(contains(e.what(), "larger than the limit of 1048576 bytes"));
        }
    }
    const std::string gz = compress(make_tar(everyday_layer()), Compression::Gzip);
    {
        Scratch s;
        CHECK_THROWS_WITH_AS(s.unpack(gz.substr(0, gz.size() / 2)), doctest::Contains("truncated"), Error);
    }
    {
        Scratch s;
        std::string corrupt = gz;
        for (size_t i = 20; i < 60 && i < corrupt.size(); ++i) corrupt[i] = static_cast<char>(~corrupt[i]);
        CHECK_THROWS_AS(s.unpack(corrupt), Error);
    }
    {
        Scratch s;
        CHECK_THROWS_WITH_AS(s.unpack(compress(std::string(4096, 'x'), Compression::Gzip)),
                             doctest::Contains("not a tar stream"), Error);
    }
}

// ---- user namespaces and the store -----------------------------------------------------------

TEST_CASE("unpack: in a user namespace, devices are skipped and unmappable owners fall back") {
    Scratch s;
    // Inside uid 0 is a single host id: root maps an unused one, anyone else maps themselves.
    const uint32_t host = ::geteuid() == 0 ? 3000000u : ::geteuid();
    const uint32_t host_gid = ::geteuid() == 0 ? 3000000u : ::getegid();
    IdMap map;
    map.uids = {{0, host, 1}};
    map.gids = {{0, host_gid, 1}};
    map.deny_setgroups = true;
    REQUIRE(::chown(s.layer.c_str(), host, host_gid) == 0);
    Entry owned = file("owned", "o", 04755);
    owned.uid = 1234;
    owned.gid = 1234;
    Scratch::write(s.blob, compress(make_tar({dir("dev/"), special("dev/null", AE_IFCHR, 1, 3), file("mine", "m"), owned,
                                              file(".wh.lower", "")}),
                                    Compression::Gzip));
    int rc = idmap::run_as_sandbox_root(map, [&]() -> int {
        try {
            UnpackResult r = unpack_layer(s.blob, s.layer, {}, 0);
            return r.skipped_devices == std::vector<std::string>{"/dev/null"} ? 0 : 10;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "unpack in the user namespace failed: %s\n", e.what());
            return 20;
        } catch (...) {
            return 30;
        }
    });
    REQUIRE(rc == 0);
    CHECK_FALSE(fs::exists(s.at("dev/null")));
    CHECK(lstat_of(s.at("mine")).st_uid == host);
    struct stat owned_st = lstat_of(s.at("owned"));
    CHECK(owned_st.st_uid == host);  // 1234 is not mapped: kept by the unpacking user
    CHECK((owned_st.st_mode & 07777) == 04755);
    CHECK(lstat_of(s.at("lower")).st_rdev == makedev(0, 0));
}

TEST_CASE("ensure_layer: unpacks as the sandbox's root, checks the diff_id, publishes once") {
    Scratch s;
    Paths paths;
    paths.state = s.dir + "/state";
    paths.storage = s.dir + "/storage";
    Store store(paths);
    Entry owned = file("home/user/file", "u");
    owned.uid = 1000;
    owned.gid = 1000;
    const std::string tar = make_tar({dir("dev/"), special("dev/null", AE_IFCHR, 1, 3), file("etc/hostname", "h"), owned});
    const std::string blob = store.put_blob(compress(tar, Compression::Gzip));
    const std::string diff_id = independent_sha256(tar);
    const IdMap map = idmap::for_caller();

    std::string wrong = diff_id;
    wrong.back() = wrong.back() == '0' ? '1' : '0';
    CHECK_THROWS_WITH_AS(ensure_layer(store, map, blob, wrong, {}),
                         doctest::Contains(("layer " + blob + " does not match its diff_id " + wrong +
                                            " from the image config: got " + diff_id)
                                               .c_str()),
                         Error);
    CHECK_FALSE(store.has_layer(wrong));
    CHECK(Scratch::names_in(paths.storage + "/tmp").empty());  // the partial layer is gone

    ensure_layer(store, map, blob, diff_id, {});
    REQUIRE(store.has_layer(diff_id));
    const std::string layer = store.layer_path(diff_id);
    CHECK(fs::read_file(layer + "/etc/hostname") == "h");
    // Owners went through the map: the image's root is the sandbox's root on the host.
    CHECK(lstat_of(layer + "/etc/hostname").st_uid == *map.host_uid(0));
    struct stat owned_st = lstat_of(layer + "/home/user/file");
    CHECK(owned_st.st_uid == map.host_uid(1000).value_or(*map.host_uid(0)));
    // Unprivileged in the namespace: the device is skipped (and warned about), not fatal.
    CHECK_FALSE(fs::exists(layer + "/dev/null"));

    ensure_layer(store, map, blob, diff_id, {});  // already there: nothing to do
    CHECK(Scratch::names_in(paths.storage + "/tmp").empty());
}

// ---- against another implementation -----------------------------------------------------------

namespace {

struct Seen {
    mode_t mode = 0;
    off_t size = 0;
    time_t mtime = 0;
    std::string link;
    bool operator==(const Seen&) const = default;
};

// Type, mode, size, mtime and symlink target of everything under `root` (owners differ on purpose:
// umoci --rootless keeps the caller's).
void walk(const std::string& root, const std::string& rel, std::map<std::string, Seen>& out) {
    DIR* d = ::opendir((root + rel).c_str());
    REQUIRE(d != nullptr);
    while (struct dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        std::string path = rel + "/" + name;
        struct stat st = lstat_of(root + path);
        Seen seen{st.st_mode, S_ISREG(st.st_mode) ? st.st_size : 0, st.st_mtim.tv_sec, {}};
        if (S_ISLNK(st.st_mode)) {
            char buf[4096];
            ssize_t n = ::readlink((root + path).c_str(), buf, sizeof buf);
            seen.link.assign(buf, n > 0 ? static_cast<size_t>(n) : 0);
            seen.mtime = 0;  // umoci does not set symlinks' times
        }
        out[path] = seen;
        if (S_ISDIR(st.st_mode)) walk(root, path, out);
    }
    ::closedir(d);
}

std::string blob_file(const std::string& layout, const std::string& digest) {
    return layout + "/blobs/sha256/" + digest.substr(7);
}

}  // namespace

TEST_CASE("unpack: a layer written by umoci unpacks like umoci unpacks it, with umoci's diff_ids") {
    if (std::system("command -v umoci >/dev/null 2>&1") != 0) {
        MESSAGE("umoci is not installed: comparison skipped");
        return;
    }
    Scratch s;
    const std::string script =
        "set -e; cd " + s.dir + "; exec >umoci.log 2>&1\n"
        "umoci init --layout L; umoci new --image L:t; umoci unpack --rootless --image L:t B\n"
        "r=B/rootfs; mkdir -p $r/etc $r/bin $r/private $r/var/empty\n"
        "echo hello >$r/etc/hello; ln $r/etc/hello $r/etc/hello2; mkfifo $r/etc/fifo\n"
        "printf '#!/bin/sh\\n' >$r/bin/tool; chmod 4755 $r/bin/tool; ln -s tool $r/bin/alias\n"
        "echo secret >$r/private/key; chmod 600 $r/private/key; chmod 700 $r/private; chmod 1777 $r/var/empty\n"
        "echo bye >$r/gone; mkdir $r/gonedir; echo x >$r/gonedir/x\n"
        "touch -h -d @1500000000 $r/etc/hello $r/bin/tool $r/etc $r/bin $r/private/key $r/private $r/var/empty $r/var\n"
        "umoci repack --image L:t B; umoci unpack --rootless --image L:t R1\n"
        // repack diffs against the bundle's own unpack: the second layer needs a fresh bundle
        "umoci unpack --rootless --image L:t C; rm C/rootfs/gone; rm -r C/rootfs/gonedir; umoci repack --image L:t C\n";
    REQUIRE_MESSAGE(std::system(script.c_str()) == 0, fs::read_file(s.dir + "/umoci.log"));

    const std::string layout = s.dir + "/L";
    auto index = nlohmann::json::parse(fs::read_file(layout + "/index.json"));
    auto manifest = nlohmann::json::parse(fs::read_file(blob_file(layout, index["manifests"][0]["digest"])));
    auto config = nlohmann::json::parse(fs::read_file(blob_file(layout, manifest["config"]["digest"])));
    REQUIRE(manifest["layers"].size() == 2);

    std::vector<std::string> dests = {s.dir + "/ours1", s.dir + "/ours2"};
    for (size_t i = 0; i < 2; ++i) {
        REQUIRE(::mkdir(dests[i].c_str(), 0755) == 0);
        const std::string blob = blob_file(layout, manifest["layers"][i]["digest"]);
        UnpackResult r = unpack_layer(blob, dests[i], {}, manifest["layers"][i]["size"].get<int64_t>());
        CHECK(r.diff_id == config["rootfs"]["diff_ids"][i].get<std::string>());
    }

    std::map<std::string, Seen> ours, theirs;
    walk(dests[0], "", ours);
    walk(s.dir + "/R1/rootfs", "", theirs);
    CHECK(ours.size() == theirs.size());
    for (const auto& [path, seen] : theirs) {
        CAPTURE(path);
        REQUIRE(ours.count(path) == 1);
        CHECK(std::to_string(ours[path].mode) == std::to_string(seen.mode));
        CHECK(ours[path].size == seen.size);
        CHECK(ours[path].mtime == seen.mtime);
        CHECK(ours[path].link == seen.link);
    }
    CHECK(ours["/bin/tool"].mtime == 1500000000);
    CHECK(ours["/etc"].mtime == 1500000000);

    // The second layer only deletes: whiteouts where umoci (applying it) removed the files.
    for (const char* gone : {"/gone", "/gonedir"}) {
        struct stat st = lstat_of(dests[1] + gone);
        CHECK(S_ISCHR(st.st_mode));
        CHECK(st.st_rdev == makedev(0, 0));
    }
}
