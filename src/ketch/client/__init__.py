"""Engine API client over AF_UNIX/TCP with the stdlib, for the CLI and compose."""

from __future__ import annotations

from ketch.client._client import (
    CLIENT_API_VERSION,
    Client,
    StreamError,
    json_messages,
    resolve_host,
)
from ketch.client._errors import from_status
from ketch.client._stream import Demuxer
from ketch.client._transport import (
    DEFAULT_HOST,
    FakeTransport,
    HTTPTransport,
    Request,
    Response,
    StreamResponse,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.client._transport import Transport

__all__ = [
    "CLIENT_API_VERSION",
    "DEFAULT_HOST",
    "Client",
    "Demuxer",
    "FakeTransport",
    "HTTPTransport",
    "Request",
    "Response",
    "StreamError",
    "StreamResponse",
    "Transport",  # for type checkers only: a Protocol, and typing stays out of the CLI
    "from_status",
    "json_messages",
    "resolve_host",
]
