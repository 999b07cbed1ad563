"""Docker's multiplexed stdio stream, read by attach, logs and compose alike.

Without a tty the daemon frames each piece of output with an 8-byte header:
the stream (1 stdout, 2 stderr, 3 the daemon's own error), three zero bytes
and the payload's big-endian length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

HEADER = struct.Struct(">BxxxI")
STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3


class Demuxer:
    """Splits docker's multiplexed stream: feed bytes, get (stream, payload) pieces.

    Payloads are handed on as they arrive (a frame may come in several reads), so
    a slow producer's partial line still reaches the terminal at once.
    """

    def __init__(self) -> None:
        self._head = b""
        self._stream = 0
        self._left = 0

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        pos = 0
        n = len(data)
        while pos < n:
            if self._left == 0:
                need = HEADER.size - len(self._head)
                self._head += data[pos:pos + need]
                pos += min(need, n - pos)
                if len(self._head) < HEADER.size:
                    return
                self._stream, self._left = HEADER.unpack(self._head)
                self._head = b""
                continue
            take = min(self._left, n - pos)
            chunk = data[pos:pos + take]
            pos += take
            self._left -= take
            yield self._stream, chunk

    @property
    def pending(self) -> bool:
        """True in the middle of a frame (the stream was cut short)."""
        return bool(self._head) or self._left > 0
