"""The distribution spec's error codes, each with its HTTP status, and the JSON body clients read.

Clients (docker, skopeo, containerd) decide what to do from the code and the
status, and print the message, so both are the spec's (OCI distribution v1.1
"Error Codes") and the messages are the ones Docker's registry sends. A handler
raises ``RegistryError(BLOB_UNKNOWN, detail=...)``; the app turns it into::

    HTTP/1.1 404 Not Found
    {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": ...}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One code of the spec: its name, the status it goes with, its default message."""

    code: str
    status: int
    message: str


BLOB_UNKNOWN = ErrorCode("BLOB_UNKNOWN", 404, "blob unknown to registry")
BLOB_UPLOAD_INVALID = ErrorCode("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
BLOB_UPLOAD_UNKNOWN = ErrorCode("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
DIGEST_INVALID = ErrorCode("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
MANIFEST_BLOB_UNKNOWN = ErrorCode("MANIFEST_BLOB_UNKNOWN", 400, "blob unknown to registry")
MANIFEST_INVALID = ErrorCode("MANIFEST_INVALID", 400, "manifest invalid")
MANIFEST_UNKNOWN = ErrorCode("MANIFEST_UNKNOWN", 404, "manifest unknown")
NAME_INVALID = ErrorCode("NAME_INVALID", 400, "invalid repository name")
NAME_UNKNOWN = ErrorCode("NAME_UNKNOWN", 404, "repository name not known to registry")
SIZE_INVALID = ErrorCode("SIZE_INVALID", 400, "provided length did not match content length")
TAG_INVALID = ErrorCode("TAG_INVALID", 400, "manifest tag did not match URI")
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", 401, "authentication required")
DENIED = ErrorCode("DENIED", 403, "requested access to the resource is denied")
UNSUPPORTED = ErrorCode("UNSUPPORTED", 405, "The operation is unsupported.")
TOOMANYREQUESTS = ErrorCode("TOOMANYREQUESTS", 429, "too many requests")
# Not in the spec's table, but sent by Docker's registry and understood by clients.
RANGE_INVALID = ErrorCode("RANGE_INVALID", 416, "invalid content range")
PAGINATION_NUMBER_INVALID = ErrorCode("PAGINATION_NUMBER_INVALID", 400,
                                      "invalid number of results requested")
UNKNOWN = ErrorCode("UNKNOWN", 500, "unknown error")

ALL_CODES: tuple[ErrorCode, ...] = (
    BLOB_UNKNOWN, BLOB_UPLOAD_INVALID, BLOB_UPLOAD_UNKNOWN, DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN, MANIFEST_INVALID, MANIFEST_UNKNOWN, NAME_INVALID, NAME_UNKNOWN,
    SIZE_INVALID, TAG_INVALID, UNAUTHORIZED, DENIED, UNSUPPORTED, TOOMANYREQUESTS,
    RANGE_INVALID, PAGINATION_NUMBER_INVALID, UNKNOWN,
)


class RegistryError(Exception):
    """A failure the client is told about with a spec error code.

    ``status`` overrides the code's usual one where the spec asks for another
    (an oversized manifest is SIZE_INVALID with 413); ``headers`` go on the
    response (``WWW-Authenticate`` on a 401, ``Range`` on a 416).
    """

    def __init__(self, code: ErrorCode, message: str | None = None, detail: Any = None, *,
                 status: int | None = None, headers: dict[str, str] | None = None,
                 more: list[tuple[ErrorCode, str, Any]] | None = None) -> None:
        self.code = code
        self.message = message if message is not None else code.message
        self.detail = detail
        self.status = status if status is not None else code.status
        self.headers = dict(headers or {})
        self.more = list(more or [])    # further errors of the same answer (each missing blob)
        super().__init__(f"{code.code}: {self.message}")

    def body(self) -> bytes:
        return error_body([(self.code.code, self.message, self.detail),
                           *((c.code, m, d) for c, m, d in self.more)])


def error_body(errors: list[tuple[str, str, Any]]) -> bytes:
    """``{"errors": [{"code", "message", "detail"}]}``; ``detail`` only when there is one."""
    out = []
    for code, message, detail in errors:
        item: dict[str, Any] = {"code": code, "message": message}
        if detail is not None:
            item["detail"] = detail
        out.append(item)
    return json.dumps({"errors": out}).encode()
