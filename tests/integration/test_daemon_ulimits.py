"""daemon.json's default-ulimits reach containers, and their inspect, as with dockerd 20.10
(checked there: `dockerd --default-ulimit nofile=1111:2222`, then `docker create` shows
[{"Name":"nofile","Hard":2222,"Soft":1111}] in HostConfig.Ulimits, after a container's own)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.integration.test_daemon_system import DOCKER, Ketchd, docker

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]


def test_default_ulimits(start_ketchd: Callable[..., Ketchd], busybox_archive: Path) -> None:
    k = start_ketchd({"default-ulimits": {"nofile": {"Name": "nofile", "Soft": 1111,
                                                     "Hard": 2222}}})
    assert docker(k, "load", "-i", str(busybox_archive)).returncode == 0
    out = docker(k, "run", "--rm", "--network", "none", "busybox", "sh", "-c",
                 "ulimit -n; ulimit -Hn")
    assert (out.returncode, out.stdout.split()) == (0, ["1111", "2222"]), out.stderr
    out = docker(k, "run", "--rm", "--network", "none", "--ulimit", "nofile=64:128",
                 "busybox", "sh", "-c", "ulimit -n; ulimit -Hn")
    assert out.stdout.split() == ["64", "128"]          # the container's own wins
    assert docker(k, "create", "--name", "u1", "--network", "none", "--ulimit",
                  "nproc=10:20", "busybox", "true").returncode == 0
    doc = json.loads(docker(k, "inspect", "u1").stdout)[0]
    assert doc["HostConfig"]["Ulimits"] == [{"Name": "nproc", "Hard": 20, "Soft": 10},
                                            {"Name": "nofile", "Hard": 2222, "Soft": 1111}]
    assert docker(k, "rm", "u1").returncode == 0
