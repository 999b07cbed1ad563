"""Test helpers for the registry client: images made here, a fault proxy, a token server.

The registries themselves are started by ``registries.py``. Everything here
listens on 127.0.0.1 only, on ports the kernel picks, and every thread
started here is stopped by its ``close`` (the fixtures call it in finalizers,
also when a test fails).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.server
import io
import json
import os
import socket
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ketch.registry.client import Registries, RegistryOptions

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def regs() -> Iterator[Registries]:
    """The registry client, trusting no host's certs.d; closed after."""
    registries = Registries(RegistryOptions(certs_dirs=(), timeout=20))
    try:
        yield registries
    finally:
        registries.close()


# --- a test image -------------------------------------------------------------------------


@dataclass
class BuiltImage:
    """An image made here: layers (tar bytes), a config and a manifest, as bytes."""

    layers: list[bytes]
    config: bytes
    manifest: bytes
    media_type: str
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return digest(self.manifest)


def make_image(sizes: tuple[int, ...] = (64 << 10, 3 << 20), arch: str = "amd64",
               media_type: str = OCI_MANIFEST, seed: bytes = b"") -> BuiltImage:
    layers = []
    for i, size in enumerate(sizes):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            data = (seed + os.urandom(size))[:size]
            info = tarfile.TarInfo(f"file{i}.bin")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        layers.append(buf.getvalue())
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps({"architecture": arch, "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest(x) for x in layers]},
                         "history": [{"created_by": "test"} for _ in layers]}).encode()
    layer_type = ("application/vnd.docker.image.rootfs.diff.tar" if docker
                  else "application/vnd.oci.image.layer.v1.tar")
    config_type = ("application/vnd.docker.container.image.v1+json" if docker
                   else "application/vnd.oci.image.config.v1+json")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": digest(x), "size": len(x)} for x in layers],
    }, indent=2).encode()
    blobs = {digest(b): b for b in [*layers, config]}
    return BuiltImage(layers, config, manifest, media_type, blobs)


def make_index(images: list[tuple[BuiltImage, str, str]]) -> bytes:
    """An OCI index over (image, os, arch) entries."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": img.media_type, "digest": img.manifest_digest, "size": len(img.manifest),
         "platform": {"os": os_name, "architecture": arch}} for img, os_name, arch in images]}).encode()


class MemorySink:
    """A blob sink in memory (offset, write, truncate), without digest(): the client hashes."""

    def __init__(self) -> None:
        self.buf = bytearray()

    @property
    def offset(self) -> int:
        return len(self.buf)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buf += data
        return len(data)

    def truncate(self, size: int = 0) -> None:
        del self.buf[size:]


# --- fault-injecting proxy ------------------------------------------------------------------


class FaultProxy:
    """A TCP proxy to ``target`` that can cut, corrupt, or strip Range from what passes.

    ``cut_after``: on the first ``cuts`` connections whose server->client
    stream passes that many bytes, close both sides there (a dropped
    download). ``strip_range``: rename the Range request header, so the
    server sends whole blobs. ``corrupt_at``: flip one byte at that offset of
    the first connection's server->client stream that reaches it.
    """

    def __init__(self, target_port: int, cut_after: int | None = None, cuts: int = 1,
                 strip_range: bool = False, corrupt_at: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.strip_range = strip_range
        self.corrupt_at = corrupt_at
        self.requests: list[bytes] = []
        self.ranges: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self.netloc = f"127.0.0.1:{self.port}"
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
                self.connections += 1
            for args in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                with self._lock:
                    self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        passed = 0
        cut_here = False
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if to_server:
                    with self._lock:
                        self.requests.append(data.split(b"\r\n", 1)[0])
                        for line in data.split(b"\r\n"):
                            if line.lower().startswith(b"range:"):
                                self.ranges.append(line.split(b":", 1)[1].strip())
                    if self.strip_range:
                        data = data.replace(b"\r\nRange: ", b"\r\nXange: ")
                else:
                    with self._lock:
                        if (self.cut_after is not None and self.cuts_left > 0
                                and passed + len(data) > self.cut_after):
                            self.cuts_left -= 1
                            cut_here = True
                        if self.corrupt_at is not None and passed <= self.corrupt_at < passed + len(data):
                            i = self.corrupt_at - passed
                            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                            self.corrupt_at = None
                    if cut_here:
                        assert self.cut_after is not None
                        dst.sendall(data[:self.cut_after - passed])
                        break
                dst.sendall(data)
                passed += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accept.join(5)
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in threads:
            t.join(5)


# --- token server --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A bearer-token issuer for docker-registry's ``auth.token`` mode (RS256 JWTs with x5c).

    Users: ``alice``/``s3cret`` get pull and push on every repository they
    ask for; anonymous requests get pull only. ``expire_first`` makes the
    first token already expired (while claiming a long ``expires_in``), to
    exercise the client's invalid_token recovery. A POST with
    grant_type=refresh_token accepts the refresh tokens it issued.
    """

    ISSUER = "ketch-test-issuer"
    SERVICE = "ketch-test-registry"

    def __init__(self, base: Path, expire_first: bool = False) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        base.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ketch-test-token")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.cert_path = base / "token.crt"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.expire_first = expire_first
        self.issued: list[dict[str, Any]] = []
        self.refresh_tokens: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = server._basic_user(self.headers.get("Authorization", ""))
                if user is False:
                    return self._answer(401, {"details": "incorrect username or password"})
                offline = query.get("offline_token", [""])[0] == "true"
                self._answer(200, server._issue(user or "", query.get("scope", []), offline, "GET"))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if form.get("grant_type", [""])[0] != "refresh_token":
                    return self._answer(400, {"error": "unsupported_grant_type"})
                refresh = form.get("refresh_token", [""])[0]
                with server.lock:
                    known = refresh in server.refresh_tokens
                if not known:
                    return self._answer(401, {"details": "invalid refresh token"})
                scopes = form.get("scope", [""])[0].split()
                self._answer(200, server._issue("alice", scopes, False, "POST"))

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def registry_config(self) -> dict[str, str]:
        return {"realm": self.realm, "service": self.SERVICE, "issuer": self.ISSUER,
                "rootcertbundle": str(self.cert_path)}

    @staticmethod
    def _basic_user(header: str) -> str | bool | None:
        """None: anonymous; False: wrong password; else the user."""
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if (user, password) == ("alice", "s3cret") else False

    def _issue(self, user: str, scopes: list[str], offline: bool, method: str) -> dict[str, Any]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            allowed = [a for a in actions.split(",") if a in (("pull", "push", "delete")
                                                               if user else ("pull",))]
            access.append({"type": kind, "name": repo, "actions": allowed})
        now = int(time.time())
        with self.lock:
            first = not self.issued
            self.issued.append({"user": user, "scopes": scopes, "method": method,
                                "offline": offline})
        exp = now - 600 if (first and self.expire_first) else now + 300
        claims = {"iss": self.ISSUER, "sub": user, "aud": self.SERVICE, "exp": exp,
                  "nbf": now - 700, "iat": now - 700, "jti": os.urandom(8).hex(),
                  "access": access}
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self._x5c]}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        doc: dict[str, Any] = {"token": signing_input + "." + _b64url(signature),
                               "expires_in": 300, "issued_at": time.strftime(
                                   "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        if offline and user:
            refresh = "refresh-" + os.urandom(8).hex()
            with self.lock:
                self.refresh_tokens.add(refresh)
            doc["refresh_token"] = refresh
        return doc

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)
