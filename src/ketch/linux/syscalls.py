"""The syscall seam: the few kernel calls the runtime makes that Python's ``os`` lacks.

``Syscalls`` is the Protocol the runtime depends on; ``LinuxSyscalls`` is the real
one (ctypes into libc, errno kept), and ``ketch.linux.fake.RecordingSyscalls``
records calls for unit tests. Each failure raises ``OSError(errno, "<syscall>: ...",
path)`` so messages always name the syscall and the path that failed.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import ctypes

# Mount flags (linux/mount.h). Kept here so the rest of ketch never spells numbers.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# Namespace clone flags (linux/sched.h).
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# prctl options used by the runtime.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Syscalls glibc has no wrapper for (or only a recent one). Per architecture,
# because the numbers differ; only the ones ketch calls.
_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "pivot_root": 155,
        "capget": 125,
        "capset": 126,
        "setns": 308,
        "pidfd_send_signal": 424,
        "pidfd_open": 434,
        "close_range": 436,
        "bpf": 321,
        "keyctl": 250,
        "mount_setattr": 442,
    },
    "aarch64": {
        "pivot_root": 41,
        "capget": 90,
        "capset": 91,
        "setns": 268,
        "pidfd_send_signal": 424,
        "pidfd_open": 434,
        "close_range": 436,
        "bpf": 280,
        "keyctl": 219,
        "mount_setattr": 442,
    },
}


def syscall_number(name: str) -> int:
    machine = os.uname().machine
    try:
        return _SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise OSError(_errno.ENOSYS, f"{name}: not known on architecture {machine}") from None


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """libc with errno kept; loaded once, lazily, so importing this module is free."""
    global _libc
    if _libc is None:
        import ctypes
        try:
            lib = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            import ctypes.util
            lib = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                              ctypes.c_ulong, ctypes.c_char_p]
        lib.mount.restype = ctypes.c_int
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.umount2.restype = ctypes.c_int
        lib.unshare.argtypes = [ctypes.c_int]
        lib.unshare.restype = ctypes.c_int
        lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.setns.restype = ctypes.c_int
        lib.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.sethostname.restype = ctypes.c_int
        lib.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.setdomainname.restype = ctypes.c_int
        lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                              ctypes.c_ulong, ctypes.c_ulong]
        lib.prctl.restype = ctypes.c_int
        lib.syscall.restype = ctypes.c_long
        _libc = lib
    return _libc


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        import ctypes
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, f"{what}: {os.strerror(err)}")
        raise OSError(err, f"{what} {path}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def raw_syscall(name: str, *args: Any) -> int:
    import ctypes
    nr = syscall_number(name)
    cargs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(libc().syscall(ctypes.c_long(nr), *cargs))


class Syscalls(Protocol):
    """What the runtime asks of the kernel for namespaces and the root filesystem."""

    def mount(self, source: str | None, target: str, fstype: str | None,
              flags: int = 0, data: str | None = None) -> None: ...

    def umount2(self, target: str, flags: int = 0) -> None: ...

    def pivot_root(self, new_root: str, put_old: str) -> None: ...

    def unshare(self, flags: int) -> None: ...

    def setns(self, fd: int, nstype: int = 0) -> None: ...

    def sethostname(self, name: str) -> None: ...

    def setdomainname(self, name: str) -> None: ...

    def mknod(self, path: str, mode: int, device: int) -> None: ...

    def chown(self, path: str, uid: int, gid: int) -> None: ...

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int: ...


class LinuxSyscalls:
    """The real kernel, through libc."""

    def mount(self, source: str | None, target: str, fstype: str | None,
              flags: int = 0, data: str | None = None) -> None:
        ret = libc().mount(_b(source), _b(target), _b(fstype), flags, _b(data))
        _check(ret, f"mount {source or 'none'} ({fstype or 'bind'}) on", target)

    def umount2(self, target: str, flags: int = 0) -> None:
        _check(libc().umount2(_b(target), flags), "umount", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        _check(raw_syscall("pivot_root", _b(new_root), _b(put_old)), "pivot_root", new_root)

    def unshare(self, flags: int) -> None:
        _check(libc().unshare(flags), f"unshare({flags:#x})")

    def setns(self, fd: int, nstype: int = 0) -> None:
        _check(libc().setns(fd, nstype), f"setns({nstype:#x})")

    def sethostname(self, name: str) -> None:
        data = name.encode()
        _check(libc().sethostname(data, len(data)), "sethostname", name)

    def setdomainname(self, name: str) -> None:
        data = name.encode()
        _check(libc().setdomainname(data, len(data)), "setdomainname", name)

    def mknod(self, path: str, mode: int, device: int) -> None:
        try:
            os.mknod(path, mode, device)
        except OSError as exc:
            raise OSError(exc.errno, f"mknod {path}: {exc.strerror}", path) from None

    def chown(self, path: str, uid: int, gid: int) -> None:
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except OSError as exc:
            raise OSError(exc.errno, f"chown {path}: {exc.strerror}", path) from None

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int:
        return _check(libc().prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return LinuxSyscalls().prctl(option, arg2, arg3, arg4, arg5)


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid``: signals through it can never hit a recycled pid."""
    return _check(raw_syscall("pidfd_open", pid, 0), "pidfd_open")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _check(raw_syscall("pidfd_send_signal", pidfd, sig, None, 0), "pidfd_send_signal")


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    """Close every fd from ``first`` to ``last``; falls back to a loop on old kernels."""
    try:
        _check(raw_syscall("close_range", first, last, 0), "close_range")
    except OSError:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if first <= fd <= last:
                try:
                    os.close(fd)
                except OSError:
                    pass
