"""A container's resources: what it uses (``docker stats``) and its limits (``docker update``).

Usage. The runtime reads the container's cgroup in runc's shape
(``ketch.linux.cgroups.Stats``); ``docker_stats`` turns that into dockerd's
``StatsJSON`` as moby's daemon/daemon_unix.go does (``statsV1`` on v1 and
hybrid hosts, ``statsV2`` on pure v2), and ``StatsReader.frames`` sends it the
way daemon/stats.go does:

    stream=1        a frame at once, then one a second (precpu = the frame before)
    stream=0        two samples a second apart, only the second sent (so the
                    client can compute a CPU %), then the end
    one-shot=1      (with stream=0) one sample at once, precpu empty
    not running     with stream=0: a frame of zeros with only name and id

Limits. ``update`` is moby's ContainerUpdate: the body (``Resources`` and
``RestartPolicy``) is checked as at create (``model.validate_create(update=True)``),
merged into the stored HostConfig field by field with dockerd's conflict rules,
stored, and applied to a running or paused container through the runtime; a
failure there puts the stored HostConfig back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from ketch.engine import model
from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, System
from ketch.jsonmodel import from_json

if TYPE_CHECKING:
    from ketch.engine.containers import Engine
    from ketch.engine.store import Container
    from ketch.linux.cgroups import Stats

log = logging.getLogger("ketch.engine")

INTERVAL = 1.0                      # dockerd's stats collector ticks once a second
ZERO_TIME = "0001-01-01T00:00:00Z"

# The memory.stat keys dockerd reports (containerd's cgroups v1 and v2 metrics).
V1_MEMORY_KEYS = (
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout",
    "pgfault", "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "hierarchical_memory_limit", "hierarchical_memsw_limit", "total_cache",
    "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty", "total_writeback",
    "total_pgpgin", "total_pgpgout", "total_pgfault", "total_pgmajfault",
    "total_inactive_anon", "total_active_anon", "total_inactive_file", "total_active_file",
    "total_unevictable")
V2_MEMORY_KEYS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file",
    "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault",
    "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim",
    "pgrefill", "pgscan", "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree",
    "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc")
_BLKIO_KEYS = ("io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
               "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
               "io_time_recursive", "sectors_recursive")
# runc's Blkio attribute for each of dockerd's blkio_stats keys.
_BLKIO_ATTRS = dict(zip(_BLKIO_KEYS, (
    "io_service_bytes_recursive", "io_serviced_recursive", "io_queued_recursive",
    "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
    "io_time_recursive", "sectors_recursive"), strict=True))


# --- host facts ------------------------------------------------------------------------------


def system_cpu_usage(proc_stat: str | None = None) -> tuple[int, int]:
    """moby's getSystemCPUUsage: the host's CPU time in ns (the first 7 fields of /proc/stat's
    "cpu" line, in clock ticks) and the number of online CPUs (its "cpuN" lines)."""
    if proc_stat is None:
        try:
            with open("/proc/stat") as f:
                proc_stat = f.read()
        except OSError:
            return 0, 0
    ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    usage, cpus = 0, 0
    for line in proc_stat.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("cpu"):
            continue
        if parts[0] == "cpu":
            if len(parts) < 8:
                raise System("invalid number of cpu fields")
            ticks = sum(int(x) for x in parts[1:8])
            usage = ticks * 1_000_000_000 // ticks_per_second
        elif len(parts[0]) > 3:
            cpus += 1
    return usage, cpus


def machine_memory(meminfo: str | None = None) -> int:
    """MemTotal in bytes (dockerd caps a container's memory limit at it)."""
    if meminfo is None:
        try:
            with open("/proc/meminfo") as f:
                meminfo = f.read()
        except OSError:
            return 0
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def network_stats(net_dev: str) -> dict[str, dict[str, int]]:
    """``networks`` of a frame from the container's /proc/<pid>/net/dev (its netns):
    every interface but lo, in dockerd's NetworkStats names."""
    out: dict[str, dict[str, int]] = {}
    for line in net_dev.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        f = rest.split()
        if not sep or name == "lo" or len(f) < 12:
            continue
        n = [int(x) for x in f[:12]]
        out[name] = {"rx_bytes": n[0], "rx_packets": n[1], "rx_errors": n[2],
                     "rx_dropped": n[3], "tx_bytes": n[8], "tx_packets": n[9],
                     "tx_errors": n[10], "tx_dropped": n[11]}
    return out


def rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano in UTC (trailing zeros of the fraction trimmed)."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


# --- the JSON ------------------------------------------------------------------------------


def _cpu_stats(total: int = 0, kernel: int = 0, user: int = 0,
               percpu: list[int] | None = None, system: int = 0, online: int = 0,
               throttling: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
    """``types.CPUStats`` with Go's omitempty on percpu, system and online CPUs."""
    usage: dict[str, Any] = {"total_usage": total}
    if percpu:
        usage["percpu_usage"] = list(percpu)
    usage.update({"usage_in_kernelmode": kernel, "usage_in_usermode": user})
    out: dict[str, Any] = {"cpu_usage": usage}
    if system:
        out["system_cpu_usage"] = system
    if online:
        out["online_cpus"] = online
    out["throttling_data"] = {"periods": throttling[0], "throttled_periods": throttling[1],
                              "throttled_time": throttling[2]}
    return out


def empty_stats(name: str, cid: str) -> dict[str, Any]:
    """What dockerd sends for a container that is not running: zeros, name and id."""
    return {"read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {},
            "blkio_stats": dict.fromkeys(_BLKIO_KEYS), "num_procs": 0, "storage_stats": {},
            "cpu_stats": _cpu_stats(), "precpu_stats": _cpu_stats(), "memory_stats": {},
            "name": name, "id": cid}


def _blkio(entries: list[Any], lower: bool = False) -> list[dict[str, Any]]:
    return [{"major": e.major, "minor": e.minor, "op": e.op.lower() if lower else e.op,
             "value": e.value} for e in entries]


def docker_stats(raw: Stats, *, cgroup2: bool, name: str, cid: str, read_ns: int,
                 system_usage: int, online_cpus: int, mem_total: int) -> dict[str, Any]:
    """One ``StatsJSON`` frame (precpu/preread empty; ``StatsReader`` fills them)."""
    out = empty_stats(name, cid)
    out["read"] = rfc3339_nano(read_ns)
    blkio = raw.blkio
    if cgroup2:
        # statsV2: only the bytes read and written, with lower-case ops (null when none).
        out["blkio_stats"]["io_service_bytes_recursive"] = _blkio(
            blkio.io_service_bytes_recursive, lower=True) or None
    else:
        # statsV1 copies every list, empty ones as [] (a stopped container has nulls).
        for key, attr in _BLKIO_ATTRS.items():
            out["blkio_stats"][key] = _blkio(getattr(blkio, attr))
    u = raw.cpu.usage
    t = raw.cpu.throttling
    out["cpu_stats"] = _cpu_stats(u.total, u.kernel, u.user, None if cgroup2 else u.percpu,
                                  system_usage, online_cpus,
                                  (t.periods, t.throttled_periods, t.throttled_time))
    m = raw.memory
    keys = V2_MEMORY_KEYS if cgroup2 else V1_MEMORY_KEYS
    mem: dict[str, Any] = {}
    if m.usage.usage:
        mem["usage"] = m.usage.usage
    if m.usage.max and not cgroup2:          # v2 has no max usage in dockerd's view
        mem["max_usage"] = m.usage.max
    # Go writes a map's keys sorted.
    stats = {k: m.raw.get(k, 0) for k in sorted(keys)} if m.raw else {}
    if stats:
        mem["stats"] = stats
    if m.usage.failcnt and not cgroup2:
        mem["failcnt"] = m.usage.failcnt
    limit = m.usage.limit
    if mem_total and limit > mem_total:
        limit = mem_total                    # no limit set: the machine's memory
    if limit:
        mem["limit"] = limit
    out["memory_stats"] = mem
    pids: dict[str, Any] = {}
    if raw.pids.current:
        pids["current"] = raw.pids.current
    if raw.pids.limit:
        pids["limit"] = raw.pids.limit
    out["pids_stats"] = pids
    return out


# --- reading and streaming -------------------------------------------------------------------


class StatsReader:
    """Samples containers' cgroups for ``GET /containers/{id}/stats``."""

    def __init__(self, engine: Engine, *, interval: float = INTERVAL,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.engine = engine
        self.interval = interval
        self.clock = clock
        self._mem_total = machine_memory()
        self._rt: Any = None

    def _runtime(self) -> Any:
        if self._rt is None:
            self._rt = self.engine._runtime()
        return self._rt

    def read(self, c: Container) -> dict[str, Any]:
        """One frame for ``c`` now (blocking: call in a thread). Zeros if not running."""
        name = f"/{c.name}"
        if c.state.status not in ("running", "paused") or c.state.restarting:
            return empty_stats(name, c.id)
        try:
            raw = self._runtime().stats(c.id)
        except (Conflict, NotFound):
            return empty_stats(name, c.id)      # it just exited, or was removed
        system, online = system_cpu_usage()
        frame = docker_stats(raw, cgroup2=self.engine.opts.cgroup2, name=name, cid=c.id,
                             read_ns=self.clock(), system_usage=system, online_cpus=online,
                             mem_total=self._mem_total)
        mode = str((c.host_config or {}).get("NetworkMode") or "")
        # Only a network of its own has interfaces to count: none, host and container:
        # modes have none (dockerd leaves "networks" out for them).
        if c.state.pid and mode not in ("none", "host") and not mode.startswith("container:"):
            try:
                with open(f"/proc/{c.state.pid}/net/dev") as f:
                    nets = network_stats(f.read())
            except OSError:
                nets = {}
            if nets:
                frame["networks"] = nets
        return frame

    async def frames(self, ref: str, *, stream: bool, one_shot: bool
                     ) -> AsyncGenerator[dict[str, Any], None]:
        """The frames dockerd would send for these query values (see the module doc)."""
        if stream and one_shot:
            raise InvalidArgument("cannot have stream=true and one-shot=true")
        c = self.engine.store.get(ref)
        running = c.state.status in ("running", "paused") and not c.state.restarting
        if not running and not stream:
            yield empty_stats(f"/{c.name}", c.id)
            return
        if one_shot:
            yield await asyncio.to_thread(self.read, c)
            return
        pre_cpu: dict[str, Any] = empty_stats("", "")["precpu_stats"]
        pre_read = ZERO_TIME
        prime = not stream
        while True:
            current = self.engine.store.find(c.id)
            if current is None:
                return                       # removed: dockerd ends the stream too
            frame = await asyncio.to_thread(self.read, current)
            frame["precpu_stats"], frame["preread"] = pre_cpu, pre_read
            pre_cpu, pre_read = frame["cpu_stats"], frame["read"]
            if prime:
                prime = False                # prime the CPU numbers, send the next one
            else:
                yield frame
                if not stream:
                    return
            await asyncio.sleep(self.interval)


# --- docker update -------------------------------------------------------------------------

# UpdateConfig's JSON: container.Resources and RestartPolicy (other keys are ignored,
# as Go's decoder ignores fields the struct does not have).
_RESOURCE_KEYS = frozenset(k.lower() for k in (
    "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight", "BlkioWeightDevice",
    "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus",
    "CpusetMems", "Devices", "DeviceCgroupRules", "DeviceRequests", "KernelMemory",
    "KernelMemoryTCP", "MemoryReservation", "MemorySwap", "MemorySwappiness",
    "OomKillDisable", "PidsLimit", "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps",
    "IOMaximumBandwidth", "RestartPolicy"))


def parse_update(body: bytes | dict[str, Any], api_version: str = model.API_VERSION
                 ) -> model.HostConfig:
    """The update body as a HostConfig holding only Resources and RestartPolicy."""
    if isinstance(body, (bytes, str)):
        if not body.strip():
            doc: Any = {}
        else:
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise InvalidArgument(f"invalid JSON: {exc}") from None
    else:
        doc = body
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    picked = {k: v for k, v in doc.items() if k.lower() in _RESOURCE_KEYS}
    try:
        hc = from_json(model.HostConfig, picked, where="UpdateConfig")
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None
    if _version(api_version) < (1, 40):
        hc.pids_limit = None
    if hc.pids_limit is not None and hc.pids_limit <= 0:
        hc.pids_limit = 0       # 0 and any negative value mean "unlimited" on update
    return hc


def _version(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        raise InvalidArgument(f"invalid API version {v!r}") from None


def merge_update(cur: model.HostConfig, new: model.HostConfig) -> None:
    """moby's Container.UpdateContainer: set fields replace stored ones; Conflict as dockerd."""
    if new.nano_cpus > 0 and cur.cpu_period > 0:
        raise Conflict("Conflicting options: Nano CPUs cannot be updated as CPU Period has "
                       "already been set")
    if new.nano_cpus > 0 and cur.cpu_quota > 0:
        raise Conflict("Conflicting options: Nano CPUs cannot be updated as CPU Quota has "
                       "already been set")
    if new.cpu_period > 0 and cur.nano_cpus > 0:
        raise Conflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has "
                       "already been set")
    if new.cpu_quota > 0 and cur.nano_cpus > 0:
        raise Conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has "
                       "already been set")
    for attr in ("blkio_weight", "cpu_shares", "nano_cpus", "cpu_period", "cpu_quota",
                 "cpuset_cpus", "cpuset_mems"):
        if getattr(new, attr):
            setattr(cur, attr, getattr(new, attr))
    if new.memory:
        # A container made with -m has MemorySwap = 2 x Memory: raising the memory past
        # it needs a new swap limit too (dockerd's rule, also when no swap limit is set).
        if new.memory > cur.memory_swap and new.memory_swap == 0:
            raise Conflict("Memory limit should be smaller than already set memoryswap limit, "
                           "update the memoryswap at the same time")
        cur.memory = new.memory
    for attr in ("memory_swap", "memory_reservation", "kernel_memory", "cpu_realtime_period",
                 "cpu_realtime_runtime"):
        if getattr(new, attr):
            setattr(cur, attr, getattr(new, attr))
    if new.pids_limit is not None:
        cur.pids_limit = new.pids_limit
    if new.restart_policy.name:
        if cur.auto_remove and not new.restart_policy.is_none():
            raise Conflict("Restart policy cannot be updated because AutoRemove is enabled for "
                           "the container")
        cur.restart_policy = new.restart_policy


async def update(engine: Engine, ref: str, body: bytes | dict[str, Any], *,
                 api_version: str = model.API_VERSION) -> list[str]:
    """``POST /containers/{id}/update``: dockerd's warnings; the ``update`` event is logged."""
    from ketch.engine import specgen
    from ketch.jsonmodel import to_json

    req = parse_update(body, api_version)
    warnings = model.validate_create(None, req, engine._sysinfo(), update=True)
    c = engine.store.get(ref)
    if c.state.status in ("removing", "dead"):
        raise Conflict(f"Cannot update container {c.id}: container is marked for removal "
                       'and cannot be "update"')
    backup = c.host_config
    cur = from_json(model.HostConfig, c.host_config, where="HostConfig")
    try:
        merge_update(cur, req)
    except Conflict as exc:
        raise Conflict(f"Cannot update container {c.id}: {exc}") from None
    c.host_config = to_json(cur)
    await asyncio.to_thread(engine.store.save, c)
    try:
        # A stopped container gets the new limits at its next start, from HostConfig.
        if c.state.status in ("running", "paused") and not c.state.restarting:
            try:
                resources = specgen._resources(req, engine.spec_options)
                await asyncio.to_thread(engine._runtime().update, c.id, resources)
            except KetchError as exc:
                c.host_config = backup
                with contextlib.suppress(KetchError):
                    await asyncio.to_thread(engine.store.save, c)
                raise System(f"Cannot update container {c.id}: {exc}") from None
    finally:
        engine.on_event("update", c, {})    # dockerd logs it either way (a deferred call)
    return warnings
