"""A small Engine API client: negotiate once, then versioned requests.

    c = Client()          # host from KETCH_HOST / DOCKER_HOST / the default
    c.version()           # pings first, then GET /v1.45/version
    c.images(all=True)

Like the docker CLI, it pings to learn the daemon's API version and speaks
the lower of that and its own, so a newer CLI works with an older daemon.
Methods return the API's JSON as is: the CLI's views turn it into rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence

from ketch.client._build import BuildMixin
from ketch.client._containers import ContainersMixin
from ketch.client._errors import from_status, message_of
from ketch.client._http import form_encode, quote
from ketch.client._networks import NetworksMixin
from ketch.client._registry import RegistryMixin
from ketch.client._transport import (
    DEFAULT_HOST,
    HTTPTransport,
    Request,
    StreamResponse,
)
from ketch.client._volumes import VolumesMixin
from ketch.errors import System

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from ketch.client._transport import Transport

CLIENT_API_VERSION = "1.45"

Filters = Mapping[str, Sequence[str]]


def resolve_host(flag: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``--host``, then ``KETCH_HOST``, then ``DOCKER_HOST``, then the default socket."""
    env = os.environ if environ is None else environ
    return flag or env.get("KETCH_HOST") or env.get("DOCKER_HOST") or DEFAULT_HOST


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def _query(params: Mapping[str, Any]) -> str:
    """``?a=1&b=x`` without the unset ones; lists repeat the key; filters go as JSON."""
    pairs: list[tuple[str, str]] = []
    for k, v in params.items():
        if v is None or v is False or v == "" or v == [] or v == {}:
            continue
        if k == "filters":
            pairs.append((k, json.dumps({f: list(vals) for f, vals in v.items()})))
        elif isinstance(v, bool):
            pairs.append((k, "1"))
        elif isinstance(v, (list, tuple)):
            pairs.extend((k, str(x)) for x in v)
        else:
            pairs.append((k, str(v)))
    return "?" + form_encode(pairs) if pairs else ""


def _name(name: str) -> str:
    """An image name in a path: slashes stay (moby routes ``{name:.*}``), the rest quoted."""
    return quote(name, safe="/:@")


class StreamError(System):
    """An error the daemon reported inside a message stream, after the status line."""


def stream_lines(resp: StreamResponse) -> Iterator[bytes]:
    """A response body line by line (the last one may lack its newline)."""
    buf = b""
    while True:
        chunk = resp.read(65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        yield from lines
    yield buf


def json_messages(resp: StreamResponse) -> Iterator[dict[str, Any]]:
    """The objects of a JSON message stream (one per line, as moby's streamformatter
    writes them); an ``error`` message ends the stream with StreamError."""
    for line in stream_lines(resp):
        yield from _message(line)


def parse_message(line: bytes) -> dict[str, Any] | None:
    """One line of a message stream as an object (None for a blank line or a value
    that is not an object); a line that is not JSON is the daemon's fault."""
    line = line.strip()
    if not line:
        return None
    try:
        msg = json.loads(line)
    except ValueError as exc:
        raise System(f"the daemon sent a message that is not JSON: {line[:200]!r}") from exc
    return msg if isinstance(msg, dict) else None


def _message(line: bytes) -> Iterator[dict[str, Any]]:
    msg = parse_message(line)
    if msg is not None and msg.get("error"):
        detail = msg.get("errorDetail") or {}
        raise StreamError(str(detail.get("message") or msg["error"]))
    if msg is not None:
        yield msg


class Client(ContainersMixin, NetworksMixin, VolumesMixin, RegistryMixin, BuildMixin):
    def __init__(self, host: str | None = None, *, transport: Transport | None = None,
                 version: str | None = None) -> None:
        self.host = resolve_host(host)
        self.transport: Transport = transport or HTTPTransport(self.host)
        self._version = version

    # --- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _headers(content_type: str | None) -> dict[str, str]:
        headers = {"User-Agent": "ketch-cli"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _send(self, method: str, path: str, body: Any = None) -> bytes:
        data = None
        ctype = None
        if body is not None:
            data = json.dumps(body).encode()
            ctype = "application/json"
        resp = self.transport.request(Request(method, self._versioned(path),
                                              self._headers(ctype), data))
        if not 200 <= resp.status < 300:
            raise from_status(resp.status, resp.body)
        return resp.body

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        raw = self._send(method, path, body)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise System(f"the daemon's answer to {path} is not JSON: {raw[:200]!r}") from exc

    def _open(self, method: str, path: str, body: bytes | BinaryIO | None = None,
              content_type: str | None = None) -> StreamResponse:
        """A streamed answer; a non-2xx status is raised here, with the daemon's message."""
        resp = self.transport.open(Request(method, self._versioned(path),
                                           self._headers(content_type), body))
        if not 200 <= resp.status < 300:
            try:
                raw = resp.read()
            finally:
                resp.close()
            raise from_status(resp.status, raw)
        return resp

    def _stream(self, method: str, path: str, body: bytes | BinaryIO | None = None,
                content_type: str | None = None) -> Iterator[dict[str, Any]]:
        resp = self._open(method, path, body, content_type)
        try:
            yield from json_messages(resp)
        finally:
            resp.close()

    def negotiate(self) -> str:
        """The API version to speak: min(daemon's, ours), learned from /_ping once."""
        if self._version is None:
            resp = self.transport.request(Request("GET", "/_ping", {"User-Agent": "ketch-cli"}))
            if not 200 <= resp.status < 300:
                raise from_status(resp.status, resp.body)
            server = resp.header("API-Version") or CLIENT_API_VERSION
            self._version = min(server, CLIENT_API_VERSION, key=_key)
        return self._version

    def _versioned(self, path: str) -> str:
        return f"/v{self.negotiate()}{path}"

    # --- system -----------------------------------------------------------------------------

    def ping(self) -> str:
        """The daemon's API version; raises Unavailable when nothing listens."""
        self._version = None
        return self.negotiate()

    def version(self) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", "/version")
        return out

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", "/info")
        return out

    def events(self, *, since: str = "", until: str = "",
               filters: Filters | None = None) -> Iterator[dict[str, Any]]:
        """``GET /events``: one message per event, until ``until`` (or for ever)."""
        return self._stream("GET", "/events" + _query({"since": since, "until": until,
                                                       "filters": filters or {}}))

    def df(self, types: Sequence[str] = ()) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", "/system/df" + _query({"type": list(types)}))
        return out

    # --- images -----------------------------------------------------------------------------

    def images(self, *, all: bool = False, filters: Filters | None = None,
               digests: bool = False) -> list[dict[str, Any]]:
        q = _query({"all": all, "filters": filters or {}, "digests": digests})
        out: list[dict[str, Any]] = self._json("GET", "/images/json" + q)
        return out

    def image_inspect(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", f"/images/{_name(name)}/json")
        return out

    def image_history(self, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._json("GET", f"/images/{_name(name)}/history")
        return out

    def image_tag(self, source: str, repo: str, tag: str) -> None:
        self._send("POST", f"/images/{_name(source)}/tag" + _query({"repo": repo, "tag": tag}))

    def image_remove(self, name: str, *, force: bool = False,
                     noprune: bool = False) -> list[dict[str, str]]:
        q = _query({"force": force, "noprune": noprune})
        out: list[dict[str, str]] = self._json("DELETE", f"/images/{_name(name)}" + q)
        return out

    def images_prune(self, filters: Filters | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self._json("POST", "/images/prune" + _query({"filters": filters}))
        return out

    def images_save(self, names: Sequence[str]) -> StreamResponse:
        """The tar of ``names`` as a stream (``GET /images/get?names=...``)."""
        return self._open("GET", "/images/get" + _query({"names": list(names)}))

    def images_load(self, archive: BinaryIO, *, quiet: bool = False
                    ) -> Iterator[dict[str, Any]]:
        return self._stream("POST", "/images/load" + _query({"quiet": quiet}), archive,
                            "application/x-tar")

    def image_import(self, source: BinaryIO, *, repo: str = "", tag: str = "",
                     changes: Sequence[str] = (), message: str = "",
                     platform: str = "") -> Iterator[dict[str, Any]]:
        q = _query({"fromSrc": "-", "repo": repo, "tag": tag, "changes": list(changes),
                    "message": message, "platform": platform})
        return self._stream("POST", "/images/create" + q, source, "application/x-tar")

    # --- prune of the other kinds (system prune) -------------------------------------------

    def prune(self, kind: str, filters: Filters | None = None) -> dict[str, Any]:
        """``POST /{kind}/prune`` for containers, networks, volumes and build cache."""
        out: dict[str, Any] = self._json("POST", f"/{kind}/prune" + _query({"filters": filters}))
        return out


__all__ = ["CLIENT_API_VERSION", "Client", "StreamError", "json_messages", "message_of",
           "resolve_host"]
