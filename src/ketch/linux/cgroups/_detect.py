"""Which cgroup layout the host has, and where each hierarchy is mounted.

Everything is read from a mountinfo file (``/proc/self/mountinfo`` unless told
otherwise), never guessed from fixed paths: the v1 ``cpu`` and ``cpuacct``
controllers are one ``cpu,cpuacct`` mount on most distributions and two mounts
on others, and a hybrid host puts its cgroup2 at ``/sys/fs/cgroup/unified``.

    mode = detect_mode()                 # Mode.HYBRID on this kind of host
    v1_mounts()["cpuacct"]               # "/sys/fs/cgroup/cpu,cpuacct"
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from ketch.errors import NotSupported, System

MOUNTINFO = "/proc/self/mountinfo"
PROC_CGROUP = "/proc/self/cgroup"
DEFAULT_ROOT = "/sys/fs/cgroup"

# The v1 controllers the kernel knows; other words in a cgroup mount's super
# options ("rw", "nsdelegate", "noprefix", "release_agent=...") are options.
V1_CONTROLLERS = frozenset({
    "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls",
    "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
})


class Mode(enum.Enum):
    V1 = "v1"
    HYBRID = "hybrid"
    V2 = "v2"


@dataclass(frozen=True, slots=True)
class CgroupMount:
    """One cgroup or cgroup2 line of mountinfo."""

    mountpoint: str
    root: str                       # the cgroup this mount shows as its "/"
    fstype: str                     # "cgroup" or "cgroup2"
    controllers: tuple[str, ...]    # v1 only: ("cpu", "cpuacct") or ("name=systemd",)
    options: tuple[str, ...]        # every super option, controllers included


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup mounts of a mountinfo text, in file order; a later mount on the
    same mountpoint hides an earlier one, as the kernel's mount stack does."""
    by_point: dict[str, CgroupMount] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        options = tuple(rf[2].split(","))
        controllers: tuple[str, ...] = ()
        if rf[0] == "cgroup":
            controllers = tuple(o for o in options
                                if o in V1_CONTROLLERS or o.startswith("name="))
        point = _unescape(lf[4])
        by_point.pop(point, None)
        by_point[point] = CgroupMount(point, _unescape(lf[3]), rf[0], controllers, options)
    return list(by_point.values())


def read_mounts(mountinfo_path: str = MOUNTINFO) -> list[CgroupMount]:
    try:
        with open(mountinfo_path) as f:
            return parse_mountinfo(f.read())
    except OSError as exc:
        raise System(f"cannot read {mountinfo_path}: {exc.strerror}") from exc


def _mode_of(mounts: list[CgroupMount]) -> Mode:
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    if any(m.mountpoint == DEFAULT_ROOT for m in v2):
        return Mode.V2
    # A lone named hierarchy (name=systemd for old systemd in containers) does
    # not make a host v1: only real controllers do.
    if any(c in V1_CONTROLLERS for m in mounts if m.fstype == "cgroup" for c in m.controllers):
        return Mode.HYBRID if v2 else Mode.V1
    if v2:
        return Mode.V2
    raise NotSupported("no cgroup filesystem is mounted (see /proc/self/mountinfo)")


def detect_mode(mountinfo_path: str = MOUNTINFO) -> Mode:
    """V2 if a cgroup2 is mounted at /sys/fs/cgroup (or there are only cgroup2
    mounts); HYBRID if v1 controllers and a cgroup2 are both mounted; else V1."""
    return _mode_of(read_mounts(mountinfo_path))


def v1_mounts_of(mounts: list[CgroupMount]) -> dict[str, CgroupMount]:
    """controller -> the first v1 mount that carries it (as runc picks it)."""
    out: dict[str, CgroupMount] = {}
    for m in mounts:
        if m.fstype != "cgroup":
            continue
        for c in m.controllers:
            out.setdefault(c, m)
    return out


def v1_mounts(mountinfo_path: str = MOUNTINFO) -> dict[str, str]:
    """controller name ("cpu", "memory", "name=systemd", ...) -> its mountpoint."""
    return {c: m.mountpoint for c, m in v1_mounts_of(read_mounts(mountinfo_path)).items()}


def unified_mount(mounts: list[CgroupMount]) -> CgroupMount | None:
    """The cgroup2 mount: the one at /sys/fs/cgroup, else the first one."""
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    for m in v2:
        if m.mountpoint == DEFAULT_ROOT:
            return m
    return v2[0] if v2 else None


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as controller -> cgroup path; the v2 line's key is ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
            continue
        for c in ctrls.split(","):
            out[c] = path
    return out


def read_proc_cgroup(path: str = PROC_CGROUP) -> dict[str, str]:
    try:
        with open(path) as f:
            return parse_proc_cgroup(f.read())
    except OSError as exc:
        raise System(f"cannot read {path}: {exc.strerror}") from exc


def relocate(mountpoint: str, root: str) -> str:
    """Where a hierarchy mounted at ``mountpoint`` is found when the cgroup
    filesystems are reached under ``root`` instead of /sys/fs/cgroup (a fake
    tree in tests). With the default root, the mountpoint itself."""
    root = root.rstrip("/") or "/"
    if root == DEFAULT_ROOT:
        return mountpoint
    if mountpoint == DEFAULT_ROOT:
        return root
    if mountpoint.startswith(DEFAULT_ROOT + "/"):
        return root + mountpoint[len(DEFAULT_ROOT):]
    return os.path.join(root, os.path.basename(mountpoint))
