"""Registries on loopback for the tests: Debian's Go registry, ketch's own, moto's S3, TLS.

Each server is a process of its own on 127.0.0.1 and a free port, with its
storage in a private directory; the fixtures stop them by the pid they
started and remove the directory, also when a test fails. The launchers here
are the only ones: test modules import them (the fixtures are registered in
``conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

GO_REGISTRY = shutil.which("docker-registry") or (
    "/usr/bin/docker-registry" if os.path.exists("/usr/bin/docker-registry") else None)
USER, PASSWORD = "ketch", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Whether ``proc`` listens on 127.0.0.1:``port`` within ``timeout`` (False: it exited or
    did not). A TCP connect, not a request: it works for TLS servers as well."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: only the process the test started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def add_user(path: Path, user: str, password: str) -> None:
    """Append a bcrypt htpasswd line (what ``htpasswd -B`` writes; both servers read it)."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    with open(path, "a") as f:
        f.write(f"{user}:{hashed}\n")


@dataclass
class Registry:
    """One running registry: where it listens and how to stop it."""

    kind: str
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    auth: bool = False
    tls: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def log(self) -> str:
        try:
            return (self.dir / "registry.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)


def _spawn(kind: str, d: Path, port: int, args: list[str], *, auth: bool, tls: bool,
           env: dict[str, str] | None = None) -> Registry:
    """Start ``args`` logging to ``d/registry.log``; the Registry once it listens (stopped
    again if it does not)."""
    with open(d / "registry.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    reg = Registry(kind, d, port, proc, auth, tls)
    if not wait_listening(proc, port, 20):
        exited = proc.poll() is not None
        reg.stop()
        raise AssertionError(f"the {kind} registry {'exited' if exited else 'did not listen'}:"
                             f"\n{reg.log()}")
    return reg


def start_go_registry(d: Path, *, auth: bool = False, tls: tuple[Path, Path] | None = None,
                      client_ca: Path | None = None,
                      token: dict[str, str] | None = None) -> Registry:
    """Debian's docker-registry (distribution 2.8), deletes enabled.

    ``auth``: htpasswd with USER and PASSWORD; ``tls``: (certificate, key),
    ``client_ca`` to require client certificates; ``token``: the ``auth.token``
    section (realm, service, issuer, rootcertbundle).
    """
    assert GO_REGISTRY is not None
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
             f"    rootdirectory: {d / 'storage'}", "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}", "  secret: ketch-test"]
    if tls:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
        if client_ca:
            lines += ["    clientcas:", f"      - {client_ca}"]
    if auth:
        add_user(d / "htpasswd", USER, PASSWORD)
        lines += ["auth:", "  htpasswd:", "    realm: ketch-test",
                  f"    path: {d / 'htpasswd'}"]
    if token:
        lines += ["auth:", "  token:"] + [f"    {k}: {v}" for k, v in token.items()]
    (d / "config.yml").write_text("\n".join(lines) + "\n")
    return _spawn("go", d, port, [GO_REGISTRY, "serve", str(d / "config.yml")],
                  auth=auth or bool(token), tls=bool(tls))


def start_ketch_registry(d: Path, *, auth: str = "none", extra: Sequence[str] = (),
                         htpasswd: Path | None = None, tls: tuple[Path, Path] | None = None,
                         storage: Sequence[str] | None = None,
                         env: dict[str, str] | None = None) -> Registry:
    """``ketch registry serve`` (``auth``: none, basic or token).

    ``htpasswd``: the users' file, given USER and PASSWORD when it does not
    exist yet (default ``d/htpasswd``); ``tls``: (certificate, key);
    ``storage``: storage options instead of ``--root d/storage``.
    """
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "ketch.cli.main", "registry", "serve",
            "--addr", f"127.0.0.1:{port}",
            *(storage if storage is not None else ("--root", str(d / "storage"))), *extra]
    if auth != "none":
        htpasswd = htpasswd or d / "htpasswd"
        if not htpasswd.exists():
            add_user(htpasswd, USER, PASSWORD)
        args += ["--auth", auth, "--htpasswd", str(htpasswd)]
    if tls:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    return _spawn("ketch", d, port, args, auth=auth != "none", tls=bool(tls), env=env)


@pytest.fixture
def start_registry() -> Iterator[Callable[..., Registry]]:
    """``start_registry("go"|"ketch", **options of start_go_registry|start_ketch_registry)``:
    registries stopped and their directories removed after."""
    started: list[Registry] = []

    def start(kind: str = "go", **kw: object) -> Registry:
        if kind == "go" and GO_REGISTRY is None:
            pytest.skip("Debian's docker-registry is not installed")
        d = Path(tempfile.mkdtemp(prefix="ketch-test-registry-", dir="/tmp"))
        try:
            reg = (start_go_registry(d, **kw) if kind == "go"  # type: ignore[arg-type]
                   else start_ketch_registry(d, **kw))  # type: ignore[arg-type]
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        started.append(reg)
        return reg

    yield start
    for reg in started:
        reg.stop()
        shutil.rmtree(reg.dir, ignore_errors=True)


# --- moto's S3 server -----------------------------------------------------------------


@dataclass
class Moto:
    endpoint: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def moto_server(log_path: Path, *extra: str, scheme: str = "http") -> Iterator[Moto]:
    """A moto server subprocess on a free loopback port, killed by its pid on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # A file, not a pipe: moto logs every request, and a full pipe would stop it.
    with open(log_path, "wb") as log:
        for _ in range(3):  # the port was free when chosen; another process may take it first
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port),
                 *extra], stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                if wait_listening(process, port, 30):
                    yield Moto(f"{scheme}://127.0.0.1:{port}", process)
                    return
            finally:
                stop_process(process)
    pytest.fail(f"moto server did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """One moto S3 server for the module (every test makes its own bucket)."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


# --- TLS material (openssl) -------------------------------------------------------------


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd, timeout=60)


def self_signed(d: Path) -> tuple[Path, Path]:
    """``d/server.crt``, a self-signed certificate for 127.0.0.1 (its own CA), and its key."""
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "server.crt", d / "server.key"
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert))
    return cert, key


def make_tls(base: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and a client pair."""
    base.mkdir(parents=True, exist_ok=True)
    _openssl(base, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=ketch test CA")
    (base / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(base, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    _openssl(base, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    (base / "client-ext.cnf").write_text("extendedKeyUsage=clientAuth\n")
    _openssl(base, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key",
             "-out", "client.csr", "-subj", "/CN=ketch test client")
    _openssl(base, "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "client.cert", "-days", "2", "-extfile",
             "client-ext.cnf")
    return {name: base / name for name in ("ca.crt", "server.crt", "server.key", "client.cert",
                                           "client.key")}


# --- putting images into a registry by hand (the distribution API, no client of ours) ---


def put_blob(host: str, repo: str, data: bytes) -> str:
    """Upload one blob (POST then PUT with the body); returns its digest."""
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST",
                                 data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = f"http://{host}{location}"
    sep = "&" if "?" in location else "?"
    req = urllib.request.Request(f"{location}{sep}digest={digest}", method="PUT", data=data,
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req, timeout=30).close()
    return digest


def put_manifest(host: str, repo: str, ref: str, doc: dict[str, object], media_type: str) -> str:
    import hashlib
    import json

    data = json.dumps(doc).encode()
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}", method="PUT",
                                 data=data, headers={"Content-Type": media_type})
    urllib.request.urlopen(req, timeout=10).close()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o755, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def put_image(host: str, repo: str, layers: list[bytes], *, arch: str = "amd64",
              tag: str | None = None, gzip_layers: bool = True) -> tuple[str, int]:
    """A Docker schema 2 image of these uncompressed layers; (manifest digest, size)."""
    import gzip
    import hashlib
    import json

    config = json.dumps({
        "architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(la).hexdigest() for la in layers]},
    }).encode()
    blobs = [gzip.compress(la, mtime=0) if gzip_layers else la for la in layers]
    layer_type = ("application/vnd.docker.image.rootfs.diff.tar.gzip" if gzip_layers
                  else "application/vnd.docker.image.rootfs.diff.tar")
    doc = {"schemaVersion": 2,
           "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                      "digest": put_blob(host, repo, config), "size": len(config)},
           "layers": [{"mediaType": layer_type, "digest": put_blob(host, repo, b),
                       "size": len(b)} for b in blobs]}
    size = len(json.dumps(doc).encode())
    digest = put_manifest(host, repo, tag or "sha256:" + hashlib.sha256(
        json.dumps(doc).encode()).hexdigest(), doc, str(doc["mediaType"]))
    return digest, size


# --- an OCI image layout on disk (skopeo's ``oci:`` source) ---


def oci_layout(d: Path, layers: Sequence[bytes], *, tag: str = "latest") -> str:
    """An OCI image layout in ``d``: one image of these layer tars, tagged ``tag``; its
    manifest digest. A gzipped layer (by its magic bytes) is stored as it is, with the
    ``+gzip`` media type and the digest of its tar as diff_id."""
    import gzip
    import hashlib
    import json

    def sha(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def blob(data: bytes) -> dict[str, object]:
        (d / "blobs" / "sha256" / sha(data).split(":")[1]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    (d / "blobs" / "sha256").mkdir(parents=True)
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    gzipped = [la[:2] == b"\x1f\x8b" for la in layers]
    diff_ids = [sha(gzip.decompress(la) if gz else la) for la, gz in zip(layers, gzipped,
                                                                          strict=True)]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar" + (
            "+gzip" if gz else ""), **blob(la)} for la, gz in zip(layers, gzipped, strict=True)],
    }).encode()
    desc = blob(manifest)
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **desc,
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return str(desc["digest"])
