"""Mount helpers the seam does not cover: recursive attributes and mountinfo."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from ketch.linux.syscalls import _check, raw_syscall

AT_FDCWD = -100
AT_RECURSIVE = 0x8000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int, recursive: bool = True) -> None:
    """Change mount attributes on a whole tree at once (``rro`` and friends)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    ret = raw_syscall("mount_setattr", AT_FDCWD, path.encode(), flags,
                      ctypes.cast(ctypes.pointer(attr), ctypes.c_void_p),
                      ctypes.sizeof(attr))
    _check(ret, "mount_setattr", path)


@dataclass(frozen=True, slots=True)
class MountInfo:
    mount_id: int
    parent_id: int
    root: str
    mountpoint: str
    options: str
    optional: str
    fstype: str
    source: str
    super_options: str


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountInfo]:
    out = []
    with open(path) as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a = left.split(" ")
            b = right.split(" ")
            out.append(MountInfo(
                mount_id=int(a[0]), parent_id=int(a[1]), root=_unescape(a[3]),
                mountpoint=_unescape(a[4]), options=a[5], optional=" ".join(a[6:]),
                fstype=b[0], source=_unescape(b[1]) if len(b) > 1 else "",
                super_options=b[2] if len(b) > 2 else ""))
    return out


def is_mountpoint(path: str) -> bool:
    """Whether something is mounted exactly at ``path`` (stat across the boundary
    misses bind mounts of the same filesystem; mountinfo does not)."""
    real = os.path.realpath(path)
    return any(m.mountpoint == real for m in read_mountinfo())
