"""dockerd and ketchd each in a network namespace of their own, for the network differential tests.

A dockerd that compares networks needs its bridge and iptables; on the host's
netns it would set the FORWARD policy to DROP for everyone (reference-tools.md).
So each engine gets a fresh netns, held by a ``sleep`` this module started, and
the engine is started with ``nsenter --net=...`` (which execs it: the Popen pid is
the engine's). Both engines then see the same empty network world: the same
first free address pools (172.17 for the default bridge, 172.18, ... for user
networks), no port taken, the same unreachable upstream DNS server, and nothing
they create (bridges, veths, iptables or nft rules) can touch the host or
outlive the netns, which goes with its last process.

Teardown is by pid and path only: the engines' own teardown (engines.Dockerd.stop:
dockerd, its containerd and shims, mounts, cgroups, directory; ketch's reset
library run inside the netns for ketchd's supervisor, containers and network),
then the holder ``sleep``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.engines import Dockerd, children, cmdline, mounts_under, unmount_all
from tests.integration.test_daemon_system import Ketchd, cgroup_parent_of, stop_supervisor

NSENTER = shutil.which("nsenter") or "nsenter"
UNSHARE = shutil.which("unshare") or "unshare"


class Netns:
    """A network namespace held by a sleeping process we started."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([UNSHARE, "-n", "--", "sleep", "86400"],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.path = f"/proc/{self.proc.pid}/ns/net"
        deadline = time.monotonic() + 5
        while True:
            try:
                if os.readlink(self.path) != os.readlink("/proc/self/ns/net"):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("unshare -n did not start")
            time.sleep(0.005)
        # Containers with --network host and the embedded DNS's upstream use lo.
        res = self.run("ip", "link", "set", "lo", "up")
        if res.returncode != 0:
            self.close()
            raise RuntimeError(f"ip link set lo up in the netns: {res.stderr}")

    def argv(self, *argv: str) -> list[str]:
        return [NSENTER, f"--net={self.path}", "--", *argv]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


class NetnsDockerd(Dockerd):
    """A private dockerd with its bridge and iptables, inside ``netns``.

    engines.Dockerd keeps everything findable (base dir named with the session
    prefix, cgroups under ``cgroup_parent``) and its ``stop`` removes it; only
    the start differs: through nsenter, and without ``--bridge none --iptables=false``.
    """

    def __init__(self, base: Path, cgroup_parent: str, netns: Netns,
                 docker: str = "docker", extra: tuple[str, ...] = ()) -> None:
        super().__init__(base, cgroup_parent, runtimes={}, docker=docker)
        self.netns = netns
        self.extra = extra
        self.env.pop("DOCKER_API_VERSION", None)

    def start(self, timeout: float = 60) -> None:
        self.base.mkdir(parents=True, exist_ok=False)
        (self.base / "cli").mkdir()
        self.launch(self.netns.argv(*self.daemon_argv(*self.extra)), timeout)
        if self.containerd_pid is None and self.proc is not None:
            # nsenter exec'd dockerd, so its children are dockerd's.
            for p in children(self.proc.pid):
                if "containerd" in cmdline(p):
                    self.containerd_pid = p


_RESET = """
import sys
from ketch.daemon.reset import reset
rep = reset(sys.argv[1], sys.argv[2], pidfile=sys.argv[3], cgroup_parent=sys.argv[4],
            remove_dirs=False)
print("\\n".join(rep.errors))
"""


class NetnsKetchd:
    """A private ketchd (test_daemon_system's Ketchd: its dir, socket, daemon.json with
    a private bridge name and cgroup parent under the session prefix) inside ``netns``."""

    def __init__(self, ketchd: Ketchd, netns: Netns) -> None:
        self.k = ketchd
        self.netns = netns

    def start(self, log: Path) -> None:
        with open(log, "wb") as logf:
            self.k.proc = subprocess.Popen(self.netns.argv(*self.k.args()), stdout=logf,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> list[str]:
        """Stop ketchd by its pid, then reset its supervisor, containers, network
        state, mounts and cgroups from inside the netns; returns what went wrong."""
        problems: list[str] = []
        if self.k.proc is not None:
            self.k.stop()
        res = None
        if self.netns.proc.poll() is None:
            res = self.netns.run(sys.executable, "-c", _RESET, str(self.k.root),
                                 str(self.k.dir / "exec"), str(self.k.pidfile),
                                 cgroup_parent_of(self.k), timeout=120)
            if res.returncode != 0 or res.stdout.strip():
                problems.append(f"ketch reset in the netns: {res.stdout}{res.stderr}")
        if res is None or res.returncode != 0:
            stop_supervisor(self.k)       # the library, from here: better than nothing
        left = unmount_all(self.k.dir)
        if left:
            problems.append(f"mounts left under {self.k.dir}: {left}")
        return problems


def remove_dir(path: Path) -> list[str]:
    if mounts_under(path):
        return [f"not removing {path}: still mounted {mounts_under(path)}"]
    shutil.rmtree(path, ignore_errors=True)
    return [f"could not remove {path}"] if path.exists() else []
