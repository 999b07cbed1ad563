"""Routers, one per area of the Engine API, each with the backend Protocol it needs."""

from __future__ import annotations

from aiohttp import web

from ketch.api.errors import Handler

VERSIONED = "/v{version:[0-9][0-9.]*}"


def add(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Registers ``path`` bare and under the ``/v1.xx`` prefix."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, VERSIONED + path, handler)
