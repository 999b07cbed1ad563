"""Healthchecks (ketch.engine.health) with a fake probe runner: settings and defaults,
the state machine (streak, retries, start period), the log's bounds, timeouts and
kills, start/stop/pause, and the frame reader of the exec probe."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ketch.engine.containers import now_rfc3339
from ketch.engine.health import (
    DEFAULT_SHELL,
    ExecProbe,
    HealthMonitor,
    HealthSettings,
    OutputBuffer,
    _read_frames,
    go_duration,
)
from ketch.engine.store import Container, State
from ketch.engine.supervisor_client import ExitRecord
from ketch.errors import Conflict

MS = 1_000_000
S = 1_000_000_000


def aio(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Runs an async test in its own event loop (no pytest plugin needed)."""
    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), 30))
    return run


# --- fakes --------------------------------------------------------------------------------
class FakeStore:
    def __init__(self) -> None:
        self.by_id: dict[str, Container] = {}
        self.saves = 0

    def find(self, ref: str) -> Container | None:
        return self.by_id.get(ref)

    def save(self, c: Container) -> None:
        self.saves += 1


class FakeEngine:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.events: list[tuple[str, str, dict[str, str]]] = []

    def on_event(self, action: str, c: Container, attrs: dict[str, str]) -> None:
        self.events.append((action, c.id, attrs))


class Step:
    """One probe's behaviour: output, then exit code after ``delay`` (None: hang)."""

    def __init__(self, code: int | None = 0, output: bytes = b"", delay: float = 0.0,
                 error: Exception | None = None) -> None:
        self.code, self.output, self.delay, self.error = code, output, delay, error


class FakeRunner:
    def __init__(self, steps: Callable[[int], Step]) -> None:
        self.steps = steps
        self.calls: list[list[str]] = []
        self.killed = 0
        self.running = 0

    async def __call__(self, container_id: str, cmd: list[str], out: OutputBuffer,
                       started: asyncio.Event) -> int:
        step = self.steps(len(self.calls))
        self.calls.append(cmd)
        if step.error is not None:
            raise step.error
        started.set()
        self.running += 1
        try:
            out.write(step.output)
            if step.code is None:
                await asyncio.Event().wait()
            await asyncio.sleep(step.delay)
            return int(step.code or 0)
        except asyncio.CancelledError:
            self.killed += 1
            raise
        finally:
            self.running -= 1


def container(health: dict[str, Any] | None = None, *, shell: list[str] | None = None,
              started: str | None = None) -> Container:
    config: dict[str, Any] = {"Healthcheck": health} if health is not None else {}
    if shell:
        config["Shell"] = shell
    return Container(id="c" * 64, name="x", created=now_rfc3339(), image="busybox",
                     image_id="sha256:" + "0" * 64, config=config,
                     state=State(status="running", pid=1,
                                 started_at=started or now_rfc3339()))


def monitor_for(c: Container, runner: FakeRunner) -> tuple[HealthMonitor, FakeEngine,
                                                           list[str]]:
    eng = FakeEngine()
    eng.store.by_id[c.id] = c
    statuses: list[str] = []
    mon = HealthMonitor(eng, runner=runner,  # type: ignore[arg-type]
                        on_status=lambda c, s: statuses.append(s))
    return mon, eng, statuses


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# --- settings -----------------------------------------------------------------------------
def test_settings_kinds_and_defaults() -> None:
    assert HealthSettings.of({}) is None
    assert HealthSettings.of({"Healthcheck": {"Test": ["NONE"]}}) is None
    assert HealthSettings.of({"Healthcheck": {"Test": []}}) is None
    assert HealthSettings.of({"Healthcheck": {"Test": ["HTTP", "x"]}}) is None
    s = HealthSettings.of({"Healthcheck": {"Test": ["CMD", "true", "a b"]}})
    assert s is not None and s.command == ["true", "a b"]
    assert (s.interval, s.timeout, s.start_period, s.start_interval, s.retries) == \
        (30.0, 30.0, 0.0, 5.0, 3)
    s = HealthSettings.of({"Healthcheck": {"Test": ["CMD-SHELL", "test -f /ok"],
                                           "Interval": 2 * S, "Timeout": 1500 * MS,
                                           "StartPeriod": 10 * S, "StartInterval": S,
                                           "Retries": 7}})
    assert s is not None and s.command == [*DEFAULT_SHELL, "test -f /ok"]
    assert (s.interval, s.timeout, s.start_period, s.start_interval, s.retries) == \
        (2.0, 1.5, 10.0, 1.0, 7)
    s = HealthSettings.of({"Healthcheck": {"Test": ["CMD-SHELL", "echo hi"]},
                           "Shell": ["/bin/bash", "-ec"]})
    assert s is not None and s.command == ["/bin/bash", "-ec", "echo hi"]
    s = HealthSettings.of({"Healthcheck": {"Test": ["CMD"]}})     # probe reports it
    assert s is not None and s.command == []


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (S, "1s"), (30 * S, "30s"), (1500 * MS, "1.5s"), (500 * MS, "500ms"),
    (60 * S, "1m0s"), (90 * S, "1m30s"), (3600 * S, "1h0m0s"), (3661 * S + 500 * MS,
                                                               "1h1m1.5s"),
    (2000, "2µs"), (1500, "1.5µs"), (7, "7ns"), (1_000_000_001, "1.000000001s"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_output_buffer_truncates_at_4096() -> None:
    b = OutputBuffer()
    b.write(b"a" * 4000)
    b.write(b"b" * 200)
    b.write(b"c")
    assert b.text() == "a" * 4000 + "b" * 96 + "..."
    b = OutputBuffer()
    b.write(b"x" * 4096)
    assert b.text() == "x" * 4096          # exactly full: nothing lost
    b.write(b"")
    assert not b.truncated
    b = OutputBuffer(limit=4)
    b.write("aé".encode() + b"zz")          # the cut splits nothing here
    assert b.text() == "aéz..."
    b = OutputBuffer(limit=2)
    b.write("é!".encode())
    assert b.text() == "é..."
    b = OutputBuffer(limit=1)
    b.write("é".encode())                   # half a character: replaced, as Go's JSON does
    assert b.text() == "\ufffd..."


# --- the state machine --------------------------------------------------------------------
def result(code: int, start: str | None = None, out: str = "") -> dict[str, Any]:
    t = start or now_rfc3339()
    return {"Start": t, "End": t, "ExitCode": code, "Output": out}


def test_record_streak_retries_and_log_bound() -> None:
    c = container({"Test": ["CMD", "x"], "Retries": 2})
    s = HealthSettings.of(c.config)
    assert s is not None
    mon, _, _ = monitor_for(c, FakeRunner(lambda i: Step()))
    c.state.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert mon.record(c, result(1), s) == ""
    assert c.state.health["Status"] == "starting" and c.state.health["FailingStreak"] == 1
    assert mon.record(c, result(2), s) == "unhealthy"
    assert c.state.health["FailingStreak"] == 2
    assert mon.record(c, result(-1), s) == ""         # stays unhealthy, streak grows
    assert c.state.health["FailingStreak"] == 3
    assert mon.record(c, result(0), s) == "healthy"
    assert c.state.health["FailingStreak"] == 0
    assert mon.record(c, result(1), s) == ""          # one failure: still healthy
    assert c.state.health["Status"] == "healthy"
    assert mon.record(c, result(0, out="last"), s) == ""
    log = c.state.health["Log"]
    assert len(log) == 5 and [r["ExitCode"] for r in log] == [2, -1, 0, 1, 0]
    assert log[-1]["Output"] == "last"


def test_record_start_period() -> None:
    started = now_rfc3339()
    c = container({"Test": ["CMD", "x"], "Retries": 1, "StartPeriod": 60 * S},
                  started=started)
    s = HealthSettings.of(c.config)
    assert s is not None
    mon, _, _ = monitor_for(c, FakeRunner(lambda i: Step()))
    c.state.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
    for _ in range(3):      # failures inside the start period do not count
        assert mon.record(c, result(1, start=started), s) == ""
    assert c.state.health["FailingStreak"] == 0 and c.state.health["Status"] == "starting"
    late = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 61))
    assert mon.record(c, result(1, start=late), s) == "unhealthy"   # after it they do
    c.state.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert mon.record(c, result(0, start=started), s) == "healthy"  # a success ends it
    assert mon.record(c, result(1, start=started), s) == "unhealthy"  # counted now


def test_interval_rule() -> None:
    c = container({"Test": ["CMD", "x"], "Interval": 10 * S, "StartPeriod": 60 * S,
                   "StartInterval": S})
    s = HealthSettings.of(c.config)
    assert s is not None
    c.state.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert HealthMonitor._interval(c, s) == 1.0
    c.state.health = {"Status": "healthy", "FailingStreak": 0, "Log": []}
    assert HealthMonitor._interval(c, s) == 10.0
    c.state.started_at = "2001-01-01T00:00:00Z"     # long past the start period
    c.state.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert HealthMonitor._interval(c, s) == 10.0


# --- the monitor --------------------------------------------------------------------------
def fast(test: dict[str, Any]) -> dict[str, Any]:
    return {"Interval": 20 * MS, "Timeout": 2 * S, **test}


@aio
async def test_monitor_unhealthy_then_healthy() -> None:
    ok = asyncio.Event()
    c = container(fast({"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Retries": 2}))
    runner = FakeRunner(lambda i: Step(0, b"fine\n") if ok.is_set() else Step(1, b"no\n"))
    mon, eng, statuses = monitor_for(c, runner)
    mon.start(c.id)
    assert c.state.health == {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert runner.calls == []                   # the first probe waits an interval
    await until(lambda: statuses == ["unhealthy"])
    assert runner.calls[0] == ["/bin/sh", "-c", "test -f /tmp/ok"]
    h = c.state.health
    assert h is not None and h["FailingStreak"] >= 2 and h["Log"][-1]["Output"] == "no\n"
    ok.set()
    await until(lambda: statuses == ["unhealthy", "healthy"])
    h = c.state.health
    assert h is not None and h["FailingStreak"] == 0 and h["Log"][-1]["Output"] == "fine\n"
    assert h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Start"] <= h["Log"][-1]["End"]
    await until(lambda: len(c.state.health["Log"]) == 5)   # type: ignore[index]
    await asyncio.sleep(0.1)
    assert len(c.state.health["Log"]) == 5                 # type: ignore[index]
    assert eng.store.saves >= 2                 # each change is persisted
    mon.stop(c.id)
    assert c.state.health["Status"] == "unhealthy"         # type: ignore[index]
    assert statuses == ["unhealthy", "healthy"]            # no event for that
    # A probe scheduled just before the stop gets its first step (and is then killed)
    # on a later turn of the loop: let those turns pass before counting.
    await asyncio.sleep(0.05)
    await until(lambda: runner.running == 0 and not mon.monitoring(c.id))
    n = len(runner.calls)       # a probe in flight at the stop was killed, none since
    await asyncio.sleep(0.1)
    assert len(runner.calls) == n


@aio
async def test_default_on_status_is_an_engine_event() -> None:
    c = container(fast({"Test": ["CMD", "true"]}))
    eng = FakeEngine()
    eng.store.by_id[c.id] = c
    mon = HealthMonitor(eng, runner=FakeRunner(lambda i: Step(0)))  # type: ignore[arg-type]
    mon.start(c.id)
    await until(lambda: bool(eng.events))
    assert eng.events == [("health_status: healthy", c.id, {})]
    await mon.close()


@aio
async def test_timeout_kills_the_probe() -> None:
    c = container({"Test": ["CMD", "sleep", "100"], "Interval": 10 * MS,
                   "Timeout": 50 * MS, "Retries": 1})
    runner = FakeRunner(lambda i: Step(None, b"partial"))
    mon, _, statuses = monitor_for(c, runner)
    mon.start(c.id)
    await until(lambda: statuses == ["unhealthy"])
    r = c.state.health["Log"][0]                            # type: ignore[index]
    assert r["ExitCode"] == -1
    assert r["Output"] == "Health check exceeded timeout (50ms): partial"
    assert runner.killed >= 1
    await mon.close()
    assert runner.running == 0                  # every probe was killed and waited for


@aio
async def test_timeout_message_without_output() -> None:
    c = container({"Test": ["CMD", "sleep"], "Timeout": 30 * MS})
    s = HealthSettings.of(c.config)
    assert s is not None
    mon, _, _ = monitor_for(c, FakeRunner(lambda i: Step(None)))
    r = await mon.probe(c.id, s)
    assert r["ExitCode"] == -1 and r["Output"] == "Health check exceeded timeout (30ms)"


@aio
async def test_probe_errors_and_empty_command() -> None:
    c = container({"Test": ["CMD", "nope"]})
    s = HealthSettings.of(c.config)
    assert s is not None
    mon, _, _ = monitor_for(c, FakeRunner(
        lambda i: Step(error=Conflict(f"Container {c.id} is not running"))))
    r = await mon.probe(c.id, s)
    assert r["ExitCode"] == -1 and r["Output"] == f"Container {c.id} is not running"
    empty = HealthSettings.of({"Healthcheck": {"Test": ["CMD"]}})
    assert empty is not None
    r = await mon.probe(c.id, empty)
    assert r == {**r, "ExitCode": -1,
                 "Output": f"healthcheck for container {c.id} has no command"}


@aio
async def test_stop_while_probing_kills_and_discards() -> None:
    c = container({"Test": ["CMD", "sleep"], "Interval": 10 * MS, "Timeout": 60 * S})
    runner = FakeRunner(lambda i: Step(None))
    mon, _, statuses = monitor_for(c, runner)
    mon.start(c.id)
    await until(lambda: runner.running == 1)
    mon.stop(c.id)
    await until(lambda: runner.running == 0)
    assert runner.killed == 1 and statuses == []
    assert c.state.health == {"Status": "unhealthy", "FailingStreak": 0, "Log": []}


@aio
async def test_restart_resets_status_keeps_log_and_pause_resume() -> None:
    c = container(fast({"Test": ["CMD", "true"]}))
    runner = FakeRunner(lambda i: Step(0))
    mon, _, statuses = monitor_for(c, runner)
    mon.start(c.id)
    await until(lambda: statuses == ["healthy"])
    mon.pause(c.id)
    assert c.state.health["Status"] == "unhealthy"          # type: ignore[index]
    mon.resume(c.id)                                        # not reset to starting
    assert c.state.health["Status"] == "unhealthy"          # type: ignore[index]
    await until(lambda: statuses == ["healthy", "healthy"])
    mon.stop(c.id)
    log = list(c.state.health["Log"])                       # type: ignore[index]
    mon.start(c.id)
    assert c.state.health == {"Status": "starting", "FailingStreak": 0, "Log": log}
    mon.start(c.id)                                         # twice: still one monitor
    await until(lambda: statuses == ["healthy", "healthy", "healthy"])
    await asyncio.sleep(0.1)
    assert statuses == ["healthy", "healthy", "healthy"]
    await mon.close()


@aio
async def test_no_healthcheck_or_none_leaves_health_unset() -> None:
    for hc in (None, {"Test": ["NONE"]}):
        c = container(hc)
        runner = FakeRunner(lambda i: Step(0))
        mon, _, _ = monitor_for(c, runner)
        mon.start(c.id)
        assert c.state.health is None and not mon.monitoring(c.id)
        mon.stop(c.id)
        assert c.state.health is None


@aio
async def test_monitor_ends_when_the_container_is_gone() -> None:
    c = container(fast({"Test": ["CMD", "true"]}))
    runner = FakeRunner(lambda i: Step(0))
    mon, eng, _ = monitor_for(c, runner)
    mon.start(c.id)
    c.state.status = "exited"
    await until(lambda: not mon.monitoring(c.id))
    assert runner.calls == []
    c.state.status = "running"
    mon.start(c.id)
    del eng.store.by_id[c.id]
    await until(lambda: not mon.monitoring(c.id))


# --- the exec probe's output --------------------------------------------------------------
@aio
async def test_read_frames() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)

    def frame(stream: int, data: bytes) -> bytes:
        return struct.pack(">BxxxL", stream, len(data)) + data

    data = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"x" * 5000)
    out = OutputBuffer()
    task = asyncio.ensure_future(_read_frames(a, out))
    for i in range(0, len(data), 7):        # split mid-header and mid-payload
        b.sendall(data[i:i + 7])
        await asyncio.sleep(0)
    b.close()
    await asyncio.wait_for(task, 5)
    a.close()
    assert out.text() == "out\nerr\n" + "x" * (4096 - 8) + "..."


# --- the exec probe, against a fake supervisor --------------------------------------------
class FakeSupervisor:
    """Runs a "process" per exec: writes ``frames`` to the socket it was handed, then
    exits with ``code``, or hangs (``code`` None) until killed (137)."""

    def __init__(self, frames: list[tuple[int, bytes]], code: int | None,
                 error: Exception | None = None) -> None:
        self.frames, self.code, self.error = frames, code, error
        self.kills: list[tuple[str, int, str]] = []
        self.procs: dict[str, tuple[socket.socket, asyncio.Event, list[int]]] = {}

    async def exec(self, container_id: str, exec_id: str, process: dict[str, Any], *,
                   tty: bool, stdin_open: bool, sock: socket.socket) -> int:
        assert process["args"] and not tty and not stdin_open
        if self.error is not None:
            raise self.error
        s = socket.socket(fileno=os.dup(sock.fileno()))
        for stream, data in self.frames:
            s.sendall(struct.pack(">BxxxL", stream, len(data)) + data)
        done, code = asyncio.Event(), [0]
        self.procs[exec_id] = (s, done, code)
        if self.code is not None:
            self._exit(exec_id, self.code)
        return 42

    def _exit(self, exec_id: str, code: int) -> None:
        s, done, box = self.procs[exec_id]
        box[0] = code
        s.close()               # the supervisor closes the socket at the output's end
        done.set()

    async def wait(self, container_id: str, exec_id: str) -> ExitRecord:
        _, done, box = self.procs[exec_id]
        await done.wait()
        return ExitRecord(id=container_id, exec_id=exec_id, exit_code=box[0])

    async def kill(self, container_id: str, sig: int, *, exec_id: str = "") -> None:
        self.kills.append((container_id, sig, exec_id))
        self._exit(exec_id, 128 + sig)


class FakeExecs:
    def process(self, ex: Any) -> dict[str, Any]:
        return {"args": list(ex.cmd), "env": [], "cwd": "/"}


def exec_engine(c: Container, sup: FakeSupervisor) -> FakeEngine:
    eng = FakeEngine()
    eng.store.by_id[c.id] = c
    eng.sup = sup           # type: ignore[attr-defined]
    eng.execs = FakeExecs()  # type: ignore[attr-defined]
    return eng


@aio
async def test_exec_probe_output_code_and_events() -> None:
    c = container({"Test": ["CMD-SHELL", "x"]})
    sup = FakeSupervisor([(1, b"hi\n"), (2, b"oops\n")], 3)
    eng = exec_engine(c, sup)
    probe = ExecProbe(eng)  # type: ignore[arg-type]
    out, started = OutputBuffer(), asyncio.Event()
    assert await probe(c.id, ["/bin/sh", "-c", "x"], out, started) == 3
    assert started.is_set() and out.text() == "hi\noops\n"
    assert [a for a, _, _ in eng.events] == [
        "exec_create: /bin/sh -c x", "exec_start: /bin/sh -c x", "exec_die"]
    assert eng.events[2][2] == {"execID": eng.events[0][2]["execID"], "exitCode": "3"}
    eng.events.clear()
    assert await probe(c.id, ["true"], OutputBuffer(), asyncio.Event()) == 3
    assert eng.events[0][0] == "exec_create: true "     # dockerd's trailing space


@aio
async def test_exec_probe_killed_at_timeout() -> None:
    c = container({"Test": ["CMD", "sleep"], "Timeout": 50 * MS})
    s = HealthSettings.of(c.config)
    assert s is not None
    sup = FakeSupervisor([(1, b"partial")], None)
    eng = exec_engine(c, sup)
    mon = HealthMonitor(eng)  # type: ignore[arg-type]
    r = await mon.probe(c.id, s)
    assert r["ExitCode"] == -1
    assert r["Output"] == "Health check exceeded timeout (50ms): partial"
    ((cid, sig, eid),) = sup.kills
    assert cid == c.id and sig == 9 and eid in sup.procs
    assert [e for e in eng.events if e[0] == "exec_die"] == \
        [("exec_die", c.id, {"execID": eid, "exitCode": "137"})]


@aio
async def test_exec_probe_that_cannot_start() -> None:
    c = container({"Test": ["CMD", "x"]})
    sup = FakeSupervisor([], 0, error=Conflict(f"container {c.id} is not running"))
    mon = HealthMonitor(exec_engine(c, sup))  # type: ignore[arg-type]
    s = HealthSettings.of(c.config)
    assert s is not None
    r = await mon.probe(c.id, s)
    assert r["ExitCode"] == -1 and r["Output"] == f"container {c.id} is not running"
