"""Mode detection, mount discovery and cgroup path resolution, on recorded samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, NotSupported, System
from ketch.linux.cgroups import Mode, detect_mode, parse_mountinfo, parse_proc_cgroup, v1_mounts
from ketch.linux.cgroups._detect import relocate
from ketch.linux.cgroups.fake import SEPARATE_LAYOUT, FakeCgroupTree

# The CI machine: separate cpu and cpuacct mounts, an empty cgroup2 at unified.
HYBRID_SEPARATE = """\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# Ubuntu 18.04 style: combined mounts, no unified.
V1_COMBINED = """\
25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
33 25 0:31 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpuset,clone_children
"""

V2_PURE = """\
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

# Old systemd in a v2 container: a lone named v1 hierarchy does not make it v1.
V2_WITH_NAMED = V2_PURE + (
    "40 30 0:40 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n")


def _file(tmp_path: Path, text: str) -> str:
    p = tmp_path / "mountinfo"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,mode", [
    (HYBRID_SEPARATE, Mode.HYBRID), (V1_COMBINED, Mode.V1), (V2_PURE, Mode.V2),
    (V2_WITH_NAMED, Mode.V2),
])
def test_detect_mode(tmp_path: Path, text: str, mode: Mode) -> None:
    assert detect_mode(_file(tmp_path, text)) is mode


def test_detect_mode_without_cgroups(tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match="no cgroup"):
        detect_mode(_file(tmp_path, "22 1 0:21 / /proc rw - proc proc rw\n"))


def test_detect_mode_unreadable(tmp_path: Path) -> None:
    with pytest.raises(System, match="cannot read"):
        detect_mode(str(tmp_path / "missing"))


def test_v1_mounts_separate_cpu_and_cpuacct(tmp_path: Path) -> None:
    mounts = v1_mounts(_file(tmp_path, HYBRID_SEPARATE))
    assert mounts["cpu"] == "/sys/fs/cgroup/cpu"
    assert mounts["cpuacct"] == "/sys/fs/cgroup/cpuacct"
    assert mounts["name=systemd"] == "/sys/fs/cgroup/systemd"
    assert "" not in mounts and len(mounts) == 9


def test_v1_mounts_combined_and_options_are_not_controllers(tmp_path: Path) -> None:
    mounts = v1_mounts(_file(tmp_path, V1_COMBINED))
    assert mounts["cpu"] == mounts["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert mounts["net_prio"] == "/sys/fs/cgroup/net_cls,net_prio"
    assert "xattr" not in mounts and "clone_children" not in mounts and "rw" not in mounts


def test_parse_mountinfo_escapes_and_stacking() -> None:
    text = ("40 31 0:37 / /mnt/my\\040cg rw - cgroup cgroup rw,memory\n"
            "41 31 0:38 / /mnt/stack rw - cgroup cgroup rw,pids\n"
            "42 41 0:39 /inner /mnt/stack rw - cgroup cgroup rw,devices\n")
    mounts = parse_mountinfo(text)
    assert mounts[0].mountpoint == "/mnt/my cg"
    # The later mount on /mnt/stack hides the earlier one.
    stack = [m for m in mounts if m.mountpoint == "/mnt/stack"]
    assert len(stack) == 1 and stack[0].controllers == ("devices",)
    assert stack[0].root == "/inner"


def test_parse_proc_cgroup() -> None:
    own = parse_proc_cgroup("12:cpu,cpuacct:/a/b\n1:name=systemd:/user.slice\n0::/x/y\n")
    assert own == {"cpu": "/a/b", "cpuacct": "/a/b", "name=systemd": "/user.slice", "": "/x/y"}


def test_relocate() -> None:
    assert relocate("/sys/fs/cgroup/memory", "/sys/fs/cgroup") == "/sys/fs/cgroup/memory"
    assert relocate("/sys/fs/cgroup/memory", "/tmp/r") == "/tmp/r/memory"
    assert relocate("/sys/fs/cgroup", "/tmp/r") == "/tmp/r"
    assert relocate("/sys/fs/cgroup/unified", "/tmp/r/") == "/tmp/r/unified"
    assert relocate("/cgroup/memory", "/tmp/r") == "/tmp/r/memory"


# -- path resolution ------------------------------------------------------------------

def test_absolute_path_v1_combined(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    paths = tree.manager("/ketch/abc").paths()
    assert paths["cpu"] == paths["cpuacct"] == f"{tree.root}/cpu,cpuacct/ketch/abc"
    assert paths["memory"] == f"{tree.root}/memory/ketch/abc"
    assert paths["name=systemd"] == f"{tree.root}/systemd/ketch/abc"
    assert "" not in paths


def test_absolute_path_hybrid_has_unified(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID, layout=SEPARATE_LAYOUT)
    paths = tree.manager("/ketch/abc").paths()
    assert paths["cpu"] == f"{tree.root}/cpu/ketch/abc"
    assert paths["cpuacct"] == f"{tree.root}/cpuacct/ketch/abc"
    assert paths[""] == f"{tree.root}/unified/ketch/abc"


def test_absolute_path_v2(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    assert tree.manager("/ketch/abc").paths() == {"": f"{tree.root}/ketch/abc"}


def test_relative_path_v1_is_below_own_cgroup(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID, own_cgroup="/user.slice/session-1.scope")
    paths = tree.manager("abc").paths()
    assert paths["memory"] == f"{tree.root}/memory/user.slice/session-1.scope/abc"
    assert paths[""] == f"{tree.root}/unified/user.slice/session-1.scope/abc"


def test_relative_path_v2_is_below_own_cgroups_parent(tmp_path: Path) -> None:
    # Our own cgroup holds processes: a child of it could get no controllers.
    tree = FakeCgroupTree(tmp_path, Mode.V2, own_cgroup="/user.slice/session-1.scope")
    assert tree.manager("abc").paths() == {"": f"{tree.root}/user.slice/abc"}


def test_relative_path_inside_a_container_mount_root(tmp_path: Path) -> None:
    # Without a cgroup namespace a container sees its cgroup as the mount's root.
    tree = FakeCgroupTree(tmp_path, Mode.V1, own_cgroup="/docker/c0ffee/sub",
                          mount_root="/docker/c0ffee")
    assert tree.manager("abc").paths()["memory"] == f"{tree.root}/memory/sub/abc"


def test_relative_path_cannot_climb_out(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1, own_cgroup="/me")
    assert tree.manager("../../etc/x").paths()["memory"] == f"{tree.root}/memory/me/etc/x"
    assert tree.manager("/a/../../b").paths()["memory"] == f"{tree.root}/memory/b"


@pytest.mark.parametrize("path", ["system.slice:docker:abc", "user.slice:ketch:x"])
def test_systemd_paths_are_not_supported(tmp_path: Path, path: str) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    with pytest.raises(NotSupported, match="systemd cgroup driver is not supported"):
        tree.manager(path)


@pytest.mark.parametrize("path", ["", "/", "/..", ".", "a/.."])
def test_paths_naming_no_cgroup_are_refused(tmp_path: Path, path: str) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    with pytest.raises(InvalidArgument):
        tree.manager(path)


def test_forced_v2_on_a_hybrid_unified_root(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID)
    unified = f"{tree.root}/unified"
    mgr = tree.manager("/ketch/abc", mode=Mode.V2, root=unified)
    assert mgr.paths() == {"": f"{unified}/ketch/abc"}


def test_manager_keeps_the_given_path(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V1)
    assert tree.manager("/ketch//abc/").path == "/ketch//abc/"
