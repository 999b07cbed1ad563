"""The cgroups package against the real kernel.

On a v1 or hybrid host: limits written and read back, a forked child moved in,
the devices cgroup enforced, an OOM kill counted, freeze/thaw, kill_all and
destroy. On any host with a cgroup2 (hybrid's /sys/fs/cgroup/unified included,
where no controller is needed): the eBPF device filter, enforced on a child.

Every test works below ``/<session prefix>/cg-<random>`` and its finalizer
kills its children by pid and removes what it created, leaf first, even when
the test fails. Cgroups the tests did not create are never touched.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from ketch.errors import InvalidArgument, NotSupported
from ketch.linux import cgroups
from ketch.linux.cgroups import Manager, Mode
from ketch.linux.cgroups.resources import (
    CPU,
    BlockIO,
    DeviceRule,
    Memory,
    Pids,
    Resources,
)

pytestmark = pytest.mark.root

M = 1024 * 1024


def _host_mode() -> Mode | None:
    try:
        return cgroups.detect_mode()
    except Exception:  # noqa: BLE001 - no cgroups at all: the tests skip
        return None


HOST = _host_mode()
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
requires_v1 = pytest.mark.skipif(HOST not in (Mode.V1, Mode.HYBRID),
                                 reason="needs cgroup v1 controllers (v1 or hybrid host)")


def _cgroup2_root() -> str | None:
    from ketch.linux.cgroups._detect import read_mounts, unified_mount
    try:
        um = unified_mount(read_mounts())
    except Exception:  # noqa: BLE001
        return None
    return um.mountpoint if um is not None else None


# -- children -----------------------------------------------------------------------------

@dataclass
class Child:
    """A forked child that waits for ``go()`` before running its work."""

    pid: int
    go_fd: int
    out_fd: int

    def go(self) -> None:
        os.write(self.go_fd, b"g")
        os.close(self.go_fd)
        self.go_fd = -1

    def read(self, timeout: float = 10.0) -> bytes:
        ready, _, _ = select.select([self.out_fd], [], [], timeout)
        return os.read(self.out_fd, 4096) if ready else b""

    def wait(self, timeout: float = 10.0) -> int:
        """The raw wait status; fails the test if the child does not end in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = -1
                return status
            time.sleep(0.01)
        raise AssertionError(f"child {self.pid} did not exit")


@dataclass
class Scratch:
    """Cgroups and children of one test, all cleaned up by the fixture."""

    base: str                                   # "/<prefix>/cg-<random>"
    children: list[Child] = field(default_factory=list)

    def manager(self, name: str, **kw: object) -> Manager:
        return cgroups.new_manager(f"{self.base}/{name}", **kw)  # type: ignore[arg-type]

    def spawn(self, work: Callable[[int], None] | None = None) -> Child:
        """Fork a child; after go() it runs ``work(out_fd)`` (default: sleep)."""
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:        # the child: never returns into pytest
            code = 0
            try:
                os.close(go_w)
                os.close(out_r)
                os.read(go_r, 1)
                if work is None:
                    time.sleep(300)
                else:
                    work(out_w)
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(go_r)
        os.close(out_w)
        child = Child(pid, go_w, out_r)
        self.children.append(child)
        return child


def _dirs_below(base: str) -> list[str]:
    """``base`` in every hierarchy of this host, whether it exists or not."""
    from ketch.linux.cgroups._detect import read_mounts
    return [os.path.join(m.mountpoint, base.lstrip("/")) for m in read_mounts()]


def _thaw_tree(top: str) -> None:
    for dirpath, _, files in os.walk(top):
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            if name in files:
                try:
                    with open(os.path.join(dirpath, name), "w") as f:
                        f.write(value)
                except OSError:
                    pass


def _rmdir_tree(top: str) -> list[str]:
    """rmdir leaf first, retrying while killed tasks drain; what stayed is returned."""
    left = []
    for dirpath, _, _ in sorted(os.walk(top, topdown=False), key=lambda t: -len(t[0])):
        for _ in range(100):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    left.append(dirpath)
                    break
                time.sleep(0.02)
        else:
            left.append(dirpath)
    return left


@pytest.fixture
def scratch(prefix: str) -> Iterator[Scratch]:
    s = Scratch(f"/{prefix}/cg-{secrets.token_hex(3)}")
    try:
        yield s
    finally:
        tops = [d for d in _dirs_below(s.base) if os.path.isdir(d)]
        for top in tops:
            _thaw_tree(top)
        for child in s.children:
            if child.pid > 0:
                try:
                    os.kill(child.pid, signal.SIGKILL)
                    os.waitpid(child.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            for fd in (child.go_fd, child.out_fd):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        left = [d for top in tops for d in _rmdir_tree(top)]
        assert not left, f"cgroups left behind: {left}"


def _read(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def _first_cpu() -> str:
    return str(min(os.sched_getaffinity(0)))


def _own_cgroup_paths(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return cgroups.parse_proc_cgroup(f.read())


# -- v1 / hybrid ----------------------------------------------------------------------------

@requires_root
@requires_v1
def test_limits_are_written_and_read_back(scratch: Scratch) -> None:
    mgr = scratch.manager("c1")
    mgr.create()
    paths = mgr.paths()
    mems = _read(os.path.dirname(os.path.dirname(paths["cpuset"])), "cpuset.mems")
    mgr.set(Resources(
        memory=Memory(limit=64 * M, swap=128 * M, reservation=32 * M, swappiness=10),
        cpu=CPU(shares=512, quota=50000, period=100000, cpus=_first_cpu(), mems=mems),
        pids=Pids(limit=20),
        devices=[DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"),
                 DeviceRule(True, "c", 1, 5, "rwm")]))
    child = scratch.spawn()
    mgr.apply(child.pid)

    mem = paths["memory"]
    assert _read(mem, "memory.limit_in_bytes") == str(64 * M)
    if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
        assert _read(mem, "memory.memsw.limit_in_bytes") == str(128 * M)
    assert _read(mem, "memory.soft_limit_in_bytes") == str(32 * M)
    assert _read(mem, "memory.swappiness") == "10"
    assert _read(paths["cpu"], "cpu.shares") == "512"
    assert _read(paths["cpu"], "cpu.cfs_quota_us") == "50000"
    assert _read(paths["cpu"], "cpu.cfs_period_us") == "100000"
    assert _read(paths["cpuset"], "cpuset.cpus") == _first_cpu()
    assert _read(paths["pids"], "pids.max") == "20"
    assert _read(paths["devices"], "devices.list").splitlines() == ["c 1:3 rwm", "c 1:5 rwm"]

    # The child is in our cgroup in every hierarchy (and in unified on hybrid).
    own = _own_cgroup_paths(child.pid)
    for ctrl in paths:
        assert own[ctrl] == f"{scratch.base}/c1", ctrl
    assert mgr.pids() == [child.pid]
    assert mgr.exists()

    stats = mgr.stats()
    assert stats.pids.current == 1 and stats.pids.limit == 20
    assert stats.memory.usage.limit == 64 * M
    assert cgroups.stats_to_json(stats)["pids"] == {"current": 1, "limit": 20}

    # Updates: shrink memory+swap (limit first), then grow it (memsw first).
    mgr.set(Resources(memory=Memory(limit=32 * M, swap=48 * M)))
    mgr.set(Resources(memory=Memory(limit=256 * M, swap=512 * M)))
    assert _read(mem, "memory.limit_in_bytes") == str(256 * M)

    # A value the kernel refuses names the file and the value.
    with pytest.raises(InvalidArgument, match="cannot set cpuset cpus to 4095: write "
                                              ".*cpuset.cpus"):
        mgr.set(Resources(cpu=CPU(cpus="4095")))


@requires_root
@requires_v1
def test_blkio_weight_where_the_scheduler_has_one(scratch: Scratch) -> None:
    mgr = scratch.manager("c1")
    mgr.create()
    d = mgr.paths()["blkio"]
    names = [n for n in ("blkio.weight", "blkio.bfq.weight") if os.path.exists(f"{d}/{n}")]
    if not names:
        with pytest.raises(NotSupported, match="neither blkio.weight nor blkio.bfq.weight"):
            mgr.set(Resources(block_io=BlockIO(weight=300)))
        return
    mgr.set(Resources(block_io=BlockIO(weight=300)))
    assert _read(d, names[0]).split()[-1] == "300"


@requires_root
@requires_v1
def test_v1_device_rules_are_enforced(scratch: Scratch) -> None:
    mgr = scratch.manager("dev")
    mgr.create()
    mgr.set(Resources(devices=[DeviceRule(False), DeviceRule(True, "c", 1, 5, "rwm")]))

    def work(out: int) -> None:
        res = []
        for path in ("/dev/null", "/dev/zero"):
            try:
                os.close(os.open(path, os.O_RDONLY))
                res.append("ok")
            except OSError as exc:
                res.append(errno.errorcode[exc.errno or 0])
        os.write(out, " ".join(res).encode())

    child = scratch.spawn(work)
    mgr.apply(child.pid)
    child.go()
    assert child.read() == b"EPERM ok"
    assert os.WEXITSTATUS(child.wait()) == 0


@requires_root
@requires_v1
def test_oom_kill_is_counted(scratch: Scratch) -> None:
    mgr = scratch.manager("oom")
    mgr.create()
    swap = 16 * M if os.path.exists(
        os.path.join(mgr.paths()["memory"], "memory.memsw.limit_in_bytes")) else None
    mgr.set(Resources(memory=Memory(limit=16 * M, swap=swap)))
    assert mgr.oom_kill_count() == 0

    def work(out: int) -> None:
        hog = bytearray(b"\x01") * (64 * M)      # every page touched
        os.write(out, str(len(hog)).encode())

    child = scratch.spawn(work)
    mgr.apply(child.pid)
    child.go()
    status = child.wait(timeout=60)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert mgr.oom_kill_count() >= 1


@requires_root
@requires_v1
def test_freeze_and_thaw(scratch: Scratch) -> None:
    mgr = scratch.manager("frz")
    mgr.create()

    def work(out: int) -> None:
        while True:
            os.write(out, b".")
            time.sleep(0.005)

    child = scratch.spawn(work)
    mgr.apply(child.pid)
    child.go()
    assert child.read()
    mgr.freeze()
    assert mgr.frozen()
    while child.read(timeout=0.05):       # what was written before the freeze
        pass
    assert child.read(timeout=0.3) == b""  # nothing while frozen
    mgr.thaw()
    assert not mgr.frozen()
    assert child.read(timeout=5)


@requires_root
@requires_v1
def test_kill_all(scratch: Scratch) -> None:
    mgr = scratch.manager("kill")
    mgr.create()
    kids = [scratch.spawn(), scratch.spawn()]
    for kid in kids:
        mgr.apply(kid.pid)
    mgr.kill_all(signal.SIGTERM)
    for kid in kids:
        status = kid.wait()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert not mgr.frozen()

    # A paused cgroup: SIGKILL still lands, because kill_all thaws after it.
    kid = scratch.spawn()
    mgr.apply(kid.pid)
    mgr.freeze()
    mgr.kill_all(signal.SIGKILL)
    status = kid.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not mgr.frozen()
    assert mgr.pids() == []


@requires_root
@requires_v1
def test_destroy_removes_sub_cgroups(scratch: Scratch) -> None:
    mgr = scratch.manager("c1")
    mgr.create()
    sub = scratch.manager("c1/exec")
    sub.create()
    kid = scratch.spawn()
    sub.apply(kid.pid)
    assert mgr.pids() == [kid.pid]          # recursive
    mgr.kill_all(signal.SIGKILL)
    kid.wait()
    mgr.destroy()
    assert not mgr.exists() and not sub.exists()
    for d in mgr.paths().values():
        assert os.path.isdir(os.path.dirname(d))     # the parent is not the manager's
    mgr.destroy()


# -- the eBPF device filter ------------------------------------------------------------------

CG2 = _cgroup2_root()


@requires_root
@pytest.mark.skipif(CG2 is None, reason="no cgroup2 mounted")
def test_ebpf_device_filter(scratch: Scratch) -> None:
    assert CG2 is not None
    # No controller is needed: the device "controller" is a BPF program.
    mgr = scratch.manager("bpf", mode=Mode.V2, root=CG2, controllers=())
    mgr.create()
    d = mgr.paths()[""]
    assert d == os.path.join(CG2, scratch.base.lstrip("/"), "bpf")
    rules = [DeviceRule(True), DeviceRule(False, "c", 1, 3, "rwm")]
    mgr.set(Resources(devices=rules))
    mgr.set(Resources(devices=rules))       # an update replaces ketch's program

    from ketch.linux.cgroups import _ebpf
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(_ebpf.query_programs(fd)) == 1
    finally:
        os.close(fd)

    def work(out: int) -> None:
        res = []
        for path in ("/dev/null", "/dev/zero"):
            try:
                os.close(os.open(path, os.O_RDONLY))
                res.append("ok")
            except OSError as exc:
                res.append(errno.errorcode[exc.errno or 0])
        os.write(out, " ".join(res).encode())

    child = scratch.spawn(work)
    mgr.apply(child.pid)
    child.go()
    assert child.read() == b"EPERM ok"
    assert os.WEXITSTATUS(child.wait()) == 0

    # Allow everything again: /dev/null opens.
    mgr.set(Resources(devices=[DeviceRule(True)]))
    child = scratch.spawn(work)
    mgr.apply(child.pid)
    child.go()
    assert child.read() == b"ok ok"
    child.wait()
    mgr.destroy()
    assert not mgr.exists()
