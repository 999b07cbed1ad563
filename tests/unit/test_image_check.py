"""``check_store``: a store broken in each way is reported in that way; a clean one is not.

Stores are made by the image service over the copy-based snapshotter (in the
default place, ``<root>/snapshots``, so ``check_store(root)`` finds it) and
then damaged by hand, the way a crash, a disk fault or a bug would.
"""

from __future__ import annotations

import fcntl
import io
import os
import sqlite3
import tarfile
import threading
from pathlib import Path

import pytest
from tests.unit.test_image_service import APP, BASE, _archive, _image, _load, _sha

from ketch.errors import KetchError, NotFound
from ketch.image import oci
from ketch.image.check import Problem, ProblemKind, check_store
from ketch.image.service import ImageService
from ketch.image.snapshot.naive import NaiveSnapshotter

K = ProblemKind


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "image"


@pytest.fixture
def svc(root: Path) -> ImageService:
    s = ImageService(root, snapshotter=NaiveSnapshotter(str(root / "snapshots")))
    _load(s, (_image([BASE]), ["base:1"]), (_image([BASE, APP], labels={"a": "1"}), ["app:1"]))
    return s


def kinds(problems: list[Problem]) -> set[tuple[ProblemKind, str]]:
    return {(p.kind, p.object) for p in problems}


def _writable(path: str) -> None:
    os.chmod(path, 0o644)


def _blob_path(svc: ImageService, digest: str) -> str:
    return os.path.join(svc.content.root, "blobs", *digest.split(":"))


def _layer_digests(svc: ImageService, name: str) -> list[str]:
    manifest = oci.parse_manifest(svc.content.read(svc.get(name).manifest_digest))
    return [d.digest for d in manifest.layers]


def test_clean_store_has_no_problems(svc: ImageService, root: Path) -> None:
    assert check_store(root) == []
    assert check_store(root, quick=True) == []
    assert svc.check() == [] and svc.check(quick=True) == []


def test_missing_store() -> None:
    with pytest.raises(NotFound, match="no image store"):
        check_store("/nonexistent/ketch-image-root")


def test_corrupt_layer_blob_is_found_unless_quick(svc: ImageService, root: Path) -> None:
    layer = _layer_digests(svc, "app:1")[-1]
    path = _blob_path(svc, layer)
    _writable(path)
    with open(path, "r+b") as f:
        f.write(b"X")
    assert kinds(check_store(root)) == {(K.BLOB_CORRUPT, layer)}
    assert check_store(root, quick=True) == []


def test_corrupt_config_is_found_even_when_quick(svc: ImageService, root: Path) -> None:
    image_id = svc.get("app:1").id
    path = _blob_path(svc, image_id)
    _writable(path)
    with open(path, "ab") as f:
        f.write(b" ")
    assert (K.BLOB_CORRUPT, image_id) in kinds(check_store(root, quick=True))


def test_missing_manifest_config_and_layer_blobs(svc: ImageService, root: Path) -> None:
    rec = svc.get("app:1")
    layer = _layer_digests(svc, "app:1")[-1]
    for digest in (rec.manifest_digest, layer):
        os.unlink(_blob_path(svc, digest))
    found = kinds(check_store(root))
    assert (K.BLOB_MISSING, rec.manifest_digest) in found
    # The manifest is gone, so its layers are known only from the other image:
    # the app layer is then simply not found as wanted. Remove the config too.
    os.unlink(_blob_path(svc, rec.id))
    assert (K.BLOB_MISSING, rec.id) in kinds(check_store(root))


def test_missing_layer_blob_named_by_a_manifest(svc: ImageService, root: Path) -> None:
    layer = _layer_digests(svc, "app:1")[-1]
    os.unlink(_blob_path(svc, layer))
    assert kinds(check_store(root)) == {(K.BLOB_MISSING, layer)}


def test_manifest_that_does_not_parse_or_names_another_config(svc: ImageService,
                                                              root: Path) -> None:
    rec = svc.get("app:1")
    junk = b'{"schemaVersion": 2, "layers": "nope"}'
    svc.content.put("test-junk", junk, oci.digest_of(junk))
    other = svc.get("base:1").manifest_digest
    db = sqlite3.connect(root / "metadata.db")
    db.execute("UPDATE images SET manifest_digest = ? WHERE id = ?", (oci.digest_of(junk), rec.id))
    db.commit()
    found = kinds(check_store(root))
    assert (K.MANIFEST_INVALID, oci.digest_of(junk)) in found
    assert (K.BLOB_UNREFERENCED, rec.manifest_digest) in found
    db.execute("UPDATE images SET manifest_digest = ? WHERE id = ?", (other, rec.id))
    db.commit()
    db.close()
    problems = check_store(root)
    assert (K.MANIFEST_INVALID, other) in kinds(problems)
    assert any("names config" in p.detail for p in problems)


def test_recorded_layers_disagree_with_the_config(svc: ImageService, root: Path) -> None:
    rec = svc.get("app:1")
    db = sqlite3.connect(root / "metadata.db")
    db.execute("UPDATE layers SET chain_id = ? WHERE image_id = ? AND position = 1",
               ("sha256:" + "7" * 64, rec.id))
    db.commit()
    found = kinds(check_store(root))
    assert (K.LAYERS_MISMATCH, rec.id) in found
    assert (K.SNAPSHOT_MISSING, "sha256:" + "7" * 64) in found
    assert (K.SNAPSHOT_UNREFERENCED, rec.layers[1].chain_id) in found
    db.execute("UPDATE layers SET diff_id = ? WHERE image_id = ? AND position = 0",
               ("sha256:" + "8" * 64, rec.id))
    db.commit()
    db.close()
    problems = check_store(root)
    assert any(p.kind is K.LAYERS_MISMATCH and "diff IDs" in p.detail for p in problems)


def test_snapshot_missing_wrong_kind_wrong_parent(svc: ImageService, root: Path) -> None:
    rec = svc.get("app:1")
    low, top = rec.layers[0].chain_id, rec.layers[1].chain_id
    db = sqlite3.connect(root / "snapshots" / "metadata.db")
    db.execute("UPDATE snapshots SET parent_id = NULL WHERE name = ?", (top,))
    db.commit()
    assert kinds(check_store(root)) == {(K.SNAPSHOT_INVALID, top)}
    db.execute("UPDATE snapshots SET kind = 'Active' WHERE name = ?", (top,))
    db.commit()
    db.close()
    problems = check_store(root)
    assert kinds(problems) == {(K.SNAPSHOT_INVALID, top)}
    assert "is Active" in problems[0].detail
    svc.snapshotter.remove(top)
    assert kinds(check_store(root)) == {(K.SNAPSHOT_MISSING, top)}
    assert low  # the lower layer is still fine: base:1 and app:1 both have it


def test_snapshot_rows_and_dirs_one_to_one(svc: ImageService, root: Path) -> None:
    base = root / "snapshots" / "snapshots"
    ids = sorted(os.listdir(base), key=int)
    (base / ids[0] / "fs").rename(base / ids[0] / "gone")
    (base / "999").mkdir()
    (base / ".new-7").mkdir()
    found = kinds(check_store(root))
    low = svc.get("base:1").layers[0].chain_id
    assert found == {(K.SNAPSHOT_DIR_MISSING, low),
                     (K.SNAPSHOT_DIR_ORPHAN, str(base / "999")),
                     (K.SNAPSHOT_DIR_ORPHAN, str(base / ".new-7"))}


def test_debris_of_crashes_is_reported_and_gc_clears_it(svc: ImageService, root: Path) -> None:
    stray = b"stray blob"
    svc.content.put("test-stray", stray, oci.digest_of(stray))
    w = svc.content.writer("load-crashed")
    w.write(b"half")
    w.close()  # neither committed nor aborted: an ingest left behind
    svc.snapshotter.prepare("extract-dead-" + "1" * 8, None)
    svc.snapshotter.prepare("extract-x", None)
    svc.snapshotter.commit("sha256:" + "9" * 64, "extract-x")
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp" / "busybox-abc").mkdir()
    blobs = Path(svc.content.root) / "blobs" / "sha256"
    (blobs / "not-a-digest").write_text("x")
    found = kinds(check_store(root))
    assert (K.BLOB_UNREFERENCED, oci.digest_of(stray)) in found
    assert (K.SNAPSHOT_LEFTOVER, "extract-dead-" + "1" * 8) in found
    assert (K.SNAPSHOT_UNREFERENCED, "sha256:" + "9" * 64) in found
    assert (K.TEMP_LEFTOVER, str(root / "tmp" / "busybox-abc")) in found
    assert (K.BLOB_DEBRIS, str(blobs / "not-a-digest")) in found
    assert K.INGEST_LEFTOVER in {k for k, _ in found}
    (blobs / "not-a-digest").unlink()
    (root / "tmp" / "busybox-abc").rmdir()
    svc.gc()
    assert check_store(root) == []


def test_container_rootfs_is_not_debris(svc: ImageService, root: Path) -> None:
    svc.rootfs_mounts("app:1", "ctr-1")
    assert check_store(root) == []
    svc.remove("app:1", force=True)  # as docker rmi -f: the container keeps its layers
    assert check_store(root) == []


def test_broken_databases(svc: ImageService, root: Path) -> None:
    db = sqlite3.connect(root / "metadata.db")
    db.execute("INSERT INTO refs (ref, image_id, kind, added) VALUES "
               "('docker.io/library/ghost:1', 'sha256:' || hex(randomblob(32)), 'tag', 0)")
    db.commit()
    db.close()
    problems = check_store(root)
    assert [p.kind for p in problems] == [K.DATABASE]
    assert "refers to a missing" in problems[0].detail
    with open(root / "snapshots" / "metadata.db", "r+b") as f:
        f.write(b"not a database at all, really" * 4)
    problems = check_store(root)
    assert (K.DATABASE, str(root / "snapshots" / "metadata.db")) in kinds(problems)
    with open(root / "metadata.db", "r+b") as f:
        f.write(b"not a database at all, really" * 4)
    problems = check_store(root)
    assert (K.DATABASE, str(root / "metadata.db")) in kinds(problems)
    assert any("cannot be read" in p.detail for p in problems)


def test_check_is_read_only(svc: ImageService, root: Path) -> None:
    def tree() -> dict[str, tuple[int, int]]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                if name.endswith(("-wal", "-shm")):
                    continue  # SQLite's companions of a WAL database, made by any reader
                st = os.lstat(os.path.join(dirpath, name))
                # (A directory's mtime moves with those companions: only its presence counts.)
                out[os.path.join(dirpath, name)] = (
                    (0, 0) if name in dirnames else (st.st_mtime_ns, st.st_size))
        return out

    (root / "snapshots" / "snapshots" / "999").mkdir()  # a sweep on open would remove it
    before = tree()
    assert check_store(root) != []
    assert tree() == before


def test_check_waits_for_a_writer_holding_the_lock(svc: ImageService, root: Path) -> None:
    fd = os.open(root / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    result: list[list[Problem]] = []
    t = threading.Thread(target=lambda: result.append(check_store(root)))
    try:
        t.start()
        t.join(0.3)
        assert t.is_alive() and result == []
    finally:
        os.close(fd)
    t.join(10)
    assert result == [[]]


# --- failed imports leave nothing for check to find ------------------------------------------


def _truncated() -> io.BytesIO:
    data = _archive([(_image([BASE, APP]), ["x:1"])]).getvalue()
    return io.BytesIO(data[: len(data) // 2])


def _wrong_diff_id() -> io.BytesIO:
    config, _ = _image([BASE])
    return _archive([((config, [APP]), ["x:1"])])  # the config names BASE, the tar is APP


def _missing_layer() -> io.BytesIO:
    good = _archive([(_image([BASE, APP]), ["x:1"])])
    out = io.BytesIO()
    with tarfile.open(fileobj=good) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            if m.name != _sha(APP).removeprefix("sha256:") + "/layer.tar":
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    out.seek(0)
    return out


def _bad_manifest() -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        ti = tarfile.TarInfo("manifest.json")
        ti.size = 5
        tf.addfile(ti, io.BytesIO(b"[{]}x"))
    out.seek(0)
    return out


def _escaping_layer() -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../../escape")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    evil = buf.getvalue()
    return _archive([(_image([BASE, evil]), ["x:1"])])


@pytest.mark.parametrize("archive", [_truncated, _wrong_diff_id, _missing_layer, _bad_manifest,
                                     _escaping_layer])
def test_failed_loads_leave_a_clean_store(svc: ImageService, root: Path, archive) -> None:
    with pytest.raises((KetchError, tarfile.TarError, ValueError)):
        svc.load(archive())
    assert check_store(root) == []
    assert {s.repo_tags[0] for s in svc.list()} == {"base:1", "app:1"}


def test_failed_load_into_an_empty_store(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    s = ImageService(root, snapshotter=NaiveSnapshotter(str(root / "snapshots")))
    with pytest.raises((KetchError, tarfile.TarError, ValueError)):
        s.load(_wrong_diff_id())
    assert check_store(root) == []
    assert list(s.content.walk()) == [] and list(s.snapshotter.walk()) == []
