"""Docker's healthchecks: probe a running container now and then, keep its ``Health``.

The semantics are dockerd's (moby ``daemon/health.go``), since clients and
compose files depend on them:

* ``Test`` is ``["CMD", args...]`` (exec'd as is), ``["CMD-SHELL", cmd]`` (run
  by the container's ``Shell``, else ``/bin/sh -c``) or ``["NONE"]`` (no
  probe: ``--no-healthcheck``); no healthcheck at all means no ``Health``.
* The first probe runs one interval after the start, each next one an
  interval after the previous one ended. Durations are nanoseconds in the
  config, 0 meaning the default: interval 30 s, timeout 30 s, retries 3,
  start period 0; inside the start period, while still ``starting``, the
  interval is ``StartInterval`` (default 5 s).
* Exit code 0 is a success: ``healthy``, streak reset. Anything else is a
  failure: the streak grows, ``unhealthy`` once it reaches the retries;
  failures while ``starting`` and inside the start period do not count.
* A probe running longer than the timeout is killed, and recorded with exit
  code -1 and "Health check exceeded timeout (<Go duration>)" plus whatever
  it printed; a probe that cannot run at all is recorded with -1 and why.
* ``Log`` keeps the last five results, each with its first 4096 bytes of
  output (stdout and stderr together), "..." appended when cut.
* Status changes are announced as ``health_status: <status>`` events; the
  status is ``starting`` at each start (the log is kept across restarts),
  and becomes ``unhealthy`` when monitoring stops (exit, pause), as dockerd
  reports it "for compatibility".

Probes run as execs through the supervisor (``ExecProbe``); the monitor only
needs a ``ProbeRunner``, so unit tests give it a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ketch.engine.containers import now_rfc3339, parse_rfc3339
from ketch.errors import KetchError, System
from ketch.gotext import go_duration

if TYPE_CHECKING:
    from ketch.engine.containers import Engine
    from ketch.engine.store import Container
    from ketch.engine.supervisor_client import ExitRecord

log = logging.getLogger("ketch.engine.health")

MAX_OUTPUT = 4096               # bytes of a probe's output kept in the log
MAX_LOG_ENTRIES = 5
DEFAULT_INTERVAL = 30.0         # seconds
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
# Starting an exec is not the probe's time: it has its own bound, as in dockerd.
START_TIMEOUT = 30.0
DEFAULT_SHELL = ["/bin/sh", "-c"]

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


class OutputBuffer:
    """The first ``MAX_OUTPUT`` bytes of a probe's output; the rest is counted as lost."""

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.truncated = False

    def write(self, data: bytes) -> None:
        room = self.limit - len(self._buf)
        if room > 0:
            self._buf += data[:room]
        if len(data) > max(room, 0):
            self.truncated = True

    def text(self) -> str:
        # A cut may split a UTF-8 sequence; Go's JSON encoder writes U+FFFD for it too.
        out = self._buf.decode("utf-8", errors="replace")
        return out + "..." if self.truncated else out


@dataclass(slots=True, frozen=True)
class HealthSettings:
    """A container's ``Healthcheck`` with dockerd's defaults applied (seconds)."""

    command: list[str]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    start_period: float = DEFAULT_START_PERIOD
    start_interval: float = DEFAULT_START_INTERVAL
    retries: int = DEFAULT_RETRIES
    timeout_ns: int = int(DEFAULT_TIMEOUT * 1e9)

    @classmethod
    def of(cls, config: dict[str, Any]) -> HealthSettings | None:
        """The probe of a container's config (Docker JSON), or None if it has none."""
        hc = config.get("Healthcheck") or {}
        test = list(hc.get("Test") or [])
        if not test or test[0] == "NONE":
            return None
        if test[0] == "CMD":
            command = test[1:]
        elif test[0] == "CMD-SHELL":
            # dockerd appends every element after the type to the shell's argv.
            command = (list(config.get("Shell") or []) or DEFAULT_SHELL) + test[1:] \
                if len(test) > 1 else []
        else:
            log.warning("unknown healthcheck type %r (expected 'CMD')", test[0])
            return None

        def seconds(key: str, default: float) -> float:
            ns = int(hc.get(key) or 0)
            return ns / 1e9 if ns else default

        timeout_ns = int(hc.get("Timeout") or 0) or int(DEFAULT_TIMEOUT * 1e9)
        retries = int(hc.get("Retries") or 0)
        return cls(command=[str(a) for a in command],
                   interval=seconds("Interval", DEFAULT_INTERVAL),
                   timeout=timeout_ns / 1e9,
                   start_period=seconds("StartPeriod", DEFAULT_START_PERIOD),
                   start_interval=seconds("StartInterval", DEFAULT_START_INTERVAL),
                   retries=retries if retries > 0 else DEFAULT_RETRIES,
                   timeout_ns=timeout_ns)


class ProbeRunner(Protocol):
    """Runs one probe command in a container: its output into ``out``, ``started`` set
    once the process runs, its exit code returned. Cancelled, it must kill the
    process and return only once it has exited. Errors are ``KetchError``s."""

    def __call__(self, container_id: str, cmd: list[str], out: OutputBuffer,
                 started: asyncio.Event) -> Awaitable[int]: ...


class ExecProbe:
    """A probe as an exec through the supervisor, as dockerd runs it: the container's
    user, working directory and environment, no tty, no stdin, output captured
    from the stdout/stderr frames on a socket pair."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def __call__(self, container_id: str, cmd: list[str], out: OutputBuffer,
                       started: asyncio.Event) -> int:
        from ketch.engine.execs import Exec

        # Not registered with engine.execs: a probe is not the user's exec, and one
        # every interval would pile up there.
        ex = Exec(id=secrets.token_hex(32), container_id=container_id, cmd=cmd,
                  attach_stdout=True, attach_stderr=True)
        # dockerd's events for a probe, as for any exec.
        self._event(container_id, f"exec_create: {ex.label}", {"execID": ex.id})
        process = await asyncio.to_thread(self.engine.execs.process, ex)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        try:
            self._event(container_id, f"exec_start: {ex.label}", {"execID": ex.id})
            try:
                await self.engine.sup.exec(container_id, ex.id, process, tty=False,
                                           stdin_open=False, sock=theirs)
            finally:
                theirs.close()
            started.set()
            # One wait, asked now and kept through a cancellation: the supervisor
            # answers it once and then forgets the exec, so a second one could
            # find nothing.
            exited = asyncio.ensure_future(self.engine.sup.wait(container_id, ex.id))
            try:
                await _read_frames(ours, out)
                rec = await asyncio.shield(exited)
            except asyncio.CancelledError:
                with contextlib.suppress(KetchError):
                    await self.engine.sup.kill(container_id, signal.SIGKILL, exec_id=ex.id)
                # Wait for it to die, so that killed probes never pile up.
                with contextlib.suppress(KetchError, TimeoutError):
                    rec = await asyncio.wait_for(exited, 10)
                    self._died(container_id, ex.id, rec)
                if not exited.done():
                    exited.cancel()
                elif not exited.cancelled():
                    exited.exception()      # retrieved: a lost wait is only logged less
                raise
            self._died(container_id, ex.id, rec)
            return _exit_code(rec)
        finally:
            ours.close()

    def _event(self, container_id: str, action: str, attrs: dict[str, str]) -> None:
        c = self.engine.store.find(container_id)
        if c is not None:
            self.engine.on_event(action, c, attrs)

    def _died(self, container_id: str, exec_id: str, rec: ExitRecord) -> None:
        self._event(container_id, "exec_die",
                    {"execID": exec_id, "exitCode": str(_exit_code(rec))})


def _exit_code(rec: ExitRecord) -> int:
    return 255 if rec.lost else rec.exit_code


async def _read_frames(sock: socket.socket, out: OutputBuffer) -> None:
    """The supervisor's output frames (stream byte, 3 zero bytes, big-endian length,
    payload) until it closes the socket at the end of the output."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while True:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            return
        buf += chunk
        while len(buf) >= 8:
            (size,) = struct.unpack(">L", buf[4:8])
            if len(buf) < 8 + size:
                break
            out.write(bytes(buf[8:8 + size]))
            del buf[:8 + size]


@dataclass(slots=True)
class _Watch:
    task: asyncio.Task[None]


class HealthMonitor:
    """One monitoring task per running container that has a healthcheck.

    ``start`` after the container started (resets the status to ``starting``),
    ``stop`` when it exits, is stopped or removed (the status becomes
    ``unhealthy``); ``pause``/``resume`` around a pause, as dockerd stops and
    restarts its monitor without resetting the status.
    """

    def __init__(self, engine: Engine, *, runner: ProbeRunner | None = None,
                 on_status: Callable[[Container, str], None] | None = None) -> None:
        self.engine = engine
        self.runner: ProbeRunner = runner or ExecProbe(engine)
        self.on_status = on_status or self._event
        self._watches: dict[str, _Watch] = {}

    def _event(self, c: Container, status: str) -> None:
        self.engine.on_event(f"health_status: {status}", c, {})

    # --- control ------------------------------------------------------------------------

    def start(self, container_id: str) -> None:
        """A (re)started container: status ``starting``, streak 0, then probe."""
        self._begin(container_id, reset=True)

    def resume(self, container_id: str) -> None:
        """An unpaused container: probe again, the status as it was left."""
        self._begin(container_id, reset=False)

    def pause(self, container_id: str) -> None:
        self.stop(container_id)

    def stop(self, container_id: str) -> None:
        """Stop probing; a probe in flight is killed. The status turns ``unhealthy``
        (no event), as dockerd reports a container it no longer monitors."""
        w = self._watches.pop(container_id, None)
        if w is None:
            return
        w.task.cancel()
        c = self.engine.store.find(container_id)
        if c is not None and c.state.health is not None:
            c.state.health = {**c.state.health, "Status": UNHEALTHY}

    def monitoring(self, container_id: str) -> bool:
        return container_id in self._watches

    async def close(self) -> None:
        """Stop every monitor and wait for their probes to be killed (daemon shutdown;
        the statuses are left as they are, the containers keep running)."""
        watches = list(self._watches.values())
        self._watches.clear()
        for w in watches:
            w.task.cancel()
        await asyncio.gather(*(w.task for w in watches), return_exceptions=True)

    def _begin(self, container_id: str, *, reset: bool) -> None:
        c = self.engine.store.find(container_id)
        if c is None:
            return
        settings = HealthSettings.of(c.config)
        if settings is None:
            return
        old = self._watches.pop(container_id, None)
        if old is not None:
            old.task.cancel()
        if reset or c.state.health is None:
            prev = c.state.health or {}
            c.state.health = {"Status": STARTING, "FailingStreak": 0,
                              "Log": list(prev.get("Log") or [])}
        task = asyncio.create_task(self._monitor(container_id, settings),
                                   name=f"health-{container_id[:12]}")
        self._watches[container_id] = _Watch(task)
        task.add_done_callback(lambda t: self._forget(container_id, t))

    def _forget(self, container_id: str, task: asyncio.Task[None]) -> None:
        w = self._watches.get(container_id)
        if w is not None and w.task is task:
            del self._watches[container_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("health monitor of %s failed", container_id, exc_info=task.exception())

    # --- the loop -----------------------------------------------------------------------

    async def _monitor(self, container_id: str, s: HealthSettings) -> None:
        while True:
            c = self.engine.store.find(container_id)
            if c is None:
                return
            await asyncio.sleep(self._interval(c, s))
            c = self.engine.store.find(container_id)
            if c is None or not c.state.running:
                return
            result = await self.probe(container_id, s)
            c = self.engine.store.find(container_id)
            if c is None:
                return
            changed = self.record(c, result, s)
            if changed:
                self.on_status(c, changed)
                await asyncio.to_thread(self.engine.store.save, c)

    @staticmethod
    def _interval(c: Container, s: HealthSettings) -> float:
        """dockerd 28's rule: the start interval while starting inside the start period."""
        if time.time() - parse_rfc3339(c.state.started_at) >= s.start_period:
            return s.interval
        status = (c.state.health or {}).get("Status")
        return s.start_interval if status == STARTING else s.interval

    async def probe(self, container_id: str, s: HealthSettings) -> dict[str, Any]:
        """One probe's ``HealthcheckResult``: {Start, End, ExitCode, Output}."""
        start = now_rfc3339()
        out = OutputBuffer()
        try:
            code, output = await self._run(container_id, s, out)
        except KetchError as exc:
            log.warning("health check for container %s error: %s", container_id, exc)
            code, output = -1, str(exc)
        return {"Start": start, "End": now_rfc3339(), "ExitCode": code, "Output": output}

    async def _run(self, container_id: str, s: HealthSettings,
                   out: OutputBuffer) -> tuple[int, str]:
        if not s.command:
            raise System(f"healthcheck for container {container_id} has no command")
        started = asyncio.Event()
        task = asyncio.ensure_future(self.runner(container_id, list(s.command), out, started))
        try:
            waiter = asyncio.ensure_future(started.wait())
            try:
                await asyncio.wait({task, waiter}, timeout=START_TIMEOUT,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if not task.done() and not started.is_set():
                raise System(f"timed out starting health check for container "
                                 f"{container_id}")
            done, _ = await asyncio.wait({task}, timeout=s.timeout)
            if not done:
                await _cancel(task)     # the runner kills the probe and waits for it
                msg = f"Health check exceeded timeout ({go_duration(s.timeout_ns)})"
                text = out.text()
                return -1, f"{msg}: {text}" if text else msg
            return task.result(), out.text()
        finally:
            if not task.done():
                await _cancel(task)

    # --- results ------------------------------------------------------------------------

    def record(self, c: Container, result: dict[str, Any], s: HealthSettings) -> str:
        """dockerd's handleProbeResult: the log, the streak, the status. Returns the
        new status if it changed, else ""."""
        h = dict(c.state.health or {"Status": STARTING, "FailingStreak": 0, "Log": []})
        old = h.get("Status") or UNHEALTHY
        h["Log"] = [*(h.get("Log") or []), result][-MAX_LOG_ENTRIES:]
        streak = int(h.get("FailingStreak") or 0)
        status = old
        if result["ExitCode"] == 0:
            streak, status = 0, HEALTHY
        else:
            counts = True
            if old == STARTING:
                since_start = parse_rfc3339(result["Start"]) - parse_rfc3339(c.state.started_at)
                counts = since_start >= s.start_period
            if counts:
                streak += 1
                if streak >= s.retries:
                    status = UNHEALTHY
        h["FailingStreak"], h["Status"] = streak, status
        c.state.health = h      # replaced whole: a save in a worker never sees it half-done
        return status if status != old else ""


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for it; ``asyncio.wait`` never raises the task's own
    outcome, so only a cancellation of the caller itself propagates."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()        # retrieved: a probe's failure after the kill is moot
