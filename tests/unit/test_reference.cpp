// Unit tests of sha256 digests, docker image references and image sources.
#include <doctest/doctest.h>

#include "helpers.hpp"
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "hutch/core/error.hpp"
#include "hutch/core/fs.hpp"
#include "hutch/core/digest.hpp"
#include "hutch/image/reference.hpp"

using namespace hutch;
using image::Reference;
using image::Source;

namespace {

const std::string kHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const std::string kDigest = "sha256:" + kHex;

using hutch::test::error_of;

}  // namespace

TEST_CASE("sha256 digests of known strings") {
    CHECK(digest::of("") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(digest::of("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const std::string fox = "The quick brown fox jumps over the lazy dog";
    CHECK(digest::of(fox) == "sha256:d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
    digest::Sha256 h;  // fed in pieces, the same digest
    h.update(fox.data(), 10);
    h.update(fox.data() + 10, 0);
    h.update(fox.data() + 10, fox.size() - 10);
    CHECK(h.finish() == digest::of(fox));
    CHECK_THROWS_AS(h.finish(), Error);
    // A million 'a's: the FIPS 180-2 long-message vector.
    CHECK(digest::of(std::string(1000000, 'a')) ==
          "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("digest validation") {
    CHECK(digest::valid(kDigest));
    CHECK_FALSE(digest::valid(kHex));
    CHECK_FALSE(digest::valid("sha256:" + kHex.substr(1)));
    CHECK_FALSE(digest::valid("sha256:" + kHex + "0"));
    CHECK_FALSE(digest::valid("sha512:" + kHex));
    CHECK_FALSE(digest::valid("sha256:" + std::string(63, 'a') + "A"));
    CHECK_FALSE(digest::valid("sha256:../../../../etc/passwd" + std::string(36, 'a')));
    CHECK(digest::hex(kDigest) == kHex);
    CHECK_THROWS_AS(digest::hex("sha256:xyz"), Error);
    CHECK(error_of([] { digest::check("md5:abc", "manifest"); }).find("manifest") != std::string::npos);
    CHECK(error_of([] { digest::check("md5:abc", "manifest"); }).find("md5:abc") != std::string::npos);
}

TEST_CASE("references: docker.io and library/ are implied") {
    Reference r = Reference::parse("busybox");
    CHECK(r.registry == "docker.io");
    CHECK(r.repository == "library/busybox");
    CHECK(r.tag == "latest");
    CHECK(r.digest.empty());
    CHECK(r.str() == "docker.io/library/busybox:latest");
    CHECK(r.familiar() == "busybox:latest");
    CHECK(r.api_host() == "registry-1.docker.io");
    CHECK_FALSE(r.is_loopback());

    CHECK(Reference::parse("busybox:1.36").str() == "docker.io/library/busybox:1.36");
    CHECK(Reference::parse("library/busybox").str() == "docker.io/library/busybox:latest");
    CHECK(Reference::parse("docker.io/busybox").str() == "docker.io/library/busybox:latest");
    CHECK(Reference::parse("index.docker.io/busybox").str() == "docker.io/library/busybox:latest");
    CHECK(Reference::parse("docker.io/library/busybox:latest").familiar() == "busybox:latest");
    Reference user = Reference::parse("user/app:v1");
    CHECK(user.registry == "docker.io");
    CHECK(user.repository == "user/app");
    CHECK(user.familiar() == "user/app:v1");
    // "library" is only dropped when it is the whole namespace.
    CHECK(Reference::parse("library/a/b").familiar() == "library/a/b:latest");
    // Names that look like images ("localhost" alone, "docker:dind") are images, not hosts.
    CHECK(Reference::parse("localhost").str() == "docker.io/library/localhost:latest");
    CHECK(Reference::parse("docker:dind").str() == "docker.io/library/docker:dind");
}

TEST_CASE("references: registries with and without ports") {
    Reference r = Reference::parse("localhost:5000/x/y:1");
    CHECK(r.registry == "localhost:5000");
    CHECK(r.repository == "x/y");
    CHECK(r.tag == "1");
    CHECK(r.familiar() == "localhost:5000/x/y:1");
    CHECK(r.api_host() == "localhost:5000");
    CHECK(r.is_loopback());

    CHECK(Reference::parse("localhost/foo").registry == "localhost");
    CHECK(Reference::parse("localhost/foo").is_loopback());
    CHECK(Reference::parse("127.0.0.1:5000/foo").is_loopback());
    CHECK(Reference::parse("127.1.2.3/foo").is_loopback());
    CHECK(Reference::parse("[::1]:5000/foo").is_loopback());
    CHECK(Reference::parse("[::1]/foo").is_loopback());
    CHECK_FALSE(Reference::parse("128.0.0.1/foo").is_loopback());
    CHECK_FALSE(Reference::parse("127.0.0.1.example.com/foo").is_loopback());
    CHECK_FALSE(Reference::parse("localhost.example.com/foo").is_loopback());
    CHECK_FALSE(Reference::parse("[2001:db8::1]:5000/foo").is_loopback());

    Reference q = Reference::parse("quay.io/coreos/etcd:v3.5.0");
    CHECK(q.registry == "quay.io");
    CHECK(q.repository == "coreos/etcd");
    CHECK(q.str() == "quay.io/coreos/etcd:v3.5.0");
    CHECK(q.api_host() == "quay.io");
    CHECK(Reference::parse("test:5000/repo").registry == "test:5000");
    CHECK(Reference::parse("test.com/repo:tag").registry == "test.com");
    CHECK(Reference::parse("[2001:db8::1]:5000/repo").registry == "[2001:db8::1]:5000");
    // A single name with a colon is a tag, even if it looks like a port.
    Reference t = Reference::parse("test.com:5000");
    CHECK(t.repository == "library/test.com");
    CHECK(t.tag == "5000");
    // An uppercase first component is a host (docker's rule), where uppercase is allowed.
    CHECK(Reference::parse("Example.COM/app").registry == "Example.COM");
}

TEST_CASE("references: tags and digests") {
    Reference d = Reference::parse("busybox@" + kDigest);
    CHECK(d.tag.empty());
    CHECK(d.digest == kDigest);
    CHECK(d.str() == "docker.io/library/busybox@" + kDigest);
    CHECK(d.familiar() == "busybox@" + kDigest);
    Reference both = Reference::parse("test:5000/repo:tag@" + kDigest);
    CHECK(both.registry == "test:5000");
    CHECK(both.tag == "tag");
    CHECK(both.digest == kDigest);
    CHECK(both.str() == "test:5000/repo:tag@" + kDigest);
    CHECK(Reference::parse("lowercase:Uppercase").tag == "Uppercase");
    CHECK(Reference::parse("a:_under").tag == "_under");
    CHECK(Reference::parse("a:" + std::string(128, 't')).tag.size() == 128);
    CHECK(Reference::parse("x/a__b.c-d---e/f_g").repository == "x/a__b.c-d---e/f_g");
    // A '.' in the first component makes it a registry host, which '_' is not valid in.
    CHECK_THROWS_AS(Reference::parse("a__b.c/d"), Error);
}

TEST_CASE("references: what docker refuses") {
    const char* bad[] = {
        "",
        ":justtag",
        "@sha256:ffff",
        "repo@sha256:ffffffffff",          // short digest
        "validname@invaliddigest:ffffffff",
        "Uppercase:tag",
        "docker.io/Library/busybox",
        "aa/asdf$$^/aa",
        "a//b",
        "a/",
        "/a",
        "a..b",
        "a___b",
        "-a",
        "a-",
        "a._b",
        "busy box",
        "busybox ",
        "busybox:",
        "busybox:.tag",
        "busybox:-tag",
        "busybox:tag/x",
        "host:port/repo",          // port must be numeric
        "-host.com/repo",
        "host-.com/repo",
        "[zz::1]/repo",
        "repo@sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
    };
    for (const char* text : bad) {
        CAPTURE(text);
        std::string msg = error_of([&] { Reference::parse(text); });
        CHECK_FALSE(msg.empty());
        CHECK(msg.find("'" + std::string(text) + "'") != std::string::npos);  // names the text
    }
    CHECK_THROWS_AS(Reference::parse("a:" + std::string(129, 't')), Error);
    CHECK_THROWS_AS(Reference::parse(kHex), Error);  // an image id is not a name
    CHECK_THROWS_AS(Reference::parse("a/" + std::string(250, 'b')), Error);  // > 255 characters
    CHECK(error_of([] { Reference::parse("Uppercase"); }).find("lowercase") != std::string::npos);
}

TEST_CASE("sources: transports") {
    Source s = Source::parse("busybox");
    CHECK(s.kind == Source::Kind::Registry);
    CHECK(s.ref.str() == "docker.io/library/busybox:latest");
    s = Source::parse("docker://localhost:5000/x:1");
    CHECK(s.kind == Source::Kind::Registry);
    CHECK(s.ref.registry == "localhost:5000");
    CHECK(s.ref.tag == "1");
    // "docker:TAG" without "//" is the image named docker.
    s = Source::parse("docker:dind");
    CHECK(s.kind == Source::Kind::Registry);
    CHECK(s.ref.repository == "library/docker");

    s = Source::parse("oci:/some/dir");
    CHECK(s.kind == Source::Kind::OciLayout);
    CHECK(s.path == "/some/dir");
    CHECK(s.tag.empty());
    s = Source::parse("oci:/some/dir:v1.0");
    CHECK(s.path == "/some/dir");
    CHECK(s.tag == "v1.0");
    s = Source::parse("oci-archive:img.tar:latest");
    CHECK(s.kind == Source::Kind::OciArchive);
    CHECK(s.path == "img.tar");
    CHECK(s.tag == "latest");
    s = Source::parse("docker-archive:/x/save.tar");
    CHECK(s.kind == Source::Kind::DockerArchive);
    CHECK(s.path == "/x/save.tar");
    CHECK(s.tag.empty());
    // The archive's REF may itself contain ':'; it is stored normalized.
    s = Source::parse("docker-archive:/x/save.tar:busybox:1.36");
    CHECK(s.path == "/x/save.tar");
    CHECK(s.tag == "docker.io/library/busybox:1.36");
    s = Source::parse("docker-archive:/x/save.tar:@1");
    CHECK(s.tag == "@1");

    CHECK_THROWS_AS(Source::parse("oci:"), Error);
    CHECK_THROWS_AS(Source::parse("oci::tag"), Error);
    CHECK_THROWS_AS(Source::parse("oci:/dir:bad tag"), Error);
    CHECK_THROWS_AS(Source::parse("docker-archive:/x.tar:Bad/Ref"), Error);
    CHECK_THROWS_AS(Source::parse("docker://"), Error);
    CHECK_THROWS_AS(Source::parse("docker://Busybox"), Error);
    std::string msg = error_of([] { Source::parse("http://example.com/x"); });
    CHECK(msg.find("unsupported image transport") != std::string::npos);
    CHECK(msg.find("http://example.com/x") != std::string::npos);
}

TEST_CASE("sources: paths containing ':' are used when they exist") {
    char tmpl[] = "/tmp/hutch-ref-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    const std::string layout = dir + "/with:colon";
    fs::make_dirs(layout);

    Source s = Source::parse("oci:" + layout);
    CHECK(s.path == layout);
    CHECK(s.tag.empty());
    s = Source::parse("oci:" + layout + ":v2");
    CHECK(s.path == layout);
    CHECK(s.tag == "v2");
    // OCI ref names may contain ':' and '/'; an existing path decides where the tag starts.
    s = Source::parse("oci:" + dir + ":a/b:c");
    CHECK(s.path == dir);
    CHECK(s.tag == "a/b:c");
    fs::remove_tree(dir);
}
