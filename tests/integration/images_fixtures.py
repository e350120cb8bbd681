"""Helpers for the image transfer tests (test_images.py): local registries, a token server, a
counting/throttling proxy, and builders for OCI layouts and layer tarballs.

Everything listens on 127.0.0.1 only; nothing here needs the internet. The registry is Debian's
docker-registry (distribution 2.8), started per test module with a throwaway storage directory.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20) -> None:
    """Waits until something answers HTTP at url (any status)."""
    deadline = time.monotonic() + timeout
    u = urllib.parse.urlsplit(url)
    last = None
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            c.request("GET", u.path or "/")
            c.getresponse().read()
            c.close()
            return
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers at {url} after {timeout}s: {last}")


# ---------------------------------------------------------------------------------------------
# docker-registry.

class Registry:
    """A docker-registry on 127.0.0.1:<free port>, optionally with htpasswd or token auth."""

    def __init__(self, workdir: Path, name: str, auth: dict | None = None):
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.storage = self.dir / "storage"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log = self.dir / "registry.log"
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "hutch-test-secret"},
        }
        if auth:
            cfg["auth"] = auth
        self.config = self.dir / "config.yml"
        # JSON is YAML: no YAML writer needed.
        self.config.write_text(json.dumps(cfg, indent=2))
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config)], stdout=self._logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_http(self.url + "/v2/")
        except Exception:
            self.stop()
            raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}")

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()


# ---------------------------------------------------------------------------------------------
# Pushing by hand (the Distribution API), for images skopeo would refuse to copy (wrong sizes,
# hostile layers, odd media types).

class Pusher:
    def __init__(self, host: str, auth: str | None = None):
        self.host = host
        self.auth = auth  # "Basic ..." or "Bearer ..." header value

    def _conn(self):
        h, p = self.host.rsplit(":", 1)
        return http.client.HTTPConnection(h, int(p), timeout=30)

    def _req(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.auth:
            headers["Authorization"] = self.auth
        c = self._conn()
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r, data

    def blob(self, repo: str, data: bytes) -> str:
        d = sha256(data)
        r, _ = self._req("HEAD", f"/v2/{repo}/blobs/{d}")
        if r.status == 200:
            return d
        r, body = self._req("POST", f"/v2/{repo}/blobs/uploads/")
        assert r.status == 202, f"upload start: {r.status} {body!r}"
        loc = urllib.parse.urlsplit(r.getheader("Location"))
        path = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + urllib.parse.quote(d)
        r, body = self._req("PUT", path, body=data,
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        assert r.status == 201, f"upload {d}: {r.status} {body!r}"
        return d

    def manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        r, body = self._req("PUT", f"/v2/{repo}/manifests/{ref}", body=data, headers={"Content-Type": media_type})
        assert r.status == 201, f"manifest {repo}:{ref}: {r.status} {body!r}"
        return sha256(data)

    def layout(self, layout: "Layout", desc: dict, repo: str, tag: str) -> None:
        """Pushes the image (or index) `desc` of `layout`, with everything it references."""
        data = layout.read(desc["digest"])
        doc = json.loads(data)
        if "manifests" in doc:
            for m in doc["manifests"]:
                self.layout(layout, m, repo, m["digest"])
        else:
            self.blob(repo, layout.read(doc["config"]["digest"]))
            for l in doc["layers"]:
                self.blob(repo, layout.read(l["digest"]))
        self.manifest(repo, tag, data, desc["mediaType"])


# ---------------------------------------------------------------------------------------------
# OCI layouts, built by hand.

class Layout:
    def __init__(self, path: Path):
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        if not (path / "index.json").exists():
            self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    def _write_index(self, idx):
        (self.path / "index.json").write_text(json.dumps(idx))

    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_text())

    def put(self, data: bytes) -> str:
        d = sha256(data)
        (self.path / "blobs" / "sha256" / d[7:]).write_bytes(data)
        return d

    def read(self, digest: str) -> bytes:
        return (self.path / "blobs" / "sha256" / digest[7:]).read_bytes()

    def image(self, layers: list[tuple[str, bytes, bytes]], *, arch="amd64", os_="linux", variant=None,
              config_extra: dict | None = None, layer_sizes: dict | None = None,
              config_media_type=OCI_CONFIG, manifest_media_type=OCI_MANIFEST) -> dict:
        """layers: (media type, blob bytes, uncompressed tar bytes). Returns the manifest's descriptor.
        layer_sizes: index → size to write in the descriptor instead of the real one."""
        cfg = {"architecture": arch, "os": os_, "created": "2024-01-01T00:00:00Z",
               "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
               "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for _, _, tar in layers]}}
        if variant:
            cfg["variant"] = variant
        cfg.update(config_extra or {})
        cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
        descs = []
        for i, (mt, blob, _) in enumerate(layers):
            size = (layer_sizes or {}).get(i, len(blob))
            descs.append({"mediaType": mt, "digest": self.put(blob), "size": size})
        man = {"schemaVersion": 2, "mediaType": manifest_media_type,
               "config": {"mediaType": config_media_type, "digest": self.put(cfg_bytes), "size": len(cfg_bytes)},
               "layers": descs}
        data = json.dumps(man).encode()
        desc = {"mediaType": manifest_media_type, "digest": self.put(data), "size": len(data)}
        plat = {"architecture": arch, "os": os_}
        if variant:
            plat["variant"] = variant
        desc["platform"] = plat
        return desc

    def make_index(self, manifests: list[dict], media_type=OCI_INDEX) -> dict:
        data = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}).encode()
        return {"mediaType": media_type, "digest": self.put(data), "size": len(data)}

    def tag(self, desc: dict, tag: str) -> dict:
        idx = self.index()
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        idx["manifests"] = [m for m in idx["manifests"]
                            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag] + [entry]
        self._write_index(idx)
        return entry


# ---------------------------------------------------------------------------------------------
# Layer tarballs.

def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            info, data = (e if isinstance(e, tuple) else (e, None))
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti_file(name: str, data: bytes, mode=0o644, uid=0, gid=0) -> tuple[tarfile.TarInfo, bytes]:
    i = tarfile.TarInfo(name)
    i.size, i.mode, i.uid, i.gid, i.mtime = len(data), mode, uid, gid, 1700000000
    return i, data


def ti_dir(name: str, mode=0o755, uid=0, gid=0) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.mode, i.uid, i.gid, i.mtime = tarfile.DIRTYPE, mode, uid, gid, 1700000000
    return i


def ti_symlink(name: str, target: str) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.mode, i.mtime = tarfile.SYMTYPE, target, 0o777, 1700000000
    return i


def ti_hardlink(name: str, target: str) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.mode, i.mtime = tarfile.LNKTYPE, target, 0o644, 1700000000
    return i


def ti_chardev(name: str, major: int, minor: int) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.devmajor, i.devminor, i.mode, i.mtime = tarfile.CHRTYPE, major, minor, 0o666, 1700000000
    return i


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


def gzip_layer(entries) -> tuple[str, bytes, bytes]:
    tar = tar_bytes(entries)
    return LAYER_GZIP, gz(tar), tar


def busybox_layer(busybox: str = "/bin/busybox") -> tuple[str, bytes, bytes]:
    data = Path(busybox).read_bytes()
    return gzip_layer([ti_dir("bin"), ti_file("bin/busybox", data, 0o755), ti_symlink("bin/sh", "busybox"),
                       ti_dir("etc"), ti_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
                       ti_dir("tmp", 0o1777)])


# ---------------------------------------------------------------------------------------------
# A bearer token server for the registry's `auth: token` (JWTs signed with a key whose certificate
# the registry trusts through rootcertbundle).

def _libtrust_kid(public_key) -> str:
    """The key id distribution's libtrust computes: base32 of the first 240 bits of the SHA-256 of
    the DER SubjectPublicKeyInfo, in 12 groups of 4 separated by ':'."""
    from cryptography.hazmat.primitives import serialization
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


class TokenServer:
    """Issues registry tokens for the right basic credentials (and anonymous ones with no access)."""

    def __init__(self, workdir: Path, user: str, password: str, service="hutch-test", issuer="hutch-test-issuer"):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.user, self.password, self.service, self.issuer = user, password, service, issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hutch-test-token")])
        now = datetime.datetime.utcnow()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.kid = _libtrust_kid(self.key.public_key())
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                authz = self.headers.get("Authorization", "")
                who = None
                if authz.startswith("Basic "):
                    u, _, p = base64.b64decode(authz[6:]).decode().partition(":")
                    if (u, p) != (server.user, server.password):
                        server.requests.append({"user": u, "ok": False})
                        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
                        self.send_response(401)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    who = u
                server.requests.append({"user": who, "ok": True, "scope": q.get("scope", [])})
                token = server.token(who, q.get("scope", []))
                body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, who: str | None, scopes: list[str]) -> str:
        import jwt
        access = []
        if who:  # anonymous users get a token with no access: the registry answers 401 to it
            for scope in scopes:
                for s in scope.split(" "):
                    parts = s.split(":")
                    if len(parts) >= 3 and parts[0] == "repository":
                        access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                                       "actions": parts[-1].split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": who or "", "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def registry_auth(self) -> dict:
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.cert_path)}}

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# A proxy in front of a registry: counts requests, and can serve chosen blobs slowly.

class Proxy:
    def __init__(self, upstream: str):
        self.upstream = upstream  # "127.0.0.1:PORT"
        self.counts: Counter = Counter()  # (method, path) → requests
        self.sent: Counter = Counter()    # path → body bytes sent
        self.throttle: dict[str, float] = {}  # substring of the path → bytes per second
        self.no_length: set[str] = set()  # substrings of paths served without Content-Length
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self, method):
                with proxy.lock:
                    proxy.counts[(method, self.path)] += 1
                h, p = proxy.upstream.rsplit(":", 1)
                c = http.client.HTTPConnection(h, int(p), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                c.request(method, self.path, headers=headers)
                r = c.getresponse()
                self.send_response(r.status)
                # Without Content-Length the body simply ends when the connection closes.
                hide_length = any(k in self.path for k in proxy.no_length)
                for k, v in r.getheaders():
                    if k.lower() in ("connection", "transfer-encoding"):
                        continue
                    if hide_length and k.lower() == "content-length":
                        continue
                    self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                rate = next((v for k, v in proxy.throttle.items() if k in self.path), None)
                try:
                    while method != "HEAD":
                        chunk = r.read(16384 if rate else 65536)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        with proxy.lock:
                            proxy.sent[self.path] += len(chunk)
                        if rate:
                            time.sleep(len(chunk) / rate)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    c.close()
                self.close_connection = True

            def do_GET(self):
                self._forward("GET")

            def do_HEAD(self):
                self._forward("HEAD")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def gets_ending(self, suffix: str) -> int:
        with self.lock:
            return sum(n for (m, p), n in self.counts.items() if m == "GET" and p.endswith(suffix))

    def bytes_ending(self, suffix: str) -> int:
        with self.lock:
            return sum(n for p, n in self.sent.items() if p.endswith(suffix))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# Reading the store.

def store_blobs(root: Path) -> set[str]:
    d = root / "blobs" / "sha256"
    return {"sha256:" + n for n in os.listdir(d)} if d.is_dir() else set()


def store_layers(root: Path) -> set[str]:
    d = root / "layers"
    return {"sha256:" + n for n in os.listdir(d)} if d.is_dir() else set()


def store_tmp(root: Path) -> list[str]:
    d = root / "tmp"
    return sorted(os.listdir(d)) if d.is_dir() else []


def store_images(root: Path) -> list[dict]:
    p = root / "images.json"
    return json.loads(p.read_text())["images"] if p.exists() else []


@contextlib.contextmanager
def cd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
