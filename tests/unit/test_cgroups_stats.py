"""Stats and OOM counters read from control files, and runc's JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.errors import NotFound
from ketch.jsonmodel import from_json
from ketch.linux.cgroups import (
    BlkioEntry,
    Hugetlb,
    MemoryEntry,
    Mode,
    Stats,
    stats_to_json,
)
from ketch.linux.cgroups._v1 import parse_blkio, parse_cpu_list
from ketch.linux.cgroups._v2 import parse_io_stat
from ketch.linux.cgroups.fake import SEPARATE_LAYOUT, FakeCgroupTree

CG = "/ketch/abc"
MAX = 2**64 - 1


def _made(tree: FakeCgroupTree):  # type: ignore[no-untyped-def]
    mgr = tree.manager(CG)
    mgr.create()
    return mgr


# -- v1 ---------------------------------------------------------------------------------

def test_stats_v1(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, blkio_weight="bfq")
    mgr = _made(tree)
    cpu = tree.dir("cpu", CG)
    tree.put(cpu, "cpu.stat", "nr_periods 10\nnr_throttled 3\nthrottled_time 777\n")
    tree.put(cpu, "cpuacct.usage", "123456789\n")
    tree.put(cpu, "cpuacct.usage_percpu", "100 200 \n")
    tree.put(cpu, "cpuacct.usage_all", "cpu user system\n0 60 40\n1 150 50\n")
    tree.put(cpu, "cpuacct.stat", "user 12\nsystem 3\n")
    mem = tree.dir("memory", CG)
    tree.put(mem, "memory.stat", "cache 4096\nrss 8192\ntotal_cache 4096\n")
    tree.put(mem, "memory.usage_in_bytes", "12288\n")
    tree.put(mem, "memory.max_usage_in_bytes", "20480\n")
    tree.put(mem, "memory.limit_in_bytes", "16777216\n")
    tree.put(mem, "memory.failcnt", "2\n")
    tree.put(mem, "memory.memsw.usage_in_bytes", "12288\n")
    pids = tree.dir("pids", CG)
    tree.put(pids, "pids.current", "3\n")
    tree.put(pids, "pids.max", "50\n")
    blk = tree.dir("blkio", CG)
    tree.put(blk, "blkio.bfq.io_serviced_recursive", "8:0 Read 5\n8:0 Write 6\nTotal 11\n")
    tree.put(blk, "blkio.bfq.io_service_bytes_recursive", "8:0 Read 4096\nTotal 4096\n")
    huge = tree.dir("hugetlb", CG)
    tree.put(huge, "hugetlb.2MB.rsvd.usage_in_bytes", "2097152\n")
    tree.put(huge, "hugetlb.2MB.rsvd.failcnt", "1\n")
    tree.put(tree.dir("cpuset", CG), "cpuset.cpus", "0-2,5\n")

    s = mgr.stats()
    assert s.cpu.usage.total == 123456789
    assert s.cpu.usage.percpu == [100, 200]
    assert s.cpu.usage.percpu_user == [60, 150] and s.cpu.usage.percpu_kernel == [40, 50]
    assert s.cpu.usage.user == 12 * 10_000_000 and s.cpu.usage.kernel == 3 * 10_000_000
    assert (s.cpu.throttling.periods, s.cpu.throttling.throttled_periods,
            s.cpu.throttling.throttled_time) == (10, 3, 777)
    assert s.cpuset.cpus == [0, 1, 2, 5] and s.cpuset.mems == [0]
    assert s.memory.cache == 4096 and s.memory.raw["rss"] == 8192
    assert s.memory.usage == MemoryEntry(limit=16777216, usage=12288, max=20480, failcnt=2)
    assert s.memory.swap.usage == 12288
    assert s.pids.current == 3 and s.pids.limit == 50
    assert s.blkio.io_serviced_recursive == [BlkioEntry(8, 0, "Read", 5), BlkioEntry(8, 0, "Write", 6)]
    assert s.blkio.io_service_bytes_recursive == [BlkioEntry(8, 0, "Read", 4096)]
    assert s.hugetlb["2MB"] == Hugetlb(usage=2097152, max=0, failcnt=1)
    assert set(s.hugetlb) == {"2MB", "1GB"}


def test_stats_v1_unlimited_pids_and_missing_hierarchies(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID, layout=SEPARATE_LAYOUT, blkio_weight="none")
    mgr = _made(tree)
    s = mgr.stats()
    assert s.pids.limit == 0            # "max" reads as no limit, as runc reports it
    assert s.hugetlb == {}
    assert s.blkio.io_serviced_recursive == []


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_stats_of_missing_cgroup(tmp_path: Path, mode: Mode) -> None:
    tree = FakeCgroupTree(tmp_path, mode)
    with pytest.raises(NotFound, match="cannot read stats: cgroup .*nope does not exist"):
        tree.manager("/nope").stats()


def test_blkio_fallback_order_prefers_first_group_with_entries(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, blkio_weight="bfq")
    mgr = _made(tree)
    blk = tree.dir("blkio", CG)
    # BFQ files empty: the throttle files are reported instead.
    tree.put(blk, "blkio.throttle.io_serviced_recursive", "8:16 Write 9\nTotal 9\n")
    assert mgr.stats().blkio.io_serviced_recursive == [BlkioEntry(8, 16, "Write", 9)]


def test_parse_blkio() -> None:
    assert parse_blkio("8:0 6792\n8:0 Read 1\nTotal 3\nbogus\n") == [
        BlkioEntry(8, 0, "", 6792), BlkioEntry(8, 0, "Read", 1)]


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("") == []


@pytest.mark.parametrize("mode,content,count", [
    (Mode.V1, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", 3),
    (Mode.V1, "oom_kill_disable 0\nunder_oom 0\n", 0),     # kernels before 4.13
    (Mode.V2, "low 0\nhigh 5\nmax 9\noom 2\noom_kill 4\noom_group_kill 0\n", 4),
])
def test_oom_kill_count(tmp_path: Path, mode: Mode, content: str, count: int) -> None:
    tree = FakeCgroupTree(tmp_path, mode)
    mgr = _made(tree)
    d = tree.dir("memory" if mode is Mode.V1 else "", CG)
    tree.put(d, "memory.oom_control" if mode is Mode.V1 else "memory.events", content)
    assert mgr.oom_kill_count() == count


def test_oom_kill_count_absent(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager(CG, controllers=["pids"])
    mgr.create()
    assert mgr.oom_kill_count() == 0
    assert tree.manager("/nope").oom_kill_count() == 0


# -- v2 ---------------------------------------------------------------------------------

def test_stats_v2(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = _made(tree)
    d = mgr.paths()[""]
    tree.put(d, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
                            "nr_periods 7\nnr_throttled 2\nthrottled_usec 30\n")
    tree.put(d, "memory.stat", "anon 1000\nfile 2000\n")
    tree.put(d, "memory.current", "3000\n")
    tree.put(d, "memory.max", "1048576\n")
    tree.put(d, "memory.peak", "5000\n")
    tree.put(d, "memory.swap.current", "100\n")
    tree.put(d, "pids.current", "2\n")
    tree.put(d, "io.stat", "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n")
    tree.put(d, "hugetlb.2MB.rsvd.current", "2097152\n")
    tree.put(d, "hugetlb.2MB.events", "max 3\n")
    s = mgr.stats()
    assert (s.cpu.usage.total, s.cpu.usage.user, s.cpu.usage.kernel) == (1_500_000, 1_000_000,
                                                                         500_000)
    assert s.cpu.throttling.throttled_time == 30_000 and s.cpu.throttling.periods == 7
    assert s.memory.cache == 2000 and s.memory.raw == {"anon": 1000, "file": 2000}
    assert s.memory.usage == MemoryEntry(limit=1048576, usage=3000, max=5000, failcnt=0)
    # Swap is reported as memory+swap, like v1's memsw; its limit "max" stays max.
    assert s.memory.swap == MemoryEntry(limit=MAX, usage=3100)
    assert s.pids.current == 2 and s.pids.limit == 0
    assert s.blkio.io_service_bytes_recursive == [BlkioEntry(8, 0, "Read", 4096),
                                                  BlkioEntry(8, 0, "Write", 8192)]
    assert s.blkio.io_serviced_recursive == [BlkioEntry(8, 0, "Read", 1),
                                             BlkioEntry(8, 0, "Write", 2)]
    assert s.hugetlb["2MB"] == Hugetlb(usage=2097152, failcnt=3)


def test_stats_v2_swap_limit_adds_memory_limit(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = _made(tree)
    d = mgr.paths()[""]
    tree.put(d, "memory.max", "1000\n")
    tree.put(d, "memory.swap.max", "500\n")
    assert mgr.stats().memory.swap.limit == 1500


def test_stats_v2_without_pids_controller_counts_procs(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager(CG, controllers=["memory"])
    mgr.create()
    mgr.apply(5)
    mgr.apply(6)
    assert mgr.stats().pids.current == 2


def test_parse_io_stat_skips_unknown() -> None:
    b = parse_io_stat("259:0 rbytes=1 cost.usage=5 wios=x\nbad line\n")
    assert b.io_service_bytes_recursive == [BlkioEntry(259, 0, "Read", 1)]
    assert b.io_serviced_recursive == []


# -- JSON ---------------------------------------------------------------------------------

def test_empty_stats_json_matches_runc() -> None:
    # What runc prints for a cgroup with nothing in it (Go omitempty/omitzero rules).
    assert stats_to_json(Stats()) == {
        "cpu": {},
        "cpuset": {"cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0,
                   "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                   "memory_pressure": 0, "sched_load_balance": 0, "sched_relax_domain_level": 0},
        "memory": {},
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def test_stats_json_names_and_omission() -> None:
    s = Stats()
    s.cpu.usage.total = 5
    s.cpu.usage.percpu = [1, 4]
    s.cpu.throttling.throttled_periods = 2
    s.memory.usage = MemoryEntry(limit=100, usage=0, max=0, failcnt=0)
    s.memory.kernel_tcp = MemoryEntry(limit=7)
    s.memory.raw = {"cache": 1}
    s.pids.current = 1
    s.blkio.io_queued_recursive = [BlkioEntry(8, 0, "Read", 0)]
    s.hugetlb["2MB"] = Hugetlb()
    data = stats_to_json(s)
    assert data["cpu"] == {"usage": {"total": 5, "percpu": [1, 4], "kernel": 0, "user": 0},
                           "throttling": {"throttledPeriods": 2}}
    assert data["memory"] == {"usage": {"limit": 100, "failcnt": 0},
                              "kernelTCP": {"limit": 7, "failcnt": 0}, "raw": {"cache": 1}}
    assert data["pids"] == {"current": 1}
    assert data["blkio"] == {"ioQueueRecursive": [{"major": 8, "op": "Read"}]}
    assert data["hugetlb"] == {"2MB": {"failcnt": 0}}
    json.dumps(data)


def test_stats_json_reads_back_with_jsonmodel(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    mgr = _made(tree)
    tree.put(tree.dir("pids", CG), "pids.current", "4\n")
    s = mgr.stats()
    back = from_json(Stats, json.loads(json.dumps(stats_to_json(s))))
    assert back.pids.current == 4
    assert back.memory.usage.limit == s.memory.usage.limit
    assert back.cpuset.sched_load_balance == s.cpuset.sched_load_balance
