"""``/volumes``: create, list, inspect, remove; prune and ``/system/df`` through the stores seam.

Shapes are moby's api/types/volume (Engine API 1.45): a volume is
``{CreatedAt, Driver, Labels, Mountpoint, Name, Options, Scope}`` with null
Labels and Options when empty, and ``GET /volumes`` answers
``{"Volumes": [...], "Warnings": null}``. ``POST /volumes/prune`` and the
volumes of ``GET /system/df`` are served by the system router over
``system.stores(app).volumes``, which ``setup`` fills with this store.

Which containers use a volume is the engine's answer (``in_use``: name ->
container ids); the store itself only knows its own mount references.
Store calls touch disk and SQLite, so they run in a worker thread.

The lead wires it in ``make_app``::

    volumes.setup(app, VolumeStore(root), in_use=engine.volume_users)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ketch.api.routers import add, json_object
from ketch.api.routers.images import bool_value, parse_filters
from ketch.errors import InvalidArgument, NotFound, Unavailable
from ketch.volume.store import VolumeStore

InUse = Callable[[str], Sequence[str]]

SWARM_ONLY = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm '
              'join" to connect this node to swarm and try again.')


def no_users(name: str) -> Sequence[str]:
    return ()


@dataclass(frozen=True, slots=True)
class VolumeObjects:
    """The store as ``/system/df`` and ``POST /volumes/prune`` see it (system.ObjectStore)."""

    store: VolumeStore
    in_use: InUse

    def disk_usage(self) -> list[dict[str, Any]]:
        return self.store.disk_usage(self.in_use)

    def prune(self, filters: Any, options: Any) -> dict[str, Any]:
        from ketch.api import versions

        # Before API 1.42 prune removed every unused volume; since, only anonymous
        # ones unless the "all" filter says otherwise (moby's router adds all=true
        # for the older clients).
        old = not versions.at_least(options.api_version, "1.42")
        return self.store.prune(filters, users=self.in_use, all_volumes=old)


def _str_map(doc: dict[str, Any], key: str) -> dict[str, str] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"invalid JSON: {key} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def setup(app: web.Application, store: VolumeStore, in_use: InUse | None = None) -> None:
    """Adds the volume routes over ``store``; ``in_use`` names the containers using a volume."""
    users: InUse = in_use or no_users

    async def list_volumes(request: web.Request) -> web.Response:
        filters = parse_filters(request.query.get("filters"))
        vols = await asyncio.to_thread(store.list_volumes, filters, users=users)
        return web.json_response({"Volumes": [v.to_json() for v in vols], "Warnings": None})

    async def create_volume(request: web.Request) -> web.Response:
        doc = json_object(await request.read())
        if doc.get("ClusterVolumeSpec") is not None:
            raise Unavailable(SWARM_ONLY)
        name = doc.get("Name") or ""
        driver = doc.get("Driver") or ""
        if not isinstance(name, str) or not isinstance(driver, str):
            raise InvalidArgument("invalid JSON: Name and Driver must be strings")
        v = await asyncio.to_thread(store.create, name, driver, _str_map(doc, "DriverOpts"),
                                    _str_map(doc, "Labels"))
        return web.json_response(v.to_json(), status=201)

    async def inspect_volume(request: web.Request) -> web.Response:
        v = await asyncio.to_thread(store.get, request.match_info["name"])
        return web.json_response(v.to_json())

    async def delete_volume(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        force = bool_value(request.query, "force")

        def remove() -> None:
            try:
                store.remove(name, users=list(users(name)))
            except NotFound:
                if not force:  # -f: a missing volume is not an error (moby's router)
                    raise

        await asyncio.to_thread(remove)
        return web.Response(status=204)

    # /system/df and POST /volumes/prune (registered by the system router) use this store.
    from ketch.api.routers import system

    system.stores(app).volumes = VolumeObjects(store, users)
    add(app, "GET", "/volumes", list_volumes)
    add(app, "POST", "/volumes/create", create_volume)
    add(app, "GET", "/volumes/{name}", inspect_volume)
    add(app, "DELETE", "/volumes/{name}", delete_volume)
