"""Cgroup statistics, shaped like runc's ``events --stats`` data.

The dataclasses mirror runc's ``types/events.go`` field for field, with the same
JSON names (``ketch.jsonmodel`` metadata, so ``from_json(Stats, data)`` reads
runc's output back). Go's encoder leaves some fields out when they are zero and
always writes others; each field says which with ``omit``:

    "never"   always written                     (memory.usage.limit, failcnt)
    "empty"   left out when 0, "" or empty        (Go ``omitempty``)
    "zero"    a struct left out when all zero     (Go ``omitzero``)

``stats_to_json`` applies those rules (``ketch.jsonmodel``'s omit policies), so
the output matches runc's in structure: ``{"cpu": {...}, "memory": {...}, ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ketch.jsonmodel import json_name, to_json


def _f(name: str, omit: str = "empty", default: Any = 0, factory: Any = None) -> Any:
    meta = json_name(name, omit=omit)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(slots=True)
class CpuUsage:
    total: int = _f("total")
    percpu: list[int] = _f("percpu", factory=list)
    percpu_kernel: list[int] = _f("percpu_kernel", factory=list)
    percpu_user: list[int] = _f("percpu_user", factory=list)
    kernel: int = _f("kernel", "never")
    user: int = _f("user", "never")


@dataclass(slots=True)
class Throttling:
    periods: int = _f("periods")
    throttled_periods: int = _f("throttledPeriods")
    throttled_time: int = _f("throttledTime")


@dataclass(slots=True)
class Cpu:
    usage: CpuUsage = _f("usage", "zero", factory=CpuUsage)
    throttling: Throttling = _f("throttling", "zero", factory=Throttling)


@dataclass(slots=True)
class CpuSet:
    cpus: list[int] = _f("cpus", factory=list)
    cpu_exclusive: int = _f("cpu_exclusive", "never")
    mems: list[int] = _f("mems", factory=list)
    mem_hardwall: int = _f("mem_hardwall", "never")
    mem_exclusive: int = _f("mem_exclusive", "never")
    memory_migrate: int = _f("memory_migrate", "never")
    memory_spread_page: int = _f("memory_spread_page", "never")
    memory_spread_slab: int = _f("memory_spread_slab", "never")
    memory_pressure: int = _f("memory_pressure", "never")
    sched_load_balance: int = _f("sched_load_balance", "never")
    sched_relax_domain_level: int = _f("sched_relax_domain_level", "never")


@dataclass(slots=True)
class MemoryEntry:
    limit: int = _f("limit", "never")
    usage: int = _f("usage")
    max: int = _f("max")
    failcnt: int = _f("failcnt", "never")


@dataclass(slots=True)
class Memory:
    cache: int = _f("cache")
    usage: MemoryEntry = _f("usage", "zero", factory=MemoryEntry)
    swap: MemoryEntry = _f("swap", "zero", factory=MemoryEntry)
    kernel: MemoryEntry = _f("kernel", "zero", factory=MemoryEntry)
    kernel_tcp: MemoryEntry = _f("kernelTCP", "zero", factory=MemoryEntry)
    raw: dict[str, int] = _f("raw", factory=dict)


@dataclass(slots=True)
class Pids:
    current: int = _f("current")
    limit: int = _f("limit")


@dataclass(slots=True)
class BlkioEntry:
    major: int = _f("major")
    minor: int = _f("minor")
    op: str = _f("op", default="")
    value: int = _f("value")


@dataclass(slots=True)
class Blkio:
    io_service_bytes_recursive: list[BlkioEntry] = _f("ioServiceBytesRecursive", factory=list)
    io_serviced_recursive: list[BlkioEntry] = _f("ioServicedRecursive", factory=list)
    io_queued_recursive: list[BlkioEntry] = _f("ioQueueRecursive", factory=list)
    io_service_time_recursive: list[BlkioEntry] = _f("ioServiceTimeRecursive", factory=list)
    io_wait_time_recursive: list[BlkioEntry] = _f("ioWaitTimeRecursive", factory=list)
    io_merged_recursive: list[BlkioEntry] = _f("ioMergedRecursive", factory=list)
    io_time_recursive: list[BlkioEntry] = _f("ioTimeRecursive", factory=list)
    sectors_recursive: list[BlkioEntry] = _f("sectorsRecursive", factory=list)


@dataclass(slots=True)
class Hugetlb:
    usage: int = _f("usage")
    max: int = _f("max")
    failcnt: int = _f("failcnt", "never")


@dataclass(slots=True)
class IntelRdt:
    """Always empty: ketch does not manage resctrl. Kept for the JSON shape."""


@dataclass(slots=True)
class Stats:
    cpu: Cpu = _f("cpu", "never", factory=Cpu)
    cpuset: CpuSet = _f("cpuset", "never", factory=CpuSet)
    memory: Memory = _f("memory", "never", factory=Memory)
    pids: Pids = _f("pids", "never", factory=Pids)
    blkio: Blkio = _f("blkio", "never", factory=Blkio)
    hugetlb: dict[str, Hugetlb] = _f("hugetlb", "never", factory=dict)
    intel_rdt: IntelRdt = _f("intel_rdt", "never", factory=IntelRdt)
    network_interfaces: list[Any] | None = _f("network_interfaces", "never", default=None)


def stats_to_json(stats: Stats) -> dict[str, Any]:
    """The "data" object of runc's ``events --stats`` for these stats."""
    return to_json(stats)
