"""The registry endpoints of the Engine API, mixed into ``Client``.

Pull and push answer with a JSON message stream (one object per line, the
progress of every layer); the credentials travel in the ``X-Registry-Auth``
header (base64url JSON, ``ketch.cli.credentials.AuthConfig.encode``), never
in the query, as the docker CLI sends them. The daemon does the registry
work; these methods only ask, and hand the messages over as they arrive.
"""

from __future__ import annotations

from ketch.client._http import form_encode, quote
from ketch.client._transport import Request
from ketch.errors import InvalidArgument

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import Any

    from ketch.client._transport import StreamResponse, Transport

AUTH_HEADER = "X-Registry-Auth"


def _q(params: Mapping[str, Any]) -> str:
    # _client imports this module to mix it in, so its query builder is fetched late.
    from ketch.client._client import _query

    return _query(params)


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def require_api(version: str, needed: str, feature: str) -> None:
    """docker's NewVersionError, word for word (scripts match it), raised as the client's
    own refusal: nothing was sent."""
    if _key(version) < _key(needed):
        exc = InvalidArgument(f'"{feature}" requires API version {needed}, but the '
                              f"Docker daemon API version is {version}")
        exc.local = True  # type: ignore[attr-defined]
        raise exc


class RegistryMixin:
    """Needs the Client's ``transport``, ``_json``, ``_versioned`` and ``negotiate``."""

    if TYPE_CHECKING:
        transport: Transport

        def _json(self, method: str, path: str, body: Any = None) -> Any: ...
        def _versioned(self, path: str) -> str: ...
        def negotiate(self) -> str: ...

    def _registry_open(self, method: str, path: str, auth: str) -> StreamResponse:
        """A streamed request with the credentials header; non-2xx raised with the daemon's
        message (401 as Unauthorized, so the CLI can ask for credentials and retry)."""
        from ketch.client._errors import from_status

        headers = {"User-Agent": "ketch-cli"}
        if auth:
            headers[AUTH_HEADER] = auth
        resp = self.transport.open(Request(method, self._versioned(path), headers, None))
        if not 200 <= resp.status < 300:
            try:
                raw = resp.read()
            finally:
                resp.close()
            exc = from_status(resp.status, raw)
            # a 503 is the daemon's answer (no registry reachable), not a daemon that cannot
            # be reached, though both are Unavailable: the CLI words them differently
            exc.daemon_status = resp.status  # type: ignore[attr-defined]
            raise exc
        return resp

    def _registry_stream(self, method: str, path: str, auth: str
                         ) -> Iterator[dict[str, Any]]:
        from ketch.client._client import json_messages

        resp = self._registry_open(method, path, auth)
        try:
            yield from json_messages(resp)
        finally:
            resp.close()

    def image_pull(self, name: str, tag: str = "", *, platform: str = "",
                   auth: str = "") -> Iterator[dict[str, Any]]:
        """``POST /images/create?fromImage=&tag=&platform=``: ``name`` is the repository (a
        full name, as docker sends it), ``tag`` a tag or a digest; none pulls every tag.

        The request goes out before the first message is read (the 404 or 401 of a refused
        pull is raised here, not on the first ``next``)."""
        q = _q({"fromImage": name, "tag": tag, "platform": platform.lower()})
        resp = self._registry_open("POST", "/images/create" + q, auth)
        return _messages(resp)

    def image_push(self, name: str, tag: str = "", *, platform: Mapping[str, str] | None = None,
                   auth: str = "") -> Iterator[dict[str, Any]]:
        """``POST /images/{name}/push?tag=``; ``tag`` empty pushes every tag of ``name``.
        ``platform`` (an OCI platform object, sent as JSON) needs API 1.46, as in docker."""
        query: dict[str, Any] = {"tag": tag}
        if platform:
            require_api(self.negotiate(), "1.46", "--platform")
            import json

            query["platform"] = json.dumps(dict(platform), separators=(",", ":"))
        path = "/images/" + quote(name, safe="/:@") + "/push" + _q(query)
        return _messages(self._registry_open("POST", path, auth))

    def registry_login(self, auth: Mapping[str, str]) -> dict[str, Any]:
        """``POST /auth``: {"Status": "Login Succeeded", "IdentityToken": "..."}."""
        out: dict[str, Any] = self._json("POST", "/auth", dict(auth))
        return out

    def distribution_inspect(self, name: str, *, auth: str = "") -> dict[str, Any]:
        """``GET /distribution/{name}/json``: the registry's descriptor and platforms."""
        import json

        resp = self._registry_open("GET", "/distribution/" + quote(name, safe="/:@") + "/json",
                                   auth)
        try:
            raw = resp.read()
        finally:
            resp.close()
        out: dict[str, Any] = json.loads(raw)
        return out

    def image_search(self, term: str, *, limit: int = 0,
                     filters: Mapping[str, Sequence[str]] | None = None,
                     auth: str = "") -> list[dict[str, Any]]:
        """``GET /images/search?term=&limit=&filters=``; filters go in docker's map form
        ({"is-official": {"true": true}}), which every daemon version reads."""
        import json

        pairs = [("term", term)]
        if limit:
            pairs.append(("limit", str(limit)))
        if filters:
            pairs.append(("filters", json.dumps(
                {k: dict.fromkeys(v, True) for k, v in filters.items()}, separators=(",", ":"))))
        q = "?" + form_encode(pairs)
        resp = self._registry_open("GET", "/images/search" + q, auth)
        try:
            raw = resp.read()
        finally:
            resp.close()
        out: list[dict[str, Any]] = json.loads(raw) or []
        return out


def _messages(resp: StreamResponse) -> Iterator[dict[str, Any]]:
    from ketch.client._client import json_messages

    try:
        yield from json_messages(resp)
    finally:
        resp.close()


__all__ = ["AUTH_HEADER", "RegistryMixin", "require_api"]
