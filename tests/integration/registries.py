"""Registries on loopback for the pull/push tests: Debian's Go registry and ketch's own.

Each is a process of its own on 127.0.0.1 and a free port, with its storage in
a private directory; the fixtures stop them by the pid they started and remove
the directory, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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


@dataclass
class Registry:
    """One running registry: where it listens and how to stop it."""

    kind: str
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    auth: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return (self.dir / "registry.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _htpasswd(path: Path) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.write_text(f"{USER}:{hashed}\n")


def _wait(reg: Registry) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            raise AssertionError(f"the {reg.kind} registry exited:\n{reg.log()}")
        try:
            urllib.request.urlopen(f"http://{reg.host}/v2/", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return      # 401 with auth: it answers
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the {reg.kind} registry did not answer:\n{reg.log()}")


def start_go_registry(d: Path, *, auth: bool = False) -> Registry:
    """Debian's docker-registry (distribution 2.8), deletes enabled."""
    assert GO_REGISTRY is not None
    port = free_port()
    lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
             f"    rootdirectory: {d / 'storage'}", "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}", "  secret: ketch-test"]
    if auth:
        _htpasswd(d / "htpasswd")
        lines += ["auth:", "  htpasswd:", "    realm: ketch-test",
                  f"    path: {d / 'htpasswd'}"]
    (d / "config.yml").write_text("\n".join(lines) + "\n")
    with open(d / "registry.log", "wb") as log:
        proc = subprocess.Popen([GO_REGISTRY, "serve", str(d / "config.yml")], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    reg = Registry("go", d, port, proc, auth)
    _wait(reg)
    return reg


def start_ketch_registry(d: Path, *, auth: str = "none", extra: tuple[str, ...] = ()) -> Registry:
    """``ketch registry serve`` on a directory (``auth``: none, basic or token)."""
    port = free_port()
    args = [sys.executable, "-m", "ketch.cli.main", "registry", "serve",
            "--addr", f"127.0.0.1:{port}", "--root", str(d / "storage"), *extra]
    if auth != "none":
        _htpasswd(d / "htpasswd")
        args += ["--auth", auth, "--htpasswd", str(d / "htpasswd")]
    with open(d / "registry.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    reg = Registry("ketch", d, port, proc, auth != "none")
    _wait(reg)
    return reg


@pytest.fixture
def start_registry() -> Iterator[Callable[..., Registry]]:
    """``start_registry("go"|"ketch", auth=...)``: registries stopped and removed after."""
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
