"""fork(2) straight into a cgroup2 directory: clone3 with CLONE_INTO_CGROUP.

Moving a process into a cgroup afterwards (a pid written to ``cgroup.procs``)
takes the kernel's threadgroup lock for writing, whose write side waits for
an RCU grace period: 8-15 ms here for nearly every container, on the
critical path of each start. A child born in its cgroup is never moved, so
nothing waits (about 0.7 ms for the whole fork). On a hybrid host this is the
cgroup2 hierarchy (which CLONE_INTO_CGROUP addresses; the v1 hierarchies the
init joins itself, see ``init._join_cgroups``), on a v2 host the container's
only cgroup.

Python's ``os.fork`` cannot pass clone3 arguments, so this does what it does
around the system call: ``PyOS_BeforeFork`` / ``PyOS_AfterFork_Child`` /
``PyOS_AfterFork_Parent`` (the interpreter's locks, the at-fork handlers),
with the GIL held throughout (``PyDLL``). glibc's own fork wrapper adds
nothing a single-threaded caller needs (it takes its allocator and stdio
locks only when other threads exist), so this is used only when the caller
has no other Python thread, and ``os.fork`` otherwise.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import threading

CLONE_INTO_CGROUP = 0x200000000
_NR_CLONE3 = 435           # the same on every architecture with the generic table
_unavailable = False       # the kernel (or a seccomp filter) said no once: not again


def fork_into_cgroup(cgroup_dir: str) -> int | None:
    """``os.fork()``, the child born in the cgroup2 directory ``cgroup_dir``.

    Returns as fork does (0 in the child, its pid in the parent), or None,
    having forked nothing, where clone3 or CLONE_INTO_CGROUP is not offered:
    the caller then forks and moves the child itself.
    """
    global _unavailable
    if _unavailable or threading.active_count() > 1:
        return None
    try:
        fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        args = struct.pack("=11Q", CLONE_INTO_CGROUP, 0, 0, 0, int(signal.SIGCHLD),
                           0, 0, 0, 0, 0, fd)
        buf = ctypes.create_string_buffer(args, len(args))
        api = ctypes.pythonapi
        lib = _libc()
        api.PyOS_BeforeFork()
        pid = int(lib.syscall(ctypes.c_long(_NR_CLONE3), buf, ctypes.c_size_t(len(args))))
        if pid == 0:
            api.PyOS_AfterFork_Child()
            return 0
        err = ctypes.get_errno()
        api.PyOS_AfterFork_Parent()
    finally:
        os.close(fd)        # in the child too: its own copy
    if pid > 0:
        return pid
    if err in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
        _unavailable = True
        return None
    if err == errno.EOPNOTSUPP:     # this cgroup only (a threaded one, say)
        return None
    raise OSError(err, f"clone3: {os.strerror(err)}")


_lib: ctypes.PyDLL | None = None


def _libc() -> ctypes.PyDLL:
    global _lib
    if _lib is None:
        lib = ctypes.PyDLL(None, use_errno=True)     # PyDLL: the GIL stays held
        lib.syscall.restype = ctypes.c_long
        _lib = lib
    return _lib
