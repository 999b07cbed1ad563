"""The volume endpoints of the Engine API, mixed into ``Client``."""

from __future__ import annotations

from collections.abc import Mapping

from ketch.client._http import quote

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

    from ketch.client._client import Filters


def _path(name: str) -> str:
    return "/volumes/" + quote(name, safe="")


class VolumesMixin:
    """Needs the Client's ``_json`` and ``_send``."""

    if TYPE_CHECKING:
        def _send(self, method: str, path: str, body: Any = None) -> bytes: ...
        def _json(self, method: str, path: str, body: Any = None) -> Any: ...

    def volumes(self, filters: Filters | None = None) -> list[dict[str, Any]]:
        from ketch.client._client import _query

        doc = self._json("GET", "/volumes" + _query({"filters": filters}))
        out: list[dict[str, Any]] = (doc or {}).get("Volumes") or []
        return out

    def volume_inspect(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", _path(name))
        return out

    def volume_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /volumes/create`` with Name, Driver, DriverOpts, Labels."""
        out: dict[str, Any] = self._json("POST", "/volumes/create", dict(body))
        return out

    def volume_remove(self, name: str, *, force: bool = False) -> None:
        self._send("DELETE", _path(name) + ("?force=1" if force else ""))
