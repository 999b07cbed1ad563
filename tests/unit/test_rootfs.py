"""The rootfs sequence against a recording fake: which mounts, in which order."""

import os
import stat

import pytest

from ketch.errors import InvalidArgument
from ketch.jsonmodel import to_json
from ketch.linux import syscalls as sc
from ketch.linux.fake import RecordingSyscalls
from ketch.runtime.defaults import default_spec
from ketch.runtime.rootfs import Rootfs, secure_join
from ketch.runtime.spec import parse_spec
from ketch.runtime.specconv import convert


def test_secure_join_stays_inside(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/../../../../etc", root / "escape")
    os.symlink("../../..", root / "etc" / "up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    assert secure_join(str(root), "/escape/passwd") == str(root / "etc" / "passwd")
    assert secure_join(str(root), "/etc/up/x") == str(root / "x")
    assert secure_join(str(root), "../../x") == str(root / "x")
    assert secure_join(str(root), "/new/dir") == str(root / "new" / "dir")
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        secure_join(str(root), "/loop1")


@pytest.fixture
def plan(tmp_path):
    (tmp_path / "rootfs").mkdir()
    spec = parse_spec(to_json(default_spec()))
    return convert(spec, str(tmp_path))


def test_prepare_mount_sequence(plan, tmp_path):
    fake = RecordingSyscalls()
    mine = tmp_path / "memory-cgroup-of-container"
    mine.mkdir()
    Rootfs(plan=plan, sys=fake, cgroup_v1_mounts={"memory": "/sys/fs/cgroup/memory"},
           cgroup_paths={"memory": str(mine)}).prepare()
    mounts = fake.named("mount")
    root = plan.rootfs
    assert mounts[0].args == (None, "/", None, sc.MS_SLAVE | sc.MS_REC, None)
    assert mounts[1].args == (root, root, "bind", sc.MS_BIND | sc.MS_REC, None)
    targets = [c.args[1] for c in mounts]
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                 "/sys/fs/cgroup"):
        assert root + dest in targets
    dev = next(c for c in mounts if c.args[1] == root + "/dev")
    assert dev.args[2] == "tmpfs" and dev.args[4] == "mode=755,size=65536k"
    # The v1 cgroup mount: a tmpfs, the container's own memory cgroup bound read-only.
    cg = [c for c in mounts if c.args[1].startswith(root + "/sys/fs/cgroup")]
    assert cg[0].args[2] == "tmpfs"
    assert cg[1].args[:3] == (str(mine), root + "/sys/fs/cgroup/memory", "bind")
    nodes = {c.args[0]: c.args for c in fake.named("mknod")}
    assert nodes[root + "/dev/null"][1] == stat.S_IFCHR | 0o666
    assert nodes[root + "/dev/null"][2] == os.makedev(1, 3)
    assert os.readlink(root + "/dev/ptmx") == "pts/ptmx"
    assert os.readlink(root + "/dev/fd") == "/proc/self/fd"


def test_finalize_masks_and_readonly(plan):
    fake = RecordingSyscalls()
    plan.readonly_root = False
    fs = Rootfs(plan=plan, sys=fake)
    fake.fail("mount", 2)               # /proc/missing: ENOENT is skipped
    fs.finalize([], ["/proc/missing"])
    fake.fail("mount", 20)              # ENOTDIR: a directory gets a read-only tmpfs
    fs.finalize([], ["/proc/acpi"])
    calls = fake.named("mount")
    assert calls[-1].args == ("tmpfs", "/proc/acpi", "tmpfs", sc.MS_RDONLY, None)
    fs.finalize(["/proc/sys"], [])
    assert fake.named("mount")[-2].args == ("/proc/sys", "/proc/sys", None,
                                            sc.MS_BIND | sc.MS_REC, None)
    last = fake.named("mount")[-1].args
    assert last[3] & sc.MS_RDONLY and last[3] & sc.MS_REMOUNT


def test_user_namespace_binds_devices(plan):
    fake = RecordingSyscalls()
    Rootfs(plan=plan, sys=fake, in_userns=True).create_devices(plan.devices)
    assert not fake.named("mknod")
    binds = [c.args for c in fake.named("mount")]
    assert ("/dev/null", plan.rootfs + "/dev/null", "bind", sc.MS_BIND, None) in binds


def test_pivot_uses_dot_dot(plan, monkeypatch):
    fake = RecordingSyscalls()
    monkeypatch.setattr(os, "fchdir", lambda fd: None)
    monkeypatch.setattr(os, "chdir", lambda p: None)
    Rootfs(plan=plan, sys=fake).pivot()
    assert fake.named("pivot_root")[0].args == (".", ".")
    assert fake.named("umount2")[0].args == (".", sc.MNT_DETACH)
