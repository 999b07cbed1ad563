"""The supervisor: one process that owns every container's life after ``create``.

What it holds, and why it is not ketchd:

- Containers are its children (it forks them through the runtime library,
  in-process) and it is a child subreaper, so even an init forked by an
  intermediate process (user namespaces) comes back to it. It reaps through
  one path only: SIGCHLD wakes the loop, ``waitid(P_ALL, WNOHANG)`` collects
  every exited child, each is dispatched by pid. Signals to containers go
  through the pidfd taken at create, so a recycled pid is never hit.
- It holds the read ends of their stdout/stderr (or the pty master) and
  writes their json-file logs; ketchd can crash or restart and nothing a
  container writes is lost or blocks.
- It writes each container's exit status to disk at reap time (see
  ``records``), with OOMKilled decided from the cgroup's oom_kill counter.

It spawns no process except through the runtime library, whose container
init resets every signal disposition, clears the signal mask and the wakeup
fd, and closes every fd it was not given before its final execve (the one
other child, the check before an upgrade, is posix_spawn'd with the same
resets). Its own signals are blocked and read from a signalfd (see ``loop``).

Clients (ketchd) connect to ``<exec-root>/supervisor.sock`` and speak the
protocol in ``protocol``. A client that disconnects or dies changes nothing;
the next one says hello and gets the live set.

Upgrade: ``upgrade`` re-executes the supervisor in place (the code on disk
now): pid, children, the subreaper flag, the blocked signals and every fd
marked inheritable survive execve, so containers, their stdio, logs and
attachments carry on. The state goes through ``<exec-root>/supervisor.state``;
client connections close, and clients reconnect and send their waits again.

Shutdown: ``shutdown`` without ``force`` is refused while containers are
alive (their stdio would die with the supervisor); with ``force``, and on
SIGTERM/SIGINT, every live container is SIGKILLed, reaped and recorded, then
the supervisor exits. Stopped containers stay in the runtime state, with
their exit records, for ketchd to read and delete.

If the supervisor itself is SIGKILLed, containers lose their stdio: one that
writes gets SIGPIPE, a tty gets SIGHUP; a quiet one runs on, reparented
to the next subreaper. A new supervisor lists those as ``supervised: false``
and, when they end, records exit code 255 with ``lost: true``, the best a
non-parent can know.
"""

from __future__ import annotations

import array
import functools
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

from ketch.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    KetchError,
    NotFound,
    NotSupported,
    System,
)
from ketch.linux import syscalls as sc

from . import protocol as proto
from .logs import StreamLog, open_log
from .loop import CONTROL, Loop, Watch
from .protocol import (
    AttachArgs,
    ContainerInfo,
    CreateArgs,
    ExecArgs,
    ExitRecord,
    LineBuffer,
    LogConfig,
    Request,
)
from .records import ExitStore, exit_code_of, now_rfc3339
from .stdio import Attachment, Stdio

DRAIN_GRACE = 2.0       # after an exit, how long output may still arrive (dockerd: 2 s)
# An exec's record goes once a ``wait`` has been answered with its exit (ketchd
# waits for each exec it starts, once); one nobody waited for (its ketchd went
# away meanwhile) goes after this long. A probe a second would otherwise leave
# ~86k records a day in its container.
UNCLAIMED_EXEC_GRACE = 60.0
CONNECT_TIMEOUT = 10.0  # for the container init to hand over its pty master
MAX_QUEUED = 16 << 20   # bytes queued for a client that does not read: then it is dropped
DEFERRED: dict[str, Any] = {}   # a handler's "the reply comes later" (wait)


class Process:
    """A process the supervisor started and reaps: a container's init, or an exec."""

    def __init__(self, container_id: str, exec_id: str = "") -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.pid = 0
        self.pidfd: int | None = None
        self.pidfd_watch: Watch | None = None
        self.tty = False
        self.stdio: Stdio | None = None
        self.started_at = ""
        self.exit: ExitRecord | None = None
        self.notified = False
        self.waiters: list[tuple[Connection, int]] = []

    def signal(self, sig: int) -> None:
        if self.exit is not None:
            raise Conflict("container not running" if not self.exec_id else "exec not running")
        try:
            if self.pidfd is not None:
                sc.pidfd_send_signal(self.pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            raise Conflict("container not running") from None

    def close_pidfd(self) -> None:
        if self.pidfd_watch is not None:
            self.pidfd_watch.close()
            self.pidfd_watch = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class Container(Process):
    def __init__(self, container_id: str, bundle: str) -> None:
        super().__init__(container_id)
        self.bundle = bundle
        self.created_at = now_rfc3339()
        self.oom_at_start = 0
        self.supervised = True
        self.execs: dict[str, Process] = {}


class Connection:
    """One client: JSON lines in (with any fds), JSON lines out, non-blocking."""

    def __init__(self, sup: Supervisor, sock: socket.socket) -> None:
        self.sup = sup
        self.sock = sock
        self.lines = LineBuffer()
        self.fds: list[int] = []
        self.out = bytearray()
        self.hello = False
        self.events = True      # exit events wanted (a side connection for fds says no)
        self.closing = False
        self.closed = False
        sock.setblocking(False)
        self.watch = sup.loop.watch(sock.fileno(), CONTROL, self._on_read, self._flush)

    def _on_read(self) -> None:
        fds = array.array("i")
        try:
            data, anc, _flags, _ = self.sock.recvmsg(
                65536, socket.CMSG_SPACE(proto.MAX_FDS * fds.itemsize),
                socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        except OSError:
            data, anc = b"", []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        self.fds.extend(fds)
        if not data:
            self.close()
            return
        try:
            lines = self.lines.feed(data)
        except KetchError as exc:
            self.send(proto.error_reply(0, exc))
            self.closing = True
            lines = []
        for line in lines:
            if self.closed or self.closing:
                break
            self.sup.handle(self, line)

    def take_fds(self, n: int) -> list[int]:
        if len(self.fds) < n:
            raise InvalidArgument(f"request carries {n} file descriptors, {len(self.fds)} came")
        taken, self.fds = self.fds[:n], self.fds[n:]
        return taken

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        self.out += proto.encode(msg)
        if len(self.out) > MAX_QUEUED:
            self.close()
            return
        self._flush()

    def _flush(self) -> None:
        try:
            while self.out:
                n = self.sock.send(self.out)
                del self.out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.close()
            return
        if self.out:
            self.watch.want(write=True)
        else:
            self.watch.want(write=False)
            if self.closing:
                self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.watch.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.sup.connections.discard(self)


class Supervisor:
    def __init__(self, exec_root: str, root: str, *, runtime: Any = None) -> None:
        from ketch.runtime.container import Runtime

        self.exec_root = exec_root
        self.root = root
        self.socket_path = os.path.join(exec_root, proto.SOCKET_NAME)
        self.console_dir = os.path.join(exec_root, "console")
        self.rt = runtime or Runtime(os.path.join(exec_root, "runtime"))
        self.exits = ExitStore(root)
        self.loop = Loop()
        self.containers: dict[str, Container] = {}
        self.by_pid: dict[int, Process] = {}
        self.connections: set[Connection] = set()
        self.listener: socket.socket | None = None
        self.stopping = False
        self.upgrading = False
        self.ops: dict[str, Callable[[Connection, Request, list[int]], dict[str, Any]]] = {
            "hello": self.op_hello, "create": self.op_create, "start": self.op_start,
            "kill": self.op_kill, "delete": self.op_delete, "state": self.op_state,
            "list": self.op_list, "wait": self.op_wait, "attach": self.op_attach,
            "resize": self.op_resize, "exec": self.op_exec, "shutdown": self.op_shutdown,
            "upgrade": self.op_upgrade,
        }

    # -- life -----------------------------------------------------------------------------
    def listen(self) -> None:
        os.makedirs(self.console_dir, mode=0o700, exist_ok=True)
        try:
            os.unlink(self.socket_path)     # stale: the pidfile lock says no one else runs
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        self._listen_watch = self.loop.watch(s.fileno(), CONTROL, self._accept)

    def block_signals(self) -> None:
        """Signals go to the loop from now on; before telling anyone we are ready."""
        self.loop.on_signal(signal.SIGCHLD, self.reap)
        self.loop.on_signal(signal.SIGTERM, lambda: self.shutdown(force=True))
        self.loop.on_signal(signal.SIGINT, lambda: self.shutdown(force=True))
        self.loop.on_signal(signal.SIGHUP, lambda: None)
        self.loop.block_signals()

    def serve(self) -> None:
        self.block_signals()
        self.adopt()
        self.reap()     # children that ended before SIGCHLD was ours
        self.loop.run()

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()
        if self.listener is not None:
            self._listen_watch.close()
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        self.loop.close()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.set_inheritable(False)
        self.connections.add(Connection(self, sock))

    # -- requests -------------------------------------------------------------------------
    def handle(self, conn: Connection, line: bytes) -> None:
        req_id = 0
        fds: list[int] = []
        try:
            req = proto.parse_request(line)
            req_id = req.id
            fds = conn.take_fds(req.fds)
            # upgrade needs no hello: a newer client must be able to ask an older
            # supervisor, whose version it does not speak, to become the new one.
            if not conn.hello and req.op not in ("hello", "upgrade"):
                raise Conflict("protocol: say hello first")
            handler = self.ops.get(req.op)
            if handler is None:
                raise NotSupported(f"unknown request: {req.op}")
            result = handler(conn, req, fds)
            if result is not DEFERRED:
                conn.send(proto.reply(req_id, result))
        except KetchError as exc:
            conn.send(proto.error_reply(req_id, exc))
        except OSError as exc:
            conn.send(proto.error_reply(req_id, System(str(exc))))
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the supervisor
            traceback.print_exc(file=sys.stderr)
            conn.send(proto.error_reply(req_id, System(f"supervisor: internal error: {exc}")))
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)

    def _container(self, container_id: str) -> Container:
        c = self.containers.get(container_id)
        if c is None:
            raise NotFound(f"no such container: {container_id}")
        return c

    def _process(self, container_id: str, exec_id: str) -> Process:
        c = self._container(container_id)
        if not exec_id:
            return c
        p = c.execs.get(exec_id)
        if p is None:
            raise NotFound(f"no such exec: {exec_id}")
        return p

    def op_hello(self, conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        version = req.args.get("version")
        if version != proto.VERSION:
            conn.closing = True
            raise NotSupported(f"supervisor protocol version mismatch: the supervisor speaks "
                               f"{proto.VERSION}, the client {version}; restart them together")
        conn.hello = True
        conn.events = req.args.get("events") is not False
        out: dict[str, Any] = {"version": proto.VERSION, "pid": os.getpid()}
        if req.args.get("list") is not False:     # the live set costs a state read each
            out["containers"] = [proto.dump(self.info(c)) for c in self.containers.values()]
        return out

    def op_list(self, _conn: Connection, _req: Request, _fds: list[int]) -> dict[str, Any]:
        return {"containers": [proto.dump(self.info(c)) for c in self.containers.values()]}

    def op_state(self, _conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        return proto.dump(self.info(self._container(str(req.args.get("id", "")))))

    def info(self, c: Container) -> ContainerInfo:
        if c.exit is not None:
            status = "stopped"
        else:
            try:
                status = self.rt.state(c.container_id).status
            except KetchError:
                status = "stopped"
        return ContainerInfo(id=c.container_id, pid=c.pid, status=status, bundle=c.bundle,
                             tty=c.tty, created_at=c.created_at, started_at=c.started_at,
                             supervised=c.supervised, exit=c.exit, execs=sorted(c.execs),
                             drained=c.stdio is not None and c.stdio.drained)

    # -- create and start -----------------------------------------------------------------
    def op_create(self, _conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        from ketch.runtime.container import CreateOptions
        from ketch.runtime.state import validate_id

        a: CreateArgs = proto.args_of(CreateArgs, req)
        validate_id(a.id)
        if a.id in self.containers:
            raise AlreadyExists(f"container {a.id} already exists")
        if not a.bundle:
            raise InvalidArgument("create: bundle is required")
        log = self._open_log(a.log)
        c = Container(a.id, os.path.abspath(a.bundle))
        c.tty = a.tty
        try:
            self.exits.remove(a.id)     # a record of an earlier life of this id
            with _ChildStdio(self.console_dir, a.tty, a.stdin_open) as cs:
                started = self.rt.create(a.id, CreateOptions(
                    bundle=c.bundle, stdio=cs.child_stdio(), console_socket=cs.console_path))
                try:
                    outputs, stdin = cs.parent_side(a.console_size)
                except BaseException:
                    self.rt.delete(a.id, force=True)
                    raise
        except BaseException:
            log.close()
            self.reap()
            raise
        c.pid, c.pidfd = started.pid, started.pidfd
        try:
            c.oom_at_start = self.rt.oom_kill_count(a.id)
        except (KetchError, OSError, ValueError):
            c.oom_at_start = 0      # no memory controller: OOMKilled stays false
        c.stdio = Stdio(self.loop, tty=a.tty, outputs=outputs, stdin=stdin,
                        stdin_once=a.stdin_once, log=log,
                        on_drained=lambda: self._maybe_finish(c))
        self.containers[a.id] = c
        self.by_pid[c.pid] = c
        return {"pid": c.pid}

    def _open_log(self, cfg: LogConfig | None) -> StreamLog:
        if cfg is None:
            return StreamLog(None)
        # A local log's rotated file is compressed a piece per loop turn.
        return open_log(cfg.driver, cfg.path, cfg.opts, cfg.attrs,
                        defer=lambda fn: self.loop.call_later(0, fn))

    def op_start(self, _conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        c = self._container(str(req.args.get("id", "")))
        if c.exit is not None:
            raise Conflict("cannot start a container that has stopped")
        self.rt.start(c.container_id)
        c.started_at = now_rfc3339()
        return {"pid": c.pid}

    # -- signals, delete ------------------------------------------------------------------
    def op_kill(self, _conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        p = self._process(str(req.args.get("id", "")), str(req.args.get("execId", "")))
        sig = req.args.get("signal", signal.SIGKILL)
        if not isinstance(sig, int) or not 0 < sig < signal.NSIG:
            raise InvalidArgument(f"invalid signal: {sig}")
        if req.args.get("all") and not p.exec_id:
            self.rt.kill(p.container_id, sig, all_processes=True)
        elif not p.exec_id and self._paused(p.container_id):
            self.rt.kill(p.container_id, sig)   # it thaws a paused one for SIGKILL
        else:
            p.signal(sig)
        return {}

    def _paused(self, container_id: str) -> bool:
        try:
            return self.rt.state(container_id).status == "paused"
        except KetchError:
            return False

    def op_delete(self, _conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        c = self._container(str(req.args.get("id", "")))
        force = bool(req.args.get("force"))
        if c.exit is None and self.info(c).status not in ("created", "stopped") and not force:
            raise Conflict(f"cannot delete container {c.container_id} that is not stopped: "
                           f"{self.info(c).status}")
        self.rt.delete(c.container_id, force=True)
        self.reap()                 # collect it now: delete answers with its exit
        for p in [c, *c.execs.values()]:
            if p.stdio is not None:
                p.stdio.close()
            p.close_pidfd()
            self.by_pid.pop(p.pid, None)
            if p.exit is None:      # an adopted process we could not reap
                p.exit = ExitRecord(id=c.container_id, exec_id=p.exec_id, pid=p.pid,
                                    exit_code=255, lost=True, finished_at=now_rfc3339())
            self._maybe_finish(p)
        del self.containers[c.container_id]
        self.exits.remove(c.container_id)
        return {"exit": proto.dump(c.exit)} if c.exit else {}

    # -- waiting --------------------------------------------------------------------------
    def op_wait(self, conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        p = self._process(str(req.args.get("id", "")), str(req.args.get("execId", "")))
        if p.notified and p.exit is not None:
            self._forget_exec(p)
            return proto.dump(p.exit)
        p.waiters.append((conn, req.id))
        return DEFERRED

    def _forget_exec(self, p: Process) -> None:
        """Drop a finished exec's record (its exit has been read, or nobody came)."""
        c = self.containers.get(p.container_id)
        if p.exec_id and c is not None and c.execs.get(p.exec_id) is p:
            del c.execs[p.exec_id]

    # -- attach, resize, exec -------------------------------------------------------------
    def op_attach(self, _conn: Connection, req: Request, fds: list[int]) -> dict[str, Any]:
        a: AttachArgs = proto.args_of(AttachArgs, req)
        if len(fds) != 1:
            raise InvalidArgument("attach: pass exactly one socket (SCM_RIGHTS)")
        p = self._process(a.id, a.exec_id)
        if p.stdio is None or p.stdio.drained:
            raise Conflict("You cannot attach to a stopped container, start it first")
        sock = _take_socket(fds)
        Attachment(p.stdio, sock, stdin=a.stdin, stdout=a.stdout, stderr=a.stderr,
                   detach_keys=_keys(a.detach_keys))
        return {}

    def op_resize(self, _conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        from ketch.runtime import console

        p = self._process(str(req.args.get("id", "")), str(req.args.get("execId", "")))
        rows, cols = req.args.get("rows"), req.args.get("cols")
        if not isinstance(rows, int) or not isinstance(cols, int) or rows < 0 or cols < 0:
            raise InvalidArgument("resize: rows and cols must be non-negative integers")
        master = p.stdio.master if p.stdio is not None else None
        if master is None:
            raise Conflict(f"{p.exec_id or p.container_id} has no tty to resize")
        console.set_size(master, rows, cols)    # the kernel sends SIGWINCH
        return {}

    def op_exec(self, _conn: Connection, req: Request, fds: list[int]) -> dict[str, Any]:
        from ketch.runtime.container import ExecOptions
        from ketch.runtime.spec import parse_process
        from ketch.runtime.state import validate_id

        a: ExecArgs = proto.args_of(ExecArgs, req)
        c = self._container(a.id)
        validate_id(a.exec_id)
        if a.exec_id in c.execs:
            raise AlreadyExists(f"exec {a.exec_id} already exists")
        if c.exit is not None:
            raise Conflict(f"container {a.id} is not running")
        if len(fds) > 1:
            raise InvalidArgument("exec: at most one attach socket")
        process = parse_process(a.process, where="exec: process")
        process.terminal = a.tty
        keys = _keys(a.detach_keys)
        sock = _take_socket(fds) if fds else None       # checked before anything runs
        p = Process(a.id, a.exec_id)
        p.tty = a.tty
        try:
            with _ChildStdio(self.console_dir, a.tty, a.stdin_open) as cs:
                started = self.rt.exec(a.id, process, ExecOptions(
                    stdio=cs.child_stdio(), console_socket=cs.console_path))
                outputs, stdin = cs.parent_side(a.console_size)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        p.pid, p.pidfd, p.started_at = started.pid, started.pidfd, now_rfc3339()
        # An exec's output goes to its attachment only, never to the container's log.
        p.stdio = Stdio(self.loop, tty=a.tty, outputs=outputs, stdin=stdin, stdin_once=True,
                        log=None, on_drained=lambda: self._maybe_finish(p))
        if sock is not None:
            Attachment(p.stdio, sock, stdin=a.stdin_open, stdout=True, stderr=True,
                       detach_keys=keys)
        c.execs[a.exec_id] = p
        self.by_pid[p.pid] = p
        return {"pid": p.pid}

    # -- shutdown -------------------------------------------------------------------------
    def op_shutdown(self, _conn: Connection, req: Request, _fds: list[int]) -> dict[str, Any]:
        force = bool(req.args.get("force"))
        live = [c.container_id for c in self.containers.values() if c.exit is None]
        if live and not force:
            raise Conflict(f"{len(live)} containers are alive ({', '.join(sorted(live))}); "
                           "stop them first, or shut down with force to kill them")
        # Answer first: the loop stops after this turn, connections close after.
        self.loop.call_later(0, lambda: self.shutdown(force=True))
        return {"containers": live}

    def shutdown(self, force: bool) -> None:
        if self.stopping:
            return
        self.stopping = True
        for c in list(self.containers.values()):
            if c.exit is None and c.supervised:
                try:
                    self.rt.kill(c.container_id, signal.SIGKILL, all_processes=True)
                except KetchError:
                    pass
        self._wait_children()
        for c in self.containers.values():
            for p in [c, *c.execs.values()]:
                if p.stdio is not None:
                    p.stdio.abandon()
        for conn in list(self.connections):
            conn._flush()
        self.loop.stop()

    def _wait_children(self, timeout: float = 10.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while any(p.exit is None for p in self.by_pid.values()) and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)

    # -- upgrade: re-exec in place ---------------------------------------------------------
    def op_upgrade(self, _conn: Connection, _req: Request, _fds: list[int]) -> dict[str, Any]:
        if self.stopping:
            raise Conflict("the supervisor is shutting down")
        self.upgrading = True
        self.loop.call_later(0, self.loop.stop)     # after this reply is sent
        return {"pid": os.getpid()}

    def snapshot(self) -> tuple[dict[str, Any], list[int]]:
        """Everything a new image of the supervisor needs, and the fds it must inherit."""
        fds: list[int] = []

        def keep(fd: int) -> int:
            fds.append(fd)
            return fd

        def process(p: Process) -> dict[str, Any]:
            return {"execId": p.exec_id, "pid": p.pid, "tty": p.tty,
                    "pidfd": keep(p.pidfd) if p.pidfd is not None else None,
                    "startedAt": p.started_at, "notified": p.notified,
                    "exit": proto.dump(p.exit) if p.exit is not None else None,
                    "stdio": p.stdio.snapshot(keep) if p.stdio is not None else None}

        assert self.listener is not None
        state = {"version": proto.VERSION, "listener": keep(self.listener.fileno()),
                 "containers": [
                     {"id": c.container_id, "bundle": c.bundle, "createdAt": c.created_at,
                      "oomAtStart": c.oom_at_start, "supervised": c.supervised,
                      "process": process(c), "execs": [process(e) for e in c.execs.values()]}
                     for c in self.containers.values()]}
        return state, fds

    @staticmethod
    def check_state(state: dict[str, Any]) -> None:
        """Can this code restore ``state``? Asked, in a separate process, before an upgrade."""
        if state.get("version") != proto.VERSION:
            raise NotSupported(f"cannot restore supervisor state version {state.get('version')}")
        for cd in state["containers"]:
            for d in [cd["process"], *cd["execs"]]:
                if d["exit"]:
                    from ketch.jsonmodel import from_json
                    from_json(ExitRecord, d["exit"])

    def restore(self, state: dict[str, Any]) -> None:
        """Take over from the image that exec'd us (the inverse of ``snapshot``)."""
        self.check_state(state)
        self.listener = socket.socket(fileno=state["listener"])
        self.listener.setblocking(False)
        self._listen_watch = self.loop.watch(self.listener.fileno(), CONTROL, self._accept)
        for cd in state["containers"]:
            c = Container(cd["id"], cd["bundle"])
            c.created_at, c.oom_at_start = cd["createdAt"], cd["oomAtStart"]
            c.supervised = cd["supervised"]
            self._restore_process(c, cd["process"])
            for ed in cd["execs"]:
                e = Process(c.container_id, ed["execId"])
                self._restore_process(e, ed)
                c.execs[e.exec_id] = e
                if e.notified:      # its timer did not survive the execve
                    self.loop.call_later(UNCLAIMED_EXEC_GRACE, functools.partial(
                        self._forget_exec, e))
            self.containers[c.container_id] = c
            if not c.supervised and c.exit is None and c.pidfd is not None:
                self._watch_pidfd(c)

    def _restore_process(self, p: Process, d: dict[str, Any]) -> None:
        from ketch.jsonmodel import from_json

        p.pid, p.pidfd, p.tty, p.started_at = d["pid"], d["pidfd"], d["tty"], d["startedAt"]
        p.notified = d["notified"]
        p.exit = from_json(ExitRecord, d["exit"]) if d["exit"] else None
        if p.exit is None:
            self.by_pid[p.pid] = p
        if d["stdio"] is not None:
            p.stdio = Stdio.restore(self.loop, d["stdio"], lambda: self._maybe_finish(p))
            if p.exit is not None and not p.stdio.drained:
                self.loop.call_later(DRAIN_GRACE, p.stdio.abandon)

    # -- reaping --------------------------------------------------------------------------
    def reap(self) -> None:
        """Collect every exited child; the only place the supervisor waits for one.

        All the exits of one pass are recorded together (their records on disk
        with one directory sync), then told."""
        done: list[tuple[Process, ExitRecord]] = []
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                break
            if info is None or info.si_pid == 0:
                break
            p = self.by_pid.pop(info.si_pid, None)
            if p is None:
                continue    # an orphan reparented to us (subreaper), or a runtime helper
            code, sig = exit_code_of(info.si_code, info.si_status)
            done.append((p, self._exit_record(p, code, sig)))
        if done:
            self._record_exits(done)

    def _exited(self, p: Process, code: int, sig: int, lost: bool = False) -> None:
        self._record_exits([(p, self._exit_record(p, code, sig, lost))])

    def _exit_record(self, p: Process, code: int, sig: int, lost: bool = False) -> ExitRecord:
        p.close_pidfd()
        rec = ExitRecord(id=p.container_id, exec_id=p.exec_id, pid=p.pid, exit_code=code,
                         signal=sig, started_at=p.started_at, finished_at=now_rfc3339(),
                         lost=lost)
        if isinstance(p, Container):
            rec.oom_killed = self._oom_killed(p)
        return rec

    def _record_exits(self, done: list[tuple[Process, ExitRecord]]) -> None:
        # Containers' records on disk before anyone is told. A record that cannot be
        # written (a full disk) must not leave its processes unreaped forever: they
        # are told anyway, the failure goes to the log.
        try:
            self.exits.write_many([rec for p, rec in done if isinstance(p, Container)])
        except (OSError, KetchError):
            traceback.print_exc(file=sys.stderr)
        for p, rec in done:
            self._set_exit(p, rec)

    def _set_exit(self, p: Process, rec: ExitRecord) -> None:
        p.exit = rec
        if p.stdio is not None and not p.stdio.drained:
            stdio = p.stdio
            self.loop.call_later(DRAIN_GRACE, stdio.abandon)
        self._maybe_finish(p)

    def _oom_killed(self, c: Container) -> bool:
        try:
            return self.rt.oom_kill_count(c.container_id) > c.oom_at_start
        except (KetchError, OSError, ValueError):
            return False

    def _maybe_finish(self, p: Process) -> None:
        """Tell waiters and clients once the process exited and its output is all logged."""
        if p.notified or p.exit is None or (p.stdio is not None and not p.stdio.drained):
            return
        p.notified = True
        data = proto.dump(p.exit)
        claimed = bool(p.waiters)
        for conn, req_id in p.waiters:
            conn.send(proto.reply(req_id, data))
        p.waiters.clear()
        if p.exec_id:
            if claimed:
                self._forget_exec(p)
            else:
                self.loop.call_later(UNCLAIMED_EXEC_GRACE, lambda: self._forget_exec(p))
        ev = proto.event("exec-exit" if p.exec_id else "exit", data)
        for conn in list(self.connections):
            if conn.hello and conn.events:
                conn.send(ev)

    # -- containers a previous supervisor started -----------------------------------------
    def adopt(self) -> None:
        for st in self.rt.containers():
            if st.id in self.containers:
                continue
            c = Container(st.id, st.bundle)
            c.supervised = False
            c.pid = st.pid
            c.created_at = st.created
            if st.status == "stopped":
                c.exit = self.exits.read(st.id) or self._lost(c)
                c.notified = True
            else:
                try:
                    c.pidfd = sc.pidfd_open(st.pid)
                except OSError:
                    c.exit = self._lost(c)
                    c.notified = True
                else:
                    self._watch_pidfd(c)
            self.containers[st.id] = c

    def _lost(self, c: Container) -> ExitRecord:
        rec = ExitRecord(id=c.container_id, pid=c.pid, exit_code=255, lost=True,
                         finished_at=now_rfc3339())
        self.exits.write(rec)
        return rec

    def _watch_pidfd(self, c: Container) -> None:
        """Not our child: a pidfd becomes readable when it exits, which is all we can learn."""
        assert c.pidfd is not None
        c.pidfd_watch = self.loop.watch(c.pidfd, CONTROL,
                                        lambda: self._exited(c, 255, 0, lost=True))


def _take_socket(fds: list[int]) -> socket.socket:
    """The one fd a request passed, as a socket the caller owns from now on."""
    try:
        sock = socket.socket(fileno=fds[0])
    except OSError:
        raise InvalidArgument("the file descriptor passed is not a socket") from None
    fds.clear()
    return sock


def _keys(values: list[int]) -> bytes:
    try:
        return bytes(values)
    except ValueError:
        raise InvalidArgument("detachKeys: bytes from 0 to 255") from None


class _ChildStdio:
    """The fds a new process gets, and the ends the supervisor keeps.

    Non-tty: a pipe each for stdout and stderr, one for stdin when it is open
    (else /dev/null). Tty: the init makes the pty in the container and sends
    its master over a console socket that lives only for this create.
    """

    _serial = 0

    def __init__(self, console_dir: str, tty: bool, stdin_open: bool) -> None:
        self.tty = tty
        self.stdin_open = stdin_open
        self.console_path: str | None = None
        self._listener: socket.socket | None = None
        self._child: list[int] = []
        self._parent: list[int] = []
        self._stdio: tuple[int | None, int | None, int | None] = (None, None, None)
        self._outputs: list[tuple[int, str]] = []
        self._stdin: int | None = None
        if tty:
            # A short name: a unix socket path has 107 bytes, and a container id
            # and an exec id are 64 each.
            _ChildStdio._serial += 1
            self.console_path = os.path.join(console_dir, f"{_ChildStdio._serial}.sock")
            try:
                os.unlink(self.console_path)
            except FileNotFoundError:
                pass
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(self.console_path)
            self._listener.listen(1)
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if stdin_open:
            in_r, in_w = os.pipe()
            self._stdin = in_w
            self._parent.append(in_w)
        else:
            in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._child += [in_r, out_w, err_w]
        self._parent += [out_r, err_r]
        self._stdio = (in_r, out_w, err_w)
        self._outputs = [(out_r, "stdout"), (err_r, "stderr")]

    def __enter__(self) -> _ChildStdio:
        return self

    def child_stdio(self) -> tuple[int | None, int | None, int | None]:
        return self._stdio

    def parent_side(self, console_size: list[int]) -> tuple[list[tuple[int, str]], int | None]:
        """After the runtime call: our ends, with the child's closed (so EOF can come)."""
        for fd in self._child:
            os.close(fd)
        self._child = []
        if self._listener is not None:
            from ketch.runtime import console

            self._listener.settimeout(CONNECT_TIMEOUT)
            conn, _ = self._listener.accept()
            try:
                master, _name = console.recv_fd(conn)
            finally:
                conn.close()
            os.set_inheritable(master, False)
            self._parent.append(master)
            if len(console_size) == 2:
                console.set_size(master, console_size[0], console_size[1])
            self._outputs = [(master, "stdout")]
            self._stdin = master if self.stdin_open else None
        self._parent = []       # the caller owns them now
        return self._outputs, self._stdin

    def __exit__(self, *exc: object) -> None:
        for fd in self._child + self._parent:
            os.close(fd)
        if self._listener is not None:
            self._listener.close()
            assert self.console_path is not None
            try:
                os.unlink(self.console_path)
            except FileNotFoundError:
                pass
