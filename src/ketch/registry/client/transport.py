"""HTTP/1.1 to registries: kept-alive connections per host, TLS per certs.d, Go's error words.

One ``Transport`` serves the whole daemon. It keeps a small pool of idle
connections per (scheme, host, port), so a pull's many requests to one
registry reuse sockets, and several threads can each hold their own
connection at the same time (the pool is the only shared state, under a lock).

Bodies are streamed both ways: uploads are sent from a file object in large
blocks, and downloads are read with ``readinto`` into a caller's buffer,
because a blob may be gigabytes and the loopback rate should be the disk's.

Network failures become ``Unavailable`` worded like Go's net/http, since
that is what Docker shows: ``Get "http://127.0.0.1:5000/v2/": dial tcp
127.0.0.1:5000: connect: connection refused``.
"""

from __future__ import annotations

import errno
import glob
import http.client
import os
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from ketch.errors import InvalidArgument, System, Unavailable
from ketch.registry.client.options import RegistryOptions, split_host_port

SEND_BLOCK = 1 << 20
MAX_IDLE_PER_HOST = 8


class NetworkError(Unavailable):
    """No complete HTTP answer: refused, reset, TLS failure, timeout, a body cut short.

    Its own kind (still an Unavailable) because it is what makes a pull try
    the next endpoint and a blob download resume.
    """


@dataclass
class Body:
    """A request body: bytes, or a file object of known length sent in blocks.

    ``reopen`` gives a fresh file object for a retry (a token that expired
    while an upload was queued); without it a streamed body cannot be resent.
    """

    data: bytes | None = None
    reopen: Callable[[], BinaryIO] | None = None
    length: int = 0
    progress: Callable[[int], None] | None = None

    @classmethod
    def of(cls, data: bytes) -> Body:
        return cls(data=data, length=len(data))


def go_dial_error(exc: BaseException, netloc: str, scheme: str = "https") -> str:
    """The text Go's net package gives for a failed dial, for Docker's messages.

    Go names the address it dialled, so a URL without a port shows the
    scheme's (``registry.example:443``).
    """
    host, port = split_host_port(netloc)
    addr = netloc if port is not None else f"{netloc}:{443 if scheme == 'https' else 80}"
    if isinstance(exc, socket.gaierror):
        return f"dial tcp: lookup {host}{_resolver_failure()}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"dial tcp {addr}: i/o timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        words = {
            errno.ECONNREFUSED: "connect: connection refused",
            errno.ENETUNREACH: "connect: network is unreachable",
            errno.EHOSTUNREACH: "connect: no route to host",
            errno.ETIMEDOUT: "connect: connection timed out",
        }.get(exc.errno, f"connect: {os.strerror(exc.errno).lower()}")
        return f"dial tcp {addr}: {words}"
    return f"dial tcp {addr}: {exc}"


def _resolver_failure() -> str:
    """Why a name did not resolve, in the words of Go's resolver (which Docker shows).

    Go asks the first nameserver of resolv.conf itself; when that server
    cannot even be reached (no network: the usual case for Docker Hub here)
    it says so, e.g. ``on 10.0.0.53:53: dial udp 10.0.0.53:53: connect:
    network is unreachable``; otherwise the name does not exist.
    """
    server = ""
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    server = fields[1]
                    break
    except OSError:
        pass
    if not server:
        return ": no such host"
    addr = f"[{server}]:53" if ":" in server else f"{server}:53"
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((server, 53))  # UDP: no packet is sent, only the route is checked
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return f" on {addr}: dial udp {addr}: connect: {reason}"
    return f" on {addr}: no such host"


def method_word(method: str) -> str:
    """Go's url.Error spelling of a method ("Get", "Head"), which Docker's messages show."""
    return method[:1].upper() + method[1:].lower()


class Response:
    """An HTTP answer whose body is read on demand; ``close`` returns the socket to the pool."""

    def __init__(self, transport: Transport, key: tuple[str, str], conn: http.client.HTTPConnection,
                 raw: http.client.HTTPResponse, method: str, url: str) -> None:
        self._transport = transport
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self._raw = raw
        self.method = method
        self.url = url
        self.status = raw.status
        self.reason = raw.reason
        self.headers = raw.headers

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def header_all(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []

    @property
    def length(self) -> int | None:
        return self._raw.length

    def read(self, limit: int | None = None) -> bytes:
        """The rest of the body (at most ``limit`` bytes; more is an error the caller sees)."""
        try:
            if limit is None:
                return self._raw.read()
            data = self._raw.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            self._broken()
            raise NetworkError(self._read_error(exc)) from exc
        return data

    def readinto(self, buf: memoryview) -> int:
        """Fill ``buf`` from the body; 0 at its end. A cut connection raises NetworkError."""
        try:
            n = self._raw.readinto(buf)
        except (OSError, http.client.HTTPException) as exc:
            self._broken()
            raise NetworkError(self._read_error(exc)) from exc
        if n == 0 and self._raw.length:
            # http.client returns 0 instead of raising when the peer closes
            # early on a Content-Length body; that is a truncated transfer.
            self._broken()
            raise NetworkError(f"{method_word(self.method)} \"{self.url}\": unexpected EOF")
        return n

    def _read_error(self, exc: BaseException) -> str:
        if isinstance(exc, http.client.IncompleteRead):
            return f"{method_word(self.method)} \"{self.url}\": unexpected EOF"
        if isinstance(exc, TimeoutError | socket.timeout):
            return f"{method_word(self.method)} \"{self.url}\": net/http: request canceled (Client.Timeout exceeded while reading body)"
        return f"{method_word(self.method)} \"{self.url}\": read: {exc}"

    def _broken(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Give the connection back if the body was read to its end, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._raw.isclosed() and not self._raw.will_close:
            self._transport._release(self._key, conn)
        else:
            # Unread body bytes would poison the next request on this socket;
            # draining a big blob is costlier than a new connection.
            self._raw.close()
            conn.close()

    def discard(self, limit: int = 1 << 16) -> None:
        """Read a small remaining body (error text, redirects) so the socket can be reused."""
        try:
            if self._raw.length is None or self._raw.length <= limit:
                self._raw.read(limit)
        except (OSError, http.client.HTTPException):
            self._broken()
        self.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport:
    """Connections to registries, TLS configured per host, reused across threads."""

    def __init__(self, options: RegistryOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._contexts: dict[tuple[str, bool], ssl.SSLContext] = {}

    # --- TLS ---------------------------------------------------------------

    def ssl_context(self, netloc: str, verify: bool) -> ssl.SSLContext:
        """The TLS context for ``netloc``: system CAs plus certs.d's, and its client pair.

        As dockerd: ``<dir>/<host[:port]>/*.crt`` are extra CAs, ``*.cert`` with
        the ``*.key`` of the same name a client certificate. An insecure
        registry is still spoken to over TLS when it offers TLS, just without
        verification.
        """
        key = (netloc, verify)
        with self._lock:
            ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for base in self.options.certs_dirs:
            directory = os.path.join(base, netloc)
            if not os.path.isdir(directory):
                continue
            for ca in sorted(glob.glob(os.path.join(directory, "*.crt"))):
                if verify:
                    try:
                        ctx.load_verify_locations(cafile=ca)
                    except (OSError, ssl.SSLError) as exc:
                        raise InvalidArgument(f"unable to load CA certificate {ca}: {exc}") from None
            for cert in sorted(glob.glob(os.path.join(directory, "*.cert"))):
                keyfile = cert[:-len(".cert")] + ".key"
                if not os.path.exists(keyfile):
                    # dockerd's words (registry.ReadCertsDirectory).
                    raise InvalidArgument(
                        f"missing key {os.path.basename(keyfile)} for client certificate "
                        f"{os.path.basename(cert)}. CA certificates must use the extension .crt")
                try:
                    ctx.load_cert_chain(cert, keyfile)
                except (OSError, ssl.SSLError) as exc:
                    raise InvalidArgument(
                        f"unable to load client certificate {cert}: {exc}") from None
            break  # dockerd uses the first certs dir that has the host
        with self._lock:
            self._contexts.setdefault(key, ctx)
            return self._contexts[key]

    # --- connections ---------------------------------------------------------

    def _connect(self, scheme: str, netloc: str, verify: bool) -> http.client.HTTPConnection:
        host, port = split_host_port(netloc)
        timeout = self.options.timeout
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=self.ssl_context(netloc, verify),
                                               blocksize=SEND_BLOCK)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout, blocksize=SEND_BLOCK)
        return conn

    def _acquire(self, key: tuple[str, str]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _release(self, key: tuple[str, str], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                body: Body | None = None, verify: bool = True) -> Response:
        """Send one request; the caller reads the answer and closes it.

        A request on a reused connection that fails before any answer is
        retried once on a new one: servers close idle keep-alive sockets
        whenever they like, and the request never reached them.
        """
        parts = urllib.parse.urlsplit(url)
        scheme, netloc = parts.scheme, parts.netloc
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        key = (scheme, netloc) if verify else (scheme + "+noverify", netloc)
        hdrs = {"User-Agent": self.options.user_agent}
        hdrs.update(headers or {})
        for attempt in range(2):
            conn = self._acquire(key)
            reused = conn is not None
            if conn is None:
                conn = self._connect(scheme, netloc, verify)
            try:
                self._send(conn, method, target, hdrs, body)
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                stale = isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError
                                   | BrokenPipeError | ConnectionAbortedError)
                if reused and stale and attempt == 0 and resendable(body):
                    continue
                raise self._error(method, url, netloc, exc, connected=reused) from exc
            except BaseException:
                conn.close()  # half a request was sent: the socket is unusable
                raise
            return Response(self, key, conn, raw, method, url)
        raise AssertionError("unreachable")

    @staticmethod
    def _send(conn: http.client.HTTPConnection, method: str, target: str,
              headers: Mapping[str, str], body: Body | None) -> None:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(body.length))
        elif method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        if body is None or body.data is not None:
            conn.endheaders(body.data if body is not None else None)
            if body is not None and body.progress is not None:
                body.progress(body.length)
            return
        conn.endheaders()
        assert body.reopen is not None
        sent = 0
        buf = bytearray(min(SEND_BLOCK, max(body.length, 1)))
        view = memoryview(buf)
        # Local read failures are the caller's content, not the network: they
        # must not be reported (or retried) as a registry that did not answer.
        try:
            f = body.reopen()
        except OSError as exc:
            raise System(f"cannot read the content to upload: {exc}") from exc
        with f:
            while sent < body.length:
                try:
                    n = f.readinto(view[:min(len(view), body.length - sent)])  # type: ignore[attr-defined]
                except OSError as exc:
                    raise System(f"cannot read the content to upload: {exc}") from exc
                if not n:
                    raise System(f"the content to upload ended after {sent} of "
                                 f"{body.length} bytes")
                conn.send(view[:n])
                sent += n
                if body.progress is not None:
                    body.progress(sent)

    def _error(self, method: str, url: str, netloc: str, exc: BaseException,
               connected: bool) -> NetworkError:
        prefix = f"{method_word(method)} \"{url}\""
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or str(exc)
            if "self-signed" in reason or "self signed" in reason or "unable to get local issuer" in reason:
                return NetworkError(f"{prefix}: x509: certificate signed by unknown authority")
            if "Hostname mismatch" in reason or "IP address mismatch" in reason:
                return NetworkError(f"{prefix}: x509: certificate is valid for another host, not {split_host_port(netloc)[0]}")
            return NetworkError(f"{prefix}: x509: {reason}")
        if isinstance(exc, ssl.SSLError):
            if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in str(exc):
                return NetworkError(f"{prefix}: http: server gave HTTP response to HTTPS client")
            return NetworkError(f"{prefix}: remote error: tls: {exc.reason or exc}")
        if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
            return NetworkError(f"{prefix}: EOF" if isinstance(exc, http.client.RemoteDisconnected)
                                else f"{prefix}: read: connection reset by peer")
        if isinstance(exc, http.client.HTTPException):
            return NetworkError(f"{prefix}: malformed HTTP response: {exc}")
        if isinstance(exc, TimeoutError | socket.timeout) and connected:
            return NetworkError(f"{prefix}: net/http: timeout awaiting response headers")
        return NetworkError(f"{prefix}: {go_dial_error(exc, netloc, urllib.parse.urlsplit(url).scheme)}")


def resendable(body: Body | None) -> bool:
    return body is None or body.data is not None or body.reopen is not None
