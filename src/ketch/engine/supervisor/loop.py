"""A small single-threaded event loop: epoll, priorities, timers, signals as fds.

The supervisor needs no more than this, and asyncio would cost it memory and a
second way of doing things. Every fd is watched through a ``Watch`` that says
whether it wants to read, write or both; the loop sorts each turn's ready
fds by priority (control before stdin before container output), so a flood of
output can delay a request by at most one bounded read per fd.

Signals arrive through ``signal.set_wakeup_fd``: the Python-level handler is a
no-op, the C-level handler writes the signal number to a pipe the loop reads,
so signal work (reaping) happens in the loop, never inside a handler.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
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
        self._signal_r, self._signal_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
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
        self._signal_handlers[sig] = fn
        signal.signal(sig, _no_op)
        # Interrupted syscalls are retried (PEP 475); the wakeup fd does the waking.
        signal.siginterrupt(sig, False)

    def _read_signals(self) -> None:
        try:
            data = os.read(self._signal_r, 4096)
        except BlockingIOError:
            return
        for sig in dict.fromkeys(data):        # each once per turn, in arrival order
            fn = self._signal_handlers.get(sig)
            if fn is not None:
                _guarded(fn)

    # -- running ------------------------------------------------------------------------
    def run(self) -> None:
        signal.set_wakeup_fd(self._signal_w, warn_on_full_buffer=False)
        sig_watch = self.watch(self._signal_r, CONTROL, self._read_signals)
        self.running = True
        try:
            while self.running:
                self._turn()
        finally:
            sig_watch.close()
            signal.set_wakeup_fd(-1)

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
        self.sel.close()
        os.close(self._signal_r)
        os.close(self._signal_w)


def _guarded(fn: Callback) -> None:
    """One failing callback (a full disk under a log) must not end the supervisor."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - reported, and the loop goes on
        import sys
        import traceback
        traceback.print_exc(file=sys.stderr)


def _no_op(_sig: int, _frame: object) -> None:
    pass
