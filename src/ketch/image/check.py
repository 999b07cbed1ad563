"""``ketch system check``: an fsck of the image store, read-only.

    problems = check_store("/var/lib/ketch/image")          # ketchd's <data-root>/image
    problems = check_store(root, quick=True)                # skip re-hashing layer blobs
    for p in problems:
        print(p.kind, p.object, p.detail)

It works with or without a running daemon: it opens the three stores
(content, snapshots, metadata) without creating or changing anything (the
SQLite databases in ``mode=ro``, no sweep of the snapshotter, no schema),
and holds the store lock *shared* while it looks, so no import, removal or
gc (which take it exclusively) runs half-way through what it sees. A daemon's
writes wait until the check is done.

What it checks, as a list of typed ``Problem`` records (empty: healthy):

* both SQLite databases: ``PRAGMA integrity_check`` and ``foreign_key_check``,
  and the metadata's own rules (``ImageMetadata.check``);
* every image: its config and manifest blobs exist, hash to their names and
  parse; the manifest names that config and one blob per layer, and those
  exist; the config's diff IDs are the recorded layers', and the recorded
  chain IDs are the ones they give;
* every layer's snapshot exists, is committed, and sits on the snapshot of
  the layer below it;
* every blob hashes to its name (``quick`` skips the layer blobs, the big
  ones; configs and manifests are always re-hashed);
* the snapshotter's rows and directories match one to one;
* debris a crash or a failed import would leave: unreferenced blobs and
  committed snapshots, ``extract-`` snapshots, content ingests, bootstrap
  scratch under ``tmp/``, and names in ``blobs/`` that are not digests.
  (``ImageService.gc`` removes all of these; a failed import must leave none.)
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ketch.errors import InvalidArgument, KetchError, NotFound
from ketch.image import oci
from ketch.image.content import ContentStore
from ketch.image.metadata import ImageMetadata, ImageRecord
from ketch.image.reference import DIGEST_HEX_LENGTHS, parse_digest


class ProblemKind(enum.StrEnum):
    """What is wrong; the ``object`` of a problem is named by the kind's subject."""

    DATABASE = "database"  # a SQLite file: integrity, foreign keys, metadata rules
    BLOB_MISSING = "blob-missing"  # a digest an image needs is not in content
    BLOB_CORRUPT = "blob-corrupt"  # a blob's bytes no longer hash to its name
    BLOB_UNREFERENCED = "blob-unreferenced"  # a blob no image needs (gc removes it)
    BLOB_DEBRIS = "blob-debris"  # a file in blobs/ whose name is not a digest
    CONFIG_INVALID = "config-invalid"  # an image config that does not parse or disagrees
    MANIFEST_INVALID = "manifest-invalid"  # a manifest that does not parse or disagrees
    LAYERS_MISMATCH = "layers-mismatch"  # recorded layers vs the config's diff IDs / chain IDs
    SNAPSHOT_MISSING = "snapshot-missing"  # a layer's snapshot does not exist
    SNAPSHOT_INVALID = "snapshot-invalid"  # a layer's snapshot has the wrong kind or parent
    SNAPSHOT_DIR_MISSING = "snapshot-dir-missing"  # a snapshot row without its directory
    SNAPSHOT_DIR_ORPHAN = "snapshot-dir-orphan"  # a snapshot directory without a row
    SNAPSHOT_UNREFERENCED = "snapshot-unreferenced"  # a committed snapshot no image needs
    SNAPSHOT_LEFTOVER = "snapshot-leftover"  # an extract- snapshot of an import that died
    INGEST_LEFTOVER = "ingest-leftover"  # a content ingest nobody finished
    TEMP_LEFTOVER = "temp-leftover"  # scratch files of an import that died


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the store: what kind, which object, and why."""

    kind: ProblemKind
    object: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.object}: {self.detail}"

    def to_json(self) -> dict[str, str]:
        return {"Kind": self.kind.value, "Object": self.object, "Detail": self.detail}


@dataclass(frozen=True, slots=True)
class _Snap:
    """A row of the snapshotter's table, as read here (without the snapshotter)."""

    id: int
    name: str
    parent: str | None
    kind: str
    labels: dict[str, str] = field(default_factory=dict)


def _connect_ro(path: str) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(uri, timeout=30, isolation_level=None, uri=True)


@contextlib.contextmanager
def shared_lock(path: str) -> Iterator[None]:
    """The image service's lock (``flock`` on ``<root>/lock``), shared; none if it never existed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_store(root: str | os.PathLike[str], *, snapshots_root: str | None = None,
                quick: bool = False, lock: bool = True) -> list[Problem]:
    """Check the image store at ``root`` (ketchd's ``<data-root>/image``); see the module doc.

    ``snapshots_root`` is where the snapshotter keeps its database and
    directories (default ``<root>/snapshots``, where ``ImageService`` puts
    it). NotFound when ``root`` holds no image store at all.
    """
    top = os.path.abspath(os.fspath(root))
    if not os.path.isfile(os.path.join(top, "metadata.db")):
        raise NotFound(f"no image store at {top} (no metadata.db)")
    snaps = os.path.abspath(snapshots_root or os.path.join(top, "snapshots"))
    checker = _Checker(top, snaps, quick)
    if not lock:
        return checker.run()
    with shared_lock(os.path.join(top, "lock")):
        return checker.run()


class _Checker:
    def __init__(self, root: str, snapshots_root: str, quick: bool) -> None:
        self.root = root
        self.snapshots_root = snapshots_root
        self.quick = quick
        self.content = ContentStore(os.path.join(root, "content"))
        self.problems: list[Problem] = []
        self.verified: set[str] = set()

    def add(self, kind: ProblemKind, obj: str, detail: str) -> None:
        self.problems.append(Problem(kind, obj, detail))

    def run(self) -> list[Problem]:
        records = self._metadata()
        snaps = self._snapshot_rows()
        wanted_blobs: set[str] = set()
        wanted_chains: set[str] = set()
        for rec in records or []:
            self._image(rec, snaps, wanted_blobs, wanted_chains)
        self._blobs(wanted_blobs, judge_references=records is not None)
        if snaps is not None:
            self._snapshot_dirs(snaps)
            if records is not None:
                self._snapshot_garbage(snaps, wanted_chains)
        self._leftovers()
        return self.problems

    # --- the databases ---------------------------------------------------------------

    def _metadata(self) -> list[ImageRecord] | None:
        """The image records, or None when the database cannot be read at all."""
        path = os.path.join(self.root, "metadata.db")
        try:
            db = ImageMetadata(path, readonly=True)
            for sentence in db.check():
                self.add(ProblemKind.DATABASE, path, sentence)
            return db.list_images()
        except KetchError as exc:
            self.add(ProblemKind.DATABASE, path, f"cannot be read: {exc}")
            return None

    def _snapshot_rows(self) -> dict[str, _Snap] | None:
        path = os.path.join(self.snapshots_root, "metadata.db")
        if not os.path.isfile(path):
            if os.path.isdir(os.path.join(self.snapshots_root, "snapshots")):
                self.add(ProblemKind.DATABASE, path, "the snapshot database is missing")
            return {}
        try:
            db = _connect_ro(path)
            try:
                for (msg,) in db.execute("PRAGMA integrity_check"):
                    if msg != "ok":
                        self.add(ProblemKind.DATABASE, path, f"sqlite integrity: {msg}")
                for row in db.execute("PRAGMA foreign_key_check"):
                    self.add(ProblemKind.DATABASE, path,
                             f"table {row[0]} row {row[1]} refers to a missing {row[2]} row")
                rows = db.execute(
                    "SELECT s.id, s.name, p.name, s.kind, s.labels FROM snapshots s "
                    "LEFT JOIN snapshots p ON p.id = s.parent_id ORDER BY s.id").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            self.add(ProblemKind.DATABASE, path, f"cannot be read: {exc}")
            return None
        out: dict[str, _Snap] = {}
        for sid, name, parent, kind, labels in rows:
            try:
                parsed = json.loads(labels)
            except ValueError:
                self.add(ProblemKind.DATABASE, path, f"snapshot {name}: labels are not JSON")
                parsed = {}
            out[name] = _Snap(int(sid), name, parent, kind,
                              parsed if isinstance(parsed, dict) else {})
        return out

    # --- images ----------------------------------------------------------------------

    def _blob(self, digest: str, what: str, image_id: str) -> bytes | None:
        """A config or manifest: present, hashing to its name; None (and a problem) if not."""
        try:
            data = self.content.read(digest)
        except NotFound:
            self.add(ProblemKind.BLOB_MISSING, digest, f"the {what} of image {image_id}")
            return None
        except (InvalidArgument, OSError) as exc:
            self.add(ProblemKind.BLOB_MISSING, digest,
                     f"the {what} of image {image_id} cannot be read: {exc}")
            return None
        self.verified.add(digest)
        if oci.digest_of(data) != digest:
            self.add(ProblemKind.BLOB_CORRUPT, digest,
                     f"the {what} of image {image_id} does not hash to its digest")
            return None
        return data

    def _image(self, rec: ImageRecord, snaps: dict[str, _Snap] | None,
               wanted_blobs: set[str], wanted_chains: set[str]) -> None:
        wanted_blobs.update((rec.id, rec.manifest_digest))
        wanted_chains.update(la.chain_id for la in rec.layers)
        recorded = [la.diff_id for la in rec.layers]

        raw = self._blob(rec.id, "config", rec.id)
        if raw is not None:
            try:
                config = oci.parse_config(raw)
            except (InvalidArgument, ValueError) as exc:
                self.add(ProblemKind.CONFIG_INVALID, rec.id, f"does not parse: {exc}")
            else:
                if list(config.rootfs.diff_ids) != recorded:
                    self.add(ProblemKind.LAYERS_MISMATCH, rec.id,
                             f"the config has {len(config.rootfs.diff_ids)} diff IDs "
                             f"{config.rootfs.diff_ids}, the metadata records {recorded}")
        expected_chains = oci.chain_ids(recorded) if recorded else []
        for la, chain in zip(rec.layers, expected_chains, strict=True):
            if la.chain_id != chain:
                self.add(ProblemKind.LAYERS_MISMATCH, rec.id,
                         f"layer {la.diff_id} is recorded with chain ID {la.chain_id}, "
                         f"its diff IDs give {chain}")

        raw = self._blob(rec.manifest_digest, "manifest", rec.id)
        if raw is not None:
            try:
                manifest = oci.parse_manifest(raw)
            except (InvalidArgument, ValueError) as exc:
                self.add(ProblemKind.MANIFEST_INVALID, rec.manifest_digest,
                         f"the manifest of image {rec.id} does not parse: {exc}")
            else:
                if manifest.config.digest != rec.id:
                    self.add(ProblemKind.MANIFEST_INVALID, rec.manifest_digest,
                             f"names config {manifest.config.digest}, not image {rec.id}")
                if len(manifest.layers) != len(rec.layers):
                    self.add(ProblemKind.MANIFEST_INVALID, rec.manifest_digest,
                             f"has {len(manifest.layers)} layers, image {rec.id} "
                             f"records {len(rec.layers)}")
                for desc in manifest.layers:
                    wanted_blobs.add(desc.digest)
                    if not self.content.exists(desc.digest):
                        self.add(ProblemKind.BLOB_MISSING, desc.digest,
                                 f"a layer of image {rec.id}")

        if snaps is None:
            return
        parent: str | None = None
        for la in rec.layers:
            snap = snaps.get(la.chain_id)
            if snap is None:
                self.add(ProblemKind.SNAPSHOT_MISSING, la.chain_id,
                         f"the snapshot of layer {la.diff_id} of image {rec.id}")
            elif snap.kind != "Committed":
                self.add(ProblemKind.SNAPSHOT_INVALID, la.chain_id,
                         f"is {snap.kind}, a layer of image {rec.id} must be Committed")
            elif snap.parent != parent:
                self.add(ProblemKind.SNAPSHOT_INVALID, la.chain_id,
                         f"sits on {snap.parent or 'nothing'}, the layer below it in image "
                         f"{rec.id} is {parent or 'nothing'}")
            parent = la.chain_id

    # --- content ----------------------------------------------------------------------

    def _blobs(self, wanted: set[str], *, judge_references: bool) -> None:
        layer_or_other = {info.digest for info in self.content.walk()} - self.verified
        for digest in sorted(layer_or_other):
            if judge_references and digest not in wanted:
                self.add(ProblemKind.BLOB_UNREFERENCED, digest, "no image refers to it")
            if self.quick:
                continue
            try:
                ok = self.content.verify(digest)
            except NotFound:
                continue  # removed while we looked: not ours to judge
            if not ok:
                self.add(ProblemKind.BLOB_CORRUPT, digest, "its bytes do not hash to its digest")
        blobs = os.path.join(self.content.root, "blobs")
        with contextlib.suppress(FileNotFoundError):
            for algorithm in sorted(os.listdir(blobs)):
                path = os.path.join(blobs, algorithm)
                if algorithm not in DIGEST_HEX_LENGTHS or not os.path.isdir(path):
                    self.add(ProblemKind.BLOB_DEBRIS, path, "not a digest algorithm directory")
                    continue
                for name in sorted(os.listdir(path)):
                    entry = os.path.join(path, name)
                    try:
                        parse_digest(f"{algorithm}:{name}")
                    except InvalidArgument:
                        self.add(ProblemKind.BLOB_DEBRIS, entry, "not named by a digest")
                        continue
                    if not os.path.isfile(entry) or os.path.islink(entry):
                        self.add(ProblemKind.BLOB_DEBRIS, entry, "not a regular file")

    # --- snapshots --------------------------------------------------------------------

    def _snapshot_dirs(self, snaps: dict[str, _Snap]) -> None:
        base = os.path.join(self.snapshots_root, "snapshots")
        try:
            entries = set(os.listdir(base))
        except FileNotFoundError:
            entries = set()
        ids = {str(s.id): s for s in snaps.values()}
        for entry in sorted(entries - set(ids)):
            self.add(ProblemKind.SNAPSHOT_DIR_ORPHAN, os.path.join(base, entry),
                     "a snapshot directory no snapshot record names")
        for sid, snap in sorted(ids.items(), key=lambda kv: int(kv[0])):
            fs = os.path.join(base, sid, "fs")
            if not os.path.isdir(fs):
                self.add(ProblemKind.SNAPSHOT_DIR_MISSING, snap.name,
                         f"its directory {fs} is missing")

    def _snapshot_garbage(self, snaps: dict[str, _Snap], wanted: set[str]) -> None:
        """Committed snapshots that no image and no container rootfs stands on."""
        roots = set(wanted) | {s.name for s in snaps.values()
                               if s.kind != "Committed" and not s.name.startswith("extract-")}
        keep: set[str] = set()
        for name in roots:
            current: str | None = name
            while current is not None and current not in keep:
                keep.add(current)
                current = snaps[current].parent if current in snaps else None
        for snap in snaps.values():
            if snap.kind == "Active" and snap.name.startswith("extract-"):
                self.add(ProblemKind.SNAPSHOT_LEFTOVER, snap.name,
                         "the unpack snapshot of an import that did not finish")
            elif snap.kind == "Committed" and snap.name not in keep:
                self.add(ProblemKind.SNAPSHOT_UNREFERENCED, snap.name,
                         "no image or container needs this layer")

    # --- debris -----------------------------------------------------------------------

    def _leftovers(self) -> None:
        ingest = os.path.join(self.content.root, "ingest")
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.listdir(ingest)):
                status = self._ingest_ref(os.path.join(ingest, entry))
                what = f"ingest {status!r}" if status else "an ingest without a ref"
                self.add(ProblemKind.INGEST_LEFTOVER, os.path.join(ingest, entry),
                         f"{what} that nobody finished")
        tmp = os.path.join(self.root, "tmp")
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.listdir(tmp)):
                self.add(ProblemKind.TEMP_LEFTOVER, os.path.join(tmp, entry),
                         "scratch space of an import that did not finish")
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith(".xattr-probe-") or entry == "snapshotter.tmp":
                self.add(ProblemKind.TEMP_LEFTOVER, os.path.join(self.root, entry),
                         "left by a start that did not finish")

    @staticmethod
    def _ingest_ref(path: str) -> str | None:
        try:
            with open(os.path.join(path, "ref"), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None


def problems_json(problems: list[Problem]) -> list[dict[str, Any]]:
    """The records as JSON objects (for ``--format json``)."""
    return [p.to_json() for p in problems]
