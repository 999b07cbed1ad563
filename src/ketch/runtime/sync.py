"""Typed messages between the runtime (parent) and the container's init (child).

They travel over a SOCK_SEQPACKET socketpair, one JSON object per packet, so
message boundaries come for free. The conversation for ``create``:

    parent                         init
      <--- JOINED -------------------       (v1 cgroups joined by the init itself)
      ---- GO ----------------------->      (cgroup joined: namespaces may follow)
      <--- MAP_IDS ------------------       (new user namespace made; write uid/gid maps)
      ---- IDS_MAPPED --------------->
      <--- PID(grandchild) ----------       (only when an intermediate process forked init)
      <--- HOOKS --------------------       (mounts done; run prestart/createRuntime)
      ---- HOOKS_DONE --------------->
      <--- READY --------------------       (waiting on the exec fifo)
      <--- ERROR(message) -----------       (at any point instead of the above)
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketch.errors import System

if TYPE_CHECKING:
    import socket


class Kind(enum.Enum):
    JOINED = "joined"
    GO = "go"
    MAP_IDS = "map-ids"
    IDS_MAPPED = "ids-mapped"
    PID = "pid"
    HOOKS = "hooks"
    HOOKS_DONE = "hooks-done"
    READY = "ready"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    pid: int = 0
    text: str = ""
    error: str = ""     # for ERROR: the name of the ketch.errors kind, if it was one


def pair() -> tuple[socket.socket, socket.socket]:
    import socket
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, kind: Kind, pid: int = 0, text: str = "",
         error: str = "") -> None:
    sock.send(json.dumps({"k": kind.value, "p": pid, "t": text, "e": error}).encode())


def recv(sock: socket.socket) -> Message:
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        # The init closed its end with a message of ours unread (it failed before it
        # read GO): the kernel reports that reset before the messages the init had
        # queued for us (sock_error comes first for seqpacket), and clears it once
        # reported. Its ERROR, if it sent one, is read now.
        data = sock.recv(65536)
    if not data:
        raise System("container init exited before it was ready")
    obj = json.loads(data)
    return Message(Kind(obj["k"]), int(obj.get("p", 0)), str(obj.get("t", "")),
                   str(obj.get("e", "")))


def raise_error(msg: Message) -> None:
    """Re-raise, in the parent, the error the child reported, with its kind."""
    import ketch.errors as errors

    cls = getattr(errors, msg.error, None)
    if isinstance(cls, type) and issubclass(cls, errors.KetchError):
        raise cls(msg.text)
    raise System(msg.text)


def expect(sock: socket.socket, kind: Kind) -> Message:
    msg = recv(sock)
    if msg.kind is Kind.ERROR:
        raise_error(msg)
    if msg.kind is not kind:
        raise System(f"unexpected message from init: {msg.kind.value} (wanted {kind.value})")
    return msg
