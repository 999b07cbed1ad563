"""A cgroupfs in a temporary directory, for tests without root.

    tree = FakeCgroupTree(tmp_path, Mode.HYBRID)      # or Mode.V1 / Mode.V2
    mgr = tree.manager("/ketch/abc")                  # new_manager on the fake
    mgr.create()                                      # dirs appear with control files
    mgr.set(Resources(memory=Memory(limit=1 << 20)))
    tree.read(tree.dir("memory", "/ketch/abc"), "memory.limit_in_bytes")  # "1048576"
    tree.fs.written("memory.limit_in_bytes")          # [(dir, "1048576")]

The tree holds what a kernel's cgroupfs shows: a mountinfo file naming the
hierarchies at their usual /sys/fs/cgroup places (``tree.root`` stands in for
/sys/fs/cgroup), a /proc/self/cgroup file, and per-hierarchy control files
with the kernel's default values. ``FakeCgroupFS`` plays the kernel's part:

* mkdir fills a new cgroup with its hierarchy's control files (v2: those of
  the controllers the parent's cgroup.subtree_control enables);
* rmdir refuses (EBUSY) a cgroup with children or processes, then removes it;
* cgroup.procs moves a pid from wherever it was in that hierarchy;
* cgroup.subtree_control enables controllers for children (EBUSY for a
  cgroup with processes, ENOENT for a controller it does not have);
* memory and memsw limits refuse to cross (EINVAL), cpu.shares is clamped,
  devices.allow/deny keep devices.list, cgroup.freeze updates cgroup.events
  (unless ``auto_freeze`` is off), freezer.state takes FROZEN/THAWED;
* every write is recorded in ``writes``; signals in ``killed``; device
  programs in ``programs``; ``fail(name, errno)`` makes the next write to a
  file of that name (or "mkdir"/"rmdir") fail.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from ketch.linux.cgroups._detect import Mode
from ketch.linux.cgroups._ebpf import DeviceProgram
from ketch.linux.cgroups._fs import CgroupFS

V1_UNLIMITED = "9223372036854771712"

# Hierarchy directory name -> controllers, as most distributions mount them.
COMBINED_LAYOUT: dict[str, list[str]] = {
    "cpu,cpuacct": ["cpu", "cpuacct"],
    "cpuset": ["cpuset"],
    "memory": ["memory"],
    "devices": ["devices"],
    "freezer": ["freezer"],
    "blkio": ["blkio"],
    "pids": ["pids"],
    "hugetlb": ["hugetlb"],
    "net_cls,net_prio": ["net_cls", "net_prio"],
    "perf_event": ["perf_event"],
    "systemd": ["name=systemd"],
}

# cpu and cpuacct as two mounts, and no hugetlb hierarchy: hosts like the CI machine.
SEPARATE_LAYOUT: dict[str, list[str]] = {
    "cpu": ["cpu"], "cpuacct": ["cpuacct"], "cpuset": ["cpuset"], "memory": ["memory"],
    "devices": ["devices"], "freezer": ["freezer"], "blkio": ["blkio"], "pids": ["pids"],
    "systemd": ["name=systemd"],
}

V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
HUGEPAGE_SIZES = ("2MB", "1GB")


def _v1_files(ctrl: str, is_root: bool, opts: FakeOptions) -> dict[str, str]:
    if ctrl == "cpu":
        return {"cpu.shares": "1024", "cpu.cfs_period_us": "100000",
                "cpu.cfs_quota_us": "-1", "cpu.cfs_burst_us": "0",
                "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "950000" if is_root else "0",
                "cpu.idle": "0",
                "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"}
    if ctrl == "cpuacct":
        return {"cpuacct.usage": "0", "cpuacct.usage_percpu": "0 0 \n",
                "cpuacct.usage_all": "cpu user system\n0 0 0\n1 0 0\n",
                "cpuacct.stat": "user 0\nsystem 0\n"}
    if ctrl == "cpuset":
        return {"cpuset.cpus": opts.cpus if is_root else "",
                "cpuset.mems": opts.mems if is_root else "",
                "cpuset.effective_cpus": opts.cpus, "cpuset.effective_mems": opts.mems,
                "cpuset.cpu_exclusive": "1" if is_root else "0",
                "cpuset.mem_exclusive": "1" if is_root else "0",
                "cpuset.mem_hardwall": "0", "cpuset.memory_migrate": "0",
                "cpuset.memory_pressure": "0", "cpuset.memory_spread_page": "0",
                "cpuset.memory_spread_slab": "0", "cpuset.sched_load_balance": "1",
                "cpuset.sched_relax_domain_level": "-1"}
    if ctrl == "memory":
        files = {"memory.limit_in_bytes": V1_UNLIMITED, "memory.soft_limit_in_bytes": V1_UNLIMITED,
                 "memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0",
                 "memory.failcnt": "0", "memory.swappiness": "60", "memory.use_hierarchy": "1",
                 "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                 "memory.stat": "cache 0\nrss 0\nmapped_file 0\nswap 0\n",
                 "memory.kmem.limit_in_bytes": V1_UNLIMITED, "memory.kmem.usage_in_bytes": "0",
                 "memory.kmem.max_usage_in_bytes": "0", "memory.kmem.failcnt": "0",
                 "memory.kmem.tcp.limit_in_bytes": V1_UNLIMITED,
                 "memory.kmem.tcp.usage_in_bytes": "0",
                 "memory.kmem.tcp.max_usage_in_bytes": "0", "memory.kmem.tcp.failcnt": "0"}
        if opts.swap_accounting:
            files.update({"memory.memsw.limit_in_bytes": V1_UNLIMITED,
                          "memory.memsw.usage_in_bytes": "0",
                          "memory.memsw.max_usage_in_bytes": "0", "memory.memsw.failcnt": "0"})
        return files
    if ctrl == "devices":
        return {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"}
    if ctrl == "freezer":
        if is_root:
            return {}
        return {"freezer.state": "THAWED\n", "freezer.self_freezing": "0\n",
                "freezer.parent_freezing": "0\n"}
    if ctrl == "blkio":
        files = {"blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
                 "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": "",
                 "blkio.throttle.io_serviced": "Total 0\n",
                 "blkio.throttle.io_service_bytes": "Total 0\n",
                 "blkio.throttle.io_serviced_recursive": "Total 0\n",
                 "blkio.throttle.io_service_bytes_recursive": "Total 0\n",
                 "blkio.reset_stats": ""}
        if opts.blkio_weight == "cfq":
            files.update({"blkio.weight": "500", "blkio.weight_device": "",
                          "blkio.leaf_weight": "500", "blkio.leaf_weight_device": ""})
        elif opts.blkio_weight == "bfq":
            files.update({"blkio.bfq.weight": "100", "blkio.bfq.weight_device": "",
                          "blkio.bfq.io_serviced_recursive": "Total 0\n",
                          "blkio.bfq.io_service_bytes_recursive": "Total 0\n"})
        return files
    if ctrl == "pids":
        return {} if is_root else {"pids.max": "max", "pids.current": "0"}
    if ctrl == "hugetlb":
        files = {}
        for size in opts.hugepage_sizes:
            for kind in ("", ".rsvd"):
                p = f"hugetlb.{size}{kind}"
                files.update({f"{p}.limit_in_bytes": V1_UNLIMITED, f"{p}.usage_in_bytes": "0",
                              f"{p}.max_usage_in_bytes": "0", f"{p}.failcnt": "0"})
        return files
    if ctrl == "net_cls":
        return {"net_cls.classid": "0"}
    if ctrl == "net_prio":
        return {"net_prio.ifpriomap": "lo 0\n", "net_prio.prioidx": "1"}
    return {}


def _v1_common(is_root: bool) -> dict[str, str]:
    files = {"cgroup.procs": "", "tasks": "", "cgroup.clone_children": "0",
             "notify_on_release": "0"}
    if is_root:
        files.update({"cgroup.sane_behavior": "0", "release_agent": ""})
    return files


def _v2_files(ctrl: str, is_root: bool, opts: FakeOptions) -> dict[str, str]:
    if ctrl == "cpu":
        return {} if is_root else {"cpu.weight": "100", "cpu.weight.nice": "0",
                                   "cpu.max": "max 100000", "cpu.max.burst": "0",
                                   "cpu.idle": "0"}
    if ctrl == "cpuset":
        files = {"cpuset.cpus.effective": opts.cpus, "cpuset.mems.effective": opts.mems}
        if not is_root:
            files.update({"cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpus.partition": "member"})
        return files
    if ctrl == "memory":
        files = {"memory.stat": "anon 0\nfile 0\nkernel 0\nsock 0\nshmem 0\n"}
        if not is_root:
            files.update({"memory.current": "0", "memory.max": "max", "memory.high": "max",
                          "memory.low": "0", "memory.min": "0", "memory.peak": "0",
                          "memory.oom.group": "0",
                          "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
                                           "oom_group_kill 0\n"})
            if opts.swap_accounting:
                files.update({"memory.swap.current": "0", "memory.swap.max": "max",
                              "memory.swap.high": "max", "memory.swap.peak": "0",
                              "memory.swap.events": "high 0\nmax 0\nfail 0\n"})
        return files
    if ctrl == "io":
        files = {"io.stat": ""}
        if not is_root:
            files["io.max"] = ""
            if opts.io_weight in ("io", "both"):
                files["io.weight"] = "default 100\n"
            if opts.io_weight in ("bfq", "both"):
                files["io.bfq.weight"] = "default 100\n"
        return files
    if ctrl == "pids":
        return {} if is_root else {"pids.max": "max", "pids.current": "0",
                                   "pids.events": "max 0\n"}
    if ctrl == "rdma":
        return {} if is_root else {"rdma.max": "", "rdma.current": ""}
    if ctrl == "hugetlb":
        files = {}
        if not is_root:
            for size in opts.hugepage_sizes:
                files.update({f"hugetlb.{size}.max": "max", f"hugetlb.{size}.current": "0",
                              f"hugetlb.{size}.events": "max 0\n",
                              f"hugetlb.{size}.rsvd.max": "max",
                              f"hugetlb.{size}.rsvd.current": "0"})
        return files
    return {}


def _v2_core(is_root: bool, opts: FakeOptions) -> dict[str, str]:
    files = {"cgroup.procs": "", "cgroup.threads": "", "cgroup.subtree_control": "",
             "cgroup.max.depth": "max", "cgroup.max.descendants": "max",
             "cgroup.stat": "nr_descendants 0\nnr_dying_descendants 0\n",
             "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"}
    if not is_root:
        files.update({"cgroup.type": "domain", "cgroup.freeze": "0",
                      "cgroup.events": "populated 0\nfrozen 0\n"})
        if opts.cgroup_kill:
            files["cgroup.kill"] = ""
    return files


class FakeOptions:
    """How the faked host looks; every knob has the common default."""

    def __init__(self, *, layout: Mapping[str, list[str]] | None = None,
                 v2_controllers: Collection[str] = V2_CONTROLLERS,
                 unified_controllers: Collection[str] = (),
                 swap_accounting: bool = True, blkio_weight: str = "cfq",
                 io_weight: str = "io", hugepage_sizes: Collection[str] = HUGEPAGE_SIZES,
                 cpus: str = "0-3", mems: str = "0", cgroup_kill: bool = True,
                 own_cgroup: str = "/", mount_root: str = "/") -> None:
        self.layout = dict(layout or COMBINED_LAYOUT)
        self.v2_controllers = list(v2_controllers)
        self.unified_controllers = list(unified_controllers)
        self.swap_accounting = swap_accounting
        self.blkio_weight = blkio_weight          # "cfq", "bfq" or "none"
        self.io_weight = io_weight                # "io", "bfq", "both" or "none"
        self.hugepage_sizes = list(hugepage_sizes)
        self.cpus, self.mems = cpus, mems
        self.cgroup_kill = cgroup_kill
        self.own_cgroup = own_cgroup              # what /proc/self/cgroup shows
        self.mount_root = mount_root              # mountinfo's root field (in a container)


class FakeCgroupFS(CgroupFS):
    """The kernel's side of a fake tree; see the module docstring."""

    def __init__(self, tree: FakeCgroupTree) -> None:
        self.tree = tree
        self.writes: list[tuple[str, str]] = []
        self.killed: list[tuple[int, int]] = []
        self.programs: dict[str, DeviceProgram] = {}
        self.program_history: list[tuple[str, DeviceProgram]] = []
        self.auto_freeze = True
        self.on_kill: Callable[[int, int], None] | None = None
        self._failures: dict[str, list[int]] = {}

    # -- scripting --------------------------------------------------------------------
    def fail(self, name: str, err: int, times: int = 1) -> None:
        """The next ``times`` writes to a file called ``name`` (or the next
        "mkdir"/"rmdir"/"kill"/"bpf") fail with ``err``."""
        self._failures.setdefault(name, []).extend([err] * times)

    def _maybe_fail(self, name: str, path: str) -> None:
        pending = self._failures.get(name)
        if pending:
            err = pending.pop(0)
            raise OSError(err, os.strerror(err), path)

    def written(self, name: str) -> list[tuple[str, str]]:
        """(dir, value) of every write to a file called ``name``, in order."""
        return [(os.path.dirname(p), v) for p, v in self.writes if os.path.basename(p) == name]

    # -- the kernel -------------------------------------------------------------------
    def write(self, path: str, data: str) -> None:
        name = os.path.basename(path)
        d = os.path.dirname(path)
        self.writes.append((path, data))
        self._maybe_fail(name, path)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, d, path, data)
        else:
            _store(path, data)

    def mkdir(self, path: str) -> None:
        self._maybe_fail("mkdir", path)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        os.mkdir(path)
        self.tree._populate(path)

    def rmdir(self, path: str) -> None:
        self._maybe_fail("rmdir", path)
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if self.subdirs(path) or _read(os.path.join(path, "cgroup.procs")).split():
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
        self.programs.pop(path, None)

    def kill(self, pid: int, sig: int) -> None:
        self.killed.append((pid, sig))
        self._maybe_fail("kill", str(pid))
        if self.on_kill is not None:
            self.on_kill(pid, sig)

    def replace_device_program(self, dir_path: str, program: DeviceProgram) -> None:
        self._maybe_fail("bpf", dir_path)
        if not os.path.isdir(dir_path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), dir_path)
        self.programs[dir_path] = program
        self.program_history.append((dir_path, program))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _store(path: str, data: str) -> None:
    with open(path, "w") as f:
        f.write(data)


def _einval(path: str) -> OSError:
    return OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)


def _int(path: str, data: str) -> int:
    try:
        return int(data.strip())
    except ValueError:
        raise _einval(path) from None


def _h_procs(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    pid = _int(path, data)
    top = fs.tree._hierarchy_root(d)
    if fs.tree._is_v2_dir(d) and d != top and _read(os.path.join(d, "cgroup.subtree_control")
                                                    ).split():
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)   # no internal processes
    for dirpath, _, files in os.walk(top):
        for name in ("cgroup.procs", "tasks"):
            if name in files:
                p = os.path.join(dirpath, name)
                pids = [x for x in _read(p).split() if x != str(pid)]
                _store(p, "".join(x + "\n" for x in pids))
    for name in ("cgroup.procs", "tasks"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            _store(p, _read(p) + f"{pid}\n")


def _h_subtree(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    have = _read(os.path.join(d, "cgroup.controllers")).split()
    enabled = _read(path).split()
    top = fs.tree._hierarchy_root(d)
    for tok in data.split():
        op, ctrl = tok[:1], tok[1:]
        if op not in "+-" or not ctrl:
            raise _einval(path)
        if ctrl not in have:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if op == "+" and d != top and _read(os.path.join(d, "cgroup.procs")).split():
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        if op == "+" and ctrl not in enabled:
            enabled.append(ctrl)
        elif op == "-" and ctrl in enabled:
            enabled.remove(ctrl)
    order = [c for c in fs.tree.opts.v2_controllers + fs.tree.opts.unified_controllers
             if c in enabled]
    _store(path, " ".join(order) + ("\n" if order else ""))
    for child in fs.subdirs(d):
        fs.tree._refresh_v2(os.path.join(d, child))


def _h_freeze(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    if data.strip() not in ("0", "1"):
        raise _einval(path)
    _store(path, data.strip() + "\n")
    if fs.auto_freeze:
        ev = os.path.join(d, "cgroup.events")
        lines = [ln for ln in _read(ev).splitlines() if not ln.startswith("frozen ")]
        _store(ev, "\n".join(lines + [f"frozen {data.strip()}"]) + "\n")


def _h_freezer_state(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    state = data.strip()
    if state not in ("FROZEN", "THAWED"):
        raise _einval(path)
    _store(path, state + "\n")
    _store(os.path.join(d, "freezer.self_freezing"), "1\n" if state == "FROZEN" else "0\n")


def _h_devices(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    allow = path.endswith("devices.allow")
    listing = os.path.join(d, "devices.list")
    rule = data.strip()
    if rule == "a":
        _store(listing, "a *:* rwm\n" if allow else "")
        return
    if len(rule.split()) != 3 or rule[0] not in "abc":
        raise _einval(path)
    lines = _read(listing).splitlines()
    if lines == ["a *:* rwm"]:
        return      # allow-by-default: the kernel lists only the default
    if allow and rule not in lines:
        lines.append(rule)
    elif not allow:
        lines = [ln for ln in lines if ln != rule]
    _store(listing, "".join(ln + "\n" for ln in lines))


def _h_memory_limit(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    value = _int(path, data)
    stored = V1_UNLIMITED if value == -1 else str(value)
    memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw) and int(stored) > int(_read(memsw).strip()):
        raise _einval(path)
    _store(path, stored + "\n")


def _h_memsw_limit(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    value = _int(path, data)
    stored = V1_UNLIMITED if value == -1 else str(value)
    limit = os.path.join(d, "memory.limit_in_bytes")
    if int(stored) < int(_read(limit).strip()):
        raise _einval(path)
    _store(path, stored + "\n")


def _h_v1_unlimited(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    value = _int(path, data)
    _store(path, (V1_UNLIMITED if value == -1 else str(value)) + "\n")


def _h_shares(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    _store(path, str(min(max(_int(path, data), 2), 262144)) + "\n")


def _h_oom_control(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    value = _int(path, data)
    if value not in (0, 1):
        raise _einval(path)
    lines = [ln for ln in _read(path).splitlines() if not ln.startswith("oom_kill_disable ")]
    _store(path, "\n".join([f"oom_kill_disable {value}", *lines]) + "\n")


def _h_append(fs: FakeCgroupFS, d: str, path: str, data: str) -> None:
    """Files that keep one line per device (throttle, weight_device, io.max)."""
    key = data.split()[0] if data.split() else ""
    lines = [ln for ln in _read(path).splitlines() if ln.split()[:1] != [key]]
    _store(path, "".join(ln + "\n" for ln in [*lines, data.strip()]))


_HANDLERS: dict[str, Callable[[FakeCgroupFS, str, str, str], None]] = {
    "cgroup.procs": _h_procs,
    "cgroup.subtree_control": _h_subtree,
    "cgroup.freeze": _h_freeze,
    "freezer.state": _h_freezer_state,
    "devices.allow": _h_devices,
    "devices.deny": _h_devices,
    "memory.limit_in_bytes": _h_memory_limit,
    "memory.memsw.limit_in_bytes": _h_memsw_limit,
    "memory.soft_limit_in_bytes": _h_v1_unlimited,
    "cpu.shares": _h_shares,
    "memory.oom_control": _h_oom_control,
    "blkio.throttle.read_bps_device": _h_append,
    "blkio.throttle.write_bps_device": _h_append,
    "blkio.throttle.read_iops_device": _h_append,
    "blkio.throttle.write_iops_device": _h_append,
    "blkio.weight_device": _h_append,
    "blkio.bfq.weight_device": _h_append,
    "io.max": _h_append,
    "rdma.max": _h_append,
    "net_prio.ifpriomap": _h_append,
}


class FakeCgroupTree:
    """A fake host: mountinfo, /proc/self/cgroup and the cgroup filesystems."""

    def __init__(self, base: str | os.PathLike[str], mode: Mode = Mode.V2,
                 **options: Any) -> None:
        self.base = Path(base)
        self.mode = mode
        self.opts = FakeOptions(**options)
        self.root = str(self.base / "cgroup")
        self.mountinfo_path = str(self.base / "mountinfo")
        self.proc_cgroup_path = str(self.base / "proc-self-cgroup")
        self.fs = FakeCgroupFS(self)
        self._v1_tops: dict[str, list[str]] = {}     # hierarchy dir -> controllers
        self._v2_top: str | None = None
        self._build()

    # -- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        if os.path.exists(self.root):
            shutil.rmtree(self.root)
        os.makedirs(self.root)
        lines = ["22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw",
                 "23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw"]
        cg_lines = []
        mr = self.opts.mount_root
        own = self.opts.own_cgroup
        if self.mode is Mode.V2:
            self._v2_top = self.root
            lines.append(f"30 23 0:26 {mr} /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime "
                         "shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot")
            self._populate(self.root)
            _store(os.path.join(self.root, "cgroup.controllers"),
                   " ".join(self.opts.v2_controllers) + "\n")
            cg_lines.append(f"0::{own}")
        else:
            lines.append("25 23 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs "
                         "tmpfs ro,mode=755")
            mid = 26
            if self.mode is Mode.HYBRID:
                top = os.path.join(self.root, "unified")
                os.mkdir(top)
                self._v2_top = top
                lines.append(f"{mid} 25 0:{mid} {mr} /sys/fs/cgroup/unified rw,nosuid,nodev,"
                             f"noexec,relatime shared:{mid} - cgroup2 cgroup2 rw,nsdelegate")
                mid += 1
                self._populate(top)
                _store(os.path.join(top, "cgroup.controllers"),
                       " ".join(self.opts.unified_controllers) + ("\n" if
                                                                  self.opts.unified_controllers
                                                                  else ""))
            hid = len(self.opts.layout)
            for name, ctrls in self.opts.layout.items():
                top = os.path.join(self.root, name)
                os.mkdir(top)
                self._v1_tops[top] = list(ctrls)
                opts = ",".join(["rw", *(["xattr"] if ctrls == ["name=systemd"] else []),
                                 *ctrls])
                lines.append(f"{mid} 25 0:{mid} {mr} /sys/fs/cgroup/{name} rw,nosuid,nodev,"
                             f"noexec,relatime shared:{mid} - cgroup cgroup {opts}")
                mid += 1
                self._populate(top)
                cg_lines.append(f"{hid}:{','.join(ctrls)}:{own}")
                hid -= 1
                if "," in name:
                    for c in ctrls:
                        os.symlink(name, os.path.join(self.root, c))
            if self.mode is Mode.HYBRID:
                cg_lines.append(f"0::{own}")
        with open(self.mountinfo_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.proc_cgroup_path, "w") as f:
            f.write("\n".join(cg_lines) + "\n")

    def _hierarchy_root(self, d: str) -> str:
        d = os.path.normpath(d)
        for top in [*self._v1_tops, *([self._v2_top] if self._v2_top else [])]:
            if d == top or d.startswith(top + os.sep):
                return top
        raise ValueError(f"{d} is not in the fake cgroup tree")

    def _is_v2_dir(self, d: str) -> bool:
        return self._v2_top is not None and self._hierarchy_root(d) == self._v2_top

    def _populate(self, d: str) -> None:
        top = self._hierarchy_root(d)
        is_root = os.path.normpath(d) == top
        if top == self._v2_top:
            files = _v2_core(is_root, self.opts)
            if not is_root:
                parent = os.path.dirname(os.path.normpath(d))
                ctrls = _read(os.path.join(parent, "cgroup.subtree_control")).split()
                files["cgroup.controllers"] = " ".join(ctrls) + ("\n" if ctrls else "")
                for c in ctrls:
                    files.update(_v2_files(c, False, self.opts))
            else:
                for c in self.opts.v2_controllers if self.mode is Mode.V2 else ():
                    files.update(_v2_files(c, True, self.opts))
        else:
            files = _v1_common(is_root)
            for c in self._v1_tops[top]:
                files.update(_v1_files(c, is_root, self.opts))
        for name, content in files.items():
            p = os.path.join(d, name)
            if not os.path.exists(p):
                _store(p, content)

    def _refresh_v2(self, d: str) -> None:
        """A parent's subtree_control changed: the child's controller files follow."""
        parent = os.path.dirname(os.path.normpath(d))
        ctrls = _read(os.path.join(parent, "cgroup.subtree_control")).split()
        _store(os.path.join(d, "cgroup.controllers"), " ".join(ctrls) + ("\n" if ctrls else ""))
        for c in ctrls:
            for name, content in _v2_files(c, False, self.opts).items():
                p = os.path.join(d, name)
                if not os.path.exists(p):
                    _store(p, content)

    # -- for tests ----------------------------------------------------------------------
    def manager(self, path: str, **kw: Any) -> Any:
        """``new_manager`` pointed at this tree (returns a ``Manager``)."""
        from ketch.linux.cgroups import new_manager
        kw.setdefault("mountinfo_path", self.mountinfo_path)
        kw.setdefault("root", self.root)
        kw.setdefault("proc_cgroup_path", self.proc_cgroup_path)
        kw.setdefault("fs", self.fs)
        kw.setdefault("freeze_timeout", 0.2)
        kw.setdefault("sleep", lambda _s: None)
        return new_manager(path, **kw)

    def dir(self, controller: str, cgroup_path: str) -> str:
        """The directory of ``cgroup_path`` (absolute) in ``controller``'s
        hierarchy; "" is the cgroup2 (v2, or hybrid's unified)."""
        rel = cgroup_path.lstrip("/")
        if controller == "":
            assert self._v2_top is not None
            return os.path.join(self._v2_top, rel)
        for top, ctrls in self._v1_tops.items():
            if controller in ctrls:
                return os.path.join(top, rel)
        raise KeyError(f"no hierarchy for {controller} in this fake")

    def read(self, d: str, name: str | None = None) -> str:
        """A control file's content, stripped of the trailing newline."""
        return _read(os.path.join(d, name) if name else d).rstrip("\n")

    def put(self, d: str, name: str, content: str) -> None:
        """Set a file's content as the kernel would show it (not recorded)."""
        _store(os.path.join(d, name), content)

    def mkcgroup(self, cgroup_path: str) -> None:
        """mkdir -p a cgroup in every hierarchy, as something else on the host would."""
        tops = [*self._v1_tops, *([self._v2_top] if self._v2_top else [])]
        for top in tops:
            cur = top
            for part in [p for p in cgroup_path.split("/") if p]:
                cur = os.path.join(cur, part)
                if not os.path.isdir(cur):
                    os.mkdir(cur)
                    self._populate(cur)
