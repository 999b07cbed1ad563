"""Registry error answers -> ketch.errors kinds, worded as Docker's client words them.

A registry explains a failure in a JSON body (distribution spec "Error
Codes")::

    {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {...}}]}

Docker prints each as ``<code in lower case, words>: <message>`` ("manifest
unknown: manifest unknown"), several as "errors:" and one per line, and an
answer without a usable body as "received unexpected HTTP status: 500
Internal Server Error". The exception kind comes from the code first (a 404
may still say DENIED) and the HTTP status second; the exceptions also carry
the status and the parsed errors, for callers that decide by code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ketch.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    KetchError,
    NotFound,
    NotSupported,
    Unauthorized,
    Unavailable,
)
from ketch.registry.client.challenge import Challenge

# The spec's default messages, for answers that name a code but no message.
CODE_MESSAGES = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "MANIFEST_UNVERIFIED": "manifest failed signature verification",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "TAG_INVALID": "manifest tag did not match URI",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "The operation is unsupported.",
    "TOOMANYREQUESTS": "too many requests",
    "UNAVAILABLE": "service unavailable",
}


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of a registry's ``errors`` array."""

    code: str
    message: str
    detail: Any = None

    def __str__(self) -> str:
        # errcode.Error.Error(): the code as lower-case words, then the message.
        return f"{self.code.lower().replace('_', ' ')}: {self.message}"


class RegistryError(KetchError):
    """Mixed into each kind below: the HTTP status and the registry's errors."""

    status: int = 0
    errors: tuple[ErrorDetail, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.errors)


class RegistryNotFound(NotFound, RegistryError):
    pass


class RegistryUnauthorized(Unauthorized, RegistryError):
    pass


class RegistryForbidden(Forbidden, RegistryError):
    pass


class RegistryInvalid(InvalidArgument, RegistryError):
    pass


class RegistryNotSupported(NotSupported, RegistryError):
    pass


class RegistryConflict(Conflict, RegistryError):
    pass


class RegistryUnavailable(Unavailable, RegistryError):
    pass


_BY_CODE: dict[str, type[RegistryError]] = {
    "UNAUTHORIZED": RegistryUnauthorized,
    "DENIED": RegistryForbidden,
    "MANIFEST_UNKNOWN": RegistryNotFound,
    "NAME_UNKNOWN": RegistryNotFound,
    "BLOB_UNKNOWN": RegistryNotFound,
    "BLOB_UPLOAD_UNKNOWN": RegistryNotFound,
    "UNSUPPORTED": RegistryNotSupported,
    "TOOMANYREQUESTS": RegistryUnavailable,
    "UNAVAILABLE": RegistryUnavailable,
}


def _kind_for_status(status: int) -> type[RegistryError]:
    if status == 401:
        return RegistryUnauthorized
    if status == 403:
        return RegistryForbidden
    if status == 404:
        return RegistryNotFound
    if status == 405:
        return RegistryNotSupported
    if status == 409:
        return RegistryConflict
    if status == 429 or status >= 500:
        return RegistryUnavailable
    return RegistryInvalid


def parse_errors(body: bytes) -> list[ErrorDetail] | None:
    """The ``errors`` of a body, or None when it is not the spec's error JSON."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
        return None
    out = []
    for item in doc["errors"]:
        if not isinstance(item, dict):
            continue
        code = str(item.get("code") or "UNKNOWN").upper()
        message = item.get("message")
        if not isinstance(message, str) or not message:
            message = CODE_MESSAGES.get(code, "unknown error")
        out.append(ErrorDetail(code, message, item.get("detail")))
    return out


def errors_text(errors: Iterable[ErrorDetail]) -> str:
    """errcode.Errors.Error(): one error as is, several under "errors:"."""
    items = list(errors)
    if len(items) == 1:
        return str(items[0])
    return "errors:\n" + "".join(f"{e}\n" for e in items)


def status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def error_from_response(status: int, body: bytes, challenges: Sequence[Challenge] = (),
                        context: str = "") -> RegistryError:
    """The exception for a registry's error answer, ``context: `` prefixed when given.

    As distribution's client: a bearer challenge's ``error`` parameter
    (invalid_token, insufficient_scope) is the first error; a 401 without a
    parsable body is "unauthorized: authentication required"; other
    unparsable answers name their status.
    """
    errors: list[ErrorDetail] = []
    if status == 401:
        for c in challenges:
            if c.scheme != "bearer":
                continue
            code = {"invalid_token": "UNAUTHORIZED", "insufficient_scope": "DENIED"}.get(c.get("error"))
            if code is not None:
                errors.append(ErrorDetail(code, c.get("error_description") or CODE_MESSAGES[code]))
                break
    parsed = parse_errors(body) if 400 <= status < 500 or body[:1] == b"{" else None
    if parsed:
        errors.extend(parsed)
    if not errors and status == 401:
        details = _details(body)
        errors.append(ErrorDetail("UNAUTHORIZED", details or CODE_MESSAGES["UNAUTHORIZED"]))
    kind: type[RegistryError]
    if errors:
        kind = _BY_CODE.get(errors[0].code) or _kind_for_status(status)
        text = errors_text(errors)
    else:
        kind = _kind_for_status(status)
        if 400 <= status < 500:
            text = _unparsable(status, body)
        else:
            text = f"received unexpected HTTP status: {status_text(status)}"
    exc = kind(f"{context}: {text}" if context else text)
    exc.status = status
    exc.errors = tuple(errors)
    return exc


def _details(body: bytes) -> str:
    """The ``{"details": "..."}`` some token servers answer 401 with."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return ""
    return doc.get("details", "") if isinstance(doc, dict) and isinstance(doc.get("details"), str) else ""


def _unparsable(status: int, body: bytes) -> str:
    text = body[:512].decode("utf-8", "replace")
    parsed = parse_errors(body)
    if parsed is not None:
        reason = "no error details found in HTTP response body"
    else:
        try:
            json.loads(body)
            reason = "no error details found in HTTP response body"
        except (UnicodeDecodeError, ValueError):
            reason = _go_json_error(text)
    return f"error parsing HTTP {status} response body: {reason}: {json.dumps(text)}"


def _go_json_error(text: str) -> str:
    """encoding/json's complaint about a body that is not JSON (its usual first one)."""
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        return "unexpected end of JSON input"
    c = stripped[0]
    if c in '{["-0123456789tfn':
        return "invalid JSON"
    return f"invalid character {c!r} looking for beginning of value"
