"""The one seam between the client and the network.

``Client`` only ever calls ``Transport.request`` (whole answers) and
``Transport.open`` (answers read as a stream: ``save``, progress messages);
``HTTPTransport`` speaks HTTP/1.1 over AF_UNIX or TCP (``_http``; the
CLI's start-up stays free of heavy imports), and ``FakeTransport``
answers from a function so unit tests need no socket (httpx's MockTransport).

A request body may be bytes or a readable file (an archive for ``load``,
stdin for ``import``); a file goes out with chunked transfer encoding, so
nothing is held in memory and its size need not be known.
"""

from __future__ import annotations

import io
import socket

from ketch.client._http import Body, read_response, send_request
from ketch.errors import InvalidArgument, Unavailable
from ketch.record import Record

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO, Protocol

    class Transport(Protocol):
        def request(self, req: Request) -> Response: ...

        def open(self, req: Request) -> StreamResponse: ...

DEFAULT_HOST = "unix:///run/ketch/ketch.sock"


class Request(Record):
    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str] | None = None,
                 body: bytes | BinaryIO | None = None) -> None:
        self.method = method
        self.path = path
        self.headers: dict[str, str] = {} if headers is None else headers
        self.body = body


def _header(headers: dict[str, str], name: str) -> str | None:
    """Header names are case-insensitive in HTTP."""
    low = name.lower()
    for k, v in headers.items():
        if k.lower() == low:
            return v
    return None


class Response(Record):
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


class StreamResponse:
    """An answer whose body is read as it arrives; close it when done."""

    def __init__(self, status: int, headers: dict[str, str], fp: BinaryIO,
                 on_close: Callable[[], None] | None = None) -> None:
        self.status = status
        self.headers = headers
        self.fp = fp
        self._on_close = on_close

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def read(self, n: int = -1) -> bytes:
        return self.fp.read(n)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> StreamResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_host(host: str) -> tuple[str, str, int]:
    """``unix:///p`` -> ("unix", "/p", 0); ``tcp://h:2375`` -> ("tcp", "h", 2375)."""
    if host.startswith("/"):
        return "unix", host, 0
    if host.startswith("unix://") and len(host) > 7:
        return "unix", host[7:], 0
    from urllib.parse import urlsplit

    u = urlsplit(host)
    if u.scheme == "unix" and u.path:
        return "unix", u.path, 0
    if u.scheme in ("tcp", "http") and u.hostname:
        return "tcp", u.hostname, u.port or 2375
    raise InvalidArgument(f"unable to parse docker host `{host}`")


class HTTPTransport:
    """One connection per request: simple, and the daemon is local.

    ``timeout`` bounds connecting and each read; streams (a long ``save``,
    a slow ``load``) use ``stream_timeout`` (None: wait as long as it takes).
    """

    def __init__(self, host: str = DEFAULT_HOST, timeout: float | None = 60.0,
                 stream_timeout: float | None = None) -> None:
        self.host = host
        self.scheme, self.address, self.port = parse_host(host)
        self.timeout = timeout
        self.stream_timeout = stream_timeout

    def _unavailable(self, exc: OSError) -> Unavailable:
        # docker's wording, with our daemon's name: users search for it.
        return Unavailable(f"Cannot connect to the ketch daemon at {self.host}. "
                           f"Is the ketch daemon running? ({exc.strerror or exc})")

    def _connect(self, timeout: float | None) -> socket.socket:
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = self.address
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET,
                                 socket.SOCK_STREAM)
            target = (self.address, self.port)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            raise self._unavailable(exc) from exc
        return sock

    def _exchange(self, req: Request, timeout: float | None
                  ) -> tuple[socket.socket, int, dict[str, str], Body]:
        sock = self._connect(timeout)
        try:
            try:
                send_request(sock, req.method, req.path, req.headers, req.body)
            except BrokenPipeError:
                pass  # the daemon answered early (an error): read what it said
            status, headers, body, _ = read_response(sock, req.method)
        except OSError as exc:
            sock.close()
            raise self._unavailable(exc) from exc
        except BaseException:
            sock.close()
            raise
        return sock, status, headers, body

    def request(self, req: Request) -> Response:
        sock, status, headers, body = self._exchange(req, self.timeout)
        try:
            data = body.read()
        except OSError as exc:
            raise self._unavailable(exc) from exc
        finally:
            sock.close()
        return Response(status, headers, data)

    def open(self, req: Request) -> StreamResponse:
        sock, status, headers, body = self._exchange(req, self.stream_timeout)
        return StreamResponse(status, headers, body, sock.close)  # type: ignore[arg-type]


class FakeTransport:
    """Answers from ``handler`` and records every request, for unit tests.

    A file body is read whole before the handler sees it, so tests can assert
    on what was sent.
    """

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    def _recorded(self, req: Request) -> Request:
        if req.body is not None and not isinstance(req.body, bytes):
            req = Request(req.method, req.path, req.headers, req.body.read())
        self.requests.append(req)
        return req

    def request(self, req: Request) -> Response:
        return self.handler(self._recorded(req))

    def open(self, req: Request) -> StreamResponse:
        resp = self.handler(self._recorded(req))
        return StreamResponse(resp.status, resp.headers, io.BytesIO(resp.body))
