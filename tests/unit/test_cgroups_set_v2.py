"""set() on cgroup v2: runc's conversions from the OCI (v1-style) values."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, NotSupported
from ketch.linux.cgroups import (
    Mode,
    blkio_weight_to_io_weight,
    compile_rules,
    cpu_shares_to_weight,
    memory_swap_to_v2,
)
from ketch.linux.cgroups.fake import FakeCgroupTree
from ketch.linux.cgroups.resources import (
    CPU,
    BlockIO,
    DeviceRule,
    HugepageLimit,
    Memory,
    Network,
    Pids,
    Rdma,
    Resources,
    ThrottleDevice,
    WeightDevice,
)

M = 1024 * 1024
CG = "/ketch/abc"


@pytest.fixture
def tree(tmp_path: Path) -> FakeCgroupTree:
    return FakeCgroupTree(tmp_path, Mode.V2)


def _setup(tree: FakeCgroupTree, **kw: object):  # type: ignore[no-untyped-def]
    mgr = tree.manager(CG, **kw)
    mgr.create()
    tree.fs.writes.clear()
    return mgr


def _order(tree: FakeCgroupTree) -> list[tuple[str, str]]:
    return [(os.path.basename(p), v) for p, v in tree.fs.writes]


# -- conversions --------------------------------------------------------------------------

@pytest.mark.parametrize("shares,weight", [
    (0, 0), (1, 1), (2, 1), (512, 59), (1024, 100), (2048, 174), (262144, 10000),
    (500000, 10000)])
def test_cpu_shares_to_weight(shares: int, weight: int) -> None:
    assert cpu_shares_to_weight(shares) == weight


@pytest.mark.parametrize("blkio,io", [(0, 0), (10, 1), (100, 910), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight(blkio: int, io: int) -> None:
    assert blkio_weight_to_io_weight(blkio) == io


@pytest.mark.parametrize("swap,limit,v2", [
    (0, -1, -1), (-1, 100, -1), (0, 100, 0), (300, -1, 300), (300, 100, 200), (100, 100, 0)])
def test_memory_swap_to_v2(swap: int, limit: int, v2: int) -> None:
    assert memory_swap_to_v2(swap, limit) == v2


@pytest.mark.parametrize("swap,limit,message", [
    (300, 0, "unable to set swap limit without memory limit"),
    (50, 100, "memory\\+swap limit should be >= memory limit"),
    (300, -5, "invalid memory value: -5")])
def test_memory_swap_to_v2_refusals(swap: int, limit: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        memory_swap_to_v2(swap, limit)


# -- memory -------------------------------------------------------------------------------

def test_memory(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(memory=Memory(limit=64 * M, swap=96 * M, reservation=32 * M)))
    assert _order(tree) == [("memory.swap.max", str(32 * M)), ("memory.max", str(64 * M)),
                            ("memory.low", str(32 * M))]


@pytest.mark.parametrize("memory,expected", [
    (Memory(limit=-1), [("memory.swap.max", "max"), ("memory.max", "max")]),
    (Memory(limit=M, swap=-1), [("memory.swap.max", "max"), ("memory.max", str(M))]),
    (Memory(limit=M, swap=M), [("memory.swap.max", "0"), ("memory.max", str(M))]),
    (Memory(reservation=-1), [("memory.low", "max")]),
])
def test_memory_special_values(tree: FakeCgroupTree, memory: Memory,
                               expected: list[tuple[str, str]]) -> None:
    _setup(tree).set(Resources(memory=memory))
    assert _order(tree) == expected


def test_memory_swap_without_swap_accounting(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2, swap_accounting=False)
    mgr = _setup(tree)
    # "no swap" and "unlimited swap" need no file ...
    mgr.set(Resources(memory=Memory(limit=M, swap=M)))
    mgr.set(Resources(memory=Memory(limit=-1)))
    assert _order(tree) == [("memory.max", str(M)), ("memory.max", "max")]
    # ... a real swap limit does.
    with pytest.raises(NotSupported, match="memory.swap.max does not exist "
                                           r"\(swap accounting is disabled"):
        mgr.set(Resources(memory=Memory(limit=M, swap=2 * M)))


def test_memory_check_before_update(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.put(mgr.paths()[""], "memory.current", str(50 * M))
    with pytest.raises(InvalidArgument, match="rejecting memory\\+swap limit"):
        mgr.set(Resources(memory=Memory(limit=100 * M, swap=40 * M, check_before_update=True)))
    assert tree.fs.writes == []


@pytest.mark.parametrize("memory,message", [
    (Memory(swappiness=10), "memory swappiness is not supported on cgroup v2"),
    (Memory(disable_oom_killer=True), "disabling the OOM killer is not supported"),
])
def test_memory_v1_only_settings(tree: FakeCgroupTree, memory: Memory, message: str) -> None:
    with pytest.raises(NotSupported, match=message):
        _setup(tree).set(Resources(memory=memory, pids=Pids(limit=1)))
    assert tree.fs.writes == []


def test_memory_ignored_settings(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(memory=Memory(kernel=M, kernel_tcp=M, swappiness=-1,
                                             disable_oom_killer=False)))
    assert tree.fs.writes == []


def test_memory_controller_not_enabled(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree, controllers=["pids"])
    with pytest.raises(NotSupported, match="the cgroup v2 memory controller is not available"):
        mgr.set(Resources(memory=Memory(limit=M)))


# -- cpu ------------------------------------------------------------------------------------

def test_cpu(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(cpu=CPU(shares=1024, quota=50000, period=200000, burst=1000,
                                       idle=0, cpus="0-1", mems="0")))
    assert _order(tree) == [("cpu.idle", "0"), ("cpu.weight", "100"),
                            ("cpu.max.burst", "1000"), ("cpu.max", "50000 200000"),
                            ("cpuset.cpus", "0-1"), ("cpuset.mems", "0")]


@pytest.mark.parametrize("cpu,cpu_max", [
    (CPU(quota=-1), "max 100000"), (CPU(quota=20000), "20000 100000")])
def test_cpu_max(tree: FakeCgroupTree, cpu: CPU, cpu_max: str) -> None:
    _setup(tree).set(Resources(cpu=cpu))
    assert _order(tree) == [("cpu.max", cpu_max)]


def test_cpu_period_alone_keeps_the_quota(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    mgr.set(Resources(cpu=CPU(quota=30000, period=100000)))
    mgr.set(Resources(cpu=CPU(period=50000)))
    assert tree.read(mgr.paths()[""], "cpu.max") == "30000 50000"


def test_cpu_burst_refused_before_quota_is_retried(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.fs.fail("cpu.max.burst", errno.EINVAL)
    mgr.set(Resources(cpu=CPU(quota=1000, burst=5000)))
    assert _order(tree) == [("cpu.max.burst", "5000"), ("cpu.max", "1000 100000"),
                            ("cpu.max.burst", "5000")]


def test_cpu_realtime_is_not_supported(tree: FakeCgroupTree) -> None:
    with pytest.raises(NotSupported, match="realtime CPU scheduling"):
        _setup(tree).set(Resources(cpu=CPU(realtime_runtime=1000)))


# -- pids, io, hugetlb ----------------------------------------------------------------------

@pytest.mark.parametrize("limit,value", [(5, "5"), (0, "max"), (-1, "max")])
def test_pids(tree: FakeCgroupTree, limit: int, value: str) -> None:
    _setup(tree).set(Resources(pids=Pids(limit=limit)))
    assert _order(tree) == [("pids.max", value)]


def test_io_weight_and_limits(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(block_io=BlockIO(
        weight=500, weight_device=[WeightDevice(8, 0, weight=100)],
        throttle_read_bps_device=[ThrottleDevice(8, 0, 1048576)],
        throttle_write_bps_device=[ThrottleDevice(8, 0, 2097152), ThrottleDevice(8, 16, 0)],
        throttle_read_iops_device=[ThrottleDevice(8, 0, 100)],
        throttle_write_iops_device=[ThrottleDevice(8, 16, 200)])))
    assert _order(tree) == [
        ("io.weight", "4950"), ("io.weight", "8:0 910"),
        ("io.max", "8:0 rbps=1048576 wbps=2097152 riops=100"),
        ("io.max", "8:16 wbps=max wiops=200")]


def test_io_bfq_weight(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2, io_weight="bfq")
    _setup(tree).set(Resources(block_io=BlockIO(weight=500,
                                                weight_device=[WeightDevice(8, 0, weight=100)])))
    # BFQ takes the blkio range as is.
    assert _order(tree) == [("io.bfq.weight", "500"), ("io.bfq.weight", "8:0 100")]


def test_io_weight_unavailable(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2, io_weight="none")
    with pytest.raises(NotSupported, match="neither io.weight nor io.bfq.weight"):
        _setup(tree).set(Resources(block_io=BlockIO(weight=500)))


def test_io_leaf_weight_is_not_supported(tree: FakeCgroupTree) -> None:
    with pytest.raises(NotSupported, match="leaf weights"):
        _setup(tree).set(Resources(block_io=BlockIO(leaf_weight=500)))


def test_hugetlb(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(hugepage_limits=[HugepageLimit("2MB", 4 * M)]))
    assert _order(tree) == [("hugetlb.2MB.max", str(4 * M)), ("hugetlb.2MB.rsvd.max", str(4 * M))]


def test_rdma(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(rdma={"mlx5_1": Rdma(hca_handles=3, hca_objects=10000)}))
    assert _order(tree) == [("rdma.max", "mlx5_1 hca_handle=3 hca_object=10000")]


def test_network_is_not_supported(tree: FakeCgroupTree) -> None:
    with pytest.raises(NotSupported, match="net_cls, net_prio"):
        _setup(tree).set(Resources(network=Network(class_id=1)))


# -- unified ----------------------------------------------------------------------------------

def test_unified(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(unified={"memory.high": "1048576",
                                        "io.max": "8:0 rbps=1\n8:16 wbps=2\n"}))
    assert _order(tree) == [("memory.high", "1048576"), ("io.max", "8:0 rbps=1"),
                            ("io.max", "8:16 wbps=2")]


@pytest.mark.parametrize("key,exc,message", [
    ("../memory.max", InvalidArgument, "must be a file name"),
    ("nodot", InvalidArgument, "CONTROLLER.PARAMETER"),
    ("rdma.max", NotSupported, "the cgroup v2 rdma controller is not available|does not exist"),
])
def test_unified_refusals(tree: FakeCgroupTree, key: str, exc: type, message: str) -> None:
    mgr = _setup(tree, controllers=["memory"])
    with pytest.raises(exc, match=message):
        mgr.set(Resources(unified={key: "1"}))


def test_unified_kernel_refusal(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.fs.fail("memory.high", errno.EINVAL)
    with pytest.raises(InvalidArgument, match="cannot set unified resource 'memory.high' to "
                                              "bogus: write .*memory.high: Invalid argument"):
        mgr.set(Resources(unified={"memory.high": "bogus"}))


# -- devices ----------------------------------------------------------------------------------

def test_devices_attach_a_compiled_program(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    rules = [DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm")]
    mgr.set(Resources(devices=rules))
    prog = tree.fs.programs[mgr.paths()[""]]
    assert prog == compile_rules(rules)
    assert not prog.default_allow
    mgr.set(Resources(devices=[DeviceRule(True)]))
    assert tree.fs.programs[mgr.paths()[""]].default_allow
    assert len(tree.fs.program_history) == 2
    mgr.set(Resources(pids=Pids(limit=3)))      # no rules: the filter stays
    assert len(tree.fs.program_history) == 2


def test_devices_invalid_rules_write_nothing(tree: FakeCgroupTree) -> None:
    with pytest.raises(InvalidArgument):
        _setup(tree).set(Resources(pids=Pids(limit=3), devices=[DeviceRule(True, "x")]))
    assert tree.fs.writes == [] and tree.fs.program_history == []


def test_set_order_matches_runc(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    mgr.set(Resources(
        devices=[DeviceRule(False)], memory=Memory(limit=M), cpu=CPU(shares=2, cpus="0"),
        pids=Pids(limit=1), block_io=BlockIO(weight=10), hugepage_limits=[HugepageLimit("2MB", M)],
        unified={"memory.high": "max"}))
    assert [n for n, _ in _order(tree)] == [
        "pids.max", "memory.max", "io.weight", "cpu.weight", "cpuset.cpus", "hugetlb.2MB.max",
        "hugetlb.2MB.rsvd.max", "memory.high"]
    assert mgr.paths()[""] in tree.fs.programs


def test_resources_read_from_oci_json() -> None:
    from ketch.jsonmodel import from_json, to_json
    data = {"memory": {"limit": 1, "swap": 2, "kernelTCP": 3, "disableOOMKiller": False},
            "cpu": {"shares": 4, "realtimeRuntime": 5, "cpus": "0"},
            "blockIO": {"weight": 10, "throttleReadIOPSDevice": [{"major": 8, "minor": 0,
                                                                  "rate": 9}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 6}],
            "network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 8}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 4}},
            "unified": {"memory.high": "max"},
            "devices": [{"allow": False, "access": "rwm"}]}
    r = from_json(Resources, data)
    assert r.network is not None and r.network.class_id == 7
    assert r.rdma["mlx5_1"].hca_objects == 4
    assert r.block_io is not None and r.block_io.throttle_read_iops_device[0].rate == 9
    assert r.memory is not None and r.memory.kernel_tcp == 3
    assert to_json(r)["network"] == data["network"]
