"""The network endpoints of the Engine API, mixed into ``Client``.

Same conventions as the container methods: the API's JSON comes back as
is, a non-2xx answer raises the error kind of its status with the daemon's
message. Names and ids are trimmed and refused when empty before anything
is sent, as moby's client does ("invalid network name or ID: value is
empty"), so the CLI prints that error bare, not as the daemon's.
"""

from __future__ import annotations

from collections.abc import Mapping

from ketch.client._http import quote
from ketch.errors import InvalidArgument

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

    from ketch.client._client import Filters


def _q(params: Mapping[str, Any]) -> str:
    # _client imports this module to mix it in, so its query builder is fetched late.
    from ketch.client._client import _query

    return _query(params)


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def _trim(kind: str, value: str) -> str:
    """moby's trimID: surrounding blanks go; nothing left is the client's own error."""
    value = value.strip()
    if not value:
        exc = InvalidArgument(f"invalid {kind} name or ID: value is empty")
        exc.local = True  # type: ignore[attr-defined]  # found here, not by the daemon
        raise exc
    return value


def _path(network: str) -> str:
    return "/networks/" + quote(_trim("network", network), safe="")


class NetworksMixin:
    """Needs the Client's ``_json``, ``_send`` and ``negotiate``."""

    if TYPE_CHECKING:
        def _send(self, method: str, path: str, body: Any = None) -> bytes: ...
        def _json(self, method: str, path: str, body: Any = None) -> Any: ...
        def negotiate(self) -> str: ...

    def networks(self, filters: Filters | None = None) -> list[dict[str, Any]]:
        """``GET /networks?filters=``: the network summaries, in the daemon's order."""
        out: list[dict[str, Any]] = self._json("GET", "/networks" + _q({"filters": filters}))
        return out or []

    def network_inspect(self, network: str, *, verbose: bool = False,
                        scope: str = "") -> dict[str, Any]:
        q = _q({"verbose": "true" if verbose else "", "scope": scope})
        out: dict[str, Any] = self._json("GET", _path(network) + q)
        return out

    def network_create(self, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /networks/create``: ``options`` are the CreateOptions fields (Driver,
        IPAM, ...); {"Id": ..., "Warning": ...}.

        Daemons before API 1.44 create a second network of the same name unless
        asked not to, so CheckDuplicate goes to them, as docker's client sends it.
        """
        body: dict[str, Any] = {**options, "Name": name}
        if _key(self.negotiate()) < (1, 44):
            body["CheckDuplicate"] = True
        out: dict[str, Any] = self._json("POST", "/networks/create", body)
        return out

    def network_remove(self, network: str) -> None:
        self._send("DELETE", _path(network))

    def network_connect(self, network: str, container: str,
                        endpoint: Mapping[str, Any] | None = None) -> None:
        """``POST /networks/{id}/connect`` with an EndpointSettings (IPAMConfig, Links,
        Aliases, DriverOpts, ...) or none."""
        path = _path(network) + "/connect"
        body = {"Container": _trim("container", container),
                "EndpointConfig": None if endpoint is None else dict(endpoint)}
        self._send("POST", path, body)

    def network_disconnect(self, network: str, container: str, *, force: bool = False) -> None:
        path = _path(network) + "/disconnect"
        self._send("POST", path, {"Container": _trim("container", container), "Force": force})

    def networks_prune(self, filters: Filters | None = None) -> dict[str, Any]:
        """``POST /networks/prune``: {"NetworksDeleted": [names]}."""
        out: dict[str, Any] = self._json("POST", "/networks/prune" + _q({"filters": filters}))
        return out
