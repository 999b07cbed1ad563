"""Real clients against ``ketch registry serve``: skopeo copies images in and out, digests intact.

The image is made here with tarfile (no internet): an OCI layout with two
gzip layers. skopeo pushes it (POST, PATCH, PUT uploads; a manifest by tag),
inspects it, copies it back out, and converts it to Docker schema 2 on the
way to a second repository (a cross-repository mount). The server is a
subprocess on 127.0.0.1 and a free port (``tests/integration/registries.py``),
stopped by its pid.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.integration.registries import PASSWORD, USER, Registry, oci_layout, tar_layer

SKOPEO = shutil.which("skopeo")
pytestmark = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")


def make_oci_layout(layout: Path, tag: str = "v1") -> str:
    """An OCI image layout with two gzip layers tagged ``tag``; its manifest digest."""
    layers = [tar_layer({"hello.txt": b"hello from ketch\n"}),
              tar_layer({f"data/{i}.bin": bytes([i]) * 200_000 for i in range(5)})]
    return oci_layout(layout, [gzip.compress(x, mtime=0) for x in layers], tag=tag)


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert SKOPEO is not None
    proc = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def test_skopeo_copy_inspect_round_trip(start_registry: Callable[..., Registry],
                                        tmp_path: Path) -> None:
    reg = start_registry("ketch", extra=("--access-log", "-"))
    digest = make_oci_layout(tmp_path / "src")
    dest = f"docker://{reg.host}/ketch-test/app:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:v1", dest)

    info = json.loads(skopeo("inspect", "--tls-verify=false", dest).stdout)
    assert info["Digest"] == digest
    assert len(info["Layers"]) == 2
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", dest).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"

    skopeo("copy", "--src-tls-verify=false", dest, f"oci:{tmp_path / 'out'}:v1")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    for layer in raw["layers"]:
        blob = tmp_path / "out" / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]

    # to another repository as Docker schema 2: the layers are mounted, not sent again
    other = f"docker://{reg.host}/ketch-test/other:v2s2"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2",
           dest, other)
    raw2 = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", other).stdout)
    assert raw2["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [x["digest"] for x in raw2["layers"]] == [x["digest"] for x in raw["layers"]]
    mounts = [x for x in reg.log().splitlines() if "/ketch-test/other/blobs/uploads/?" in x]
    assert len(mounts) == 2 and all("mount=sha256" in x and '" 201 ' in x for x in mounts)

    tags = json.loads(skopeo("list-tags", "--tls-verify=false",
                             f"docker://{reg.host}/ketch-test/app").stdout)
    assert tags["Tags"] == ["v1"]
    assert _get(f"http://{reg.host}/v2/_catalog") == {
        "repositories": ["ketch-test/app", "ketch-test/other"]}

    skopeo("delete", "--tls-verify=false", f"docker://{reg.host}/ketch-test/other:v2s2")
    missing = skopeo("inspect", "--tls-verify=false", other, check=False)
    assert missing.returncode != 0 and "manifest unknown" in missing.stderr

    reg.stop()
    fsck = subprocess.run([*_ketch(), "registry", "fsck", "--root", str(reg.dir / "storage")],
                          capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    gc = subprocess.run([*_ketch(), "registry", "gc", "--root", str(reg.dir / "storage")],
                        capture_output=True, text=True, timeout=60)
    assert gc.returncode == 0, gc.stderr
    # the deleted schema-2 manifest and config go; the shared layers stay
    assert "deleted blob" in gc.stdout


def _ketch() -> list[str]:
    return [sys.executable, "-m", "ketch.cli.main"]


def copy_with_creds(src: str, dest: str) -> str:
    """``src`` copied to ``dest`` with the registry's user; the manifest digest found there."""
    skopeo("copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}", src, dest)
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"--creds={USER}:{PASSWORD}",
                             dest).stdout)
    return str(info["Digest"])


def test_skopeo_with_basic_auth(start_registry: Callable[..., Registry], tmp_path: Path) -> None:
    reg = start_registry("ketch", auth="basic")
    digest = make_oci_layout(tmp_path / "src")
    dest = f"docker://{reg.host}/private/app:v1"
    denied = skopeo("copy", "--dest-tls-verify=false", f"--dest-creds={USER}:wrong",
                    f"oci:{tmp_path / 'src'}:v1", dest, check=False)
    assert denied.returncode != 0
    assert "unauthorized" in denied.stderr.lower() or "authentication" in denied.stderr.lower()
    anonymous = skopeo("inspect", "--tls-verify=false", dest, check=False)
    assert anonymous.returncode != 0
    assert copy_with_creds(f"oci:{tmp_path / 'src'}:v1", dest) == digest


def test_skopeo_with_token_auth(start_registry: Callable[..., Registry], tmp_path: Path) -> None:
    reg = start_registry("ketch", auth="token")
    digest = make_oci_layout(tmp_path / "src")
    dest = f"docker://{reg.host}/private/app:v1"
    anonymous = skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:v1", dest,
                       check=False)
    assert anonymous.returncode != 0
    assert copy_with_creds(f"oci:{tmp_path / 'src'}:v1", dest) == digest
    try:
        urllib.request.urlopen(f"http://{reg.host}/v2/", timeout=10).close()
        raise AssertionError("an anonymous /v2/ was let in")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
        assert exc.headers["WWW-Authenticate"].startswith("Bearer realm=")


def make_docker_archive(path: Path) -> str:
    """A ``docker save`` archive of one image tagged ``app:v1``; its config's digest."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("etc/motd")
        data = b"made by ketch's tests\n"
        info.size, info.mtime = len(data), 1700000000
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    members = {f"{config_hex}.json": config, "layer1/layer.tar": layer_bytes,
               "manifest.json": json.dumps([{"Config": f"{config_hex}.json",
                                             "RepoTags": ["app:v1"],
                                             "Layers": ["layer1/layer.tar"]}]).encode()}
    with tarfile.open(path, "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), 1700000000
            tar.addfile(info, io.BytesIO(content))
    return f"sha256:{config_hex}"


def test_skopeo_docker_archive_in_and_out(start_registry: Callable[..., Registry],
                                          tmp_path: Path) -> None:
    reg = start_registry("ketch")
    config_digest = make_docker_archive(tmp_path / "image.tar")
    dest = f"docker://{reg.host}/archive/app:v1"
    skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{tmp_path / 'image.tar'}", dest)
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", dest).stdout)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert raw["config"]["digest"] == config_digest
    digest = json.loads(skopeo("inspect", "--tls-verify=false", dest).stdout)["Digest"]
    skopeo("copy", "--src-tls-verify=false", dest, f"docker-archive:{tmp_path / 'out.tar'}")
    with tarfile.open(tmp_path / "out.tar") as tar:
        names = tar.getnames()
    assert f"{config_digest.split(':', 1)[1]}.json" in names
    # by digest, the same bytes come back
    by_digest = skopeo("inspect", "--raw", "--tls-verify=false",
                       f"docker://{reg.host}/archive/app@{digest}").stdout
    assert "sha256:" + hashlib.sha256(by_digest.encode()).hexdigest() == digest
