"""Cgroup resource settings, as the OCI runtime spec's ``linux.resources`` names them.

These are the settings a cgroup can enforce; they know nothing of containers.
The runtime reuses them as the spec's types (same JSON names), so there is one
definition of "memory limit" in ketch. ``None`` means "leave as is".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ketch.jsonmodel import json_name


@dataclass(slots=True)
class DeviceRule:
    """One devices-cgroup rule: allow or deny ``type major:minor access``."""

    allow: bool = False
    type: str | None = None        # "a", "b" or "c"; None means all
    major: int | None = None       # None means any (*)
    minor: int | None = None
    access: str | None = None      # subset of "rwm"; None means "rwm"


@dataclass(slots=True)
class Memory:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = field(default=None, metadata=json_name("kernelTCP"))
    swappiness: int | None = None
    disable_oom_killer: bool | None = field(default=None, metadata=json_name("disableOOMKiller"))
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


@dataclass(slots=True)
class CPU:
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


@dataclass(slots=True)
class Pids:
    limit: int = 0


@dataclass(slots=True)
class WeightDevice:
    major: int = 0
    minor: int = 0
    weight: int | None = None
    leaf_weight: int | None = None


@dataclass(slots=True)
class ThrottleDevice:
    major: int = 0
    minor: int = 0
    rate: int = 0


@dataclass(slots=True)
class BlockIO:
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: list[WeightDevice] = field(default_factory=list)
    throttle_read_bps_device: list[ThrottleDevice] = field(default_factory=list)
    throttle_write_bps_device: list[ThrottleDevice] = field(default_factory=list)
    throttle_read_iops_device: list[ThrottleDevice] = field(
        default_factory=list, metadata=json_name("throttleReadIOPSDevice"))
    throttle_write_iops_device: list[ThrottleDevice] = field(
        default_factory=list, metadata=json_name("throttleWriteIOPSDevice"))


@dataclass(slots=True)
class HugepageLimit:
    page_size: str = ""
    limit: int = 0


@dataclass(slots=True)
class InterfacePriority:
    name: str = ""
    priority: int = 0


@dataclass(slots=True)
class Network:
    """v1 net_cls and net_prio; cgroup v2 has neither."""

    class_id: int | None = field(default=None, metadata=json_name("classID"))
    priorities: list[InterfacePriority] = field(default_factory=list)


@dataclass(slots=True)
class Rdma:
    hca_handles: int | None = None
    hca_objects: int | None = None


@dataclass(slots=True)
class Resources:
    devices: list[DeviceRule] = field(default_factory=list)
    memory: Memory | None = None
    cpu: CPU | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = field(default=None, metadata=json_name("blockIO"))
    hugepage_limits: list[HugepageLimit] = field(default_factory=list)
    unified: dict[str, str] = field(default_factory=dict)
    network: Network | None = None
    rdma: dict[str, Rdma] = field(default_factory=dict)
