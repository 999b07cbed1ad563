"""``GET /containers/{id}/stats`` and ``POST /containers/{id}/update``.

The engine side is ``ketch.engine.stats``: the frames and when they are sent
(stream, one-shot, stopped containers) follow moby's daemon/stats.go, the
update its ContainerUpdate. Frames are written one JSON object per line, each
flushed, as dockerd's encoder does.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from aiohttp import web

from ketch.api import versions
from ketch.api.routers import add
from ketch.api.routers.images import bool_value
from ketch.engine import stats as engine_stats

if TYPE_CHECKING:
    from ketch.engine.containers import Engine


def setup(app: web.Application, engine: Engine) -> None:
    reader = engine_stats.StatsReader(engine)

    async def stats(request: web.Request) -> web.StreamResponse:
        q = request.query
        # ``stream`` defaults to true (moby: a missing value is "stream").
        stream = "stream" not in q or bool_value(q, "stream")
        frames = reader.frames(request.match_info["id"], stream=stream,
                               one_shot=bool_value(q, "one-shot"))
        # The first frame (or its error: "No such container") before any header.
        try:
            first = await anext(frames)
        except StopAsyncIteration:
            return web.json_response({})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await response.write(json.dumps(first).encode() + b"\n")
            async for frame in frames:
                await response.write(json.dumps(frame).encode() + b"\n")
        await frames.aclose()
        return response

    async def update(request: web.Request) -> web.Response:
        body = await request.read()
        warnings = await engine_stats.update(engine, request.match_info["id"], body,
                                             api_version=versions.of(request.match_info))
        return web.json_response({"Warnings": warnings or None})

    add(app, "GET", "/containers/{id}/stats", stats)
    add(app, "POST", "/containers/{id}/update", update)
