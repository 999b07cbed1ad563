"""API version negotiation, as dockerd does it.

Clients put the version they speak in the path (``/v1.45/info``) or leave it
out (meaning the current one). dockerd refuses versions outside
[minimum, current] with a 400 whose wording the docker CLI and docker-py show
as is, so the messages here are dockerd's.

Kept free of aiohttp so the rules are unit-testable as plain functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ketch.errors import InvalidArgument

MIN_API_VERSION = "1.24"
CURRENT_API_VERSION = "1.45"

_PREFIX = re.compile(r"^/v([0-9][0-9.]*)(/.*)$")


def parse(version: str) -> tuple[int, ...]:
    """"1.45" -> (1, 45); compared as numbers, since "1.9" < "1.10"."""
    parts = version.split(".")
    if not version or not all(p.isdigit() for p in parts):
        raise InvalidArgument(f"invalid API version: {version!r}")
    return tuple(int(p) for p in parts)


def split_path(path: str) -> tuple[str | None, str]:
    """``/v1.45/info`` -> ("1.45", "/info"); an unversioned path -> (None, path)."""
    m = _PREFIX.match(path)
    if m is None:
        return None, path
    return m.group(1), m.group(2)


def check(version: str | None) -> str:
    """The version a request is served at; dockerd's 400 when it is out of range."""
    if version is None or version == "":
        return CURRENT_API_VERSION
    v = parse(version)
    if v < parse(MIN_API_VERSION):
        raise InvalidArgument(
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version")
    if v > parse(CURRENT_API_VERSION):
        raise InvalidArgument(
            f"client version {version} is too new. Maximum supported API version is "
            f"{CURRENT_API_VERSION}")
    return version


def of(match_info: Mapping[str, str]) -> str:
    """The version a routed request is served at (its ``{version}`` path segment)."""
    return check(match_info.get("version"))


def at_least(version: str, minimum: str) -> bool:
    """For gating response fields by the version the client asked for."""
    return parse(version) >= parse(minimum)
