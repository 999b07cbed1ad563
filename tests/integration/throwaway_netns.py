"""A network namespace for network tests, held by an ``unshare -n sleep`` we start
and killed by its pid (with anything spawned in it) when the test is done."""

from __future__ import annotations

import os
import signal
import subprocess
import time

BUSYBOX = "/bin/busybox"


class Netns:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "1000"])
        path = f"/proc/{self.proc.pid}/ns/net"
        deadline = time.monotonic() + 5
        # unshare execs sleep once the netns is made: wait until it differs from ours
        while os.readlink(path) == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not start")
            time.sleep(0.005)
        self.path = path
        self.children: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.path}", *args], capture_output=True,
                              text=True, timeout=timeout)

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["nsenter", f"--net={self.path}", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(p)
        return p

    def lo_up(self) -> None:
        subprocess.run(["nsenter", f"--net={self.path}", "ip", "link", "set", "lo", "up"],
                       check=True)

    def ping(self, ip: object, *extra: str) -> bool:
        return self.run(BUSYBOX, "ping", *extra, "-c1", "-W2", str(ip)).returncode == 0

    def links(self) -> set[str]:
        from ketch.linux.netlink import Netlink

        with Netlink(self.path) as nl:
            return {link.name for link in nl.links()}

    def kill(self) -> None:
        for p in [*self.children, self.proc]:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
