// Unit tests of the image store: blobs, layers, images.json, find/tag/remove/prune, lower_dirs.
#include <doctest/doctest.h>

#include "helpers.hpp"
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/digest.hpp"
#include "hutch/image/store.hpp"
#include "hutch/sandbox/idmap.hpp"

using namespace hutch;
using image::Config;
using image::ImageRecord;
using image::Store;

namespace {

struct TempStore {
    std::string dir;
    Paths paths;
    TempStore() {
        char tmpl[] = "/tmp/hutch-store-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir = tmpl;
        paths.state = dir + "/run";
        paths.storage = dir + "/storage";
    }
    ~TempStore() { fs::remove_tree(dir); }
    std::string storage(const std::string& sub) const { return paths.storage + "/" + sub; }
};

std::vector<std::string> entries(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (struct dirent* e = ::readdir(d))
            if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
        ::closedir(d);
    }
    return out;
}

mode_t mode_of(const std::string& path) {
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

using hutch::test::error_of;

std::string config_json(const std::vector<std::string>& diff_ids, const std::string& created, const std::string& salt) {
    std::string ids;
    for (const auto& d : diff_ids) ids += (ids.empty() ? "\"" : ",\"") + d + "\"";
    return R"({"architecture":"amd64","os":"linux","created":")" + created +
           R"(","config":{"Entrypoint":["/entry"],"Cmd":["sh","-c","echo hi"],"Env":["PATH=/bin","A=1"],)"
           R"("WorkingDir":"/work","User":"1000:1000"},"rootfs":{"type":"layers","diff_ids":[)" +
           ids + R"(]},"comment":")" + salt + R"("})";
}

struct Layer {
    std::string blob, diff_id;
};

// A layer as a pull leaves it: a (fake) compressed blob and an unpacked directory.
Layer add_layer(Store& s, const std::string& content) {
    Layer l{s.put_blob("compressed:" + content), digest::of("tar:" + content)};
    if (!s.has_layer(l.diff_id)) {
        std::string tmp = s.new_temp_dir("unpack");
        fs::write_file_atomic(tmp + "/file", content, 0644);
        s.publish_layer(tmp, l.diff_id);
    }
    return l;
}

// Stores an image made of `contents` layers; `salt` makes its config (and so its id) unique.
ImageRecord add_image(Store& s, const std::vector<std::string>& contents, const std::vector<std::string>& names,
                      const std::string& salt, const std::string& created = "2024-01-02T03:04:05Z") {
    std::vector<std::string> blobs, diff_ids;
    for (const auto& c : contents) {
        Layer l = add_layer(s, c);
        blobs.push_back(l.blob);
        diff_ids.push_back(l.diff_id);
    }
    std::string config = s.put_blob(config_json(diff_ids, created, salt));
    std::string manifest = s.put_blob(R"({"schemaVersion":2,"config":")" + config + "\"}");
    return s.add_image(manifest, config, blobs, names);
}

// Two config salts whose image ids share their first four hex digits (a birthday search).
std::pair<std::string, std::string> colliding_salts(const std::vector<std::string>& diff_ids) {
    std::map<std::string, std::string> seen;
    for (int i = 0;; ++i) {
        std::string salt = "salt" + std::to_string(i);
        std::string prefix = digest::of(config_json(diff_ids, "2024-01-02T03:04:05Z", salt)).substr(7, 4);
        auto [it, fresh] = seen.emplace(prefix, salt);
        if (!fresh) return {it->second, salt};
    }
}

}  // namespace

TEST_CASE("blobs: written, verified and renamed into place") {
    TempStore t;
    Store s(t.paths);
    const std::string data = "hello, blob";
    const std::string d = digest::of(data);
    CHECK_FALSE(s.has_blob(d));
    Store::BlobWriter w = s.begin_blob();
    w.write(data.data(), 5);
    w.write(data.data() + 5, data.size() - 5);
    CHECK(w.written() == static_cast<int64_t>(data.size()));
    CHECK(entries(t.storage("tmp")).size() == 1);  // written in tmp/ first
    CHECK(w.commit(d, static_cast<int64_t>(data.size())) == d);
    CHECK(s.has_blob(d));
    CHECK(s.blob_path(d) == t.storage("blobs/sha256/") + digest::hex(d));
    CHECK(s.read_blob(d) == data);
    CHECK(entries(t.storage("tmp")).empty());
    // Already present: a second copy is just dropped.
    CHECK(s.put_blob(data, d) == d);
    CHECK(s.put_blob(data) == d);
    CHECK(entries(t.storage("blobs/sha256")).size() == 1);
    CHECK(entries(t.storage("tmp")).empty());
    CHECK_THROWS_AS(s.read_blob(d, 3), Error);  // larger than the caller allows
    CHECK_THROWS_AS(s.read_blob(digest::of("absent")), Error);
    CHECK_THROWS_AS(s.blob_path("sha256:../../etc"), Error);
}

TEST_CASE("blobs: a digest or size mismatch leaves nothing behind") {
    TempStore t;
    Store s(t.paths);
    const std::string data = "the real content";
    {
        Store::BlobWriter w = s.begin_blob();
        w.write(data.data(), data.size());
        std::string msg = error_of([&] { w.commit(digest::of("other content")); });
        CHECK(msg.find("digest mismatch") != std::string::npos);
        CHECK(msg.find(digest::of("other content")) != std::string::npos);
        CHECK_THROWS_AS(w.commit(digest::of(data)), Error);  // not twice
    }
    {
        Store::BlobWriter w = s.begin_blob();
        w.write(data.data(), data.size());
        std::string msg = error_of([&] { w.commit(digest::of(data), static_cast<int64_t>(data.size()) + 1); });
        CHECK(msg.find("size mismatch") != std::string::npos);
    }
    {
        Store::BlobWriter w = s.begin_blob();  // abandoned without commit
        w.write(data.data(), data.size());
    }
    CHECK_THROWS_AS(s.put_blob(data, "sha256:nothex"), Error);
    CHECK(entries(t.storage("blobs/sha256")).empty());
    CHECK(entries(t.storage("tmp")).empty());
    CHECK_FALSE(s.has_blob(digest::of(data)));
}

TEST_CASE("blobs: read_blob detects a corrupted blob") {
    TempStore t;
    Store s(t.paths);
    std::string d = s.put_blob("precious bytes");
    fs::write_file_atomic(s.blob_path(d), "precious bytez", 0644);
    std::string msg = error_of([&] { s.read_blob(d); });
    CHECK(msg.find("corrupt") != std::string::npos);
    CHECK(msg.find(digest::hex(d)) != std::string::npos);
    CHECK_FALSE(s.has_blob(d));  // removed, so a new pull fetches it again
    CHECK(s.put_blob("precious bytes", d) == d);
    CHECK(s.read_blob(d) == "precious bytes");
}

TEST_CASE("blobs: concurrent writers of the same blob") {
    TempStore t;
    Store s(t.paths);
    const std::string data(1 << 20, 'x');
    const std::string d = digest::of(data);
    // Interleaved in one thread: both finish, one copy stays.
    Store::BlobWriter a = s.begin_blob(), b = s.begin_blob();
    a.write(data.data(), data.size() / 2);
    b.write(data.data(), data.size());
    a.write(data.data() + data.size() / 2, data.size() - data.size() / 2);
    CHECK(b.commit(d) == d);
    CHECK(a.commit(d) == d);
    // And from several threads (each with its own Store object, as separate pulls would have).
    std::string e_data(1 << 20, 'y');
    std::string e = digest::of(e_data);
    std::vector<std::thread> threads;
    std::vector<std::string> results(4);
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&, i] {
            Store mine(t.paths);
            auto lock = mine.lock_blob(e);  // what pulls do; the later ones find the blob present
            if (mine.has_blob(e)) {
                results[static_cast<size_t>(i)] = e;
                return;
            }
            Store::BlobWriter w = mine.begin_blob();
            for (size_t off = 0; off < e_data.size(); off += 4096) w.write(e_data.data() + off, 4096);
            results[static_cast<size_t>(i)] = w.commit(e, static_cast<int64_t>(e_data.size()));
        });
    for (auto& th : threads) th.join();
    for (const auto& r : results) CHECK(r == e);
    CHECK(s.read_blob(d, 2 << 20) == data);
    CHECK(s.read_blob(e, 2 << 20) == e_data);
    CHECK(entries(t.storage("blobs/sha256")).size() == 2);
    CHECK(entries(t.storage("tmp")).empty());
}

TEST_CASE("layers: publish is atomic and the first of two concurrent publishers wins") {
    TempStore t;
    Store s(t.paths);
    const std::string diff_id = digest::of("tar");
    std::string first = s.new_temp_dir("unpack");
    std::string second = s.new_temp_dir("unpack");
    CHECK(first != second);
    CHECK(first.rfind(t.storage("tmp/"), 0) == 0);
    fs::write_file_atomic(first + "/f", "first", 0644);
    fs::write_file_atomic(second + "/f", "second", 0644);
    CHECK_FALSE(s.has_layer(diff_id));
    s.publish_layer(first, diff_id);
    CHECK(s.has_layer(diff_id));
    s.publish_layer(second, diff_id);
    CHECK(fs::read_file(s.layer_path(diff_id) + "/f") == "first");
    CHECK(entries(t.storage("tmp")).empty());
    CHECK_THROWS_AS(s.publish_layer(t.dir, digest::of("x")), Error);  // not a temp dir of the store
}

TEST_CASE("store directory modes") {
    TempStore t;
    Store s(t.paths);
    CHECK(mode_of(t.storage("blobs")) == 0700);
    CHECK(mode_of(t.storage("tmp")) == 0700);
    std::string tmp = s.new_temp_dir("unpack");
    s.publish_layer(tmp, digest::of("layer"));
    if (::geteuid() == 0) {
        // Root's sandboxes run as an unprivileged range that must reach layers/<hex>.
        CHECK(mode_of(t.paths.storage) == 0711);
        CHECK(mode_of(t.storage("layers")) == 0711);
        CHECK((mode_of(s.layer_path(digest::of("layer"))) & 0011) == 0011);
    } else {
        CHECK(mode_of(t.storage("layers")) == 0700);
    }
}

TEST_CASE("config: parsed and validated") {
    const std::string d = digest::of("a");
    Config c = Config::parse(config_json({d}, "2024-01-02T03:04:05Z", "x"), "test config");
    CHECK(c.os == "linux");
    CHECK(c.architecture == "amd64");
    CHECK(c.created == "2024-01-02T03:04:05Z");
    CHECK(c.entrypoint == std::vector<std::string>{"/entry"});
    CHECK(c.cmd == std::vector<std::string>{"sh", "-c", "echo hi"});
    CHECK(c.env == std::vector<std::string>{"PATH=/bin", "A=1"});
    CHECK(c.working_dir == "/work");
    CHECK(c.user == "1000:1000");
    CHECK(c.diff_ids == std::vector<std::string>{d});
    Config nulls = Config::parse(R"({"config":{"Entrypoint":null,"Cmd":null},"rootfs":{"type":"layers","diff_ids":[]}})", "c");
    CHECK(nulls.entrypoint.empty());
    CHECK(nulls.cmd.empty());

    const char* bad[] = {
        "not json",
        "[]",
        R"({"os":"linux"})",
        R"({"rootfs":{"type":"tarballs","diff_ids":[]}})",
        R"({"rootfs":{"type":"layers","diff_ids":["sha256:abc"]}})",
        R"({"rootfs":{"type":"layers","diff_ids":[42]}})",
        R"({"rootfs":{"type":"layers","diff_ids":[]},"config":{"Cmd":"sh"}})",
        R"({"rootfs":{"type":"layers","diff_ids":[]},"config":{"WorkingDir":7}})",
    };
    for (const char* text : bad) {
        CAPTURE(text);
        std::string msg = error_of([&] { Config::parse(text, "image config X"); });
        CHECK(msg.find("image config X") != std::string::npos);
    }
}

TEST_CASE("images: add_image checks that everything is present") {
    TempStore t;
    Store s(t.paths);
    Layer l = add_layer(s, "one");
    std::string config = s.put_blob(config_json({l.diff_id}, "2024-01-02T03:04:05Z", ""));
    std::string manifest = s.put_blob("{}");
    CHECK_THROWS_AS(s.add_image(digest::of("nope"), config, {l.blob}, {"x"}), Error);       // no manifest
    CHECK_THROWS_AS(s.add_image(manifest, digest::of("nope"), {l.blob}, {"x"}), Error);     // no config
    CHECK_THROWS_AS(s.add_image(manifest, config, {}, {"x"}), Error);                       // count mismatch
    CHECK_THROWS_AS(s.add_image(manifest, config, {digest::of("nope")}, {"x"}), Error);     // no layer blob
    CHECK_THROWS_AS(s.add_image(manifest, config, {l.blob}, {"Bad Name"}), Error);
    std::string config2 = s.put_blob(config_json({digest::of("unpacked nowhere")}, "2024-01-02T03:04:05Z", ""));
    CHECK_THROWS_AS(s.add_image(manifest, config2, {l.blob}, {"x"}), Error);                // layer not unpacked
    CHECK(s.list().empty());
    ImageRecord r = s.add_image(manifest, config, {l.blob}, {"x", "docker.io/library/x:latest", "x:2"});
    CHECK(r.id == config);
    CHECK(r.manifest_digest == manifest);
    CHECK(r.names == std::vector<std::string>{"docker.io/library/x:latest", "docker.io/library/x:2"});
    CHECK(r.layers == std::vector<std::string>{l.blob});
    CHECK(r.diff_ids == std::vector<std::string>{l.diff_id});
    CHECK(r.size == static_cast<int64_t>(std::string("compressed:one").size()));
    CHECK(r.created == "2024-01-02T03:04:05Z");
    CHECK(s.config(r).cmd == std::vector<std::string>{"sh", "-c", "echo hi"});
    // Adding the same image again keeps its names and adds the new ones.
    ImageRecord again = s.add_image(manifest, config, {l.blob}, {"y"});
    CHECK(again.names.size() == 3);
    CHECK(s.list().size() == 1);
}

TEST_CASE("images: find by every form") {
    TempStore t;
    Store s(t.paths);
    ImageRecord bb = add_image(s, {"base", "busybox"}, {"busybox"}, "bb");
    ImageRecord local = add_image(s, {"base", "app"}, {"localhost:5000/team/app:1"}, "app");
    const std::string hex = digest::hex(bb.id);
    for (const std::string& form : {std::string("busybox"), std::string("busybox:latest"),
                                    std::string("library/busybox"), std::string("docker.io/library/busybox:latest"),
                                    bb.id, hex, hex.substr(0, 12), hex.substr(0, 4), "sha256:" + hex.substr(0, 4),
                                    "busybox@" + bb.manifest_digest}) {
        CAPTURE(form);
        auto found = s.find(form);
        REQUIRE(found);
        CHECK(found->id == bb.id);
    }
    CHECK(s.find("localhost:5000/team/app:1")->id == local.id);
    CHECK_FALSE(s.find("localhost:5000/team/app"));  // :latest is another name
    CHECK_FALSE(s.find("busybox:1.36"));
    CHECK_FALSE(s.find(hex.substr(0, 3)));  // too short to be an id prefix
    CHECK_FALSE(s.find("sha256:" + std::string(64, '0')));
    CHECK_FALSE(s.find("other@" + bb.manifest_digest));  // the digest belongs to another repository
    CHECK_THROWS_AS(s.find("Not A Name"), Error);
}

TEST_CASE("images: ambiguous id prefixes are errors, and names win over prefixes") {
    TempStore t;
    Store s(t.paths);
    Layer l = add_layer(s, "shared");
    auto [salt_a, salt_b] = colliding_salts({l.diff_id});
    ImageRecord a = add_image(s, {"shared"}, {"a"}, salt_a);
    ImageRecord b = add_image(s, {"shared"}, {"b"}, salt_b);
    REQUIRE(a.id.substr(0, 11) == b.id.substr(0, 11));
    const std::string prefix = a.id.substr(7, 4);
    std::string msg = error_of([&] { s.find(prefix); });
    CHECK(msg.find("ambiguous") != std::string::npos);
    CHECK(msg.find(prefix) != std::string::npos);
    CHECK_THROWS_AS(s.find("sha256:" + prefix), Error);
    CHECK(s.find(digest::hex(a.id).substr(0, 20))->id == a.id);
    CHECK(s.find(digest::hex(b.id).substr(0, 20))->id == b.id);
    // An image named like the prefix is found by its name.
    s.tag("b", prefix);
    CHECK(s.find(prefix)->id == b.id);
}

TEST_CASE("images: tag moves a name") {
    TempStore t;
    Store s(t.paths);
    ImageRecord one = add_image(s, {"l1"}, {"busybox"}, "1");
    ImageRecord two = add_image(s, {"l2"}, {"other:1"}, "2");
    s.tag("busybox", "mine/box:v1");
    CHECK(s.find("mine/box:v1")->id == one.id);
    CHECK(s.find(one.id)->names.size() == 2);
    // Tagging another image with a name takes the name away from the first.
    s.tag(two.id, "busybox:latest");
    CHECK(s.find("busybox")->id == two.id);
    CHECK(s.find(one.id)->names == std::vector<std::string>{"docker.io/mine/box:v1"});
    CHECK_THROWS_AS(s.tag("nothing", "x"), Error);
    CHECK_THROWS_AS(s.tag("busybox", "x@" + one.id), Error);
    CHECK_THROWS_AS(s.tag("busybox", "UPPER"), Error);
}

TEST_CASE("images: remove untags names and deletes by id like docker") {
    TempStore t;
    Store s(t.paths);
    ImageRecord img = add_image(s, {"l1"}, {"busybox:latest", "busybox:1", "mirror.example.com/busybox:latest"}, "1");
    // By name: just that name.
    image::Removal r = s.remove_detailed("busybox:1", false);
    CHECK(r.untagged == std::vector<std::string>{"docker.io/library/busybox:1"});
    CHECK(r.deleted.empty());
    CHECK(s.find(img.id)->names.size() == 2);
    // By id with names in two repositories: needs force.
    std::string msg = error_of([&] { s.remove(digest::hex(img.id).substr(0, 12), false); });
    CHECK(msg.find("multiple repositories") != std::string::npos);
    CHECK(s.find(img.id));
    r = s.remove_detailed(digest::hex(img.id).substr(0, 12), true);
    CHECK(r.deleted == std::vector<std::string>{img.id});
    CHECK(r.untagged.size() == 2);
    CHECK_FALSE(s.find(img.id));
    CHECK_THROWS_AS(s.remove("busybox", false), Error);  // gone

    // The last name takes the image with it.
    ImageRecord one = add_image(s, {"l2"}, {"solo"}, "2");
    CHECK(s.remove("solo", false) == std::vector<std::string>{one.id});
    CHECK(s.list().empty());
    // By id, names of a single repository need no force (docker's rule).
    ImageRecord same = add_image(s, {"l3"}, {"app:1", "app:2"}, "3");
    CHECK(s.remove(same.id, false) == std::vector<std::string>{same.id});
    // A nameless (dangling) image goes by id.
    ImageRecord x = add_image(s, {"l4"}, {"x"}, "4");
    add_image(s, {"l5"}, {"x"}, "5");
    CHECK(s.find(x.id)->names.empty());
    CHECK(s.remove(x.id, false) == std::vector<std::string>{x.id});
}

TEST_CASE("prune keeps what images reference and removes the rest") {
    TempStore t;
    Store s(t.paths);
    ImageRecord a = add_image(s, {"base", "mid"}, {"a"}, "a");
    ImageRecord b = add_image(s, {"base", "top"}, {"b"}, "b");
    ImageRecord c = add_image(s, {"only-c"}, {"c"}, "c");
    s.tag("a", "c");  // c loses its only name: dangling, and pruned like docker does
    std::string loose_blob = s.put_blob("loose");
    // A temp entry of a process that is gone, and one of ours (alive).
    std::string stale = t.storage("tmp/unpack-999999999-12345-deadbeef");
    fs::make_dirs(stale + "/sub");
    fs::write_file_atomic(stale + "/sub/f", "stale data", 0644);
    ::chmod((stale + "/sub").c_str(), 0500);  // unpacked trees can be read-only
    std::string alive = s.new_temp_dir("unpack");
    REQUIRE(s.remove("b", false) == std::vector<std::string>{b.id});

    image::DiskUsage before = s.disk_usage();
    CHECK(before.images == 2);
    CHECK(before.dangling_images == 1);
    CHECK(before.layers == 4);
    CHECK(before.unreferenced_layers == 2);  // top (b) and only-c (dangling c)

    int64_t freed = s.prune();
    CHECK(freed > 0);
    CHECK(s.list().size() == 1);
    CHECK_FALSE(s.find(c.id));
    // a is intact: its config, manifest, layer blobs and layers.
    CHECK(s.has_blob(a.id));
    CHECK(s.has_blob(a.manifest_digest));
    for (const auto& l : a.layers) CHECK(s.has_blob(l));
    CHECK(s.lower_dirs(*s.find("a")).size() == 2);
    CHECK(s.config(*s.find("a")).os == "linux");
    // b's and c's own parts are gone; the layer b shared with a stays.
    CHECK_FALSE(s.has_blob(b.id));
    CHECK_FALSE(s.has_blob(b.manifest_digest));
    CHECK_FALSE(s.has_blob(b.layers[1]));
    CHECK_FALSE(s.has_layer(b.diff_ids[1]));
    CHECK(s.has_layer(b.diff_ids[0]));
    CHECK_FALSE(s.has_blob(c.id));
    CHECK_FALSE(s.has_layer(c.diff_ids[0]));
    CHECK_FALSE(s.has_blob(loose_blob));
    CHECK_FALSE(fs::exists(stale));
    CHECK(fs::exists(alive));
    CHECK(entries(t.storage("layers")).size() == 2);
    CHECK(entries(t.storage("blobs/sha256")).size() == 4);  // a's config, manifest, 2 layer blobs

    image::DiskUsage after = s.disk_usage();
    CHECK(after.unreferenced_layers == 0);
    CHECK(after.unreferenced_blobs == 0);
    CHECK(after.blobs == 4);
    CHECK(after.blob_bytes + after.layer_bytes < before.blob_bytes + before.layer_bytes);
    CHECK(s.prune() == 0);
}

TEST_CASE("prune refuses while another Store object is writing") {
    TempStore t;
    Store s(t.paths);
    add_image(s, {"l"}, {"keep"}, "k");
    {
        Store puller(t.paths);
        Store::BlobWriter w = puller.begin_blob();
        w.write("abc", 3);
        std::string fetched = puller.put_blob("fetched, not yet recorded");
        std::string msg = error_of([&] { s.prune(); });
        CHECK(msg.find("being pulled") != std::string::npos);
        CHECK(puller.has_blob(fetched));
    }
    CHECK(s.prune() > 0);
    CHECK(s.find("keep"));
}

TEST_CASE("images.json: rewrites are atomic, corruption is reported with the file name") {
    TempStore t;
    Store s(t.paths);
    ImageRecord img = add_image(s, {"l"}, {"busybox"}, "1");
    const std::string index = t.storage("images.json");
    const std::string good = fs::read_file(index);

    // A rewrite that fails midway (the file size limit stops the write) leaves the old index.
    struct rlimit old_limit;
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit tiny = old_limit;
    tiny.rlim_cur = 16;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &tiny) == 0);
    std::string msg = error_of([&] { s.tag("busybox", "renamed:1"); });
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    ::signal(SIGXFSZ, old_handler);
    CHECK_FALSE(msg.empty());
    CHECK(fs::read_file(index) == good);
    CHECK(s.find("busybox")->id == img.id);
    CHECK_FALSE(s.find("renamed:1"));
    for (const auto& e : entries(t.paths.storage)) CHECK(e.find(".tmp") == std::string::npos);

    fs::write_file_atomic(index, "{\"version\": 1, \"images\": [", 0600);
    msg = error_of([&] { s.find("busybox"); });
    CHECK(msg.find("corrupt image index") != std::string::npos);
    CHECK(msg.find(index) != std::string::npos);
    CHECK_THROWS_AS(s.list(), Error);
    // A tampered digest must not turn into a path outside the store.
    fs::write_file_atomic(index, R"({"version":1,"images":[{"id":"sha256:../../../etc/passwd"}]})", 0600);
    CHECK(error_of([&] { s.list(); }).find("corrupt image index") != std::string::npos);
    fs::write_file_atomic(index, R"({"version":99,"images":[]})", 0600);
    CHECK(error_of([&] { s.list(); }).find("newer hutch") != std::string::npos);
}

TEST_CASE("lower_dirs: top layer first, and a missing layer is named") {
    TempStore t;
    Store s(t.paths);
    ImageRecord img = add_image(s, {"bottom", "middle", "top"}, {"stack"}, "s");
    std::vector<std::string> dirs = s.lower_dirs(img);
    REQUIRE(dirs.size() == 3);
    CHECK(fs::read_file(dirs[0] + "/file") == "top");
    CHECK(fs::read_file(dirs[1] + "/file") == "middle");
    CHECK(fs::read_file(dirs[2] + "/file") == "bottom");
    CHECK(dirs[0] == s.layer_path(img.diff_ids[2]));
    fs::remove_tree(s.layer_path(img.diff_ids[1]));
    std::string msg = error_of([&] { s.lower_dirs(img); });
    CHECK(msg.find(img.diff_ids[1]) != std::string::npos);
    CHECK(msg.find("hutch pull stack:latest") != std::string::npos);
}

TEST_CASE("prune removes layers holding files of subordinate ids") {
    TempStore t;
    Store s(t.paths);
    const std::string diff_id = digest::of("owned by others");
    std::string tmp = s.new_temp_dir("unpack");
    const std::string sub = tmp + "/etc";
    fs::make_dirs(sub, 0755);
    fs::write_file_atomic(sub + "/shadow", "secret", 0600);
    // As an unpack in the sandbox's user namespace leaves it: a directory and file of sandbox uid 1.
    IdMap map = idmap::for_caller();
    if (::geteuid() == 0) {
        auto host = map.host_uid(1);
        REQUIRE(host);
        REQUIRE(::chown((sub + "/shadow").c_str(), *host, *host) == 0);
        REQUIRE(::chown(sub.c_str(), *host, *host) == 0);
    } else if (map.use_helpers) {
        int rc = idmap::run_as_sandbox_root(map, [&] {
            return ::chown((sub + "/shadow").c_str(), 1, 1) == 0 && ::chown(sub.c_str(), 1, 1) == 0 ? 0 : 1;
        });
        REQUIRE(rc == 0);
        CHECK(::unlink((sub + "/shadow").c_str()) != 0);  // the caller alone cannot remove it
    } else {
        MESSAGE("no subordinate ids for this user: only the plain removal is exercised");
    }
    s.publish_layer(tmp, diff_id);
    REQUIRE(s.has_layer(diff_id));
    CHECK(s.prune() >= 6);
    CHECK_FALSE(s.has_layer(diff_id));
    CHECK(entries(t.storage("layers")).empty());
}
