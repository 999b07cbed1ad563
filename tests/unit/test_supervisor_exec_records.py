"""How long the supervisor keeps an exec's record: until a wait has read its exit, or
``UNCLAIMED_EXEC_GRACE`` if nobody comes (a ketchd that went away). No process runs:
the records are driven through the supervisor's own exit path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ketch.engine.supervisor import server as srv
from ketch.engine.supervisor.protocol import Request
from ketch.errors import NotFound

CID = "c" * 64


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.hello = False

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)


def supervisor(tmp_path: Path) -> tuple[srv.Supervisor, srv.Container]:
    s = srv.Supervisor(str(tmp_path / "exec"), str(tmp_path / "root"), runtime=object())
    c = srv.Container(CID, str(tmp_path / "bundle"))
    s.containers[CID] = c
    return s, c


def add_exec(s: srv.Supervisor, c: srv.Container, eid: str, pid: int) -> srv.Process:
    p = srv.Process(CID, eid)
    p.pid = pid
    c.execs[eid] = p
    s.by_pid[pid] = p
    return p


def wait(s: srv.Supervisor, conn: FakeConn, eid: str, req_id: int) -> Any:
    return s.op_wait(conn, Request(req_id, "wait", {"id": CID, "execId": eid}), [])  # type: ignore[arg-type]


def fire_timers(s: srv.Supervisor) -> None:
    timers, s.loop._timers = s.loop._timers, []
    for _, _, fn in timers:
        fn()


def test_a_waited_exec_is_forgotten_when_its_exit_is_read(tmp_path: Path) -> None:
    s, c = supervisor(tmp_path)
    conn = FakeConn()
    p = add_exec(s, c, "e" * 64, 100)
    assert wait(s, conn, p.exec_id, 7) is srv.DEFERRED
    s._exited(s.by_pid.pop(100), 3, 0)
    assert conn.sent[0]["id"] == 7 and conn.sent[0]["result"]["exitCode"] == 3
    assert c.execs == {}
    with pytest.raises(NotFound):
        wait(s, conn, p.exec_id, 8)


def test_an_exit_read_after_the_fact_and_one_nobody_reads(tmp_path: Path) -> None:
    s, c = supervisor(tmp_path)
    conn = FakeConn()
    late = add_exec(s, c, "a" * 64, 101)
    orphan = add_exec(s, c, "b" * 64, 102)
    s._exited(s.by_pid.pop(101), 0, 0)
    s._exited(s.by_pid.pop(102), 137, 9)
    assert set(c.execs) == {late.exec_id, orphan.exec_id}     # kept for a wait to come
    # A wait after the exit gets it at once, and the record goes with that answer.
    assert wait(s, conn, late.exec_id, 9)["exitCode"] == 0
    assert set(c.execs) == {orphan.exec_id}
    # Nobody asked for the other one (its ketchd went away): gone after the grace.
    assert [d for d, _, _ in s.loop._timers]
    fire_timers(s)
    assert c.execs == {}


def test_the_grace_timer_spares_a_newer_record_of_the_same_id(tmp_path: Path) -> None:
    s, c = supervisor(tmp_path)
    first = add_exec(s, c, "d" * 64, 103)
    s._exited(s.by_pid.pop(103), 0, 0)
    del c.execs[first.exec_id]
    again = add_exec(s, c, "d" * 64, 104)      # the id reused (never by ketchd, but safe)
    fire_timers(s)
    assert c.execs == {again.exec_id: again}


def test_container_records_are_not_touched(tmp_path: Path) -> None:
    s, c = supervisor(tmp_path)
    s._forget_exec(c)
    assert s.containers == {CID: c}
