"""The Engine API's byte streams: stdcopy framing, the logs body, and the hijack.

**Framing** (moby's stdcopy): without a tty, stdout and stderr share one
connection as frames of an 8-byte header (stream id, three zero bytes,
big-endian uint32 length) and the payload. dockerd writes one frame per write
and never splits one (a log message is at most 16 KiB; the supervisor's reads
are 64 KiB). Stream 3 (system error) carries a daemon error; readers stop there.
With a tty there is one stream and no framing at all.

**Content type**: ``application/vnd.docker.multiplexed-stream`` for framed
output when the client speaks API 1.42 or later, else
``application/vnd.docker.raw-stream`` (moby's logs, attach and exec routes).

**Logs**: ``write_logs`` sends records as ``GET /containers/{id}/logs`` does
(moby's logstream.Write): the headers at once, then each message as it is,
with ``--details`` attrs and a ``--timestamps`` prefix, a read error in band.

**Hijack** (attach, exec start): ``hijack`` answers the request on the raw
connection and hands its socket over, to be passed to the supervisor with
SCM_RIGHTS. See its docstring for the aiohttp side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
import urllib.parse
from collections.abc import AsyncIterable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from aiohttp import web

from ketch.api import versions
from ketch.api.routers.images import bool_value
from ketch.engine.logread import LogRecord, ReadOptions, parse_tail, parse_timestamp
from ketch.errors import InvalidArgument, NotSupported, System, Unavailable

log = logging.getLogger("ketch.api")

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
STREAM_IDS = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR}
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
HEADER = struct.Struct(">BxxxL")
MAX_FRAME = 0xFFFFFFFF          # the length field's limit


# -- stdcopy ------------------------------------------------------------------------------
def frame(stream: int, data: bytes) -> bytes:
    """One frame: header and payload (moby's stdWriter.Write, one write = one frame)."""
    if len(data) > MAX_FRAME:
        raise InvalidArgument(f"a frame holds at most {MAX_FRAME} bytes")
    return HEADER.pack(stream, len(data)) + data


class Demuxer:
    """Frames out of a byte stream that arrives in arbitrary pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet (non-zero at EOF: the stream was cut)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        while len(self._buf) - pos >= HEADER.size:
            stream, size = HEADER.unpack_from(self._buf, pos)
            if stream > SYSTEMERR:
                # The docker CLI's words (pkg/stdcopy).
                raise InvalidArgument(f"Unrecognized input header: {stream}")
            if len(self._buf) - pos - HEADER.size < size:
                break
            start = pos + HEADER.size
            out.append((stream, bytes(self._buf[start:start + size])))
            pos = start + size
        del self._buf[:pos]
        return out


def iter_frames(read: Callable[[int], bytes], bufsize: int = 64 * 1024
                ) -> Iterator[tuple[int, bytes]]:
    """Frames from a blocking ``read(n)`` (b"" at EOF); an incomplete last frame is dropped,
    as moby's StdCopy does."""
    demux = Demuxer()
    while True:
        data = read(bufsize)
        if not data:
            return
        yield from demux.feed(data)


def stdcopy(read: Callable[[int], bytes], stdout: BinaryIO, stderr: BinaryIO) -> int:
    """moby's StdCopy: stdout (and stdin) frames to ``stdout``, stderr to ``stderr``;
    a system-error frame ends the copy with its message. Returns the bytes written."""
    written = 0
    for stream, data in iter_frames(read):
        if stream == SYSTEMERR:
            raise System(f"error from daemon in stream: {data.decode(errors='replace')}")
        out = stderr if stream == STDERR else stdout
        out.write(data)
        out.flush()
        written += len(data)
    return written


def stream_content_type(multiplexed: bool, version: str) -> str:
    """The Content-Type of a logs, attach or exec stream for a client at ``version``."""
    if multiplexed and versions.at_least(version, "1.42"):
        return MULTIPLEXED_STREAM
    return RAW_STREAM


# -- logs ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LogsQuery:
    """``GET /containers/{id}/logs``'s query, checked as dockerd checks it."""

    stdout: bool = False
    stderr: bool = False
    follow: bool = False
    timestamps: bool = False
    details: bool = False
    since_ns: int | None = None
    until_ns: int | None = None
    tail: int = -1

    def read_options(self) -> ReadOptions:
        return ReadOptions(stdout=self.stdout, stderr=self.stderr, since_ns=self.since_ns,
                           until_ns=self.until_ns, tail=self.tail)


def logs_query(query: Mapping[str, str]) -> LogsQuery:
    stdout, stderr = bool_value(query, "stdout"), bool_value(query, "stderr")
    if not (stdout or stderr):
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    until = query.get("until", "")
    return LogsQuery(
        stdout=stdout, stderr=stderr, follow=bool_value(query, "follow"),
        timestamps=bool_value(query, "timestamps"), details=bool_value(query, "details"),
        since_ns=parse_timestamp(query.get("since", "")),
        until_ns=None if until in ("", "0") else parse_timestamp(until),
        tail=parse_tail(query.get("tail", "")))


_seconds: dict[int, str] = {}      # consecutive messages share their second


def timestamp_fixed(time_ns: int) -> str:
    """Go's ``2006-01-02T15:04:05.000000000Z07:00`` in UTC: always nine digits."""
    secs, nanos = divmod(time_ns, 1_000_000_000)
    base = _seconds.get(secs)
    if base is None:
        if len(_seconds) > 4096:
            _seconds.clear()
        base = _seconds[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{nanos:09d}Z"


def details_prefix(attrs: Mapping[str, str]) -> bytes:
    """``k=v,k2=v2 `` sorted by key and query-escaped, as moby's attrsByteSlice
    (a record without attrs still gets the space)."""
    q = urllib.parse.quote_plus
    return ",".join(f"{q(k, safe='')}={q(v, safe='')}"
                    for k, v in sorted(attrs.items())).encode() + b" "


def log_message(rec: LogRecord, *, timestamps: bool = False, details: bool = False) -> bytes:
    line = rec.text
    if details:
        line = details_prefix(rec.attrs) + line
    if timestamps:
        line = timestamp_fixed(rec.time_ns).encode() + b" " + line
    return line


def encode_logs(records: Sequence[LogRecord], *, multiplexed: bool, timestamps: bool = False,
                details: bool = False) -> bytes:
    """Records as the body bytes: one frame per message, or the messages raw (tty)."""
    parts: list[bytes] = []
    for rec in records:
        stream = STREAM_IDS.get(rec.stream)
        if stream is None or stream == STDIN:
            continue                    # dockerd skips sources it does not know
        msg = log_message(rec, timestamps=timestamps, details=details)
        parts.append(frame(stream, msg) if multiplexed else msg)
    return b"".join(parts)


def _gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def write_logs(request: web.Request, batches: AsyncIterable[Sequence[LogRecord]], *,
                     tty: bool, timestamps: bool = False, details: bool = False,
                     check_interval: float = 1.0) -> web.StreamResponse:
    """Send a container's log: 200 and the headers at once, then each batch as it comes.

    Call it once the container and the query are known to be good: from here
    on errors go in band ("Error grabbing logs: ..." on the system-error
    stream, or plain with a tty). ``batches`` is typically
    ``logread.follow_batches``; it is closed when the client leaves, which is
    noticed within ``check_interval`` even while nothing is written (aiohttp
    does not cancel handlers on a disconnect by default).
    """
    multiplexed = not tty
    content_type = stream_content_type(multiplexed, versions.of(request.match_info))
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)     # a StreamResponse sends its headers now

    async def pump() -> None:
        iterator = aiter(batches)
        try:
            async for batch in iterator:
                body = encode_logs(batch, multiplexed=multiplexed, timestamps=timestamps,
                                   details=details)
                if body:
                    await response.write(body)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - reported in band, as dockerd does
            log.warning("GET %s: reading the log failed: %s", request.path, exc)
            msg = f"Error grabbing logs: {exc}\n".encode()
            await response.write(frame(SYSTEMERR, msg) if multiplexed else msg)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    task = asyncio.ensure_future(pump())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=check_interval)
            if not task.done() and _gone(request):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return response
        try:
            task.result()
        except ConnectionError:
            return response             # the client left while we wrote
        await response.write_eof()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return response


# -- hijack -------------------------------------------------------------------------------
def wants_upgrade(request: web.BaseRequest) -> bool:
    """dockerd answers 101 when the request has an ``Upgrade`` header at all."""
    return "Upgrade" in request.headers


async def hijack(request: web.BaseRequest, content_type: str,
                 headers: Mapping[str, str] | None = None) -> socket.socket:
    """Take the connection over from aiohttp and answer the request on it, as
    dockerd's attach and exec start do; return the connection's socket, which
    the caller owns (a blocking ``socket.socket`` on a dup of the fd).

    The answer is ``101 UPGRADED`` with ``content_type``, ``Connection:
    Upgrade`` and ``Upgrade: tcp`` when the client asked to upgrade (the docker
    CLI and docker-py always do, and the CLI refuses anything but 101), else
    ``200 OK`` with the raw-stream type (moby's answer to old clients), then
    ``headers`` if given. After the blank line the socket carries the stream:
    output framed or raw, and the client's stdin. A client that half-closes
    (its stdin ended) still gets the output: the socket is never shut down
    here, only by whoever ends the stream.

    How aiohttp is made to let go: reading is paused at once so no byte of the
    client's stdin is consumed by its HTTP parser (clients send stdin only
    after reading the 101, so nothing is in its buffer: read the request
    body, e.g. exec start's JSON, *before* calling this); the fd is dup'ed;
    the transport is then aborted, which closes aiohttp's fd (the connection
    lives on through the dup: close() is not shutdown()) and ends aiohttp's
    interest in it. Whatever the handler returns or raises afterwards is
    dropped by aiohttp as written to a client that went away, so errors after
    the hijack must be written in band by the caller (dockerd's exec writes
    the message and "\\r\\n" on the stream). This relies on aiohttp's default
    ``handler_cancellation=False``: with it on, the handler would be cancelled
    at its next await. TLS connections cannot be handed over (the session
    state is in this process): NotSupported.
    """
    sock = take_socket(request)
    try:
        answer_upgrade(request, sock, content_type, headers)
    except BaseException:
        sock.close()
        raise
    return sock


def take_socket(request: web.BaseRequest) -> socket.socket:
    """The first half of ``hijack``: the connection's socket, taken from aiohttp,
    nothing written yet (see ``hijack``)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise Unavailable("the client closed the connection")
    if transport.get_extra_info("sslcontext") is not None:
        raise NotSupported("attach and exec streams are not supported over TLS")
    raw = transport.get_extra_info("socket")
    if raw is None:
        raise NotSupported("this connection has no socket to hand over")
    transport.pause_reading()
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    transport.abort()
    sock.setblocking(True)
    return sock


def answer_upgrade(request: web.BaseRequest, sock: socket.socket, content_type: str,
                   headers: Mapping[str, str] | None = None) -> None:
    """The second half of ``hijack``: the 101 (or 200) answer on the taken socket.

    Attaching to a container that has not started yet sends it only once the
    supervisor holds the connection: the client starts the container as soon
    as it reads the answer, and output before the attach would be lost."""
    if wants_upgrade(request):
        head = (f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {content_type}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n")
    else:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {RAW_STREAM}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    sock.sendall((head + "\r\n").encode("latin-1"))
