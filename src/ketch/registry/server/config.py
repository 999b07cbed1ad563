"""From ``ketch registry`` flags to a storage driver, and the lock that keeps gc off a live store.

``make_driver("filesystem", root="/srv/registry")`` gives the directory
driver; ``make_driver("s3", options={"bucket": "b", "endpoint": "http://..."})``
an S3 bucket's (``s3driver.driver_from_options`` reads the options, which
arrive as ``--storage-opt key=value``).

Garbage collection deletes blobs no manifest uses, and a push uploads its
blobs before the manifest that uses them: a gc during a push could delete a
layer the next manifest needs. So a writable server holds a shared lock on
the storage and gc takes it exclusively, refusing to run (Conflict) while a
server is up. The lock is a host file, so it protects directory storage on
one host only; object storage has no such lock, and there gc must be run
on an idle registry (or one serving ``--read-only``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping

from ketch.errors import Conflict, InvalidArgument
from ketch.registry.server.driver import StorageDriver

STORAGE_KINDS = ("filesystem", "s3")
DEFAULT_ROOT = "/var/lib/ketch-registry"
LOCK_NAME = ".#ketch-registry.lock"     # '#': outside every driver path, never listed


def make_driver(kind: str = "filesystem", *, root: str | None = None,
                options: Mapping[str, str] | None = None) -> StorageDriver:
    """The driver ``--storage kind`` names, configured by ``--root`` and ``--storage-opt``."""
    options = dict(options or {})
    if kind in ("filesystem", "fs", "dir"):
        if options:
            raise InvalidArgument(
                f"the filesystem storage takes no options: {', '.join(sorted(options))}")
        from ketch.registry.server.fsdriver import FSDriver

        return FSDriver(root or DEFAULT_ROOT)
    if kind == "s3":
        if root:
            raise InvalidArgument("--root names a directory; the s3 storage takes "
                                  "--storage-opt bucket=NAME (and prefix=PATH)")
        from ketch.registry.server.s3driver import driver_from_options

        return driver_from_options(options)
    raise InvalidArgument(f"unknown storage {kind!r} (one of: {', '.join(STORAGE_KINDS)})")


def parse_storage_opts(words: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``key=value`` words of ``--storage-opt``."""
    out: dict[str, str] = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"invalid storage option {w!r}: expected key=value")
        out[key] = value
    return out


@contextlib.contextmanager
def storage_lock(driver: StorageDriver, *, exclusive: bool) -> Iterator[None]:
    """Hold the store's lock: shared for a writable server, exclusive for gc.

    Nothing for a driver without a host directory (see the module docstring).
    The exclusive lock is not waited for: gc fails at once if a server holds it.
    """
    root = getattr(driver, "root", None)
    if not isinstance(root, str) or not os.path.isdir(root):
        yield
        return
    fd = os.open(os.path.join(root, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            if exclusive:
                raise Conflict(f"the registry storage {root} is in use by a running server: "
                               "stop it (or run it --read-only) first") from None
            raise Conflict(f"the registry storage {root} is locked by a garbage collection"
                           ) from None
        yield
    finally:
        os.close(fd)
