"""The one place where ketch's error kinds become HTTP status codes.

The table is moby's errdefs/http_helpers.go in spirit: clients (the docker
CLI, docker-py, compose) decide what to do from the status and show the
message, so both must be what dockerd would send. A new kind needs a row here
and in ``ketch.client._errors`` (and a test for both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ketch.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    KetchError,
    NotFound,
    NotModified,
    NotSupported,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("ketch.api")

# Checked in order; subclasses (AlreadyExists, InvalidTransition) inherit their
# parent's row, as moby's interfaces do.
STATUS_OF_KIND: tuple[tuple[type[KetchError], int], ...] = (
    (NotFound, 404),
    (InvalidArgument, 400),
    (Conflict, 409),
    (NotModified, 304),
    (Unauthorized, 401),
    (Forbidden, 403),
    (Unavailable, 503),
    (NotSupported, 501),
)


def status_of(exc: BaseException) -> int:
    """The status dockerd would answer with; 500 for anything unclassified."""
    for kind, status in STATUS_OF_KIND:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(status: int, message: str) -> web.Response:
    """dockerd's error body. 304 carries no body by HTTP's rules."""
    if status == 304:
        return web.Response(status=304)
    # Exactly "application/json", no charset: the docker CLI only decodes the
    # body (and prints just the message) when the header is that string.
    return web.Response(body=json.dumps({"message": message}).encode(), status=status,
                        content_type="application/json")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns every failure into dockerd's shape, including aiohttp's own 404/405."""
    try:
        return await handler(request)
    except KetchError as exc:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(status, exc.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "method not allowed")
    except web.HTTPException as exc:
        return error_response(exc.status, exc.reason.lower())
    except Exception as exc:  # noqa: BLE001 - an unexpected bug still answers as dockerd does
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, str(exc) or type(exc).__name__)
