"""Storage drivers: the few file operations a registry needs, on a directory or an object store.

The registry's logic (repositories, uploads, manifests, tags, garbage
collection) is written once against this small interface, so the same server
runs on a local directory (``fsdriver``) or an S3-compatible bucket
(``s3driver``). The operations are those every backend can do well: whole
small files (manifests, tag links), streamed large ones (blobs, read from an
offset for ranged and resumed downloads), appends to an unfinished upload,
listing, moving and deleting.

Paths are driver paths, not host paths: absolute, ``/``-separated, made of
components from ``[A-Za-z0-9._-]`` (no empty, ``.`` or ``..`` component), so
no repository name can reach outside the store whatever it spells.

Every method may block (disk or network): the server calls them in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from ketch.errors import InvalidArgument, NotFound

_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")


class PathNotFound(NotFound):
    """Nothing is stored at a driver path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


def check_path(path: str) -> str:
    """``path`` if it is a valid driver path; InvalidArgument otherwise."""
    if path == "/":
        return path
    if not path.startswith("/") or path.endswith("/"):
        raise InvalidArgument(f"invalid storage path: {path!r}")
    for part in path[1:].split("/"):
        if part in ("", ".", "..") or not _COMPONENT.fullmatch(part):
            raise InvalidArgument(f"invalid storage path: {path!r}")
    return path


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What ``stat`` and ``walk`` say of one path (``size`` is 0 for a directory)."""

    path: str
    size: int
    mtime: float
    is_dir: bool = False


class FileWriter(Protocol):
    """An unfinished file: appended to, then committed (readable at its path) or cancelled.

    ``close`` keeps what was written so that ``driver.writer(path, append=True)``
    can go on later (a chunked upload across requests); ``size`` counts every
    byte written to the path so far, by this writer and earlier ones.
    """

    @property
    def size(self) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def close(self) -> None: ...

    def commit(self) -> None: ...

    def cancel(self) -> None: ...


class StorageDriver(Protocol):
    """A tree of files addressed by driver paths (see the module docstring)."""

    name: str

    def get_content(self, path: str) -> bytes:
        """The whole file; PathNotFound if there is none."""
        ...

    def put_content(self, path: str, data: bytes) -> None:
        """Store a whole file, atomically: a reader sees the old content or the new, never part."""
        ...

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        """The file from ``offset`` on; PathNotFound if there is none."""
        ...

    def writer(self, path: str, append: bool = False) -> FileWriter:
        """A writer for ``path``; ``append`` goes on after what earlier writers kept."""
        ...

    def stat(self, path: str) -> FileInfo:
        """Size and time of a file, or a directory (a prefix other paths are under)."""
        ...

    def list(self, path: str) -> list[str]:
        """The full paths directly under a directory, sorted; PathNotFound if it is none."""
        ...

    def move(self, src: str, dst: str) -> None:
        """Rename a file, replacing ``dst``; PathNotFound if ``src`` is missing."""
        ...

    def delete(self, path: str) -> None:
        """Remove a file or a whole directory tree; PathNotFound if nothing is there."""
        ...

    def walk(self, path: str) -> Iterator[FileInfo]:
        """Every file (not directory) under ``path``, in sorted path order."""
        ...
