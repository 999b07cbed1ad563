"""create / apply / pids / exists / destroy / freeze / kill_all on the fake cgroupfs."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from ketch.errors import MultiError, NotFound, NotSupported, System
from ketch.linux.cgroups import Mode
from ketch.linux.cgroups.fake import SEPARATE_LAYOUT, FakeCgroupTree


@pytest.fixture(params=[Mode.V1, Mode.HYBRID, Mode.V2], ids=lambda m: m.value)
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupTree:
    return FakeCgroupTree(tmp_path, request.param)


def test_create_makes_a_dir_in_every_hierarchy(tree: FakeCgroupTree) -> None:
    mgr = tree.manager("/ketch/abc")
    assert not mgr.exists()
    mgr.create()
    assert mgr.exists()
    for d in mgr.paths().values():
        assert os.path.isfile(os.path.join(d, "cgroup.procs")), d
    mgr.create()        # again: nothing to do, no error


def test_create_v1_cpuset_gets_parent_cpus_and_mems(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, cpus="0-7", mems="0-1")
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    for path in ("/ketch", "/ketch/abc"):
        d = tree.dir("cpuset", path)
        assert tree.read(d, "cpuset.cpus") == "0-7"
        assert tree.read(d, "cpuset.mems") == "0-1"


def test_create_v1_cpuset_keeps_existing_values(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    tree.mkcgroup("/ketch")
    tree.put(tree.dir("cpuset", "/ketch"), "cpuset.cpus", "2\n")
    tree.put(tree.dir("cpuset", "/ketch"), "cpuset.mems", "0\n")
    tree.manager("/ketch/abc").create()
    assert tree.read(tree.dir("cpuset", "/ketch"), "cpuset.cpus") == "2"
    assert tree.read(tree.dir("cpuset", "/ketch/abc"), "cpuset.cpus") == "2"
    assert not [w for w in tree.fs.written("cpuset.cpus") if w[0] == tree.dir("cpuset", "/ketch")]


def test_create_v2_enables_controllers_in_every_ancestor(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    written = tree.fs.written("cgroup.subtree_control")
    assert [d for d, _ in written] == [tree.root, f"{tree.root}/ketch"]
    assert written[0][1] == "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc"
    leaf = mgr.paths()[""]
    assert "memory" in tree.read(leaf, "cgroup.controllers").split()
    assert os.path.exists(os.path.join(leaf, "memory.max"))
    assert tree.read(leaf, "cgroup.subtree_control") == ""   # the leaf holds processes


def test_create_v2_enables_only_what_is_missing(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    tree.fs.write(os.path.join(tree.root, "cgroup.subtree_control"), "+memory +pids")
    tree.fs.writes.clear()
    tree.manager("/ketch/abc", controllers=["memory", "pids", "cpu"]).create()
    assert tree.fs.written("cgroup.subtree_control") == [
        (tree.root, "+cpu"), (f"{tree.root}/ketch", "+memory +pids +cpu")]


def test_create_v2_with_no_controllers_writes_no_subtree_control(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID, unified_controllers=["hugetlb"])
    mgr = tree.manager("/ketch/abc", mode=Mode.V2, root=f"{tree.root}/unified", controllers=())
    mgr.create()
    assert tree.fs.written("cgroup.subtree_control") == []
    assert os.path.isdir(f"{tree.root}/unified/ketch/abc")


def test_create_v2_falls_back_to_one_controller_at_a_time(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    tree.fs.fail("cgroup.subtree_control", errno.EINVAL)       # the batch is refused
    tree.manager("/ketch/abc", controllers=["memory", "pids"]).create()
    assert tree.fs.written("cgroup.subtree_control")[:3] == [
        (tree.root, "+memory +pids"), (tree.root, "+memory"), (tree.root, "+pids")]


def test_create_reports_mkdir_failure(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    tree.fs.fail("mkdir", errno.ENOSPC)
    with pytest.raises(System, match="cannot create cgroup .*/ketch: No space left"):
        tree.manager("/ketch/abc").create()


def test_apply_writes_pid_everywhere_and_pids_lists_it(tree: FakeCgroupTree) -> None:
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(4242)
    procs = tree.fs.written("cgroup.procs")
    assert sorted(d for d, _ in procs) == sorted(set(mgr.paths().values()))
    assert {v for _, v in procs} == {"4242"}
    assert mgr.pids() == [4242]


def test_pids_are_recursive(tree: FakeCgroupTree) -> None:
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(10)
    sub = tree.manager("/ketch/abc/exec")
    sub.create()
    sub.apply(11)
    assert sorted(mgr.pids()) == [10, 11]
    assert sub.pids() == [11]


def test_apply_retries_einval_then_reports(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    tree.fs.fail("cgroup.procs", errno.EINVAL, times=2)
    mgr.apply(7)
    assert mgr.pids() == [7]
    tree.fs.fail("cgroup.procs", errno.ESRCH)
    with pytest.raises(NotFound, match="cannot add process 8 .*no such process"):
        mgr.apply(8)


def test_apply_into_missing_cgroup(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    with pytest.raises(NotFound, match="does not exist"):
        tree.manager("/ketch/abc").apply(1)


def test_destroy_removes_leaf_first_and_keeps_the_parent(tree: FakeCgroupTree) -> None:
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    tree.manager("/ketch/abc/exec/deeper").create()
    mgr.destroy()
    assert not mgr.exists()
    for d in mgr.paths().values():
        assert not os.path.exists(d)
        assert os.path.isdir(os.path.dirname(d))        # /ketch is not ours to remove
    mgr.destroy()       # a missing cgroup is fine


def test_destroy_retries_busy(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    tree.fs.fail("rmdir", errno.EBUSY, times=3)
    mgr.destroy()
    assert not mgr.exists()


def test_destroy_gives_up_on_a_cgroup_with_processes(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(99)
    with pytest.raises(System, match="cannot remove cgroup .*/ketch/abc: Device or resource busy"):
        mgr.destroy()


def test_destroy_gathers_every_failure(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, layout=SEPARATE_LAYOUT)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(99)
    with pytest.raises(MultiError) as info:
        mgr.destroy()
    assert len(info.value.errors) == len(SEPARATE_LAYOUT)


# -- freezer ---------------------------------------------------------------------------

def test_freeze_thaw_v1(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    assert not mgr.frozen()
    mgr.freeze()
    assert tree.read(tree.dir("freezer", "/ketch/abc"), "freezer.state") == "FROZEN"
    assert mgr.frozen()
    mgr.thaw()
    assert not mgr.frozen()


def test_frozen_v1_by_a_frozen_parent_is_not_paused(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    d = tree.dir("freezer", "/ketch/abc")
    tree.put(d, "freezer.state", "FROZEN\n")
    tree.put(d, "freezer.self_freezing", "0\n")
    assert not mgr.frozen()


def test_freeze_v1_unexpected_state_thaws_and_fails(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    tree.fs.fail("freezer.state", errno.EIO)
    with pytest.raises(Exception, match="freezer state"):
        mgr.freeze()
    assert tree.fs.written("freezer.state")[-1][1] == "THAWED"


def test_freeze_v1_without_freezer(tmp_path: Path) -> None:
    layout = {k: v for k, v in SEPARATE_LAYOUT.items() if k != "freezer"}
    tree = FakeCgroupTree(tmp_path, Mode.V1, layout=layout)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    with pytest.raises(NotSupported, match="freezer"):
        mgr.freeze()
    assert not mgr.frozen()


def test_freeze_v2_waits_for_cgroup_events(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    tree.fs.auto_freeze = False          # the kernel reports "frozen 1" only when done
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    d = mgr.paths()[""]
    tree.put(d, "cgroup.events", "populated 1\nfrozen 1\n")
    mgr.freeze()
    assert tree.fs.written("cgroup.freeze") == [(d, "1")]
    assert mgr.frozen()
    mgr.thaw()
    assert tree.fs.written("cgroup.freeze")[-1] == (d, "0")
    assert not mgr.frozen()


def test_freeze_v2_times_out_and_thaws(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    tree.fs.auto_freeze = False
    mgr = tree.manager("/ketch/abc", freeze_timeout=0.02)
    mgr.create()
    with pytest.raises(System, match="timeout .* waiting for cgroup .* to freeze"):
        mgr.freeze()
    assert [v for _, v in tree.fs.written("cgroup.freeze")] == ["1", "0"]


def test_freeze_v2_waits_with_the_injected_sleep(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    tree.fs.auto_freeze = False
    naps: list[float] = []
    mgr = tree.manager("/ketch/abc")

    def sleep(s: float) -> None:
        naps.append(s)
        if len(naps) == 3:      # the kernel finishes freezing meanwhile
            tree.put(mgr.paths()[""], "cgroup.events", "populated 1\nfrozen 1\n")

    mgr = tree.manager("/ketch/abc", sleep=sleep, freeze_timeout=60)
    mgr.create()
    mgr.freeze()
    assert len(naps) == 3


def test_freeze_v2_without_freezer(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    os.unlink(os.path.join(mgr.paths()[""], "cgroup.freeze"))
    with pytest.raises(NotSupported, match="cgroup.freeze does not exist"):
        mgr.freeze()
    mgr.thaw()          # nothing to thaw: fine


def test_frozen_of_missing_cgroup(tree: FakeCgroupTree) -> None:
    assert not tree.manager("/nope").frozen()


# -- kill_all ------------------------------------------------------------------------------

def test_kill_all_freezes_signals_and_thaws(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(10)
    mgr.apply(11)
    states: list[str] = []
    tree.fs.on_kill = lambda pid, sig: states.append(
        tree.read(tree.dir("freezer", "/ketch/abc"), "freezer.state"))
    mgr.kill_all(signal.SIGTERM)
    assert tree.fs.killed == [(10, signal.SIGTERM), (11, signal.SIGTERM)]
    assert states == ["FROZEN", "FROZEN"]          # signalled while frozen
    assert not mgr.frozen()


def test_kill_all_keeps_a_paused_cgroup_paused_except_for_sigkill(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(10)
    mgr.freeze()
    mgr.kill_all(signal.SIGUSR1)
    assert mgr.frozen()
    mgr.kill_all(signal.SIGKILL)
    assert not mgr.frozen()


def test_kill_all_ignores_vanished_processes(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(10)
    mgr.apply(11)
    tree.fs.fail("kill", errno.ESRCH)
    mgr.kill_all(signal.SIGTERM)
    assert [p for p, _ in tree.fs.killed] == [10, 11]


def test_kill_all_v2_sigkill_uses_cgroup_kill(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(10)
    mgr.kill_all(signal.SIGKILL)
    assert tree.fs.written("cgroup.kill") == [(mgr.paths()[""], "1")]
    assert tree.fs.killed == []
    mgr.kill_all(signal.SIGTERM)            # other signals go one by one
    assert tree.fs.killed == [(10, signal.SIGTERM)]


def test_kill_all_v2_without_cgroup_kill(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2, cgroup_kill=False)
    mgr = tree.manager("/ketch/abc")
    mgr.create()
    mgr.apply(10)
    mgr.kill_all(signal.SIGKILL)
    assert tree.fs.killed == [(10, signal.SIGKILL)]
    assert [v for _, v in tree.fs.written("cgroup.freeze")] == ["1", "0"]


def test_kill_all_on_missing_cgroup_does_nothing(tree: FakeCgroupTree) -> None:
    tree.manager("/nope").kill_all(signal.SIGKILL)
    assert tree.fs.killed == [] and tree.fs.writes == []
