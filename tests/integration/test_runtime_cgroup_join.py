"""The init joins its cgroups itself where it can (v1 ``tasks``), the parent does the
rest (a hybrid host's cgroup2): every hierarchy still holds the container's process,
and an init that fails meanwhile still reports its own error."""

from __future__ import annotations

import os
import shutil

import pytest
from tests.conftest import PREFIX

from ketch.errors import KetchError
from ketch.runtime.container import CreateOptions, Runtime

pytestmark = pytest.mark.root


def _own_cgroups(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            out[ctrls] = path
    return out


def test_init_is_in_every_hierarchy_before_start(bundles, runc_root):
    cid = "cgjoin"
    b = bundles.make(["true"], container_id=cid)
    rt = Runtime(str(runc_root))
    started = rt.create(cid, CreateOptions(bundle=str(b)))
    try:
        cgroups = _own_cgroups(started.pid)
        want = f"/{PREFIX}/{cid}"
        # Every v1 hierarchy and (hybrid) the cgroup2 one: all the container's.
        assert cgroups and all(path == want for path in cgroups.values()), cgroups
        mgr = rt._cgroup(want)
        assert started.pid in mgr.pids()
    finally:
        rt.delete(cid, force=True)
        os.waitpid(started.pid, 0)


def test_user_namespace_init_joins_too(bundles, runc_root):
    cid = "cgjoinuser"

    def userns(spec):
        spec["linux"]["namespaces"].append({"type": "user"})
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    # The mapped root must be able to reach the rootfs: not under pytest's 0700 tmp.
    base = runc_root.parent / f"{runc_root.name}-bundles"
    base.mkdir(mode=0o755)
    try:
        b = bundles.make(["true"], container_id=cid, edit=userns, base=base)
        os.chown(b / "rootfs", 100000, 100000)
        rt = Runtime(str(runc_root))
        started = rt.create(cid, CreateOptions(bundle=str(b)))
        try:
            cgroups = _own_cgroups(started.pid)
            assert all(path == f"/{PREFIX}/{cid}" for path in cgroups.values()), cgroups
        finally:
            rt.delete(cid, force=True)
            try:
                os.waitpid(started.pid, 0)
            except ChildProcessError:
                pass        # an intermediate's child: reaped by whoever adopted it
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_failing_init_reports_its_own_error(bundles, runc_root):
    cid = "cgjoinfail"
    b = bundles.make(["/no/such/program"], container_id=cid)
    rt = Runtime(str(runc_root))
    with pytest.raises(KetchError, match="no such file or directory|not found"):
        rt.create(cid, CreateOptions(bundle=str(b)))
    assert not rt._cgroup(f"/{PREFIX}/{cid}").exists()


def test_without_clone3_the_parent_moves_the_init(bundles, runc_root, monkeypatch):
    from ketch.linux import clone

    monkeypatch.setattr(clone, "_unavailable", True)    # as where seccomp refuses clone3
    cid = "cgjoinfork"
    b = bundles.make(["true"], container_id=cid)
    rt = Runtime(str(runc_root))
    started = rt.create(cid, CreateOptions(bundle=str(b)))
    try:
        cgroups = _own_cgroups(started.pid)
        assert cgroups and all(path == f"/{PREFIX}/{cid}" for path in cgroups.values()), cgroups
    finally:
        rt.delete(cid, force=True)
        os.waitpid(started.pid, 0)


_FORK_INTO = """
import os, sys
from ketch.linux.clone import fork_into_cgroup
r, w = os.pipe()
pid = fork_into_cgroup(sys.argv[1])
if pid == 0:
    try:
        with open("/proc/self/cgroup") as f:
            os.write(w, f.read().encode())
    finally:
        os._exit(0)
os.close(w)
if pid is None:
    sys.exit("clone3 with CLONE_INTO_CGROUP is not available here")
out = b""
while chunk := os.read(r, 4096):
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode())
sys.exit(os.WEXITSTATUS(status))
"""


def test_fork_into_cgroup_child_is_born_there(tmp_path):
    # In a fresh interpreter: fork_into_cgroup declines in a process with threads
    # (which a test run may have), and the daemons call it from single-threaded ones.
    import subprocess
    import sys

    unified = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") \
        else "/sys/fs/cgroup"
    d = os.path.join(unified, f"{PREFIX}-clone3")
    os.makedirs(d, exist_ok=True)
    try:
        out = subprocess.run([sys.executable, "-c", _FORK_INTO, d], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"0::/{PREFIX}-clone3" in out.stdout.splitlines()
    finally:
        os.rmdir(d)


@pytest.mark.parametrize("clone3", [True, False])
def test_exec_joins_every_hierarchy(bundles, runc_root, monkeypatch, clone3):
    from ketch.linux import clone
    from ketch.runtime.container import ExecOptions
    from ketch.runtime.spec import Process

    if not clone3:
        monkeypatch.setattr(clone, "_unavailable", True)
    from ketch.jsonmodel import to_json
    from ketch.runtime.seccomp_default import default_profile

    def with_profile(spec):
        spec["linux"]["seccomp"] = to_json(default_profile())

    cid = f"cgjoinexec{int(clone3)}"
    b = bundles.make(["sleep", "100"], container_id=cid, edit=with_profile)
    rt = Runtime(str(runc_root))
    started = rt.create(cid, CreateOptions(bundle=str(b)))
    try:
        rt.start(cid)
        r, w = os.pipe()
        ex = rt.exec(cid, Process(args=["cat", "/proc/self/cgroup", "/proc/self/status"],
                                  env=["PATH=/bin"]), ExecOptions(stdio=(None, w, w)))
        os.close(w)
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        os.close(r)
        _, status = os.waitpid(ex.pid, 0)
        assert os.WEXITSTATUS(status) == 0
        lines = out.decode().splitlines()
        cgroups = {ln.split(":", 2)[1]: ln.split(":", 2)[2] for ln in lines
                   if ln[:1].isdigit() and ln.count(":") >= 2}
        assert cgroups == _own_cgroups(started.pid)
        assert "Seccomp:\t2" in lines           # the container's profile, loaded
    finally:
        rt.delete(cid, force=True)
        os.waitpid(started.pid, 0)
