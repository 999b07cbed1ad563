"""load_archive / save_archive over archives built here, good and bad."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from ketch.errors import InvalidArgument, System
from ketch.image import archive, oci
from ketch.image.archive import LoadedImage, load_archive, save_archive
from ketch.image.content import ContentStore, Writer

Entry = tuple[str, bytes | str]  # (name, data) or (name, "->target") for a symlink


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hexof(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def config(diff_ids: list[str], cmd: str = "sh") -> bytes:
    return json.dumps({
        "architecture": oci.host_arch(), "os": "linux",
        "config": {"Cmd": [cmd], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}],
    }, separators=(",", ":")).encode()


def tar_of(entries: list[Entry], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs: set[str] = set()
        for name, data in entries:
            parent = name.rpartition("/")[0]
            if parent and parent not in dirs:
                dirs.add(parent)
                d = tarfile.TarInfo(parent)
                d.type = tarfile.DIRTYPE
                t.addfile(d)
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return gz(buf.getvalue()) if compress else buf.getvalue()


L1 = layer({"bin/sh": b"#!shell\n", "etc/hostname": b"box\n"})
L2 = layer({"app/run": b"run\n"})


def docker_save(images: list[tuple[list[str], list[bytes]]]) -> list[Entry]:
    """Entries as ``docker save`` (before 25) writes them; duplicates are symlinks."""
    entries: list[Entry] = []
    manifest = []
    seen: dict[str, str] = {}
    for tags, layers in images:
        paths = []
        diff_ids = []
        for i, blob in enumerate(layers):
            raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
            diff_ids.append(sha(raw))
            v1 = hexof(f"{tags}-{i}".encode())
            path = f"{v1}/layer.tar"
            if sha(blob) in seen:
                entries.append((path, "../" + seen[sha(blob)]))
            else:
                seen[sha(blob)] = path
                entries += [(f"{v1}/VERSION", b"1.0"), (f"{v1}/json", b'{"id":"%s"}' % v1.encode()),
                            (path, blob)]
            paths.append(path)
        cfg = config(diff_ids, cmd=str(tags))
        entries.append((f"{hexof(cfg)}.json", cfg))
        manifest.append({"Config": f"{hexof(cfg)}.json", "RepoTags": tags, "Layers": paths})
    entries.append(("repositories", b"{}"))
    entries.append(("manifest.json", json.dumps(manifest).encode()))
    return entries


def oci_layout(layers: list[tuple[str, bytes]], annotations: dict[str, str] | None = None,
               diff_ids: list[str] | None = None) -> tuple[list[Entry], str]:
    """An OCI layout with one image; returns the entries and the manifest digest."""
    blobs: list[Entry] = []
    descs = []
    for media_type, blob in layers:
        blobs.append((f"blobs/sha256/{hexof(blob)}", blob))
        descs.append({"mediaType": media_type, "digest": sha(blob), "size": len(blob)})
    if diff_ids is None:
        diff_ids = [sha(gzip.decompress(b) if "gzip" in mt else
                        zstandard.ZstdDecompressor().decompressobj().decompress(b)
                        if "zstd" in mt else b) for mt, b in layers]
    cfg = config(diff_ids)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": oci.MEDIA_TYPE_OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)},
        "layers": descs}).encode()
    index = {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_INDEX, "manifests": [
        {"mediaType": oci.MEDIA_TYPE_OCI_MANIFEST, "digest": sha(manifest),
         "size": len(manifest), "annotations": annotations or {}}]}
    entries: list[Entry] = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                            ("index.json", json.dumps(index).encode()),
                            (f"blobs/sha256/{hexof(cfg)}", cfg),
                            (f"blobs/sha256/{hexof(manifest)}", manifest), *blobs]
    return entries, sha(manifest)


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def load(store: ContentStore, data: bytes) -> list[LoadedImage]:
    return load_archive(io.BytesIO(data), store)


def blobs(store: ContentStore) -> set[str]:
    return {i.digest for i in store.walk()}


def check_image(store: ContentStore, image: LoadedImage) -> oci.Manifest:
    """Everything the image names is in the store and consistent."""
    manifest = oci.parse_manifest(store.read(image.manifest_digest))
    assert manifest.config.digest == image.config_digest
    assert manifest.layers == image.layers
    cfg = oci.parse_config(store.read(image.config_digest))
    assert len(cfg.rootfs.diff_ids) == len(manifest.layers)
    for desc in [manifest.config, *manifest.layers]:
        assert store.verify(desc.digest)
        assert store.info(desc.digest).size == desc.size
    assert store.statuses() == []
    return manifest


# --- docker save ------------------------------------------------------------------

def test_docker_save_plain_layers(store: ContentStore) -> None:
    (image,) = load(store, tar_of(docker_save([(["busybox:latest"], [L1, L2])])))
    assert image.repo_tags == ["busybox:latest"]
    manifest = check_image(store, image)
    assert manifest.media_type == oci.MEDIA_TYPE_OCI_MANIFEST
    assert [(d.media_type, d.digest) for d in image.layers] == [
        (oci.MEDIA_TYPE_OCI_LAYER, sha(L1)), (oci.MEDIA_TYPE_OCI_LAYER, sha(L2))]
    cfg = oci.parse_config(store.read(image.config_digest))
    assert cfg.rootfs.diff_ids == [sha(L1), sha(L2)]
    assert store.read(sha(L1)) == L1


def test_docker_save_gzip_layer_and_compressed_archive(store: ContentStore) -> None:
    data = tar_of(docker_save([(["example.com/app:1"], [gz(L1)])]), compress=True)
    (image,) = load(store, data)
    assert image.repo_tags == ["example.com/app:1"]
    assert image.layers[0].media_type == oci.MEDIA_TYPE_OCI_LAYER_GZIP
    assert image.layers[0].digest == sha(gz(L1))
    check_image(store, image)


def test_docker_save_shared_layer_symlink(store: ContentStore) -> None:
    data = tar_of(docker_save([(["a:1", "a:latest"], [L1]), (["docker.io/library/b:2"], [L1, L2])]))
    a, b = load(store, data)
    assert a.repo_tags == ["a:1", "a:latest"] and b.repo_tags == ["b:2"]
    assert a.layers[0] == b.layers[0]
    check_image(store, a)
    check_image(store, b)


def test_docker_save_untagged(store: ContentStore) -> None:
    (image,) = load(store, tar_of(docker_save([([], [L1])])))
    assert image.repo_tags == []
    check_image(store, image)


def test_load_is_repeatable(store: ContentStore) -> None:
    data = tar_of(docker_save([(["busybox:latest"], [L1])]))
    first = load(store, data)
    before = blobs(store)
    assert load(store, data) == first
    assert blobs(store) == before


# --- OCI layouts --------------------------------------------------------------------

def test_oci_layout_gzip_and_zstd(store: ContentStore) -> None:
    entries, mdigest = oci_layout(
        [(oci.MEDIA_TYPE_OCI_LAYER_GZIP, gz(L1)), (oci.MEDIA_TYPE_OCI_LAYER_ZSTD, zst(L2))],
        {oci.ANNOTATION_IMAGE_NAME: "docker.io/library/busybox:latest",
         oci.ANNOTATION_REF_NAME: "latest"})
    (image,) = load(store, tar_of(entries))
    assert image.manifest_digest == mdigest
    assert image.repo_tags == ["busybox:latest"]
    check_image(store, image)


@pytest.mark.parametrize("annotations, tags", [
    ({oci.ANNOTATION_REF_NAME: "latest"}, []),            # skopeo oci:dir:latest
    ({oci.ANNOTATION_REF_NAME: "example.com/app:v2"}, ["example.com/app:v2"]),
    ({oci.ANNOTATION_REF_NAME: "busybox:1"}, ["busybox:1"]),
    ({}, []),
])
def test_oci_ref_names(store: ContentStore, annotations: dict[str, str], tags: list[str]) -> None:
    entries, _ = oci_layout([(oci.MEDIA_TYPE_OCI_LAYER, L1)], annotations)
    (image,) = load(store, tar_of(entries))
    assert image.repo_tags == tags


def test_dot_slash_names(store: ContentStore) -> None:
    entries, mdigest = oci_layout([(oci.MEDIA_TYPE_OCI_LAYER_GZIP, gz(L1))])
    (image,) = load(store, tar_of([("./" + n, d) for n, d in entries]))
    assert image.manifest_digest == mdigest
    check_image(store, image)


def test_oci_nested_index_selects_host_platform(store: ContentStore) -> None:
    entries, mdigest = oci_layout([(oci.MEDIA_TYPE_OCI_LAYER, L1)])
    manifest_bytes = dict(entries)[f"blobs/sha256/{mdigest[7:]}"]
    assert isinstance(manifest_bytes, bytes)
    other = "sha256:" + "9" * 64  # another platform, absent as docker save leaves it
    nested = json.dumps({"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_INDEX, "manifests": [
        {"mediaType": oci.MEDIA_TYPE_OCI_MANIFEST, "digest": other, "size": 5,
         "platform": {"os": "linux", "architecture": "mips64"}},
        {"mediaType": oci.MEDIA_TYPE_OCI_MANIFEST, "digest": mdigest, "size": len(manifest_bytes),
         "platform": {"os": "linux", "architecture": oci.host_arch()}}]}).encode()
    top = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": oci.MEDIA_TYPE_OCI_INDEX, "digest": sha(nested), "size": len(nested),
         "annotations": {oci.ANNOTATION_IMAGE_NAME: "docker.io/library/multi:latest"}}]}).encode()
    entries = [e if e[0] != "index.json" else ("index.json", top) for e in entries]
    entries.append((f"blobs/sha256/{hexof(nested)}", nested))
    (image,) = load(store, tar_of(entries))
    assert image.manifest_digest == mdigest and image.repo_tags == ["multi:latest"]
    assert store.exists(sha(nested))
    check_image(store, image)


def test_combined_form_roundtrip(store: ContentStore, tmp_path: Path) -> None:
    loaded = load(store, tar_of(docker_save([(["busybox:latest", "busybox:1"], [L1, gz(L2)]),
                                             ([], [L2])])))
    out = io.BytesIO()
    save_archive(loaded, store, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        names = t.getnames()
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
    assert manifest[0]["RepoTags"] == ["busybox:latest", "busybox:1"]
    assert manifest[1]["RepoTags"] is None
    assert manifest[0]["Layers"] == [f"blobs/sha256/{hexof(L1)}", f"blobs/sha256/{hexof(gz(L2))}"]
    assert [m["annotations"] for m in index["manifests"][:2]] == [
        {oci.ANNOTATION_IMAGE_NAME: "docker.io/library/busybox:latest",
         oci.ANNOTATION_REF_NAME: "latest"},
        {oci.ANNOTATION_IMAGE_NAME: "docker.io/library/busybox:1", oci.ANNOTATION_REF_NAME: "1"}]
    other = ContentStore(tmp_path / "other")
    again = load_archive(io.BytesIO(out.getvalue()), other)
    assert again == loaded
    for image in again:
        check_image(other, image)


# --- bad archives: clear errors, store untouched ----------------------------------------

def corrupt_blob(entries: list[Entry]) -> list[Entry]:
    return [(n, d[:-1] + b"X" if n.startswith("blobs/") and isinstance(d, bytes)
             and d == gz(L1) else d) for n, d in entries]


def good_oci() -> list[Entry]:
    return oci_layout([(oci.MEDIA_TYPE_OCI_LAYER_GZIP, gz(L1))],
                      {oci.ANNOTATION_REF_NAME: "busybox:latest"})[0]


def replace(entries: list[Entry], name: str, data: bytes) -> list[Entry]:
    return [(n, data if n == name else d) for n, d in entries]


def drop(entries: list[Entry], pred: Callable[[str], bool]) -> list[Entry]:
    return [(n, d) for n, d in entries if not pred(n)]


def legacy_layer_name(entries: list[Entry]) -> str:
    return next(n for n, _ in entries if n.endswith("layer.tar"))


BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "not a tar": (lambda: b"hello" * 200, "invalid image archive"),
    "empty tar": (lambda: tar_of([]), "no manifest.json"),
    "truncated": (lambda: tar_of(docker_save([(["a:1"], [L1 * 20])]))[:6000],
                  "truncated or corrupt|not found"),
    "truncated gzip": (lambda: tar_of(good_oci(), compress=True)[:-40], "truncated or corrupt"),
    "blob digest": (lambda: tar_of(corrupt_blob(good_oci())), "does not match its name"),
    "missing layer blob": (lambda: tar_of(drop(good_oci(), lambda n: n == f"blobs/sha256/{hexof(gz(L1))}")),
                           "layer blobs/sha256/.* not found"),
    "missing legacy layer": (lambda: tar_of(drop(docker_save([(["a:1"], [L1])]),
                                                 lambda n: n.endswith("layer.tar"))),
                             "layer .*/layer.tar not found"),
    "wrong diff_id": (lambda: tar_of(oci_layout([(oci.MEDIA_TYPE_OCI_LAYER, L1)],
                                                diff_ids=[sha(L2)])[0]),
                      "does not match the config's diff_id"),
    "legacy layer swapped": (lambda: tar_of([(n, L2 if n.endswith("layer.tar") else d)
                                             for n, d in docker_save([(["a:1"], [L1])])]),
                             "does not match the config's diff_id"),
    "corrupt gzip layer": (lambda: tar_of([(n, gz(L1)[:-12] if n.endswith("layer.tar") else d)
                                           for n, d in docker_save([(["a:1"], [gz(L1)])])]),
                           "not valid gzip"),
    "layer count": (lambda: tar_of(oci_layout([(oci.MEDIA_TYPE_OCI_LAYER, L1)],
                                              diff_ids=[sha(L1), sha(L2)])[0]),
                    "has 1 layers, its config 2 diff_ids"),
    "unknown layer type": (lambda: tar_of(oci_layout([("application/x-mystery", L1)],
                                                     diff_ids=[sha(L1)])[0]),
                           "unsupported media type application/x-mystery"),
    "bad manifest json": (lambda: tar_of(replace(docker_save([(["a:1"], [L1])]),
                                                 "manifest.json", b"{nope")),
                          "manifest.json is not valid JSON"),
    "bad repo tag": (lambda: tar_of(docker_save([(["Not Valid:!"], [L1])])), "RepoTags"),
    "oci layout version": (lambda: tar_of(replace(good_oci(), "oci-layout",
                                                  b'{"imageLayoutVersion":"9"}')),
                           "unsupported OCI layout version"),
    "legacy config name": (lambda: tar_of([(n.replace(n[:8], "0" * 8) if n.endswith(".json")
                                            and len(n) == 69 else n, d)
                                           for n, d in docker_save([(["a:1"], [L1])])]),
                           "not found|does not match its name"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_archives_leave_store_untouched(store: ContentStore, case: str) -> None:
    make, words = BAD[case]
    # Content already there (the shared layer) must survive a failed load.
    load(store, tar_of(docker_save([(["pre:1"], [L1, gz(L1)])])))
    before = blobs(store)
    with pytest.raises(InvalidArgument, match=words):
        load(store, make())
    assert blobs(store) == before
    assert store.statuses() == []


def test_legacy_config_with_wrong_content(store: ContentStore) -> None:
    entries = docker_save([(["a:1"], [L1])])
    cfg_name = next(n for n, _ in entries if n.endswith(".json") and len(n) == 69)
    data = dict(entries)[cfg_name]
    assert isinstance(data, bytes)
    entries = replace(entries, cfg_name, data.replace(b'"sh"', b'"xx"')
                      if b'"sh"' in data else data + b" ")
    with pytest.raises(InvalidArgument, match="does not match its name"):
        load(store, tar_of(entries))
    assert blobs(store) == set()


def test_failure_while_committing_rolls_back(store: ContentStore,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = Writer.commit
    calls = {"n": 0}

    def flaky(self: Writer, size: int | None = None, expected: str | None = None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise System("disk full")
        return real(self, size, expected)

    load(store, tar_of(docker_save([(["pre:1"], [L1])])))
    before = blobs(store)
    monkeypatch.setattr(Writer, "commit", flaky)
    with pytest.raises(System, match="disk full"):
        load(store, tar_of(good_oci() + [("blobs/sha256/" + hexof(L2), L2)]))
    assert calls["n"] == 3
    assert blobs(store) == before
    assert store.statuses() == []


def test_big_members_stream_into_ingests(store: ContentStore,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers never sit in memory: only JSON documents are kept."""
    kept: list[int] = []
    real = archive._Member.__init__

    def spy(self: archive._Member, *args: object, **kw: object) -> None:
        real(self, *args, **kw)  # type: ignore[arg-type]
        if self.data is not None:
            kept.append(self.size)

    monkeypatch.setattr(archive._Member, "__init__", spy)
    big = layer({"big": bytes(range(256)) * 40000})  # 10 MB
    (image,) = load(store, tar_of(docker_save([(["big:1"], [big])])))
    assert kept and max(kept) < 10_000
    check_image(store, image)
