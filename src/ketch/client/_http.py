"""Just enough HTTP/1.1 for a local Engine API client, over any connected socket.

Why not http.client: importing it (and the email parser it pulls in) costs
about as much as everything else ``ketch images`` does, and later the
attach and exec endpoints need the raw socket after an ``Upgrade: tcp``
answer, which http.client hides. What is here: one request per connection
(``Connection: close``), request bodies as bytes or streamed chunked from a
file, and answers framed by Content-Length, chunked encoding or the end of
the connection.
"""

from __future__ import annotations

import socket
from typing import BinaryIO

CHUNK = 1 << 16


class ProtocolError(OSError):
    """The other side does not speak HTTP/1.1 as expected."""


def send_request(sock: socket.socket, method: str, path: str, headers: dict[str, str],
                 body: bytes | BinaryIO | None) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    streamed = body is not None and not isinstance(body, bytes)
    if isinstance(body, bytes):
        lines.append(f"Content-Length: {len(body)}")
    elif streamed:
        lines.append("Transfer-Encoding: chunked")
    elif method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if isinstance(body, bytes):
        if body:
            sock.sendall(body)
    elif body is not None:
        while True:
            data = body.read(CHUNK)
            if not data:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        sock.sendall(b"0\r\n\r\n")


class Body:
    """A response body as a read-forward file, undoing the transfer framing."""

    def __init__(self, rfile: BinaryIO, *, length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self._left = length          # bytes left when Content-Length framed
        self._chunked = chunked
        self._chunk_left = 0
        self._done = length == 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts: list[bytes] = []
            while True:
                part = self.read(CHUNK)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        if self._done or n == 0:
            return b""
        if self._chunked:
            return self._read_chunked(n)
        if self._left is not None:
            data = self._rfile.read(min(n, self._left))
            if not data:
                raise ProtocolError("the connection closed in the middle of an answer")
            self._left -= len(data)
            self._done = self._left == 0
            return data
        data = self._rfile.read1(n) if hasattr(self._rfile, "read1") else self._rfile.read(n)
        self._done = not data
        return data

    def _read_chunked(self, n: int) -> bytes:
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            if not line:
                raise ProtocolError("the connection closed in the middle of an answer")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from exc
            if size == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._done = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(n, self._chunk_left))
        if not data:
            raise ProtocolError("the connection closed in the middle of a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(16)  # the CRLF after each chunk
        return data


def read_response(sock: socket.socket, method: str) -> tuple[int, dict[str, str], Body,
                                                             BinaryIO]:
    """Status, headers and body of the answer; the last item is the buffered reader
    (after an ``Upgrade`` the stream continues there, not on the socket)."""
    rfile: BinaryIO = sock.makefile("rb")  # type: ignore[assignment]
    status_line = rfile.readline(65537)
    if not status_line:
        raise ProtocolError("the daemon closed the connection without answering")
    parts = status_line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ProtocolError(f"not an HTTP answer: {status_line[:60]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = rfile.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        key = name.strip()
        value = value.strip()
        # Repeated headers are joined, as HTTP allows for list-valued ones.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    low = {k.lower(): v for k, v in headers.items()}
    no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
    chunked = "chunked" in low.get("transfer-encoding", "").lower()
    length: int | None = None
    if no_body:
        length = 0
    elif not chunked and "content-length" in low:
        length = int(low["content-length"])
    return status, headers, Body(rfile, length=length, chunked=chunked and not no_body), rfile
