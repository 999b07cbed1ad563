"""The directory storage driver: driver paths as files under a root directory.

A driver path ``/a/b`` is the host file ``<root>/a/b``. Crash safety comes
from rename: a whole file is written to a temporary sibling, fsynced, and
renamed over its path, so a reader (or a restart after a power cut) sees the
old content or the new, never part. An unfinished upload lives in a hidden
sibling (``.#partial.<name>``) that ``writer(append=True)`` reopens; ``commit``
fsyncs it and renames it into place.

Hidden names contain ``#``, which no driver path component may, so no driver
path can name them, and ``list`` and ``walk`` leave them out.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from typing import BinaryIO

from ketch.registry.server.driver import FileInfo, PathNotFound, check_path

_PARTIAL = ".#partial."
_TEMP = ".#tmp."


def _fsync_dir(path: str) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _visible(name: str) -> bool:
    return "#" not in name


class FSWriter:
    """An upload's hidden partial file, appended to; ``commit`` renames it to its path."""

    def __init__(self, host_path: str, append: bool) -> None:
        self._dest = host_path
        head, tail = os.path.split(host_path)
        self._partial = os.path.join(head, _PARTIAL + tail)
        os.makedirs(head, exist_ok=True)
        self._file = open(self._partial, "ab" if append else "wb")  # noqa: SIM115 - kept open across writes
        self._size = self._file.seek(0, os.SEEK_END)
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise ValueError("write to a closed upload")
        n = self._file.write(data)
        self._size += n
        return n

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._file.close()

    def commit(self) -> None:
        if self._done:
            # A writer closed earlier is committed by reopening it; here only the open one is.
            raise ValueError("commit of a closed upload")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._done = True
        os.replace(self._partial, self._dest)
        _fsync_dir(os.path.dirname(self._dest))

    def cancel(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._partial)


class FSDriver:
    """A StorageDriver on a local directory (created if missing)."""

    name = "filesystem"

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)

    def _host(self, path: str) -> str:
        check_path(path)
        return self.root if path == "/" else self.root + path

    def get_content(self, path: str) -> bytes:
        try:
            with open(self._host(path), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None

    def put_content(self, path: str, data: bytes) -> None:
        host = self._host(path)
        head, tail = os.path.split(host)
        os.makedirs(head, exist_ok=True)
        tmp = os.path.join(head, f"{_TEMP}{tail}.{secrets.token_hex(6)}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, host)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(head)

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        try:
            f = open(self._host(path), "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None
        if offset:
            f.seek(offset)
        return f

    def writer(self, path: str, append: bool = False) -> FSWriter:
        return FSWriter(self._host(path), append)

    def stat(self, path: str) -> FileInfo:
        try:
            st = os.stat(self._host(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        is_dir = os.path.isdir(self._host(path))
        return FileInfo(path, 0 if is_dir else st.st_size, st.st_mtime, is_dir)

    def list(self, path: str) -> list[str]:
        host = self._host(path)
        try:
            names = os.listdir(host)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        prefix = "" if path == "/" else path
        return [f"{prefix}/{n}" for n in sorted(names) if _visible(n)]

    def move(self, src: str, dst: str) -> None:
        hsrc, hdst = self._host(src), self._host(dst)
        if not os.path.isfile(hsrc):
            raise PathNotFound(src)
        os.makedirs(os.path.dirname(hdst), exist_ok=True)
        os.replace(hsrc, hdst)
        _fsync_dir(os.path.dirname(hdst))

    def delete(self, path: str) -> None:
        host = self._host(path)
        if path == "/":
            raise ValueError("refusing to delete the storage root")
        try:
            if os.path.isdir(host) and not os.path.islink(host):
                shutil.rmtree(host)
            else:
                os.unlink(host)
        except (FileNotFoundError, NotADirectoryError):   # NotADirectory: a path under a file
            raise PathNotFound(path) from None
        # Drop directories left empty (a repository's last tag, a blob's prefix), up to the root.
        parent = os.path.dirname(host)
        while parent != self.root and parent.startswith(self.root + "/"):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)

    def walk(self, path: str) -> Iterator[FileInfo]:
        host = self._host(path)
        if os.path.isfile(host):
            st = os.stat(host)
            yield FileInfo(path, st.st_size, st.st_mtime)
            return
        if not os.path.isdir(host):
            raise PathNotFound(path)
        yield from self._walk(path, host)

    def _walk(self, path: str, host: str) -> Iterator[FileInfo]:
        prefix = "" if path == "/" else path
        try:
            # sorted by full path: a directory's entries all start with "<name>/"
            entries = sorted(os.scandir(host),
                             key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False)
                             else e.name)
        except FileNotFoundError:
            return
        for e in entries:
            if not _visible(e.name):
                continue
            sub = f"{prefix}/{e.name}"
            if e.is_dir(follow_symlinks=False):
                yield from self._walk(sub, e.path)
            elif e.is_file(follow_symlinks=False):
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                yield FileInfo(sub, st.st_size, st.st_mtime)
