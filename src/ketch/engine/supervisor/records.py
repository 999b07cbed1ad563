"""Exit records on disk: how each container ended, readable without the supervisor.

``<root>/exits/<id>.json`` holds one ``ExitRecord``. It is written at reap
time, before anyone is told, through a temporary file, fsync and rename, so
a reader (ketchd starting after a crash) sees either no record or a whole
one. It is removed when the container is deleted, and a new ``create`` of
the same id replaces a stale one.
"""

from __future__ import annotations

import json
import os
import time

from ketch.errors import InvalidArgument
from ketch.jsonmodel import from_json, to_json
from ketch.runtime.state import validate_id

from .protocol import ExitRecord

EXITS_DIR = "exits"


def now_rfc3339() -> str:
    """Docker's timestamp shape: UTC, nanoseconds (``2026-12-01T06:54:57.123456789Z``)."""
    secs, nanos = divmod(time.time_ns(), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def exit_code_of(si_code: int, si_status: int) -> tuple[int, int]:
    """(exit code, signal) from waitid's siginfo: a signal n gives 128+n, as shells do."""
    if si_code == os.CLD_EXITED:
        return si_status, 0
    return 128 + si_status, si_status       # CLD_KILLED, CLD_DUMPED


class ExitStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, EXITS_DIR)

    def path(self, container_id: str) -> str:
        validate_id(container_id)
        return os.path.join(self.dir, f"{container_id}.json")

    def write(self, rec: ExitRecord) -> None:
        self.write_many([rec])

    def write_many(self, recs: list[ExitRecord]) -> None:
        """Each record as ``write`` does, the directory synced once for all of them:
        a reap that collects many exits at once (an ``rm -f`` of many) pays one
        fsync per record, not two."""
        if not recs:
            return
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        for rec in recs:
            path = self.path(rec.id)
            tmp = os.path.join(self.dir, f".{rec.id}.json.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(to_json(rec)).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        # The renames themselves must reach the disk, or a crash could bring back no
        # record.
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def read(self, container_id: str) -> ExitRecord | None:
        path = self.path(container_id)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise InvalidArgument(f"corrupt exit record {path}: {exc}") from None
        return from_json(ExitRecord, data, where=path)

    def remove(self, container_id: str) -> None:
        try:
            os.unlink(self.path(container_id))
        except FileNotFoundError:
            pass

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))
