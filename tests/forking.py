"""Run a test body in a forked child, for kernel state that must not touch pytest.

Loading a seccomp filter, dropping capabilities or changing uid cannot be
undone; a child does it and reports back through a pipe.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable


def in_child(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child; fail here with its error if it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(r)
            body()
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            os.write(w, traceback.format_exc().encode()[-4000:])
            status = 1
        os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message or f"child status {status:#x}"
