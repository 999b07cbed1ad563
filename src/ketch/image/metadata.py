"""Image metadata: which images exist, what they are called, what they are made of.

The content store knows blobs and the snapshotter knows layer trees; neither
knows names. This database is the one place that does (containerd's
``core/metadata``), so "which blobs and snapshots are still wanted" is a
question answered here, and ``ImageService.gc`` collects the rest.

A load, step by step, as ``ImageService`` does it::

    db = ImageMetadata(root / "metadata.db")
    db.add_image(ImageRecord(id=config_digest, manifest_digest=..., created=...,
                             size=..., layers=[Layer(diff_id, chain_id, size)]))
    moved_from = db.tag("docker.io/library/busybox:latest", config_digest)
    db.resolve("busybox")            # what every image command does with user input
    db.references_of(config_digest)  # tags and digest references, for RepoTags/RepoDigests
    db.delete_image(config_digest)   # rows only: blobs and snapshots are gc's job

Why it is built this way:

* SQLite (stdlib) in WAL mode with ``synchronous=NORMAL``: readers never block
  the writer, and a crash loses at most the last transactions, never the
  database's consistency. Every public change is exactly one transaction
  (``BEGIN IMMEDIATE``), and ``transaction()`` lets the image service group
  several (add the images of an archive, then tag them) into one.
* Image id = config digest, as Docker's. References are stored fully
  normalised (``docker.io/library/busybox:latest``, or ``name@sha256:...``
  for the digest references that become ``RepoDigests``), so two spellings
  of one name are one row.
* Lookups follow moby's ``GetImage``: a full id, a digest reference, a tag,
  then an id prefix; an unknown *and an ambiguous* prefix both give
  "No such image: <name>" (the daemon never says "ambiguous").
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

from ketch.errors import Conflict, InvalidArgument, NotFound, System
from ketch.image.reference import Reference, is_full_id, normalize, parse
from ketch.sqlitedb import create_schema

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    parent TEXT REFERENCES images(id),
    added REAL NOT NULL,
    last_tag_time TEXT
);
CREATE INDEX IF NOT EXISTS images_parent ON images(parent);
CREATE TABLE IF NOT EXISTS refs (
    ref TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id),
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest')),
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_image ON refs(image_id);
CREATE TABLE IF NOT EXISTS layers (
    image_id TEXT NOT NULL REFERENCES images(id),
    position INTEGER NOT NULL,
    diff_id TEXT NOT NULL,
    chain_id TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS layers_chain ON layers(chain_id);
CREATE TABLE IF NOT EXISTS labels (
    image_id TEXT NOT NULL REFERENCES images(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (image_id, key)
);
CREATE TABLE IF NOT EXISTS build_cache (
    key TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    parent TEXT NOT NULL DEFAULT '',
    command TEXT NOT NULL DEFAULT '',
    inputs TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    usage_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS build_cache_parent ON build_cache(parent);
CREATE INDEX IF NOT EXISTS build_cache_image ON build_cache(image_id);
"""


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of an image: its DiffID, the chain ID its snapshot is keyed by, its size."""

    diff_id: str
    chain_id: str
    size: int = 0


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image as the metadata knows it; the config and manifest stay in content.

    ``created`` is the config's RFC 3339 string (what inspect shows);
    ``last_tag_time`` is RFC 3339 too, None until the image is first tagged.
    """

    id: str
    manifest_digest: str
    created: str = ""
    size: int = 0
    parent: str | None = None
    layers: tuple[Layer, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    added: float = 0.0
    last_tag_time: str | None = None

    @property
    def chain_id(self) -> str | None:
        """The snapshot a container of this image starts from (None: no layers)."""
        return self.layers[-1].chain_id if self.layers else None


def no_such_image(name: str) -> NotFound:
    """moby's ErrImageDoesNotExist: a name is shown familiar, with its implied tag."""
    try:
        ref = normalize(name)
        shown = ref.familiar()
    except InvalidArgument:
        shown = name
    return NotFound(f"No such image: {shown}")


def rfc3339_now() -> str:
    """Now, as Go's RFC3339Nano prints UTC times (what inspect shows)."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


class ImageMetadata:
    """The image database at ``path``. Safe to share between processes."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        """Open (creating it if need be) the database; ``readonly`` opens an existing one
        without writing anything, for ``ketch system check`` on a store it must not change."""
        self.path = os.fspath(path)
        self.readonly = readonly
        self._local = threading.local()  # the open transaction, per thread
        if readonly:
            if not os.path.isfile(self.path):
                raise NotFound(f"image metadata {self.path} does not exist")
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        create_schema(self.path, _SCHEMA, "image metadata")

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection, opened once: opening one per transaction cost
        more than the work (and closing the last one checkpoints the WAL)."""
        db: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if db is not None:
            return db
        if self.readonly:
            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            db = sqlite3.connect(uri, timeout=30, isolation_level=None, uri=True,
                                 check_same_thread=False)
        else:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
        db.execute("PRAGMA foreign_keys=ON")
        if not self.readonly:
            db.execute("PRAGMA synchronous=NORMAL")
        self._local.conn = db
        return db

    # --- transactions ---------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One connection and one transaction; nested calls join the outer one.

        Nesting is what lets the image service make "add these images, move
        these tags" a single commit while each method stays usable alone.
        """
        outer: sqlite3.Connection | None = getattr(self._local, "tx", None)
        if outer is not None:
            yield outer
            return
        try:
            db = self._connect()
        except sqlite3.Error as exc:
            raise System(f"opening image metadata {self.path}: {exc}") from exc
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            self._local.tx = db
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                self._local.tx = None
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:  # the connection is kept: leave it clean
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise Conflict(f"image metadata: {exc}") from exc
            raise System(f"image metadata {self.path}: {exc}") from exc

    # --- images -----------------------------------------------------------------

    def add_image(self, rec: ImageRecord) -> bool:
        """Record an image; False (and nothing changed) when it is already known.

        An image's id is the digest of its config, so a second add of the same
        id is the same image and there is nothing to update.
        """
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM images WHERE id = ?", (rec.id,)).fetchone():
                return False
            if rec.parent is not None and not db.execute(
                    "SELECT 1 FROM images WHERE id = ?", (rec.parent,)).fetchone():
                raise NotFound(f"parent image {rec.parent} does not exist")
            db.execute(
                "INSERT INTO images (id, manifest_digest, created, size, parent, added, "
                "last_tag_time) VALUES (?,?,?,?,?,?,?)",
                (rec.id, rec.manifest_digest, rec.created, rec.size, rec.parent,
                 rec.added or time.time(), rec.last_tag_time))
            db.executemany(
                "INSERT INTO layers (image_id, position, diff_id, chain_id, size) "
                "VALUES (?,?,?,?,?)",
                [(rec.id, i, la.diff_id, la.chain_id, la.size) for i, la in enumerate(rec.layers)])
            db.executemany("INSERT INTO labels (image_id, key, value) VALUES (?,?,?)",
                           [(rec.id, k, v) for k, v in sorted(rec.labels.items())])
            return True

    def _record(self, db: sqlite3.Connection, row: tuple) -> ImageRecord:
        image_id = row[0]
        layers = tuple(Layer(r[0], r[1], r[2]) for r in db.execute(
            "SELECT diff_id, chain_id, size FROM layers WHERE image_id = ? ORDER BY position",
            (image_id,)))
        labels = dict(db.execute("SELECT key, value FROM labels WHERE image_id = ?",
                                 (image_id,)).fetchall())
        return ImageRecord(id=image_id, manifest_digest=row[1], created=row[2], size=row[3],
                           parent=row[4], layers=layers, labels=labels, added=row[5],
                           last_tag_time=row[6])

    _COLUMNS = "id, manifest_digest, created, size, parent, added, last_tag_time"

    def get_by_id(self, image_id: str) -> ImageRecord:
        """The image with this full id (``sha256:`` optional)."""
        if not image_id.startswith("sha256:"):
            image_id = "sha256:" + image_id
        with self.transaction(write=False) as db:
            row = db.execute(f"SELECT {self._COLUMNS} FROM images WHERE id = ?",
                             (image_id,)).fetchone()
            if row is None:
                raise NotFound(f"No such image: {image_id}")
            return self._record(db, row)

    def get_by_ref(self, ref: str | Reference) -> ImageRecord:
        """The image a tag or digest reference names (normalised first)."""
        key = str(ref if isinstance(ref, Reference) else normalize(ref))
        with self.transaction(write=False) as db:
            row = db.execute(
                "SELECT i.id, i.manifest_digest, i.created, i.size, i.parent, i.added, "
                "i.last_tag_time FROM refs r JOIN images i ON i.id = r.image_id WHERE r.ref = ?",
                (key,)).fetchone()
            if row is None:
                raise no_such_image(str(ref))
            return self._record(db, row)

    def get_by_prefix(self, prefix: str) -> ImageRecord:
        """The one image whose id starts with ``prefix`` (hex, ``sha256:`` optional).

        None or several matches are both "No such image", as moby's GetImage
        turns an ambiguous prefix into ErrImageDoesNotExist.
        """
        hexpart = prefix.removeprefix("sha256:")
        if not hexpart or any(c not in "0123456789abcdef" for c in hexpart):
            raise no_such_image(prefix)
        with self.transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {self._COLUMNS} FROM images WHERE id >= ? AND id < ? LIMIT 2",
                ("sha256:" + hexpart, "sha256:" + hexpart + "g")).fetchall()
            if len(rows) != 1:
                raise no_such_image(prefix)
            return self._record(db, rows[0])

    def resolve(self, name: str) -> ImageRecord:
        """What every image command does with user input, in moby's order.

        A full id (``sha256:<64 hex>`` or bare 64 hex) is an id; a name is
        looked up as a reference (``busybox`` means ``busybox:latest``); what
        is left is tried as an id prefix.
        """
        if is_full_id(name):
            try:
                return self.get_by_id(name)
            except NotFound:
                raise NotFound(f"No such image: {name}") from None
        try:
            ref = normalize(name)
        except InvalidArgument:
            ref = None
        if ref is not None:
            try:
                return self.get_by_ref(ref)
            except NotFound:
                pass
        try:
            return self.get_by_prefix(name)
        except NotFound:
            if ref is None and not name.startswith("sha256:"):
                parse(name)  # raise the grammar's own error for a malformed name
            raise no_such_image(name) from None

    def list_images(self) -> list[ImageRecord]:
        """Every image, newest first (as ``docker images`` sorts them)."""
        with self.transaction(write=False) as db:
            rows = db.execute(f"SELECT {self._COLUMNS} FROM images").fetchall()
            out = [self._record(db, r) for r in rows]
        return sorted(out, key=lambda r: (r.created, r.added), reverse=True)

    def children(self, image_id: str) -> list[str]:
        """Images whose parent is ``image_id`` (from ``docker build``)."""
        with self.transaction(write=False) as db:
            return [r[0] for r in db.execute(
                "SELECT id FROM images WHERE parent = ? ORDER BY id", (image_id,))]

    def delete_image(self, image_id: str) -> ImageRecord:
        """Remove an image's rows and every reference to it; Conflict if it has children.

        Blobs and snapshots are left to the caller (and, after a crash, to gc).
        """
        with self.transaction() as db:
            rec = self.get_by_id(image_id)
            kids = self.children(rec.id)
            if kids:
                raise Conflict(f"image {rec.id} has dependent child images")
            for table in ("refs", "layers", "labels"):
                db.execute(f"DELETE FROM {table} WHERE image_id = ?", (rec.id,))
            db.execute("DELETE FROM images WHERE id = ?", (rec.id,))
            return rec

    # --- references ---------------------------------------------------------------

    def tag(self, ref: str | Reference, image_id: str) -> str | None:
        """Point ``ref`` at ``image_id``; return the image it pointed at before, if another.

        A tag that moves leaves its old image in place (dangling, if that was
        its last name), as ``docker tag`` and ``docker load`` do.
        """
        key = str(ref if isinstance(ref, Reference) else normalize(ref))
        kind = "digest" if "@" in key else "tag"
        now = rfc3339_now()
        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
                raise NotFound(f"No such image: {image_id}")
            old = db.execute("SELECT image_id FROM refs WHERE ref = ?", (key,)).fetchone()
            db.execute("INSERT OR REPLACE INTO refs (ref, image_id, kind, added) "
                       "VALUES (?,?,?,?)", (key, image_id, kind, time.time()))
            if kind == "tag":
                db.execute("UPDATE images SET last_tag_time = ? WHERE id = ?", (now, image_id))
        if old is None or old[0] == image_id:
            return None
        return str(old[0])

    def untag(self, ref: str | Reference) -> str:
        """Remove one reference; return the id of the image it named."""
        key = str(ref if isinstance(ref, Reference) else normalize(ref))
        with self.transaction() as db:
            row = db.execute("SELECT image_id FROM refs WHERE ref = ?", (key,)).fetchone()
            if row is None:
                raise no_such_image(str(ref))
            db.execute("DELETE FROM refs WHERE ref = ?", (key,))
            return str(row[0])

    def references_of(self, image_id: str) -> list[str]:
        """Every reference to an image, normalised, tags before digests, sorted."""
        with self.transaction(write=False) as db:
            return [r[0] for r in db.execute(
                "SELECT ref FROM refs WHERE image_id = ? ORDER BY kind DESC, ref", (image_id,))]

    def all_references(self) -> dict[str, list[str]]:
        """image id -> its references, in one query (for listing many images)."""
        out: dict[str, list[str]] = {}
        with self.transaction(write=False) as db:
            for ref, image_id in db.execute(
                    "SELECT ref, image_id FROM refs ORDER BY kind DESC, ref"):
                out.setdefault(image_id, []).append(ref)
        return out

    def chain_ids_in_use(self) -> set[str]:
        """Every chain ID some image needs: the roots the snapshot gc keeps."""
        with self.transaction(write=False) as db:
            return {r[0] for r in db.execute("SELECT DISTINCT chain_id FROM layers")}

    def layer_size(self, chain_id: str) -> int | None:
        """The recorded size of a layer, from any image that has it."""
        with self.transaction(write=False) as db:
            row = db.execute("SELECT size FROM layers WHERE chain_id = ? LIMIT 1",
                             (chain_id,)).fetchone()
        return None if row is None else int(row[0])

    # --- consistency ------------------------------------------------------------------

    # --- the builder's step cache ----------------------------------------------------
    # A row maps a build step's cache key to the image the step made. Rows do not
    # hold their images (no foreign key): removing an image leaves its rows to be
    # dropped at the next lookup, as an image prune must not fail over cache.

    def cache_get(self, key: str) -> str | None:
        with self.transaction() as db:
            row = db.execute("SELECT image_id FROM build_cache WHERE key = ?",
                             (key,)).fetchone()
            if row is None:
                return None
            if db.execute("SELECT 1 FROM images WHERE id = ?", (row[0],)).fetchone() is None:
                db.execute("DELETE FROM build_cache WHERE key = ?", (key,))
                return None
            db.execute("UPDATE build_cache SET last_used = ?, usage_count = usage_count + 1 "
                       "WHERE key = ?", (time.time(), key))
            return str(row[0])

    def cache_put(self, key: str, image_id: str, parent: str, command: str,
                  inputs: str) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO build_cache (key, image_id, parent, command, "
                       "inputs, created, last_used, usage_count) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                       (key, image_id, parent, command, inputs, now, now))

    def cache_rows(self, parent: str | None = None) -> list[tuple[str, str, str, str, str, float,
                                                                  float, int]]:
        """(key, image, parent, command, inputs, created, last_used, usage_count), oldest first."""
        sql = ("SELECT key, image_id, parent, command, inputs, created, last_used, usage_count "
               "FROM build_cache")
        args: tuple[str, ...] = ()
        if parent is not None:
            sql += " WHERE parent = ?"
            args = (parent,)
        with self.transaction(write=False) as db:
            return [tuple(r) for r in db.execute(sql + " ORDER BY created", args)]  # type: ignore[misc]

    def cache_delete(self, keys: list[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM build_cache WHERE key = ?", [(k,) for k in keys])

    def check(self) -> list[str]:
        """Problems in the database itself, one sentence each (empty: healthy).

        For ``ketch system check``: SQLite's own integrity check, dangling
        foreign keys, and images whose layer rows are not a 0..n-1 sequence.
        Whether blobs and snapshots exist is the image service's part.
        """
        problems: list[str] = []
        with self.transaction(write=False) as db:
            for (msg,) in db.execute("PRAGMA integrity_check"):
                if msg != "ok":
                    problems.append(f"sqlite integrity: {msg}")
            for row in db.execute("PRAGMA foreign_key_check"):
                problems.append(f"table {row[0]} row {row[1]} refers to a missing {row[2]} row")
            for image_id, n, top in db.execute(
                    "SELECT image_id, COUNT(*), MAX(position) FROM layers GROUP BY image_id"):
                if top != n - 1:
                    problems.append(f"image {image_id}: layer positions are not 0..{n - 1}")
            for ref, kind in db.execute("SELECT ref, kind FROM refs"):
                try:
                    parsed = parse(ref)
                except InvalidArgument as exc:
                    problems.append(f"reference {ref!r} is malformed: {exc}")
                    continue
                if (kind == "digest") != (parsed.digest is not None):
                    problems.append(f"reference {ref!r} is recorded as a {kind} reference")
        return problems
