"""The supervisor's wire protocol: JSON lines over a unix stream socket.

One JSON object per line, both ways. A client speaks first, with ``hello``:

    -> {"id": 1, "op": "hello", "args": {"version": 1}}
    <- {"id": 1, "ok": true, "result": {"version": 1, "pid": 42, "containers": [...]}}
    -> {"id": 2, "op": "kill", "args": {"id": "web", "signal": 15}}
    <- {"id": 2, "ok": false, "error": {"kind": "NotFound", "message": "no such container: web"}}
    <- {"event": "exit", "data": {"id": "web", "exitCode": 143, ...}}

Replies carry the request's ``id`` and may come out of order (``wait`` answers
when the container exits). Lines without ``id`` are events, sent to every
client that said hello. A request that carries file descriptors (``attach``,
``exec``) counts them in ``"fds"``; they travel as SCM_RIGHTS with the bytes
of that line. A version mismatch is answered with a ``NotSupported`` error and
the connection is closed: the two sides must be upgraded together.

Requests (arguments in camelCase; results in ``result``):

    hello     {version, events?, list?}      -> {version, pid, containers?: [ContainerInfo]}
              events: false  this connection gets no events (a side connection)
              list: false    no live set in the answer (each costs a state read)
    create    CreateArgs                     -> {pid}    the init waits for start
    start     {id}                           -> {pid}
    kill      {id, signal, all?, execId?}    -> {}       through the pidfd
    delete    {id, force?}                   -> {exit?}  removes runtime state and record
    state     {id}                           -> ContainerInfo
    list      {}                             -> {containers: [ContainerInfo]}
    wait      {id, execId?}                  -> ExitRecord, once exited and logged
    attach    AttachArgs + 1 socket fd       -> {}       output to it, stdin from it
    resize    {id, execId?, rows, cols}      -> {}
    exec      ExecArgs (+ 1 socket fd)       -> {pid}
    shutdown  {force?}                       -> {containers}  refused while alive unless force
    upgrade   {}                             -> {pid}    re-exec in place; reconnect.
                                                         Needs no hello, and never changes

Events: ``exit`` and ``exec-exit`` with an ExitRecord, to every client that
said hello, once the process has exited and its output is drained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ketch import errors
from ketch.errors import InvalidArgument, KetchError
from ketch.jsonmodel import from_json, to_json

VERSION = 1
SOCKET_NAME = "supervisor.sock"
PIDFILE_NAME = "supervisor.pid"
MAX_LINE = 1 << 20          # a request is small; a bigger line is a broken client
MAX_FDS = 4                 # per request


# -- the messages' arguments and results -------------------------------------------
@dataclass(slots=True)
class LogConfig:
    """Where and how a container's output is logged (Docker's --log-driver/--log-opt)."""

    driver: str = "json-file"                   # "json-file", "local" or "none"
    path: str = ""                              # the current file; rotated ones get .1, .2, ...
    opts: dict[str, str] = field(default_factory=dict)   # max-size, max-file, compress
    attrs: dict[str, str] = field(default_factory=dict)  # "attrs" of every entry (labels, env)


@dataclass(slots=True)
class CreateArgs:
    id: str = ""
    bundle: str = ""
    tty: bool = False
    stdin_open: bool = False        # docker -i: a pipe the container reads, fed by attach
    stdin_once: bool = False        # close the container's stdin when an attach's stdin ends
    console_size: list[int] = field(default_factory=list)    # [rows, cols] for a tty
    log: LogConfig | None = None


@dataclass(slots=True)
class ExecArgs:
    id: str = ""
    exec_id: str = ""
    process: dict[str, Any] = field(default_factory=dict)    # OCI "process" object
    tty: bool = False
    stdin_open: bool = False
    console_size: list[int] = field(default_factory=list)
    detach_keys: list[int] = field(default_factory=list)     # for the socket passed along


@dataclass(slots=True)
class AttachArgs:
    id: str = ""
    exec_id: str = ""               # empty: the container's own process
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    # The bytes that end the attachment when typed on stdin (docker: ctrl-p,
    # ctrl-q = [16, 17]); parsing "ctrl-p,ctrl-q" is the API's job.
    detach_keys: list[int] = field(default_factory=list)


@dataclass(slots=True)
class ExitRecord:
    """How a process ended; for a container's init also written to disk."""

    id: str = ""
    exec_id: str = field(default="", metadata={"omit": "empty"})
    pid: int = 0
    exit_code: int = field(default=0, metadata={"omit": "never"})
    signal: int = field(default=0, metadata={"omit": "never"})   # 0: it exited by itself
    oom_killed: bool = field(default=False, metadata={"omit": "never"})
    started_at: str = ""
    finished_at: str = ""
    # The supervisor that started it died; a new one saw it end but could not
    # learn how (it was not its child): exit code 255, as containerd reports.
    lost: bool = field(default=False, metadata={"omit": "empty"})


@dataclass(slots=True)
class ContainerInfo:
    id: str = ""
    pid: int = field(default=0, metadata={"omit": "never"})
    status: str = ""                # created, running, paused, stopped
    bundle: str = ""
    tty: bool = field(default=False, metadata={"omit": "never"})
    created_at: str = ""
    started_at: str = ""
    # False for containers a previous supervisor started: no stdio, no logs,
    # exit code unknowable; ketchd should stop and delete them.
    supervised: bool = field(default=True, metadata={"omit": "never"})
    exit: ExitRecord | None = None
    execs: list[str] = field(default_factory=list)
    # Its output has ended (it closed its stdio: it is exiting, as a rule), so an
    # attach finds nothing to attach to.
    drained: bool = field(default=False, metadata={"omit": "empty"})


# -- framing -------------------------------------------------------------------------
def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def request(req_id: int, op: str, args: dict[str, Any] | None = None,
            fds: int = 0) -> dict[str, Any]:
    msg: dict[str, Any] = {"id": req_id, "op": op, "args": args or {}}
    if fds:
        msg["fds"] = fds
    return msg


def reply(req_id: int, result: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": req_id, "ok": True, "result": result or {}}


def error_reply(req_id: int, exc: KetchError) -> dict[str, Any]:
    return {"id": req_id, "ok": False,
            "error": {"kind": type(exc).__name__, "message": exc.message}}


def event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event": name, "data": data}


def error_from_reply(err: dict[str, Any]) -> KetchError:
    """The typed error a reply names, so the client raises what the supervisor did."""
    kind = getattr(errors, str(err.get("kind", "")), None)
    message = str(err.get("message", "supervisor error"))
    if isinstance(kind, type) and issubclass(kind, KetchError) and kind is not errors.MultiError:
        return kind(message)
    return errors.System(message)


@dataclass(slots=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]
    fds: int = 0


def parse_request(line: bytes) -> Request:
    try:
        msg = json.loads(line)
    except ValueError as exc:
        raise InvalidArgument(f"request is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise InvalidArgument("request must be a JSON object")
    req_id, op, args, fds = msg.get("id"), msg.get("op"), msg.get("args", {}), msg.get("fds", 0)
    if not isinstance(req_id, int) or isinstance(req_id, bool):
        raise InvalidArgument("request: id must be an integer")
    if not isinstance(op, str) or not op:
        raise InvalidArgument("request: op must be a string")
    if not isinstance(args, dict):
        raise InvalidArgument("request: args must be an object")
    if not isinstance(fds, int) or not 0 <= fds <= MAX_FDS:
        raise InvalidArgument(f"request: fds must be an integer from 0 to {MAX_FDS}")
    return Request(req_id, op, args, fds)


def args_of(cls: type[Any], req: Request) -> Any:
    return from_json(cls, req.args, where=req.op)


def dump(obj: Any) -> dict[str, Any]:
    return to_json(obj)


class LineBuffer:
    """Bytes in, complete lines out; a line longer than ``limit`` is an error."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                break
            lines.append(bytes(self._buf[:i]))
            del self._buf[:i + 1]
        if len(self._buf) > self.limit:
            raise InvalidArgument(f"message longer than {self.limit} bytes")
        return lines

    def pending(self) -> int:
        return len(self._buf)
