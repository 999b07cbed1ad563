"""skopeo as the judge of load_archive and save_archive.

skopeo (containers/image) writes OCI layouts and docker-archives the way the
rest of the field reads them. Archives are built here from scratch, converted
by skopeo, loaded by ketch; and what ketch saves is read back by skopeo. Only
local transports are used (docker-archive:, oci:, oci-archive:), with
``--insecure-policy`` so no policy file is needed: nothing touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ketch.image import oci
from ketch.image.archive import LoadedImage, load_archive, save_archive
from ketch.image.content import ContentStore

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed"),
]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


LAYERS = [_tar({"bin/sh": b"#!/bin/true\n", "etc/hostname": b"box\n"}),
          _tar({"app/run": b"run\n" * 1000})]


def _docker_archive(path: Path, tag: str = "busybox:latest") -> bytes:
    """A docker-save archive (pre-25 layout) of one image; returns its config."""
    cfg = json.dumps({
        "architecture": oci.host_arch(), "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer) for layer in LAYERS]},
        "history": [{"created_by": "ADD a /"}, {"created_by": "ADD b /"}],
    }).encode()
    cfg_name = f"{_sha(cfg)[7:]}.json"
    files = {f"{i:064x}/layer.tar": layer for i, layer in enumerate(LAYERS, 1)}
    files[cfg_name] = cfg
    files["manifest.json"] = json.dumps([{"Config": cfg_name, "RepoTags": [tag],
                                          "Layers": list(files)[:-1]}]).encode()
    path.write_bytes(_tar(files))
    return cfg


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _tar_dir(directory: Path) -> io.BytesIO:
    """The layout as ``tar -C dir -cf - .`` packs it: "./" prefixes, directory entries."""
    proc = subprocess.run(["tar", "-C", str(directory), "-cf", "-", "."], capture_output=True,
                          timeout=60, check=True)
    return io.BytesIO(proc.stdout)


def _check(store: ContentStore, image: LoadedImage, config: bytes) -> oci.Manifest:
    """Consistent in the store, and the same image as ``config`` describes.

    skopeo re-encodes the config when it converts Docker to OCI, so the
    bytes (and the image ID) may differ from ours; the layers may not.
    """
    manifest = oci.parse_manifest(store.read(image.manifest_digest))
    stored = store.read(image.config_digest)
    assert image.config_digest == oci.image_id(stored) == manifest.config.digest
    assert oci.parse_config(stored).rootfs == oci.parse_config(config).rootfs
    assert manifest.layers == image.layers
    for desc in [manifest.config, *manifest.layers]:
        assert store.verify(desc.digest)
    return manifest


@pytest.mark.parametrize("ref, compress, tags", [
    ("latest", [], []),                                      # a bare tag names no image
    ("busybox:1.36", ["--dest-compress-format", "zstd"], ["busybox:1.36"]),
    ("example.com/app:v1", ["--dest-compress-format", "gzip"], ["example.com/app:v1"]),
])
def test_load_oci_layout_written_by_skopeo(tmp_path: Path, ref: str, compress: list[str],
                                           tags: list[str]) -> None:
    cfg = _docker_archive(tmp_path / "in.tar")
    layout = tmp_path / "layout"
    skopeo("copy", *compress, "docker-archive:" + str(tmp_path / "in.tar"), f"oci:{layout}:{ref}")
    index = json.loads((layout / "index.json").read_text())
    store = ContentStore(tmp_path / "content")
    (image,) = load_archive(_tar_dir(layout), store)
    assert image.manifest_digest == index["manifests"][0]["digest"]
    assert image.repo_tags == tags
    manifest = _check(store, image, cfg)
    if compress and "zstd" in compress:
        assert {d.media_type for d in manifest.layers} == {oci.MEDIA_TYPE_OCI_LAYER_ZSTD}
    # The same bytes skopeo wrote, blob for blob.
    for desc in manifest.layers:
        assert store.read(desc.digest) == (layout / "blobs/sha256" / desc.digest[7:]).read_bytes()


def test_load_docker_archive_written_by_skopeo(tmp_path: Path) -> None:
    cfg = _docker_archive(tmp_path / "in.tar")
    skopeo("copy", "docker-archive:" + str(tmp_path / "in.tar"), f"oci:{tmp_path / 'layout'}:x")
    out = tmp_path / "out.tar"
    skopeo("copy", f"oci:{tmp_path / 'layout'}:x", f"docker-archive:{out}:example.com/app:2")
    store = ContentStore(tmp_path / "content")
    with open(out, "rb") as f:
        (image,) = load_archive(f, store)
    assert image.repo_tags == ["example.com/app:2"]
    _check(store, image, cfg)


def test_load_our_own_docker_archive_gzipped(tmp_path: Path) -> None:
    """``docker save | gzip`` is common; the outer compression is detected."""
    cfg = _docker_archive(tmp_path / "in.tar")
    data = gzip.compress((tmp_path / "in.tar").read_bytes())
    store = ContentStore(tmp_path / "content")
    (image,) = load_archive(io.BytesIO(data), store)
    assert image.repo_tags == ["busybox:latest"]
    _check(store, image, cfg)


def test_saved_archive_read_by_skopeo(tmp_path: Path) -> None:
    cfg = _docker_archive(tmp_path / "in.tar")
    store = ContentStore(tmp_path / "content")
    with open(tmp_path / "in.tar", "rb") as f:
        (image,) = load_archive(f, store)
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as f:
        save_archive([image], store, f)

    as_oci = json.loads(skopeo("inspect", f"oci-archive:{saved}:latest"))
    assert as_oci["Digest"] == image.manifest_digest
    assert as_oci["Layers"] == [d.digest for d in image.layers]
    assert as_oci["Architecture"] == oci.host_arch() and as_oci["Os"] == "linux"

    # skopeo finds the image by the RepoTags of manifest.json.
    as_docker = json.loads(skopeo("inspect", f"docker-archive:{saved}:busybox:latest"))
    assert as_docker["Os"] == "linux" and as_docker["Env"] == ["PATH=/bin"]

    # The config survives byte for byte, so the image ID does too.
    config_via_skopeo = skopeo("inspect", "--raw", "--config", f"docker-archive:{saved}")
    assert _sha(config_via_skopeo.encode()) == image.config_digest == _sha(cfg)

    # And skopeo can copy it on into a layout that ketch loads again, unchanged.
    skopeo("copy", f"oci-archive:{saved}:latest", f"oci:{tmp_path / 'again'}:latest")
    other = ContentStore(tmp_path / "other")
    (again,) = load_archive(_tar_dir(tmp_path / "again"), other)
    assert again.config_digest == image.config_digest
