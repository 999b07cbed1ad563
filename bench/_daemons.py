"""A private ketchd and a private Debian dockerd side by side, for the benchmarks.

Both run under one /tmp directory with their own root, exec-root, unix socket,
pidfile and cgroup parent, and :meth:`Daemon.stop` leaves nothing behind: the
daemon's containers removed (``docker rm -f`` of every one), the daemon
stopped by its pid; for ketchd its supervisor (which outlives ketchd by
design) stopped by its pidfile, any process left in its cgroups killed, the
cgroups removed and its private default bridge deleted; for dockerd the
containerd and shims it started killed if still there, their sockets in
/run/containerd/s removed, its cgroups removed and the host directories it
made (if they were not there before) removed. :func:`workspace` undoes
every mount under the directory and removes it.

dockerd either runs with ``--bridge none --iptables=false`` on the host's
network, or (``netns=True``) with its default bridge and iptables inside a
network namespace of its own (``unshare -n``): dockerd's bridge setup changes
the host's firewall (FORWARD policy DROP), so it must never do that on the
host's. Its socket is a file, so the docker CLI reaches it from the host's
namespace all the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))
BIN = Path(sys.executable).parent
DOCKER = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else "docker"
HEX = secrets.token_hex(3)
TAG = f"ketch-bench-{HEX}"
# ketchd's containers and its supervisor go under this cgroup (and
# "<parent>-supervisor"), not under the default /ketch other daemons may share;
# dockerd's containers under the second.
CGROUP_PARENT = f"/{TAG}"
DOCKER_CGROUP_PARENT = f"/{TAG}-docker"
# ketchd's default bridge: a private name (at most 15 characters), so it never
# meets another daemon's, and its own nftables table (ketch_<name>).
BRIDGE = f"kb{HEX}"
# Created by containerd/dockerd whatever their roots say; removed afterwards
# if they were not there before (children first, directories only if empty).
DOCKER_HOST_PATHS = ["/run/containerd/s", "/run/containerd", "/run/docker/plugins",
                     "/run/docker"]


@dataclass
class Daemon:
    name: str
    dir: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    host_paths: dict[str, bool] = field(default_factory=dict)  # path -> existed before

    @property
    def sock(self) -> Path:
        return self.dir / "d.sock"

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}",
               "KETCH_HOST": f"unix://{self.sock}", "DOCKER_CONFIG": str(self.dir / "cli")}
        for k in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_API_VERSION"):
            env.pop(k, None)
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.name == "dockerd":
            self.host_paths = {p: os.path.lexists(p) for p in DOCKER_HOST_PATHS}
        with open(self.dir / "daemon.log", "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            if self.sock.exists():
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(str(self.sock))
                    if self.cli("version", check=False).returncode == 0:
                        return
                except OSError:
                    pass
                finally:
                    s.close()
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not come up on {self.sock}:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "daemon.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def cli(self, *args: str, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args)}: {p.stderr.strip()}")
        return p

    def remove_containers(self) -> None:
        """``docker rm -f`` of every container the daemon has (volumes too)."""
        ids = self.cli("ps", "-aq", "--no-trunc", check=False, timeout=60).stdout.split()
        if ids:
            self.cli("rm", "-fv", *ids, check=False, timeout=300)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.remove_containers()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.name == "ketchd":
            stop_supervisor(self.dir / "exec")
            kill_cgroup_processes(CGROUP_PARENT)
            remove_cgroups(CGROUP_PARENT)
            remove_bridge(self.dir / "root" / "network")
        else:
            # dockerd stops its containerd, and containerd its shims; not when
            # one of them was killed. Whatever is left mentions our directory.
            kill_pids(pids_mentioning(str(self.dir)))
            kill_cgroup_processes(DOCKER_CGROUP_PARENT)
            remove_cgroups(DOCKER_CGROUP_PARENT)
            remove_shim_sockets(self.dir / "exec")
            for p in DOCKER_HOST_PATHS:
                if self.host_paths.get(p, True) or not os.path.lexists(p):
                    continue
                with contextlib.suppress(OSError):
                    os.rmdir(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)


def stop_supervisor(exec_root: Path) -> None:
    """ketchd's supervisor outlives ketchd by design (live restore): stop it by its pid."""
    try:
        pid = int((exec_root / "supervisor.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return  # exited; its parent (init) reaps it
        except (OSError, IndexError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _cgroup_dirs(parent: str) -> Iterator[Path]:
    """Every directory of ``parent`` and ``parent-supervisor``, in every hierarchy, leaves first."""
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        return
    tops = [root / parent.lstrip("/")]
    tops += [h / n.lstrip("/") for h in root.iterdir() if h.is_dir()
             for n in (parent, parent + "-supervisor")]
    seen: set[Path] = set()
    for top in tops:
        if not top.is_dir() or top.resolve() in seen or not (top / "cgroup.procs").exists():
            continue
        seen.add(top.resolve())
        yield from sorted((p for p in top.rglob("*") if p.is_dir()),
                          key=lambda p: len(p.parts), reverse=True)
        yield top


def kill_cgroup_processes(parent: str) -> None:
    """SIGKILL whatever still runs in our cgroups (containers of a stopped supervisor)."""
    pids: set[int] = set()
    for d in _cgroup_dirs(parent):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
    pids.discard(os.getpid())
    kill_pids(sorted(pids))


def remove_cgroups(parent: str) -> None:
    """The (empty) cgroups made under our private parent, in every hierarchy."""
    for d in _cgroup_dirs(parent):
        with contextlib.suppress(OSError):
            d.rmdir()


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_mentioning(text: str) -> list[int]:
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc")
            if p.isdigit() and int(p) != me and text in cmdline(int(p))]


def remove_shim_sockets(exec_root: Path) -> None:
    """Sockets in /run/containerd/s of our shims (containerd 1.6 puts them there
    whatever the exec-root; a shim that exits normally removes its own)."""
    task_dir = exec_root / "containerd" / "daemon" / "io.containerd.runtime.v2.task"
    for f in task_dir.glob("*/*/address"):
        with contextlib.suppress(OSError):
            addr = f.read_text().strip()
            if addr.startswith("unix:///run/containerd/s/"):
                os.unlink(addr[len("unix://"):])


def remove_bridge(network_state: Path) -> None:
    """ketchd's private default bridge and nft table, once ketchd and its containers are gone."""
    if not network_state.is_dir():
        return
    from ketch.network.bridge import cleanup_leftovers

    try:
        cleanup_leftovers(str(network_state))
    except Exception as exc:  # noqa: BLE001 - cleanup goes on; say what is left
        print(f"  warning: ketchd's bridge {BRIDGE} not fully removed: {exc}", file=sys.stderr)


def ketchd(base: Path, bridge: str = BRIDGE) -> Daemon:
    d = base / "ketchd"
    d.mkdir(parents=True)
    (d / "daemon.json").write_text(json.dumps({"cgroup-parent": CGROUP_PARENT,
                                               "bridge": bridge}))
    return Daemon("ketchd", d, [str(BIN / "ketchd"), "--root", str(d / "root"),
                                "--exec-root", str(d / "exec"), "--host", f"unix://{d}/d.sock",
                                "--pidfile", str(d / "pid"),
                                "--config-file", str(d / "daemon.json")])


def dockerd(base: Path, *, netns: bool = False) -> Daemon:
    """``netns``: its default bridge and iptables, in a network namespace of its own."""
    d = base / "dockerd"
    d.mkdir(parents=True)
    (d / "daemon.json").write_text("{}")
    net = [] if netns else ["--bridge", "none", "--iptables=false"]
    argv = ["dockerd", "--data-root", str(d / "root"), "--exec-root", str(d / "exec"),
            "--pidfile", str(d / "pid"), "-H", f"unix://{d}/d.sock", *net,
            "--cgroup-parent", DOCKER_CGROUP_PARENT,
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--config-file", str(d / "daemon.json")]
    # unshare execs dockerd (no fork): the pid we hold is dockerd's.
    return Daemon("dockerd", d, (["unshare", "-n", "--"] if netns else []) + argv)


def unmount_under(base: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    prefix = str(base) + "/"
    for mp in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """One private directory; on any exit mounts under it are undone and it is removed
    (stop the daemons first, inside it)."""
    base = Path(tempfile.mkdtemp(prefix=f"{TAG}-", dir="/tmp"))
    try:
        yield base
    finally:
        unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def end_on_signals() -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does, through the finally blocks
    (SIGINT too when the shell started us with it ignored, as for ``cmd &``)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
