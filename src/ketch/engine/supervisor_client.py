"""ketchd's side of the supervisor: start it, connect, ask, listen for exits.

    proc = spawn("/run/ketch", "/var/lib/ketch")        # once, if none answers
    sup = await SupervisorClient.connect("/run/ketch")
    sup.hello.containers                                 # the live set: the truth
    await sup.create("web", "/var/lib/ketch/containers/web/bundle",
                     log=LogConfig(path=".../web-json.log", opts={"max-size": "10m"}))
    await sup.start("web")
    async for name, data in sup.events():               # "exit", "exec-exit"
        ...

Requests carry ids and replies are matched to them, so many can be in
flight; ``wait`` is simply a request whose reply comes when the process has
exited and its output is logged. Requests that pass a socket (``attach``,
``exec``) go over a short side connection with SCM_RIGHTS, which asyncio's
streams cannot send. ``SyncClient`` is the same protocol, blocking, for tools
and tests.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ketch.errors import KetchError, Unavailable
from ketch.jsonmodel import from_json, to_json

from .supervisor.protocol import (
    PIDFILE_NAME,
    SOCKET_NAME,
    VERSION,
    ContainerInfo,
    ExitRecord,
    LineBuffer,
    LogConfig,
    encode,
    error_from_reply,
    request,
)

__all__ = ["ContainerInfo", "ExitRecord", "Hello", "LogConfig", "SupervisorClient",
           "SyncClient", "request_upgrade", "running_pid", "socket_path", "spawn"]


def socket_path(exec_root: str) -> str:
    return os.path.join(exec_root, SOCKET_NAME)


def spawn(exec_root: str, root: str, *, python: str = sys.executable,
          log_path: str | None = None, cgroup: str | None = None,
          timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """fork+exec a supervisor and return once its socket listens.

    It gets its own session (a ^C to a foreground ketchd must not reach it)
    and writes its own diagnostics to ``<exec-root>/supervisor.log``. The
    caller reaps the Popen when it ends; after a restart of ketchd its parent
    is whoever reaps orphans. ``cgroup`` (a cgroupsPath) gives it a cgroup of
    its own, outside ketchd's.
    """
    os.makedirs(exec_root, mode=0o700, exist_ok=True)
    log_path = log_path or os.path.join(exec_root, "supervisor.log")
    r, w = os.pipe()
    argv = [python, "-I", "-m", "ketch.engine.supervisor", "--exec-root", exec_root,
            "--root", root, "--ready-fd", str(w)]
    if cgroup:
        argv += ["--cgroup", cgroup]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=[w],
            start_new_session=True, close_fds=True)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        data = os.read(r, 64) if ready else b""
    finally:
        os.close(r)
    if data.startswith(b"ready"):
        return proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    try:
        with open(log_path, "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace").strip()
    except OSError:
        tail = ""
    raise Unavailable(f"the supervisor did not start: {tail or f'exit status {proc.returncode}'}")


def running_pid(exec_root: str) -> int | None:
    """The pid in the supervisor's pidfile, if the file is there."""
    try:
        with open(os.path.join(exec_root, PIDFILE_NAME)) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def request_upgrade(exec_root: str, timeout: float = 30.0) -> int:
    """Ask the running supervisor to re-exec itself with the code installed now.

    Spoken without hello, so it works when the running supervisor is older
    than this client (hello would fail with a version mismatch). Containers
    keep running; connect again afterwards. Returns the supervisor's pid.
    """
    path = socket_path(exec_root)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as exc:
            raise Unavailable(f"cannot connect to the supervisor at {path}: {exc}") from None
        s.sendall(encode(request(1, "upgrade")))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise Unavailable("the supervisor closed the connection")
            data += chunk
    return int(_result(json.loads(data))["pid"])


@dataclass(slots=True)
class Hello:
    version: int = 0
    pid: int = 0
    containers: list[ContainerInfo] = field(default_factory=list)


def _args(**kw: Any) -> dict[str, Any]:
    """Request arguments in the protocol's camelCase, unset ones left out."""
    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.capitalize() for part in rest)

    return {camel(k): (to_json(v) if hasattr(v, "__dataclass_fields__") else v)
            for k, v in kw.items() if v is not None}


def _result(msg: dict[str, Any]) -> dict[str, Any]:
    if msg.get("ok"):
        result = msg.get("result") or {}
        return result if isinstance(result, dict) else {}
    raise error_from_reply(msg.get("error") or {})


class SupervisorClient:
    """The asyncio client ketchd keeps open for its whole life."""

    def __init__(self, path: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, sock: socket.socket | None = None,
                 *, events: bool = True) -> None:
        self.path = path
        self.hello = Hello()
        self._reader = reader
        self._writer = writer
        self._sock = sock               # ours, for sendmsg with SCM_RIGHTS
        self._want_events = events
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._lost: KetchError | None = None
        self._side: SupervisorClient | None = None
        self._side_lock: asyncio.Lock | None = None

    @classmethod
    async def connect(cls, exec_root: str | None = None, *, path: str | None = None,
                      timeout: float = 10.0, events: bool = True) -> SupervisorClient:
        """``events=False``: a connection for requests only (no exit events, no live
        set in the hello), as the side connection that passes fds."""
        path = path or socket_path(exec_root or "/run/ketch")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, path),
                                   timeout)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 22)
        except (TimeoutError, OSError) as exc:
            sock.close()
            raise Unavailable(f"cannot connect to the supervisor at {path}: {exc}") from None
        client = cls(path, reader, writer, sock, events=events)
        client._task = asyncio.get_running_loop().create_task(client._read_loop())
        hello: dict[str, Any] = {"version": VERSION}
        if not events:
            hello.update(events=False, list=False)
        try:
            res = await asyncio.wait_for(client.call("hello", hello), timeout)
        except BaseException:
            await client.close()
            raise
        client.hello = from_json(Hello, res, where="hello")
        if events:
            # The side connection for requests that pass fds, opened now: the first
            # attach does not wait for it, and the supervisor's fds stay constant.
            try:
                client._side = await cls.connect(path=path, timeout=timeout, events=False)
            except BaseException:
                await client.close()
                raise
        return client

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "event" in msg:
                    if self._want_events:   # (an older supervisor sends them anyway)
                        self._events.put_nowait((str(msg["event"]), msg.get("data") or {}))
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            self._lost = Unavailable("the connection to the supervisor was lost")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(self._lost)
            self._pending.clear()
            self._events.put_nowait(None)

    async def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._lost is not None:
            raise self._lost
        req_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self._writer.write(encode(request(req_id, op, args)))
        await self._writer.drain()
        return _result(await fut)

    async def _call_with_fd(self, op: str, args: dict[str, Any], fd: int) -> dict[str, Any]:
        """A request that passes ``fd``: over a side connection kept for that (asyncio's
        streams cannot send SCM_RIGHTS, so it is sent with sendmsg on our own socket,
        whose transport is only ever read). Opened once, not per request: a connect and
        a hello per attach cost a thread hop and a state read per live container."""
        if self._lost is not None:
            raise self._lost
        if self._side_lock is None:
            self._side_lock = asyncio.Lock()
        async with self._side_lock:
            if self._side is None or self._side._lost is not None:
                if self._side is not None:
                    await self._side.close()
                self._side = await SupervisorClient.connect(path=self.path, events=False)
            side = self._side
        return await side._send_with_fd(op, args, fd)

    async def _send_with_fd(self, op: str, args: dict[str, Any], fd: int) -> dict[str, Any]:
        assert self._sock is not None
        if self._lost is not None:
            raise self._lost
        req_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        data = encode(request(req_id, op, args, fds=1))
        self._pending[req_id] = fut
        try:
            sent = self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                               array.array("i", [fd]))])
        except BlockingIOError:
            await self._until_writable()
            sent = self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                               array.array("i", [fd]))])
        except OSError as exc:
            self._pending.pop(req_id, None)
            raise Unavailable(f"the connection to the supervisor was lost: {exc}") from None
        if sent < len(data):        # the fd went with the first byte
            await asyncio.get_running_loop().sock_sendall(self._sock, data[sent:])
        return _result(await fut)

    async def _until_writable(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, writable)
        try:
            await ready
        finally:
            loop.remove_writer(fd)

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """("exit", ExitRecord JSON) and ("exec-exit", ...) until the connection ends."""
        while True:
            item = await self._events.get()
            if item is None:
                self._events.put_nowait(None)
                return
            yield item

    # -- the requests, typed ------------------------------------------------------------
    async def containers(self) -> list[ContainerInfo]:
        res = await self.call("list")
        return [from_json(ContainerInfo, c) for c in res.get("containers", [])]

    async def state(self, container_id: str) -> ContainerInfo:
        return from_json(ContainerInfo, await self.call("state", {"id": container_id}))

    async def create(self, container_id: str, bundle: str, *, tty: bool = False,
                     stdin_open: bool = False, stdin_once: bool = False,
                     console_size: tuple[int, int] | None = None,
                     log: LogConfig | None = None) -> int:
        res = await self.call("create", _args(
            id=container_id, bundle=bundle, tty=tty, stdin_open=stdin_open,
            stdin_once=stdin_once, console_size=list(console_size) if console_size else None,
            log=log))
        return int(res["pid"])

    async def start(self, container_id: str) -> int:
        return int((await self.call("start", {"id": container_id}))["pid"])

    async def kill(self, container_id: str, sig: int, *, all: bool = False,
                   exec_id: str = "") -> None:
        await self.call("kill", _args(id=container_id, signal=sig, all=all or None,
                                      exec_id=exec_id or None))

    async def delete(self, container_id: str, *, force: bool = False) -> ExitRecord | None:
        res = await self.call("delete", {"id": container_id, "force": force})
        return from_json(ExitRecord, res["exit"]) if res.get("exit") else None

    async def wait(self, container_id: str, exec_id: str = "") -> ExitRecord:
        res = await self.call("wait", _args(id=container_id, exec_id=exec_id or None))
        return from_json(ExitRecord, res)

    async def resize(self, container_id: str, rows: int, cols: int, exec_id: str = "") -> None:
        await self.call("resize", _args(id=container_id, rows=rows, cols=cols,
                                        exec_id=exec_id or None))

    async def attach(self, container_id: str, sock: socket.socket | int, *,
                     stdin: bool = False, stdout: bool = True, stderr: bool = True,
                     exec_id: str = "", detach_keys: bytes = b"") -> None:
        """Hand ``sock`` to the supervisor; it streams output and reads stdin there.

        The caller may close its own copy afterwards: the supervisor closes the
        socket when the process's output ends.
        """
        fd = sock if isinstance(sock, int) else sock.fileno()
        await self._call_with_fd("attach", _args(
            id=container_id, exec_id=exec_id or None, stdin=stdin, stdout=stdout,
            stderr=stderr, detach_keys=list(detach_keys) or None), fd)

    async def exec(self, container_id: str, exec_id: str, process: dict[str, Any], *,
                   tty: bool = False, stdin_open: bool = False,
                   sock: socket.socket | int | None = None) -> int:
        args = _args(id=container_id, exec_id=exec_id, process=process, tty=tty,
                     stdin_open=stdin_open)
        if sock is None:
            res = await self.call("exec", args)
        else:
            fd = sock if isinstance(sock, int) else sock.fileno()
            res = await self._call_with_fd("exec", args, fd)
        return int(res["pid"])

    async def shutdown(self, *, force: bool = False) -> list[str]:
        return list((await self.call("shutdown", {"force": force})).get("containers", []))

    async def close(self) -> None:
        if self._side is not None:
            await self._side.close()
            self._side = None
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class SyncClient:
    """The protocol over a blocking socket: one request at a time, events skipped."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise Unavailable(f"cannot connect to the supervisor at {path}: {exc}") from None
        self._lines = LineBuffer(1 << 24)
        self._queue: list[bytes] = []
        self._next_id = 1
        res = self.call("hello", {"version": VERSION})
        self.hello = from_json(Hello, res, where="hello")

    def call(self, op: str, args: dict[str, Any] | None = None,
             fds: list[int] | None = None) -> dict[str, Any]:
        req_id = self._next_id
        self._next_id += 1
        data = encode(request(req_id, op, args, fds=len(fds or [])))
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", fds))])
        else:
            self.sock.sendall(data)
        while True:
            msg = self._next_message()
            if msg.get("id") == req_id and "event" not in msg:
                return _result(msg)

    def _next_message(self) -> dict[str, Any]:
        while not self._queue:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Unavailable("the supervisor closed the connection")
            self._queue.extend(self._lines.feed(chunk))
        msg = json.loads(self._queue.pop(0))
        return msg if isinstance(msg, dict) else {}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
