// images, image inspect, rmi, image prune, system df, tag: the image store as docker shows it.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "hutch/core/error.hpp"
#include "hutch/image/reference.hpp"
#include "hutch/image/store.hpp"

namespace hutch::cli {

namespace {

using nlohmann::json;
using image::ImageRecord;
using image::Reference;
using image::Store;

// docker's sizes: decimal units, three significant digits ("4.26MB").
std::string human_size(int64_t bytes) {
    static const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double v = static_cast<double>(bytes);
    size_t u = 0;
    // 999.5 and up would print as "1e+03" at three digits: that is the next unit already.
    while (u + 1 < std::size(units) && v >= 999.5) {
        v /= 1000;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g%s", v, units[u]);
    return buf;
}

// Seconds since the epoch of an RFC 3339 time ("2024-05-01T12:00:00.123Z", "...+02:00"), or -1.
long long parse_rfc3339(const std::string& s) {
    struct tm tm = {};
    int consumed = 0;
    if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                    &tm.tm_min, &tm.tm_sec, &consumed) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    long long t = ::timegm(&tm);
    size_t i = static_cast<size_t>(consumed);
    if (i < s.size() && s[i] == '.')
        while (++i < s.size() && s[i] >= '0' && s[i] <= '9') {
        }
    int oh = 0, om = 0;
    if (i < s.size() && (s[i] == '+' || s[i] == '-') && std::sscanf(s.c_str() + i + 1, "%2d:%2d", &oh, &om) == 2)
        t -= (s[i] == '+' ? 1 : -1) * (oh * 3600LL + om * 60LL);
    return t;
}

// docker's "CREATED" column: "3 weeks ago", "About an hour ago".
std::string time_ago(const std::string& created) {
    long long t = parse_rfc3339(created);
    if (t < 0) return "N/A";
    long long secs = static_cast<long long>(std::time(nullptr)) - t;
    if (secs < 1) return "Less than a second ago";
    long long mins = secs / 60, hours = (secs + 1800) / 3600;  // rounded to the nearest hour
    std::string s;
    if (secs == 1) s = "1 second";
    else if (secs < 60) s = std::to_string(secs) + " seconds";
    else if (mins == 1) s = "About a minute";
    else if (mins < 60) s = std::to_string(mins) + " minutes";
    else if (hours == 1) s = "About an hour";
    else if (hours < 48) s = std::to_string(hours) + " hours";
    else if (hours < 24 * 7 * 2) s = std::to_string(hours / 24) + " days";
    else if (hours < 24 * 30 * 2) s = std::to_string(hours / 24 / 7) + " weeks";
    else if (hours < 24 * 365 * 2) s = std::to_string(hours / 24 / 30) + " months";
    else s = std::to_string(hours / 24 / 365) + " years";
    return s + " ago";
}

std::string short_id(const std::string& id) { return id.substr(id.find(':') + 1, 12); }

// RepoTags and RepoDigests as docker shows them ("busybox:latest", "busybox@sha256:...").
void familiar_names(const ImageRecord& r, json& tags, json& digests) {
    tags = json::array();
    digests = json::array();
    for (const auto& n : r.names) {
        Reference ref = Reference::parse(n);
        if (!ref.tag.empty()) {
            Reference t = ref;
            t.digest.clear();
            tags.push_back(t.familiar());
        }
        Reference d = ref;
        d.tag.clear();
        d.digest = ref.digest.empty() ? r.manifest_digest : ref.digest;
        if (std::find(digests.begin(), digests.end(), d.familiar()) == digests.end()) digests.push_back(d.familiar());
    }
}

struct Row {
    std::string repository, tag, id, created;
    int64_t size;
};

std::vector<Row> image_rows(const std::vector<ImageRecord>& images) {
    std::vector<Row> rows;
    for (const auto& r : images) {
        bool shown = false;
        for (const auto& n : r.names) {
            Reference ref = Reference::parse(n);
            Reference repo = ref;
            repo.tag.clear();
            repo.digest.clear();
            rows.push_back({repo.familiar(), ref.tag.empty() ? "<none>" : ref.tag, r.id, r.created, r.size});
            shown = true;
        }
        if (!shown) rows.push_back({"<none>", "<none>", r.id, r.created, r.size});
    }
    // Newest first, like docker.
    std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
        return parse_rfc3339(a.created) > parse_rfc3339(b.created);
    });
    return rows;
}

json summary_json(const ImageRecord& r) {
    json tags, digests;
    familiar_names(r, tags, digests);
    return json{{"Id", r.id},     {"RepoTags", tags}, {"RepoDigests", digests}, {"Created", r.created},
                {"Size", r.size}, {"ManifestDigest", r.manifest_digest}};
}

json null_if_empty(const std::vector<std::string>& v) { return v.empty() ? json(nullptr) : json(v); }

json inspect_json(const Store& store, const ImageRecord& r) {
    image::Config c = store.config(r);
    json j = summary_json(r);
    j["Architecture"] = c.architecture;
    j["Os"] = c.os;
    if (!c.variant.empty()) j["Variant"] = c.variant;
    j["Config"] = {{"Entrypoint", null_if_empty(c.entrypoint)},
                   {"Cmd", null_if_empty(c.cmd)},
                   {"Env", c.env},
                   {"WorkingDir", c.working_dir},
                   {"User", c.user}};
    j["RootFS"] = {{"Type", "layers"}, {"Layers", r.diff_ids}};
    return j;
}

}  // namespace

int images(const GlobalOptions& g, const std::string& format, bool quiet) {
    Store store(prepare_paths(g));
    std::vector<ImageRecord> list = store.list();
    if (format == "json") {
        json out = json::array();
        for (const auto& r : list) out.push_back(summary_json(r));
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
    }
    std::vector<Row> rows = image_rows(list);
    if (quiet) {
        for (const auto& row : rows) std::printf("%s\n", short_id(row.id).c_str());
        return 0;
    }
    std::printf("%-40s %-20s %-14s %-20s %s\n", "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE");
    for (const auto& row : rows)
        std::printf("%-40s %-20s %-14s %-20s %s\n", row.repository.c_str(), row.tag.c_str(), short_id(row.id).c_str(),
                    time_ago(row.created).c_str(), human_size(row.size).c_str());
    return 0;
}

int image_inspect(const GlobalOptions& g, const std::vector<std::string>& refs) {
    Store store(prepare_paths(g));
    json out = json::array();
    int rc = for_each_arg(refs, [&](const std::string& ref) {
        auto r = store.find(ref);
        if (!r) fail("no such image", ref, "see 'hutch images'");
        out.push_back(inspect_json(store, *r));
    });
    std::printf("%s\n", out.dump(2).c_str());
    return rc;
}

int rmi(const GlobalOptions& g, const std::vector<std::string>& refs, bool force) {
    Store store(prepare_paths(g));
    int rc = for_each_arg(refs, [&](const std::string& ref) {
        image::Removal r = store.remove_detailed(ref, force);
        for (const auto& n : r.untagged) std::printf("Untagged: %s\n", Reference::parse(n).familiar().c_str());
        for (const auto& id : r.deleted) std::printf("Deleted: %s\n", id.c_str());
    });
    return rc;
}

int image_prune(const GlobalOptions& g) {
    Store store(prepare_paths(g));
    int64_t freed = store.prune();
    std::printf("Total reclaimed space: %s\n", human_size(freed).c_str());
    return 0;
}

int system_df(const GlobalOptions& g, const std::string& format) {
    Store store(prepare_paths(g));
    image::DiskUsage u = store.disk_usage();
    if (format == "json") {
        json j{{"Images", {{"Total", u.images}, {"Dangling", u.dangling_images}, {"Size", u.image_bytes}}},
               {"Layers",
                {{"Total", u.layers},
                 {"Size", u.layer_bytes},
                 {"Unreferenced", u.unreferenced_layers},
                 {"Reclaimable", u.unreferenced_layer_bytes}}},
               {"Blobs",
                {{"Total", u.blobs},
                 {"Size", u.blob_bytes},
                 {"Unreferenced", u.unreferenced_blobs},
                 {"Reclaimable", u.unreferenced_blob_bytes}}}};
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    // UNUSED: what `hutch image prune` removes (dangling images, and what only they use).
    std::printf("%-10s %-8s %-8s %-12s %s\n", "TYPE", "TOTAL", "UNUSED", "SIZE", "RECLAIMABLE");
    std::printf("%-10s %-8lld %-8lld %-12s %s\n", "Images", static_cast<long long>(u.images),
                static_cast<long long>(u.dangling_images), human_size(u.image_bytes).c_str(), "-");
    std::printf("%-10s %-8lld %-8lld %-12s %s\n", "Layers", static_cast<long long>(u.layers),
                static_cast<long long>(u.unreferenced_layers), human_size(u.layer_bytes).c_str(),
                human_size(u.unreferenced_layer_bytes).c_str());
    std::printf("%-10s %-8lld %-8lld %-12s %s\n", "Blobs", static_cast<long long>(u.blobs),
                static_cast<long long>(u.unreferenced_blobs), human_size(u.blob_bytes).c_str(),
                human_size(u.unreferenced_blob_bytes).c_str());
    return 0;
}

int tag(const GlobalOptions& g, const std::string& source, const std::string& target) {
    Store store(prepare_paths(g));
    store.tag(source, target);
    return 0;
}

}  // namespace hutch::cli
