// Unpacking layer tarballs. The tar stream is untrusted: every entry is created relative to a
// directory fd opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), and the last component
// is always created fresh (O_EXCL, mkdirat, symlinkat, ...) after removing what was there, so no
// name, symlink or hardlink in the layer can make us write outside its directory.
//
// Two libarchive objects are chained: the outer one only decompresses (gzip, zstd or nothing,
// read with the "raw" format), the inner one parses tar from the outer's bytes. Every byte between
// the two passes through Stream::next(), which hashes it (the diff_id) and enforces the limits.
#include "hutch/image/unpack.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/log.hpp"
#include "hutch/core/digest.hpp"
#include "hutch/sandbox/idmap.hpp"
#include "hutch/sandbox/state.hpp"
#include "archive_message.hpp"

namespace hutch::image {
namespace {

constexpr const char* kHostileHint = "the image is corrupt or hostile; nothing was written outside the layer";
constexpr size_t kListedInWarnings = 5;

// What a warning lists: a count, and the first few distinct items.
struct Sample {
    size_t count = 0;
    std::set<std::string> first;
    bool more = false;

    void add(const std::string& item) {
        ++count;
        if (first.count(item)) return;
        if (first.size() < kListedInWarnings) first.insert(item);
        else more = true;
    }
    std::string listed() const {
        std::string out;
        for (const auto& i : first) out += (out.empty() ? "" : ", ") + i;
        return more ? out + ", ..." : out;
    }
};

// ---------------------------------------------------------------------------------------------
// Names

// A tar name quoted for messages: control bytes are escaped so a hostile name cannot rewrite
// the terminal; other bytes (UTF-8 included) are kept.
std::string quoted(const std::string& raw) {
    std::string out = "\"";
    for (unsigned char c : raw) {
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

// "layer sha256:<hex>" for a store blob path, else "layer <path>".
std::string layer_label(const std::string& blob_path) {
    auto slash = blob_path.find_last_of('/');
    std::string base = slash == std::string::npos ? blob_path : blob_path.substr(slash + 1);
    std::string candidate = "sha256:" + base;
    bool in_sha256_dir = slash != std::string::npos && slash >= 6 && blob_path.compare(slash - 6, 6, "sha256") == 0;
    if (in_sha256_dir && digest::valid(candidate)) return "layer " + candidate;
    return "layer " + blob_path;
}

using Components = std::vector<std::string>;

// Lexical normalisation of a relative tar name: "", "." and "x/.." vanish. Returns nullopt when a
// ".." would climb above the layer's root. Symlinks are not consulted (they are never followed).
std::optional<Components> normalise(const std::string& path) {
    Components out;
    size_t pos = 0;
    while (pos <= path.size()) {
        size_t end = path.find('/', pos);
        if (end == std::string::npos) end = path.size();
        std::string part = path.substr(pos, end - pos);
        pos = end + 1;
        if (part.empty() || part == ".") continue;
        if (part == "..") {
            if (out.empty()) return std::nullopt;
            out.pop_back();
            continue;
        }
        out.push_back(std::move(part));
    }
    return out;
}

std::string join(const Components& c, size_t n) {
    std::string out;
    for (size_t i = 0; i < n && i < c.size(); ++i) {
        if (i) out += '/';
        out += c[i];
    }
    return out;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// ---------------------------------------------------------------------------------------------
// Syscall helpers

// Opens directory `path` below `dirfd` without following any symlink or leaving `dirfd`'s tree.
int open_dir_beneath(int dirfd, const std::string& path) {
    struct open_how how{};
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return static_cast<int>(::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how));
}

UniqueFd dup_fd(int fd) {
    UniqueFd out(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!out) throw_errno("cannot duplicate a file descriptor");
    return out;
}

bool pwrite_all(int fd, const void* data, size_t n, off_t offset) {
    auto* p = static_cast<const char*>(data);
    while (n > 0) {
        ssize_t w = ::pwrite(fd, p, n, offset);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
        offset += w;
    }
    return true;
}

struct ArchiveFree {
    void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveFree>;

// Reading a layer, libarchive says nothing mostly when the stream ends early.
std::string archive_message(struct archive* a) { return detail::archive_message(a, "the stream is truncated or damaged"); }

// ---------------------------------------------------------------------------------------------
// The decompressed byte stream, hashed and bounded.

class Stream {
public:
    Stream(int blob_fd, const UnpackLimits& limits, uint64_t compressed_size, std::string label)
        : outer_(archive_read_new()), limits_(limits), compressed_(compressed_size), label_(std::move(label)) {
        if (!outer_) fail("cannot allocate a libarchive reader", label_);
        // Only the filters OCI and docker layers use: no external programs, no exotic formats.
        if (archive_read_support_filter_gzip(outer_.get()) == ARCHIVE_FATAL ||
            archive_read_support_filter_zstd(outer_.get()) == ARCHIVE_FATAL ||
            archive_read_support_format_raw(outer_.get()) != ARCHIVE_OK)
            fail("cannot set up decompression", label_, archive_message(outer_.get()));
        struct archive_entry* e = nullptr;
        if (archive_read_open_fd(outer_.get(), blob_fd, 1 << 16) != ARCHIVE_OK ||
            archive_read_next_header(outer_.get(), &e) != ARCHIVE_OK)
            throw Error(label_ + ": cannot read the layer: " + archive_message(outer_.get()), "", 0,
                        "the blob is corrupt or empty; pull the image again");
    }

    static la_ssize_t read_callback(struct archive*, void* self, const void** buf) {
        return static_cast<Stream*>(self)->next(buf);
    }

    // Hands the tar reader the next decompressed block; 0 at the end, -1 on error (kept in error_).
    la_ssize_t next(const void** buf) {
        if (error_) return -1;
        for (;;) {
            size_t size = 0;
            la_int64_t offset = 0;
            int r = archive_read_data_block(outer_.get(), buf, &size, &offset);
            if (r == ARCHIVE_EOF) return 0;
            if (r < ARCHIVE_WARN) {
                error_ = Error(label_ + ": cannot decompress the layer: " + archive_message(outer_.get()), "", 0,
                               "the blob is truncated or corrupt; pull the image again");
                return -1;
            }
            if (size == 0) continue;  // 0 would mean end of stream to the tar reader
            bytes_ += size;
            if (!within_limits()) return -1;
            hash_.update(*buf, size);
            return static_cast<la_ssize_t>(size);
        }
    }

    // Reads what the tar reader left (padding after the end-of-archive blocks): it is part of the
    // uncompressed stream the diff_id covers, and of what the limits bound.
    void drain() {
        const void* buf = nullptr;
        while (next(&buf) > 0) {
        }
        if (error_) throw *error_;
    }

    const std::optional<Error>& error() const { return error_; }
    uint64_t bytes() const { return bytes_; }
    std::string finish() { return hash_.finish(); }

private:
    bool within_limits() {
        if (bytes_ > limits_.max_bytes) {
            error_ = Error(label_ + ": is larger than the limit of " + std::to_string(limits_.max_bytes) +
                               " bytes uncompressed",
                           "", 0, "refusing to unpack it; raise the unpack size limit only for a trusted image");
            return false;
        }
        if (exceeds_ratio(limits_, bytes_, compressed_)) {
            error_ = Error(label_ + ": expands to more than " + ratio_text(limits_) + " times its compressed size of " +
                               std::to_string(compressed_) +
                               " bytes: a decompression bomb",
                           "", 0, "refusing to unpack it; raise the unpack ratio limit only for a trusted image");
            return false;
        }
        return true;
    }

    ArchivePtr outer_;
    digest::Sha256 hash_;
    UnpackLimits limits_;
    uint64_t compressed_;
    std::string label_;
    uint64_t bytes_ = 0;
    std::optional<Error> error_;
};

// ---------------------------------------------------------------------------------------------
// Metadata of one entry.

struct Meta {
    mode_t perm = 0;  // permission bits with setuid, setgid and sticky
    int64_t uid = 0, gid = 0;
    struct timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};  // atime, mtime
    std::vector<std::pair<std::string, std::string>> xattrs;

    static Meta of(struct archive_entry* e) {
        Meta m;
        m.perm = archive_entry_perm(e) & 07777;
        m.uid = archive_entry_uid(e);
        m.gid = archive_entry_gid(e);
        if (archive_entry_mtime_is_set(e)) m.times[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
        m.times[0] = archive_entry_atime_is_set(e) ? timespec{archive_entry_atime(e), archive_entry_atime_nsec(e)}
                                                   : m.times[1];
        // libarchive's pax writer stores each xattr twice (LIBARCHIVE.xattr and SCHILY.xattr) and
        // the reader returns both: keep one per name, the last.
        std::map<std::string, std::string> unique;
        archive_entry_xattr_reset(e);
        const char* name = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
            if (name) unique[name] = std::string(static_cast<const char*>(value), size);
        m.xattrs.assign(unique.begin(), unique.end());
        return m;
    }
};

// Where metadata goes: an open fd (name == nullptr), or `name` in directory `dirfd` for the
// types we do not open (symlinks, fifos, devices).
struct Node {
    int fd;
    const char* name = nullptr;
    bool symlink = false;
};

// Overlay metadata must only come from hutch itself: a user.overlay.* xattr in a tar could forge
// whiteouts, opaque dirs or redirects; trusted.overlay.* is the same for privileged mounts.
bool never_copied(const std::string& name) {
    return starts_with(name, "user.overlay.") || starts_with(name, "trusted.overlay.");
}

bool copyable_namespace(const std::string& name) {
    return starts_with(name, "user.") || starts_with(name, "security.") || starts_with(name, "trusted.") ||
           name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

// ---------------------------------------------------------------------------------------------
// The extraction of entries into the layer directory.

class Extractor {
public:
    Extractor(int root, std::string label, Stream& stream) : root_(root), label_(std::move(label)), stream_(stream) {}

    void entry(struct archive* tar, struct archive_entry* e);
    // Second pass: directories' metadata, after their content; then the warnings.
    void finish();
    std::vector<std::string> take_skipped_devices() { return std::move(skipped_devices_); }
    const std::string& last_entry() const { return path_; }

private:
    [[noreturn]] void reject(const std::string& problem, int err = 0, const std::string& hint = kHostileHint) const {
        throw Error(label_ + ": entry " + quoted(path_) + ": " + problem, "", err, hint);
    }
    // For a failed syscall. errno is read first thing, so callers pass strings built beforehand
    // (an allocation between the syscall and here could change errno).
    [[noreturn]] void failed(const char* what, const std::string& subject = {}) const {
        const int err = errno;
        reject(subject.empty() ? std::string(what) : std::string(what) + " " + subject, err, "");
    }
    [[noreturn]] void read_failed(struct archive* tar) const;

    UniqueFd open_dir(const Components& c, size_t n, bool create, bool for_link_target);
    UniqueFd open_parent(const Components& c) { return open_dir(c, c.size() - 1, true, false); }
    bool make_room(int parent, const std::string& base, const std::string& rel, bool new_is_dir);
    void forget_dirs(const std::string& rel);

    void directory(const Components& c, const Meta& m);
    void regular(struct archive* tar, struct archive_entry* e, const Components& c, const Meta& m);
    void symlink(struct archive_entry* e, const Components& c, const Meta& m);
    void hardlink(const std::string& target, const Components& c);
    void special(struct archive_entry* e, const Components& c, const Meta& m);
    void whiteout(const Components& c);
    void write_data(struct archive* tar, int fd, struct archive_entry* e);

    void apply(const Node& n, const Meta& m);
    void set_owner(const Node& n, const Meta& m);
    void set_xattrs(const Node& n, const Meta& m);

    int root_;
    std::string label_;
    Stream& stream_;
    std::string path_;  // the current entry's name, as in the tar
    std::map<std::string, Meta> dirs_;  // metadata applied in finish(), keyed by normalised path
    std::vector<std::string> skipped_devices_;
    Sample unmapped_owners_;  // "uid:gid" of files left to the unpacking user
    Sample skipped_xattrs_;   // names of xattrs not copied
};

void Extractor::read_failed(struct archive* tar) const {
    if (stream_.error()) throw *stream_.error();
    reject("cannot read its data: " + archive_message(tar), 0, "the layer is truncated or corrupt; pull the image again");
}

// Opens the directory made of the first n components. Missing directories are created (0755,
// like docker, since layers often omit parents) when `create`. A symlink on the way is refused.
UniqueFd Extractor::open_dir(const Components& c, size_t n, bool create, bool for_link_target) {
    if (n == 0) return dup_fd(root_);
    UniqueFd fast(open_dir_beneath(root_, join(c, n)));
    if (fast) return fast;
    if (errno == ENOSYS) fail("openat2 is not available", "", "hutch needs Linux 5.6 or later to unpack images");
    // Slow path, one component at a time: create what is missing and name what is wrong.
    UniqueFd cur = dup_fd(root_);
    for (size_t i = 0; i < n; ++i) {
        const std::string sub = join(c, i + 1), shown = quoted(sub);
        UniqueFd next(open_dir_beneath(cur.get(), c[i]));
        if (!next && errno == ENOENT && create) {
            if (::mkdirat(cur.get(), c[i].c_str(), 0755) != 0 && errno != EEXIST)
                failed("cannot create the directory", shown);
            next.reset(open_dir_beneath(cur.get(), c[i]));
            if (next) ::fchmod(next.get(), 0755);  // umask may have narrowed it
        }
        if (next) {
            cur = std::move(next);
            continue;
        }
        const char* role = for_link_target ? "its hardlink target" : "it";
        if (errno == ELOOP || errno == EXDEV)
            reject(std::string(role) + " would be " + (for_link_target ? "resolved" : "written") +
                   " through the symlink " + shown);
        if (errno == ENOENT && for_link_target)
            reject("its hardlink target " + quoted(join(c, c.size())) + " does not exist in the layer");
        if (errno == ENOTDIR) reject(shown + " is not a directory");
        failed("cannot open the directory", shown);
    }
    return cur;
}

// Tar semantics: a later entry replaces an earlier one at the same path, except that a directory
// stays (with its content) when the new entry is a directory too. Returns true in that case.
bool Extractor::make_room(int parent, const std::string& base, const std::string& rel, bool new_is_dir) {
    struct stat st;
    if (::fstatat(parent, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return false;
        failed("cannot inspect what is at its path");
    }
    if (!S_ISDIR(st.st_mode)) {
        if (::unlinkat(parent, base.c_str(), 0) != 0) failed("cannot replace what is at its path");
        return false;
    }
    if (new_is_dir) return true;
    UniqueFd dir(::openat(parent, base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) failed("cannot open the directory it replaces");
    fs::remove_contents(dir.get(), label_ + ": " + rel);
    if (::unlinkat(parent, base.c_str(), AT_REMOVEDIR) != 0) failed("cannot remove the directory it replaces");
    forget_dirs(rel);
    return false;
}

// A removed directory's pending metadata (and its subdirectories') must not be applied to
// whatever later takes its place.
void Extractor::forget_dirs(const std::string& rel) {
    dirs_.erase(rel);
    const std::string prefix = rel + "/";
    for (auto it = dirs_.lower_bound(prefix); it != dirs_.end() && starts_with(it->first, prefix.c_str());)
        it = dirs_.erase(it);
}

void Extractor::entry(struct archive* tar, struct archive_entry* e) {
    const char* raw = archive_entry_pathname(e);
    path_ = raw ? raw : "";
    if (path_.empty()) reject("has an empty name");
    if (path_[0] == '/') reject("has an absolute path (layer entries must be relative)");
    std::optional<Components> c = normalise(path_);
    if (!c) reject("leaves the layer");
    const Meta meta = Meta::of(e);
    const char* link = archive_entry_hardlink(e);
    if (c->empty()) {  // "./": the layer's root directory itself
        if (link || archive_entry_filetype(e) != AE_IFDIR) reject("would replace the layer's root directory");
        dirs_[""] = meta;
        return;
    }
    if (starts_with(c->back(), ".wh.")) return whiteout(*c);
    if (link) return hardlink(link, *c);
    switch (archive_entry_filetype(e)) {
        case AE_IFDIR: return directory(*c, meta);
        case AE_IFREG: return regular(tar, e, *c, meta);
        case AE_IFLNK: return symlink(e, *c, meta);
        case AE_IFIFO:
        case AE_IFCHR:
        case AE_IFBLK: return special(e, *c, meta);
        default:
            reject("has an unsupported type (mode " + std::to_string(archive_entry_filetype(e)) +
                   "); layers may hold files, directories, symlinks, hardlinks, fifos and devices");
    }
}

void Extractor::directory(const Components& c, const Meta& m) {
    UniqueFd parent = open_parent(c);
    const std::string rel = join(c, c.size());
    // Created owner-only; the real mode comes in finish(), so a 0555 directory can still be filled.
    if (!make_room(parent.get(), c.back(), rel, true) && ::mkdirat(parent.get(), c.back().c_str(), 0700) != 0)
        failed("cannot create the directory");
    dirs_[rel] = m;
}

void Extractor::regular(struct archive* tar, struct archive_entry* e, const Components& c, const Meta& m) {
    UniqueFd parent = open_parent(c);
    make_room(parent.get(), c.back(), join(c, c.size()), false);
    UniqueFd fd(::openat(parent.get(), c.back().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) failed("cannot create the file");
    write_data(tar, fd.get(), e);
    apply(Node{fd.get()}, m);
}

// Data blocks come with their offsets: the gaps between them are the holes of a sparse file,
// left unwritten, and the final ftruncate gives a trailing hole its length.
void Extractor::write_data(struct archive* tar, int fd, struct archive_entry* e) {
    for (;;) {
        const void* buf = nullptr;
        size_t size = 0;
        la_int64_t offset = 0;
        int r = archive_read_data_block(tar, &buf, &size, &offset);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) read_failed(tar);
        if (size > 0 && !pwrite_all(fd, buf, size, static_cast<off_t>(offset))) failed("cannot write the file");
    }
    if (archive_entry_size_is_set(e) && ::ftruncate(fd, static_cast<off_t>(archive_entry_size(e))) != 0)
        failed("cannot set the file's size");
}

void Extractor::symlink(struct archive_entry* e, const Components& c, const Meta& m) {
    const char* target = archive_entry_symlink(e);
    if (!target || !*target) reject("is a symlink without a target");
    UniqueFd parent = open_parent(c);
    make_room(parent.get(), c.back(), join(c, c.size()), false);
    // The target is stored, never resolved: it only means something inside the sandbox.
    if (::symlinkat(target, parent.get(), c.back().c_str()) != 0) failed("cannot create the symlink");
    apply(Node{parent.get(), c.back().c_str(), true}, m);
}

// A hardlink shares the inode, and with it the metadata its target's own entry set: nothing to apply.
void Extractor::hardlink(const std::string& target, const Components& c) {
    std::optional<Components> t = target.empty() || target[0] == '/' ? std::nullopt : normalise(target);
    if (!t) reject("its hardlink target " + quoted(target) + " is outside the layer");
    if (t->empty()) reject("its hardlink target is the layer's root directory");
    const std::string rel = join(c, c.size()), target_rel = join(*t, t->size()), shown = quoted(target);
    if (rel == target_rel) return;  // a link to itself: the file is already there
    UniqueFd target_dir = open_dir(*t, t->size() - 1, false, true);
    struct stat st;
    if (::fstatat(target_dir.get(), t->back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) reject("its hardlink target " + shown + " does not exist in the layer");
        failed("cannot inspect its hardlink target", shown);
    }
    if (S_ISDIR(st.st_mode)) reject("its hardlink target " + shown + " is a directory");
    UniqueFd parent = open_parent(c);
    make_room(parent.get(), c.back(), rel, false);
    // Flags 0: a symlink target is linked itself, never followed.
    if (::linkat(target_dir.get(), t->back().c_str(), parent.get(), c.back().c_str(), 0) != 0) {
        if (errno == ENOENT) reject("its hardlink target " + shown + " does not exist in the layer");
        failed("cannot create the hardlink to", shown);
    }
}

// Fifos and device nodes. Devices other than overlay's 0/0 need CAP_MKNOD in the initial user
// namespace: refused (EPERM) in a user namespace, they are skipped and reported by the caller.
void Extractor::special(struct archive_entry* e, const Components& c, const Meta& m) {
    UniqueFd parent = open_parent(c);
    const std::string rel = join(c, c.size());
    make_room(parent.get(), c.back(), rel, false);
    const char* base = c.back().c_str();
    auto type = archive_entry_filetype(e);
    if (type == AE_IFIFO) {
        if (::mkfifoat(parent.get(), base, 0600) != 0) failed("cannot create the fifo");
    } else {
        mode_t kind = type == AE_IFCHR ? S_IFCHR : S_IFBLK;
        dev_t dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
        if (::mknodat(parent.get(), base, kind | 0600, dev) != 0) {
            if (errno != EPERM) failed("cannot create the device node");
            skipped_devices_.push_back("/" + rel);
            return;
        }
    }
    apply(Node{parent.get(), base}, m);
}

// ".wh.NAME" hides NAME of lower layers: an overlayfs whiteout, a 0/0 character device (which
// Linux >= 5.8 lets anyone create). ".wh..wh..opq" hides all of its directory's lower content:
// the user.overlay.opaque xattr, read by overlay mounts with the userxattr option.
void Extractor::whiteout(const Components& c) {
    const std::string& base = c.back();
    if (starts_with(base, ".wh..wh.")) {
        if (base != ".wh..wh..opq") return;  // other aufs metadata (.wh..wh.plnk, .wh..wh.aufs)
        UniqueFd dir = open_parent(c);
        if (::fsetxattr(dir.get(), "user.overlay.opaque", "y", 1, 0) != 0) {
            const int err = errno;
            reject("cannot mark its directory opaque", err, "the storage filesystem must support user.* extended attributes");
        }
        return;
    }
    const std::string name = base.substr(4);
    if (name.empty() || name == "." || name == "..") reject("is a whiteout without a valid name");
    UniqueFd parent = open_parent(c);
    std::string rel = join(c, c.size() - 1);
    rel = rel.empty() ? name : rel + "/" + name;
    make_room(parent.get(), name, rel, false);
    if (::mknodat(parent.get(), name.c_str(), S_IFCHR, makedev(0, 0)) != 0) {
        const int err = errno;
        reject("cannot create the whiteout for " + quoted(rel), err, "unprivileged overlay whiteouts need Linux 5.8 or later");
    }
}

// chown, then chmod (chown clears setuid/setgid), then xattrs (chown clears
// security.capability), then times (last, so nothing touches them afterwards).
void Extractor::apply(const Node& n, const Meta& m) {
    set_owner(n, m);
    if (!n.symlink) {  // a symlink's mode means nothing on Linux
        int r = n.name ? ::fchmodat(n.fd, n.name, m.perm, 0) : ::fchmod(n.fd, m.perm);
        if (r != 0) failed("cannot set the mode");
    }
    set_xattrs(n, m);
    int r = n.name ? ::utimensat(n.fd, n.name, m.times, AT_SYMLINK_NOFOLLOW) : ::futimens(n.fd, m.times);
    if (r != 0) failed("cannot set the modification time");
}

// Owners the process cannot map (EINVAL in a user namespace without them, EPERM when not
// privileged) fall back to the unpacking user; finish() reports how many.
void Extractor::set_owner(const Node& n, const Meta& m) {
    auto ids = std::to_string(m.uid) + ":" + std::to_string(m.gid);
    bool representable = m.uid >= 0 && m.gid >= 0 && m.uid < UINT32_MAX && m.gid < UINT32_MAX;
    if (representable) {
        auto uid = static_cast<uid_t>(m.uid);
        auto gid = static_cast<gid_t>(m.gid);
        int r = n.name ? ::fchownat(n.fd, n.name, uid, gid, AT_SYMLINK_NOFOLLOW) : ::fchown(n.fd, uid, gid);
        if (r == 0) return;
        if (errno != EINVAL && errno != EPERM) failed("cannot set the owner", ids);
    }
    unmapped_owners_.add(ids);
}

void Extractor::set_xattrs(const Node& n, const Meta& m) {
    // Types we do not open get their xattrs through the parent directory's fd in /proc, with the
    // l- variant so the last component (possibly a symlink) is not followed.
    std::string via_proc;
    if (n.name) via_proc = "/proc/self/fd/" + std::to_string(n.fd) + "/" + n.name;
    for (const auto& [name, value] : m.xattrs) {
        if (never_copied(name)) continue;
        int r = -1;
        errno = EOPNOTSUPP;
        if (copyable_namespace(name))
            r = n.name ? ::lsetxattr(via_proc.c_str(), name.c_str(), value.data(), value.size(), 0)
                       : ::fsetxattr(n.fd, name.c_str(), value.data(), value.size(), 0);
        if (r == 0) continue;
        if (errno == ENOSPC || errno == EDQUOT || errno == EIO) failed("cannot set the extended attribute", name);
        // Not permitted here (security.*, trusted.* unprivileged; user.* on symlinks), or not
        // supported by the filesystem: skipped and reported once.
        skipped_xattrs_.add(name);
    }
}

void Extractor::finish() {
    // Children sort after their parents, so the reverse order sets a directory's metadata after
    // its subdirectories' (whose creation or chmod would otherwise be blocked or bump its mtime).
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
        path_ = it->first.empty() ? "." : it->first;
        const Components c = normalise(it->first).value_or(Components{});
        UniqueFd dir = open_dir(c, c.size(), false, false);
        apply(Node{dir.get()}, it->second);
    }
    if (unmapped_owners_.count > 0)
        log::warn(label_ + ": " + std::to_string(unmapped_owners_.count) +
                  " file(s) are owned by the unpacking user instead of their owners in the image (uid:gid " +
                  unmapped_owners_.listed() +
                  "), which this user cannot map; add ranges to /etc/subuid and /etc/subgid to keep them");
    if (skipped_xattrs_.count > 0)
        log::warn(label_ + ": " + std::to_string(skipped_xattrs_.count) +
                  " extended attribute(s) were not copied (not permitted or not supported here): " +
                  skipped_xattrs_.listed());
}

// ---------------------------------------------------------------------------------------------
// The driver.

UnpackResult unpack_fds(int blob_fd, int root_fd, const std::string& label, const UnpackLimits& limits,
                        int64_t compressed_size) {
    if (compressed_size <= 0) {
        struct stat st;
        if (::fstat(blob_fd, &st) != 0) throw_errno("cannot stat the layer", label);
        compressed_size = st.st_size;
    }
    // The root of a layer is the sandbox's "/": world-searchable unless the tar says otherwise.
    if (::fchmod(root_fd, 0755) != 0) throw_errno("cannot set the mode of the unpack directory", label);
    Stream stream(blob_fd, limits, static_cast<uint64_t>(compressed_size), label);
    ArchivePtr tar(archive_read_new());
    if (!tar || archive_read_support_format_tar(tar.get()) != ARCHIVE_OK)
        fail("cannot set up the tar reader", label);
    Extractor extractor(root_fd, label, stream);
    const std::string not_tar_hint = "a layer must be a tar stream, uncompressed or compressed with gzip or zstd";
    if (archive_read_open(tar.get(), &stream, nullptr, &Stream::read_callback, nullptr) != ARCHIVE_OK) {
        if (stream.error()) throw *stream.error();
        throw Error(label + ": is not a tar stream: " + archive_message(tar.get()), "", 0, not_tar_hint);
    }
    for (bool first = true;; first = false) {
        struct archive_entry* e = nullptr;
        int r = archive_read_next_header(tar.get(), &e);
        if (r == ARCHIVE_EOF) break;
        // ARCHIVE_WARN is fine: e.g. a name that is not valid in the C locale, kept as raw bytes.
        if (r < ARCHIVE_WARN) {
            if (stream.error()) throw *stream.error();
            if (first) throw Error(label + ": is not a tar stream: " + archive_message(tar.get()), "", 0, not_tar_hint);
            throw Error(label + ": the tar stream is damaged after entry " + quoted(extractor.last_entry()) + ": " +
                            archive_message(tar.get()),
                        "", 0, "the layer is truncated or corrupt; pull the image again");
        }
        extractor.entry(tar.get(), e);
    }
    stream.drain();
    extractor.finish();
    UnpackResult result;
    result.diff_id = stream.finish();
    result.bytes = stream.bytes();
    result.skipped_devices = extractor.take_skipped_devices();
    return result;
}

// ---------------------------------------------------------------------------------------------
// Passing a result or an error from the unpacking child back to the parent.

// Fields as "<length>:<bytes>" one after another: no escaping, any byte allowed.
std::string encode(const std::vector<std::string>& fields) {
    std::string out;
    for (const auto& f : fields) out += std::to_string(f.size()) + ":" + f;
    return out;
}

std::optional<std::vector<std::string>> decode(const std::string& text) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t colon = text.find(':', pos);
        if (colon == std::string::npos || colon == pos || colon - pos > 12) return std::nullopt;
        size_t len = 0;
        for (size_t i = pos; i < colon; ++i) {
            if (text[i] < '0' || text[i] > '9') return std::nullopt;
            len = len * 10 + static_cast<size_t>(text[i] - '0');
        }
        if (len > text.size() - colon - 1) return std::nullopt;
        out.push_back(text.substr(colon + 1, len));
        pos = colon + 1 + len;
    }
    return out;
}

std::vector<std::string> result_fields(const UnpackResult& r) {
    std::vector<std::string> f{"ok", r.diff_id, std::to_string(r.bytes)};
    f.insert(f.end(), r.skipped_devices.begin(), r.skipped_devices.end());
    return f;
}

std::vector<std::string> error_fields(const Error& e) {
    return {"error", e.what_failed(), e.where(), std::to_string(e.error_number()), e.hint()};
}

// Runs in the forked child: it must never throw (the exception would unwind into the parent's
// copied stack), so everything ends up as fields in `out_fd` and an exit status.
int unpack_child(int blob_fd, int root_fd, int out_fd, const std::string& label, const UnpackLimits& limits,
                 int64_t compressed_size) noexcept {
    int status = 0;
    std::string message;
    try {
        try {
            message = encode(result_fields(unpack_fds(blob_fd, root_fd, label, limits, compressed_size)));
        } catch (const Error& e) {
            message = encode(error_fields(e));
            status = 1;
        } catch (const std::exception& e) {
            message = encode(error_fields(Error(label + ": " + e.what())));
            status = 1;
        }
    } catch (...) {
        return 3;  // out of memory while reporting
    }
    return pwrite_all(out_fd, message.data(), message.size(), 0) ? status : 2;
}

std::string read_all(int fd) {
    std::string out;
    char buf[8192];
    for (off_t off = 0;;) {
        ssize_t n = ::pread(fd, buf, sizeof buf, off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("cannot read the unpack result");
        if (n == 0) return out;
        out.append(buf, static_cast<size_t>(n));
        off += n;
    }
}

// The child is uid 0 of a user namespace with `map`; the temp dir must be owned by the host ids
// of that root or it could not write there (host root, for one, is not mapped). Only root can
// chown; for an unprivileged caller inside 0 is the caller, who owns it already.
void give_to_sandbox_root(int dir_fd, const IdMap& map, const std::string& dir) {
    auto uid = map.host_uid(0);
    auto gid = map.host_gid(0);
    if (!uid || !gid) fail("the id map has no root user", dir, "check /etc/subuid and /etc/subgid");
    struct stat st;
    if (::fstat(dir_fd, &st) != 0) throw_errno("cannot stat", dir);
    if ((st.st_uid != *uid || st.st_gid != *gid) && ::fchown(dir_fd, *uid, *gid) != 0)
        throw_errno("cannot give the unpack directory to the sandbox's root user", dir);
}

// Unpacks in a child inside a user namespace with `map`, so that chown to the image's owners
// goes through the map (as podman does). The child gets the blob and the directory as open fds:
// it may not be able to traverse the store's 0700 directories owned by the caller.
// A memfd carries the result back: the parent only reads once the child has exited, so a pipe
// could fill up (a long list of skipped devices) and block the child forever.
UnpackResult unpack_as_sandbox_root(const IdMap& map, int blob_fd, const std::string& dir, const std::string& label,
                                    const UnpackLimits& limits, int64_t compressed_size) {
    UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) throw_errno("cannot open the unpack directory", dir);
    give_to_sandbox_root(root.get(), map, dir);
    UniqueFd out(::memfd_create("hutch-unpack-result", MFD_CLOEXEC));
    if (!out) throw_errno("cannot create a memfd for the unpack result");
    int status = idmap::run_as_sandbox_root(map, [&] {
        return unpack_child(blob_fd, root.get(), out.get(), label, limits, compressed_size);
    });
    std::optional<std::vector<std::string>> f = decode(read_all(out.get()));
    if (f && f->size() >= 3 && (*f)[0] == "ok" && status == 0) {
        UnpackResult r;
        r.diff_id = (*f)[1];
        r.bytes = std::stoull((*f)[2]);
        r.skipped_devices.assign(f->begin() + 3, f->end());
        return r;
    }
    if (f && f->size() == 5 && (*f)[0] == "error") throw Error((*f)[1], (*f)[2], std::atoi((*f)[3].c_str()), (*f)[4]);
    fail(label + ": the unpacking process failed", "exit status " + std::to_string(status),
         "check that user namespaces are enabled ('hutch doctor')");
}

// Best effort: the original error matters more than a leftover temp dir (which the store's
// prune sweeps anyway).
void remove_temp(const std::string& dir, const IdMap& map) {
    try {
        state::remove_scratch(dir, map);
    } catch (const Error& e) {
        log::warn(std::string("cannot remove the partial layer: ") + e.what());
    }
}

void warn_skipped_devices(const std::string& label, const std::vector<std::string>& devices) {
    if (devices.empty()) return;
    std::string names;
    for (size_t i = 0; i < devices.size() && i < 10; ++i) names += (i ? ", " : "") + devices[i];
    if (devices.size() > 10) names += ", ...";
    log::warn(label + ": skipped " + std::to_string(devices.size()) +
              " device node(s) that cannot be created without privileges: " + names +
              " (sandboxes get their own /dev, so this only matters for devices elsewhere in the image)");
}

}  // namespace

bool exceeds_ratio(const UnpackLimits& limits, uint64_t out, uint64_t in) {
    return out > limits.ratio_applies_above && static_cast<double>(out) > limits.max_ratio * static_cast<double>(in);
}

std::string ratio_text(const UnpackLimits& limits) {
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%g", limits.max_ratio);
    return ratio;
}

UnpackResult unpack_layer(const std::string& blob_path, const std::string& dest, const UnpackLimits& limits,
                          int64_t compressed_size) {
    UniqueFd blob(::open(blob_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!blob) throw_errno("cannot open the layer", blob_path);
    UniqueFd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) throw_errno("cannot open the unpack directory", dest);
    return unpack_fds(blob.get(), root.get(), layer_label(blob_path), limits, compressed_size);
}

void ensure_layer(Store& store, const IdMap& map, const std::string& blob_digest, const std::string& diff_id,
                  const UnpackLimits& limits) {
    if (store.has_layer(diff_id)) return;
    FileLock lock = store.lock_layer(diff_id);
    if (store.has_layer(diff_id)) return;  // unpacked by whoever held the lock before us
    const std::string label = "layer " + blob_digest;
    const std::string blob_path = store.blob_path(blob_digest);
    UniqueFd blob(::open(blob_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!blob) throw_errno("cannot open the layer blob", blob_path, "pull the image again");
    struct stat st;
    if (::fstat(blob.get(), &st) != 0) throw_errno("cannot stat the layer blob", blob_path);
    const std::string temp = store.new_temp_dir("layer");
    UnpackResult result;
    try {
        result = unpack_as_sandbox_root(map, blob.get(), temp, label, limits, st.st_size);
        if (result.diff_id != diff_id)
            fail(label + " does not match its diff_id " + diff_id + " from the image config: got " + result.diff_id, "",
                 "the image is corrupt or was tampered with; pull it again or ask its publisher");
        store.publish_layer(temp, diff_id);
    } catch (...) {
        remove_temp(temp, map);
        throw;
    }
    warn_skipped_devices(label, result.skipped_devices);
}

}  // namespace hutch::image
