"""``ketch system reset``: remove everything one ketchd made, kernel state included.

For tests, benchmarks, demos and users who want a clean slate: a daemon
leaves containers running on purpose (they outlive it), so stopping it is
not enough. In order:

1. ketchd, by the pid in its pidfile (SIGTERM, then SIGKILL);
2. every container in the runtime's state (killed and deleted: cgroups and
   runtime state go with them);
3. the default network's recorded kernel objects (veths, bridge, nft table);
4. the supervisor, by its pidfile;
5. every mount under the data root and exec root (rootfs overlays, volumes);
6. the cgroups under the daemon's cgroup parent and the supervisor's;
7. the directories.

Only what this daemon recorded is touched: processes by their pidfiles,
interfaces and rules by the network's state file, mounts under its own dirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class ResetReport:
    stopped: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _pid_of(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _stop(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM, wait, then SIGKILL; True if a process was there."""
    if not pid or not _alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
    return True


def _mounts_under(dirs: list[str]) -> list[str]:
    from ketch.linux.mount import read_mountinfo

    prefixes = [os.path.realpath(d) + "/" for d in dirs if d]
    points = [m.mountpoint for m in read_mountinfo()]
    return sorted({p for p in points if any(p.startswith(x) for x in prefixes)},
                  key=len, reverse=True)


def _remove_cgroup_tree(path: str) -> list[str]:
    """Leaf first; a cgroup whose child or last task just went may answer EBUSY
    for a moment while the kernel releases it, so that is retried briefly."""
    import errno

    removed = []
    for dirpath, _dirs, _files in sorted(os.walk(path, topdown=False),
                                         key=lambda t: -len(t[0])):
        deadline = time.monotonic() + 2
        while True:
            try:
                os.rmdir(dirpath)
                removed.append(dirpath)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
    return removed


def reset(root: str, exec_root: str, *, pidfile: str | None = None,
          cgroup_parent: str | None = None, daemon_cgroup: str | None = None,
          remove_dirs: bool = True) -> ResetReport:
    """Remove what the daemon with ``root``/``exec_root`` made (see the module doc).
    ``daemon_cgroup`` is the cgroup an auto-started ketchd ran in (removed once empty)."""
    rep = ResetReport()
    pidfile = pidfile or os.path.join(exec_root, "ketchd.pid")
    if _stop(_pid_of(pidfile)):
        rep.stopped.append("ketchd")
    runtime = os.path.join(exec_root, "runtime")
    if os.path.isdir(runtime):
        from ketch.runtime.container import Runtime

        rt = Runtime(runtime)
        for st in rt.containers():
            try:
                rt.delete(st.id, force=True)
                rep.containers.append(st.id)
            except Exception as exc:  # noqa: BLE001 - keep cleaning, report it
                rep.errors.append(f"container {st.id}: {exc}")
    network = os.path.join(root, "network")
    if os.path.isdir(network):
        from ketch.network import macvlan
        from ketch.network.bridge import cleanup_leftovers

        try:
            rep.network = cleanup_leftovers(network, keep=())
            rep.network += macvlan.cleanup_leftovers(network, (), keep_network_ids=())
        except Exception as exc:  # noqa: BLE001
            rep.errors.append(f"network: {exc}")
    if _stop(_pid_of(os.path.join(exec_root, "supervisor.pid"))):
        rep.stopped.append("supervisor")
    for point in _mounts_under([root, exec_root]):
        out = subprocess.run(["umount", "-l", point], capture_output=True, text=True,
                             check=False)
        if out.returncode == 0:
            rep.mounts.append(point)
        else:
            rep.errors.append(f"umount {point}: {out.stderr.strip()}")
    names = []
    if cgroup_parent and cgroup_parent.strip("/"):
        names += [cgroup_parent.strip("/"), cgroup_parent.strip("/") + "-supervisor"]
    if daemon_cgroup and daemon_cgroup.strip("/"):
        names.append(daemon_cgroup.strip("/"))
    if names:
        base = "/sys/fs/cgroup"
        tops = [base] + [os.path.join(base, h) for h in sorted(os.listdir(base))
                         if os.path.isdir(os.path.join(base, h))]
        for top in tops:
            for name in names:
                path = os.path.join(top, name)
                if os.path.isdir(path) and os.path.exists(os.path.join(path, "cgroup.procs")):
                    rep.cgroups += _remove_cgroup_tree(path)
    if remove_dirs:
        for d in (exec_root, root):
            shutil.rmtree(d, ignore_errors=True)
    return rep
