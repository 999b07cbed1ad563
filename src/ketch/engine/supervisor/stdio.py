"""The host side of a process's stdio: output read into the log and to attached
clients, input fed from an attached client.

A container's (or exec's) stdout and stderr are pipes, or one pty master for a
tty, whose read ends only the supervisor holds. Every turn of the loop reads
at most ``READ_CHUNK`` bytes per fd. What is read goes to the json-file log and
to every attachment; an attachment that cannot keep up (its client reads
slowly) pauses reading this process's output, as a slow ``docker attach``
slows the container under dockerd too, and never the other containers.

Attachments are sockets handed over by the client (SCM_RIGHTS): output goes
to them framed as Docker's attach stream for non-tty processes (8-byte
header: stream, 0, 0, 0, big-endian length) and raw for a tty, so ketchd can
give the socket of a hijacked HTTP connection directly. Bytes from the client
are the process's stdin. When the client half-closes (stdin EOF), the output
keeps flowing; with ``stdin_once`` the process's stdin is closed then, so
``echo hi | docker run -i busybox cat`` ends.
"""

from __future__ import annotations

import base64
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from .logs import StreamLog
from .loop import INPUT, OUTPUT, Loop, Watch

READ_CHUNK = 64 * 1024
HIGH_WATER = 1 << 20        # bytes queued for a client before its process's output pauses
STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}


class Stdio:
    def __init__(self, loop: Loop, *, tty: bool, outputs: list[tuple[int, str]],
                 stdin: int | None, stdin_once: bool, log: StreamLog | None,
                 on_drained: Callable[[], None]) -> None:
        self.loop = loop
        self.tty = tty
        self.log = log
        self.stdin_once = stdin_once
        self.on_drained = on_drained
        self.attachments: list[Attachment] = []
        self._outputs: dict[int, str] = {}
        self._watches: dict[int, Watch] = {}
        self._stdin = stdin
        self._stdin_buf = bytearray()
        self._stdin_eof = False
        self._paused = False
        self.drained = False
        for fd, stream in outputs:
            os.set_blocking(fd, False)
            self._outputs[fd] = stream
            self._watches[fd] = loop.watch(fd, OUTPUT, self._reader(fd),
                                           self._write_stdin if fd == stdin else None)
        if stdin is not None and stdin not in self._watches:
            os.set_blocking(stdin, False)
            self._watches[stdin] = loop.watch(stdin, INPUT, None, self._write_stdin)
        if not self._outputs:
            self._drained()

    @property
    def master(self) -> int | None:
        """The pty master of a tty process (for resize), while it is open."""
        if self.tty and self._outputs:
            return next(iter(self._outputs))
        return None

    @property
    def has_stdin(self) -> bool:
        return self._stdin is not None

    # -- output ---------------------------------------------------------------------------
    def _reader(self, fd: int) -> Callable[[], None]:
        return lambda: self._read(fd)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: the pty's slave side is closed everywhere, the tty's EOF.
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._end(fd)
            return
        stream = self._outputs[fd]
        if self.log is not None:
            self.log.feed(stream, data)
        for a in list(self.attachments):
            a.output(stream, data)
        self.check_backlog()

    def check_backlog(self) -> None:
        backlog = any(a.backlog() > HIGH_WATER for a in self.attachments)
        if backlog != self._paused:
            self._paused = backlog
            for fd in self._outputs:
                self._watches[fd].want(read=not backlog)

    def _end(self, fd: int) -> None:
        stream = self._outputs.pop(fd)
        if self.log is not None:
            self.log.end(stream)
        if fd == self._stdin:
            self._stdin = None
            self._stdin_buf.clear()
        self._watches.pop(fd).close()
        os.close(fd)
        if not self._outputs:
            self._drained()

    def abandon(self) -> None:
        """Stop waiting for EOF: something outside the container holds the write end."""
        for fd in list(self._outputs):
            self._end(fd)

    def _drained(self) -> None:
        if self.drained:
            return
        self.drained = True
        self.close_stdin()
        for a in list(self.attachments):
            a.finish()
        if self.log is not None:
            self.log.close()
        self.on_drained()

    # -- input ----------------------------------------------------------------------------
    def feed_stdin(self, data: bytes) -> None:
        if self._stdin is None or self._stdin_eof:
            return
        self._stdin_buf += data
        self._watches[self._stdin].want(write=True)
        self._write_stdin()

    def stdin_backlog(self) -> int:
        return len(self._stdin_buf)

    def _write_stdin(self) -> None:
        fd = self._stdin
        if fd is None:
            return
        try:
            while self._stdin_buf:
                n = os.write(fd, self._stdin_buf)
                del self._stdin_buf[:n]
        except BlockingIOError:
            pass
        except OSError:             # EPIPE: nobody reads it any more
            self._stdin_buf.clear()
            self.close_stdin()
            return
        if not self._stdin_buf:
            self._watches[fd].want(write=False)
            if self._stdin_eof:
                self.close_stdin()
        for a in self.attachments:
            a.resume_input()

    def end_stdin(self) -> None:
        """An attached client's stdin ended: with stdin_once, so does the process's."""
        if not self.stdin_once or self._stdin is None:
            return
        self._stdin_eof = True
        if not self._stdin_buf:
            self.close_stdin()

    def close_stdin(self) -> None:
        fd = self._stdin
        if fd is None:
            return
        if self.tty:
            # A pty has no half-close: closing the master would hang up the
            # terminal and end the output too. The stdin just stops.
            self._stdin = None
            self._stdin_buf.clear()
            if fd in self._watches:
                self._watches[fd].want(write=False)
            return
        self._stdin = None
        self._stdin_buf.clear()
        self._watches.pop(fd).close()
        os.close(fd)

    # -- carried across a re-exec of the supervisor -----------------------------------------
    def snapshot(self, keep: Callable[[int], int]) -> dict[str, Any]:
        """What a new supervisor image needs to go on; ``keep`` marks fds to inherit."""
        return {
            "tty": self.tty, "drained": self.drained, "stdinOnce": self.stdin_once,
            "outputs": [[keep(fd), stream] for fd, stream in self._outputs.items()],
            "stdin": keep(self._stdin) if self._stdin is not None else None,
            "stdinBuf": base64.b64encode(bytes(self._stdin_buf)).decode(),
            "stdinEof": self._stdin_eof,
            "log": self.log.snapshot() if self.log is not None and not self.drained else None,
            "attachments": [a.snapshot(keep) for a in self.attachments]}

    @classmethod
    def restore(cls, loop: Loop, data: dict[str, Any],
                on_drained: Callable[[], None]) -> Stdio:
        stdio = cls(loop, tty=data["tty"], outputs=[(fd, s) for fd, s in data["outputs"]],
                    stdin=data["stdin"], stdin_once=data["stdinOnce"],
                    # compression of a restored local log goes a piece per loop turn, too
                    log=StreamLog.restore(data["log"], lambda fn: loop.call_later(0, fn))
                    if data["log"] else None,
                    on_drained=on_drained)
        stdio._stdin_eof = data["stdinEof"]
        pending = base64.b64decode(data["stdinBuf"])
        if pending:
            stdio.feed_stdin(pending)
        for a in data["attachments"]:
            Attachment.restore(stdio, a)
        return stdio

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Close everything now (delete): no more output, no more input."""
        self.abandon()
        self.close_stdin()
        for a in list(self.attachments):
            a.close()


class DetachKeys:
    """Docker's detach sequence (ctrl-p ctrl-q by default) in a client's stdin.

    A byte that could start the sequence is held back until the next ones tell
    whether it does; if not, it goes on to the process. The sequence itself
    never reaches the process: it ends the attachment and leaves the container
    running with its stdin open.
    """

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to pass on, whether the sequence was typed)."""
        if not self.keys:
            return data, False
        buf, self.held = self.held + data, b""
        i = buf.find(self.keys)
        if i >= 0:
            return buf[:i], True
        for n in range(min(len(self.keys) - 1, len(buf)), 0, -1):
            if buf.endswith(self.keys[:n]):
                self.held = buf[-n:]
                return buf[:-n], False
        return buf, False

    def flush(self) -> bytes:
        held, self.held = self.held, b""
        return held


class Attachment:
    """One attached client socket: output to it, its bytes to the process's stdin."""

    def __init__(self, stdio: Stdio, sock: socket.socket, *, stdin: bool, stdout: bool,
                 stderr: bool, detach_keys: bytes = b"") -> None:
        self.stdio = stdio
        self.detach = DetachKeys(detach_keys)
        self.sock = sock
        self.streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        self.stdin = stdin and stdio.has_stdin
        self.framed = not stdio.tty
        self._pending = bytearray()
        self._finishing = False
        self._reading = True
        self.closed = False
        sock.setblocking(False)
        # Reading also notices a client that went away while the process is quiet.
        self.watch = stdio.loop.watch(sock.fileno(), INPUT, self._on_read, self._flush)
        stdio.attachments.append(self)

    def backlog(self) -> int:
        return len(self._pending)

    def output(self, stream: str, data: bytes) -> None:
        if self.closed or stream not in self.streams:
            return
        if self.framed:
            self._pending += struct.pack(">BxxxL", STREAM_IDS[stream], len(data))
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        try:
            while self._pending:
                n = self.sock.send(self._pending)
                del self._pending[:n]
        except BlockingIOError:
            pass
        except OSError:             # the client is gone
            self.close()
            return
        if self._pending:
            self.watch.want(write=True)
            return
        self.watch.want(write=False)
        if self._finishing:
            self.close()
        else:
            self.stdio.check_backlog()

    def _on_read(self) -> None:
        if self.stdin and self.stdio.stdin_backlog() > HIGH_WATER:
            self._reading = False
            self.watch.want(read=False)
            return
        try:
            data = self.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            data, detached = self.detach.feed(data) if self.stdin else (data, False)
            if self.stdin and data:
                self.stdio.feed_stdin(data)
            if detached:
                self.close()
            return
        # EOF: the client half-closed (its stdin ended) or left. Output goes on
        # until a send fails or the process's output ends.
        self._reading = False
        self.watch.want(read=False)
        if self.stdin:
            held = self.detach.flush()
            if held:
                self.stdio.feed_stdin(held)
            self.stdin = False
            self.stdio.end_stdin()

    def resume_input(self) -> None:
        if not self._reading and self.stdin and not self.closed:
            self._reading = True
            self.watch.want(read=True)

    def snapshot(self, keep: Callable[[int], int]) -> dict[str, Any]:
        return {"fd": keep(self.sock.fileno()), "streams": sorted(self.streams),
                "stdin": self.stdin, "reading": self._reading,
                "detachKeys": list(self.detach.keys), "held": list(self.detach.held),
                "pending": base64.b64encode(bytes(self._pending)).decode()}

    @classmethod
    def restore(cls, stdio: Stdio, data: dict[str, Any]) -> Attachment:
        a = cls(stdio, socket.socket(fileno=data["fd"]), stdin=data["stdin"],
                stdout="stdout" in data["streams"], stderr="stderr" in data["streams"],
                detach_keys=bytes(data["detachKeys"]))
        a.detach.held = bytes(data["held"])
        a._reading = data["reading"]
        a.watch.want(read=a._reading)
        a._pending = bytearray(base64.b64decode(data["pending"]))
        a._flush()
        return a

    def finish(self) -> None:
        """The process's output ended: send what is queued, then close."""
        self._finishing = True
        if not self._pending:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.watch.close()
        try:
            # shutdown, not only close: a forked container init that has not
            # exec'd yet may still hold a copy of this socket.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self in self.stdio.attachments:
            self.stdio.attachments.remove(self)
            self.stdio.check_backlog()
