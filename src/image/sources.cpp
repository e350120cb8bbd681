// The local transports: an OCI layout directory ("oci:DIR[:TAG]"), an OCI layout in a tar
// ("oci-archive:FILE[:TAG]") and a docker-save archive ("docker-archive:FILE[:REF]", and
// `load -i FILE`, which also takes docker's newer save format that is an OCI layout too).
//
// Archives are extracted into a directory under the store's tmp/ first (regular files and
// directories only; every name checked, so a hostile archive cannot write elsewhere), then read
// like a layout. docker-save layers get their digests computed and an OCI manifest is built for
// them in memory, so pull.cpp sees the same thing from every source. A compressed archive may
// expand no more than a layer may (UnpackLimits).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/log.hpp"
#include "hutch/image/unpack.hpp"
#include "transfer_internal.hpp"

namespace hutch::image::detail {

namespace {

using nlohmann::json;

constexpr const char* kRefNameAnnotation = "org.opencontainers.image.ref.name";
constexpr const char* kContainerdNameAnnotation = "io.containerd.image.name";

// ------------------------------------------------------------------------------------------------
// Names inside archives.

// "a/./b//c" → "a/b/c"; refuses absolute names and any ".." (even one that would stay inside:
// nothing legitimate needs it). Returns "" for the archive's root ("./").
std::string safe_relative(const std::string& name, const std::string& where) {
    if (name.empty()) fail("empty name", where, "the archive is damaged or hostile; nothing was stored");
    if (name[0] == '/') fail("absolute path in archive: " + name, where, "the archive is hostile; nothing was stored");
    std::string out;
    size_t b = 0;
    while (b <= name.size()) {
        size_t e = name.find('/', b);
        if (e == std::string::npos) e = name.size();
        std::string part = name.substr(b, e - b);
        if (part == "..")
            fail("path with '..' in archive: " + name, where, "the archive is hostile; nothing was stored");
        if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
        b = e + 1;
    }
    return out;
}

// Where a symlink at `rel` pointing to `target` leads, lexically, inside the archive.
std::string resolve_link(const std::string& rel, const std::string& target, const std::string& where) {
    if (target.empty() || target[0] == '/')
        fail("symlink out of the archive: " + rel + " -> " + target, where, "the archive is hostile; nothing was stored");
    std::vector<std::string> parts;
    auto slash = rel.find_last_of('/');
    std::string joined = (slash == std::string::npos ? "" : rel.substr(0, slash + 1)) + target;
    size_t b = 0;
    while (b <= joined.size()) {
        size_t e = joined.find('/', b);
        if (e == std::string::npos) e = joined.size();
        std::string part = joined.substr(b, e - b);
        if (part == "..") {
            if (parts.empty())
                fail("symlink out of the archive: " + rel + " -> " + target, where,
                     "the archive is hostile; nothing was stored");
            parts.pop_back();
        } else if (!part.empty() && part != ".") {
            parts.push_back(part);
        }
        b = e + 1;
    }
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
    return out;
}

int openat2_beneath(int dirfd, const std::string& rel, int flags, mode_t mode) {
    struct open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return static_cast<int>(::syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how));
}

// ------------------------------------------------------------------------------------------------
// A directory of image files: a user's OCI layout, or an archive extracted under tmp/ (owned:
// removed with the object; aliases are the archive's symlinks and hardlinks, resolved by name).

class Tree {
public:
    Tree(std::string dir, bool owned, std::string shown) : dir_(std::move(dir)), shown_(std::move(shown)), owned_(owned) {
        fd_.reset(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd_) throw_errno("cannot open", shown_);
    }
    ~Tree() {
        fd_.reset();
        if (owned_) {
            try {
                fs::remove_tree(dir_);
            } catch (const std::exception& e) {
                log::warn(std::string("cannot remove temporary directory: ") + e.what());
            }
        }
    }
    Tree(const Tree&) = delete;
    Tree& operator=(const Tree&) = delete;

    const std::string& shown() const { return shown_; }
    void alias(const std::string& from, const std::string& to) { aliases_[from] = to; }

    std::string resolve(const std::string& name) const {
        std::string rel = safe_relative(name, shown_);
        for (int hops = 0; hops < 40; ++hops) {
            auto it = aliases_.find(rel);
            if (it == aliases_.end()) return rel;
            rel = it->second;
        }
        fail("too many levels of links in archive", shown_ + ": " + name, "the archive is broken");
    }

    bool exists(const std::string& name) const {
        UniqueFd fd(open_raw(resolve(name)));
        return static_cast<bool>(fd);
    }

    UniqueFd open(const std::string& name) const {
        std::string rel = resolve(name);
        UniqueFd fd(open_raw(rel));
        if (!fd) throw_errno("cannot open", shown_ + ": " + rel, "the image layout or archive is incomplete");
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat", shown_ + ": " + rel);
        if (!S_ISREG(st.st_mode)) fail("not a regular file", shown_ + ": " + rel, "the image layout is broken");
        return fd;
    }

    std::string read(const std::string& name, int64_t max) const {
        UniqueFd fd = open(name);
        struct stat st;
        ::fstat(fd.get(), &st);
        if (st.st_size > max)
            fail("file too large (" + std::to_string(st.st_size) + " bytes)", shown_ + ": " + name,
                 "this is not what an image layout holds there");
        std::string out(static_cast<size_t>(st.st_size), '\0');
        size_t off = 0;
        while (off < out.size()) {
            ssize_t n = ::read(fd.get(), out.data() + off, out.size() - off);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("cannot read", shown_ + ": " + name);
            if (n == 0) break;
            off += static_cast<size_t>(n);
        }
        out.resize(off);
        return out;
    }

private:
    int open_raw(const std::string& rel) const {
        // Extracted archives hold no symlinks; a user's own layout may (theirs to decide).
        if (owned_) return openat2_beneath(fd_.get(), rel, O_RDONLY, 0);
        return ::openat(fd_.get(), rel.c_str(), O_RDONLY | O_CLOEXEC);
    }

    std::string dir_, shown_;
    bool owned_;
    UniqueFd fd_;
    std::map<std::string, std::string> aliases_;
};

// Creates (or opens) directory `rel` beneath `root`, one component at a time, never following
// symlinks.
UniqueFd make_dirs_beneath(int root, const std::string& rel, const std::string& where) {
    UniqueFd cur(::fcntl(root, F_DUPFD_CLOEXEC, 0));
    size_t b = 0;
    while (b < rel.size()) {
        size_t e = rel.find('/', b);
        if (e == std::string::npos) e = rel.size();
        std::string part = rel.substr(b, e - b);
        if (::mkdirat(cur.get(), part.c_str(), 0700) != 0 && errno != EEXIST)
            throw_errno("cannot create directory", where + ": " + rel.substr(0, e));
        UniqueFd next(::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) throw_errno("cannot open directory", where + ": " + rel.substr(0, e));
        cur = std::move(next);
        b = e + 1;
    }
    return cur;
}

// A compressed archive may expand at most as a layer may: past UnpackLimits' floor, to max_ratio
// times its size (`docker save | gzip` gives about 3 times), and from a pipe, whose size is not
// known, to max_bytes. A bomb would fill the store's filesystem. An uncompressed archive holds no
// more than its own size (sparse entries' holes take no space).
void check_expansion(struct archive* a, const std::string& file, uint64_t file_size) {
    if (archive_filter_count(a) < 2) return;
    const UnpackLimits limits;
    const la_int64_t out = archive_filter_bytes(a, 0);
    if (out <= 0) return;
    const auto n = static_cast<uint64_t>(out);
    if (file_size == 0) {
        if (n <= limits.max_bytes) return;
        fail("the archive expands to more than " + std::to_string(limits.max_bytes) + " bytes", file,
             "nothing was stored; load it from a file rather than a pipe, or decompress it first");
    }
    if (!exceeds_ratio(limits, n, file_size)) return;
    fail("the archive expands to more than " + ratio_text(limits) + " times its compressed size: a decompression bomb",
         file, "nothing was stored; load only archives from a source you trust");
}

void copy_entry_data(struct archive* a, int fd, const std::string& file, uint64_t file_size, const std::string& where) {
    const void* buf;
    size_t size;
    la_int64_t offset;
    for (;;) {
        int rc = archive_read_data_block(a, &buf, &size, &offset);
        if (rc == ARCHIVE_EOF) return;
        if (rc < ARCHIVE_WARN) fail("cannot read archive", where + ": " + archive_message(a), "the archive is damaged");
        check_expansion(a, file, file_size);
        // Sparse entries: write at the offset libarchive gives.
        const char* p = static_cast<const char*>(buf);
        while (size > 0) {
            ssize_t n = ::pwrite(fd, p, size, offset);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("cannot write", where, "check free space in the store");
            p += n;
            size -= static_cast<size_t>(n);
            offset += n;
        }
    }
}

// Extracts `file` into the fresh directory `dest`: directories and regular files only; symlinks
// and hardlinks become aliases of the Tree; everything else is skipped.
void extract_archive(const std::string& file, const std::string& dest, Tree& tree) {
    struct archive* a = archive_read_new();
    std::unique_ptr<struct archive, int (*)(struct archive*)> guard(a, archive_read_free);
    // `docker save | gzip` is common; docker load takes these four, and so does hutch.
    for (auto support : {archive_read_support_filter_gzip, archive_read_support_filter_bzip2,
                         archive_read_support_filter_xz, archive_read_support_filter_zstd})
        if (support(a) < ARCHIVE_WARN) fail("cannot set up decompression", file, archive_message(a));
    archive_read_support_format_tar(a);
    UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!in || ::fstat(in.get(), &st) != 0) throw_errno("cannot open archive", file);
    const uint64_t file_size = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;  // 0: a pipe
    if (archive_read_open_fd(a, in.get(), 1 << 16) != ARCHIVE_OK)
        fail("cannot open archive", file + ": " + archive_message(a),
             "give a tar file made by docker save, hutch save or skopeo");
    UniqueFd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("cannot open", dest);
    struct archive_entry* e;
    int entries = 0;
    for (;;) {
        int rc = archive_read_next_header(a, &e);
        if (rc == ARCHIVE_EOF) break;
        if (rc < ARCHIVE_WARN)
            fail("cannot read archive", file + ": " + archive_message(a), "is it a tar file (docker save / skopeo)?");
        ++entries;
        const char* raw = archive_entry_pathname(e);
        if (!raw) fail("archive entry without a name", file, "the archive is damaged");
        std::string rel = safe_relative(raw, file);
        if (rel.empty()) continue;
        if (const char* hl = archive_entry_hardlink(e)) {
            tree.alias(rel, safe_relative(hl, file));
            continue;
        }
        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFDIR) {
            make_dirs_beneath(root.get(), rel, dest);
        } else if (type == AE_IFLNK) {
            const char* target = archive_entry_symlink(e);
            tree.alias(rel, resolve_link(rel, target ? target : "", file));
        } else if (type == AE_IFREG) {
            auto slash = rel.find_last_of('/');
            UniqueFd dir = slash == std::string::npos ? UniqueFd(::fcntl(root.get(), F_DUPFD_CLOEXEC, 0))
                                                      : make_dirs_beneath(root.get(), rel.substr(0, slash), dest);
            std::string base = slash == std::string::npos ? rel : rel.substr(slash + 1);
            UniqueFd out(::openat(dir.get(), base.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!out) throw_errno("cannot create", dest + "/" + rel);
            copy_entry_data(a, out.get(), file, file_size, file + ": " + rel);
        } else {
            log::debug("skipping archive entry of another type: " + rel);
        }
    }
    if (entries == 0) fail("empty archive", file, "is it a docker save or OCI archive?");
}

// Extracts an archive into a new temp dir of the store.
std::shared_ptr<Tree> extract_to_temp(const std::string& file, Store& store) {
    struct stat st;
    if (::stat(file.c_str(), &st) != 0) throw_errno("cannot open archive", file);
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
        fail("not an archive file", file, "give a tar file from docker save or skopeo");
    std::string dir = store.new_temp_dir("archive");
    auto tree = std::make_shared<Tree>(dir, true, file);
    extract_archive(file, dir, *tree);
    return tree;
}

// ------------------------------------------------------------------------------------------------
// Copying a local blob into a sink.

void copy_blob(const Tree& tree, const std::string& name, BlobSink& sink) {
    UniqueFd fd = tree.open(name);
    const Descriptor& d = sink.descriptor();
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat", tree.shown() + ": " + name);
    // Bigger than its descriptor: refused before a byte is copied.
    if (d.size >= 0 && st.st_size > d.size)
        fail("blob larger than its descriptor: " + d.digest + " should be " + std::to_string(d.size) + " bytes, is " +
                 std::to_string(st.st_size),
             tree.shown() + ": " + name, "the image layout is broken or hostile; nothing was stored");
    std::vector<char> buf(1 << 20);
    for (;;) {
        if (sink.cancel && sink.cancel->load()) fail("copy cancelled", tree.shown(), "another blob failed");
        ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("cannot read", tree.shown() + ": " + name);
        if (n == 0) break;
        sink.write(buf.data(), static_cast<size_t>(n));
    }
    sink.verify();
}

std::string blob_name(const std::string& digest) { return "blobs/sha256/" + digest::hex(digest); }

// ------------------------------------------------------------------------------------------------
// Names for images from layouts and archives.

// Parses `text` as a full reference; "" when it is not one.
std::string as_reference(const std::string& text) {
    try {
        return Reference::parse(text).str();
    } catch (const Error&) {
        return {};
    }
}

// docker and podman name layout images by full references in their annotations; a bare tag
// ("1.0") names the image "localhost/<layout name>:<tag>", like podman does.
std::string layout_image_name(const Descriptor& d, const std::string& layout_path) {
    if (auto it = d.annotations.find(kContainerdNameAnnotation); it != d.annotations.end())
        if (std::string r = as_reference(it->second); !r.empty()) return r;
    std::string tag;
    if (auto it = d.annotations.find(kRefNameAnnotation); it != d.annotations.end()) {
        tag = it->second;
        if (tag.find('/') != std::string::npos || tag.find(':') != std::string::npos)
            if (std::string r = as_reference(tag); !r.empty()) return r;
    }
    std::string base = layout_path;
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    base = base.substr(base.find_last_of('/') + 1);
    for (const char* ext : {".tar.gz", ".tgz", ".tar"})
        if (base.size() > std::strlen(ext) && base.compare(base.size() - std::strlen(ext), std::string::npos, ext) == 0)
            base.resize(base.size() - std::strlen(ext));
    std::string repo;
    for (char c : base) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        repo += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c : '-';
    }
    while (!repo.empty() && !std::isalnum(static_cast<unsigned char>(repo.front()))) repo.erase(repo.begin());
    while (!repo.empty() && !std::isalnum(static_cast<unsigned char>(repo.back()))) repo.pop_back();
    if (repo.empty()) return {};
    return as_reference("localhost/" + repo + ":" + (tag.empty() ? "latest" : tag));
}

// ------------------------------------------------------------------------------------------------
// OCI layouts.

std::vector<Descriptor> read_layout_index(const Tree& tree) {
    if (!tree.exists("index.json"))
        fail("not an OCI image layout (no index.json)", tree.shown(),
             "give a directory made by skopeo copy oci:…, umoci or buildah");
    json j = json::parse(tree.read("index.json", kMaxManifestBytes), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("manifests") || !j["manifests"].is_array())
        fail("invalid OCI index.json (no manifests array)", tree.shown(), "the layout is broken");
    std::vector<Descriptor> out;
    for (size_t i = 0; i < j["manifests"].size(); ++i)
        out.push_back(Descriptor::from_json(j["manifests"][i], tree.shown() + ": index.json manifests[" +
                                                                   std::to_string(i) + "]"));
    return out;
}

std::string tag_list(const std::vector<Descriptor>& entries) {
    std::string out;
    for (const auto& e : entries)
        if (auto it = e.annotations.find(kRefNameAnnotation); it != e.annotations.end())
            out += (out.empty() ? "" : ", ") + it->second;
    return out.empty() ? "none" : out;
}

// The index.json entry for `tag` (or the only entry when no tag is given).
Descriptor pick_layout_entry(const Tree& tree, const std::string& tag) {
    std::vector<Descriptor> entries = read_layout_index(tree);
    if (entries.empty()) fail("OCI layout holds no image", tree.shown(), "the layout is empty");
    if (tag.empty()) {
        if (entries.size() == 1) return entries[0];
        fail("OCI layout holds " + std::to_string(entries.size()) + " images; name one", tree.shown(),
             "append :TAG (tags: " + tag_list(entries) + ")");
    }
    for (const auto& e : entries)
        if (auto it = e.annotations.find(kRefNameAnnotation); it != e.annotations.end() && it->second == tag) return e;
    fail("no image tagged '" + tag + "' in the OCI layout", tree.shown(), "tags: " + tag_list(entries));
}

class LayoutSource : public ImageSource {
public:
    LayoutSource(std::shared_ptr<Tree> tree, Descriptor entry, std::string display, std::vector<std::string> names)
        : tree_(std::move(tree)), entry_(std::move(entry)), display_(std::move(display)), names_(std::move(names)) {}

    std::string display() const override { return display_; }
    std::vector<std::string> names() const override { return names_; }

    RawManifest root() override { return manifest(entry_); }

    RawManifest manifest(const Descriptor& d) override {
        if (d.size > kMaxManifestBytes) fail("manifest too large", display_ + ": " + d.digest);
        RawManifest m;
        m.bytes = tree_->read(blob_name(d.digest), kMaxManifestBytes);
        verify_bytes(m.bytes, d, display_ + ": manifest");
        m.media_type = d.media_type;
        m.digest = d.digest;
        return m;
    }

    std::string small_blob(const Descriptor& d) override {
        if (d.size > kMaxConfigBytes) fail("config blob too large", display_ + ": " + d.digest);
        std::string bytes = tree_->read(blob_name(d.digest), kMaxConfigBytes);
        verify_bytes(bytes, d, display_ + ": config");
        return bytes;
    }

    void blob(BlobSink& sink) override { copy_blob(*tree_, blob_name(sink.descriptor().digest), sink); }

private:
    std::shared_ptr<Tree> tree_;
    Descriptor entry_;
    std::string display_;
    std::vector<std::string> names_;
};

std::unique_ptr<ImageSource> layout_source(std::shared_ptr<Tree> tree, const std::string& tag,
                                           const std::string& scheme, const std::string& path) {
    Descriptor entry = pick_layout_entry(*tree, tag);
    std::vector<std::string> names;
    if (std::string n = layout_image_name(entry, path); !n.empty()) names.push_back(n);
    return std::make_unique<LayoutSource>(std::move(tree), entry, scheme + ":" + path + (tag.empty() ? "" : ":" + tag),
                                          names);
}

// ------------------------------------------------------------------------------------------------
// docker save archives: manifest.json → Config, RepoTags, Layers (paths in the archive).

struct DockerEntry {
    std::string config;
    std::vector<std::string> repo_tags;
    std::vector<std::string> layers;
};

std::vector<DockerEntry> read_docker_manifest(const Tree& tree) {
    json j = json::parse(tree.read("manifest.json", kMaxManifestBytes), nullptr, false);
    if (j.is_discarded() || !j.is_array())
        fail("invalid manifest.json (not a JSON array)", tree.shown(), "is this a docker save archive?");
    std::vector<DockerEntry> out;
    for (const auto& item : j) {
        if (!item.is_object() || !item.contains("Config") || !item["Config"].is_string() || !item.contains("Layers") ||
            !item["Layers"].is_array())
            fail("invalid manifest.json entry (needs Config and Layers)", tree.shown(), "the archive is broken");
        DockerEntry e;
        e.config = item["Config"].get<std::string>();
        if (item.contains("RepoTags") && item["RepoTags"].is_array())
            for (const auto& t : item["RepoTags"])
                if (t.is_string()) e.repo_tags.push_back(t.get<std::string>());
        for (const auto& l : item["Layers"]) {
            if (!l.is_string()) fail("invalid layer path in manifest.json", tree.shown(), "the archive is broken");
            e.layers.push_back(l.get<std::string>());
        }
        out.push_back(std::move(e));
    }
    if (out.empty()) fail("docker archive holds no image (manifest.json is empty)", tree.shown());
    return out;
}

// The layer media type from the first bytes of the file: docker saves plain tars, but gzip and
// zstd layers are loaded too (and `hutch save` writes the store's compressed blobs).
std::string sniff_layer_type(const unsigned char* p, size_t n) {
    if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b) return media::kOciLayerGzip;
    if (n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) return media::kOciLayerZstd;
    return media::kOciLayerTar;
}

// Digest, size and media type of a file of the archive, read once.
Descriptor describe_file(const Tree& tree, const std::string& name) {
    UniqueFd fd = tree.open(name);
    digest::Sha256 h;
    Descriptor d;
    d.size = 0;
    std::vector<char> buf(1 << 20);
    bool first = true;
    for (;;) {
        ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("cannot read", tree.shown() + ": " + name);
        if (n == 0) break;
        if (first) d.media_type = sniff_layer_type(reinterpret_cast<unsigned char*>(buf.data()), static_cast<size_t>(n));
        first = false;
        h.update(buf.data(), static_cast<size_t>(n));
        d.size += n;
    }
    if (first) d.media_type = media::kOciLayerTar;
    d.digest = h.finish();
    return d;
}

class DockerArchiveSource : public ImageSource {
public:
    DockerArchiveSource(std::shared_ptr<Tree> tree, const DockerEntry& entry, std::string display)
        : tree_(std::move(tree)), display_(std::move(display)) {
        config_ = tree_->read(entry.config, kMaxConfigBytes);
        json layers = json::array();
        for (const auto& l : entry.layers) {
            Descriptor d = describe_file(*tree_, l);
            layer_files_[d.digest] = l;
            layers.push_back({{"mediaType", d.media_type}, {"digest", d.digest}, {"size", d.size}});
        }
        json m = {{"schemaVersion", 2},
                  {"mediaType", media::kOciManifest},
                  {"config", {{"mediaType", media::kOciConfig}, {"digest", digest::of(config_)},
                              {"size", static_cast<int64_t>(config_.size())}}},
                  {"layers", layers}};
        manifest_.bytes = m.dump();
        manifest_.media_type = media::kOciManifest;
        manifest_.digest = digest::of(manifest_.bytes);
        for (const auto& t : entry.repo_tags) {
            std::string r = as_reference(t);
            if (r.empty())
                log::warn("ignoring unparseable RepoTag '" + t + "' in " + tree_->shown());
            else
                names_.push_back(r);
        }
    }

    std::string display() const override { return display_; }
    std::vector<std::string> names() const override { return names_; }
    RawManifest root() override { return manifest_; }
    RawManifest manifest(const Descriptor& d) override {
        fail("docker archive has no manifest " + d.digest, display_, "internal error");
    }
    std::string small_blob(const Descriptor& d) override {
        verify_bytes(config_, d, display_ + ": config");
        return config_;
    }
    void blob(BlobSink& sink) override {
        auto it = layer_files_.find(sink.descriptor().digest);
        if (it == layer_files_.end()) fail("no layer " + sink.descriptor().digest + " in the archive", display_);
        copy_blob(*tree_, it->second, sink);
    }

private:
    std::shared_ptr<Tree> tree_;
    std::string display_;
    std::string config_;
    RawManifest manifest_;
    std::map<std::string, std::string> layer_files_;  // digest → name in the archive
    std::vector<std::string> names_;
};

// The entry of a docker archive tagged `ref`, or the only one.
const DockerEntry& pick_docker_entry(const std::vector<DockerEntry>& entries, const std::string& ref,
                                     const std::string& where) {
    if (ref.empty()) {
        if (entries.size() == 1) return entries[0];
        std::string tags;
        for (const auto& e : entries)
            for (const auto& t : e.repo_tags) tags += (tags.empty() ? "" : ", ") + t;
        fail("docker archive holds " + std::to_string(entries.size()) + " images; name one", where,
             "append :REF (tags: " + (tags.empty() ? "none" : tags) + ")");
    }
    // "@N": the N-th image of the archive, counting from 0 (skopeo's syntax).
    if (ref[0] == '@') {
        size_t n = std::strtoul(ref.c_str() + 1, nullptr, 10);
        if (n >= entries.size())
            fail("no image " + ref + " in the docker archive", where,
                 "it holds " + std::to_string(entries.size()) + " image(s), numbered from @0");
        return entries[n];
    }
    std::string want = as_reference(ref);
    for (const auto& e : entries)
        for (const auto& t : e.repo_tags)
            if (t == ref || (!want.empty() && as_reference(t) == want)) return e;
    fail("no image tagged '" + ref + "' in the docker archive", where, "see its manifest.json RepoTags");
}

}  // namespace

std::unique_ptr<ImageSource> open_local(const Source& source, Store& store) {
    switch (source.kind) {
        case Source::Kind::OciLayout: {
            struct stat st;
            if (::stat(source.path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
                fail("not an OCI layout directory", source.path, "give a directory made by skopeo copy oci:… or umoci");
            auto tree = std::make_shared<Tree>(source.path, false, source.path);
            return layout_source(tree, source.tag, "oci", source.path);
        }
        case Source::Kind::OciArchive: {
            auto tree = extract_to_temp(source.path, store);
            return layout_source(tree, source.tag, "oci-archive", source.path);
        }
        case Source::Kind::DockerArchive: {
            auto tree = extract_to_temp(source.path, store);
            if (!tree->exists("manifest.json"))
                fail("not a docker archive (no manifest.json)", source.path,
                     "for an OCI archive use oci-archive:" + source.path);
            auto entries = read_docker_manifest(*tree);
            const DockerEntry& e = pick_docker_entry(entries, source.tag, source.path);
            return std::make_unique<DockerArchiveSource>(
                tree, e, "docker-archive:" + source.path + (source.tag.empty() ? "" : ":" + source.tag));
        }
        case Source::Kind::Registry:
            break;
    }
    fail("not a local image source", source.path, "internal error");
}

std::vector<std::unique_ptr<ImageSource>> open_archive_images(const std::string& file, Store& store) {
    auto tree = extract_to_temp(file, store);
    std::vector<std::unique_ptr<ImageSource>> out;
    // docker's newer save format is also an OCI layout; its manifest.json names the images with
    // their tags, so it wins.
    if (tree->exists("manifest.json")) {
        auto entries = read_docker_manifest(*tree);
        for (size_t i = 0; i < entries.size(); ++i) {
            std::string shown = file;
            if (!entries[i].repo_tags.empty()) shown += " (" + entries[i].repo_tags[0] + ")";
            else if (entries.size() > 1) shown += " (image " + std::to_string(i + 1) + ")";
            out.push_back(std::make_unique<DockerArchiveSource>(tree, entries[i], shown));
        }
        return out;
    }
    if (tree->exists("index.json")) {
        for (const auto& entry : read_layout_index(*tree)) {
            std::vector<std::string> names;
            if (std::string n = layout_image_name(entry, file); !n.empty()) names.push_back(n);
            std::string shown = file;
            if (auto it = entry.annotations.find(kRefNameAnnotation); it != entry.annotations.end())
                shown += ":" + it->second;
            out.push_back(std::make_unique<LayoutSource>(tree, entry, shown, names));
        }
        if (out.empty()) fail("OCI archive holds no image", file, "the archive is empty");
        return out;
    }
    fail("not an image archive (neither manifest.json nor index.json)", file,
         "give a file made by docker save, hutch save or skopeo copy … docker-archive:/oci-archive:");
}

}  // namespace hutch::image::detail
