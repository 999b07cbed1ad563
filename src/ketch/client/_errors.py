"""Status codes back to ketch's error kinds (moby's errdefs.FromStatusCode).

The mirror of ``ketch.api.errors``: the daemon's message is kept as is, so
the CLI prints what dockerd's users would read.
"""

from __future__ import annotations

import json

from ketch.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    KetchError,
    NotFound,
    NotModified,
    NotSupported,
    System,
    Unauthorized,
    Unavailable,
)

KIND_OF_STATUS: dict[int, type[KetchError]] = {
    304: NotModified,
    400: InvalidArgument,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    501: NotSupported,
    503: Unavailable,
}


def message_of(body: bytes) -> str:
    """The ``message`` of a JSON error body, else the body's text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    return text


def from_status(status: int, body: bytes) -> KetchError:
    """The error for a non-2xx answer; other 4xx as InvalidArgument, 5xx as System."""
    message = message_of(body) or f"error status {status}"
    kind = KIND_OF_STATUS.get(status)
    if kind is None:
        kind = InvalidArgument if 400 <= status < 500 else System
    return kind(message)
