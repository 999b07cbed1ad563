"""Exit records: atomic files under <root>/exits, and exit codes from waitid."""

from __future__ import annotations

import os
import re
import signal

import pytest

from ketch.engine.supervisor.protocol import ExitRecord
from ketch.engine.supervisor.records import ExitStore, exit_code_of, now_rfc3339
from ketch.errors import InvalidArgument


def test_write_read_remove(tmp_path):
    store = ExitStore(str(tmp_path))
    assert store.read("web") is None and store.ids() == []
    rec = ExitRecord(id="web", pid=7, exit_code=137, signal=9, oom_killed=True,
                     started_at="a", finished_at=now_rfc3339())
    store.write(rec)
    assert store.read("web") == rec
    assert store.ids() == ["web"]
    # Nothing but the record: the temporary file was renamed over it.
    assert os.listdir(tmp_path / "exits") == ["web.json"]
    assert oct((tmp_path / "exits" / "web.json").stat().st_mode & 0o777) == "0o600"
    rec.exit_code = 0
    store.write(rec)                # a new life of the same id replaces it
    assert store.read("web").exit_code == 0
    store.remove("web")
    store.remove("web")             # twice is fine
    assert store.read("web") is None


def test_ids_are_validated_and_corruption_is_reported(tmp_path):
    store = ExitStore(str(tmp_path))
    with pytest.raises(InvalidArgument):
        store.path("../escape")
    os.makedirs(tmp_path / "exits")
    (tmp_path / "exits" / "bad.json").write_text("{half")
    with pytest.raises(InvalidArgument, match="corrupt exit record"):
        store.read("bad")


def test_exit_codes_as_shells_and_docker_report_them():
    assert exit_code_of(os.CLD_EXITED, 0) == (0, 0)
    assert exit_code_of(os.CLD_EXITED, 3) == (3, 0)
    assert exit_code_of(os.CLD_KILLED, signal.SIGKILL) == (137, 9)
    assert exit_code_of(os.CLD_DUMPED, signal.SIGSEGV) == (139, 11)


def test_timestamps_are_utc_with_nanoseconds():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", now_rfc3339())
