"""The JSON-message stream of pull and push drawn as the docker CLI draws it.

A stream is one JSON object per line (``{"status": "Downloading", "id":
"a1b2c3d4e5f6", "progressDetail": {"current": 1, "total": 3}}``). On a
terminal every layer keeps one line, rewritten in place with ANSI cursor
movement as its status and bar change; elsewhere (a pipe, a CI log) only the
lines without a live figure are printed, one per change, so a log reads::

    latest: Pulling from library/busybox
    a1b2c3d4e5f6: Pulling fs layer
    a1b2c3d4e5f6: Download complete

The rules are moby's ``jsonmessage.DisplayJSONMessagesStream``, because users
and scripts read this output: the same lines, the same order, the same bars.
"""

from __future__ import annotations

import sys
import time

from ketch.units import human_size

TYPE_CHECKING = False     # typing costs the CLI start-up (ketch.record says why)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TextIO

# ANSI: erase the whole line; cursor up / down n lines (what docker's aec package writes)
ERASE_LINE = "\x1b[2K"
DEFAULT_WIDTH = 200     # docker's width when the terminal's cannot be read


def go_duration(seconds: int) -> str:
    """Go's time.Duration.String() for whole seconds: "0s", "45s", "1m30s", "2h0m5s"."""
    if seconds <= 0:
        return "0s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def progress_text(detail: dict[str, Any], width: int, now: float | None = None) -> str:
    """moby's JSONProgress.String(): ``[==>   ]  1.2MB/3.4MB 5s``; the bar only wider than
    110 columns, the time left only wider than 50, nothing without figures."""
    current = int(detail.get("current") or 0)
    total = int(detail.get("total") or 0)
    units = str(detail.get("units") or "")
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}" if not units else f"{current} {units}"
    pct = min(50, int(current / total * 100) // 2)
    bar = f"[{'=' * pct}>{' ' * max(0, 50 - pct)}] " if width > 110 else ""
    numbers = ""
    if not detail.get("hidecounts"):
        if not units:
            numbers = (f"{human_size(current):>8}/{human_size(total)}" if current <= total
                       else f"{human_size(current):>8}")
        else:
            numbers = (f"{current}/{total} {units}" if current <= total
                       else f"{current} {units}")
    left = ""
    start = int(detail.get("start") or 0)
    if current > 0 and start > 0 and pct < 50 and width > 50:
        elapsed = (time.time() if now is None else now) - start
        left = " " + go_duration(int((total - current) * (elapsed / current)))
    return bar + numbers + left


class Display:
    """Writes the messages of one stream to ``out``. ``terminal`` (default: whether ``out``
    is one) picks the in-place drawing; ``width`` the terminal's columns (read from it)."""

    def __init__(self, out: TextIO, *, terminal: bool | None = None, width: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.out = out
        self.terminal = out.isatty() if terminal is None else terminal
        self.width = width
        self.clock = clock
        self.ids: dict[str, int] = {}     # layer id -> its line, counted from the first

    def _width(self) -> int:
        if self.width is not None:
            return self.width
        try:
            import os

            return os.get_terminal_size(self.out.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return DEFAULT_WIDTH

    def show(self, msg: dict[str, Any]) -> None:
        """One message (an ``error`` one is raised by the reader before it gets here)."""
        if msg.get("aux") is not None:
            return          # results for the caller (a push's digest), never printed
        w = self.out.write
        mid = str(msg.get("id") or "")
        detail = msg.get("progressDetail")
        has_progress = isinstance(detail, dict)
        legacy = str(msg.get("progress") or "")
        diff = 0
        if mid and (has_progress or legacy):
            line = self.ids.get(mid)
            if line is None:
                # a new layer gets the next line; the others stay where they are
                line = len(self.ids)
                self.ids[mid] = line
                if self.terminal:
                    w("\n")
            diff = len(self.ids) - line
            if self.terminal and diff:
                w(f"\x1b[{diff}A")
        else:
            # a line that is not a layer's: the lines above are history now (pull -a moves
            # on to the next tag and must not rewrite the previous tag's layers)
            self.ids = {}
        self._line(msg, mid, detail if has_progress else None, legacy)
        if mid and self.terminal and diff:
            w(f"\x1b[{diff}B")
        self.out.flush()

    def _line(self, msg: dict[str, Any], mid: str, detail: dict[str, Any] | None,
              legacy: str) -> None:
        w = self.out.write
        stream = str(msg.get("stream") or "")
        status = str(msg.get("status") or "")
        endl = ""
        bar = ""
        if detail is not None:
            bar = progress_text(detail, self._width(), self.clock())
        if self.terminal and not stream and detail is not None:
            w(ERASE_LINE + "\r")
            endl = "\r"
        elif detail is not None and bar:
            return          # a live figure means nothing in a log: left out, as docker does
        if msg.get("timeNano"):
            w(_rfc3339(int(msg["timeNano"]) / 1e9) + " ")
        elif msg.get("time"):
            w(_rfc3339(float(msg["time"])) + " ")
        if mid:
            w(f"{mid}: ")
        if msg.get("from"):
            w(f"(from {msg['from']}) ")
        if detail is not None and self.terminal:
            w(f"{status} {bar}{endl}")
        elif legacy:
            w(f"{status} {legacy}{endl}")
        elif stream:
            w(f"{stream}{endl}")
        else:
            w(f"{status}{endl}\n")


def _rfc3339(ts: float) -> str:
    """moby's RFC3339NanoFixed in UTC: 2006-01-02T15:04:05.000000000Z07:00."""
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{nanos:09d}Z"


def display(messages: Iterable[dict[str, Any]], out: TextIO | None = None, *,
            quiet: bool = False, terminal: bool | None = None) -> None:
    """Draw a whole stream on ``out`` (stdout by default); ``quiet`` reads it to its end
    without printing. An error in the stream propagates (StreamError) once the lines
    before it are out, for the caller to print and exit 1, as docker does."""
    if quiet:
        for _ in messages:
            pass
        return
    d = Display(out if out is not None else sys.stdout, terminal=terminal)
    for msg in messages:
        d.show(msg)


__all__ = ["Display", "display", "go_duration", "progress_text"]
