"""Terminals: the pty made inside the container, and its master passed out.

runc's contract: with ``process.terminal``, init opens ``/dev/ptmx`` in the
container's own devpts, makes the slave its controlling terminal and stdio,
and sends the master over ``--console-socket`` as SCM_RIGHTS ancillary data
(the message body is the pty's name). The caller owns the master from then on.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import termios

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCSCTTY = 0x540E


def open_pty() -> tuple[int, int, str]:
    """A new pty pair from /dev/ptmx as the current mount namespace sees it."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
    name = f"/dev/pts/{n}"
    slave = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    return master, slave, name


def set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def get_size(fd: int) -> tuple[int, int] | None:
    try:
        h, w, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return h, w


def make_controlling(slave: int) -> None:
    """Make ``slave`` the controlling terminal and stdio of this (session leader) process."""
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)


def send_fd(sock: socket.socket, fd: int, name: str) -> None:
    sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    array.array("i", [fd]))])


def recv_fd(sock: socket.socket) -> tuple[int, str]:
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise OSError("console socket: no file descriptor received")
    return fds[0], msg.decode(errors="replace")


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        s.close()
        raise OSError(exc.errno, f"cannot connect to console socket {path}: {exc.strerror}") \
            from None
    return s
