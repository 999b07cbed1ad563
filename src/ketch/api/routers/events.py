"""``GET /events``: the daemon's event stream (moby's api/server/router/system getEvents).

    since/until   Unix times ("1700000000.5"; the CLI turns "10m" into one): the
                  buffered events in that window come first; with ``until`` in the
                  past the answer ends there, in the future it ends at ``until``
    filters       container, event, image, label, type, ... (``ketch.engine.events``)

One JSON object per event, each flushed as it happens, until the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from ketch.api.routers import add
from ketch.api.routers.images import parse_filters
from ketch.engine.events import EventBus, Message
from ketch.errors import InvalidArgument
from ketch.filters import parse_timestamps


def event_time(value: str) -> int:
    """moby's eventTime: "" -> 0 (not given), else the Unix time in nanoseconds."""
    if not value:
        return 0
    try:
        secs, nanos = parse_timestamps(value)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if secs == -1 and nanos == 0:
        return 0
    return secs * 1_000_000_000 + nanos


def setup(app: web.Application, bus: EventBus) -> None:
    async def events(request: web.Request) -> web.StreamResponse:
        q = request.query
        since = event_time(q.get("since", ""))
        until = event_time(q.get("until", ""))
        if until and until < since:
            raise InvalidArgument(f"`since` time ({q.get('since', '')}) cannot be after "
                                  f"`until` time ({q.get('until', '')})")
        filters = parse_filters(q.get("filters"))
        now = time.time_ns()
        only_past = bool(until) and until < now
        buffered, sub = bus.subscribe(since, until, filters)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)

            async def send(doc: dict[str, object]) -> None:
                await response.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")

            with contextlib.suppress(ConnectionResetError):
                for m in buffered:
                    await send(m.to_json())
                if only_past:
                    return response
                deadline = until / 1e9 if until else None
                while True:
                    left = None if deadline is None else deadline - time.time()
                    if left is not None and left <= 0:
                        break
                    # A client that hung up is noticed within a second even when no
                    # event comes (aiohttp does not cancel the handler for it).
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    nxt: Message | None
                    try:
                        nxt = await asyncio.wait_for(sub.get(), min(left or 1.0, 1.0))
                    except TimeoutError:
                        continue
                    if nxt is None:
                        break
                    await send(nxt.to_json())
            return response
        finally:
            sub.close()

    add(app, "GET", "/events", events)
