"""cgroup v2: one directory in the unified hierarchy.

    mgr = V2Manager("/ketch/abc", dir_path="/sys/fs/cgroup/ketch/abc", base="/sys/fs/cgroup")
    mgr.create()        # mkdir; controllers enabled in every ancestor's subtree_control
    mgr.set(resources)  # memory.max, cpu.max, io.max, ... and an eBPF device filter
    mgr.apply(pid); mgr.freeze(); mgr.stats(); mgr.destroy()

The v1-style values of the OCI spec are converted as runc converts them: cpu
shares to cpu.weight, blkio weight to io.weight, memory+swap to memory.swap.max
(swap - limit); -1 is "max". Things v2 has no file for (realtime cpu, memory
swappiness, disabling the OOM killer, blkio leaf weights) raise NotSupported
when asked for; the kernel memory limits, which both the kernel and runc
ignore, are ignored.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ketch.errors import InvalidArgument, KetchError, NotFound, NotSupported, System
from ketch.lazy import LazyModule
from ketch.linux.cgroups._base import BaseManager, rdma_lines
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
from ketch.linux.cgroups._v1 import hugepage_sizes
from ketch.linux.cgroups.resources import Resources

if TYPE_CHECKING:
    from ketch.linux.cgroups import _stats as st
else:
    st = LazyModule("ketch.linux.cgroups._stats")


def cpu_shares_to_weight(shares: int) -> int:
    """runc's mapping of v1 cpu.shares [2, 262144] onto cpu.weight [1, 10000]: a
    quadratic in log2(shares) through (2, 1), (1024, 100) and (262144, 10000)."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10 ** exponent))


def blkio_weight_to_io_weight(weight: int) -> int:
    """runc's linear map of blkio weight [10, 1000] onto io.weight [1, 10000]."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def memory_swap_to_v2(swap: int, limit: int) -> int:
    """OCI's memory+swap total to memory.swap.max (swap alone), as runc computes it.
    0 means "leave alone", -1 "max"."""
    if limit == -1 and swap == 0:
        return -1       # unlimited memory without a swap value: unlimited swap too
    if swap in (-1, 0):
        return swap
    if limit == -1:
        return swap
    if limit == 0:
        raise InvalidArgument("unable to set swap limit without memory limit")
    if limit < 0:
        raise InvalidArgument(f"invalid memory value: {limit}")
    if swap < limit:
        raise InvalidArgument("memory+swap limit should be >= memory limit")
    return swap - limit


def _num(value: int) -> str:
    return "max" if value == -1 else str(value)


class V2Manager(BaseManager):
    def __init__(self, path: str, *, dir_path: str, base: str, fs: CgroupFS,
                 controllers: Collection[str] | None = None, freeze_timeout: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(path, fs, freeze_timeout, sleep)
        self.dir = os.path.normpath(dir_path)
        self.base = os.path.normpath(base)
        # None: every controller the hierarchy offers, as runc enables them.
        self.controllers = None if controllers is None else list(controllers)

    def paths(self) -> dict[str, str]:
        return {"": self.dir}

    def dirs(self) -> list[str]:
        return [self.dir]

    # -- lifecycle --------------------------------------------------------------------
    def create(self) -> None:
        rel = os.path.relpath(self.dir, self.base)
        if rel.startswith(".."):
            raise InvalidArgument(f"cgroup {self.dir} is outside the hierarchy {self.base}")
        levels = [self.base]
        for part in rel.split(os.sep) if rel != "." else []:
            levels.append(os.path.join(levels[-1], part))
        for i, level in enumerate(levels):
            if i > 0:
                mkdir_p(self.fs, levels[i - 1], level)
            if i < len(levels) - 1:
                self._enable(level)

    def _enable(self, d: str) -> None:
        """Make the controllers available to ``d``'s children. A controller the
        kernel refuses here is left out: setting a limit of it later fails with
        a message naming the controller."""
        available = (read_opt(self.fs, d, "cgroup.controllers") or "").split()
        enabled = set((read_opt(self.fs, d, "cgroup.subtree_control") or "").split())
        wanted = available if self.controllers is None else \
            [c for c in self.controllers if c in available]
        missing = [c for c in wanted if c not in enabled]
        if not missing:
            return
        path = os.path.join(d, "cgroup.subtree_control")
        try:
            self.fs.write(path, " ".join("+" + c for c in missing))
        except OSError:
            for c in missing:
                try:
                    self.fs.write(path, "+" + c)
                except OSError:
                    continue

    def apply(self, pid: int) -> None:
        write_pid(self.fs, self.dir, pid)

    # -- limits -----------------------------------------------------------------------
    def set(self, resources: Resources) -> None:
        r = resources
        self._check(r)
        from ketch.linux.cgroups._ebpf import compile_rules
        program = compile_rules(r.devices) if r.devices else None
        self._set_pids(r)
        self._set_memory(r)
        self._set_io(r)
        self._set_cpu(r)
        if program is not None:
            self.fs.replace_device_program(self.dir, program)
        self._set_cpuset(r)
        self._set_hugetlb(r)
        for line in rdma_lines(r):
            self._write("rdma.max", line, "rdma limit")
        self._set_unified(r.unified)

    def _check(self, r: Resources) -> None:
        """Refuse what v2 cannot do before anything is written."""
        m, c, b = r.memory, r.cpu, r.block_io
        if m is not None:
            if m.swappiness is not None and m.swappiness != -1:
                raise NotSupported("memory swappiness is not supported on cgroup v2 "
                                   f"(asked for {m.swappiness})")
            if m.disable_oom_killer:
                raise NotSupported("disabling the OOM killer is not supported on cgroup v2")
        if c is not None and (c.realtime_period or c.realtime_runtime):
            raise NotSupported("realtime CPU scheduling (cpu.rt_period_us, cpu.rt_runtime_us) "
                               "is not supported on cgroup v2")
        if b is not None and (b.leaf_weight or any(wd.leaf_weight for wd in b.weight_device)):
            raise NotSupported("block I/O leaf weights are not supported on cgroup v2")
        if r.network is not None and (r.network.class_id or r.network.priorities):
            raise NotSupported("network class id and interface priorities (net_cls, net_prio) "
                               "are not supported on cgroup v2")
        for k in r.unified:
            if "/" in k or k in ("", ".", ".."):
                raise InvalidArgument(f"unified resource {k!r} must be a file name (no slashes)")

    def _write(self, name: str, value: str, what: str) -> None:
        """Write in the cgroup; a missing file is explained by its controller."""
        try:
            self.fs.write(os.path.join(self.dir, name), value)
        except OSError as exc:
            err = write_error(exc, self.fs, self.dir, name, value, what)
            if isinstance(err, NotSupported):
                ctrl = name.split(".", 1)[0]
                have = (read_opt(self.fs, self.dir, "cgroup.controllers") or "").split()
                if ctrl not in have and ctrl != "cgroup":
                    err = NotSupported(f"cannot set {what}: the cgroup v2 {ctrl} controller "
                                       f"is not available in {self.dir}")
            raise err from exc

    def _exists(self, name: str) -> bool:
        return self.fs.exists(os.path.join(self.dir, name))

    def _set_pids(self, r: Resources) -> None:
        if r.pids is not None:
            limit = r.pids.limit
            self._write("pids.max", str(limit) if limit > 0 else "max", "pids limit")

    def _set_memory(self, r: Resources) -> None:
        m = r.memory
        if m is None:
            return
        limit, swap, reservation = m.limit or 0, m.swap or 0, m.reservation or 0
        if not (limit or swap or reservation):
            return
        if m.check_before_update and (limit > 0 or swap > 0):
            usage = read_uint(self.fs, self.dir, "memory.current")
            if 0 < swap <= usage:
                raise InvalidArgument(f"rejecting memory+swap limit {swap} <= usage {usage}")
            if 0 < limit <= usage:
                raise InvalidArgument(f"rejecting memory limit {limit} <= usage {usage}")
        swap2 = memory_swap_to_v2(swap, limit)
        swap_str = _num(swap2) if swap2 else ("0" if swap > 0 else "")
        if swap_str:
            if self._exists("memory.swap.max"):
                self._write("memory.swap.max", swap_str, "memory swap limit")
            elif swap_str not in ("max", "0"):
                raise NotSupported(f"cannot set memory swap limit {swap_str}: "
                                   f"{self.dir}/memory.swap.max does not exist "
                                   "(swap accounting is disabled on this host)")
        if limit:
            self._write("memory.max", _num(limit), "memory limit")
        if reservation:
            self._write("memory.low", _num(reservation), "memory reservation")

    def _set_cpu(self, r: Resources) -> None:
        c = r.cpu
        if c is None:
            return
        if c.idle is not None:
            self._write("cpu.idle", str(c.idle), "cpu idle")
        if c.shares:
            self._write("cpu.weight", str(cpu_shares_to_weight(c.shares)), "cpu weight")
        burst_left = None
        if c.burst is not None:
            try:
                self.fs.write(os.path.join(self.dir, "cpu.max.burst"), str(c.burst))
            except OSError as exc:
                if exc.errno == errno.EINVAL and c.quota:
                    burst_left = c.burst
                else:
                    self._write("cpu.max.burst", str(c.burst), "cpu burst")
        if c.quota or c.period:
            cur = (read_opt(self.fs, self.dir, "cpu.max") or "max 100000").split()
            cur_quota = cur[0] if cur else "max"
            cur_period = cur[1] if len(cur) > 1 else "100000"
            # An unset quota keeps the current one (runc would reset it to max).
            quota = cur_quota if not c.quota else ("max" if c.quota < 0 else str(c.quota))
            period = str(c.period) if c.period else cur_period
            self._write("cpu.max", f"{quota} {period}", "cpu quota and period")
            if burst_left is not None:
                self._write("cpu.max.burst", str(burst_left), "cpu burst")

    def _set_cpuset(self, r: Resources) -> None:
        c = r.cpu
        if c is None:
            return
        if c.cpus:
            self._write("cpuset.cpus", c.cpus, "cpuset cpus")
        if c.mems:
            self._write("cpuset.mems", c.mems, "cpuset mems")

    def _set_io(self, r: Resources) -> None:
        b = r.block_io
        if b is None:
            return
        weighted = [wd for wd in b.weight_device if wd.weight]
        if b.weight or weighted:
            bfq = read_opt(self.fs, self.dir, "io.bfq.weight")
            has_io_weight = self._exists("io.weight")
            if bfq is None and not has_io_weight:
                raise NotSupported(f"cannot set block I/O weight: neither io.weight nor "
                                   f"io.bfq.weight exists in {self.dir} (is the io controller "
                                   "enabled, with a weight-aware I/O scheduler?)")
            if b.weight:
                if bfq is not None:
                    self._write("io.bfq.weight", str(b.weight), "block I/O weight")
                else:
                    self._write("io.weight", str(blkio_weight_to_io_weight(b.weight)),
                                "block I/O weight")
            # io.bfq.weight takes per-device lines when it shows "default N".
            bfq_devices = bfq is not None and not bfq.strip().isdigit()
            for wd in weighted:
                assert wd.weight is not None
                if bfq_devices:
                    self._write("io.bfq.weight", f"{wd.major}:{wd.minor} {wd.weight}",
                                "block I/O device weight")
                elif has_io_weight:
                    self._write("io.weight", f"{wd.major}:{wd.minor} "
                                f"{blkio_weight_to_io_weight(wd.weight)}",
                                "block I/O device weight")
                else:
                    raise NotSupported("cannot set block I/O device weight: no io.weight in "
                                       f"{self.dir} and io.bfq.weight takes no device weights")
        # io.max takes every limit of a device in one line.
        limits: dict[tuple[int, int], list[str]] = {}
        for devs, key in ((b.throttle_read_bps_device, "rbps"),
                          (b.throttle_write_bps_device, "wbps"),
                          (b.throttle_read_iops_device, "riops"),
                          (b.throttle_write_iops_device, "wiops")):
            for td in devs:
                limits.setdefault((td.major, td.minor), []).append(
                    f"{key}={td.rate if td.rate > 0 else 'max'}")
        for (major, minor), parts in limits.items():
            self._write("io.max", f"{major}:{minor} " + " ".join(parts), "block I/O limit")

    def _set_hugetlb(self, r: Resources) -> None:
        skip_rsvd = False
        for h in r.hugepage_limits:
            prefix = f"hugetlb.{h.page_size}"
            self._write(f"{prefix}.max", str(h.limit), f"hugepage {h.page_size} limit")
            if skip_rsvd:
                continue
            try:
                self.fs.write(os.path.join(self.dir, f"{prefix}.rsvd.max"), str(h.limit))
            except FileNotFoundError:
                skip_rsvd = True
            except OSError as exc:
                raise write_error(exc, self.fs, self.dir, f"{prefix}.rsvd.max", str(h.limit),
                                  f"hugepage {h.page_size} limit") from exc

    def _set_unified(self, unified: dict[str, str]) -> None:
        for key, value in unified.items():
            if "." not in key:
                raise InvalidArgument(f"unified resource {key!r} must be in the form "
                                      "CONTROLLER.PARAMETER")
            # Multi-line values (io.max for several devices) are one write each.
            lines = [ln for ln in value.split("\n") if ln] or [value]
            for line in lines:
                self._write(key, line, f"unified resource {key!r}")

    # -- freezer ------------------------------------------------------------------------
    def _can_freeze(self) -> bool:
        return self._exists("cgroup.freeze")

    def freeze(self) -> None:
        if not self._exists("cgroup.freeze"):
            if not self.fs.isdir(self.dir):
                raise NotFound(f"cannot freeze: cgroup {self.dir} does not exist")
            raise NotSupported(f"cannot freeze: {self.dir}/cgroup.freeze does not exist "
                               "(the kernel has no cgroup v2 freezer; 5.2 or later needed)")
        write(self.fs, self.dir, "cgroup.freeze", "1", "freezer state")
        try:
            self._wait_frozen()
        except KetchError:
            try:
                write(self.fs, self.dir, "cgroup.freeze", "0", "freezer state")
            except KetchError:
                pass
            raise

    def _wait_frozen(self) -> None:
        """Writing cgroup.freeze only asks; cgroup.events says when it is done."""
        deadline = self._deadline()
        while True:
            events = read_keyed(self.fs, self.dir, "cgroup.events")
            if events.get("frozen") == 1:
                return
            if time.monotonic() >= deadline:
                raise System(f"timeout after {self.freeze_timeout:g}s waiting for cgroup "
                             f"{self.dir} to freeze")
            self.sleep(0.001)

    def thaw(self) -> None:
        if self._exists("cgroup.freeze"):
            write(self.fs, self.dir, "cgroup.freeze", "0", "freezer state")

    def frozen(self) -> bool:
        text = read_opt(self.fs, self.dir, "cgroup.freeze")
        return text is not None and text.strip() == "1"

    def _kill_fast(self, sig: int) -> bool:
        """cgroup.kill (5.14+) SIGKILLs the whole tree atomically, forks included."""
        if sig != signal.SIGKILL or not self._exists("cgroup.kill"):
            return False
        write(self.fs, self.dir, "cgroup.kill", "1", "cgroup kill")
        return True

    # -- accounting ---------------------------------------------------------------------
    def oom_kill_count(self) -> int:
        return read_keyed(self.fs, self.dir, "memory.events").get("oom_kill", 0)

    def stats(self) -> st.Stats:
        s = st.Stats()
        fs, d = self.fs, self.dir
        if not fs.isdir(d):
            raise NotFound(f"cannot read stats: cgroup {d} does not exist")
        # pids
        current = read_opt(fs, d, "pids.current")
        if current is not None:
            limit = read_uint(fs, d, "pids.max")
            s.pids = st.Pids(read_uint(fs, d, "pids.current"), 0 if limit == MAX_U64 else limit)
        else:
            procs = read_opt(fs, d, "cgroup.procs") or ""
            s.pids = st.Pids(len(procs.split()), 0)
        # memory
        if read_opt(fs, d, "memory.current") is not None:
            m = st.Memory()
            m.raw = parse_keyed(read_opt(fs, d, "memory.stat") or "")
            m.cache = m.raw.get("file", 0)
            m.usage = st.MemoryEntry(limit=read_uint(fs, d, "memory.max", MAX_U64),
                                     usage=read_uint(fs, d, "memory.current"),
                                     max=read_uint(fs, d, "memory.peak"))
            swap = st.MemoryEntry()
            if read_opt(fs, d, "memory.swap.current") is not None:
                swap_only = read_uint(fs, d, "memory.swap.current")
                swap_limit = read_uint(fs, d, "memory.swap.max", MAX_U64)
                swap.usage = swap_only + m.usage.usage
                swap.limit = swap_limit if swap_limit == MAX_U64 else \
                    min(swap_limit + m.usage.limit, MAX_U64)
            m.swap = swap
            s.memory = m
        # io
        s.blkio = parse_io_stat(read_opt(fs, d, "io.stat") or "")
        # cpu (cpu.stat exists without the controller)
        t = read_keyed(fs, d, "cpu.stat")
        s.cpu.usage.total = t.get("usage_usec", 0) * 1000
        s.cpu.usage.user = t.get("user_usec", 0) * 1000
        s.cpu.usage.kernel = t.get("system_usec", 0) * 1000
        s.cpu.throttling = st.Throttling(t.get("nr_periods", 0), t.get("nr_throttled", 0),
                                         t.get("throttled_usec", 0) * 1000)
        # hugetlb
        for size in hugepage_sizes(fs, d, ".max"):
            prefix = f"hugetlb.{size}"
            usage_file = f"{prefix}.rsvd.current" if read_opt(fs, d, f"{prefix}.rsvd.current") \
                is not None else f"{prefix}.current"
            s.hugetlb[size] = st.Hugetlb(
                usage=read_uint(fs, d, usage_file),
                failcnt=read_keyed(fs, d, f"{prefix}.events").get("max", 0))
        return s


_IO_OPS = {"rbytes": ("Read", "io_service_bytes_recursive"),
           "wbytes": ("Write", "io_service_bytes_recursive"),
           "rios": ("Read", "io_serviced_recursive"),
           "wios": ("Write", "io_serviced_recursive")}


def parse_io_stat(text: str) -> st.Blkio:
    """io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0") in runc's shape."""
    b = st.Blkio()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        major, _, minor = fields[0].partition(":")
        try:
            dev = (int(major), int(minor))
        except ValueError:
            continue
        for item in fields[1:]:
            key, _, value = item.partition("=")
            if key not in _IO_OPS:
                continue
            op, attr = _IO_OPS[key]
            try:
                getattr(b, attr).append(st.BlkioEntry(dev[0], dev[1], op, int(value)))
            except ValueError:
                continue
    return b
