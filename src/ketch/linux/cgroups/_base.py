"""What the v1 and v2 managers share: paths, process lists, kill and destroy."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ketch.errors import InvalidArgument, KetchError, MultiError, NotSupported, System
from ketch.linux.cgroups._fs import CgroupFS, read_opt, remove_tree
from ketch.linux.cgroups.resources import Resources

if TYPE_CHECKING:
    from ketch.linux.cgroups._stats import Stats


def clean_path(path: str) -> str:
    """runc's CleanPath: an absolute path normalized; a relative one normalized
    as if under "/" and kept relative, so "../../x" cannot climb out."""
    if not path:
        raise InvalidArgument("cgroup path is empty")
    if _is_systemd_path(path):
        raise NotSupported("systemd cgroup driver is not supported")
    if os.path.isabs(path):
        cleaned = os.path.normpath(path)
        cleaned = "/" + cleaned.lstrip("/")
        if cleaned == "/":
            raise InvalidArgument(f"cgroup path {path!r} is the root of the hierarchy")
        return cleaned
    cleaned = os.path.normpath("/" + path).lstrip("/")
    if not cleaned:
        raise InvalidArgument(f"cgroup path {path!r} names no cgroup below our own")
    return cleaned


def _is_systemd_path(path: str) -> bool:
    """"slice:prefix:name", the systemd driver's form (``system.slice:docker:abc``)."""
    return not path.startswith("/") and path.count(":") == 2


def relative_to(own: str, mount_root: str, where: str) -> str:
    """``own`` (a cgroup path as /proc/self/cgroup shows it) as seen below a mount
    whose root is ``mount_root``; "" for the mount's root itself."""
    own = os.path.normpath("/" + own.lstrip("/"))
    mount_root = os.path.normpath("/" + mount_root.lstrip("/"))
    if mount_root == "/":
        return own.lstrip("/")
    if own == mount_root:
        return ""
    if own.startswith(mount_root + "/"):
        return own[len(mount_root) + 1:]
    raise System(f"our own cgroup {own} is not visible below the {where} mount "
                 f"(which shows {mount_root})")


def rdma_lines(resources: Resources) -> list[str]:
    """rdma.max lines, "mlx5_1 hca_handle=3 hca_object=10000", one per device."""
    out = []
    for device, lim in resources.rdma.items():
        line = device
        if lim.hca_handles is not None:
            line += f" hca_handle={lim.hca_handles}"
        if lim.hca_objects is not None:
            line += f" hca_object={lim.hca_objects}"
        out.append(line)
    return out


def procs_recursive(fs: CgroupFS, d: str) -> list[int]:
    """Every pid in ``d``'s cgroup.procs and its descendants'."""
    out: list[int] = []
    text = read_opt(fs, d, "cgroup.procs")
    if text is None:
        return out
    out.extend(int(x) for x in text.split() if x.isdigit())
    try:
        children = fs.subdirs(d)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for child in children:
        out.extend(procs_recursive(fs, os.path.join(d, child)))
    return out


class BaseManager:
    """Shared by V1Manager and V2Manager; not a manager on its own."""

    path: str

    def __init__(self, path: str, fs: CgroupFS, freeze_timeout: float,
                 sleep: Callable[[float], None]) -> None:
        self.path = path
        self.fs = fs
        self.freeze_timeout = freeze_timeout
        self.sleep = sleep

    # Implemented by the subclasses.
    def dirs(self) -> list[str]:
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def set(self, resources: Resources) -> None:
        raise NotImplementedError

    def stats(self) -> Stats:
        raise NotImplementedError

    def _can_freeze(self) -> bool:
        raise NotImplementedError

    def _kill_fast(self, sig: int) -> bool:
        return False

    # Shared.
    def exists(self) -> bool:
        return any(self.fs.isdir(d) for d in self.dirs())

    def pids(self) -> list[int]:
        seen: dict[int, None] = {}
        for d in self.dirs():
            for pid in procs_recursive(self.fs, d):
                seen.setdefault(pid, None)
        return list(seen)

    def destroy(self) -> None:
        errors: list[BaseException] = []
        for d in self.dirs():
            try:
                remove_tree(self.fs, d, sleep=self.sleep)
            except KetchError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise MultiError(errors)

    def kill_all(self, sig: int) -> None:
        """Signal every process of the cgroup. Frozen first, so that nothing forks
        away between the listing and the signal; thawed after, so a SIGKILL lands
        (a cgroup that was paused before stays paused for other signals)."""
        if not self.exists() or self._kill_fast(sig):
            return
        can_freeze = self._can_freeze()
        was_frozen = can_freeze and self.frozen()
        if can_freeze and not was_frozen:
            self.freeze()
        try:
            for pid in self.pids():
                try:
                    self.fs.kill(pid, sig)
                except ProcessLookupError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.ESRCH:
                        raise System(f"cannot signal process {pid}: {exc.strerror}") from exc
        finally:
            if can_freeze and (not was_frozen or sig == signal.SIGKILL):
                self.thaw()

    def _deadline(self) -> float:
        return time.monotonic() + self.freeze_timeout
