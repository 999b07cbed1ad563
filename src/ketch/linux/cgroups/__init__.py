"""Cgroups for containers: v1, v2 and hybrid hosts behind one Manager.

A container's cgroup over its life:

    from ketch.linux import cgroups
    mgr = cgroups.new_manager("/ketch/abc")   # the mode is read from mountinfo
    mgr.create()                  # mkdir in every hierarchy (v2: enable controllers)
    mgr.set(resources)            # limits; Resources is the OCI linux.resources
    mgr.apply(pid)                # the container's init joins
    mgr.freeze(); mgr.thaw()      # pause / resume
    mgr.stats(); mgr.oom_kill_count()
    mgr.kill_all(signal.SIGKILL)  # delete --force
    mgr.destroy()                 # rmdir, leaf first, retrying while tasks drain

Paths follow runc's cgroupfs driver: an absolute cgroupsPath is below each
hierarchy's root, a relative one below the calling process's own cgroup (on v2
its parent's, where controllers can be enabled). systemd's "slice:prefix:name"
form is refused with NotSupported.

Everything the managers do to the kernel goes through a ``CgroupFS``; with
``ketch.linux.cgroups.fake.FakeCgroupTree`` the same code runs on a temporary
directory that behaves like cgroupfs, for tests without root.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

from ketch.errors import NotSupported
from ketch.linux.cgroups._base import clean_path, relative_to
from ketch.linux.cgroups._detect import (
    DEFAULT_ROOT,
    MOUNTINFO,
    PROC_CGROUP,
    CgroupMount,
    Mode,
    _mode_of,
    detect_mode,
    parse_mountinfo,
    parse_proc_cgroup,
    read_mounts,
    read_proc_cgroup,
    unified_mount,
    v1_mounts,
)
from ketch.linux.cgroups._fs import CgroupFS
from ketch.linux.cgroups._v1 import V1Manager
from ketch.linux.cgroups._v2 import (
    V2Manager,
    blkio_weight_to_io_weight,
    cpu_shares_to_weight,
    memory_swap_to_v2,
)
from ketch.linux.cgroups.resources import Resources

if TYPE_CHECKING:
    from ketch.linux.cgroups._devices import Emulator, Rule
    from ketch.linux.cgroups._ebpf import DeviceProgram, compile_rules
    from ketch.linux.cgroups._stats import (
        Blkio,
        BlkioEntry,
        Cpu,
        CpuSet,
        CpuUsage,
        Hugetlb,
        Memory,
        MemoryEntry,
        Pids,
        Stats,
        Throttling,
        stats_to_json,
    )

__all__ = [
    "Blkio", "BlkioEntry", "CgroupFS", "CgroupMount", "Cpu", "CpuSet", "CpuUsage",
    "DeviceProgram", "Emulator", "Hugetlb", "Manager", "Memory", "MemoryEntry", "Mode",
    "Pids", "Rule", "Stats", "Throttling", "V1Manager", "V2Manager",
    "blkio_weight_to_io_weight", "compile_rules", "cpu_shares_to_weight", "detect_mode",
    "memory_swap_to_v2", "new_manager", "parse_mountinfo", "parse_proc_cgroup",
    "stats_to_json", "v1_mounts",
]


class Manager(Protocol):
    """One container's cgroup, in whatever hierarchies the host has."""

    path: str

    def create(self) -> None: ...
    def apply(self, pid: int) -> None: ...
    def set(self, resources: Resources) -> None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def frozen(self) -> bool: ...
    def pids(self) -> list[int]: ...
    def stats(self) -> Stats: ...
    def oom_kill_count(self) -> int: ...
    def exists(self) -> bool: ...
    def paths(self) -> dict[str, str]: ...
    def destroy(self) -> None: ...
    def kill_all(self, sig: int) -> None: ...


def new_manager(path: str, *, mode: Mode | None = None, mountinfo_path: str = MOUNTINFO,
                root: str = DEFAULT_ROOT, proc_cgroup_path: str = PROC_CGROUP,
                fs: CgroupFS | None = None, controllers: Collection[str] | None = None,
                freeze_timeout: float = 10.0,
                sleep: Callable[[float], None] = time.sleep) -> Manager:
    """The manager for cgroupsPath ``path`` on this host (or the one described by
    ``mountinfo_path``, ``root`` and ``proc_cgroup_path``).

    ``root`` stands for /sys/fs/cgroup: on v1 and hybrid the directory holding
    one directory per hierarchy, on v2 the unified hierarchy itself (so a v2
    manager can be pointed at a hybrid host's /sys/fs/cgroup/unified).
    ``controllers`` limits the v2 controllers ``create`` enables in the
    ancestors (default: all the hierarchy offers).
    """
    inner = clean_path(path)
    fs = fs or CgroupFS()
    mounts = read_mounts(mountinfo_path)
    mode = mode or _mode_of(mounts)

    def own() -> dict[str, str]:
        return read_proc_cgroup(proc_cgroup_path)

    if mode is Mode.V2:
        um = unified_mount(mounts)
        if root.rstrip("/") != DEFAULT_ROOT:
            base = root
        elif um is not None:
            base = um.mountpoint
        else:
            raise NotSupported("no cgroup2 filesystem is mounted")
        if inner.startswith("/"):
            d = os.path.join(base, inner.lstrip("/"))
        else:
            mine = own().get("")
            if mine is None:
                raise NotSupported("our own cgroup v2 path is not in /proc/self/cgroup")
            # Below our cgroup's parent: our own cgroup holds processes, so
            # it could not enable controllers for a child.
            rel = relative_to(mine, um.root if um is not None else "/", "cgroup2")
            d = os.path.join(base, os.path.dirname(rel), inner)
        return V2Manager(path, dir_path=d, base=base, fs=fs, controllers=controllers,
                         freeze_timeout=freeze_timeout, sleep=sleep)
    if not any(m.fstype == "cgroup" for m in mounts):
        raise NotSupported("no cgroup v1 hierarchy is mounted")
    unified = unified_mount(mounts) if mode is Mode.HYBRID else None
    return V1Manager(path, inner=inner, mounts=mounts, root=root, own=own, fs=fs,
                     unified=unified, freeze_timeout=freeze_timeout, sleep=sleep)


# Names that only some callers need (stats, device-rule compilation), loaded
# on first use so that ketch-runc's start-up does not pay for them.
_LAZY = {
    **{name: "ketch.linux.cgroups._stats" for name in (
        "Blkio", "BlkioEntry", "Cpu", "CpuSet", "CpuUsage", "Hugetlb", "Memory",
        "MemoryEntry", "Pids", "Stats", "Throttling", "stats_to_json")},
    "DeviceProgram": "ketch.linux.cgroups._ebpf",
    "compile_rules": "ketch.linux.cgroups._ebpf",
    "Emulator": "ketch.linux.cgroups._devices",
    "Rule": "ketch.linux.cgroups._devices",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
