// Pulling, loading, saving, logging in: the orchestration over ImageSource (registry.cpp,
// sources.cpp). One path for every source:
//   manifest or index → platform manifest → config (parsed) → layer blobs (in parallel, each
//   under its blob lock) → layers unpacked in order → config and manifest blobs → image record.
// The record is written last, so a pull that fails or is killed never leaves a name behind; blobs
// and layers that did arrive stay as cache (prune removes them), except the blob of a layer that
// failed to unpack, which is deleted so nothing hostile lingers.
#include <archive.h>
#include <archive_entry.h>

#include <cstring>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>

#include "hutch/core/error.hpp"
#include "hutch/core/fd.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/log.hpp"
#include "transfer_internal.hpp"

namespace hutch::image {

namespace detail {

using nlohmann::json;

// ------------------------------------------------------------------------------------------------
// The manifest model.

Descriptor Descriptor::from_json(const json& j, const std::string& where) {
    if (!j.is_object()) fail("invalid descriptor (not an object)", where);
    Descriptor d;
    auto str = [&](const char* k) -> std::string {
        auto it = j.find(k);
        return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    d.media_type = str("mediaType");
    d.digest = str("digest");
    digest::check(d.digest, where);
    auto size = j.find("size");
    if (size == j.end() || !size->is_number_integer() || size->get<int64_t>() < 0)
        fail("invalid descriptor: missing or negative size for " + d.digest, where, "the manifest is broken");
    d.size = size->get<int64_t>();
    if (auto p = j.find("platform"); p != j.end() && p->is_object()) {
        auto pstr = [&](const char* k) -> std::string {
            auto it = p->find(k);
            return it != p->end() && it->is_string() ? it->get<std::string>() : std::string();
        };
        d.os = pstr("os");
        d.architecture = pstr("architecture");
        d.variant = pstr("variant");
    }
    if (auto a = j.find("annotations"); a != j.end() && a->is_object())
        for (const auto& [k, v] : a->items())
            if (v.is_string()) d.annotations[k] = v.get<std::string>();
    return d;
}

std::string Descriptor::platform() const {
    std::string p = (os.empty() ? "?" : os) + "/" + (architecture.empty() ? "?" : architecture);
    if (!variant.empty()) p += "/" + variant;
    return p;
}

namespace {

bool is_known_manifest_type(const std::string& t) {
    return t == media::kOciIndex || t == media::kOciManifest || t == media::kDockerList || t == media::kDockerManifest;
}

bool is_index_type(const std::string& t) { return t == media::kOciIndex || t == media::kDockerList; }

// What registries and layouts send when they do not know better.
bool is_generic_type(const std::string& t) {
    return t.empty() || t == "application/json" || t == "text/plain" || t == "application/octet-stream" ||
           t == "binary/octet-stream";
}

[[noreturn]] void schema1(const std::string& where) {
    fail("unsupported manifest: Docker schema 1", where,
         "schema 1 images are deprecated; re-push the image with a current docker or skopeo");
}

}  // namespace

bool classify(RawManifest& m, const std::string& where) {
    json j = json::parse(m.bytes, nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail("manifest is not a JSON object", where, "the registry sent garbage");
    if (m.media_type == media::kDockerSchema1 || m.media_type == media::kDockerSchema1Signed) schema1(where);
    if (auto v = j.find("schemaVersion"); v != j.end() && v->is_number_integer() && v->get<int>() == 1)
        schema1(where);
    std::string doc = j.contains("mediaType") && j["mediaType"].is_string() ? j["mediaType"].get<std::string>() : "";
    std::string served = m.media_type;
    std::string type;
    if (is_known_manifest_type(served)) {
        // A document claiming another type than it was served as is how confusion attacks start.
        if (!doc.empty() && doc != served)
            fail("manifest media type mismatch: served as " + served + ", the document says " + doc, where,
                 "the registry or the image is broken");
        type = served;
    } else if (is_generic_type(served) && is_known_manifest_type(doc)) {
        type = doc;
    } else if (is_generic_type(served) && doc.empty()) {
        // OCI allows manifests without mediaType; tell them apart by shape.
        if (j.contains("manifests") && j["manifests"].is_array())
            type = media::kOciIndex;
        else if (j.contains("config") && j.contains("layers"))
            type = media::kOciManifest;
        else
            fail("unrecognised manifest (neither an index nor an image manifest)", where, "is this a container image?");
    } else {
        fail("unsupported manifest media type: " + (is_generic_type(served) ? doc : served), where,
             "hutch pulls OCI images and indexes and Docker schema 2 manifests and manifest lists");
    }
    m.media_type = type;
    return is_index_type(type);
}

ImageManifest ImageManifest::parse(const RawManifest& m, const std::string& where) {
    json j = json::parse(m.bytes, nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail("manifest is not a JSON object", where);
    if (!j.contains("config")) fail("manifest has no config", where, "the manifest is broken");
    ImageManifest im;
    im.config = Descriptor::from_json(j["config"], where + ": config");
    auto layers = j.find("layers");
    if (layers == j.end() || !layers->is_array()) fail("manifest has no layers array", where, "the manifest is broken");
    for (size_t i = 0; i < layers->size(); ++i)
        im.layers.push_back(Descriptor::from_json((*layers)[i], where + ": layer " + std::to_string(i + 1)));
    const std::string& ct = im.config.media_type;
    if (ct != media::kOciConfig && ct != media::kDockerConfig)
        fail("unsupported config media type: " + (ct.empty() ? "(none)" : ct), where,
             "this is not a container image (an OCI artifact?)");
    return im;
}

void check_layer_media_type(const Descriptor& layer, const std::string& where) {
    static const std::set<std::string> ok = {media::kOciLayerTar, media::kOciLayerGzip, media::kOciLayerZstd,
                                             media::kDockerLayerGzip, media::kDockerLayerTar};
    const std::string& t = layer.media_type;
    if (ok.count(t)) return;
    if (t.find("+encrypted") != std::string::npos)
        fail("encrypted layer not supported: " + layer.digest + " (" + t + ")", where,
             "decrypt the image first, e.g. with skopeo copy --decryption-key");
    if (t.find("nondistributable") != std::string::npos || t.find("foreign") != std::string::npos)
        fail("foreign (non-distributable) layer not supported: " + layer.digest + " (" + t + ")", where,
             "such layers live outside the registry; copy the image with skopeo --preserve-digests first");
    fail("unsupported layer media type: " + (t.empty() ? "(none)" : t) + " for " + layer.digest, where,
         "hutch unpacks tar, tar+gzip and tar+zstd layers");
}

BlobSink::BlobSink(Store::BlobWriter& writer, const Descriptor& d, std::string where)
    : writer_(writer), d_(d), where_(std::move(where)) {}

void BlobSink::write(const void* data, size_t n) {
    if (d_.size >= 0 && received_ + static_cast<int64_t>(n) > d_.size)
        fail("blob larger than its descriptor: " + d_.digest + " should be " + std::to_string(d_.size) +
                 " bytes, more arrived",
             where_, "the manifest or the source's copy is wrong; nothing was stored");
    hash_.update(data, n);
    writer_.write(data, n);
    received_ += static_cast<int64_t>(n);
    if (on_progress) on_progress(received_);
}

void BlobSink::verify() {
    if (d_.size >= 0 && received_ != d_.size)
        fail("blob shorter than its descriptor: " + d_.digest + " got " + std::to_string(received_) + " of " +
                 std::to_string(d_.size) + " bytes",
             where_, "the transfer was cut short or the source's copy is truncated; retry");
    std::string got = hash_.finish();
    if (got != d_.digest)
        fail("digest mismatch: blob " + d_.digest + " hashes to " + got, where_,
             "the source's copy is corrupt or was tampered with; nothing was stored");
}

void verify_bytes(const std::string& data, const Descriptor& d, const std::string& where) {
    if (d.size >= 0 && static_cast<int64_t>(data.size()) != d.size)
        fail("size mismatch: " + d.digest + " is " + std::to_string(data.size()) + " bytes, its descriptor says " +
                 std::to_string(d.size),
             where, "the source's copy is corrupt or was tampered with; nothing was stored");
    std::string got = digest::of(data);
    if (got != d.digest)
        fail("digest mismatch: " + d.digest + " hashes to " + got, where,
             "the source's copy is corrupt or was tampered with; nothing was stored");
}

}  // namespace detail

namespace {

using namespace detail;
using nlohmann::json;

// ------------------------------------------------------------------------------------------------
// Progress: a live per-layer display on a terminal, plain lines otherwise, nothing when quiet.

std::string human_size(int64_t n) {
    const char* units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1000 && u < 4) {
        v /= 1000;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
    return buf;
}

std::string short_digest(const std::string& d) { return d.size() > 19 ? d.substr(0, 19) + "…" : d; }

class Progress {
public:
    enum class State { Waiting, Downloading, Downloaded, Present, Extracting, Done, Failed };

    explicit Progress(bool quiet) : quiet_(quiet), tty_(!quiet && ::isatty(2)) {}
    ~Progress() { stop(); }

    void line(const std::string& text) {
        if (quiet_) return;
        std::lock_guard lk(mu_);
        erase_locked();
        std::fprintf(stderr, "%s\n", text.c_str());
        std::fflush(stderr);
        drawn_ = 0;
        draw_locked();
    }

    // A heading shown once the layers are known, so that a pull failing on its manifest (a typo,
    // a 401, no such platform) prints its one error line and nothing else.
    void heading(const std::string& text) {
        std::lock_guard lk(mu_);
        heading_ = text;
    }

    // A new set of layers (one image); starts the redraw thread on a terminal.
    void begin(const std::vector<Descriptor>& layers) {
        std::lock_guard lk(mu_);
        if (!quiet_ && !heading_.empty()) {
            std::fprintf(stderr, "%s\n", heading_.c_str());
            std::fflush(stderr);
            heading_.clear();
        }
        rows_.clear();
        for (const auto& d : layers) rows_.push_back(Row{d.digest, d.size, 0, State::Waiting});
        drawn_ = 0;
        if (tty_ && !thread_.joinable()) {
            stop_ = false;
            thread_ = std::thread([this] { redraw_loop(); });
        }
    }

    void bytes(size_t i, int64_t n) {
        std::lock_guard lk(mu_);
        if (i < rows_.size()) {
            rows_[i].bytes = n;
            rows_[i].state = State::Downloading;
        }
    }

    void state(size_t i, State s) {
        if (quiet_) return;
        std::lock_guard lk(mu_);
        if (i >= rows_.size()) return;
        rows_[i].state = s;
        if (s == State::Downloaded) rows_[i].bytes = rows_[i].total;
        if (!tty_) {
            // Plain output: one line per layer when its blob is in the store.
            if (s == State::Downloaded)
                std::fprintf(stderr, "layer %s done %s\n", short_digest(rows_[i].digest).c_str(),
                             human_size(rows_[i].total).c_str());
            else if (s == State::Present)
                std::fprintf(stderr, "layer %s already present\n", short_digest(rows_[i].digest).c_str());
            std::fflush(stderr);
        } else {
            draw_locked();
        }
    }

    // Stops the redraw thread, leaving the final state on screen.
    void stop() {
        {
            std::lock_guard lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
        std::lock_guard lk(mu_);
        draw_locked();
        drawn_ = 0;  // what is on screen stays; the next image draws below it
        rows_.clear();
    }

private:
    struct Row {
        std::string digest;
        int64_t total, bytes;
        State state;
    };

    static const char* name(State s) {
        switch (s) {
            case State::Waiting: return "waiting";
            case State::Downloading: return "downloading";
            case State::Downloaded: return "downloaded";
            case State::Present: return "already present";
            case State::Extracting: return "extracting";
            case State::Done: return "done";
            case State::Failed: return "failed";
        }
        return "";
    }

    void redraw_loop() {
        std::unique_lock lk(mu_);
        while (!stop_) {
            draw_locked();
            cv_.wait_for(lk, std::chrono::milliseconds(150));
        }
    }

    void erase_locked() {
        if (!tty_ || drawn_ == 0) return;
        std::fprintf(stderr, "\x1b[%dA", drawn_);
        for (int i = 0; i < drawn_; ++i) std::fprintf(stderr, "\x1b[2K\n");
        std::fprintf(stderr, "\x1b[%dA", drawn_);
        drawn_ = 0;
    }

    // Redraws every row in place: cursor up over the previous drawing, rewrite each line.
    void draw_locked() {
        if (!tty_ || rows_.empty()) return;
        struct winsize ws{};
        size_t width = ::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10 ? ws.ws_col - 1 : 79;
        if (drawn_ > 0) std::fprintf(stderr, "\x1b[%dA", drawn_);
        for (const auto& r : rows_) {
            std::string text = short_digest(r.digest) + "  " + name(r.state);
            if (r.state == State::Downloading)
                text += "  " + human_size(r.bytes) + " / " + human_size(r.total);
            else if (r.state != State::Waiting && r.state != State::Present)
                text += "  " + human_size(r.total);
            // A wrapped line would break the cursor arithmetic; cut it (by bytes: the text is ASCII
            // apart from the ellipsis, which sits before any cut point that matters).
            if (text.size() > width + 2) text.resize(width + 2);
            std::fprintf(stderr, "\r\x1b[2K%s\n", text.c_str());
        }
        drawn_ = static_cast<int>(rows_.size());
        std::fflush(stderr);
    }

    bool quiet_, tty_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::thread thread_;
    bool stop_ = false;
    std::vector<Row> rows_;
    int drawn_ = 0;
    std::string heading_;
};

// ------------------------------------------------------------------------------------------------
// Platforms.

struct Platform {
    std::string os, arch, variant;
    std::string str() const { return os + "/" + arch + (variant.empty() ? "" : "/" + variant); }
};

std::string normalize_arch(std::string a) {
    if (a == "x86_64" || a == "x86-64") return "amd64";
    if (a == "aarch64") return "arm64";
    return a;
}

Platform parse_platform(const std::string& text) {
    Platform p;
    std::vector<std::string> parts;
    size_t b = 0;
    for (size_t e; (e = text.find('/', b)) != std::string::npos; b = e + 1) parts.push_back(text.substr(b, e - b));
    parts.push_back(text.substr(b));
    if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty())
        fail("invalid platform", "'" + text + "'", "use os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8");
    p.os = parts[0];
    p.arch = normalize_arch(parts[1]);
    if (parts.size() == 3) p.variant = parts[2];
    return p;
}

// arm64's only variant is v8, so "no variant" and "v8" are the same platform.
std::string normalize_variant(const std::string& arch, const std::string& variant) {
    return arch == "arm64" && variant == "v8" ? "" : variant;
}

bool platform_matches(const Descriptor& d, const Platform& want) {
    if (d.os != want.os || normalize_arch(d.architecture) != want.arch) return false;
    if (want.variant.empty()) return true;
    return normalize_variant(want.arch, d.variant) == normalize_variant(want.arch, want.variant);
}

// Picks the entry of an index for `want`; the error lists what the index offers.
Descriptor pick_platform(const RawManifest& index, const Platform& want, const std::string& where) {
    json j = json::parse(index.bytes, nullptr, false);
    if (!j.contains("manifests") || !j["manifests"].is_array()) fail("index has no manifests array", where);
    std::vector<Descriptor> entries;
    for (size_t i = 0; i < j["manifests"].size(); ++i)
        entries.push_back(Descriptor::from_json(j["manifests"][i], where + ": manifests[" + std::to_string(i) + "]"));
    // Exact variant first (or no variant when none was asked for), then any variant.
    const Descriptor* best = nullptr;
    for (const auto& e : entries) {
        if (!platform_matches(e, want)) continue;
        if (!best || (want.variant.empty() && e.variant.empty() && !best->variant.empty())) best = &e;
    }
    if (best) return *best;
    // An index whose single entry has no platform (some OCI layouts): take it, the config decides.
    if (entries.size() == 1 && entries[0].os.empty()) return entries[0];
    std::vector<std::string> offered;
    for (const auto& e : entries)
        if (!e.os.empty() && e.os != "unknown" &&
            std::find(offered.begin(), offered.end(), e.platform()) == offered.end())
            offered.push_back(e.platform());
    std::string list;
    for (const auto& o : offered) list += (list.empty() ? "" : ", ") + o;
    fail("no image for platform " + want.str() + " in " + where, "available: " + (list.empty() ? "none" : list),
         "pass --platform with one of those");
}

// Follows indexes (at most a few levels) down to the image manifest for the platform.
RawManifest resolve_manifest(ImageSource& src, const Platform& want) {
    RawManifest m = src.root();
    for (int depth = 0;; ++depth) {
        if (!classify(m, src.display())) return m;
        if (depth >= 3) fail("indexes nested too deeply", src.display(), "the image is broken");
        Descriptor d = pick_platform(m, want, src.display());
        log::debug("platform " + want.str() + " of " + src.display() + " is " + d.digest);
        std::string type = d.media_type;
        m = src.manifest(d);
        if (m.media_type.empty() || is_generic_type(m.media_type)) m.media_type = type;
    }
}

// ------------------------------------------------------------------------------------------------
// Blobs and layers.

// Fetches the layer blobs the store lacks, `parallel` at a time. Each blob is fetched under its
// lock, so of two pulls sharing a layer the second waits and then finds it present. Returns the
// digests this call downloaded.
std::set<std::string> fetch_blobs(Store& store, ImageSource& src, const std::vector<Descriptor>& layers,
                                  int parallel, Progress& progress) {
    std::mutex mu;
    std::set<std::string> fetched;
    std::set<std::string> seen;
    std::vector<size_t> todo;  // an image may list the same blob twice: fetch it once
    for (size_t i = 0; i < layers.size(); ++i)
        if (seen.insert(layers[i].digest).second) todo.push_back(i);
    std::atomic<size_t> next{0};
    std::atomic<bool> cancel{false};
    std::exception_ptr first_error;

    auto fetch_one = [&](size_t i) {
        const Descriptor& d = layers[i];
        FileLock lock = store.lock_blob(d.digest);
        if (store.has_blob(d.digest)) {
            progress.state(i, Progress::State::Present);
            return;
        }
        Store::BlobWriter writer = store.begin_blob();
        BlobSink sink(writer, d, src.display());
        sink.cancel = &cancel;
        sink.on_progress = [&progress, i](int64_t n) { progress.bytes(i, n); };
        src.blob(sink);
        writer.commit(d.digest, d.size);
        {
            std::lock_guard lk(mu);
            fetched.insert(d.digest);
        }
        progress.state(i, Progress::State::Downloaded);
    };
    auto worker = [&] {
        for (size_t k; !cancel && (k = next++) < todo.size();) {
            try {
                fetch_one(todo[k]);
            } catch (...) {
                std::lock_guard lk(mu);
                if (!first_error) first_error = std::current_exception();
                progress.state(todo[k], Progress::State::Failed);
                cancel = true;  // the other downloads abort at their next callback
            }
        }
    };
    size_t n = src.remote() ? static_cast<size_t>(std::clamp(parallel, 1, 16)) : 1;
    n = std::min(n, todo.size());
    if (n <= 1) {
        worker();
    } else {
        std::vector<std::thread> threads;
        for (size_t t = 0; t < n; ++t) threads.emplace_back(worker);
        for (auto& t : threads) t.join();
    }
    if (first_error) std::rethrow_exception(first_error);
    return fetched;
}

// A blob whose layer failed to unpack (hostile, or not what the config says) must not stay.
// Only blobs this pull fetched are removed: an older blob may belong to another image.
void discard_blob(Store& store, const std::string& blob, const std::string& diff_id) {
    // Called while an error is on its way out: nothing here may replace it.
    try {
        FileLock lock = store.lock_blob(blob);
        if (store.has_layer(diff_id)) return;
        const std::string path = store.blob_path(blob);
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
            int err = errno;
            log::warn("cannot remove the blob of a refused layer: " + path + ": " + std::strerror(err));
        }
    } catch (const Error& e) {
        log::warn(std::string("cannot remove the blob of a refused layer: ") + e.what());
    }
}

// Unpacks the layers bottom to top (each into the store once, under its layer lock).
void unpack_layers(Store& store, const IdMap& map, const ImageManifest& im, const Config& cfg,
                   const std::set<std::string>& fetched, const PullOptions& options, Progress& progress,
                   const std::string& where) {
    for (size_t i = 0; i < im.layers.size(); ++i) {
        const Descriptor& d = im.layers[i];
        progress.state(i, Progress::State::Extracting);
        try {
            ensure_layer(store, map, d.digest, cfg.diff_ids[i], options.limits);
        } catch (const Error& e) {
            progress.state(i, Progress::State::Failed);
            if (fetched.count(d.digest)) discard_blob(store, d.digest, cfg.diff_ids[i]);
            throw Error("layer " + std::to_string(i + 1) + " of " + where + " (" + d.digest + ") refused: " +
                            e.what_failed(),
                        e.where(), e.error_number(), e.hint().empty() ? "nothing of it was stored" : e.hint());
        } catch (...) {
            progress.state(i, Progress::State::Failed);
            if (fetched.count(d.digest)) discard_blob(store, d.digest, cfg.diff_ids[i]);
            throw;
        }
        progress.state(i, Progress::State::Done);
    }
}

void warn_platform_mismatch(const Config& cfg, const Platform& want, const std::string& where) {
    if (cfg.os.empty() || cfg.architecture.empty()) return;
    if (cfg.os == want.os && normalize_arch(cfg.architecture) == want.arch) return;
    log::warn(where + " is for " + cfg.os + "/" + cfg.architecture + ", not " + want.str() +
              " (it has no index to choose from)");
}

// Everything of one image from `src` into the store; the record is the last thing written.
ImageRecord import_image(Store& store, const IdMap& map, ImageSource& src, const PullOptions& options,
                         std::vector<std::string> names, Progress& progress) {
    const std::string where = src.display();
    Platform want = parse_platform(options.platform);
    RawManifest m = resolve_manifest(src, want);
    ImageManifest im = ImageManifest::parse(m, where);
    for (size_t i = 0; i < im.layers.size(); ++i)
        check_layer_media_type(im.layers[i], where + ": layer " + std::to_string(i + 1));
    std::string config_bytes = src.small_blob(im.config);
    Config cfg = Config::parse(config_bytes, where + ": config " + im.config.digest);
    if (cfg.diff_ids.size() != im.layers.size())
        fail("manifest and config disagree: " + std::to_string(im.layers.size()) + " layers but " +
                 std::to_string(cfg.diff_ids.size()) + " diff_ids",
             where, "the image is broken");
    warn_platform_mismatch(cfg, want, where);

    progress.begin(im.layers);
    std::set<std::string> fetched;
    try {
        fetched = fetch_blobs(store, src, im.layers, options.parallel, progress);
        unpack_layers(store, map, im, cfg, fetched, options, progress, where);
    } catch (...) {
        progress.stop();
        throw;
    }
    progress.stop();

    store.put_blob(config_bytes, im.config.digest);
    store.put_blob(m.bytes, m.digest);
    std::vector<std::string> layer_digests;
    for (const auto& l : im.layers) layer_digests.push_back(l.digest);
    return store.add_image(m.digest, im.config.digest, layer_digests, names);
}

std::vector<std::string> with_extra(std::vector<std::string> names, const std::vector<std::string>& extra) {
    for (const auto& n : extra)
        if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    return names;
}

}  // namespace

ImageRecord pull(Store& store, const IdMap& map, const std::string& source, const PullOptions& options,
                 const std::vector<std::string>& extra_names) {
    Source s = Source::parse(source);
    std::unique_ptr<ImageSource> src =
        s.kind == Source::Kind::Registry ? open_registry(s.ref, options) : open_local(s, store);
    Progress progress(options.quiet);
    progress.heading("Pulling " + src->display());
    std::vector<std::string> names = with_extra(src->names(), extra_names);
    ImageRecord rec = import_image(store, map, *src, options, names, progress);
    progress.line("Pulled " + src->display() + " (" + rec.id + ")");
    // The names this pull gave first (the image may have had others already).
    std::stable_partition(rec.names.begin(), rec.names.end(), [&](const std::string& n) {
        return std::find(names.begin(), names.end(), n) != names.end();
    });
    return rec;
}

std::vector<ImageRecord> load(Store& store, const IdMap& map, const std::string& file, const PullOptions& options) {
    std::vector<std::unique_ptr<ImageSource>> sources = open_archive_images(file, store);
    Progress progress(options.quiet);
    std::vector<ImageRecord> out;
    for (auto& src : sources) {
        progress.heading("Loading " + src->display());
        std::vector<std::string> names = src->names();
        ImageRecord rec = import_image(store, map, *src, options, names, progress);
        // What this load named (normalized as the store does); older names are not news.
        std::vector<std::string> loaded;
        for (const auto& n : rec.names)
            if (std::find(names.begin(), names.end(), n) != names.end()) loaded.push_back(n);
        rec.names = loaded;
        out.push_back(rec);
    }
    return out;
}

// ------------------------------------------------------------------------------------------------
// save: a docker-archive (manifest.json, <config hex>.json, <layer hex>/layer.tar).

namespace {

struct ArchiveWriter {
    struct archive* a = nullptr;
    std::string path;

    explicit ArchiveWriter(const std::string& p) : path(p) {
        a = archive_write_new();
        if (!a) fail("cannot create an archive writer", p);
        // pax keeps long names and big sizes; docker load and skopeo read it.
        if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
            archive_write_open_filename(a, p.c_str()) != ARCHIVE_OK)
            fail("cannot write archive", p + ": " + archive_message(a), "check the path and free space");
    }
    ~ArchiveWriter() {
        if (a) archive_write_free(a);
    }
    void check(int rc, const std::string& what) {
        if (rc < ARCHIVE_WARN)
            fail("cannot write " + what + " into the archive", path + ": " + archive_message(a),
                 "check free space");
    }
    void header(const std::string& name, int64_t size, mode_t type, mode_t mode) {
        struct archive_entry* e = archive_entry_new();
        archive_entry_set_pathname(e, name.c_str());
        archive_entry_set_size(e, size);
        archive_entry_set_filetype(e, type);
        archive_entry_set_perm(e, mode);
        archive_entry_set_mtime(e, 0, 0);
        int rc = archive_write_header(a, e);
        archive_entry_free(e);
        check(rc, name);
    }
    void dir(const std::string& name) { header(name, 0, AE_IFDIR, 0755); }
    void data(const std::string& name, const std::string& bytes) {
        header(name, static_cast<int64_t>(bytes.size()), AE_IFREG, 0644);
        if (!bytes.empty() && archive_write_data(a, bytes.data(), bytes.size()) < 0) check(ARCHIVE_FATAL, name);
    }
    // Streams a store blob in, checking it is still what its digest says.
    void blob(const std::string& name, const std::string& file, const std::string& digest) {
        UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("cannot open blob", file, "the store is damaged; pull the image again");
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat blob", file);
        header(name, st.st_size, AE_IFREG, 0644);
        digest::Sha256 h;
        std::vector<char> buf(1 << 20);
        int64_t left = st.st_size;
        while (left > 0) {
            ssize_t n = ::read(fd.get(), buf.data(), std::min<int64_t>(left, static_cast<int64_t>(buf.size())));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("cannot read blob", file);
            if (n == 0) fail("blob shrank while being saved", file, "the store is damaged; pull the image again");
            h.update(buf.data(), static_cast<size_t>(n));
            if (archive_write_data(a, buf.data(), static_cast<size_t>(n)) < 0) check(ARCHIVE_FATAL, name);
            left -= n;
        }
        if (h.finish() != digest)
            fail("digest mismatch: store blob " + digest + " is corrupt", file,
                 "remove the image and pull it again");
    }
    void close() {
        check(archive_write_close(a), "the end");
    }
};

// The familiar "name:tag" a ref names in `image`, or "" when it was given as an id.
std::string repo_tag_for(const std::string& ref, const ImageRecord& image) {
    try {
        Reference r = Reference::parse(ref);
        if (r.tag.empty() || !r.digest.empty()) return {};
        if (std::find(image.names.begin(), image.names.end(), r.str()) == image.names.end()) return {};
        return r.familiar();
    } catch (const Error&) {
        return {};
    }
}

}  // namespace

void save(const Store& store, const std::vector<std::string>& refs, const std::string& file) {
    if (refs.empty()) fail("nothing to save", "", "name at least one image");
    // Images in the order first named, each with the tags it was named by.
    std::vector<std::pair<ImageRecord, std::vector<std::string>>> images;
    for (const auto& ref : refs) {
        std::optional<ImageRecord> img = store.find(ref);
        if (!img) fail("no such image", ref, "see 'hutch images'");
        auto it = std::find_if(images.begin(), images.end(), [&](const auto& p) { return p.first.id == img->id; });
        if (it == images.end()) {
            images.push_back({*img, {}});
            it = images.end() - 1;
        }
        std::string tag = repo_tag_for(ref, *img);
        if (!tag.empty() && std::find(it->second.begin(), it->second.end(), tag) == it->second.end())
            it->second.push_back(tag);
    }

    std::string tmp = file + ".hutch-tmp." + std::to_string(::getpid());
    try {
        ArchiveWriter w(tmp);
        json manifest = json::array();
        std::set<std::string> written;
        for (const auto& [img, tags] : images) {
            json layers = json::array();
            for (const auto& blob : img.layers) {
                std::string hex = digest::hex(blob);
                std::string name = hex + "/layer.tar";
                if (written.insert(name).second) {
                    w.dir(hex + "/");
                    w.blob(name, store.blob_path(blob), blob);
                }
                layers.push_back(name);
            }
            std::string config_name = digest::hex(img.id) + ".json";
            if (written.insert(config_name).second) w.data(config_name, store.read_blob(img.id));
            json entry = {{"Config", config_name}, {"RepoTags", tags}, {"Layers", layers}};
            if (tags.empty()) entry["RepoTags"] = nullptr;  // what docker writes for an image saved by id
            manifest.push_back(entry);
        }
        w.data("manifest.json", manifest.dump());
        w.close();
        if (::rename(tmp.c_str(), file.c_str()) != 0) throw_errno("cannot rename the archive into place", file);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
}

// ------------------------------------------------------------------------------------------------
// login / logout: the docker config file, edited in place (other keys kept), atomically, 0600.

namespace {

json read_docker_config(const std::string& path) {
    if (!fs::exists(path)) return json::object();
    json cfg = json::parse(fs::read_file(path), nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
        fail("invalid docker config (not a JSON object)", path, "fix or remove the file; it was left unchanged");
    return cfg;
}

void write_docker_config(const std::string& path, const json& cfg) {
    auto slash = path.find_last_of('/');
    if (slash != std::string::npos && slash > 0) fs::make_dirs(path.substr(0, slash), 0700);
    fs::write_file_atomic(path, cfg.dump(1, '\t') + "\n", 0600);
}

std::string config_path_or_fail(const PullOptions& options) {
    std::string path = docker_config_path(options);
    if (path.empty()) fail("cannot find the docker config file", "HOME is not set", "set HOME or DOCKER_CONFIG");
    return path;
}

}  // namespace

void login(const std::string& registry, const std::string& user, const std::string& password,
           const PullOptions& options) {
    if (user.empty()) fail("login needs a user name", registry, "pass -u USER");
    if (password.empty()) fail("login needs a password", registry, "pass -p PASSWORD or --password-stdin");
    if (user.find(':') != std::string::npos) fail("user name contains ':'", user, "registries do not allow it");
    std::string host = normalize_registry_host(registry);
    check_login(host, user, password, options);
    std::string path = config_path_or_fail(options);
    json cfg = read_docker_config(path);
    if (!cfg.contains("auths") || !cfg["auths"].is_object()) cfg["auths"] = json::object();
    // One entry per registry: older spellings of the same host go, so they cannot shadow it.
    for (const auto& k : auth_key_aliases(host)) cfg["auths"].erase(k);
    cfg["auths"][auth_key(host)] = {{"auth", base64_encode(user + ":" + password)}};
    write_docker_config(path, cfg);
}

void logout(const std::string& registry, const PullOptions& options) {
    std::string host = normalize_registry_host(registry);
    std::string path = config_path_or_fail(options);
    json cfg = read_docker_config(path);
    size_t removed = 0;
    if (cfg.contains("auths") && cfg["auths"].is_object())
        for (const auto& k : auth_key_aliases(host)) removed += cfg["auths"].erase(k);
    if (removed == 0) {
        std::printf("Not logged in to %s\n", host.c_str());
        return;
    }
    write_docker_config(path, cfg);
    std::printf("Removing login credentials for %s\n", host.c_str());
}

}  // namespace hutch::image
