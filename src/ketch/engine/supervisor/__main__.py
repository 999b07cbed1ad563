"""``python -I -m ketch.engine.supervisor --exec-root DIR --root DIR [--ready-fd N]``

Started by ketchd with fork+exec, never as a fork of the daemon: a fresh
interpreter carries none of asyncio's threads, handlers or fds. Before serving:

1. ``<exec-root>/supervisor.pid`` is created and locked (flock): one
   supervisor per exec-root; a second one exits with an error naming the first.
2. With ``--cgroup``, it moves into that cgroup (created if needed), out of
   ketchd's: a service manager stopping or restarting ketchd's cgroup must
   not take the containers' supervisor with it.
3. It becomes a child subreaper, so containers' inits always come back to it.
4. ``oom_score_adj`` -1000: it holds every container's stdio, the kernel must
   pick anyone else first.
5. The socket ``<exec-root>/supervisor.sock`` (0600) listens; then "ready\\n"
   is written to ``--ready-fd`` and that fd closed, so the starter knows it can
   connect.

After an ``upgrade`` request it execs itself with ``--restore STATEFILE``: the
same pid, its children, its lock and the fds named in the state go on.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
from typing import Any

from ketch.errors import KetchError
from ketch.linux import syscalls as sc

from .protocol import PIDFILE_NAME


def _lock_pidfile(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SystemExit(f"ketch supervisor: another supervisor (pid {other}) uses "
                         f"{os.path.dirname(path)}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _protect_from_oom() -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError as exc:
        print(f"ketch supervisor: warning: cannot set oom_score_adj: {exc.strerror}",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ketch.engine.supervisor")
    p.add_argument("--exec-root", required=True, help="runtime state, socket, pidfile")
    p.add_argument("--root", required=True, help="persistent state: exit records")
    p.add_argument("--ready-fd", type=int, default=-1,
                   help="write 'ready' here once the socket listens")
    p.add_argument("--cgroup", default="",
                   help="run in this cgroup (a cgroupsPath: absolute, or relative to ours)")
    p.add_argument("--restore", default="", help=argparse.SUPPRESS)   # after an upgrade
    p.add_argument("--check-restore", default="", help=argparse.SUPPRESS)
    o = p.parse_args(argv)
    if o.check_restore:
        from .server import Supervisor

        try:
            with open(o.check_restore) as f:
                Supervisor.check_state(json.load(f))
        except (OSError, ValueError, KeyError, TypeError, KetchError) as exc:
            print(f"ketch supervisor: cannot restore {o.check_restore}: {exc!r}",
                  file=sys.stderr)
            return 1
        return 0
    if not o.restore:
        # Whatever the starter had blocked is not ours to keep. After an upgrade
        # the mask stays: a signal that came during the execve waits, pending,
        # for the loop's signalfd.
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
    exec_root, root = os.path.abspath(o.exec_root), os.path.abspath(o.root)
    os.makedirs(exec_root, mode=0o700, exist_ok=True)
    os.makedirs(root, mode=0o700, exist_ok=True)
    pidfile = os.path.join(exec_root, PIDFILE_NAME)

    from .server import Supervisor

    sup = Supervisor(exec_root, root)
    if o.restore:
        with open(o.restore) as f:
            state = json.load(f)
        os.unlink(o.restore)
        lock = int(state["pidfileFd"])
        sup.restore(state)
    else:
        lock = _lock_pidfile(pidfile)
        if o.cgroup:
            from ketch.linux import cgroups

            mgr = cgroups.new_manager(o.cgroup)
            mgr.create()
            mgr.apply(os.getpid())
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        _protect_from_oom()
        sup.listen()
    sup.block_signals()
    if o.ready_fd >= 0:
        os.write(o.ready_fd, b"ready\n")
        os.close(o.ready_fd)
    try:
        while True:
            sup.serve()
            if not sup.upgrading:
                break
            try:
                _reexec(sup, exec_root, root, lock)
            except OSError as exc:      # still the old image, all intact: go on serving
                print(f"ketch supervisor: upgrade failed: {exc}", file=sys.stderr)
                sup.upgrading = False
    finally:
        sup.close()
        os.unlink(pidfile)
        os.close(lock)
    return 0


def _reexec(sup: Any, exec_root: str, root: str, lock: int) -> None:
    """Become the code installed now, keeping pid, children and the fds in the state."""
    state, fds = sup.snapshot()
    state["pidfileFd"] = lock
    path = os.path.join(exec_root, "supervisor.state")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    # There is no way back after execve: first let the new code, in a process of
    # its own, say that it starts and can read this state.
    status = _spawn_clean([sys.executable, "-I", "-m", "ketch.engine.supervisor",
                           "--exec-root", exec_root, "--root", root, "--check-restore", path])
    if status != 0:
        os.unlink(path)
        raise OSError(f"the installed supervisor cannot take over (check exited {status})")
    for keep in [*fds, lock]:
        os.set_inheritable(keep, True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-m", "ketch.engine.supervisor",
                                  "--exec-root", exec_root, "--root", root, "--restore", path])
    except OSError:
        for keep in [*fds, lock]:
            os.set_inheritable(keep, False)
        raise


def _spawn_clean(argv: list[str]) -> int:
    """Run ``argv`` to completion, started as the supervisor starts anything.

    posix_spawn resets, between fork and exec, every signal's disposition to
    default and clears the mask (ours blocks the signals the loop reads);
    every fd of ours is close-on-exec, so the child gets only 0, 1 and 2.
    """
    defaults = {s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)}
    pid = os.posix_spawn(argv[0], argv, dict(os.environ), setsigmask=(), setsigdef=defaults)
    _, status = os.waitpid(pid, 0)      # ours alone: the reaping loop never sees it
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
