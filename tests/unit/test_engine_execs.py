"""Execs against a fake engine and supervisor: dockerd's exec events, ExecIDs only while
an exec is live, the exit code for inspect, and how long a finished exec is kept."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ketch.engine import execs as execs_mod
from ketch.engine.execs import Execs
from ketch.engine.store import Container, State
from ketch.engine.supervisor_client import ExitRecord
from ketch.errors import Conflict, NotFound, System

CID = "ab" * 32


def aio(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), 10))
    return run


class FakeStore:
    def __init__(self, *cs: Container) -> None:
        self.by_id = {c.id: c for c in cs}

    def all(self) -> list[Container]:
        return list(self.by_id.values())

    def find(self, ref: str) -> Container | None:
        return self.by_id.get(ref)

    def get(self, ref: str) -> Container:
        c = self.find(ref)
        if c is None:
            raise NotFound(f"No such container: {ref}")
        return c


class FakeSupervisor:
    """Each exec exits when the test says so (``finish``), or fails to start."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.exits: dict[str, asyncio.Future[ExitRecord]] = {}

    async def exec(self, container_id: str, exec_id: str, process: dict[str, Any], *,
                   tty: bool, stdin_open: bool, sock: Any) -> int:
        if self.error is not None:
            raise self.error
        self.exits[exec_id] = asyncio.get_running_loop().create_future()
        return 4242

    async def wait(self, container_id: str, exec_id: str) -> ExitRecord:
        return await self.exits[exec_id]

    def finish(self, exec_id: str, code: int, lost: bool = False) -> None:
        self.exits[exec_id].set_result(ExitRecord(id=CID, exec_id=exec_id, exit_code=code,
                                                  lost=lost))


class FakeEngine:
    def __init__(self, c: Container, sup: FakeSupervisor) -> None:
        self.store = FakeStore(c)
        self.sup = sup
        self.events: list[tuple[str, str, dict[str, str]]] = []

    def on_event(self, action: str, c: Container, attrs: dict[str, str]) -> None:
        self.events.append((action, c.id, attrs))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BundlelessExecs(Execs):
    def process(self, ex: Any) -> dict[str, Any]:    # no bundle on disk here
        return {"args": list(ex.cmd)}


def running(exec_ids: list[str] | None = None) -> Container:
    return Container(id=CID, name="web", created="", image="busybox", image_id="sha256:x",
                     state=State(status="running", pid=1), exec_ids=list(exec_ids or []))


def make(sup: FakeSupervisor | None = None, c: Container | None = None
         ) -> tuple[BundlelessExecs, FakeEngine, FakeSupervisor, Clock]:
    sup = sup or FakeSupervisor()
    eng = FakeEngine(c or running(), sup)
    clock = Clock()
    return BundlelessExecs(eng, clock=clock), eng, sup, clock   # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@aio
async def test_events_exec_ids_and_exit_code_as_dockerd() -> None:
    ex, eng, sup, _ = make()
    c = eng.store.get(CID)
    eid = ex.create(CID, {"Cmd": ["sh", "-c", "exit 3"]})
    assert c.exec_ids == [eid]
    await ex.start(eid, detach=True, tty=None)
    assert ex.get(eid).running and ex.get(eid).pid == 4242
    sup.finish(eid, 3)
    await asyncio.wait_for(ex.get(eid).done.wait(), 5)
    doc = ex.get(eid).inspect()
    assert doc["ExitCode"] == 3 and doc["Running"] is False
    assert c.exec_ids == []             # dockerd: ExecIDs lists live execs only
    assert eng.events == [
        ("exec_create: sh -c exit 3", CID, {"execID": eid}),
        ("exec_start: sh -c exit 3", CID, {"execID": eid}),
        ("exec_die", CID, {"execID": eid, "exitCode": "3"})]
    with pytest.raises(Conflict, match="has already run"):
        await ex.start(eid, detach=True, tty=None)


@aio
async def test_argument_less_command_and_lost_exit() -> None:
    ex, eng, sup, _ = make()
    eid = ex.create(CID, {"Cmd": "true"})
    await ex.start(eid, detach=True, tty=None)
    sup.finish(eid, 0, lost=True)       # a supervisor that could not learn the code
    await asyncio.wait_for(ex.get(eid).done.wait(), 5)
    assert [a for a, _, _ in eng.events] == ["exec_create: true ", "exec_start: true ",
                                             "exec_die"]
    assert eng.events[-1][2]["exitCode"] == "255" and ex.get(eid).exit_code == 255


@aio
async def test_an_exec_that_cannot_start_has_no_exec_die() -> None:
    ex, eng, _, _ = make(FakeSupervisor(error=System("exec: \"/nope\": not found")))
    eid = ex.create(CID, {"Cmd": ["/nope"]})
    with pytest.raises(System):
        await ex.start(eid, detach=True, tty=None)
    e = ex.get(eid)
    assert e.exit_code == 126 and not e.running and e.done.is_set()
    assert eng.store.get(CID).exec_ids == []
    assert [a for a, _, _ in eng.events] == ["exec_create: /nope ", "exec_start: /nope "]


@aio
async def test_finished_execs_are_kept_for_a_while_then_forgotten() -> None:
    ex, _, sup, clock = make()
    first = ex.create(CID, {"Cmd": ["true"]})
    await ex.start(first, detach=True, tty=None)
    sup.finish(first, 0)
    await settle()
    idle = ex.create(CID, {"Cmd": ["true"]})      # created, never started: kept
    clock.now += execs_mod.RETENTION - 1
    assert ex.get(first).exit_code == 0           # still inspectable
    clock.now += 1
    with pytest.raises(NotFound, match=f"No such exec instance: {first}"):
        ex.get(first)
    assert ex.get(idle).exit_code is None
    ex.forget_container(CID)
    with pytest.raises(NotFound):
        ex.get(idle)


@aio
async def test_probe_rate_of_execs_stays_bounded() -> None:
    ex, _, sup, clock = make()
    for _ in range(2000):           # one a second for 2000 s
        eid = ex.create(CID, {"Cmd": ["true"]})
        await ex.start(eid, detach=True, tty=None)
        sup.finish(eid, 0)
        await settle()
        clock.now += 1
    assert len(ex._execs) <= execs_mod.RETENTION + 1


def test_ids_of_an_earlier_daemon_are_dropped() -> None:
    ex, eng, _, _ = make(c=running(["old" * 21 + "a"]))
    assert eng.store.get(CID).exec_ids == []
    with pytest.raises(NotFound):
        ex.get("old" * 21 + "a")
