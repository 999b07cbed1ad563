"""The supervisor writing a local log: rotation with compression done between
loop turns while the container keeps writing, and across an upgrade (re-exec in
place) with the log's state carried over."""

from __future__ import annotations

import gzip
import signal
import time
from pathlib import Path

import pytest
from tests.integration.test_supervisor import sup  # noqa: F401 - a fixture

from ketch.engine import locallog
from ketch.engine.logread import read_logs
from ketch.engine.supervisor_client import SyncClient, request_upgrade

pytestmark = pytest.mark.root

TICKS = "i=0; while true; do echo tick $i; i=$((i+1)); usleep 2000; done"


def local_path(root: Path, cid: str) -> Path:
    return root / "containers" / cid / "local-logs" / "container.log"


def numbers(path: Path) -> list[int]:
    return [int(r.text.split()[1]) for r in read_logs(str(path))]


def wait_for_files(path: Path, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(list(path.parent.glob("container.log.*.gz"))) < n:
        assert time.monotonic() < deadline, sorted(p.name for p in path.parent.iterdir())
        time.sleep(0.02)


def test_rotation_compression_and_upgrade(sup, bundles) -> None:  # noqa: F811
    b = bundles.make(["sh", "-c", TICKS], container_id="lt")
    path = local_path(sup.root, "lt")
    with SyncClient(sup.sock) as c:
        pid = c.call("create", {"id": "lt", "bundle": str(b), "log": {
            "driver": "local", "path": str(path),
            "opts": {"max-size": "2k", "max-file": "100"}}})["pid"]
        sup.pids.add(pid)
        c.call("start", {"id": "lt"})
        wait_for_files(path, 3)
        assert request_upgrade(str(sup.exec_root)) == sup.proc.pid
    with SyncClient(sup.sock) as c:
        before = len(list(path.parent.glob("container.log.*.gz")))
        wait_for_files(path, before + 3)
        c.call("kill", {"id": "lt", "signal": signal.SIGKILL})
        assert c.call("wait", {"id": "lt"})["exitCode"] == 137
    names = sorted(p.name for p in path.parent.iterdir())
    assert not [n for n in names if not n.endswith(".gz") and n != "container.log"], names
    got = numbers(path)
    assert got == list(range(len(got))), "entries lost or repeated"
    # Each compressed file: whole frames, rotated at 2 kB, its header's lastTime right.
    for gz in path.parent.glob("container.log.*.gz"):
        data = gzip.decompress(gz.read_bytes())
        frames, used = locallog.split(data)
        assert used == len(data) and 2000 <= len(data) < 2100
        with open(gz, "rb") as f:
            meta = locallog.gzip_meta(f.fileno())
        last = locallog.decode(frames[-1]).time_nano
        assert meta["lastTime"].rstrip("Z").split(".")[1].ljust(9, "0") == f"{last % 10**9:09d}"


def test_bad_values_are_refused_by_create(sup, bundles) -> None:  # noqa: F811
    b = bundles.make(["true"], container_id="bad")
    with SyncClient(sup.sock) as c:
        with pytest.raises(Exception, match="invalid value for max-size: x: invalid size"):
            c.call("create", {"id": "bad", "bundle": str(b), "log": {
                "driver": "local", "path": str(local_path(sup.root, "bad")),
                "opts": {"max-size": "x"}}})
