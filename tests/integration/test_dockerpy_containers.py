"""ketchd's containers judged by docker-py 7: run/create/start/stop/logs/exec_run/
attach_socket/wait/top/kill/remove/prune, and volumes.

A private ketchd per test (fixtures of test_daemon_system/test_daemon_images),
busybox loaded from the session's archive; containers on the daemon's private
default bridge unless they need none.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_daemon_images import (  # noqa: F401 - fixtures
    busybox_archive,
    ketchd,
)
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    Ketchd,
    start_ketchd,
)

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.root


@pytest.fixture
def client(ketchd: Ketchd, busybox_archive: Path) -> Iterator[docker.DockerClient]:  # noqa: F811
    c = docker.DockerClient(base_url=ketchd.host, timeout=60)
    with open(busybox_archive, "rb") as f:
        c.images.load(f.read())
    yield c
    for ctr in c.containers.list(all=True):
        ctr.remove(force=True)
    c.close()


def test_run_logs_wait_remove(client: docker.DockerClient) -> None:
    out = client.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"],
                                network_mode="none", remove=True, stderr=True)
    assert out == b"out\nerr\n"
    c = client.containers.run("busybox", ["sh", "-c", "echo a; sleep 0.3; echo b; exit 3"],
                              detach=True, name="pyrun")
    assert c.wait(timeout=30)["StatusCode"] == 3
    assert c.logs() == b"a\nb\n"
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 3
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("pyrun")


def test_exec_top_stream_logs(client: docker.DockerClient) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "while true; do echo tick; sleep 0.1; "
                                          "done"], detach=True, network_mode="none")
    res = c.exec_run(["sh", "-c", "echo hi; exit 5"])
    assert (res.exit_code, res.output) == (5, b"hi\n")
    res = c.exec_run("id -u", user="nobody")
    assert res.output.strip() == b"65534"
    top = c.top()
    assert "PID" in top["Titles"] and any("sh -c" in " ".join(p) for p in top["Processes"])
    stream = c.logs(stream=True, follow=True)
    got = [next(stream) for _ in range(3)]
    assert all(g == b"tick\n" for g in got)
    stream.close()
    c.kill()
    assert c.wait(timeout=30)["StatusCode"] == 137


def test_attach_socket_half_close(client: docker.DockerClient) -> None:
    c = client.containers.create("busybox", ["cat"], stdin_open=True, network_mode="none")
    sock = c.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
    c.start()
    raw = sock._sock  # noqa: SLF001 - docker-py's documented way to the socket
    raw.sendall(b"through cat\n")
    raw.shutdown(socket.SHUT_WR)
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = raw.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    # Framed: stream 1, three zero bytes, length, payload.
    assert data[:1] == b"\x01" and data[8:] == b"through cat\n"
    assert c.wait(timeout=30)["StatusCode"] == 0


def test_stop_prune_volumes(client: docker.DockerClient) -> None:
    vol = client.volumes.create("pyvol")
    c = client.containers.run("busybox", ["sh", "-c", "echo data > /v/f; sleep 100"],
                              detach=True, volumes={"pyvol": {"bind": "/v", "mode": "rw"}},
                              network_mode="none")
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited"
    out = client.containers.run("busybox", ["cat", "/v/f"], remove=True,
                                volumes={"pyvol": {"bind": "/v", "mode": "ro"}},
                                network_mode="none")
    assert out == b"data\n"
    with pytest.raises(docker.errors.APIError) as info:
        vol.remove()
    assert info.value.status_code == 409
    report = client.containers.prune()
    assert c.id in (report["ContainersDeleted"] or [])
    vol.remove()


def test_bridge_network_settings(client: docker.DockerClient) -> None:
    c = client.containers.run("busybox", ["sleep", "100"], detach=True,
                              ports={"80/tcp": ("127.0.0.1", None)})
    c.reload()
    ns = c.attrs["NetworkSettings"]
    assert ns["IPAddress"] and ns["Networks"]["bridge"]["Gateway"]
    binding = ns["Ports"]["80/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1" and int(binding["HostPort"]) > 0
    assert c.ports["80/tcp"][0]["HostPort"] == binding["HostPort"]


def test_attach_with_logs(client: docker.DockerClient) -> None:
    # dockerd's attach with logs=1: the log so far, then (stream=1) what comes live;
    # a stopped container gives its log. Each attach is an "attach" event.
    since = int(time.time())
    done = client.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"],
                                 network_mode="none", detach=True)
    done.wait(timeout=30)
    assert done.attach(stdout=True, stderr=True, logs=True, stream=False) == b"out\nerr\n"
    assert done.attach(stdout=False, stderr=True, logs=True, stream=False) == b"err\n"
    live = client.containers.run("busybox", ["sh", "-c", "echo before; read x; echo after"],
                                 network_mode="none", detach=True, stdin_open=True)
    deadline = time.monotonic() + 30   # a loaded machine (the whole suite) is slow
    while b"before" not in live.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    sock = live.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1, "logs": 1})
    raw = sock._sock  # noqa: SLF001 - docker-py hands back its socket wrapper
    raw.sendall(b"go\n")
    got = b""
    while b"after" not in got and time.monotonic() < deadline:
        chunk = raw.recv(4096)
        if not chunk:
            break
        got += chunk
    raw.close()
    # stdcopy frames: the replayed line, then the live one.
    assert got.index(b"before") < got.index(b"after"), got
    live.wait(timeout=30)
    actions = [e["Action"] for e in client.events(since=since, until=int(time.time()) + 1,
                                                  decode=True,
                                                  filters={"container": live.id})]
    assert actions[:2] == ["create", "start"] and "attach" in actions
    done.remove()
    live.remove()
