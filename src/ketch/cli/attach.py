"""The client side of attach and exec streams, as the docker CLI's hijackedIOStreamer.

After the daemon answers ``101 UPGRADED`` the connection carries the
container's stdio both ways:

- output: raw bytes with a tty; otherwise frames with an 8-byte header
  (stream type 1 stdout / 2 stderr, three zero bytes, big-endian length),
  split here back onto our stdout and stderr;
- input: our stdin, copied until EOF, then the write side is half-closed
  (``shutdown(SHUT_WR)``) and output keeps flowing until the daemon closes:
  ``echo hi | ketch run -i busybox cat`` prints ``hi``;
- with a tty, our terminal goes raw, the detach keys (default ctrl-p,ctrl-q)
  are looked for in the input and end the session without stopping the
  container, and window size changes are sent to the daemon (SIGWINCH).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

from ketch.client._stream import HEADER, STDERR, STDIN, STDOUT, SYSTEMERR, Demuxer  # noqa: F401 - users import them from here
from ketch.errors import InvalidArgument
from ketch.record import Record

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q


def detach_key_bytes(keys: str) -> bytes:
    """Docker's term.ToBytes: ``ctrl-p,ctrl-q`` -> b"\\x10\\x11"; one character stands for itself."""
    out = bytearray()
    for key in keys.split(","):
        if len(key) > 1:
            k = key.strip().lower()
            if not k.startswith("ctrl-") or len(k) != 6:
                raise InvalidArgument(f"Unknown character: '{key}'")
            c = k[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
            elif c in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[c])
            else:
                raise InvalidArgument(f"Unknown character: '{key}'")
        elif key:
            out.append(ord(key))
    return bytes(out)


class EscapeProxy:
    """Docker's term.EscapeProxy: holds back input that could be the start of the detach
    keys, lets it through when the sequence breaks, reports when it is complete."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for b in data:
            if not self.keys:
                out.append(b)
                continue
            if b == self.keys[len(self._held)]:
                self._held += bytes([b])
                if len(self._held) == len(self.keys):
                    self._held = b""
                    return bytes(out), True
                continue
            out += self._held
            self._held = b""
            if b == self.keys[0]:
                self._held = bytes([b])
            else:
                out.append(b)
        return bytes(out), False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Streams(Record):
    """Where the session's bytes come from and go: fds, or None when not attached."""

    __slots__ = ("stderr", "stdin", "stdout")

    def __init__(self, stdin: int | None = None, stdout: int | None = 1,
                 stderr: int | None = 2) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr


class Session:
    """One attach/exec session over a hijacked connection."""

    def __init__(self, sock: socket.socket, first: bytes, tty: bool, streams: Streams,
                 detach_keys: bytes = DEFAULT_DETACH_KEYS,
                 resize: Callable[[int, int], None] | None = None) -> None:
        self.sock = sock
        self.first = first
        self.tty = tty
        self.streams = streams
        self.detach_keys = detach_keys
        self.resize = resize
        self.detached = False
        self._done = threading.Event()

    def run(self) -> bool:
        """Copies until the daemon closes the stream (True) or the user detaches (False)."""
        raw_restore = self._raw_terminal()
        old_winch = self._watch_size()
        try:
            if self.streams.stdin is not None:
                threading.Thread(target=self._pump_input, name="ketch-stdin",
                                 daemon=True).start()
            else:
                self._half_close()
            self._pump_output()
        finally:
            self._done.set()
            if old_winch is not None:
                signal.signal(signal.SIGWINCH, old_winch)
            if raw_restore is not None:
                raw_restore()
        return not self.detached

    # --- output ------------------------------------------------------------------------------

    def _pump_output(self) -> None:
        demux = None if self.tty else Demuxer()
        data = self.first
        while True:
            if data:
                self._emit(demux, data)
            try:
                data = self.sock.recv(65536)
            except OSError:
                if self.detached:
                    return
                raise
            if not data:
                return

    def _emit(self, demux: Demuxer | None, data: bytes) -> None:
        if demux is None:
            if self.streams.stdout is not None:
                _write_all(self.streams.stdout, data)
            return
        for stream, chunk in demux.feed(data):
            err = stream in (STDERR, SYSTEMERR)
            target = self.streams.stderr if err else self.streams.stdout
            if target is not None:
                _write_all(target, chunk)

    # --- input -------------------------------------------------------------------------------

    def _pump_input(self) -> None:
        assert self.streams.stdin is not None
        proxy = EscapeProxy(self.detach_keys) if self.tty and self.detach_keys else None
        try:
            while not self._done.is_set():
                try:
                    data = os.read(self.streams.stdin, 32768)
                except OSError:
                    data = b""
                if not data:
                    break
                if proxy is not None:
                    data, hit = proxy.feed(data)
                    if data:
                        self.sock.sendall(data)
                    if hit:
                        self.detached = True
                        with contextlib.suppress(OSError):
                            self.sock.shutdown(socket.SHUT_RDWR)
                        return
                    continue
                self.sock.sendall(data)
        except OSError:
            return  # the daemon went away: the output side sees it and ends
        self._half_close()

    def _half_close(self) -> None:
        # stdin's EOF reaches the container, and its output still comes back.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    # --- terminal ----------------------------------------------------------------------------

    def _raw_terminal(self) -> Callable[[], None] | None:
        fd = self.streams.stdin
        if not self.tty or fd is None or not os.isatty(fd):
            return None
        import termios
        import tty

        saved = termios.tcgetattr(fd)
        tty.setraw(fd, termios.TCSANOW)

        def restore() -> None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd, termios.TCSANOW, saved)

        return restore

    def _watch_size(self) -> signal._HANDLER | None:
        if not self.tty or self.resize is None or self.streams.stdout is None:
            return None
        if not os.isatty(self.streams.stdout) or threading.current_thread() \
                is not threading.main_thread():
            return None
        out_fd = self.streams.stdout
        resize = self.resize

        def send() -> None:
            size = terminal_size(out_fd)
            if size is not None:
                with contextlib.suppress(Exception):
                    resize(*size)

        def on_winch(_sig: int, _frame: object) -> None:
            # Not from the handler itself: it interrupts the main thread anywhere.
            threading.Thread(target=send, daemon=True).start()

        send()
        return signal.signal(signal.SIGWINCH, on_winch)


def terminal_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of a terminal, or None."""
    try:
        cols, rows = os.get_terminal_size(fd)
    except OSError:
        return None
    return rows, cols


def stdio_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Streams:
    """Our own fds for a session; with a tty, stderr is already mixed into stdout."""
    return Streams(stdin=sys.stdin.fileno() if stdin else None,
                   stdout=sys.stdout.fileno() if stdout or (stderr and tty) else None,
                   stderr=sys.stderr.fileno() if stderr and not tty else None)


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


@contextlib.contextmanager
def proxy_signals(kill: Callable[[str], None]) -> Iterator[None]:
    """Signals sent to us go to the container (docker's --sig-proxy), by name."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(sig: int, _frame: object) -> None:
        name = signal.Signals(sig).name
        threading.Thread(target=lambda: _quiet(kill, name), daemon=True).start()

    old = {s: signal.signal(s, handler) for s in FORWARDED}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _quiet(fn: Callable[[str], None], arg: str) -> None:
    with contextlib.suppress(Exception):
        fn(arg)


__all__ = ["DEFAULT_DETACH_KEYS", "Demuxer", "EscapeProxy", "Session", "Streams",
           "detach_key_bytes", "proxy_signals", "stdio_streams", "terminal_size"]
