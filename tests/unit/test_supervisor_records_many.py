"""Many exits reaped at once are recorded together: each record synced, the
directory once."""

from __future__ import annotations

import os

from ketch.engine.supervisor import records
from ketch.engine.supervisor.protocol import ExitRecord
from ketch.engine.supervisor.records import ExitStore, now_rfc3339


def test_write_many_syncs_each_record_and_the_directory_once(tmp_path, monkeypatch):
    store = ExitStore(str(tmp_path))
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(records.os, "fsync", fsync)
    recs = [ExitRecord(id=f"c{i}", pid=100 + i, exit_code=i, finished_at=now_rfc3339())
            for i in range(5)]
    store.write_many(recs)
    assert [store.read(r.id) for r in recs] == recs
    assert sorted(os.listdir(tmp_path / "exits")) == [f"c{i}.json" for i in range(5)]
    exits_dir = str(tmp_path / "exits")
    assert synced.count(exits_dir) == 1 and synced[-1] == exits_dir
    assert len(synced) == 6             # five records (their temporary files), one dir


def test_write_many_of_nothing_writes_nothing(tmp_path):
    ExitStore(str(tmp_path)).write_many([])
    assert not (tmp_path / "exits").exists()
