"""``docker exec``: extra processes in a running container.

An exec is made in two steps, as the Engine API has it: ``create`` records
what to run (``POST /containers/{id}/exec``), ``start`` runs it
(``POST /exec/{id}/start``), attached to a hijacked connection or detached.
The process spec is the container's own (from its bundle's config.json:
capabilities, rlimits, seccomp, no-new-privileges) with the exec's command,
environment, user and working directory, as containerd derives an exec's
spec. The supervisor runs it and reports its exit; execs live in memory
only, as in dockerd (they are gone after a daemon restart).

Events, as moby's daemon/exec.go and monitor.go log them on the container:
``exec_create: <cmd> <args>`` and ``exec_start: <cmd> <args>`` (joined by
spaces, so an argument-less command ends with one), each with ``execID``;
``exec_die`` with ``execID`` and ``exitCode`` once it exited. An exec that
could not start at all gets no ``exec_die``.

Lifetime, as in moby: an exec is in its container's ``ExecIDs`` from create
until it exits (or fails to start); once finished it stays inspectable for
``RETENTION`` seconds (moby's exec GC runs every 5 minutes and removes a
finished exec on its second pass, 5 to 10 minutes after), and with its
container at the latest. The supervisor keeps its own record of an exec only
until the exit has been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound

if TYPE_CHECKING:
    from ketch.engine.containers import Engine

RETENTION = 300.0       # seconds a finished exec stays inspectable (moby: 5-10 min)


@dataclass(slots=True)
class Exec:
    id: str
    container_id: str
    cmd: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    tty: bool = False
    privileged: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    detach_keys: str = ""
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def label(self) -> str:
        """The command in its events: moby's ``Entrypoint + " " + join(Args, " ")``."""
        return f"{self.cmd[0]} {' '.join(self.cmd[1:])}"

    def inspect(self) -> dict[str, Any]:
        """``GET /exec/{id}/json``, in moby's shape."""
        return {
            "CanRemove": False, "ContainerID": self.container_id, "DetachKeys": self.detach_keys,
            "ExitCode": self.exit_code, "ID": self.id, "OpenStderr": self.attach_stderr,
            "OpenStdin": self.attach_stdin, "OpenStdout": self.attach_stdout,
            "ProcessConfig": {"arguments": self.cmd[1:], "entrypoint": self.cmd[0],
                              "privileged": self.privileged, "tty": self.tty,
                              "user": self.user},
            "Running": self.running, "Pid": self.pid,
        }


class Execs:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self._execs: dict[str, Exec] = {}
        self._finished: deque[tuple[float, str]] = deque()    # (when, exec id), in order
        self._clock = clock
        self._reaping: set[asyncio.Task[None]] = set()
        # The execs of an earlier daemon are gone: their IDs must not linger in
        # ExecIDs (the store keeps the list with the container).
        for c in engine.store.all():
            c.exec_ids.clear()

    def get(self, exec_id: str) -> Exec:
        self._sweep()
        ex = self._execs.get(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return ex

    def _sweep(self) -> None:
        """Forget the execs that finished more than ``RETENTION`` seconds ago."""
        horizon = self._clock() - RETENTION
        while self._finished and self._finished[0][0] <= horizon:
            _, eid = self._finished.popleft()
            self._execs.pop(eid, None)

    def _event(self, ex: Exec, action: str, attrs: dict[str, str]) -> None:
        c = self.engine.store.find(ex.container_id)
        if c is not None:
            self.engine.on_event(action, c, {"execID": ex.id, **attrs})

    def _finish(self, ex: Exec, code: int) -> None:
        """It exited (or never ran): out of ExecIDs, inspectable for a while."""
        ex.exit_code = code
        ex.running = False
        c = self.engine.store.find(ex.container_id)
        if c is not None and ex.id in c.exec_ids:
            c.exec_ids.remove(ex.id)
        self._finished.append((self._clock(), ex.id))

    def create(self, ref: str, body: dict[str, Any]) -> str:
        c = self.engine.store.get(ref)
        if c.state.status == "paused":
            raise Conflict(f"Container {ref} is paused, unpause the container before exec")
        if c.state.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        cmd = body.get("Cmd") or []
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidArgument("No exec command specified")
        for e in body.get("Env") or []:
            if not isinstance(e, str) or e.startswith("="):
                raise InvalidArgument(f"invalid environment variable: {e}")
        ex = Exec(id=secrets.token_hex(32), container_id=c.id, cmd=[str(a) for a in cmd],
                  env=list(body.get("Env") or []), user=str(body.get("User") or ""),
                  working_dir=str(body.get("WorkingDir") or ""), tty=bool(body.get("Tty")),
                  privileged=bool(body.get("Privileged")),
                  attach_stdin=bool(body.get("AttachStdin")),
                  attach_stdout=bool(body.get("AttachStdout")),
                  attach_stderr=bool(body.get("AttachStderr")),
                  detach_keys=str(body.get("DetachKeys") or ""))
        self._sweep()
        self._execs[ex.id] = ex
        c.exec_ids.append(ex.id)
        self._event(ex, f"exec_create: {ex.label}", {})
        return ex.id

    def process(self, ex: Exec) -> dict[str, Any]:
        """The OCI process of the exec: the container's, with the exec's command,
        env, user and working directory (containerd's way)."""
        from ketch.engine import specgen
        from ketch.engine.userdb import spec_user
        from ketch.jsonmodel import to_json

        c = self.engine.store.get(ex.container_id)
        bundle = os.path.join(self.engine.opts.exec_root, "containers", c.id, "config.json")
        with open(bundle) as f:
            spec = json.load(f)
        proc: dict[str, Any] = dict(spec.get("process") or {})
        proc["args"] = ex.cmd
        proc["terminal"] = ex.tty
        env = specgen.replace_or_append_env(list(proc.get("env") or []), ex.env)
        if ex.tty and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")
        proc["env"] = env
        if ex.working_dir:
            proc["cwd"] = ex.working_dir
        if ex.user:
            rootfs = spec.get("root", {}).get("path", "")
            proc["user"] = to_json(spec_user(rootfs, ex.user, []))
        if ex.privileged:
            every = self.engine.spec_options.all_capabilities()
            proc["capabilities"] = {k: list(every) for k in
                                    ("bounding", "effective", "permitted")}
        proc.pop("consoleSize", None)
        return proc

    async def start(self, exec_id: str, *, detach: bool, tty: bool | None,
                    sock: Any = None) -> None:
        ex = self.get(exec_id)
        if ex.running or ex.exit_code is not None:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        c = self.engine.store.get(ex.container_id)
        if c.state.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        if tty is not None:
            ex.tty = tty
        ex.running = True
        # dockerd logs the start before it asks the runtime, so a command that
        # cannot run has an exec_start (and no exec_die).
        self._event(ex, f"exec_start: {ex.label}", {})
        try:
            process = await asyncio.to_thread(self.process, ex)
            ex.pid = await self.engine.sup.exec(c.id, ex.id, process, tty=ex.tty,
                                                stdin_open=ex.attach_stdin and not detach,
                                                sock=None if detach else sock)
        except (KetchError, OSError) as exc:
            self._finish(ex, 126)
            ex.done.set()
            if isinstance(exc, KetchError) and not getattr(exc, "not_runtime", False):
                # dockerd's words (runc through containerd), for the CLI and scripts.
                raise type(exc)(f"OCI runtime exec failed: exec failed: {exc}: "
                                "unknown") from exc
            raise
        task = asyncio.create_task(self._reap(ex))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _reap(self, ex: Exec) -> None:
        code = 255          # the supervisor lost it: as a process killed unseen
        with contextlib.suppress(KetchError):
            rec = await self.engine.sup.wait(ex.container_id, ex.id)
            code = 255 if rec.lost else rec.exit_code
        self._finish(ex, code)
        # Logged before the waiters hear of it: a client that saw its stream end
        # finds the exec_die in the events already.
        self._event(ex, "exec_die", {"exitCode": str(code)})
        ex.done.set()

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        ex = self.get(exec_id)
        if not ex.running:
            raise Conflict(f"Exec {exec_id} is not running")
        await self.engine.sup.resize(ex.container_id, height, width, exec_id=ex.id)

    def forget_container(self, container_id: str) -> None:
        """Its container is gone: so are its execs, finished or not (moby answers
        "No such exec instance" for them from then on)."""
        for eid in [e.id for e in self._execs.values() if e.container_id == container_id]:
            del self._execs[eid]
