"""The one seam between the client and the network.

``Client`` only ever calls ``Transport.request``; ``HTTPTransport`` speaks
HTTP/1.1 over AF_UNIX or TCP with the stdlib (the CLI's start-up stays free of
third-party imports), and ``FakeTransport`` answers from a function so unit
tests need no socket (httpx's MockTransport).
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from ketch.errors import InvalidArgument, Unavailable

DEFAULT_HOST = "unix:///run/ketch/ketch.sock"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """Header names are case-insensitive in HTTP."""
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return None


class Transport(Protocol):
    def request(self, req: Request) -> Response: ...


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket; the Host header stays "localhost" as docker's."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def parse_host(host: str) -> tuple[str, str, int]:
    """``unix:///p`` -> ("unix", "/p", 0); ``tcp://h:2375`` -> ("tcp", "h", 2375)."""
    if host.startswith("/"):
        return "unix", host, 0
    u = urlsplit(host)
    if u.scheme == "unix" and u.path:
        return "unix", u.path, 0
    if u.scheme in ("tcp", "http") and u.hostname:
        return "tcp", u.hostname, u.port or 2375
    raise InvalidArgument(f"unable to parse docker host `{host}`")


class HTTPTransport:
    """One connection per request: simple, and the daemon is local."""

    def __init__(self, host: str = DEFAULT_HOST, timeout: float | None = 60.0) -> None:
        self.host = host
        self.scheme, self.address, self.port = parse_host(host)
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.scheme == "unix":
            return _UnixHTTPConnection(self.address, self.timeout)
        return http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)

    def request(self, req: Request) -> Response:
        conn = self._connection()
        try:
            try:
                conn.request(req.method, req.path, body=req.body, headers=req.headers)
                resp = conn.getresponse()
                body = resp.read()
            except OSError as exc:
                # docker's wording, with our daemon's name: users search for it.
                raise Unavailable(
                    f"Cannot connect to the ketch daemon at {self.host}. "
                    f"Is the ketch daemon running? ({exc.strerror or exc})") from exc
            return Response(resp.status, dict(resp.getheaders()), body)
        finally:
            conn.close()


class FakeTransport:
    """Answers from ``handler`` and records every request, for unit tests."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    def request(self, req: Request) -> Response:
        self.requests.append(req)
        return self.handler(req)
