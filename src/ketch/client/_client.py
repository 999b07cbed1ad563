"""A small Engine API client: negotiate once, then versioned requests.

    c = Client()          # host from KETCH_HOST / DOCKER_HOST / the default
    c.version()           # pings first, then GET /v1.45/version
    c.info()

Like the docker CLI, it pings to learn the daemon's API version and speaks
the lower of that and its own, so a newer CLI works with an older daemon.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ketch.client._errors import from_status
from ketch.client._transport import DEFAULT_HOST, HTTPTransport, Request, Transport
from ketch.errors import System

CLIENT_API_VERSION = "1.45"


def resolve_host(flag: str | None = None, environ: dict[str, str] | None = None) -> str:
    """``--host``, then ``KETCH_HOST``, then ``DOCKER_HOST``, then the default socket."""
    env = os.environ if environ is None else environ
    return flag or env.get("KETCH_HOST") or env.get("DOCKER_HOST") or DEFAULT_HOST


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


class Client:
    def __init__(self, host: str | None = None, *, transport: Transport | None = None,
                 version: str | None = None) -> None:
        self.host = resolve_host(host)
        self.transport: Transport = transport or HTTPTransport(self.host)
        self._version = version

    def _send(self, method: str, path: str, body: Any = None) -> bytes:
        headers = {"User-Agent": "ketch-cli"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        resp = self.transport.request(Request(method, path, headers, data))
        if not 200 <= resp.status < 300:
            raise from_status(resp.status, resp.body)
        return resp.body

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        raw = self._send(method, self._versioned(path), body)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise System(f"the daemon's answer to {path} is not JSON: {raw[:200]!r}") from exc

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
