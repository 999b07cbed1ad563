"""The content store: blobs named by their digest, and nothing else.

A pull (or a build, or an archive import) writes every blob the same way:

    store = ContentStore("/var/lib/ketch/content")
    with store.writer("pull-busybox-layer-0", expected_digest=dgst, total=n) as w:
        for chunk in response:          # a dropped connection leaves the ingest
            w.write(chunk)              # behind; the next writer(ref) resumes
        desc = w.commit()               # at w.offset
    store.read(desc.digest)

On disk, as containerd's local store (plugins/content/local/store.go)::

    <root>/blobs/sha256/<hex>                       committed, read-only blobs
    <root>/ingest/<sha256(ref)>/{data,ref,startedat,updatedat,total}

Nothing is visible in ``blobs/`` before it is verified: bytes go to the
ingest's ``data`` file, ``commit`` checks size and digest, fsyncs, and renames
the file into ``blobs/`` (one atomic step on one filesystem), then fsyncs the
directory. A crash leaves at most an ingest, which a later writer resumes or
``abort`` removes. Files in ``blobs/`` whose names are not digests are never
reported as blobs.

Each ingest is locked with ``flock`` on its directory while a writer holds it,
so a second writer for the same ref, in this process or another, gets
``Conflict`` instead of interleaving bytes.

The store knows no names, media types or references: those belong to the
metadata layer above it. Hashing always streams, so blob size never matters.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from ketch.errors import Conflict, InvalidArgument, NotFound, System
from ketch.image.reference import DIGEST_HEX_LENGTHS, parse_digest
from ketch.jsonmodel import from_json, json_name, to_json

CHUNK = 1 << 20
DEFAULT_ALGORITHM = "sha256"
OCTET_STREAM = "application/octet-stream"

_INGEST_FILES = ("data", "ref", "startedat", "updatedat", "total")


@dataclass(slots=True)
class Platform:
    """Where an image runs (OCI image-spec ``platform``)."""

    architecture: str = ""
    os: str = ""
    os_version: str | None = field(default=None, metadata=json_name("os.version"))
    os_features: list[str] = field(default_factory=list, metadata=json_name("os.features"))
    variant: str | None = None


@dataclass(slots=True)
class Descriptor:
    """A pointer to content: what to fetch, how big, and how to check it.

    Field names follow the OCI image spec, so ``to_json`` gives the JSON that
    manifests and indexes embed. ``size`` and ``mediaType`` are always written.
    """

    media_type: str = field(default="", metadata=json_name("mediaType", keep_empty=True))
    digest: str = ""
    size: int = 0
    urls: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "descriptor") -> Descriptor:
        """Decode and check the digest, since a descriptor is trusted to name content."""
        desc = from_json(cls, data, where=where)
        try:
            parse_digest(desc.digest)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}.digest: {exc}") from None
        if desc.size < 0:
            raise InvalidArgument(f"{where}.size: must not be negative")
        return desc

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True, slots=True)
class Info:
    """A committed blob: its digest, its size, and when it was committed."""

    digest: str
    size: int
    created: datetime


@dataclass(frozen=True, slots=True)
class Status:
    """An ingest in progress (or abandoned, waiting to be resumed or aborted)."""

    ref: str
    offset: int
    total: int | None
    started_at: datetime
    updated_at: datetime


def _new_hash(algorithm: str) -> Any:
    return hashlib.new(algorithm)


def _hash_file(path: str, algorithm: str, limit: int | None = None) -> Any:
    """Hash a file (or its first ``limit`` bytes) chunk by chunk."""
    h = _new_hash(algorithm)
    with open(path, "rb") as f:
        remaining = limit
        while remaining is None or remaining > 0:
            chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return h


def _now_ns() -> int:
    return time.time_ns()


def _from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


class ContentStore:
    """Blobs under ``<root>/blobs``, ingests under ``<root>/ingest``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._blobs = os.path.join(self.root, "blobs")
        self._ingest = os.path.join(self.root, "ingest")

    # --- paths -----------------------------------------------------------

    def _blob_path(self, digest: str) -> str:
        algorithm, hexpart = parse_digest(digest)
        return os.path.join(self._blobs, algorithm, hexpart)

    def _ingest_path(self, ref: str) -> str:
        if not ref:
            raise InvalidArgument("ref must not be empty")
        return os.path.join(self._ingest, hashlib.sha256(ref.encode()).hexdigest())

    # --- reading ---------------------------------------------------------

    def info(self, digest: str) -> Info:
        """Size and commit time of a blob; NotFound if it is not committed."""
        path = self._blob_path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound(f"content digest {digest} not found") from None
        return Info(digest, st.st_size, _from_ns(st.st_mtime_ns))

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self._blob_path(digest))

    def open(self, digest: str) -> BinaryIO:
        """A read-only file object on the blob, for streaming (unpack, push)."""
        try:
            return open(self._blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"content digest {digest} not found") from None

    def read(self, digest: str) -> bytes:
        """The whole blob: for manifests and configs, which are small."""
        with self.open(digest) as f:
            return f.read()

    def verify(self, digest: str) -> bool:
        """Rehash the blob; False when its bytes no longer match its name."""
        algorithm, hexpart = parse_digest(digest)
        path = self._blob_path(digest)
        if not os.path.isfile(path):
            raise NotFound(f"content digest {digest} not found")
        return _hash_file(path, algorithm).hexdigest() == hexpart

    def walk(self) -> Iterator[Info]:
        """Every committed blob. Names that are not digests (debris) are skipped."""
        for algorithm in sorted(DIGEST_HEX_LENGTHS):
            directory = os.path.join(self._blobs, algorithm)
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                digest = f"{algorithm}:{entry.name}"
                try:
                    parse_digest(digest)
                except InvalidArgument:
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while walking
                yield Info(digest, st.st_size, _from_ns(st.st_mtime_ns))

    def delete(self, digest: str) -> None:
        """Remove a blob. Whoever calls this has checked nothing refers to it."""
        try:
            os.unlink(self._blob_path(digest))
        except FileNotFoundError:
            raise NotFound(f"content digest {digest} not found") from None

    # --- ingests ---------------------------------------------------------

    def put(self, ref: str, data: bytes, digest: str) -> None:
        """Store small in-memory ``data`` (a manifest, a config) as blob ``digest``.

        All or nothing: a failed write leaves no ingest behind.
        """
        with self.writer(ref, expected_digest=digest, total=len(data)) as w:
            try:
                w.write(data)
                w.commit()
            except BaseException:
                w.abort()
                raise

    def writer(self, ref: str, expected_digest: str | None = None,
               total: int | None = None) -> Writer:
        """Open (or resume) the ingest ``ref`` and lock it for this writer.

        ``ref`` is the caller's name for the upload ("layer-<digest>" during a
        pull), so a retry after a crash or a dropped connection finds the bytes
        already received and continues at ``Writer.offset``.
        """
        if expected_digest is not None:
            parse_digest(expected_digest)
        if total is not None and total < 0:
            raise InvalidArgument(f"invalid total size {total}")
        path = self._ingest_path(ref)
        lock_fd = self._lock_ingest(path, ref)
        try:
            return Writer(self, ref, path, lock_fd, expected_digest, total)
        except BaseException:
            os.close(lock_fd)
            raise

    def _lock_ingest(self, path: str, ref: str) -> int:
        """Create the ingest directory and take its flock, or raise Conflict.

        Whoever held the lock may have removed the directory (commit, abort)
        between our mkdir and our flock; then our fd names a dead directory,
        so we check the path still leads to it and start over if not.
        """
        while True:
            os.makedirs(path, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Conflict(f"ref {ref} locked") from None
                raise System(f"flock {path}: {exc.strerror}") from exc
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def status(self, ref: str) -> Status:
        """Progress of one ingest; NotFound if there is none."""
        status = self._read_status(self._ingest_path(ref))
        if status is None:
            raise NotFound(f"ingest {ref} not found")
        return status

    def statuses(self) -> list[Status]:
        """Every ingest on disk, locked or not, oldest first."""
        try:
            entries = list(os.scandir(self._ingest))
        except FileNotFoundError:
            return []
        out = [s for e in entries if (s := self._read_status(e.path)) is not None]
        return sorted(out, key=lambda s: (s.started_at, s.ref))

    def _read_status(self, path: str) -> Status | None:
        ref = _read_text(os.path.join(path, "ref"))
        if ref is None:
            return None  # being created or removed right now
        try:
            offset = os.stat(os.path.join(path, "data")).st_size
        except FileNotFoundError:
            offset = 0
        total = _read_text(os.path.join(path, "total"))
        started = _read_text(os.path.join(path, "startedat")) or "0"
        updated = _read_text(os.path.join(path, "updatedat")) or started
        return Status(ref, offset, int(total) if total else None,
                      _from_ns(int(started)), _from_ns(int(updated)))

    def abort(self, ref: str) -> None:
        """Drop an ingest that no writer holds; Conflict if one does."""
        path = self._ingest_path(ref)
        if not os.path.isdir(path):
            raise NotFound(f"ingest {ref} not found")
        fd = self._lock_ingest(path, ref)
        try:
            _remove_ingest(path)
        finally:
            os.close(fd)


def _remove_ingest(path: str) -> None:
    for name in _INGEST_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


class Writer:
    """One locked ingest. Use as a context manager; leaving it keeps the ingest.

    Leaving the ``with`` block without ``commit`` (an exception, a dropped
    download) keeps the bytes for a later ``writer(ref)`` to resume; ``abort``
    throws them away.
    """

    def __init__(self, store: ContentStore, ref: str, path: str, lock_fd: int,
                 expected_digest: str | None, total: int | None) -> None:
        self._store = store
        self.ref = ref
        self._path = path
        self._lock_fd: int | None = lock_fd
        self.expected_digest = expected_digest
        self._algorithm = (parse_digest(expected_digest)[0] if expected_digest
                           else DEFAULT_ALGORITHM)
        data = os.path.join(path, "data")
        now = str(_now_ns())
        old_ref = _read_text(os.path.join(path, "ref"))
        if old_ref is not None and old_ref != ref:
            raise Conflict(f"ref {ref} collides with ingest of {old_ref}")
        if old_ref is None:
            _write_text(os.path.join(path, "startedat"), now)
            _write_text(os.path.join(path, "ref"), ref)
        old_total = _read_text(os.path.join(path, "total"))
        if old_total and total is not None and int(old_total) != total:
            raise Conflict(
                f"ref {ref}: provided total {total} differs from status total {old_total}")
        if total is not None:
            _write_text(os.path.join(path, "total"), str(total))
        self.total = total if total is not None else (int(old_total) if old_total else None)
        _write_text(os.path.join(path, "updatedat"), now)
        self._fp: BinaryIO = open(data, "ab")  # noqa: SIM115 - lives as long as the writer
        self._offset = self._fp.tell()
        try:
            # Resuming: the running hash must cover the bytes already received.
            self._hash = _hash_file(data, self._algorithm, self._offset)
        except BaseException:
            self._fp.close()
            raise

    @property
    def offset(self) -> int:
        """Bytes received so far; where a resumed download continues."""
        return self._offset

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise Conflict(f"ref {self.ref}: writer is closed")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        n = self._fp.write(data)
        self._hash.update(memoryview(data)[:n])
        self._offset += n
        return n

    def digest(self) -> str:
        """The digest of everything written so far."""
        return f"{self._algorithm}:{self._hash.hexdigest()}"

    def truncate(self, size: int = 0) -> None:
        """Cut the ingest back to ``size`` bytes (0: start the download over)."""
        self._check_open()
        if size < 0 or size > self._offset:
            raise InvalidArgument(f"cannot truncate ingest of {self._offset} bytes to {size}")
        self._fp.flush()
        self._fp.truncate(size)
        self._offset = size
        self._hash = _hash_file(os.path.join(self._path, "data"), self._algorithm, size)

    def commit(self, size: int | None = None, expected: str | None = None) -> Descriptor:
        """Verify, fsync and move the bytes into ``blobs/``; release the ref.

        ``size`` defaults to the total given to ``writer``, ``expected`` to its
        expected digest. A size mismatch leaves the writer open (keep writing,
        or abort); a digest mismatch discards the ingest, since no later bytes
        can repair it. If the blob already exists, the commit succeeds and the
        ingest is dropped: content is content.
        """
        self._check_open()
        expected = expected or self.expected_digest
        size = size if size is not None else self.total
        algorithm = parse_digest(expected)[0] if expected is not None else self._algorithm
        self._fp.flush()
        if size is not None and size != self._offset:
            raise InvalidArgument(f"unexpected commit size {self._offset}, expected {size}")
        data = os.path.join(self._path, "data")
        if algorithm == self._algorithm:
            digest = self.digest()
        else:  # asked for another algorithm than the running hash: rehash, streaming
            digest = f"{algorithm}:{_hash_file(data, algorithm).hexdigest()}"
        if expected is not None and digest != expected:
            self.abort()
            raise InvalidArgument(f"unexpected commit digest {digest}, expected {expected}")
        target = self._store._blob_path(digest)
        try:
            os.fsync(self._fp.fileno())
            self._fp.close()
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.chmod(data, 0o444)
                os.utime(data)  # Info.created: when it was committed, not last written
                os.rename(data, target)
                _fsync_dir(os.path.dirname(target))
        except OSError as exc:
            self.close()  # keep the verified bytes; a retry can commit them
            raise System(f"commit {self.ref} to {target}: {exc.strerror}") from exc
        self._release(remove=True)
        return Descriptor(media_type=OCTET_STREAM, digest=digest, size=self._offset)

    def abort(self) -> None:
        """Throw the ingest away and release the ref."""
        if self._lock_fd is None:
            return
        self._fp.close()
        self._release(remove=True)

    def close(self) -> None:
        """Release the ref and keep the bytes for a later resume."""
        if self._lock_fd is None:
            return
        self._fp.close()
        _write_text(os.path.join(self._path, "updatedat"), str(_now_ns()))
        self._release(remove=False)

    def _release(self, remove: bool) -> None:
        assert self._lock_fd is not None
        try:
            if remove:
                _remove_ingest(self._path)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


