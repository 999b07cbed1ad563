"""The seam between the cgroup managers and the kernel.

``CgroupFS`` is every kernel effect the managers have: read and write control
files, mkdir and rmdir cgroups, signal a process, attach a device filter. The
real one talks to the kernel; ``ketch.linux.cgroups.fake.FakeCgroupFS`` plays a
cgroupfs in a temporary directory (mkdir fills in control files, rmdir refuses a
cgroup with children, every write is recorded) so unit tests need no root.

The helpers below turn errno into ketch's error kinds with messages that name
the file and the value, e.g. "cannot set memory limit to 12: write
/sys/fs/cgroup/memory/x/memory.limit_in_bytes: Device or resource busy".
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ketch.errors import Forbidden, InvalidArgument, KetchError, NotFound, NotSupported, System

if TYPE_CHECKING:
    from ketch.linux.cgroups._ebpf import DeviceProgram

MAX_U64 = 2**64 - 1


class CgroupFS:
    """The real kernel."""

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def write(self, path: str, data: str) -> None:
        # One write(2) per value, no O_CREAT, no O_TRUNC: cgroupfs parses each
        # write as one command.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path) and not os.path.islink(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def subdirs(self, path: str) -> list[str]:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def replace_device_program(self, dir_path: str, program: DeviceProgram) -> None:
        from ketch.linux.cgroups import _ebpf
        _ebpf.replace_device_program(dir_path, program)


# -- helpers shared by the v1 and v2 managers ----------------------------------------

def read_opt(fs: CgroupFS, d: str, name: str) -> str | None:
    """A control file's content, or None where the file does not exist."""
    path = os.path.join(d, name)
    try:
        return fs.read(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.EOPNOTSUPP):
            return None
        raise System(f"cannot read {path}: {exc.strerror}") from exc


def read_str(fs: CgroupFS, d: str, name: str) -> str:
    path = os.path.join(d, name)
    try:
        return fs.read(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise NotFound(f"{path} does not exist") from exc
        raise System(f"cannot read {path}: {exc.strerror}") from exc


def parse_uint(text: str, where: str) -> int:
    """A cgroup number; "max" is the largest u64, as runc reports it."""
    v = text.strip()
    if v == "max":
        return MAX_U64
    try:
        n = int(v)
    except ValueError:
        raise System(f"cannot parse {where}: {v!r} is not a number") from None
    return max(n, 0)


def read_uint(fs: CgroupFS, d: str, name: str, default: int | None = 0) -> int:
    """A single-number control file; ``default`` where it is absent (None: fail)."""
    text = read_opt(fs, d, name) if default is not None else read_str(fs, d, name)
    if text is None:
        assert default is not None
        return default
    return parse_uint(text, os.path.join(d, name))


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = parse_uint(parts[1], parts[0])
            except KetchError:
                continue
    return out


def read_keyed(fs: CgroupFS, d: str, name: str) -> dict[str, int]:
    text = read_opt(fs, d, name)
    return parse_keyed(text) if text is not None else {}


def write_error(exc: OSError, fs: CgroupFS, d: str, name: str, value: str,
                what: str) -> KetchError:
    path = os.path.join(d, name)
    err = exc.errno
    if err == errno.ENOENT:
        if not fs.isdir(d):
            return NotFound(f"cannot set {what}: cgroup {d} does not exist")
        return NotSupported(f"cannot set {what}: {path} does not exist "
                            "(the controller or feature is not available on this host)")
    if err in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENODEV):
        return NotSupported(f"cannot set {what} to {value}: write {path}: "
                            f"{os.strerror(err or 0)}")
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Forbidden(f"cannot set {what} to {value}: write {path}: "
                         f"{os.strerror(err or 0)}")
    return InvalidArgument(f"cannot set {what} to {value}: write {path}: "
                           f"{os.strerror(err or 0) if err else exc}")


def write(fs: CgroupFS, d: str, name: str, value: str, what: str) -> None:
    """Write one value; the kernel's refusal becomes a ketch error naming both."""
    try:
        fs.write(os.path.join(d, name), value)
    except OSError as exc:
        raise write_error(exc, fs, d, name, value, what) from exc


def write_pid(fs: CgroupFS, d: str, pid: int) -> None:
    """Move ``pid`` into the cgroup. EINVAL can mean the task is still being
    born (TASK_NEW), so it is retried briefly, as runc does."""
    for attempt in range(5):
        try:
            fs.write(os.path.join(d, "cgroup.procs"), str(pid))
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL and attempt < 4:
                time.sleep(0.03)
                continue
            if exc.errno == errno.ESRCH:
                raise NotFound(f"cannot add process {pid} to cgroup {d}: "
                               "no such process") from exc
            raise write_error(exc, fs, d, "cgroup.procs", str(pid),
                              f"cgroup of process {pid}") from exc


def mkdir_p(fs: CgroupFS, base: str, path: str) -> list[str]:
    """mkdir every missing level of ``path`` below the existing ``base``; returns
    the directories it created, top first."""
    made: list[str] = []
    rel = os.path.relpath(path, base)
    cur = base
    if rel == ".":
        return made
    for part in rel.split(os.sep):
        cur = os.path.join(cur, part)
        if fs.isdir(cur):
            continue
        try:
            fs.mkdir(cur)
            made.append(cur)
        except FileExistsError:
            continue
        except OSError as exc:
            kind = Forbidden if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else System
            raise kind(f"cannot create cgroup {cur}: {exc.strerror}") from exc
    return made


def remove_tree(fs: CgroupFS, path: str, tries: int = 10,
                sleep: Callable[[float], None] = time.sleep) -> None:
    """rmdir ``path`` and every cgroup below it, leaf first. EBUSY (tasks still
    draining) is retried with a growing delay; a missing directory is fine."""
    if not fs.isdir(path):
        return
    try:
        children = fs.subdirs(path)
    except FileNotFoundError:
        return
    for child in children:
        remove_tree(fs, os.path.join(path, child), tries, sleep)
    delay = 0.001
    for attempt in range(tries + 1):
        try:
            fs.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.EBUSY and attempt < tries:
                sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            raise System(f"cannot remove cgroup {path}: {exc.strerror}") from exc
