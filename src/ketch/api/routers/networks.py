"""``/networks``: list, inspect, create, remove, prune, connect and disconnect.

Shapes are moby's api/types/network: a network is ``{Name, Id, Created, Scope,
Driver, EnableIPv6, IPAM, Internal, Attachable, Ingress, ConfigFrom,
ConfigOnly, Containers, Options, Labels}``; ``GET /networks`` lists them with
empty ``Containers``, inspect fills them in. The engine's ``NetworkAPI`` does
the work (``ketch.engine.networks``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ketch.api.routers import add, json_object
from ketch.api.routers.images import parse_filters
from ketch.errors import InvalidArgument


class NetworkObjects:
    """The networks as ``POST /networks/prune`` (the system router's) sees them."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.loop: asyncio.AbstractEventLoop | None = None   # the app's, once it runs

    def disk_usage(self) -> list[dict[str, Any]]:
        return []            # /system/df does not list networks

    def prune(self, filters: Any, options: Any) -> dict[str, Any]:
        """From a worker thread (the ObjectStore way): the work runs on the app's loop."""
        if self.loop is None:
            from ketch.errors import Unavailable

            raise Unavailable("the network store is not running")
        return asyncio.run_coroutine_threadsafe(self.prune_async(filters, options),
                                                self.loop).result()

    async def prune_async(self, filters: Any, options: Any) -> dict[str, Any]:
        deleted = await self.api.prune({k: list(v) for k, v in filters.items()})
        return {"NetworksDeleted": deleted or None}


def _container_of(doc: dict[str, Any]) -> str:
    container = doc.get("Container")
    if not isinstance(container, str) or not container:
        raise InvalidArgument("no container specified")
    return container


def setup(app: web.Application, api: Any) -> None:
    """``api``: a ``ketch.engine.networks.NetworkAPI``; ``POST /networks/prune`` is the
    system router's, over ``NetworkObjects``."""
    from ketch.api.routers import system

    objects = NetworkObjects(api)
    system.stores(app).networks = objects

    async def remember_loop(app: web.Application) -> None:
        objects.loop = asyncio.get_running_loop()

    app.on_startup.append(remember_loop)

    async def list_networks(request: web.Request) -> web.Response:
        filters = parse_filters(request.query.get("filters"))
        return web.json_response(await api.listing({k: list(v) for k, v in filters.items()}))

    async def inspect_network(request: web.Request) -> web.Response:
        scope = request.query.get("scope", "")
        if scope not in ("", "local"):
            from ketch.errors import NotFound

            raise NotFound(f"network {request.match_info['id']} not found")
        return web.json_response(await api.inspect(request.match_info["id"]))

    async def create_network(request: web.Request) -> web.Response:
        doc = json_object(await request.read())
        return web.json_response(await api.create(doc), status=201)

    async def delete_network(request: web.Request) -> web.Response:
        await api.remove(request.match_info["id"])
        return web.Response(status=204)

    async def connect(request: web.Request) -> web.Response:
        doc = json_object(await request.read())
        container = _container_of(doc)
        ep = doc.get("EndpointConfig") or {}
        if not isinstance(ep, dict):
            raise InvalidArgument("invalid JSON: EndpointConfig must be an object")
        await api.connect(request.match_info["id"], container, ep)
        return web.Response(status=200)

    async def disconnect(request: web.Request) -> web.Response:
        doc = json_object(await request.read())
        container = _container_of(doc)
        await api.disconnect(request.match_info["id"], container, bool(doc.get("Force")))
        return web.Response(status=200)

    add(app, "GET", "/networks", list_networks)
    add(app, "POST", "/networks/create", create_network)
    add(app, "GET", "/networks/{id}", inspect_network)
    add(app, "DELETE", "/networks/{id}", delete_network)
    add(app, "POST", "/networks/{id}/connect", connect)
    add(app, "POST", "/networks/{id}/disconnect", disconnect)
