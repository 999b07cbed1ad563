"""set() on cgroup v1 (and hybrid): which file gets which value, in which order."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ketch.errors import Forbidden, InvalidArgument, NotFound, NotSupported
from ketch.linux.cgroups import Mode
from ketch.linux.cgroups.fake import SEPARATE_LAYOUT, FakeCgroupTree
from ketch.linux.cgroups.resources import (
    CPU,
    BlockIO,
    DeviceRule,
    HugepageLimit,
    InterfacePriority,
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


@pytest.fixture(params=[Mode.V1, Mode.HYBRID], ids=lambda m: m.value)
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupTree:
    return FakeCgroupTree(tmp_path, request.param)


def _setup(tree: FakeCgroupTree, **kw: object):  # type: ignore[no-untyped-def]
    mgr = tree.manager(CG, **kw)
    mgr.create()
    tree.fs.writes.clear()
    return mgr


def _values(tree: FakeCgroupTree, name: str) -> list[str]:
    return [v for _, v in tree.fs.written(name)]


def _order(tree: FakeCgroupTree) -> list[tuple[str, str]]:
    return [(os.path.basename(p), v) for p, v in tree.fs.writes]


# -- memory ------------------------------------------------------------------------------

def test_memory_limit(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(memory=Memory(limit=64 * M)))
    assert _order(tree) == [("memory.limit_in_bytes", str(64 * M))]
    assert tree.read(tree.dir("memory", CG), "memory.limit_in_bytes") == str(64 * M)


def test_memory_limit_and_swap_growing_writes_memsw_first(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    mgr.set(Resources(memory=Memory(limit=100 * M, swap=200 * M)))
    tree.fs.writes.clear()
    # memsw is the limit+swap total; it must stay >= the limit after each write.
    mgr.set(Resources(memory=Memory(limit=300 * M, swap=400 * M)))
    assert _order(tree) == [("memory.memsw.limit_in_bytes", str(400 * M)),
                            ("memory.limit_in_bytes", str(300 * M))]


def test_memory_limit_and_swap_shrinking_writes_limit_first(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    mgr.set(Resources(memory=Memory(limit=300 * M, swap=400 * M)))
    tree.fs.writes.clear()
    mgr.set(Resources(memory=Memory(limit=100 * M, swap=200 * M)))
    assert _order(tree) == [("memory.limit_in_bytes", str(100 * M)),
                            ("memory.memsw.limit_in_bytes", str(200 * M))]
    d = tree.dir("memory", CG)
    assert tree.read(d, "memory.memsw.limit_in_bytes") == str(200 * M)


def test_memory_unlimited_means_unlimited_swap_too(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(memory=Memory(limit=-1)))
    assert _order(tree) == [("memory.memsw.limit_in_bytes", "-1"),
                            ("memory.limit_in_bytes", "-1")]


def test_memory_swap_unlimited(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(memory=Memory(limit=64 * M, swap=-1)))
    assert _order(tree) == [("memory.memsw.limit_in_bytes", "-1"),
                            ("memory.limit_in_bytes", str(64 * M))]


def test_memory_swap_without_swap_accounting(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, swap_accounting=False)
    mgr = _setup(tree)
    with pytest.raises(NotSupported, match="memory.memsw.limit_in_bytes does not exist "
                                           r"\(swap accounting is disabled"):
        mgr.set(Resources(memory=Memory(limit=64 * M, swap=128 * M)))
    assert tree.fs.writes == []
    # Unlimited memory alone does not ask for swap: no error.
    mgr.set(Resources(memory=Memory(limit=-1)))
    assert _order(tree) == [("memory.limit_in_bytes", "-1")]


def test_memory_limit_busy_names_usage(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    d = tree.dir("memory", CG)
    tree.put(d, "memory.usage_in_bytes", "5000000\n")
    tree.put(d, "memory.max_usage_in_bytes", "6000000\n")
    tree.fs.fail("memory.limit_in_bytes", errno.EBUSY)
    with pytest.raises(InvalidArgument) as info:
        mgr.set(Resources(memory=Memory(limit=12)))
    assert str(info.value) == (f"cannot set memory limit to 12 on {d}: memory.limit_in_bytes: "
                               "Device or resource busy (current usage: 5000000, "
                               "peak usage: 6000000)")


def test_memory_check_before_update(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.put(tree.dir("memory", CG), "memory.usage_in_bytes", str(50 * M))
    with pytest.raises(InvalidArgument, match=f"rejecting memory limit {10 * M} <= usage"):
        mgr.set(Resources(memory=Memory(limit=10 * M, check_before_update=True)))
    assert tree.fs.writes == []
    mgr.set(Resources(memory=Memory(limit=100 * M, check_before_update=True)))
    assert _values(tree, "memory.limit_in_bytes") == [str(100 * M)]


def test_memory_reservation_swappiness_oom(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    mgr.set(Resources(memory=Memory(reservation=32 * M, swappiness=10,
                                    disable_oom_killer=True)))
    assert _order(tree) == [("memory.soft_limit_in_bytes", str(32 * M)),
                            ("memory.oom_control", "1"), ("memory.swappiness", "10")]
    tree.fs.writes.clear()
    mgr.set(Resources(memory=Memory(disable_oom_killer=False, swappiness=-1)))
    assert _order(tree) == [("memory.oom_control", "0")]
    tree.fs.writes.clear()
    mgr.set(Resources(memory=Memory(disable_oom_killer=False)))
    assert tree.fs.writes == []         # already enabled: nothing to write


def test_memory_swappiness_out_of_range(tree: FakeCgroupTree) -> None:
    with pytest.raises(InvalidArgument, match="invalid memory swappiness value: 101"):
        _setup(tree).set(Resources(memory=Memory(limit=M, swappiness=101)))
    assert tree.fs.writes == []


def test_memory_kernel_limits_are_ignored(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(memory=Memory(kernel=M, kernel_tcp=M, use_hierarchy=True)))
    assert tree.fs.writes == []


# -- cpu ------------------------------------------------------------------------------

def test_cpu_shares_quota_period_idle(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(cpu=CPU(shares=512, quota=50000, period=100000, idle=1)))
    assert _order(tree) == [("cpu.shares", "512"), ("cpu.cfs_period_us", "100000"),
                            ("cpu.cfs_quota_us", "50000"), ("cpu.idle", "1")]


@pytest.mark.parametrize("shares,message", [(1, "minimum allowed cpu-shares is 2"),
                                            (300000, "maximum allowed cpu-shares is 262144")])
def test_cpu_shares_clamped_by_the_kernel(tree: FakeCgroupTree, shares: int,
                                          message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _setup(tree).set(Resources(cpu=CPU(shares=shares)))


def test_cpu_period_refused_alone_is_retried_after_quota(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.fs.fail("cpu.cfs_period_us", errno.EINVAL)
    tree.fs.fail("cpu.cfs_burst_us", errno.EINVAL)
    mgr.set(Resources(cpu=CPU(quota=20000, period=10000, burst=5000)))
    assert _order(tree) == [("cpu.cfs_period_us", "10000"), ("cpu.cfs_burst_us", "5000"),
                            ("cpu.cfs_quota_us", "20000"), ("cpu.cfs_period_us", "10000"),
                            ("cpu.cfs_burst_us", "5000")]


def test_cpu_period_refused_without_quota_fails(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.fs.fail("cpu.cfs_period_us", errno.EINVAL)
    with pytest.raises(InvalidArgument, match="cannot set cpu period to 1: write .*"
                                              "cpu.cfs_period_us: Invalid argument"):
        mgr.set(Resources(cpu=CPU(period=1)))


def test_cpu_burst_missing_file(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    os.unlink(os.path.join(tree.dir("cpu", CG), "cpu.cfs_burst_us"))
    with pytest.raises(NotSupported, match="cpu burst"):
        mgr.set(Resources(cpu=CPU(burst=1000)))


def test_cpu_realtime(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(cpu=CPU(realtime_period=1000000, realtime_runtime=950000)))
    assert _order(tree) == [("cpu.rt_period_us", "1000000"), ("cpu.rt_runtime_us", "950000")]


def test_cpuset(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(cpu=CPU(cpus="1-2", mems="0")))
    assert _order(tree) == [("cpuset.cpus", "1-2"), ("cpuset.mems", "0")]


def test_cpu_on_separate_cpu_and_cpuacct_mounts(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID, layout=SEPARATE_LAYOUT)
    _setup(tree).set(Resources(cpu=CPU(shares=256)))
    assert tree.fs.written("cpu.shares") == [(f"{tree.root}/cpu{CG}", "256")]


# -- pids ---------------------------------------------------------------------------------

@pytest.mark.parametrize("limit,value", [(5, "5"), (0, "max"), (-1, "max")])
def test_pids(tree: FakeCgroupTree, limit: int, value: str) -> None:
    _setup(tree).set(Resources(pids=Pids(limit=limit)))
    assert _order(tree) == [("pids.max", value)]


def test_rejected_value_names_file_and_value(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.fs.fail("pids.max", errno.EINVAL)
    with pytest.raises(InvalidArgument) as info:
        mgr.set(Resources(pids=Pids(limit=7)))
    assert str(info.value) == (f"cannot set pids limit to 7: write {tree.dir('pids', CG)}"
                               "/pids.max: Invalid argument")


def test_permission_denied_is_forbidden(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    tree.fs.fail("pids.max", errno.EACCES)
    with pytest.raises(Forbidden, match="pids.max: Permission denied"):
        mgr.set(Resources(pids=Pids(limit=7)))


def test_set_on_a_cgroup_that_was_not_created(tree: FakeCgroupTree) -> None:
    with pytest.raises(NotFound, match="cgroup .* does not exist"):
        tree.manager("/nope").set(Resources(pids=Pids(limit=7)))


# -- block I/O -----------------------------------------------------------------------------

def test_blkio_cfq(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(block_io=BlockIO(
        weight=300, leaf_weight=200,
        weight_device=[WeightDevice(8, 0, weight=400, leaf_weight=100)],
        throttle_read_bps_device=[ThrottleDevice(8, 0, 1048576)],
        throttle_write_bps_device=[ThrottleDevice(8, 16, 2097152)],
        throttle_read_iops_device=[ThrottleDevice(8, 0, 100)],
        throttle_write_iops_device=[ThrottleDevice(8, 0, 200)])))
    assert _order(tree) == [
        ("blkio.weight", "300"), ("blkio.leaf_weight", "200"),
        ("blkio.weight_device", "8:0 400"), ("blkio.leaf_weight_device", "8:0 100"),
        ("blkio.throttle.read_bps_device", "8:0 1048576"),
        ("blkio.throttle.write_bps_device", "8:16 2097152"),
        ("blkio.throttle.read_iops_device", "8:0 100"),
        ("blkio.throttle.write_iops_device", "8:0 200")]


def test_blkio_bfq(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, blkio_weight="bfq")
    _setup(tree).set(Resources(block_io=BlockIO(
        weight=300, weight_device=[WeightDevice(8, 0, weight=400)])))
    assert _order(tree) == [("blkio.bfq.weight", "300"), ("blkio.bfq.weight_device", "8:0 400")]


def test_blkio_weight_without_scheduler_support(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, blkio_weight="none")
    mgr = _setup(tree)
    with pytest.raises(NotSupported, match="neither blkio.weight nor blkio.bfq.weight"):
        mgr.set(Resources(block_io=BlockIO(weight=300)))
    mgr.set(Resources(block_io=BlockIO(throttle_read_bps_device=[ThrottleDevice(8, 0, 1)])))
    assert _values(tree, "blkio.throttle.read_bps_device") == ["8:0 1"]


# -- hugetlb ---------------------------------------------------------------------------------

def test_hugetlb(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(hugepage_limits=[HugepageLimit("2MB", 4 * M),
                                                HugepageLimit("1GB", 0)]))
    assert _order(tree) == [("hugetlb.2MB.limit_in_bytes", str(4 * M)),
                            ("hugetlb.2MB.rsvd.limit_in_bytes", str(4 * M)),
                            ("hugetlb.1GB.limit_in_bytes", "0"),
                            ("hugetlb.1GB.rsvd.limit_in_bytes", "0")]


def test_hugetlb_without_rsvd_files(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    d = tree.dir("hugetlb", CG)
    for name in os.listdir(d):
        if ".rsvd." in name:
            os.unlink(os.path.join(d, name))
    mgr.set(Resources(hugepage_limits=[HugepageLimit("2MB", M), HugepageLimit("1GB", M)]))
    assert [n for n, _ in _order(tree)] == ["hugetlb.2MB.limit_in_bytes",
                                             "hugetlb.2MB.rsvd.limit_in_bytes",
                                             "hugetlb.1GB.limit_in_bytes"]


def test_hugetlb_controller_not_mounted(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID, layout=SEPARATE_LAYOUT)
    with pytest.raises(NotSupported, match="hugetlb cgroup controller is not mounted"):
        _setup(tree).set(Resources(hugepage_limits=[HugepageLimit("2MB", M)]))


# -- network, rdma --------------------------------------------------------------------------

def test_network_class_id_and_priorities(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(network=Network(class_id=0x100001, priorities=[
        InterfacePriority("eth0", 5), InterfacePriority("lo", 1)])))
    assert _order(tree) == [("net_cls.classid", "1048577"), ("net_prio.ifpriomap", "eth0 5"),
                            ("net_prio.ifpriomap", "lo 1")]


def test_network_controllers_not_mounted(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, layout=SEPARATE_LAYOUT)
    with pytest.raises(NotSupported, match="net_cls cgroup controller is not mounted"):
        _setup(tree).set(Resources(network=Network(class_id=1)))


def test_rdma_controller_not_mounted(tree: FakeCgroupTree) -> None:
    with pytest.raises(NotSupported, match="rdma cgroup controller is not mounted"):
        _setup(tree).set(Resources(rdma={"mlx5_1": Rdma(hca_handles=3)}))


def test_rdma(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, layout={**SEPARATE_LAYOUT, "rdma": ["rdma"]})
    d = tree.dir("rdma", "/")
    tree.put(d, "rdma.max", "")
    mgr = tree.manager(CG)
    mgr.create()
    tree.put(tree.dir("rdma", CG), "rdma.max", "")
    tree.fs.writes.clear()
    mgr.set(Resources(rdma={"mlx5_1": Rdma(hca_handles=3, hca_objects=10000),
                            "mlx4_0": Rdma(hca_objects=5)}))
    assert _order(tree) == [("rdma.max", "mlx5_1 hca_handle=3 hca_object=10000"),
                            ("rdma.max", "mlx4_0 hca_object=5")]


# -- unified ----------------------------------------------------------------------------------

def test_unified_is_invalid_on_v1(tree: FakeCgroupTree) -> None:
    with pytest.raises(InvalidArgument, match="cannot use unified on cgroup v1"):
        _setup(tree).set(Resources(pids=Pids(limit=3), unified={"memory.high": "1000"}))
    assert tree.fs.writes == []


# -- devices ----------------------------------------------------------------------------------

DENY_ALL = DeviceRule(allow=False, access="rwm")


def test_devices_from_allow_all(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(devices=[
        DENY_ALL, DeviceRule(True, "c", 1, 3, "rwm"), DeviceRule(True, "c", 136, None, "rw"),
        DeviceRule(True, "b", None, None, "m")]))
    assert _order(tree) == [("devices.deny", "a"), ("devices.allow", "b *:* m"),
                            ("devices.allow", "c 1:3 rwm"), ("devices.allow", "c 136:* rw")]
    assert tree.read(tree.dir("devices", CG), "devices.list").splitlines() == [
        "b *:* m", "c 1:3 rwm", "c 136:* rw"]


def test_devices_update_writes_only_the_difference(tree: FakeCgroupTree) -> None:
    mgr = _setup(tree)
    mgr.set(Resources(devices=[DENY_ALL, DeviceRule(True, "c", 1, 3), DeviceRule(True, "c", 1, 5)]))
    tree.fs.writes.clear()
    mgr.set(Resources(devices=[DENY_ALL, DeviceRule(True, "c", 1, 3),
                               DeviceRule(True, "c", 1, 5, "r"), DeviceRule(True, "c", 1, 9)]))
    # Nothing is denied in between: the running container keeps /dev/null.
    assert _order(tree) == [("devices.deny", "c 1:5 wm"), ("devices.allow", "c 1:9 rwm")]


def test_devices_allow_all_then_deny_one(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(devices=[DeviceRule(True), DeviceRule(False, "c", 1, 3)]))
    assert _order(tree) == [("devices.allow", "a"), ("devices.deny", "c 1:3 rwm")]


def test_devices_hole_in_wildcard_is_refused(tree: FakeCgroupTree) -> None:
    with pytest.raises(InvalidArgument, match="punch a hole in the wildcard rule c \\*:\\* rwm"):
        _setup(tree).set(Resources(devices=[
            DENY_ALL, DeviceRule(True, "c", None, None), DeviceRule(False, "c", 1, 3)]))
    assert tree.fs.writes == []


@pytest.mark.parametrize("rule,message", [
    (DeviceRule(True, "p", 1, 3), "invalid device type 'p'"),
    (DeviceRule(True, "c", 1, 3, "rwx"), "invalid device access 'rwx'"),
])
def test_devices_invalid_rule(tree: FakeCgroupTree, rule: DeviceRule, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _setup(tree).set(Resources(devices=[DENY_ALL, rule]))


def test_devices_controller_missing(tmp_path: Path) -> None:
    layout = {k: v for k, v in SEPARATE_LAYOUT.items() if k != "devices"}
    tree = FakeCgroupTree(tmp_path, Mode.V1, layout=layout)
    with pytest.raises(NotSupported, match="devices cgroup controller is not mounted"):
        _setup(tree).set(Resources(devices=[DENY_ALL]))


def test_empty_resources_write_nothing(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(memory=Memory(), cpu=CPU(), block_io=BlockIO()))
    assert tree.fs.writes == []


def test_set_order_matches_runc(tree: FakeCgroupTree) -> None:
    _setup(tree).set(Resources(
        devices=[DENY_ALL], memory=Memory(limit=M), cpu=CPU(shares=100, cpus="0"),
        pids=Pids(limit=1), block_io=BlockIO(weight=100),
        hugepage_limits=[HugepageLimit("2MB", M)]))
    files = [n for n, _ in _order(tree)]
    assert files == ["cpuset.cpus", "devices.deny", "memory.limit_in_bytes", "cpu.shares",
                     "pids.max", "blkio.weight", "hugetlb.2MB.limit_in_bytes",
                     "hugetlb.2MB.rsvd.limit_in_bytes"]
