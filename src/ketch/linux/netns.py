"""Doing something inside another network namespace without moving the caller.

setns(CLONE_NEWNET) changes the namespace of one thread only, and a socket keeps
the namespace it was created in for its whole life. So the work (typically:
create and bind a socket) runs on a short-lived thread that enters the target
namespace and then exits: the caller's thread never moves, and nothing has to
come back afterwards, so a failing setns-back cannot leave a daemon thread
stranded in a container's namespace (the thread dies with it).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from ketch.errors import InvalidArgument, NotFound, System
from ketch.linux.syscalls import CLONE_NEWNET, libc

T = TypeVar("T")


def _open_netns(netns_path: str) -> int:
    try:
        return os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NotFound(f"network namespace {netns_path} not found") from exc
    except OSError as exc:
        raise System(f"open network namespace {netns_path}: {exc.strerror}") from exc


def run_in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """``fn()`` run on a fresh thread inside the netns at ``netns_path``; its result or error.

    Blocking; the thread exits once ``fn`` returns. ``fn`` must not start
    threads of its own that outlive it expecting the namespace (they would
    inherit it, which is usually not what anyone wants to debug).
    """
    fd = _open_netns(netns_path)
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            if libc().setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                if err == errno.EINVAL:
                    failure.append(InvalidArgument(
                        f"{netns_path} is not a network namespace"))
                else:
                    failure.append(System(f"setns {netns_path}: {os.strerror(err)}"))
                return
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    try:
        thread = threading.Thread(target=body, name="ketch-netns", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if failure:
        raise failure[0]
    return result[0]


def socket_in_netns(netns_path: str, family: int = socket.AF_INET,
                    type: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
    """A socket that lives in the netns at ``netns_path`` (non-inheritable, as every
    socket Python makes)."""
    return run_in_netns(netns_path, lambda: socket.socket(family, type, proto))


MS_BIND = 4096
MNT_DETACH = 2


def pin(netns_path: str, target: str) -> None:
    """Bind-mount a network namespace on ``target`` (a file made here), as dockerd's
    sandbox keys are: the path names the namespace for ``nsenter --net=`` and keeps
    it while mounted."""
    from ketch.linux.syscalls import LinuxSyscalls

    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        LinuxSyscalls().mount(netns_path, target, None, MS_BIND)
    except BaseException:
        os.unlink(target)
        raise


def unpin(target: str) -> None:
    """Undo ``pin``; nothing to do if it is gone already."""
    from ketch.linux.syscalls import LinuxSyscalls

    try:
        LinuxSyscalls().umount2(target, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
