"""How ``ketch build`` shows a build's progress events (``--progress``).

The daemon sends ketch's typed events (``ketch.build.request``) when asked
with ``ketchprogress=1``; these renderers draw them on stderr. They read the
events in their JSON form (``event_json``: a ``kind`` and the fields), as they
arrive: decoding them into the dataclasses would cost every ``ketch build``
the import of ``dataclasses`` and ``typing`` for nothing.

- ``plain``: BuildKit's plain format, the one CI logs and users grep::

      #2 [2/3] RUN echo hi
      #2 0.105 hi
      #2 DONE 0.2s

      #3 [3/3] COPY f /f
      #3 CACHED

  plus one line ketch adds when the cache could not serve a step
  (``#2 cache miss: ...``), from the builder's StepMiss event;
- ``tty``: the running steps redrawn in place (ANSI cursor movement), with the
  last lines of output of the step that is running;
- ``rawjson``: the events themselves, one JSON object per line;
- ``quiet``: nothing (the image ID goes to stdout, printed by the command).
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False     # typing costs the CLI start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any, TextIO

    Event = dict[str, Any]      # an event in its JSON form (ketch.build.request.event_json)

MODES = ("auto", "tty", "plain", "rawjson", "quiet")


def choose(mode: str, stream: TextIO) -> str:
    """``auto``: tty when the stream is a terminal, else plain (docker's rule)."""
    if mode != "auto":
        return mode
    try:
        return "tty" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


def _label(stage: str, step: int, total: int, text: str) -> str:
    """BuildKit's ``[stage n/m] TEXT``: the number padded to the width of the total, the
    stage named unless it is the first one and has no name of its own ("stage-0", "0"),
    which is how a single-stage build reads."""
    auto = stage.removeprefix("stage-")
    number = f"{step:>{len(str(total))}}/{total}"
    where = number if not stage or (auto.isdigit() and int(auto) == 0) else f"{stage} {number}"
    return f"[{where}] {text}"


class _Step:
    __slots__ = ("cached", "done", "error", "label", "number", "output", "partial",
                 "seconds", "started")

    def __init__(self, number: int, label: str) -> None:
        self.number = number
        self.label = label
        self.started = time.monotonic()
        self.cached = False
        self.done = False
        self.error = ""
        self.seconds = 0.0
        self.output: list[str] = []
        self.partial = ""


class Renderer:
    """Base: keeps the steps by the builder's step number."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.steps: dict[int, _Step] = {}
        self.order: list[_Step] = []
        self.image = ""
        self.tags: list[str] = []
        self.warnings: list[str] = []
        self.started = time.monotonic()

    def _step(self, n: Any) -> _Step:
        n = int(n)
        st = self.steps.get(n)
        if st is None:
            st = self.steps[n] = _Step(len(self.order) + 1, f"step {n}")
            self.order.append(st)
        return st

    def _start(self, ev: Event) -> _Step:
        st = _Step(len(self.order) + 1, _label(str(ev.get("stage", "")), int(ev["step"]),
                                               int(ev.get("total", 0)), str(ev.get("text", ""))))
        self.steps[int(ev["step"])] = st
        self.order.append(st)
        return st

    def _result(self, ev: Event) -> None:
        self.image = str(ev.get("image", ""))
        self.tags = [str(t) for t in ev.get("tags") or []]

    def event(self, ev: Event) -> None:
        raise NotImplementedError

    def failed(self, message: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """The stream ended (after the result or a failure)."""


class Plain(Renderer):
    """BuildKit's ``--progress=plain``."""

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _flush_partial(self, st: _Step) -> None:
        if st.partial:
            self._write(f"#{st.number} {time.monotonic() - st.started:.3f} {st.partial}\n")
            st.partial = ""

    def event(self, ev: Event) -> None:
        kind = ev.get("kind")
        if kind == "step":
            st = self._start(ev)
            self._write(f"#{st.number} {st.label}\n")
        elif kind == "cached":
            st = self._step(ev["step"])
            st.cached = st.done = True
            self._write(f"#{st.number} CACHED\n\n")
        elif kind == "miss":
            st = self._step(ev["step"])
            self._write(f"#{st.number} cache miss: {ev.get('reason', '')}\n")
        elif kind == "output":
            st = self._step(ev["step"])
            lines = (st.partial + str(ev.get("data", ""))).split("\n")
            st.partial = lines.pop()
            elapsed = time.monotonic() - st.started
            for line in lines:
                self._write(f"#{st.number} {elapsed:.3f} {line.rstrip(chr(13))}\n")
        elif kind == "done":
            st = self._step(ev["step"])
            self._flush_partial(st)
            if not st.cached:
                st.seconds = float(ev.get("seconds") or 0) or (time.monotonic() - st.started)
                self._write(f"#{st.number} DONE {st.seconds:.1f}s\n\n")
            st.done = True
        elif kind == "warning":
            self.warnings.append(str(ev.get("text", "")))
        elif kind == "result":
            self._result(ev)
            n = len(self.order) + 1
            lines = [f"#{n} exporting to image\n", f"#{n} writing image {self.image} done\n"]
            lines += [f"#{n} naming to {t} done\n" for t in self.tags]
            lines.append(f"#{n} DONE 0.0s\n")
            for w in self.warnings:
                text = w.strip()
                text = text.removeprefix("[Warning] ").removeprefix("[WARNING]: ")
                lines.append(f"\nWARNING: {text}\n")
            self._write("".join(lines))
        # StepRunning: BuildKit shows no container IDs.

    def failed(self, message: str) -> None:
        running = [st for st in self.order if not st.done]
        for st in running[-1:]:
            self._flush_partial(st)
            self._write(f"#{st.number} ERROR: {message}\n\n")
        self._write(f"ERROR: {message}\n")


class RawJSON(Renderer):
    def event(self, ev: Event) -> None:
        import json

        if ev.get("kind") == "result":
            self._result(ev)
        self.out.write(json.dumps(ev, separators=(",", ":")) + "\n")
        self.out.flush()

    def failed(self, message: str) -> None:
        import json

        self.out.write(json.dumps({"kind": "error", "message": message},
                                  separators=(",", ":")) + "\n")


class Quiet(Renderer):
    """Keeps the events, so that a failure can still be explained (as ``docker build -q``
    does: the output held back, then the error)."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.held: list[Event] = []

    def event(self, ev: Event) -> None:
        if ev.get("kind") == "result":
            self._result(ev)
        self.held.append(ev)

    def failed(self, message: str) -> None:
        plain = Plain(self.out)
        for ev in self.held:
            plain.event(ev)
        plain.failed(message)


# ANSI: cursor up n lines, erase to the end of the screen, dim, reset.
_UP, _CLEAR, _DIM, _RESET = "\x1b[{}A", "\x1b[J", "\x1b[2m", "\x1b[0m"


class TTY(Renderer):
    """A live view: a header, one line per step with its time, and the last lines of the
    running step's output; the whole block is redrawn in place (at most 10 times a
    second, and once at the end)."""

    OUTPUT_LINES = 6

    def __init__(self, out: TextIO, width: int = 0, height: int = 0) -> None:
        super().__init__(out)
        import shutil

        size = shutil.get_terminal_size((100, 30))
        self.width = width or size.columns
        self.height = height or size.lines
        self.drawn = 0
        self.last_draw = 0.0
        self.error = ""
        self.finished = False
        self._lock: Any = None
        self._stop: Any = None

    def _tick(self) -> None:
        """Redraws while nothing happens, so the running step's time keeps moving."""
        while not self._stop.wait(0.25):
            with self._lock:
                if self.finished or self.error:
                    return
                self.draw(force=True)

    def event(self, ev: Event) -> None:
        if self._lock is None:
            import threading

            self._lock, self._stop = threading.Lock(), threading.Event()
            threading.Thread(target=self._tick, name="build-progress", daemon=True).start()
        with self._lock:
            self._event(ev)

    def _event(self, ev: Event) -> None:
        kind = ev.get("kind")
        if kind == "step":
            self._start(ev)
        elif kind == "cached":
            st = self._step(ev["step"])
            st.cached = st.done = True
        elif kind == "output":
            st = self._step(ev["step"])
            lines = (st.partial + str(ev.get("data", ""))).split("\n")
            st.partial = lines.pop()
            st.output = (st.output + [x.rstrip("\r") for x in lines])[-self.OUTPUT_LINES:]
        elif kind == "done":
            st = self._step(ev["step"])
            st.done = True
            st.seconds = float(ev.get("seconds") or 0) or (time.monotonic() - st.started)
        elif kind == "warning":
            self.warnings.append(str(ev.get("text", "")))
        elif kind == "result":
            self._result(ev)
            self.finished = True
        self.draw()

    def lines(self) -> list[str]:
        now = time.monotonic()
        done = sum(1 for st in self.order if st.done)
        state = "FINISHED" if self.finished else ("ERROR" if self.error else "")
        head = f"[+] Building {now - self.started:.1f}s ({done}/{len(self.order)})"
        out = [head + (" " + state if state else "")]
        for st in self.order:
            if st.cached:
                tail = "CACHED"
            elif st.done:
                tail = f"{st.seconds:.1f}s"
            else:
                tail = f"{now - st.started:.1f}s"
            mark = "=>" if st.done else "=> ERROR" if self.error else "=>"
            text = f" {mark} {st.label}"
            room = self.width - len(tail) - 2
            if len(text) > room:
                text = text[:max(room - 3, 0)] + "..."
            out.append(text.ljust(room) + " " + tail)
            if not st.done and not self.finished:
                for line in st.output + ([st.partial] if st.partial else []):
                    out.append(_DIM + (" => => # " + line)[:self.width - 1] + _RESET)
        if self.image:
            out.append(f" => writing image {self.image}"[:self.width - 1])
            out += [f" => naming to {t}"[:self.width - 1] for t in self.tags]
        keep = max(self.height - 2, 3)
        return out[-keep:]

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        lines = self.lines()
        up = _UP.format(self.drawn) if self.drawn else ""
        self.out.write(up + "\r" + _CLEAR + "".join(line + "\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)

    def _halt(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def failed(self, message: str) -> None:
        self._halt()
        with self._lock or _NoLock():
            self.error = message
        self.draw(force=True)
        running = [st for st in self.order if not st.done]
        for st in running[-1:]:
            if st.output or st.partial:
                self.out.write("------\n > " + st.label + ":\n")
                for line in st.output + ([st.partial] if st.partial else []):
                    self.out.write(line + "\n")
                self.out.write("------\n")
        self.out.write(f"ERROR: {message}\n")
        self.out.flush()

    def close(self) -> None:
        self._halt()
        if not self.error:
            with self._lock or _NoLock():
                self.draw(force=True)
        for w in self.warnings:
            text = w.strip().removeprefix("[Warning] ").removeprefix("[WARNING]: ")
            self.out.write(f"\nWARNING: {text}\n")
        self.out.flush()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def make(mode: str, out: TextIO | None = None) -> Renderer:
    out = out if out is not None else sys.stderr
    kind = choose(mode, out)
    cls: Any = {"tty": TTY, "plain": Plain, "rawjson": RawJSON, "quiet": Quiet}[kind]
    renderer: Renderer = cls(out)
    return renderer


__all__ = ["MODES", "Plain", "Quiet", "RawJSON", "Renderer", "TTY", "choose", "make"]
