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
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys

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
    o = p.parse_args(argv)
    # Whatever the starter had blocked, the loop needs SIGCHLD and SIGTERM delivered.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    exec_root, root = os.path.abspath(o.exec_root), os.path.abspath(o.root)
    os.makedirs(exec_root, mode=0o700, exist_ok=True)
    os.makedirs(root, mode=0o700, exist_ok=True)
    pidfile = os.path.join(exec_root, PIDFILE_NAME)
    lock = _lock_pidfile(pidfile)

    from .server import Supervisor

    if o.cgroup:
        from ketch.linux import cgroups

        mgr = cgroups.new_manager(o.cgroup)
        mgr.create()
        mgr.apply(os.getpid())
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _protect_from_oom()
    sup = Supervisor(exec_root, root)
    try:
        sup.listen()
        if o.ready_fd >= 0:
            os.write(o.ready_fd, b"ready\n")
            os.close(o.ready_fd)
        sup.serve()
    finally:
        sup.close()
        os.unlink(pidfile)
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
