// The image store: content-addressed blobs, unpacked layers, and images.json (see store.hpp).
#include "hutch/image/store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <utility>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/digest.hpp"
#include "hutch/image/reference.hpp"
#include "hutch/sandbox/idmap.hpp"
#include "hutch/sandbox/state.hpp"

namespace hutch::image {

using json = nlohmann::json;

namespace {

constexpr int kIndexVersion = 1;
constexpr size_t kMinIdPrefix = 4;

bool caller_is_root() { return ::geteuid() == 0; }

std::string blobs_dir(const std::string& root) { return root + "/blobs/sha256"; }
std::string layers_dir(const std::string& root) { return root + "/layers"; }
std::string tmp_dir(const std::string& root) { return root + "/tmp"; }
std::string locks_dir(const std::string& root) { return root + "/locks"; }
std::string index_path(const std::string& root) { return root + "/images.json"; }
std::string index_lock_path(const std::string& root) { return root + "/images.lock"; }
std::string writers_lock_path(const std::string& root) { return locks_dir(root) + "/writers.lock"; }
// A layer's pin (Store::pin_layers): a lock file beside the others, since a layer's own directory
// may be one its owner cannot open (mode 000 from the image).
std::string pin_path(const std::string& root, const std::string& hex) { return locks_dir(root) + "/pin-" + hex + ".lock"; }

bool is_linked(const FileLock& lock) {
    struct stat st;
    return ::fstat(lock.fd(), &st) == 0 && st.st_nlink > 0;
}

bool is_hex_string(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}
bool is_hex64(const std::string& s) { return s.size() == 64 && is_hex_string(s); }

std::string short_id(const std::string& id) { return id.substr(id.find(':') + 1, 12); }

// mkdir with an exact mode (mkdir's is masked by the umask) for directories we create.
void make_dir(const std::string& path, mode_t mode) {
    if (fs::make_dirs(path, mode) && ::chmod(path.c_str(), mode) != 0) throw_errno("cannot chmod", path);
}

// Makes a rename durable; failure only weakens crash safety, so it is not an error.
void sync_dir(const std::string& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd) ::fsync(fd.get());
}

std::vector<std::string> list_dir(const std::string& path) {
    std::vector<std::string> out;
    DIR* d = ::opendir(path.c_str());
    if (!d) {
        if (errno == ENOENT) return out;
        throw_errno("cannot list", path);
    }
    while (struct dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name != "." && name != "..") out.push_back(name);
    }
    ::closedir(d);
    return out;
}

int64_t file_size(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

// Apparent size of a tree (hardlinks counted once). Directories we cannot read (subordinate ids'
// private ones, rootless) are skipped: this is for reporting, not accounting.
thread_local int64_t tree_bytes_total;
thread_local std::set<std::pair<dev_t, ino_t>>* tree_bytes_seen;

int tree_bytes_visit(const char*, const struct stat* st, int type, struct FTW*) {
    if (type != FTW_F && type != FTW_SL) return 0;
    if (st->st_nlink > 1 && !tree_bytes_seen->insert({st->st_dev, st->st_ino}).second) return 0;
    tree_bytes_total += st->st_size;
    return 0;
}

int64_t tree_bytes(const std::string& path) {
    std::set<std::pair<dev_t, ino_t>> seen;
    tree_bytes_total = 0;
    tree_bytes_seen = &seen;
    ::nftw(path.c_str(), tree_bytes_visit, 16, FTW_PHYS);
    tree_bytes_seen = nullptr;
    return tree_bytes_total;
}

// Removes a tree that may hold files owned by subordinate ids (unpacked layers, rootless): what
// the caller cannot remove, the sandbox's root can, which state::remove_scratch arranges.
void remove_any_tree(const std::string& path) {
    // Ours, and going away: a 0555 layer root must not stop us (never chmod through a symlink).
    UniqueFd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (dir) ::fchmod(dir.get(), 0700);
    dir.reset();
    try {
        fs::remove_tree(path);
        return;
    } catch (const Error& e) {
        if (caller_is_root() || (e.error_number() != EACCES && e.error_number() != EPERM)) throw;
    }
    state::remove_scratch(path, idmap::for_caller());
}

// Temp entries are named <purpose>-<pid>-<start time>-<random>: the owner is gone when no
// process with that pid and start time exists (a reused pid has another start time).
std::string temp_name(const std::string& purpose) {
    std::string p;
    for (char c : purpose.substr(0, 32))
        p += ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') ? c : '_';
    if (p.empty()) p = "tmp";
    pid_t pid = ::getpid();
    std::random_device rd;
    char rnd[9];
    std::snprintf(rnd, sizeof rnd, "%08x", static_cast<unsigned>(rd()));
    return p + "-" + std::to_string(pid) + "-" + std::to_string(state::process_start_time(pid)) + "-" + rnd;
}

bool temp_owner_alive(const std::string& name) {
    size_t r = name.rfind('-');
    size_t s = r == std::string::npos || r == 0 ? std::string::npos : name.rfind('-', r - 1);
    size_t p = s == std::string::npos || s == 0 ? std::string::npos : name.rfind('-', s - 1);
    if (p == std::string::npos) return false;
    try {
        pid_t pid = static_cast<pid_t>(std::stol(name.substr(p + 1, s - p - 1)));
        unsigned long long start = std::stoull(name.substr(s + 1, r - s - 1));
        if (pid <= 0) return false;
        if (start == 0) return ::kill(pid, 0) == 0 || errno == EPERM;  // no /proc when it was made
        return state::process_start_time(pid) == start;
    } catch (const std::exception&) {
        return false;
    }
}

// ---- images.json ------------------------------------------------------------------------------
//
// {"version": 1, "images": [{"id": "sha256:<config>", "manifest_digest": "sha256:...",
//   "names": ["docker.io/library/busybox:latest"], "layers": ["sha256:<blob>", ...],
//   "diff_ids": ["sha256:...", ...], "size": 2152262, "created": "2024-...Z"}, ...]}

json record_to_json(const ImageRecord& r) {
    return json{{"id", r.id},         {"manifest_digest", r.manifest_digest}, {"names", r.names},
                {"layers", r.layers}, {"diff_ids", r.diff_ids},               {"size", r.size},
                {"created", r.created}};
}

ImageRecord record_from_json(const json& j, const std::string& path) {
    ImageRecord r;
    r.id = j.at("id").get<std::string>();
    r.manifest_digest = j.value("manifest_digest", std::string());
    r.names = j.value("names", std::vector<std::string>{});
    r.layers = j.value("layers", std::vector<std::string>{});
    r.diff_ids = j.value("diff_ids", std::vector<std::string>{});
    r.size = j.value("size", int64_t{0});
    r.created = j.value("created", std::string());
    for (const auto& n : r.names) {
        try {
            Reference::parse(n);
        } catch (const Error& e) {
            fail("corrupt image index", path, std::string(e.what()) + "; restore or delete the file");
        }
    }
    // The digests become paths: a tampered index must not point outside the store.
    std::vector<std::string> digests = r.layers;
    digests.insert(digests.end(), r.diff_ids.begin(), r.diff_ids.end());
    digests.push_back(r.id);
    if (!r.manifest_digest.empty()) digests.push_back(r.manifest_digest);
    for (const auto& d : digests)
        if (!digest::valid(d)) fail("corrupt image index", path, "'" + d + "' is not a sha256 digest; restore or delete the file");
    return r;
}

std::vector<ImageRecord> load_index(const std::string& root) {
    const std::string path = index_path(root);
    std::string text;
    try {
        text = fs::read_file(path);
    } catch (const Error& e) {
        if (e.error_number() == ENOENT) return {};
        throw;
    }
    std::vector<ImageRecord> out;
    try {
        json j = json::parse(text);
        int version = j.at("version").get<int>();
        if (version > kIndexVersion)
            fail("image index was written by a newer hutch", path, "upgrade hutch, or use another --root");
        for (const auto& r : j.at("images")) out.push_back(record_from_json(r, path));
    } catch (const json::exception& e) {
        fail("corrupt image index", path,
             std::string(e.what()) + "; restore it or delete it (its images must then be pulled again)");
    }
    return out;
}

void save_index(const std::string& root, const std::vector<ImageRecord>& images) {
    json list = json::array();
    for (const auto& r : images) list.push_back(record_to_json(r));
    json j{{"version", kIndexVersion}, {"images", list}};
    fs::write_file_atomic(index_path(root), j.dump(2) + "\n", 0600);
}

// ---- resolving names and ids ------------------------------------------------------------------

struct Match {
    size_t index;
    bool by_name;      // an exact name (untagging removes just it)
    std::string name;  // the normalized name when by_name
};

bool contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

void erase_name(std::vector<std::string>& v, const std::string& s) { v.erase(std::remove(v.begin(), v.end(), s), v.end()); }

std::string repository_of(const std::string& name) {
    Reference r = Reference::parse(name);
    return r.registry + "/" + r.repository;
}

std::optional<Match> match_id_prefix(const std::vector<ImageRecord>& images, const std::string& text) {
    std::string hex = text.compare(0, 7, "sha256:") == 0 ? text.substr(7) : text;
    if (hex.size() < kMinIdPrefix || hex.size() > 64 || !is_hex_string(hex)) return std::nullopt;
    std::optional<Match> found;
    for (size_t i = 0; i < images.size(); ++i) {
        if (images[i].id.compare(7, hex.size(), hex) != 0) continue;
        if (found)
            fail("ambiguous image id prefix", text, "it matches several images; give more digits");
        found = Match{i, false, {}};
    }
    return found;
}

// Docker's order: a full id, then a name, then an id prefix (so an image named "abcd" wins over
// ids starting with abcd). With `by_digest`, NAME@DIGEST also finds an image of that repository
// pulled under another name whose manifest has that digest.
std::optional<Match> resolve(const std::vector<ImageRecord>& images, const std::string& text, bool by_digest) {
    std::string full = is_hex64(text) ? "sha256:" + text : text;
    if (digest::valid(full)) {
        for (size_t i = 0; i < images.size(); ++i)
            if (images[i].id == full) return Match{i, false, {}};
        return std::nullopt;
    }
    std::optional<Reference> ref;
    std::optional<Error> bad_name;
    try {
        ref = Reference::parse(text);
    } catch (const Error& e) {
        bad_name = e;
    }
    if (ref) {
        std::string name = ref->str();
        for (size_t i = 0; i < images.size(); ++i)
            if (contains(images[i].names, name)) return Match{i, true, name};
        if (by_digest && !ref->digest.empty()) {
            std::string repo = ref->registry + "/" + ref->repository;
            for (size_t i = 0; i < images.size(); ++i)
                if (images[i].manifest_digest == ref->digest)
                    for (const auto& n : images[i].names)
                        if (repository_of(n) == repo) return Match{i, false, {}};
        }
    }
    if (auto m = match_id_prefix(images, text)) return m;
    if (bad_name) throw *bad_name;
    return std::nullopt;
}

// Normalized, deduplicated names; digests are not tags.
std::vector<std::string> normalize_names(const std::vector<std::string>& names) {
    std::vector<std::string> out;
    for (const auto& n : names) {
        std::string s = Reference::parse(n).str();
        if (!contains(out, s)) out.push_back(s);
    }
    return out;
}

// Moves `names` onto images[target], taking them from any other image (which may become dangling).
void assign_names(std::vector<ImageRecord>& images, size_t target, const std::vector<std::string>& names) {
    for (size_t i = 0; i < images.size(); ++i)
        if (i != target)
            for (const auto& n : names) erase_name(images[i].names, n);
    for (const auto& n : names)
        if (!contains(images[target].names, n)) images[target].names.push_back(n);
}

struct InUse {
    std::set<std::string> blobs;   // hex
    std::set<std::string> layers;  // hex of diff_ids
};

InUse in_use(const std::vector<ImageRecord>& images, bool skip_dangling) {
    InUse u;
    for (const auto& r : images) {
        if (skip_dangling && r.names.empty()) continue;
        u.blobs.insert(digest::hex(r.id));
        if (!r.manifest_digest.empty()) u.blobs.insert(digest::hex(r.manifest_digest));
        for (const auto& l : r.layers) u.blobs.insert(digest::hex(l));
        for (const auto& d : r.diff_ids) u.layers.insert(digest::hex(d));
    }
    return u;
}

// ---- config JSON ------------------------------------------------------------------------------

std::string string_field(const json& j, const char* key, const std::string& source) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (!it->is_string()) fail("invalid image config", source, std::string(key) + " must be a string");
    return it->get<std::string>();
}

std::vector<std::string> strings_field(const json& j, const char* key, const std::string& source) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (!it->is_array()) fail("invalid image config", source, std::string(key) + " must be an array of strings");
    std::vector<std::string> out;
    for (const auto& v : *it) {
        if (!v.is_string()) fail("invalid image config", source, std::string(key) + " must be an array of strings");
        out.push_back(v.get<std::string>());
    }
    return out;
}

std::mutex writers_lock_mutex;  // Store::writers_lock_ may be taken lazily by parallel downloads

}  // namespace

// ---- Config -----------------------------------------------------------------------------------

Config Config::parse(const std::string& text, const std::string& source) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        fail("invalid image config", source, e.what());
    }
    if (!j.is_object()) fail("invalid image config", source, "it is not a JSON object");
    auto rootfs = j.find("rootfs");
    if (rootfs == j.end() || !rootfs->is_object()) fail("invalid image config", source, "it has no rootfs object");
    if (string_field(*rootfs, "type", source) != "layers")
        fail("invalid image config", source, "rootfs.type must be \"layers\"");
    Config c;
    c.diff_ids = strings_field(*rootfs, "diff_ids", source);
    for (const auto& d : c.diff_ids)
        if (!digest::valid(d)) fail("invalid image config", source, "diff_id '" + d + "' is not a sha256 digest");
    c.os = string_field(j, "os", source);
    c.architecture = string_field(j, "architecture", source);
    c.variant = string_field(j, "variant", source);
    c.created = string_field(j, "created", source);
    auto cfg = j.find("config");
    if (cfg != j.end() && !cfg->is_null()) {
        if (!cfg->is_object()) fail("invalid image config", source, "config must be an object");
        c.entrypoint = strings_field(*cfg, "Entrypoint", source);
        c.cmd = strings_field(*cfg, "Cmd", source);
        c.env = strings_field(*cfg, "Env", source);
        c.working_dir = string_field(*cfg, "WorkingDir", source);
        c.user = string_field(*cfg, "User", source);
    }
    return c;
}

// ---- Store ------------------------------------------------------------------------------------

Store::Store(const Paths& paths) : root_(paths.storage) {
    if (root_.empty()) fail("no storage directory for the image store", "", "pass --root DIR");
    // Root's sandboxes (an unprivileged id range) must search their way to layers/<hex>.
    const mode_t shared = caller_is_root() ? 0711 : 0700;
    make_dir(root_, shared);
    make_dir(root_ + "/blobs", 0700);
    make_dir(blobs_dir(root_), 0700);
    make_dir(layers_dir(root_), shared);
    make_dir(tmp_dir(root_), 0700);
    make_dir(locks_dir(root_), 0700);
}

void Store::hold_writers_lock() const {
    std::lock_guard<std::mutex> guard(writers_lock_mutex);
    if (!writers_lock_)
        writers_lock_ = std::make_shared<FileLock>(FileLock::acquire(writers_lock_path(root_), FileLock::Mode::Shared));
}

bool Store::has_blob(const std::string& digest) const { return fs::exists(blob_path(digest)); }

std::string Store::blob_path(const std::string& d) const { return blobs_dir(root_) + "/" + digest::hex(d); }

std::string Store::read_blob(const std::string& d, size_t max_bytes) const {
    const std::string path = blob_path(d);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) fail("blob not found in the image store", d, "pull the image again");
        throw_errno("cannot read blob", path);
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat blob", path);
    if (static_cast<uint64_t>(st.st_size) > max_bytes)
        fail("blob is larger than expected", path,
             std::to_string(st.st_size) + " bytes, at most " + std::to_string(max_bytes) + " allowed here");
    fd.reset();
    std::string data = fs::read_file(path);
    if (data.size() > max_bytes || digest::of(data) != d) {
        // Blobs only appear complete (renamed from tmp/), so this one was damaged on disk; removing
        // it lets the next pull fetch it again instead of finding it "present".
        ::unlink(path.c_str());
        fail("blob is corrupt (its content does not match its digest) and was removed", path, "pull the image again");
    }
    return data;
}

// ---- BlobWriter -------------------------------------------------------------------------------

struct Store::BlobWriter::Impl {
    std::string temp, dest_dir;
    UniqueFd fd;
    digest::Sha256 sha;
    int64_t written = 0;
    bool done = false;
    std::shared_ptr<FileLock> writers;  // keeps prune away while this blob is being written
    ~Impl() {
        if (!done && !temp.empty()) ::unlink(temp.c_str());
    }
};

Store::BlobWriter::BlobWriter() : impl_(new Impl) {}
Store::BlobWriter::BlobWriter(BlobWriter&& o) noexcept : impl_(std::exchange(o.impl_, nullptr)) {}
Store::BlobWriter& Store::BlobWriter::operator=(BlobWriter&& o) noexcept {
    if (this != &o) {
        delete impl_;
        impl_ = std::exchange(o.impl_, nullptr);
    }
    return *this;
}
Store::BlobWriter::~BlobWriter() { delete impl_; }

void Store::BlobWriter::write(const void* data, size_t n) {
    if (!impl_ || impl_->done) fail("blob writer used after commit", "internal error");
    const char* p = static_cast<const char*>(data);
    size_t off = 0;
    while (off < n) {
        ssize_t w = ::write(impl_->fd.get(), p + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw_errno("cannot write blob", impl_->temp, "is the disk full?");
        }
        off += static_cast<size_t>(w);
    }
    impl_->sha.update(data, n);
    impl_->written += static_cast<int64_t>(n);
}

int64_t Store::BlobWriter::written() const { return impl_ ? impl_->written : 0; }

std::string Store::BlobWriter::commit(const std::string& expected_digest, int64_t expected_size) {
    if (!impl_ || impl_->done) fail("blob writer committed twice", "internal error");
    Impl& w = *impl_;
    auto discard = [&] {
        ::unlink(w.temp.c_str());
        w.done = true;
    };
    if (!expected_digest.empty() && !digest::valid(expected_digest)) {
        discard();
        digest::check(expected_digest, "expected blob digest");
    }
    if (::fsync(w.fd.get()) != 0) {
        int err = errno;
        discard();
        throw Error("cannot sync blob", w.temp, err);
    }
    w.fd.reset();
    const std::string actual = w.sha.finish();
    const std::string shown = expected_digest.empty() ? actual : expected_digest;
    if (expected_size >= 0 && w.written != expected_size) {
        discard();
        fail("blob size mismatch", shown,
             "received " + std::to_string(w.written) + " bytes, expected " + std::to_string(expected_size) +
                 "; the source is truncated or corrupt");
    }
    if (!expected_digest.empty() && actual != expected_digest) {
        discard();
        fail("blob digest mismatch", "expected " + expected_digest + ", got " + actual,
             "the data is corrupt or was tampered with");
    }
    const std::string dest = w.dest_dir + "/" + digest::hex(actual);
    if (fs::exists(dest)) {  // a concurrent writer (or an earlier pull) already stored it
        discard();
        return actual;
    }
    if (::rename(w.temp.c_str(), dest.c_str()) != 0) {
        int err = errno;
        discard();
        throw Error("cannot move blob into place", dest, err);
    }
    w.done = true;
    sync_dir(w.dest_dir);
    return actual;
}

Store::BlobWriter Store::begin_blob() {
    hold_writers_lock();
    BlobWriter writer;
    BlobWriter::Impl& w = *writer.impl_;
    w.writers = writers_lock_;
    w.dest_dir = blobs_dir(root_);
    w.temp = tmp_dir(root_) + "/" + temp_name("blob");
    // Blobs are public content (their directory keeps them private); 0644 lets an unpacker that
    // runs as another id in a user namespace read one it was handed by path.
    w.fd.reset(::open(w.temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!w.fd) {
        int err = errno;
        w.temp.clear();
        throw Error("cannot create temporary blob file", tmp_dir(root_), err);
    }
    return writer;
}

std::string Store::put_blob(const std::string& bytes, const std::string& expected_digest) {
    BlobWriter w = begin_blob();
    w.write(bytes.data(), bytes.size());
    return w.commit(expected_digest);
}

// ---- locks ------------------------------------------------------------------------------------

FileLock Store::lock_blob(const std::string& d) const {
    std::string hex = digest::hex(d);
    hold_writers_lock();
    return FileLock::acquire(locks_dir(root_) + "/blob-" + hex + ".lock");
}

FileLock Store::lock_layer(const std::string& diff_id) const {
    std::string hex = digest::hex(diff_id);
    hold_writers_lock();
    return FileLock::acquire(locks_dir(root_) + "/layer-" + hex + ".lock");
}

// ---- layers -----------------------------------------------------------------------------------

bool Store::has_layer(const std::string& diff_id) const {
    struct stat st;
    return ::lstat(layer_path(diff_id).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string Store::layer_path(const std::string& diff_id) const { return layers_dir(root_) + "/" + digest::hex(diff_id); }

std::string Store::new_temp_dir(const std::string& purpose) const {
    hold_writers_lock();
    std::string dir = tmp_dir(root_) + "/" + temp_name(purpose);
    if (::mkdir(dir.c_str(), 0700) != 0) throw_errno("cannot create temporary directory", dir);
    return dir;
}

void Store::publish_layer(const std::string& temp_dir, const std::string& diff_id) {
    const std::string dest = layer_path(diff_id);
    const std::string prefix = tmp_dir(root_) + "/";
    std::string name = temp_dir.compare(0, prefix.size(), prefix) == 0 ? temp_dir.substr(prefix.size()) : "";
    if (name.empty() || name.find('/') != std::string::npos || name == "..")
        fail("cannot publish a layer from outside the store's tmp/", temp_dir, "use Store::new_temp_dir()");
    hold_writers_lock();
    UniqueFd dir(::open(temp_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st;
    if (!dir || ::fstat(dir.get(), &st) != 0) throw_errno("cannot publish layer", temp_dir);
    // Keep the layer root's own mode, but root's sandboxes must be able to search through it.
    if (caller_is_root() && (st.st_mode & 0011) != 0011 && ::fchmod(dir.get(), (st.st_mode & 07777) | 0011) != 0)
        throw_errno("cannot chmod", temp_dir);
    dir.reset();
    int rc = ::renameat2(AT_FDCWD, temp_dir.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
        // A filesystem without RENAME_NOREPLACE: rename(2) would replace only an empty directory.
        rc = fs::exists(dest) ? -1 : ::rename(temp_dir.c_str(), dest.c_str());
        if (rc != 0 && fs::exists(dest)) errno = EEXIST;
    }
    if (rc == 0) {
        sync_dir(layers_dir(root_));
        return;
    }
    if (errno != EEXIST && errno != ENOTEMPTY) throw_errno("cannot publish layer", dest);
    remove_any_tree(temp_dir);  // a concurrent pull published the same layer first
}

// ---- images -----------------------------------------------------------------------------------

ImageRecord Store::add_image(const std::string& manifest_digest, const std::string& config_digest,
                             const std::vector<std::string>& layer_digests, const std::vector<std::string>& names) {
    // Held before the checks below, so a prune cannot remove what they found present.
    hold_writers_lock();
    digest::check(manifest_digest, "manifest digest");
    digest::check(config_digest, "config digest");
    if (!has_blob(manifest_digest))
        fail("manifest blob is not in the image store", manifest_digest, "store it with put_blob() before add_image()");
    Config cfg = Config::parse(read_blob(config_digest), "image config " + config_digest);
    if (cfg.diff_ids.size() != layer_digests.size())
        fail("image manifest and config disagree", config_digest,
             "the manifest lists " + std::to_string(layer_digests.size()) + " layers, the config " +
                 std::to_string(cfg.diff_ids.size()) + " diff_ids");
    ImageRecord rec;
    rec.id = config_digest;
    rec.manifest_digest = manifest_digest;
    rec.layers = layer_digests;
    rec.diff_ids = cfg.diff_ids;
    rec.created = cfg.created;
    for (const auto& l : layer_digests) {
        if (!has_blob(l)) fail("layer blob is not in the image store", l, "the pull did not finish; pull again");
        rec.size += file_size(blob_path(l));
    }
    for (const auto& d : cfg.diff_ids)
        if (!has_layer(d)) fail("layer is not unpacked in the image store", d, "the pull did not finish; pull again");
    std::vector<std::string> wanted = normalize_names(names);

    FileLock lock = FileLock::acquire(index_lock_path(root_), FileLock::Mode::Exclusive);
    std::vector<ImageRecord> images = load_index(root_);
    auto it = std::find_if(images.begin(), images.end(), [&](const ImageRecord& r) { return r.id == rec.id; });
    if (it == images.end()) {
        images.push_back(rec);
        it = images.end() - 1;
    } else {
        rec.names = it->names;  // the same image from another manifest (e.g. recompressed): keep its names
        *it = rec;
    }
    size_t index = static_cast<size_t>(it - images.begin());
    assign_names(images, index, wanted);
    save_index(root_, images);
    return images[index];
}

std::optional<ImageRecord> Store::find(const std::string& name_or_id) const {
    FileLock lock = FileLock::acquire(index_lock_path(root_), FileLock::Mode::Shared);
    std::vector<ImageRecord> images = load_index(root_);
    auto m = resolve(images, name_or_id, true);
    if (!m) return std::nullopt;
    return images[m->index];
}

std::vector<ImageRecord> Store::list() const {
    FileLock lock = FileLock::acquire(index_lock_path(root_), FileLock::Mode::Shared);
    return load_index(root_);
}

Config Store::config(const ImageRecord& image) const {
    return Config::parse(read_blob(image.id), "image config " + image.id);
}

void Store::tag(const std::string& source, const std::string& target) {
    Reference t = Reference::parse(target);
    if (!t.digest.empty()) fail("cannot tag with a digest", target, "give NAME[:TAG]");
    FileLock lock = FileLock::acquire(index_lock_path(root_), FileLock::Mode::Exclusive);
    std::vector<ImageRecord> images = load_index(root_);
    auto m = resolve(images, source, true);
    if (!m) fail("no such image", source, "see 'hutch images'");
    assign_names(images, m->index, {t.str()});
    save_index(root_, images);
}

std::vector<std::string> Store::remove(const std::string& name_or_id, bool force) {
    return remove_detailed(name_or_id, force).deleted;
}

Removal Store::remove_detailed(const std::string& name_or_id, bool force) {
    FileLock lock = FileLock::acquire(index_lock_path(root_), FileLock::Mode::Exclusive);
    std::vector<ImageRecord> images = load_index(root_);
    auto m = resolve(images, name_or_id, false);
    if (!m) fail("no such image", name_or_id, "see 'hutch images'");
    ImageRecord& rec = images[m->index];
    Removal out;
    if (m->by_name) {
        erase_name(rec.names, m->name);
        out.untagged.push_back(m->name);
    } else {
        std::set<std::string> repos;
        for (const auto& n : rec.names) repos.insert(repository_of(n));
        if (repos.size() > 1 && !force)
            fail("image is referenced in multiple repositories", short_id(rec.id),
                 "remove it by name, or with -f to remove it and all its names");
        out.untagged = rec.names;
        rec.names.clear();
    }
    if (rec.names.empty()) {
        out.deleted.push_back(rec.id);
        images.erase(images.begin() + static_cast<std::ptrdiff_t>(m->index));
    }
    save_index(root_, images);
    return out;
}

// ---- prune and disk usage ---------------------------------------------------------------------

// The layers that sandboxes kept in this store stand on (their configs' lower_dirs): a sandbox
// outlives the name of its image, as a docker container does, and must keep its base.
std::set<std::string> sandbox_layers(const std::string& root) {
    std::set<std::string> out;
    const std::string sandboxes = root + "/sandboxes", prefix = layers_dir(root) + "/";
    for (const auto& name : list_dir(sandboxes)) {
        std::string text;
        try {
            text = fs::read_file(sandboxes + "/" + name + "/config.json");
        } catch (const Error& e) {
            // A run's directory, which has no config, or no sandbox's directory (.sweep.lock).
            if (e.error_number() == ENOENT || e.error_number() == ENOTDIR) continue;
            throw;  // unread, its layers would be taken for unused
        }
        json config = json::parse(text, nullptr, false);
        if (!config.is_object() || !config.contains("lower_dirs") || !config["lower_dirs"].is_array()) continue;
        for (const auto& dir : config["lower_dirs"])
            if (dir.is_string() && dir.get<std::string>().rfind(prefix, 0) == 0)
                out.insert(dir.get<std::string>().substr(prefix.size()));
    }
    return out;
}

int64_t Store::prune() {
    {
        std::lock_guard<std::mutex> guard(writers_lock_mutex);
        writers_lock_.reset();  // our own shared hold would make the exclusive one below fail
    }
    FileLock writers = FileLock::try_acquire(writers_lock_path(root_), FileLock::Mode::Exclusive);
    if (!writers)
        fail("cannot prune the image store while images are being pulled or loaded", root_,
             "retry when they finish");
    int64_t freed = 0;
    InUse keep;
    {
        FileLock lock = FileLock::acquire(index_lock_path(root_), FileLock::Mode::Exclusive);
        std::vector<ImageRecord> images = load_index(root_);
        size_t before = images.size();
        images.erase(std::remove_if(images.begin(), images.end(), [](const ImageRecord& r) { return r.names.empty(); }),
                     images.end());
        if (images.size() != before) save_index(root_, images);
        keep = in_use(images, false);
        keep.layers.merge(sandbox_layers(root_));
        // Leftovers of an index rewrite killed midway (no rewrite runs while we hold the lock).
        for (const auto& name : list_dir(root_))
            if (name.rfind("images.json.tmp", 0) == 0) ::unlink((root_ + "/" + name).c_str());
    }
    for (const auto& name : list_dir(blobs_dir(root_))) {
        if (!is_hex64(name) || keep.blobs.count(name)) continue;
        std::string path = blobs_dir(root_) + "/" + name;
        int64_t size = file_size(path);
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove blob", path);
        freed += size;
    }
    // A run that found a layer before its image went holds its pin (pin_layers) until it ends,
    // and `create` until its config names the layer: a layer whose pin is held stays for a later
    // prune, and the configs are read again once the pins are ours (a create that let go of its
    // pin since `keep` was made has its config written by then). In batches, to bound the fds.
    std::vector<std::string> candidates;
    for (const auto& name : list_dir(layers_dir(root_)))
        if (is_hex64(name) && !keep.layers.count(name)) candidates.push_back(name);
    constexpr size_t kBatch = 256;
    for (size_t first = 0; first < candidates.size(); first += kBatch) {
        std::vector<std::pair<std::string, FileLock>> removing;
        for (size_t i = first; i < std::min(candidates.size(), first + kBatch); ++i)
            if (FileLock pin = FileLock::try_acquire(pin_path(root_, candidates[i]), FileLock::Mode::Exclusive))
                removing.emplace_back(candidates[i], std::move(pin));
        if (removing.empty()) continue;
        const std::set<std::string> named = sandbox_layers(root_);
        for (auto& [name, pin] : removing) {
            if (named.count(name)) continue;
            const std::string path = layers_dir(root_) + "/" + name;
            int64_t size = tree_bytes(path);
            remove_any_tree(path);
            ::unlink(pin_path(root_, name).c_str());
            freed += size;
        }
    }
    for (const auto& name : list_dir(tmp_dir(root_))) {
        if (temp_owner_alive(name)) continue;
        std::string path = tmp_dir(root_) + "/" + name;
        int64_t size = tree_bytes(path);
        remove_any_tree(path);
        freed += size;
    }
    for (const auto& name : list_dir(locks_dir(root_))) {
        const std::string path = locks_dir(root_) + "/" + name;
        // Per-blob and per-layer lock files: nobody holds or waits on them, since every holder
        // also holds writers.lock (shared), so removing them cannot split a lock in two.
        if (name.rfind("blob-", 0) == 0 || name.rfind("layer-", 0) == 0) {
            ::unlink(path.c_str());
            continue;
        }
        // Pins of layers that are gone (a run that failed to pin one leaves its file): unlinked
        // under the lock, which a run checks for after it has locked.
        if (name.rfind("pin-", 0) != 0 || name.size() < 9) continue;
        const std::string hex = name.substr(4, name.size() - 9);
        if (!is_hex64(hex) || fs::exists(layers_dir(root_) + "/" + hex)) continue;
        if (FileLock held = FileLock::try_acquire(path, FileLock::Mode::Exclusive)) ::unlink(path.c_str());
    }
    return freed;
}

DiskUsage Store::disk_usage() const {
    std::vector<ImageRecord> images = list();
    DiskUsage u;
    u.images = static_cast<int64_t>(images.size());
    InUse kept = in_use(images, true);  // what survives a prune
    for (const auto& r : images)
        if (r.names.empty()) ++u.dangling_images;
    std::set<std::string> layer_blobs;
    for (const auto& r : images)
        for (const auto& l : r.layers) layer_blobs.insert(l);
    for (const auto& l : layer_blobs) u.image_bytes += file_size(blob_path(l));
    for (const auto& name : list_dir(blobs_dir(root_))) {
        if (!is_hex64(name)) continue;
        int64_t size = file_size(blobs_dir(root_) + "/" + name);
        ++u.blobs;
        u.blob_bytes += size;
        if (!kept.blobs.count(name)) {
            ++u.unreferenced_blobs;
            u.unreferenced_blob_bytes += size;
        }
    }
    for (const auto& name : list_dir(layers_dir(root_))) {
        if (!is_hex64(name)) continue;
        int64_t size = tree_bytes(layers_dir(root_) + "/" + name);
        ++u.layers;
        u.layer_bytes += size;
        if (!kept.layers.count(name)) {
            ++u.unreferenced_layers;
            u.unreferenced_layer_bytes += size;
        }
    }
    return u;
}

std::vector<FileLock> Store::pin_layers(const ImageRecord& image) const {
    std::vector<FileLock> pins;
    for (const auto& diff_id : image.diff_ids) {
        FileLock pin = FileLock::try_acquire(pin_path(root_, digest::hex(diff_id)), FileLock::Mode::Shared);
        // A prune holds it while it removes the layer, and unlinks it after.
        if (!pin || !is_linked(pin) || !has_layer(diff_id))
            fail("a layer of image " + short_id(image.id) + " was removed while the sandbox was starting",
                 layer_path(diff_id), "an 'hutch image prune' ran meanwhile; pull or load the image again");
        pins.push_back(std::move(pin));
    }
    return pins;
}

std::vector<std::string> Store::lower_dirs(const ImageRecord& image) const {
    std::vector<std::string> dirs;
    for (auto it = image.diff_ids.rbegin(); it != image.diff_ids.rend(); ++it) {
        if (!has_layer(*it))
            fail("a layer of image " + short_id(image.id) + " is missing from the store", *it,
                 image.names.empty() ? "pull the image again"
                                     : "pull the image again: hutch pull " + Reference::parse(image.names[0]).familiar());
        dirs.push_back(layer_path(*it));
    }
    return dirs;
}

}  // namespace hutch::image
