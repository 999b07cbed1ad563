"""cgroup v1 (and hybrid): one directory per hierarchy.

    mgr = V1Manager("/ketch/abc", mounts=read_mounts(), root="/sys/fs/cgroup")
    mgr.create()        # mkdir in cpu, cpuacct, cpuset, memory, ... (+ unified on hybrid)
    mgr.set(resources)  # memory.limit_in_bytes, cpu.shares, devices.allow, ...
    mgr.apply(pid)      # pid into every hierarchy's cgroup.procs
    mgr.freeze(); mgr.thaw(); mgr.stats(); mgr.destroy()

On a hybrid host the process also joins the cgroup2 at /sys/fs/cgroup/unified
(key "" in ``paths()``), as runc does, so tools that look there (systemd) find
it; no limits are set there: the v1 controllers hold them.

What runc does that is kept here: a new cpuset cgroup gets its parent's cpus and
mems (an empty cpuset admits no task); memory and memsw limits are written in
the order the kernel accepts (memsw >= limit at every step); cpu period, quota
and burst are retried in the other order when the kernel refuses one alone;
device rules move from what devices.list shows to the wanted state with the
fewest writes; the freezer is retried while it reports FREEZING.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ketch.errors import InvalidArgument, NotFound, NotSupported, System
from ketch.lazy import LazyModule
from ketch.linux.cgroups._base import BaseManager, clean_path, rdma_lines, relative_to
from ketch.linux.cgroups._detect import CgroupMount, relocate, v1_mounts_of
from ketch.linux.cgroups._devices import Emulator
from ketch.linux.cgroups._fs import (
    MAX_U64,
    CgroupFS,
    mkdir_p,
    parse_keyed,
    read_keyed,
    read_opt,
    read_uint,
    write,
    write_error,
    write_pid,
)
from ketch.linux.cgroups.resources import Resources

if TYPE_CHECKING:
    from ketch.linux.cgroups import _stats as st
else:
    st = LazyModule("ketch.linux.cgroups._stats")

MEMSW = "memory.memsw.limit_in_bytes"


class V1Manager(BaseManager):
    def __init__(self, path: str, *, inner: str | None = None, mounts: list[CgroupMount],
                 root: str,
                 own: Callable[[], dict[str, str]], fs: CgroupFS,
                 unified: CgroupMount | None = None, freeze_timeout: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(path, fs, freeze_timeout, sleep)
        inner = clean_path(path) if inner is None else inner
        self._paths: dict[str, str] = {}
        self._bases: dict[str, str] = {}
        own_cache: dict[str, str] | None = None

        def own_path(key: str, where: str, mount_root: str) -> str:
            nonlocal own_cache
            if own_cache is None:
                own_cache = own()
            mine = own_cache.get(key)
            if mine is None:
                raise System(f"our own cgroup for {where} is not in /proc/self/cgroup")
            return relative_to(mine, mount_root, where)

        def place(key: str, m: CgroupMount) -> None:
            base = relocate(m.mountpoint, root)
            if inner.startswith("/"):
                d = os.path.join(base, inner.lstrip("/"))
            else:
                d = os.path.join(base, own_path(key, key or "cgroup2", m.root), inner)
            self._paths[key] = os.path.normpath(d)
            self._bases[self._paths[key]] = base

        for ctrl, m in v1_mounts_of(mounts).items():
            place(ctrl, m)
        if unified is not None:
            place("", unified)

    # -- paths ------------------------------------------------------------------------
    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def dirs(self) -> list[str]:
        return list(dict.fromkeys(self._paths.values()))

    def _dir(self, ctrl: str) -> str | None:
        return self._paths.get(ctrl)

    def _need(self, ctrl: str, what: str) -> str:
        d = self._paths.get(ctrl)
        if d is None:
            raise NotSupported(f"cannot set {what}: the {ctrl} cgroup controller is not "
                               "mounted on this host")
        return d

    # -- lifecycle --------------------------------------------------------------------
    def create(self) -> None:
        for d in self.dirs():
            mkdir_p(self.fs, self._bases[d], d)
        cpuset = self._dir("cpuset")
        if cpuset is not None:
            self._cpuset_fill(self._bases[cpuset], cpuset)

    def _cpuset_fill(self, base: str, d: str) -> None:
        """Give every level below the mount the cpus and mems of its parent where
        they are empty: a task cannot join a cpuset with none."""
        prefix = "cpuset." if self.fs.exists(os.path.join(base, "cpuset.cpus")) else ""
        rel = os.path.relpath(d, base)
        if rel == ".":
            return
        parent = base
        for part in rel.split(os.sep):
            cur = os.path.join(parent, part)
            for name in ("cpus", "mems"):
                mine = (read_opt(self.fs, cur, prefix + name) or "").strip()
                if mine:
                    continue
                theirs = (read_opt(self.fs, parent, prefix + name) or "").strip()
                if theirs:
                    write(self.fs, cur, prefix + name, theirs, f"cpuset {name}")
            parent = cur

    def apply(self, pid: int) -> None:
        for d in self.dirs():
            write_pid(self.fs, d, pid)

    # -- limits -----------------------------------------------------------------------
    def set(self, resources: Resources) -> None:
        r = resources
        if r.unified:
            raise InvalidArgument("invalid configuration: cannot use unified on cgroup v1 "
                                  f"(unified keys {sorted(r.unified)} need cgroup v2)")
        if r.memory is not None and r.memory.swappiness not in (None, -1) and \
                not 0 <= r.memory.swappiness <= 100:
            raise InvalidArgument(f"invalid memory swappiness value: {r.memory.swappiness} "
                                  "(valid range is 0-100)")
        target = Emulator.from_rules(r.devices) if r.devices else None
        self._set_cpuset(r)
        if target is not None:
            self._set_devices(target)
        self._set_memory(r)
        self._set_cpu(r)
        self._set_pids(r)
        self._set_blkio(r)
        self._set_hugetlb(r)
        self._set_network(r)
        for line in rdma_lines(r):
            write(self.fs, self._need("rdma", "rdma limits"), "rdma.max", line, "rdma limit")

    def _set_cpuset(self, r: Resources) -> None:
        c = r.cpu
        if c is None or not (c.cpus or c.mems):
            return
        d = self._need("cpuset", "cpuset")
        prefix = "cpuset." if self.fs.exists(os.path.join(d, "cpuset.cpus")) else ""
        if c.cpus:
            write(self.fs, d, prefix + "cpus", c.cpus, "cpuset cpus")
        if c.mems:
            write(self.fs, d, prefix + "mems", c.mems, "cpuset mems")

    def _set_devices(self, target: Emulator) -> None:
        d = self._need("devices", "device rules")
        listing = read_opt(self.fs, d, "devices.list")
        current = Emulator.from_list(listing) if listing is not None else Emulator(True)
        for rule in current.transition(target):
            name = "devices.allow" if rule.allow else "devices.deny"
            write(self.fs, d, name, rule.cgroup_string(), "device rule")

    def _set_memory(self, r: Resources) -> None:
        m = r.memory
        if m is None:
            return
        limit, swap, reservation = m.limit or 0, m.swap or 0, m.reservation or 0
        wants_oom = m.disable_oom_killer is not None
        if not (limit or swap or reservation or wants_oom or
                m.swappiness not in (None, -1)):
            return      # kernel, kernelTCP, useHierarchy: deprecated, ignored as runc does
        d = self._need("memory", "memory limits")
        if m.check_before_update and (limit > 0 or swap > 0):
            usage = read_uint(self.fs, d, "memory.usage_in_bytes")
            if 0 < swap <= usage:
                raise InvalidArgument(f"rejecting memory+swap limit {swap} <= usage {usage}")
            if 0 < limit <= usage:
                raise InvalidArgument(f"rejecting memory limit {limit} <= usage {usage}")
        has_memsw = self.fs.exists(os.path.join(d, MEMSW))
        if limit == -1 and swap == 0 and has_memsw:
            swap = -1       # "unlimited memory" means unlimited memory+swap too
        if swap and not has_memsw:
            raise NotSupported(f"cannot set memory+swap limit {swap}: {os.path.join(d, MEMSW)} "
                               "does not exist (swap accounting is disabled on this host)")
        if limit and swap:
            current = read_uint(self.fs, d, "memory.limit_in_bytes")
            # memsw must stay >= the limit after every single write.
            if swap == -1 or current < swap:
                self._write_swap(d, swap)
                self._write_limit(d, limit)
            else:
                self._write_limit(d, limit)
                self._write_swap(d, swap)
        else:
            if limit:
                self._write_limit(d, limit)
            if swap:
                self._write_swap(d, swap)
        if reservation:
            write(self.fs, d, "memory.soft_limit_in_bytes", str(reservation),
                  "memory reservation")
        if m.disable_oom_killer:
            write(self.fs, d, "memory.oom_control", "1", "memory OOM killer disable")
        elif m.disable_oom_killer is False and \
                read_keyed(self.fs, d, "memory.oom_control").get("oom_kill_disable"):
            write(self.fs, d, "memory.oom_control", "0", "memory OOM killer disable")
        if m.swappiness is not None and m.swappiness != -1:
            write(self.fs, d, "memory.swappiness", str(m.swappiness), "memory swappiness")

    def _write_limit(self, d: str, limit: int) -> None:
        try:
            self.fs.write(os.path.join(d, "memory.limit_in_bytes"), str(limit))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                usage = read_uint(self.fs, d, "memory.usage_in_bytes")
                peak = read_uint(self.fs, d, "memory.max_usage_in_bytes")
                raise InvalidArgument(
                    f"cannot set memory limit to {limit} on {d}: memory.limit_in_bytes: "
                    f"{os.strerror(exc.errno)} (current usage: {usage}, peak usage: {peak})"
                ) from exc
            raise write_error(exc, self.fs, d, "memory.limit_in_bytes", str(limit),
                              "memory limit") from exc

    def _write_swap(self, d: str, swap: int) -> None:
        write(self.fs, d, MEMSW, str(swap), "memory+swap limit")

    def _set_cpu(self, r: Resources) -> None:
        c = r.cpu
        if c is None:
            return
        if not (c.shares or c.period or c.quota or c.burst is not None or
                c.idle is not None or c.realtime_period or c.realtime_runtime):
            return
        d = self._need("cpu", "cpu limits")
        fs = self.fs
        if c.shares:
            write(fs, d, "cpu.shares", str(c.shares), "cpu shares")
            got = read_uint(fs, d, "cpu.shares")
            if c.shares > got:
                raise InvalidArgument(f"the maximum allowed cpu-shares is {got}")
            if c.shares < got:
                raise InvalidArgument(f"the minimum allowed cpu-shares is {got}")
        # The kernel checks period, quota and burst against each other: a value
        # refused alone (EINVAL) is written again once the others are in.
        period_left = self._try_first(d, "cpu.cfs_period_us", c.period, bool(c.quota),
                                      "cpu period") if c.period else None
        burst_left = None
        if c.burst is not None:
            try:
                burst_left = self._try_first(d, "cpu.cfs_burst_us", c.burst, bool(c.quota),
                                             "cpu burst")
            except NotSupported:
                raise NotSupported("cannot set cpu burst: cpu.cfs_burst_us does not exist "
                                   "(the kernel has no CFS burst)") from None
        if c.quota:
            write(fs, d, "cpu.cfs_quota_us", str(c.quota), "cpu quota")
            if period_left is not None:
                write(fs, d, "cpu.cfs_period_us", str(period_left), "cpu period")
            if burst_left is not None:
                write(fs, d, "cpu.cfs_burst_us", str(burst_left), "cpu burst")
        if c.idle is not None:
            write(fs, d, "cpu.idle", str(c.idle), "cpu idle")
        self._set_rt(d, r)

    def _try_first(self, d: str, name: str, value: int, retry: bool, what: str) -> int | None:
        """Write; on EINVAL with a quota still to come, return the value to retry."""
        try:
            self.fs.write(os.path.join(d, name), str(value))
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL and retry:
                return value
            raise write_error(exc, self.fs, d, name, str(value), what) from exc

    def _set_rt(self, d: str, r: Resources) -> None:
        c = r.cpu
        assert c is not None
        period_left = None
        if c.realtime_period:
            period_left = self._try_first(d, "cpu.rt_period_us", c.realtime_period,
                                          bool(c.realtime_runtime), "cpu realtime period")
        if c.realtime_runtime:
            write(self.fs, d, "cpu.rt_runtime_us", str(c.realtime_runtime),
                  "cpu realtime runtime")
            if period_left is not None:
                write(self.fs, d, "cpu.rt_period_us", str(period_left), "cpu realtime period")

    def _set_pids(self, r: Resources) -> None:
        if r.pids is None:
            return
        d = self._need("pids", "pids limit")
        limit = r.pids.limit
        write(self.fs, d, "pids.max", str(limit) if limit > 0 else "max", "pids limit")

    def _set_blkio(self, r: Resources) -> None:
        b = r.block_io
        if b is None:
            return
        wants = (b.weight or b.leaf_weight or b.weight_device or b.throttle_read_bps_device
                 or b.throttle_write_bps_device or b.throttle_read_iops_device
                 or b.throttle_write_iops_device)
        if not wants:
            return
        d = self._need("blkio", "block I/O limits")
        fs = self.fs
        if fs.exists(os.path.join(d, "blkio.weight")):
            weight_file, device_file = "blkio.weight", "blkio.weight_device"
        elif fs.exists(os.path.join(d, "blkio.bfq.weight")):
            weight_file, device_file = "blkio.bfq.weight", "blkio.bfq.weight_device"
        else:
            weight_file = device_file = ""
        if (b.weight or any(wd.weight for wd in b.weight_device)) and not weight_file:
            raise NotSupported(f"cannot set block I/O weight: neither blkio.weight nor "
                               f"blkio.bfq.weight exists in {d} (no CFQ or BFQ I/O scheduler)")
        if b.weight:
            write(fs, d, weight_file, str(b.weight), "block I/O weight")
        if b.leaf_weight:
            write(fs, d, "blkio.leaf_weight", str(b.leaf_weight), "block I/O leaf weight")
        for wd in b.weight_device:
            if wd.weight:
                write(fs, d, device_file, f"{wd.major}:{wd.minor} {wd.weight}",
                      "block I/O device weight")
            if wd.leaf_weight:
                write(fs, d, "blkio.leaf_weight_device",
                      f"{wd.major}:{wd.minor} {wd.leaf_weight}", "block I/O device leaf weight")
        for devs, name, what in (
                (b.throttle_read_bps_device, "read_bps_device", "read bps"),
                (b.throttle_write_bps_device, "write_bps_device", "write bps"),
                (b.throttle_read_iops_device, "read_iops_device", "read iops"),
                (b.throttle_write_iops_device, "write_iops_device", "write iops")):
            for td in devs:
                write(fs, d, f"blkio.throttle.{name}", f"{td.major}:{td.minor} {td.rate}",
                      f"block I/O {what} limit")

    def _set_hugetlb(self, r: Resources) -> None:
        if not r.hugepage_limits:
            return
        d = self._need("hugetlb", "hugepage limits")
        skip_rsvd = False
        for h in r.hugepage_limits:
            prefix = f"hugetlb.{h.page_size}"
            write(self.fs, d, f"{prefix}.limit_in_bytes", str(h.limit),
                  f"hugepage {h.page_size} limit")
            if skip_rsvd:
                continue
            try:
                self.fs.write(os.path.join(d, f"{prefix}.rsvd.limit_in_bytes"), str(h.limit))
            except FileNotFoundError:
                skip_rsvd = True    # kernels before 5.7 have no reservation limits
            except OSError as exc:
                raise write_error(exc, self.fs, d, f"{prefix}.rsvd.limit_in_bytes",
                                  str(h.limit), f"hugepage {h.page_size} limit") from exc

    def _set_network(self, r: Resources) -> None:
        n = r.network
        if n is None:
            return
        if n.class_id:
            write(self.fs, self._need("net_cls", "network class id"), "net_cls.classid",
                  str(n.class_id), "network class id")
        for p in n.priorities:
            write(self.fs, self._need("net_prio", "network priorities"), "net_prio.ifpriomap",
                  f"{p.name} {p.priority}", "network interface priority")

    # -- freezer ------------------------------------------------------------------------
    def _can_freeze(self) -> bool:
        d = self._dir("freezer")
        return d is not None and self.fs.isdir(d)

    def freeze(self) -> None:
        d = self._dir("freezer")
        if d is None:
            raise NotSupported("cannot freeze: the freezer cgroup controller is not mounted")
        fs = self.fs
        try:
            for i in range(1000):
                if i % 50 == 49:
                    # A task stuck in FREEZING sometimes needs a thaw to move on.
                    write(fs, d, "freezer.state", "THAWED", "freezer state")
                    self.sleep(0.01)
                write(fs, d, "freezer.state", "FROZEN", "freezer state")
                if i % 25 == 24:
                    self.sleep(0.00001)
                state = (read_opt(fs, d, "freezer.state") or "").strip()
                if state == "FROZEN":
                    return
                if state != "FREEZING":
                    raise System(f"unexpected freezer state {state!r} while freezing {d}")
            raise System(f"unable to freeze cgroup {d}")
        except BaseException:
            try:
                write(fs, d, "freezer.state", "THAWED", "freezer state")
            except Exception:   # noqa: BLE001 - the first error is the one to report
                pass
            raise

    def thaw(self) -> None:
        d = self._dir("freezer")
        if d is None or not self.fs.isdir(d):
            return
        write(self.fs, d, "freezer.state", "THAWED", "freezer state")

    def frozen(self) -> bool:
        d = self._dir("freezer")
        if d is None:
            return False
        deadline = self._deadline()
        while True:
            state = (read_opt(self.fs, d, "freezer.state") or "").strip()
            if state == "FREEZING" and time.monotonic() < deadline:
                self.sleep(0.001)
                continue
            if state != "FROZEN":
                return False
            # FROZEN because a parent is frozen is not this cgroup's own pause.
            own = read_opt(self.fs, d, "freezer.self_freezing")
            return own is None or own.strip() != "0"

    # -- accounting ---------------------------------------------------------------------
    def oom_kill_count(self) -> int:
        d = self._dir("memory")
        if d is None:
            return 0
        return read_keyed(self.fs, d, "memory.oom_control").get("oom_kill", 0)

    def stats(self) -> st.Stats:
        if not self.exists():
            raise NotFound(f"cannot read stats: cgroup {self.path} does not exist")
        s = st.Stats()
        fs = self.fs
        if (d := self._existing("cpu")) is not None:
            t = read_keyed(fs, d, "cpu.stat")
            s.cpu.throttling = st.Throttling(t.get("nr_periods", 0), t.get("nr_throttled", 0),
                                             t.get("throttled_time", 0))
        if (d := self._existing("cpuacct")) is not None:
            s.cpu.usage = _cpuacct(fs, d)
        if (d := self._existing("cpuset")) is not None:
            s.cpuset = _cpuset_stats(fs, d)
        if (d := self._existing("memory")) is not None:
            s.memory = _memory_v1(fs, d)
        if (d := self._existing("pids")) is not None:
            limit = read_uint(fs, d, "pids.max")
            s.pids = st.Pids(read_uint(fs, d, "pids.current"), 0 if limit == MAX_U64 else limit)
        if (d := self._existing("blkio")) is not None:
            s.blkio = _blkio_v1(fs, d)
        if (d := self._existing("hugetlb")) is not None:
            s.hugetlb = _hugetlb_v1(fs, d)
        return s

    def _existing(self, ctrl: str) -> str | None:
        d = self._dir(ctrl)
        return d if d is not None and self.fs.isdir(d) else None


# -- stats readers ---------------------------------------------------------------------

_NS_PER_TICK = 1_000_000_000 // 100     # cpuacct.stat counts USER_HZ (100) ticks


def _numbers(text: str | None) -> list[int]:
    return [int(x) for x in (text or "").split() if x.lstrip("-").isdigit()]


def _cpuacct(fs: CgroupFS, d: str) -> st.CpuUsage:
    u = st.CpuUsage()
    u.total = read_uint(fs, d, "cpuacct.usage")
    u.percpu = _numbers(read_opt(fs, d, "cpuacct.usage_percpu"))
    text = read_opt(fs, d, "cpuacct.usage_all")
    if text:
        lines = text.splitlines()
        if lines and lines[0].startswith("cpu user system"):
            for line in lines[1:]:
                f = line.split()
                if len(f) >= 3:
                    u.percpu_user.append(int(f[1]))
                    u.percpu_kernel.append(int(f[2]))
    ticks = read_keyed(fs, d, "cpuacct.stat")
    u.user = ticks.get("user", 0) * _NS_PER_TICK
    u.kernel = ticks.get("system", 0) * _NS_PER_TICK
    return u


def parse_cpu_list(text: str) -> list[int]:
    """"0-2,4" -> [0, 1, 2, 4]"""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            return []
    return out


def _cpuset_stats(fs: CgroupFS, d: str) -> st.CpuSet:
    prefix = "cpuset." if fs.exists(os.path.join(d, "cpuset.cpus")) else ""

    def num(name: str, default: int = 0) -> int:
        text = read_opt(fs, d, prefix + name)
        try:
            return int(text.strip()) if text is not None else default
        except ValueError:
            return default

    return st.CpuSet(
        cpus=parse_cpu_list(read_opt(fs, d, prefix + "cpus") or ""),
        cpu_exclusive=num("cpu_exclusive"),
        mems=parse_cpu_list(read_opt(fs, d, prefix + "mems") or ""),
        mem_hardwall=num("mem_hardwall"), mem_exclusive=num("mem_exclusive"),
        memory_migrate=num("memory_migrate"), memory_spread_page=num("memory_spread_page"),
        memory_spread_slab=num("memory_spread_slab"), memory_pressure=num("memory_pressure"),
        sched_load_balance=num("sched_load_balance"),
        sched_relax_domain_level=num("sched_relax_domain_level"))


def _memory_entry_v1(fs: CgroupFS, d: str, module: str) -> st.MemoryEntry | None:
    if read_opt(fs, d, f"{module}.usage_in_bytes") is None:
        return None
    return st.MemoryEntry(limit=read_uint(fs, d, f"{module}.limit_in_bytes"),
                          usage=read_uint(fs, d, f"{module}.usage_in_bytes"),
                          max=read_uint(fs, d, f"{module}.max_usage_in_bytes"),
                          failcnt=read_uint(fs, d, f"{module}.failcnt"))


def _memory_v1(fs: CgroupFS, d: str) -> st.Memory:
    m = st.Memory()
    m.raw = parse_keyed(read_opt(fs, d, "memory.stat") or "")
    m.cache = m.raw.get("cache", 0)
    m.usage = _memory_entry_v1(fs, d, "memory") or st.MemoryEntry()
    m.swap = _memory_entry_v1(fs, d, "memory.memsw") or st.MemoryEntry()
    m.kernel = _memory_entry_v1(fs, d, "memory.kmem") or st.MemoryEntry()
    m.kernel_tcp = _memory_entry_v1(fs, d, "memory.kmem.tcp") or st.MemoryEntry()
    return m


def parse_blkio(text: str) -> list[st.BlkioEntry]:
    """blkio.* stat files: "8:0 Read 1282048", "8:0 6792"; "Total N" lines skipped."""
    out = []
    for line in text.splitlines():
        f = line.replace(":", " ").split()
        if len(f) < 3:
            continue
        try:
            if len(f) == 4:
                out.append(st.BlkioEntry(int(f[0]), int(f[1]), f[2], int(f[3])))
            else:
                out.append(st.BlkioEntry(int(f[0]), int(f[1]), "", int(f[2])))
        except ValueError:
            continue
    return out


# runc's order: the first group whose first file has entries is the one reported.
_BLKIO_GROUPS: list[list[tuple[str, str]]] = [
    [("blkio.bfq.sectors_recursive", "sectors_recursive"),
     ("blkio.bfq.io_service_time_recursive", "io_service_time_recursive"),
     ("blkio.bfq.io_wait_time_recursive", "io_wait_time_recursive"),
     ("blkio.bfq.io_merged_recursive", "io_merged_recursive"),
     ("blkio.bfq.io_queued_recursive", "io_queued_recursive"),
     ("blkio.bfq.time_recursive", "io_time_recursive"),
     ("blkio.bfq.io_serviced_recursive", "io_serviced_recursive"),
     ("blkio.bfq.io_service_bytes_recursive", "io_service_bytes_recursive")],
    [("blkio.bfq.io_serviced_recursive", "io_serviced_recursive"),
     ("blkio.bfq.io_service_bytes_recursive", "io_service_bytes_recursive")],
    [("blkio.sectors_recursive", "sectors_recursive"),
     ("blkio.io_service_time_recursive", "io_service_time_recursive"),
     ("blkio.io_wait_time_recursive", "io_wait_time_recursive"),
     ("blkio.io_merged_recursive", "io_merged_recursive"),
     ("blkio.io_queued_recursive", "io_queued_recursive"),
     ("blkio.time_recursive", "io_time_recursive"),
     ("blkio.io_serviced_recursive", "io_serviced_recursive"),
     ("blkio.io_service_bytes_recursive", "io_service_bytes_recursive")],
    [("blkio.throttle.io_serviced_recursive", "io_serviced_recursive"),
     ("blkio.throttle.io_service_bytes_recursive", "io_service_bytes_recursive")],
    [("blkio.throttle.io_serviced", "io_serviced_recursive"),
     ("blkio.throttle.io_service_bytes", "io_service_bytes_recursive")],
]


def _blkio_v1(fs: CgroupFS, d: str) -> st.Blkio:
    b = st.Blkio()
    for group in _BLKIO_GROUPS:
        first = parse_blkio(read_opt(fs, d, group[0][0]) or "")
        if not first:
            continue
        setattr(b, group[0][1], first)
        for name, attr in group[1:]:
            setattr(b, attr, parse_blkio(read_opt(fs, d, name) or ""))
        break
    return b


def hugepage_sizes(fs: CgroupFS, d: str, suffix: str) -> list[str]:
    """The page sizes a hugetlb cgroup has files for ("2MB", "1GB")."""
    sizes: list[str] = []
    try:
        names = fs.listdir(d)
    except OSError:
        return sizes
    for name in sorted(names):
        if name.startswith("hugetlb.") and name.endswith(suffix):
            size = name[len("hugetlb."):-len(suffix)]
            if "." not in size:
                sizes.append(size)
    return sizes


def _hugetlb_v1(fs: CgroupFS, d: str) -> dict[str, st.Hugetlb]:
    out = {}
    for size in hugepage_sizes(fs, d, ".limit_in_bytes"):
        prefix = f"hugetlb.{size}"
        if read_opt(fs, d, f"{prefix}.rsvd.usage_in_bytes") is not None:
            prefix += ".rsvd"
        out[size] = st.Hugetlb(usage=read_uint(fs, d, f"{prefix}.usage_in_bytes"),
                               max=read_uint(fs, d, f"{prefix}.max_usage_in_bytes"),
                               failcnt=read_uint(fs, d, f"{prefix}.failcnt"))
    return out
