"""--ipc shareable / container:<name> and --pid container:<name> through the docker CLI
against ketchd: the donor's /dev/shm is a tmpfs on the host (dockerd's mounts/shm), the
joiner sees its files, and the mount goes when the donor stops."""

from __future__ import annotations

import json

import pytest
from tests.integration.test_daemon_system import DOCKER, Ketchd, docker

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

NONE = ("--network", "none")


def _shm_mounts(k: Ketchd) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f
                if line.split()[4].startswith(str(k.root)) and "/mounts/shm" in line]


def test_shared_ipc_and_pid(loaded_ketchd: Ketchd) -> None:
    k = loaded_ketchd
    out = docker(k, "run", "-d", *NONE, "--name", "donor", "--ipc", "shareable",
                 "--shm-size", "8m", "busybox", "sh", "-c", "echo hi > /dev/shm/x; sleep 100")
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    doc = json.loads(docker(k, "inspect", "donor").stdout)[0]
    assert doc["HostConfig"]["IpcMode"] == "shareable"
    assert _shm_mounts(k) == [f"{k.root}/containers/{cid}/mounts/shm"]
    out = docker(k, "run", "--rm", *NONE, "--ipc", "container:donor", "busybox", "sh", "-c",
                 "for i in 1 2 3 4 5 6 7 8 9; do [ -e /dev/shm/x ] && break; sleep 0.2; done;"
                 " cat /dev/shm/x; df -k /dev/shm | tail -1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "hi"
    assert out.stdout.splitlines()[1].split()[1] == "8192"      # the donor's size
    out = docker(k, "run", "--rm", *NONE, "--pid", "container:donor", "busybox", "ps", "-o",
                 "pid,args")
    assert " 1 sleep 100" in out.stdout, out.stdout
    # A private IPC namespace has nothing to share: dockerd's words.
    assert docker(k, "run", "-d", *NONE, "--name", "private", "busybox", "sleep",
                  "100").returncode == 0
    out = docker(k, "run", "--rm", *NONE, "--ipc", "container:private", "busybox", "true")
    assert out.returncode == 125
    assert ("can't join IPC of container private: non-shareable IPC (hint: use "
            "IpcMode:shareable for the donor container)") in out.stderr
    assert docker(k, "stop", "-t", "0", "donor").returncode == 0
    assert _shm_mounts(k) == []
    assert docker(k, "rm", "-f", "donor", "private").returncode == 0
