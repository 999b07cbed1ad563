"""Routers, one per area of the Engine API, each with the backend Protocol it needs."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ketch.api.errors import Handler
from ketch.errors import InvalidArgument

VERSIONED = "/v{version:[0-9][0-9.]*}"


def add(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Registers ``path`` bare and under the ``/v1.xx`` prefix."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, VERSIONED + path, handler)


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; an empty body is an empty object,
    as moby's routers read it."""
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid JSON: the body must be an object")
    return doc
