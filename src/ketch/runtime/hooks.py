"""OCI hooks: programs run at fixed points of the lifecycle, given the state on stdin.

    create:  prestart, createRuntime  (runtime namespaces, mounts done, before pivot_root)
             createContainer          (container namespaces, before pivot_root)
    start:   startContainer           (in the container, before the user process)
             poststart                (runtime namespaces, after the user process started)
    delete:  poststop                 (runtime namespaces; failures are only warnings)
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from ketch.errors import System
from ketch.runtime.spec import Hook


def run(hooks: list[Hook], state: dict[str, Any], stage: str) -> None:
    """Run ``hooks`` in order; the first that fails or times out raises System."""
    if not hooks:
        return
    payload = json.dumps(state).encode()
    for i, hook in enumerate(hooks):
        _run_one(i, hook, payload, stage)


def _unblock_all() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _run_one(i: int, hook: Hook, payload: bytes, stage: str) -> None:
    import subprocess

    args = hook.args or [hook.path]
    env = dict(e.split("=", 1) for e in hook.env if "=" in e)
    # A caller that blocks signals (the supervisor reads them from a signalfd)
    # must not hand its mask to the hook: a blocked SIGTERM would outlive exec.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        proc = subprocess.Popen(args, executable=hook.path, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True,
                                preexec_fn=_unblock_all if blocked else None)
    except OSError as exc:
        raise System(f"error running {stage} hook #{i}: {exc.strerror}: {hook.path}") from None
    deadline = None if hook.timeout is None else time.monotonic() + hook.timeout
    try:
        out, err = proc.communicate(payload, timeout=None if deadline is None
                                    else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise System(f"error running {stage} hook #{i}: timeout after {hook.timeout}s") \
            from None
    except BrokenPipeError:
        out, err = b"", b""
        proc.wait()
    if proc.returncode != 0:
        status = (f"exit status {proc.returncode}" if proc.returncode > 0
                  else f"signal: {signal.Signals(-proc.returncode).name}")
        raise System(f"error running {stage} hook #{i}: {status}, stdout: "
                     f"{out.decode(errors='replace')}, stderr: {err.decode(errors='replace')}")
