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

import io
import socket

TYPE_CHECKING = False     # typing costs the CLI start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK = 1 << 16
SEND_CHUNK = 1 << 18    # a streamed request body goes in chunks of up to this much

# RFC 3986's unreserved characters; urllib.parse would do, but it imports ipaddress and
# costs the CLI 2-3 ms at every start for two small functions.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str, safe: str = "/") -> str:
    """Percent-encoding as ``urllib.parse.quote``: UTF-8, unreserved and ``safe`` kept."""
    keep = _UNRESERVED | frozenset(safe.encode())
    raw = text.encode()
    if all(b in keep for b in raw):
        return text
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in raw)


def form_encode(pairs: list[tuple[str, str]]) -> str:
    """``urllib.parse.urlencode``'s query string: spaces as ``+``, everything else quoted."""
    return "&".join(quote(k, " ").replace(" ", "+") + "=" + quote(v, " ").replace(" ", "+")
                    for k, v in pairs)


class ProtocolError(OSError):
    """The other side does not speak HTTP/1.1 as expected."""


def send_request(sock: socket.socket, method: str, path: str, headers: dict[str, str],
                 body: bytes | BinaryIO | None) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    if not any(k.lower() == "connection" for k in headers):
        lines.append("Connection: close")
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
            data = body.read(SEND_CHUNK)
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


# --- hijacking (attach, exec start) -------------------------------------------------------


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ProtocolError(f"not an HTTP answer: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip()] = value.strip()
    return int(parts[1]), headers


def hijack(sock: socket.socket, method: str, path: str, headers: dict[str, str],
           body: bytes | None) -> tuple[int, dict[str, str], bytes]:
    """Send an ``Upgrade: tcp`` request and read the answer's head straight off the socket.

    Returns (status, headers, rest): on ``101``/``200`` the socket is now the raw
    stream and ``rest`` is what already arrived after the head (the first bytes of
    output); on another status ``rest`` is the error body, read to its end.
    A buffered reader is not used on purpose: it could swallow stream bytes that
    a later ``recv`` on the socket would then miss.
    """
    send_request(sock, method, path, {**headers, "Connection": "Upgrade", "Upgrade": "tcp"},
                 body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(CHUNK)
        if not data:
            raise ProtocolError("the daemon closed the connection without answering")
        buf += data
        if len(buf) > 1 << 20:
            raise ProtocolError("the answer's header is too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    status, hdrs = _parse_head(head)
    if status in (101, 200):
        return status, hdrs, rest
    low = {k.lower(): v for k, v in hdrs.items()}
    if "content-length" in low:
        want = int(low["content-length"])
        while len(rest) < want:
            data = sock.recv(CHUNK)
            if not data:
                break
            rest += data
        return status, hdrs, rest[:want]
    body_reader = Body(io.BufferedReader(_Prefixed(rest, sock)),  # type: ignore[arg-type,type-var]
                       length=None, chunked="chunked" in low.get("transfer-encoding", ""))
    return status, hdrs, body_reader.read()


class _Prefixed(io.RawIOBase):
    """Bytes already received, then the socket: a raw file for reading an error body."""

    def __init__(self, first: bytes, sock: socket.socket) -> None:
        super().__init__()
        self._first = first
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        if self._first:
            n = min(len(b), len(self._first))
            b[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        data = self._sock.recv(len(b))
        b[:len(data)] = data
        return len(data)
