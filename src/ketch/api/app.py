"""Builds the aiohttp application: middlewares, then every router.

Each route is registered twice, bare (``/info``) and versioned
(``/v{version}/info``), so aiohttp's own router does the matching and an
unknown path under any prefix is a plain 404, as with dockerd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ketch.api import versions
from ketch.api.errors import Handler, error_middleware
from ketch.api.routers import images, system

if TYPE_CHECKING:
    from ketch.api.routers.build import BuildBackend
    from ketch.engine.containers import Engine
    from ketch.engine.distribution import Distribution
    from ketch.engine.events import EventBus


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses versions dockerd would refuse, before any handler runs.

    Handlers that gate fields read the version again with ``versions.of``
    (cheap), rather than from request storage, which aiohttp wants typed keys for.
    """
    versions.check(request.match_info.get("version"))
    return await handler(request)


def make_app(system_backend: system.SystemBackend,
             image_backend: images.ImageBackend | None = None,
             engine: Engine | None = None,
             events: EventBus | None = None,
             distribution: Distribution | None = None,
             builder: BuildBackend | None = None) -> web.Application:
    """The Engine API application over the given backends.

    Without an image backend the ``/images`` routes are absent (404), as for
    any area ketchd does not serve.
    """
    app = web.Application(middlewares=[error_middleware, version_middleware])
    system.setup(app, system_backend)
    if image_backend is not None:
        images.setup(app, image_backend)
    if distribution is not None:
        from ketch.api.routers import distribution as distribution_router

        distribution_router.setup(app, distribution)
    if engine is not None:
        from ketch.api.routers import container_files, container_stats, containers, volumes

        containers.setup(app, engine)
        container_files.setup(app, engine)
        container_stats.setup(app, engine)
        volumes.setup(app, engine.volumes, in_use=engine.volume_users)
        from ketch.api.routers import networks
        from ketch.engine.networks import NetworkAPI

        networks.setup(app, NetworkAPI(engine, events.log if events is not None else None))
    if builder is not None:
        # Without a builder /build stays unrouted (404), as any area ketchd does not serve.
        from ketch.api.routers import build

        build.setup(app, builder)
    if events is not None:
        from ketch.api.routers import events as events_router

        events_router.setup(app, events)
    return app
