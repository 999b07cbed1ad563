"""What the host's cgroups offer, probed as moby's pkg/sysinfo does: by the files each
feature needs, once, when the engine starts.

Create checks a container's resources against it (``model.validate_create``): a
feature the host lacks is dockerd's warning ("Your kernel does not support Block
I/O weight or the cgroup is not mounted. Weight discarded.") and the setting is
dropped, rather than a start that fails in the runtime. On cgroup v1 (and hybrid
hosts, where the v1 hierarchies hold the controllers) a feature is the presence of
its file at the hierarchy's root; on v2 it is the controller being available.
"""

from __future__ import annotations

import os

from ketch.engine.model import SysInfo


def _exists(base: str | None, name: str) -> bool:
    return base is not None and os.path.exists(os.path.join(base, name))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def probe(*, cgroup2: bool, v1: dict[str, str] | None = None,
          unified: str = "/sys/fs/cgroup", runtimes: tuple[str, ...] = ("runc",),
          default_runtime: str = "runc") -> SysInfo:
    """The host's SysInfo. ``v1`` maps a v1 controller to its mount point (read from
    mountinfo when None); ``unified`` is the v2 root. Both may point at a fake tree."""
    ncpu = os.cpu_count() or 1
    common = {"runtimes": runtimes, "default_runtime": default_runtime,
              "cgroup_namespaces": os.path.exists("/proc/self/ns/cgroup"),
              "ipv4_forwarding_disabled": _read("/proc/sys/net/ipv4/ip_forward") == "0",
              "ncpu": ncpu}
    if cgroup2:
        have = set(_read(os.path.join(unified, "cgroup.controllers")).split())
        has_mem, has_cpu, io = "memory" in have, "cpu" in have, "io" in have
        return SysInfo(
            cpus=_read(os.path.join(unified, "cpuset.cpus.effective")),
            mems=_read(os.path.join(unified, "cpuset.mems.effective")) or "0",
            memory_limit=has_mem, swap_limit=has_mem, memory_reservation=has_mem,
            memory_swappiness=False, oom_kill_disable=False,
            pids_limit="pids" in have, cpu_cfs=has_cpu, cpu_shares=has_cpu, cpu_realtime=False,
            cpuset="cpuset" in have,
            blkio_weight=io, blkio_weight_device=io, blkio_read_bps_device=io,
            blkio_write_bps_device=io, blkio_read_iops_device=io,
            blkio_write_iops_device=io, **common)  # type: ignore[arg-type]
    if v1 is None:
        from ketch.errors import KetchError
        from ketch.linux.cgroups import v1_mounts

        try:
            v1 = v1_mounts()
        except KetchError:
            v1 = {}
    mem, cpu, blkio = v1.get("memory"), v1.get("cpu"), v1.get("blkio")
    cpuset = v1.get("cpuset")
    return SysInfo(
        cpus=_read(os.path.join(cpuset, "cpuset.cpus")) if cpuset else "",
        mems=(_read(os.path.join(cpuset, "cpuset.mems")) if cpuset else "") or "0",
        memory_limit=mem is not None,
        swap_limit=_exists(mem, "memory.memsw.limit_in_bytes"),
        memory_reservation=_exists(mem, "memory.soft_limit_in_bytes"),
        memory_swappiness=_exists(mem, "memory.swappiness"),
        oom_kill_disable=_exists(mem, "memory.oom_control"),
        pids_limit="pids" in v1,
        cpu_cfs=_exists(cpu, "cpu.cfs_quota_us"),
        cpu_shares=_exists(cpu, "cpu.shares"),
        cpu_realtime=_exists(cpu, "cpu.rt_period_us") and _exists(cpu, "cpu.rt_runtime_us"),
        cpuset=cpuset is not None,
        # CFQ's files, or BFQ's: with neither (schedulers none/mq-deadline) a weight
        # would be written nowhere, and dockerd discards it.
        blkio_weight=_exists(blkio, "blkio.weight") or _exists(blkio, "blkio.bfq.weight"),
        blkio_weight_device=_exists(blkio, "blkio.weight_device")
        or _exists(blkio, "blkio.bfq.weight_device"),
        blkio_read_bps_device=_exists(blkio, "blkio.throttle.read_bps_device"),
        blkio_write_bps_device=_exists(blkio, "blkio.throttle.write_bps_device"),
        blkio_read_iops_device=_exists(blkio, "blkio.throttle.read_iops_device"),
        blkio_write_iops_device=_exists(blkio, "blkio.throttle.write_iops_device"),
        **common)  # type: ignore[arg-type]


def warnings(info: SysInfo) -> list[str]:
    """/info's warnings for what the host lacks, in moby's words (daemon/info_unix.go)."""
    out = []
    for ok, what in ((info.memory_limit, "memory limit"), (info.swap_limit, "swap limit"),
                     (info.oom_kill_disable, "oom kill disable"),
                     (info.cpu_cfs, "cpu cfs quota"), (info.cpu_cfs, "cpu cfs period"),
                     (info.cpu_shares, "cpu shares"), (info.cpuset, "cpuset"),
                     (info.blkio_weight, "blkio weight"),
                     (info.blkio_weight_device, "blkio weight_device"),
                     (info.blkio_read_bps_device, "blkio throttle.read_bps_device"),
                     (info.blkio_write_bps_device, "blkio throttle.write_bps_device"),
                     (info.blkio_read_iops_device, "blkio throttle.read_iops_device"),
                     (info.blkio_write_iops_device, "blkio throttle.write_iops_device")):
        if not ok:
            out.append(f"WARNING: No {what} support")
    return out


__all__ = ["probe", "warnings"]
