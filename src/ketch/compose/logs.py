"""Many containers' output on one terminal, each line after its ``service-N |`` prefix.

``up`` (attached) and ``logs`` read every container's log stream in a thread of
its own and write whole lines, so two containers never interleave inside a
line. The prefix is the container's name without the project's (``web-1``),
padded to the longest, coloured per container on a terminal as compose does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from ketch.client import Demuxer
from ketch.errors import KetchError

# compose's rotation: the six ANSI colours, then their bright forms.
COLORS = ("36", "33", "32", "35", "34", "31", "36;1", "33;1", "32;1", "35;1", "34;1", "31;1")


@dataclass
class Target:
    name: str            # as printed: the container name without "<project>-"
    cid: str
    tty: bool = False


def short_name(container_name: str, project: str) -> str:
    prefix = project + "-"
    return container_name[len(prefix):] if container_name.startswith(prefix) else \
        container_name


class LogPrinter:
    def __init__(self, out: TextIO, *, color: bool = False, prefix: bool = True) -> None:
        self.out = out
        self.color = color
        self.prefix = prefix
        self.width = 0
        self._colors: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, names: Iterable[str]) -> None:
        for n in names:
            if n not in self._colors:
                self._colors[n] = COLORS[len(self._colors) % len(COLORS)]
            self.width = max(self.width, len(n) + 1)

    def _paint(self, name: str, text: str) -> str:
        if not self.color:
            return text
        return f"\x1b[{self._colors.get(name, COLORS[0])}m{text}\x1b[0m"

    def line(self, name: str, text: str) -> None:
        if self.prefix:
            head = self._paint(name, f"{name:<{self.width}} |")
            text = f"{head} {text}"
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def status(self, name: str, text: str) -> None:
        """A line about a container rather than from it: ``web-1 exited with code 0``."""
        with self._lock:
            self.out.write(self._paint(name, f"{name} {text}") + "\n")
            self.out.flush()

    def copy(self, client: Any, t: Target, *, follow: bool, tail: str = "all",
             since: str = "", until: str = "", timestamps: bool = False,
             stop: threading.Event | None = None) -> None:
        """Print one container's log until it ends (or ``stop`` is set while following)."""
        try:
            resp = client.container_logs(t.cid, follow=follow, tail=tail, since=since,
                                         until=until, timestamps=timestamps)
        except KetchError:
            return
        partial = {1: b"", 2: b""}
        demux = None if t.tty else Demuxer()
        try:
            while stop is None or not stop.is_set():
                data = resp.read(65536)
                if not data:
                    break
                pieces = [(1, data)] if demux is None else list(demux.feed(data))
                for stream, chunk in pieces:
                    buf = partial.get(stream, b"") + chunk
                    *lines, rest = buf.split(b"\n")
                    partial[stream] = rest
                    for raw in lines:
                        self.line(t.name, raw.decode("utf-8", "replace").rstrip("\r"))
        except (OSError, KetchError):
            pass
        finally:
            resp.close()
        for rest in partial.values():
            if rest:
                self.line(t.name, rest.decode("utf-8", "replace"))


def follow_all(printer: LogPrinter, client: Any, targets: list[Target], *,
               follow: bool, tail: str = "all", since: str = "", until: str = "",
               timestamps: bool = False, on_end: Callable[[Target], None] | None = None,
               stop: threading.Event | None = None) -> list[threading.Thread]:
    """One reader thread per container; ``on_end(target)`` when its stream ends."""
    printer.register(t.name for t in targets)
    threads = []

    def run(t: Target) -> None:
        printer.copy(client, t, follow=follow, tail=tail, since=since, until=until,
                     timestamps=timestamps, stop=stop)
        if on_end is not None:
            on_end(t)

    for t in targets:
        th = threading.Thread(target=run, args=(t,), daemon=True, name=f"logs-{t.name}")
        th.start()
        threads.append(th)
    return threads
