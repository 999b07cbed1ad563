"""Snapshots: the filesystems images and containers run on, as mount *descriptions*.

Import a layer, step by step (what ``image pull`` does for each layer, lowest
first)::

    sn = OverlaySnapshotter("/var/lib/ketch/snapshotter")
    parent = chain_id(diff_ids[:i]) if i else None   # the layer below, committed
    key = f"extract-{random}-{chain_id(diff_ids[:i + 1])}"
    mounts = sn.prepare(key, parent)                  # an *active* snapshot
    apply_layer(mounts, blob)                         # unpack_layer into the upper dir
    sn.commit(chain_id(diff_ids[:i + 1]), key)        # now *committed*, immutable

A committed snapshot is named by the layer's chain ID (``chain_id`` below),
so two images sharing their first layers share those snapshots, and a layer
is unpacked once per host.

Run a container, step by step::

    mounts = sn.prepare(container_id, chain_id(image.diff_ids))   # writable
    for m in mounts:                     # the caller mounts, from ``Mount.cwd``
        subprocess.run(["mount", "-t", m.type, "-o", ",".join(m.options),
                        m.source, rootfs], cwd=m.cwd, check=True)
    ...container runs, writes land in the active snapshot's upper dir...
    umount(rootfs)
    sn.commit(new_chain_id, container_id)   # ``docker commit``, or
    sn.remove(container_id)                 # ``docker rm``

Why it is built this way (containerd's ``core/snapshots``):

* A snapshotter never mounts anything. It returns ``Mount`` records and the
  caller (the runtime, in the container's mount namespace) does the mounting.
  That keeps the snapshotter free of kernel state, testable without root,
  and lets the same description be mounted in another namespace.
* Three kinds: *active* (writable, from ``prepare``), *view* (read-only,
  from ``view``), *committed* (immutable, from ``commit``; the only kind that
  can be a parent). The only transition is active -> committed.
* Metadata lives in one small SQLite database per snapshotter (WAL, one
  transaction per operation), so a crash never leaves a half-made snapshot
  visible: directories are created under a temporary name and renamed into
  place inside the transaction, and leftovers without a row are swept on open.
* Snapshot ids are small integers, so overlay option strings stay short; see
  ``overlay.py`` for how chains longer than a page of mount options work.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from ketch.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    InvalidTransition,
    NotFound,
    System,
)
from ketch.image.unpack import UnpackResult, unpack_layer
from ketch.sqlitedb import create_schema

__all__ = [
    "Info",
    "Kind",
    "Mount",
    "Snapshotter",
    "Usage",
    "apply_layer",
    "can_commit",
    "chain_id",
    "writable_dir",
]


class Kind(enum.Enum):
    """What a snapshot is for; see the module docstring."""

    VIEW = "View"
    ACTIVE = "Active"
    COMMITTED = "Committed"


# The lifecycle: the only move is commit, from Active to Committed. Removal is
# allowed from every kind (when there are no children) and ends the lifecycle.
_TRANSITIONS: dict[Kind, frozenset[Kind]] = {
    Kind.ACTIVE: frozenset({Kind.COMMITTED}),
    Kind.VIEW: frozenset(),
    Kind.COMMITTED: frozenset(),
}


def can_commit(kind: Kind) -> bool:
    """Whether a snapshot of this kind may be committed (only active ones)."""
    return Kind.COMMITTED in _TRANSITIONS[kind]


def check_transition(key: str, old: Kind, new: Kind) -> None:
    """Raise InvalidTransition unless ``old -> new`` is in the table."""
    if new not in _TRANSITIONS[old]:
        raise InvalidTransition(f"snapshot {key}: cannot go from {old.value} to {new.value}")


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount to perform, as ``mount -t type -o options source target``.

    ``cwd``: when set, the option paths are relative to it, and the caller
    must do the mount with that directory as its working directory (run
    ``mount(8)`` with ``cwd=``, or chdir in a forked helper). This is how a
    long overlay chain fits into the one page the kernel accepts for mount
    options (moby's overlay2 and containerd do the same). It is ``None``
    whenever absolute paths fit.
    """

    type: str
    source: str
    options: list[str] = field(default_factory=list)
    cwd: str | None = None


@dataclass(frozen=True, slots=True)
class Info:
    """What ``stat`` and ``walk`` report about one snapshot.

    ``name`` is the key of an active snapshot or view, and the name given at
    commit for a committed one; ``parent`` is the parent's name.
    ``created`` is seconds since the epoch.
    """

    name: str
    parent: str | None
    kind: Kind
    created: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Disk use of a snapshot's *own* directory (not its parents').

    ``size`` counts allocated bytes (``st_blocks * 512``), hard links once,
    as containerd's ``fs.DiskUsage`` and ``du`` do; ``inodes`` counts
    distinct inodes, the directory itself included. ``content`` is what dockerd
    calls a container's ``SizeRw`` (moby's ``directory.Size``): the apparent
    sizes of everything but directories, hard links once.
    """

    size: int
    inodes: int
    content: int = 0


class Snapshotter(Protocol):
    """Layered filesystems by key; see the module docstring for the lifecycle."""

    def prepare(self, key: str, parent: str | None = None,
                labels: dict[str, str] | None = None) -> list[Mount]:
        """Make an active (writable) snapshot on top of the committed ``parent``."""
        ...

    def view(self, key: str, parent: str | None = None,
             labels: dict[str, str] | None = None) -> list[Mount]:
        """Make a read-only view of the committed ``parent``."""
        ...

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        """Turn the active snapshot ``key`` into the committed snapshot ``name``."""
        ...

    def remove(self, key: str) -> None:
        """Delete a snapshot; Conflict when others are built on it."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or a view (again)."""
        ...

    def stat(self, key: str) -> Info:
        """Metadata of one snapshot."""
        ...

    def walk(self) -> Iterator[Info]:
        """Every snapshot, in creation order."""
        ...

    def usage(self, key: str) -> Usage:
        """Disk use of the snapshot's own changes."""
        ...


def chain_id(diff_ids: list[str]) -> str:
    """The OCI chain ID of a layer stack, lowest layer first.

    ``ChainID(L0) = DiffID(L0)`` and ``ChainID(L0..Ln) =
    sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))``, so it names a layer *and
    everything under it*: the right key for a snapshot.
    """
    if not diff_ids:
        raise InvalidArgument("a chain ID needs at least one diff ID")
    for d in diff_ids:
        algo, _, hexpart = d.partition(":")
        if not algo or not hexpart:
            raise InvalidArgument(f"invalid diff ID {d!r}: want algorithm:hex")
    chain = diff_ids[0]
    for d in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    return chain


def writable_dir(mounts: list[Mount]) -> str:
    """Where the changes of an active snapshot go: the upper dir, or the bind source.

    This is what a layer is unpacked into on import, and what ``write_layer``
    reads on commit.
    """
    if len(mounts) != 1:
        raise InvalidArgument(f"expected one mount, got {len(mounts)}")
    m = mounts[0]
    if m.type == "bind":
        if "ro" in m.options:
            raise InvalidArgument("a read-only bind mount has no writable directory")
        return m.source
    for opt in m.options:
        if opt.startswith("upperdir="):
            path = opt.removeprefix("upperdir=")
            return os.path.join(m.cwd, path) if m.cwd else path
    raise InvalidArgument(f"{m.type} mount has no upper directory (a view?)")


def apply_layer(mounts: list[Mount], stream: BinaryIO, *,
                media_type: str | None = None) -> UnpackResult:
    """Unpack a layer into an active snapshot, *before* it is mounted (an applier).

    The mounts say how: an overlay's upper dir gets the layer in overlay form
    (whiteouts as 0:0 devices, opaque xattrs); a writable bind (the copy-based
    snapshotter, or a parentless overlay snapshot) gets the whole merged tree,
    with whiteouts applied by deletion on a copy that then replaces it, so an
    error leaves the snapshot as it was.
    """
    target = writable_dir(mounts)
    if mounts[0].type == "overlay":
        return unpack_layer(stream, target, media_type=media_type)
    if not os.listdir(target):
        return unpack_layer(stream, target, media_type=media_type, whiteout_mode="naive")
    token = secrets.token_hex(6)
    new, old = f"{target}.apply-{token}", f"{target}.old-{token}"
    res = unpack_layer(stream, new, media_type=media_type, whiteout_mode="naive",
                       parent=target)
    try:
        os.rename(target, old)
        try:
            os.rename(new, target)
        except OSError:
            os.rename(old, target)
            raise
    except OSError as exc:
        rmtree(new)
        raise System(f"replacing {target} with the applied layer: {exc}") from exc
    try:
        rmtree(old)
    except OSError as exc:
        raise System(f"removing the pre-layer tree {old}: {exc}") from exc
    return res


def dir_usage(path: str) -> Usage:
    """``du``-like disk use of a tree, without following symlinks or other mounts."""
    seen: set[tuple[int, int]] = set()
    size = content = 0
    dev = os.lstat(path).st_dev
    stack = [path]
    while stack:
        p = stack.pop()
        st = os.lstat(p)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        size += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev == dev:
                with os.scandir(p) as it:
                    stack.extend(e.path for e in it)
        else:
            content += st.st_size
    return Usage(size=size, inodes=len(seen), content=content)


# --------------------------------------------------------------------------
# Metadata shared by the implementations.


@dataclass(frozen=True, slots=True)
class Record:
    """One row of the metadata table."""

    id: int
    name: str
    parent_id: int | None
    parent: str | None
    kind: Kind
    created: float
    labels: dict[str, str]

    def info(self) -> Info:
        return Info(self.name, self.parent, self.kind, self.created, dict(self.labels))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id),
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""

_SELECT = (
    "SELECT s.id, s.name, s.parent_id, p.name, s.kind, s.created, s.labels "
    "FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id"
)


def _record(row: tuple) -> Record:
    return Record(id=row[0], name=row[1], parent_id=row[2], parent=row[3],
                  kind=Kind(row[4]), created=row[5], labels=json.loads(row[6]))


def _check_name(what: str, name: str) -> None:
    if not name or "\x00" in name:
        raise InvalidArgument(f"invalid snapshot {what} {name!r}")


class MetaStore:
    """The SQLite metadata both snapshotters keep in ``<root>/metadata.db``.

    Each operation opens its own connection and runs in one ``BEGIN
    IMMEDIATE`` transaction, so several processes can share a root and an
    operation is all-or-nothing. The directory work a caller does inside
    ``transaction()`` is undone by the caller when the block raises.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.snapshots_dir = os.path.join(self.root, "snapshots")
        os.makedirs(self.snapshots_dir, mode=0o700, exist_ok=True)
        self.db_path = os.path.join(self.root, "metadata.db")
        create_schema(self.db_path, _SCHEMA, "snapshot metadata")
        self._local = threading.local()

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction, committed unless the block raises.

        Writers take the write lock up front (``BEGIN IMMEDIATE``) so two
        creators cannot both pass the "key is free" check; readers do not
        block each other (WAL).
        """
        db: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if db is None:
            # One connection per thread, kept: opening one per operation (and the WAL
            # checkpoint at each last close) cost more than the operations.
            try:
                db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise System(f"opening snapshot metadata {self.db_path}: {exc}") from exc
            self._local.conn = db
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise Conflict(f"snapshot metadata: {exc}") from exc
            raise System(f"snapshot metadata {self.db_path}: {exc}") from exc

    def get(self, db: sqlite3.Connection, name: str) -> Record:
        row = db.execute(_SELECT + " WHERE s.name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"snapshot {name} does not exist")
        return _record(row)

    def chain(self, db: sqlite3.Connection, rec: Record) -> list[Record]:
        """``rec``'s ancestors, nearest first (``rec`` itself excluded)."""
        out: list[Record] = []
        parent_id = rec.parent_id
        while parent_id is not None:
            row = db.execute(_SELECT + " WHERE s.id = ?", (parent_id,)).fetchone()
            if row is None:
                raise System(f"snapshot metadata: parent id {parent_id} is missing")
            r = _record(row)
            out.append(r)
            parent_id = r.parent_id
        return out

    def create(self, db: sqlite3.Connection, key: str, parent: str | None, kind: Kind,
               labels: dict[str, str] | None) -> Record:
        """Insert a new active snapshot or view on top of a committed parent."""
        _check_name("key", key)
        if db.execute("SELECT 1 FROM snapshots WHERE name = ?", (key,)).fetchone():
            raise AlreadyExists(f"snapshot {key} already exists")
        parent_id = None
        if parent is not None:
            p = self.get(db, parent)
            if p.kind is not Kind.COMMITTED:
                raise InvalidArgument(
                    f"parent {parent} is {p.kind.value}: only committed snapshots can be parents")
            parent_id = p.id
        cur = db.execute(
            "INSERT INTO snapshots (name, parent_id, kind, created, labels) VALUES (?,?,?,?,?)",
            (key, parent_id, kind.value, time.time(), json.dumps(labels or {}, sort_keys=True)))
        assert cur.lastrowid is not None
        return self.get(db, key)

    def commit(self, db: sqlite3.Connection, name: str, key: str,
               labels: dict[str, str] | None) -> Record:
        _check_name("name", name)
        rec = self.get(db, key)
        check_transition(key, rec.kind, Kind.COMMITTED)
        if db.execute("SELECT 1 FROM snapshots WHERE name = ?", (name,)).fetchone():
            raise AlreadyExists(f"snapshot {name} already exists")
        merged = {**rec.labels, **(labels or {})}
        db.execute("UPDATE snapshots SET name = ?, kind = ?, labels = ? WHERE id = ?",
                   (name, Kind.COMMITTED.value, json.dumps(merged, sort_keys=True), rec.id))
        return self.get(db, name)

    def delete(self, db: sqlite3.Connection, key: str) -> Record:
        rec = self.get(db, key)
        children = [r[0] for r in db.execute(
            "SELECT name FROM snapshots WHERE parent_id = ? ORDER BY id", (rec.id,))]
        if children:
            raise Conflict(f"snapshot {key} has children ({', '.join(children[:5])}); "
                           "remove them first")
        db.execute("DELETE FROM snapshots WHERE id = ?", (rec.id,))
        return rec

    def all(self) -> list[Record]:
        with self.transaction(write=False) as db:
            return [_record(r) for r in db.execute(_SELECT + " ORDER BY s.id")]

    def snapshot_dir(self, snap_id: int) -> str:
        return os.path.join(self.snapshots_dir, str(snap_id))

    def sweep(self) -> None:
        """Remove directories that have no row: leftovers of a crash mid-operation."""
        with self.transaction() as db:
            ids = {str(r[0]) for r in db.execute("SELECT id FROM snapshots")}
            for entry in os.listdir(self.snapshots_dir):
                if entry not in ids:
                    rmtree(os.path.join(self.snapshots_dir, entry))


def rmtree(path: str) -> None:
    """Remove a tree that may hold read-only directories (from a layer) or nothing."""

    def onexc(func: object, p: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return
        try:
            os.chmod(os.path.dirname(p), 0o700)
        except OSError:
            pass
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
            shutil.rmtree(p)
        else:
            os.unlink(p)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=lambda f, p, e: onexc(f, p, e[1]))


class BaseSnapshotter:
    """The bookkeeping both implementations share; they differ in layout and mounts.

    A subclass fills a new snapshot's directory (``_populate``) and describes
    its mounts (``_describe``). Both run inside the metadata transaction, so
    a refusal (a chain too long to mount, a failed copy) leaves no trace.
    """

    def __init__(self, root: str) -> None:
        self._meta = MetaStore(root)
        self.root = self._meta.root
        self._meta.sweep()

    # -- hooks -------------------------------------------------------------

    def _populate(self, new_dir: str, rec: Record, chain: list[Record]) -> None:
        raise NotImplementedError

    def _describe(self, rec: Record, chain: list[Record]) -> list[Mount]:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------

    def _dir(self, rec: Record) -> str:
        return self._meta.snapshot_dir(rec.id)

    def _fs(self, rec: Record) -> str:
        return os.path.join(self._dir(rec), "fs")

    # -- the Snapshotter protocol -------------------------------------------

    def _create(self, key: str, parent: str | None, kind: Kind,
                labels: dict[str, str] | None) -> list[Mount]:
        with self._meta.transaction() as db:
            rec = self._meta.create(db, key, parent, kind, labels)
            chain = self._meta.chain(db, rec)
            mounts = self._describe(rec, chain)
            new_dir = os.path.join(self._meta.snapshots_dir, f".new-{rec.id}")
            try:
                os.mkdir(new_dir, 0o700)
                self._populate(new_dir, rec, chain)
                os.rename(new_dir, self._dir(rec))
            except BaseException as exc:
                try:
                    rmtree(new_dir)
                except OSError as cleanup:
                    raise System(f"cleaning up {new_dir} after {exc}: {cleanup}") from exc
                if isinstance(exc, OSError):
                    raise System(f"creating snapshot {key} in {new_dir}: {exc}") from exc
                raise
        return mounts

    def prepare(self, key: str, parent: str | None = None,
                labels: dict[str, str] | None = None) -> list[Mount]:
        """Make an active (writable) snapshot on top of the committed ``parent``."""
        return self._create(key, parent, Kind.ACTIVE, labels)

    def view(self, key: str, parent: str | None = None,
             labels: dict[str, str] | None = None) -> list[Mount]:
        """Make a read-only view of the committed ``parent``."""
        return self._create(key, parent, Kind.VIEW, labels)

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        """Turn the active snapshot ``key`` into the committed snapshot ``name``.

        The directory stays where it is (ids do not change), so this is a
        metadata update only; the caller must have unmounted it.
        """
        with self._meta.transaction() as db:
            self._meta.commit(db, name, key, labels)

    def remove(self, key: str) -> None:
        """Delete a snapshot; Conflict when other snapshots are built on it."""
        with self._meta.transaction() as db:
            rec = self._meta.delete(db, key)
        # The row is gone; a crash before the tree is gone is swept on next open.
        try:
            rmtree(self._dir(rec))
        except OSError as exc:
            raise System(f"removing snapshot {key} at {self._dir(rec)}: {exc}") from exc

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or a view; a committed one has none."""
        with self._meta.transaction(write=False) as db:
            rec = self._meta.get(db, key)
            if rec.kind is Kind.COMMITTED:
                raise InvalidArgument(
                    f"snapshot {key} is committed: make a view or an active snapshot of it")
            return self._describe(rec, self._meta.chain(db, rec))

    def stat(self, key: str) -> Info:
        """Metadata of one snapshot."""
        with self._meta.transaction(write=False) as db:
            return self._meta.get(db, key).info()

    def walk(self) -> Iterator[Info]:
        """Every snapshot, in creation order (read up front: no lock held while yielding)."""
        for rec in self._meta.all():
            yield rec.info()

    def usage(self, key: str) -> Usage:
        """Disk use of the snapshot's own directory, not its parents'."""
        with self._meta.transaction(write=False) as db:
            rec = self._meta.get(db, key)
        try:
            return dir_usage(self._fs(rec))
        except OSError as exc:
            raise System(f"measuring snapshot {key}: {exc}") from exc
