"""Garbage collection keeps what tags, indexes and subjects reach; fsck finds every broken promise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ketch.cli.main import main
from ketch.errors import Conflict
from ketch.registry.server import fsck, gc
from ketch.registry.server.config import make_driver, storage_lock
from ketch.registry.server.fsdriver import FSDriver
from ketch.registry.server.store import Store, blob_path, layer_link, tag_link, upload_dir

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(store: Store, name: str, data: bytes) -> str:
    s = store.open_upload(name, store.start_upload(name).upload_id)
    s.write(data)
    return s.finish(sha(data)).digest


def push_image(store: Store, name: str, ref: str, layer: bytes, **extra: Any) -> bytes:
    push_blob(store, name, b"{}")
    push_blob(store, name, layer)
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(layer), "size": len(layer)}]}
    doc.update(extra)
    data = json.dumps(doc).encode()
    store.put_manifest(name, ref if ref else sha(data), data, OCI_MANIFEST)
    return data


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(FSDriver(str(tmp_path / "reg")))


def blobs(store: Store) -> set[str]:
    return {p.path for p in store.driver.walk("/blobs")}


def populated(store: Store) -> dict[str, bytes]:
    """tagged image, an index (tagged) over an untagged child, a referrer, an orphan manifest,
    an orphan blob."""
    out = {"tagged": push_image(store, "app", "v1", b"layer-tagged")}
    child = push_image(store, "app", "", b"layer-child")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(child), "size": len(child)}]}).encode()
    store.put_manifest("app", "multi", index, OCI_INDEX)
    out["child"], out["index"] = child, index
    subject = {"mediaType": OCI_MANIFEST, "digest": sha(out["tagged"]),
               "size": len(out["tagged"])}
    out["sig"] = push_image(store, "app", "", b"layer-sig", subject=subject)
    out["orphan"] = push_image(store, "app", "", b"layer-orphan")
    push_blob(store, "app", b"never used")
    return out


def test_gc_default_keeps_every_manifest_and_drops_unused_blobs(store: Store) -> None:
    docs = populated(store)
    before = blobs(store)
    dry = gc.collect(store, dry_run=True)
    assert [d for d, _ in dry.blobs_deleted] == [sha(b"never used")]
    assert blobs(store) == before                    # a dry run deletes nothing
    report = gc.collect(store)
    assert [d for d, _ in report.blobs_deleted] == [sha(b"never used")]
    assert report.links_deleted == [("app", sha(b"never used"))]
    assert report.manifests_deleted == []
    assert blobs(store) == before - {blob_path(sha(b"never used"))}
    assert store.get_manifest("app", sha(docs["orphan"])).data == docs["orphan"]
    assert fsck.check(store).ok


def test_gc_delete_untagged_keeps_index_children_and_referrers(store: Store) -> None:
    docs = populated(store)
    report = gc.collect(store, delete_untagged=True)
    assert report.manifests_deleted == [("app", sha(docs["orphan"]))]
    gone = {d for d, _ in report.blobs_deleted}
    assert gone == {sha(b"never used"), sha(b"layer-orphan"), sha(docs["orphan"])}
    for kept in ("tagged", "child", "index", "sig"):
        assert store.get_manifest("app", sha(docs[kept])).data == docs[kept]
    assert store.stat_blob("app", sha(b"layer-child")).size == len(b"layer-child")
    assert [r["digest"] for r in store.referrers("app", sha(docs["tagged"]))] == [sha(docs["sig"])]
    assert fsck.check(store).ok
    # nothing more to do the second time
    again = gc.collect(store, delete_untagged=True)
    assert again.blobs_deleted == [] and again.manifests_deleted == []


def test_gc_keeps_blobs_shared_with_another_repository(store: Store) -> None:
    push_image(store, "a", "v1", b"shared")
    push_blob(store, "b", b"shared")
    gc.collect(store, delete_untagged=True)
    assert store.stat_blob("b", sha(b"shared")).size == 6


def test_gc_drops_stale_uploads(store: Store) -> None:
    old = store.start_upload("app")
    fresh = store.start_upload("app")
    store.driver.put_content(upload_dir("app", old.upload_id) + "/startedat", b"1000")
    report = gc.collect(store, upload_max_age=3600)
    assert report.uploads_deleted == [("app", old.upload_id)]
    assert [u for u, _ in store.uploads("app")] == [fresh.upload_id]


def test_fsck_reports_each_kind_of_damage(store: Store) -> None:
    docs = populated(store)
    drv = store.driver
    assert fsck.check(store).ok
    # a blob whose bytes changed
    drv.put_content(blob_path(sha(b"layer-tagged")), b"bit rot")
    # a link to a blob that is gone
    drv.delete(blob_path(sha(b"layer-child")).rsplit("/", 1)[0])
    # a tag to a manifest that is not there
    drv.put_content(tag_link("app", "ghost"), sha(b"ghost").encode())
    # a link that names another digest than its path
    drv.put_content(layer_link("app", sha(b"never used")), sha(b"other").encode())
    report = fsck.check(store)
    text = "\n".join(str(p) for p in report.problems)
    assert "does not match its digest" in text
    assert f"links to {sha(b'layer-child')}, which is not stored" in text
    assert "tag ghost names" in text
    assert "link holds" in text
    assert f"manifest {sha(docs['child'])} names blob {sha(b'layer-child')}" in text
    assert not report.ok
    quick = fsck.check(store, verify_content=False)
    assert "does not match its digest" not in "\n".join(str(p) for p in quick.problems)


def test_storage_lock_keeps_gc_off_a_live_server(tmp_path: Path) -> None:
    drv = make_driver("filesystem", root=str(tmp_path / "reg"))
    with storage_lock(drv, exclusive=False):
        with pytest.raises(Conflict, match="in use by a running server"):
            with storage_lock(drv, exclusive=True):
                pass
    with storage_lock(drv, exclusive=True):
        pass
    assert drv.list("/") == []                       # the lock file is not in the store


def test_cli_gc_and_fsck(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "reg")
    store = Store(FSDriver(root))
    populated(store)
    assert main(["registry", "fsck", "--root", root]) == 0
    assert "0 problems" in capsys.readouterr().out
    assert main(["registry", "gc", "--root", root, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete blob {sha(b'never used')} (10 bytes)" in out
    assert main(["registry", "gc", "--root", root, "-m", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 blobs deleted") and out.count("\n") == 1
    store.driver.put_content(tag_link("app", "ghost"), sha(b"ghost").encode())
    assert main(["registry", "fsck", "--root", root, "--quick"]) == 1
    assert "tag ghost names" in capsys.readouterr().out
    assert main(["registry", "serve", "--storage", "s3"]) == 1
    assert "needs --storage-opt bucket=NAME" in capsys.readouterr().err
    assert main(["registry", "serve", "--storage", "nfs"]) == 1
    assert "unknown storage 'nfs'" in capsys.readouterr().err
