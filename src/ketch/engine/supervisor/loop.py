"""A small single-threaded event loop: epoll, priorities, timers, signals as fds.

The supervisor needs no more than this, and asyncio would cost it memory and a
second way of doing things. Every fd is watched through a ``Watch`` that says
whether it wants to read, write or both; the loop sorts each turn's ready
fds by priority (control before stdin before container output), so a flood of
output can delay a request by at most one bounded read per fd.

Signals are blocked and read from a signalfd, so signal work (reaping)
happens in the loop, never inside a handler. Not ``set_wakeup_fd``: a forked
child (a container's init waiting for ``start``) shares the wakeup pipe, and
a SIGTERM sent to it would read as one sent to the supervisor. With a
signalfd the supervisor reads only its own signals, and a signal sent to a
child stays pending, blocked, until the runtime clears the mask right before
execve; then it acts with the default disposition, as it should.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable

# Priorities, lowest first.
CONTROL = 0
INPUT = 1
OUTPUT = 2

Callback = Callable[[], None]


class Watch:
    def __init__(self, loop: Loop, fd: int, prio: int, on_read: Callback | None,
                 on_write: Callback | None) -> None:
        self.loop = loop
        self.fd = fd
        self.prio = prio
        self.on_read = on_read
        self.on_write = on_write
        self.reading = False
        self.writing = False
        self.closed = False

    def want(self, read: bool | None = None, write: bool | None = None) -> None:
        if self.closed:
            return
        if read is not None:
            self.reading = read
        if write is not None:
            self.writing = write
        self.loop._refresh(self)

    def close(self) -> None:
        """Stop watching (the fd itself is the owner's to close)."""
        if not self.closed:
            self.reading = self.writing = False
            self.loop._refresh(self)
            self.closed = True


class Loop:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self._registered: dict[int, Watch] = {}
        self._timers: list[tuple[float, int, Callback]] = []
        self._seq = itertools.count()
        self._signal_fd = -1
        self._signal_handlers: dict[int, Callback] = {}
        self.running = False

    # -- fds ----------------------------------------------------------------------------
    def watch(self, fd: int, prio: int, on_read: Callback | None = None,
              on_write: Callback | None = None, read: bool = True) -> Watch:
        w = Watch(self, fd, prio, on_read, on_write)
        w.want(read=read and on_read is not None)
        return w

    def _refresh(self, w: Watch) -> None:
        mask = (selectors.EVENT_READ if w.reading else 0) | \
               (selectors.EVENT_WRITE if w.writing else 0)
        current = self._registered.get(w.fd)
        if current is not None and current is not w:
            return          # the fd number was reused; the old watch no longer owns it
        if mask == 0:
            if current is not None:
                self.sel.unregister(w.fd)
                del self._registered[w.fd]
        elif current is None:
            self.sel.register(w.fd, mask, w)
            self._registered[w.fd] = w
        else:
            self.sel.modify(w.fd, mask, w)

    # -- timers -------------------------------------------------------------------------
    def call_later(self, delay: float, fn: Callback) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    # -- signals ------------------------------------------------------------------------
    def on_signal(self, sig: int, fn: Callback) -> None:
        """Handle ``sig`` in the loop. Call before ``run``."""
        self._signal_handlers[sig] = fn

    def _read_signals(self) -> None:
        try:
            data = os.read(self._signal_fd, _SIGINFO_SIZE * 64)
        except BlockingIOError:
            return
        signos = [int.from_bytes(data[i:i + 4], sys.byteorder)
                  for i in range(0, len(data), _SIGINFO_SIZE)]
        for sig in dict.fromkeys(signos):      # each once per turn, in arrival order
            fn = self._signal_handlers.get(sig)
            if fn is not None:
                _guarded(fn)

    # -- running ------------------------------------------------------------------------
    def block_signals(self) -> None:
        """From now on the handled signals wait for the loop (idempotent)."""
        if self._signal_fd >= 0:
            return
        sigs = set(self._signal_handlers)
        for sig in sigs:
            # Default, not ignored: an ignored SIGCHLD would make the kernel
            # reap children itself, and SIG_IGN would survive a child's execve.
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        self._signal_fd = signalfd(sigs)
        self._signal_watch = self.watch(self._signal_fd, CONTROL, self._read_signals)

    def run(self) -> None:
        self.block_signals()
        self.running = True
        while self.running:
            self._turn()

    def _turn(self) -> None:
        timeout = None
        if self._timers:
            timeout = max(0.0, self._timers[0][0] - time.monotonic())
        events = self.sel.select(timeout)
        events.sort(key=lambda e: e[0].data.prio)
        for key, mask in events:
            w: Watch = key.data
            if w.closed:
                continue
            if mask & selectors.EVENT_READ and w.reading and w.on_read is not None:
                _guarded(w.on_read)
            if mask & selectors.EVENT_WRITE and w.writing and not w.closed \
                    and w.on_write is not None:
                _guarded(w.on_write)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            _guarded(fn)

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        if self._signal_fd >= 0:
            self._signal_watch.close()
            os.close(self._signal_fd)
            self._signal_fd = -1
        self.sel.close()


def _guarded(fn: Callback) -> None:
    """One failing callback (a full disk under a log) must not end the supervisor."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - reported, and the loop goes on
        import sys
        import traceback
        traceback.print_exc(file=sys.stderr)


# -- signalfd(2), which the os module lacks (it belongs with ketch.linux.syscalls) -------
_SIGINFO_SIZE = 128             # sizeof(struct signalfd_siginfo); ssi_signo comes first
_SFD_NONBLOCK = os.O_NONBLOCK
_SFD_CLOEXEC = os.O_CLOEXEC


def signalfd(sigs: set[int]) -> int:
    """A new non-blocking fd that reads the calling process's pending ``sigs``."""
    import ctypes

    from ketch.linux.syscalls import libc

    lib = libc()
    mask = ctypes.create_string_buffer(128)     # sigset_t
    lib.sigemptyset(mask)
    for sig in sigs:
        lib.sigaddset(mask, int(sig))
    fd = int(lib.signalfd(-1, mask, _SFD_NONBLOCK | _SFD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"signalfd: {os.strerror(err)}")
    return fd
