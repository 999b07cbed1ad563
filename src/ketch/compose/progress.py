"""What ``up``, ``down`` and friends say while they work, as compose v2 says it.

Each resource changing state is one line on stderr: `` Container proj-web-1  Started``
(compose v2's plain output, which scripts and CI logs see). On a terminal a
finished step carries compose's check mark, a failed one its cross.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

DONE = frozenset({"Created", "Started", "Stopped", "Removed", "Healthy", "Exited",
                  "Running", "Recreated", "Built", "Pulled", "Killed", "Paused",
                  "Unpaused", "Restarted", "Waiting"})


class Progress:
    def __init__(self, out: TextIO | None = None, *, quiet: bool = False,
                 tty: bool | None = None) -> None:
        self.out = out if out is not None else sys.stderr
        self.quiet = quiet
        self.tty = self.out.isatty() if tty is None else tty
        self._lock = threading.Lock()

    def __call__(self, kind: str, name: str, status: str, *, error: bool = False) -> None:
        if self.quiet:
            return
        mark = " "
        if self.tty and status in DONE and status != "Waiting":
            mark = " \u2714 "
        elif self.tty and error:
            mark = " \u2718 "
        with self._lock:
            self.out.write(f"{mark}{kind} {name}  {status}\n")
            self.out.flush()

    def warn(self, text: str) -> None:
        with self._lock:
            self.out.write(f"WARN[0000] {text}\n")
            self.out.flush()
