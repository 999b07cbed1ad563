"""200 containers through every path leave nothing behind: fds and pipes of ketchd
and the supervisor, mounts, cgroups, veths, processes.

Driven by docker-py (no CLI start-up per container). Counts are taken after a
warm-up container, so lazily opened things (SQLite connections, the netlink
socket, the nftables context) are already there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import PREFIX
from tests.integration.test_daemon_images import (  # noqa: F401 - fixtures
    busybox_archive,
    ketchd,
)
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    Ketchd,
    start_ketchd,
)

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def client(ketchd: Ketchd, busybox_archive: Path) -> Iterator[docker.DockerClient]:  # noqa: F811
    c = docker.DockerClient(base_url=ketchd.host, timeout=60)
    with open(busybox_archive, "rb") as f:
        c.images.load(f.read())
    yield c
    for ctr in c.containers.list(all=True):
        ctr.remove(force=True)
    c.close()


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _supervisor_pid(k: Ketchd) -> int:
    return int((k.dir / "exec" / "supervisor.pid").read_text().split()[0])


def _mounts(k: Ketchd) -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if str(k.dir) in line)


def _cgroups() -> int:
    n = 0
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        base = hierarchy / PREFIX
        if base.is_dir():
            n += sum(1 for _ in base.rglob("*") if _.is_dir())
    return n


def _links() -> int:
    return len(os.listdir("/sys/class/net"))


def _snapshot(k: Ketchd) -> dict[str, int]:
    return {"ketchd fds": _fds(k.proc.pid), "supervisor fds": _fds(_supervisor_pid(k)),
            "mounts": _mounts(k), "cgroups": _cgroups(), "links": _links()}


def _settle(k: Ketchd, before: dict[str, int], timeout: float = 20) -> dict[str, int]:
    """Background veth deletion and reaping finish shortly after the last rm."""
    deadline = time.monotonic() + timeout
    now = _snapshot(k)
    while not _same(now, before) and time.monotonic() < deadline:
        time.sleep(0.2)
        now = _snapshot(k)
    return now


# ketchd's own fds may grow by a bounded amount that does not depend on the number
# of containers: its worker threads (at most min(32, cpus + 4)) each keep their
# SQLite connections. A leak per container would show hundreds.
KETCHD_FD_SLACK = 24


def _same(now: dict[str, int], before: dict[str, int]) -> bool:
    return all(now[k] == v if k != "ketchd fds" else now[k] <= v + KETCHD_FD_SLACK
               for k, v in before.items())


def test_two_hundred_containers_leave_nothing(ketchd: Ketchd,  # noqa: F811
                                              client: docker.DockerClient) -> None:
    k = ketchd
    client.containers.run("busybox", ["true"], remove=True)          # warm-up
    client.containers.run("busybox", ["true"], remove=True, network_mode="none")
    client.api.close()  # docker-py's pooled keep-alive connections are not ketchd's leaks
    before = _snapshot(k)
    for i in range(50):                                               # attached, --rm
        out = client.containers.run("busybox", ["echo", str(i)], remove=True,
                                    network_mode="none" if i % 2 else "bridge")
        assert out == f"{i}\n".encode()
    for _ in range(50):                                               # detached, exec, rm -f
        c = client.containers.run("busybox", ["sleep", "100"], detach=True,
                                  network_mode="none")
        assert c.exec_run(["true"]).exit_code == 0
        c.remove(force=True)
    for _ in range(50):                                               # created, never started
        client.containers.create("busybox", ["true"]).remove()
    for i in range(50):                                               # clients that hang up
        c = client.containers.run("busybox", ["sh", "-c", "while true; do echo x; done"],
                                  detach=True, network_mode="none")
        s = client.api.attach_socket(c.id, params={"stdout": 1, "stream": 1})
        s._sock.recv(10)  # noqa: SLF001 - the raw socket docker-py hands out
        s.close()
        logs = client.api.logs(c.id, stream=True, follow=True)
        next(logs)
        logs.close()
        if i % 10 == 0:
            stats = client.api.stats(c.id, stream=True, decode=True)
            next(stats)
            stats.close()
        c.remove(force=True)
    client.api.close()
    after = _settle(k, before)
    assert _same(after, before), (before, after)
    assert client.containers.list(all=True) == []
    # ketchd still answers, and no container process is left under the supervisor.
    assert client.ping()
    children = Path(f"/proc/{_supervisor_pid(k)}/task/{_supervisor_pid(k)}/children")
    assert children.read_text().split() == []
