"""ketchd's containers judged by the docker CLI (28.x): create, start, stop, kill, wait,
rm, ps, inspect, top, pause, rename, restart policies, and live restore.

Most containers run with ``--network none``; the bridge tests use the daemon's
private default bridge (a prefixed interface and nft table). Each test gets a private ketchd whose cgroup parent is under the
session prefix; the fixture deletes whatever containers are left, stops the
supervisor by its pid and removes its cgroups and mounts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import BIN
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    docker,
    start_ketchd,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

NONE = ("--network", "none")


@pytest.fixture
def ketchd(loaded_ketchd: Ketchd) -> Ketchd:
    """A private ketchd with busybox loaded (tests/integration/conftest.py)."""
    return loaded_ketchd


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def inspect(k: Ketchd, name: str) -> dict:
    return json.loads(ok(docker(k, "inspect", name)))[0]


def wait_for(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_create_start_logs_exit(ketchd: Ketchd) -> None:
    k = ketchd
    cid = ok(docker(k, "create", *NONE, "--name", "c1", "busybox", "sh", "-c",
                    "echo out; echo err >&2; exit 3")).strip()
    assert len(cid) == 64
    assert ok(docker(k, "ps", "-a", "--format", "{{.Names}} {{.Status}}")) == "c1 Created\n"
    ok(docker(k, "start", "c1"))
    assert ok(docker(k, "wait", "c1")).strip() == "3"
    doc = inspect(k, "c1")
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 3
    assert doc["Name"] == "/c1" and doc["Path"] == "sh"
    assert doc["Config"]["Image"] == "busybox"
    assert doc["HostConfig"]["NetworkMode"] == "none"
    lines = [json.loads(x) for x in Path(doc["LogPath"]).read_text().splitlines()]
    assert {(x["stream"], x["log"]) for x in lines} == {("stdout", "out\n"),
                                                       ("stderr", "err\n")}
    assert ok(docker(k, "ps", "-a", "--format", "{{.Status}}")).startswith("Exited (3) ")


def test_run_detached_stop_kill_rm(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "s1", "--stop-timeout", "1", "busybox",
              "sleep", "1000"))
    assert ok(docker(k, "ps", "--format", "{{.Names}} {{.State}}")) == "s1 running\n"
    top = ok(docker(k, "top", "s1"))
    assert "sleep 1000" in top
    out = docker(k, "rm", "s1")
    assert out.returncode == 1
    assert 'cannot remove container "/s1": container is running' in out.stderr
    # busybox sleep as pid 1 ignores SIGTERM: stop falls back to SIGKILL after 1 s.
    ok(docker(k, "stop", "s1"))
    assert inspect(k, "s1")["State"]["ExitCode"] == 137
    out = docker(k, "kill", "s1")
    assert out.returncode == 1 and "is not running" in out.stderr
    ok(docker(k, "run", "-d", *NONE, "--name", "t1", "busybox", "sh", "-c",
              "trap 'exit 7' USR1; while true; do sleep 0.1; done"))
    ok(docker(k, "kill", "-s", "USR1", "t1"))
    assert ok(docker(k, "wait", "t1")).strip() == "7"
    ok(docker(k, "rm", "t1"))
    ok(docker(k, "start", "s1"))
    ok(docker(k, "kill", "s1"))
    assert ok(docker(k, "wait", "s1")).strip() == str(128 + signal.SIGKILL)
    ok(docker(k, "rm", "s1"))
    assert ok(docker(k, "ps", "-aq")) == ""
    out = docker(k, "inspect", "s1")
    assert out.returncode == 1 and "No such object: s1" in out.stderr


def test_pause_rename_restart_policy(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "p1", "busybox", "sleep", "1000"))
    ok(docker(k, "pause", "p1"))
    assert ok(docker(k, "ps", "--format", "{{.Status}}")).strip().endswith("(Paused)")
    out = docker(k, "pause", "p1")
    assert out.returncode == 1 and "is already paused" in out.stderr
    ok(docker(k, "unpause", "p1"))
    ok(docker(k, "rename", "p1", "p2"))
    assert inspect(k, "p2")["Name"] == "/p2"
    out = docker(k, "run", "-d", *NONE, "--name", "p2", "busybox", "true")
    assert out.returncode == 125 and 'The container name "/p2" is already in use' in out.stderr
    ok(docker(k, "rm", "-f", "p2"))

    ok(docker(k, "run", "-d", *NONE, "--name", "r1", "--restart", "on-failure:2", "busybox",
              "sh", "-c", "exit 4"))
    wait_for(lambda: inspect(k, "r1")["RestartCount"] == 2
             and inspect(k, "r1")["State"]["Status"] == "exited")
    time.sleep(0.5)
    assert inspect(k, "r1")["RestartCount"] == 2


def test_errors_as_dockerd(ketchd: Ketchd) -> None:
    k = ketchd
    out = docker(k, "run", *NONE, "nosuchimage")
    assert out.returncode == 125
    assert "Unable to find image 'nosuchimage:latest' locally" in out.stderr
    out = docker(k, "run", "-d", *NONE, "busybox", "/no/such/binary")
    assert out.returncode == 127, out.stderr
    out = docker(k, "create", *NONE, "--name", "bad name", "busybox")
    assert out.returncode == 1 and "Invalid container name (bad name)" in out.stderr
    out = docker(k, "start", "nosuch")
    assert out.returncode == 1 and "No such container: nosuch" in out.stderr
    out = docker(k, "run", "-d", "--network", "nosuchnet", "busybox", "true")
    assert out.returncode == 125 and "network nosuchnet not found" in out.stderr


def test_containers_survive_a_daemon_restart(ketchd: Ketchd,
                                             start_ketchd: Callable[..., Ketchd]  # noqa: F811
                                             ) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "live", "busybox", "sh", "-c",
              "while true; do echo tick; sleep 0.1; done"))
    ok(docker(k, "run", "-d", *NONE, "--name", "short", "busybox", "sleep", "1"))
    pid = inspect(k, "live")["State"]["Pid"]
    os.kill(k.proc.pid, signal.SIGKILL)
    k.proc.wait()
    time.sleep(1.5)  # "short" exits while no daemon runs
    with open(k.dir / "ketchd.log", "ab") as log:
        k.proc = subprocess.Popen(k.args(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: docker(k, "version").returncode == 0, 20)
    except AssertionError:
        raise AssertionError(f"ketchd did not come back:\n{k.log()[-3000:]}") from None
    doc = inspect(k, "live")
    assert doc["State"]["Status"] == "running" and doc["State"]["Pid"] == pid
    short = inspect(k, "short")["State"]
    assert short["Status"] == "exited" and short["ExitCode"] == 0
    log_path = Path(doc["LogPath"])
    before = log_path.read_text().count("tick")
    time.sleep(0.5)
    assert log_path.read_text().count("tick") > before  # still logging
    ok(docker(k, "rm", "-f", "live", "short"))


def test_ketch_cli_sees_the_same(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "x1", "busybox", "sleep", "1000"))
    env = {**os.environ, "KETCH_HOST": k.host}
    out = subprocess.run([str(BIN / "ketch"), "info"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert " Running: 1\n" in out.stdout
    ok(docker(k, "rm", "-f", "x1"))


def test_default_bridge_publish_and_reach(ketchd: Ketchd) -> None:
    import urllib.request

    k = ketchd
    ok(docker(k, "run", "-d", "--name", "web", "-p", "127.0.0.1::80", "busybox",
              "httpd", "-f", "-p", "80", "-h", "/etc"))
    doc = inspect(k, "web")
    ip = doc["NetworkSettings"]["IPAddress"]
    assert ip and doc["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ip
    port = doc["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
    assert ok(docker(k, "port", "web")).strip() == f"80/tcp -> 127.0.0.1:{port}"
    body = b""
    deadline = time.monotonic() + 10
    while not body and time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2).read()
        except OSError:
            time.sleep(0.1)
    assert body.decode().strip() == doc["Config"]["Hostname"]
    # Another container reaches it by address; its /etc/hosts names itself.
    out = ok(docker(k, "run", "--rm", "busybox", "sh", "-c",
                    f"ping -c1 -W2 {ip} >/dev/null && echo reached; tail -1 /etc/hosts"))
    assert out.splitlines()[0] == "reached"
    assert out.splitlines()[1].split("\t")[0].startswith(ip.rsplit(".", 1)[0])
    out = docker(k, "run", "-d", "--name", "clash", "-p", f"127.0.0.1:{port}:80", "busybox",
                 "true")
    assert out.returncode == 125 and "port is already allocated" in out.stderr
    ok(docker(k, "rm", "-f", "web", "clash"))
    assert inspect_gone(k, "web")


def inspect_gone(k: Ketchd, name: str) -> bool:
    return docker(k, "inspect", name).returncode == 1


def test_init_and_oom_kill(ketchd: Ketchd) -> None:
    k = ketchd
    out = ok(docker(k, "run", "--rm", "--init", *NONE, "busybox", "ps", "-o", "pid,args"))
    assert "1 /sbin/docker-init -- ps" in out
    for _ in range(2):  # every time, not once
        ok(docker(k, "run", "-d", *NONE, "--name", "oom", "-m", "32m", "--memory-swap", "32m",
                  "busybox", "sh", "-c", "x=a; while true; do x=$x$x; done"))
        assert ok(docker(k, "wait", "oom")).strip() == "137"
        state = inspect(k, "oom")["State"]
        assert state["OOMKilled"] is True and state["ExitCode"] == 137
        ok(docker(k, "rm", "oom"))
