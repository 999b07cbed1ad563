"""engine.sysinfo: the host's cgroup features read from the files each one needs, on fake
v1 and v2 trees (moby's pkg/sysinfo rules)."""

from __future__ import annotations

from pathlib import Path

from ketch.engine.sysinfo import probe, warnings


def _files(base: Path, names: list[str], content: str = "") -> str:
    base.mkdir(parents=True, exist_ok=True)
    for n in names:
        (base / n).write_text(content)
    return str(base)


def test_v1_features_follow_the_files(tmp_path: Path) -> None:
    v1 = {
        "memory": _files(tmp_path / "memory", ["memory.limit_in_bytes",
                                               "memory.soft_limit_in_bytes",
                                               "memory.swappiness", "memory.oom_control"]),
        "cpu": _files(tmp_path / "cpu", ["cpu.shares", "cpu.cfs_quota_us",
                                         "cpu.cfs_period_us"]),
        "blkio": _files(tmp_path / "blkio", ["blkio.throttle.read_bps_device",
                                             "blkio.throttle.write_bps_device",
                                             "blkio.throttle.read_iops_device",
                                             "blkio.throttle.write_iops_device"]),
        "pids": _files(tmp_path / "pids", ["pids.max"]),
    }
    (Path(_files(tmp_path / "cpuset", [])) / "cpuset.cpus").write_text("0-3\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    v1["cpuset"] = str(tmp_path / "cpuset")
    info = probe(cgroup2=False, v1=v1)
    assert info.memory_limit and info.memory_reservation and info.oom_kill_disable
    assert not info.swap_limit                        # no memory.memsw.limit_in_bytes
    assert info.cpu_shares and info.cpu_cfs and not info.cpu_realtime
    # No scheduler that takes weights (none, mq-deadline): no weight file at all.
    assert not info.blkio_weight and not info.blkio_weight_device
    assert info.blkio_read_bps_device and info.pids_limit and info.cpuset
    assert (info.cpus, info.mems) == ("0-3", "0")
    assert warnings(info) == ["WARNING: No swap limit support",
                              "WARNING: No blkio weight support",
                              "WARNING: No blkio weight_device support"]
    (tmp_path / "blkio" / "blkio.bfq.weight").write_text("100\n")   # BFQ counts
    assert probe(cgroup2=False, v1=v1).blkio_weight


def test_v2_features_follow_the_controllers(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cpuset.cpus.effective").write_text("0-1\n")
    info = probe(cgroup2=True, unified=str(root))
    assert info.memory_limit and info.swap_limit and not info.memory_swappiness
    assert not info.oom_kill_disable and not info.cpu_realtime
    assert info.blkio_weight and info.cpu_cfs and info.pids_limit and info.cpus == "0-1"
    (root / "cgroup.controllers").write_text("memory\n")
    info = probe(cgroup2=True, unified=str(root))
    assert not info.cpu_shares and not info.blkio_weight and not info.pids_limit
