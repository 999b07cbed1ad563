"""WWW-Authenticate challenges (RFC 7235) as registries send them.

A registry answers 401 with one or more challenges, in one header or several:

    WWW-Authenticate: Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"
    WWW-Authenticate: Basic realm="registry", Bearer realm="...",error="invalid_token"

Each challenge is a scheme and either comma-separated ``name=value``
parameters (values are tokens or quoted strings with backslash escapes) or a
token68. Parsing is lenient where servers are sloppy (spaces around ``=``,
empty list elements), since a rejected challenge would stop a pull.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

_TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHAR | set("/=")


@dataclass(frozen=True)
class Challenge:
    """One challenge: the scheme lowercased (``bearer``, ``basic``) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str = ""

    def get(self, name: str, default: str = "") -> str:
        return self.params.get(name, default)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def token(self, chars: set[str] = _TCHAR) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] in chars:
            self.i += 1
        return self.s[start:self.i]

    def quoted(self) -> str:
        """A quoted-string after its opening quote; an unterminated one runs to the end."""
        out = []
        self.i += 1
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\\" and self.i + 1 < len(self.s):
                out.append(self.s[self.i + 1])
                self.i += 2
                continue
            self.i += 1
            if c == '"':
                break
            out.append(c)
        return "".join(out)

    def at_param(self) -> bool:
        """Does a ``name=`` (a parameter, not a new challenge's scheme) start here?"""
        save = self.i
        name = self.token()
        self.skip_ws()
        is_param = bool(name) and self.peek() == "="
        if is_param:
            # "abc==" is a token68 ending in padding, not a parameter "abc".
            self.i += 1
            self.skip_ws()
            is_param = self.peek() not in ("", "=", ",")
        self.i = save
        return is_param


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Every challenge in the given WWW-Authenticate header values, in order."""
    out: list[Challenge] = []
    for header in headers:
        out.extend(_parse_one(header))
    return out


def _parse_one(header: str) -> list[Challenge]:
    sc = _Scanner(header)
    out: list[Challenge] = []
    while True:
        sc.skip_ws()
        while sc.peek() == ",":
            sc.i += 1
            sc.skip_ws()
        if not sc.peek():
            return out
        scheme = sc.token()
        if not scheme:
            # Garbage where a scheme should be: skip to the next comma.
            while sc.peek() and sc.peek() != ",":
                sc.i += 1
            continue
        params: dict[str, str] = {}
        token68 = ""
        sc.skip_ws()
        # token68 form: "Scheme abc123==" (no "name=" inside).
        if sc.peek() and sc.peek() != "," and not sc.at_param():
            token68 = sc.token(_TOKEN68)
            sc.skip_ws()
        while True:
            sc.skip_ws()
            while sc.peek() == ",":
                sc.i += 1
                sc.skip_ws()
            if not sc.peek() or not sc.at_param():
                break
            name = sc.token().lower()
            sc.skip_ws()
            sc.i += 1  # "="
            sc.skip_ws()
            value = sc.quoted() if sc.peek() == '"' else sc.token()
            params.setdefault(name, value)
        out.append(Challenge(scheme.lower(), params, token68))


def parse_link_next(header: str) -> str | None:
    """The target of ``rel="next"`` in an RFC 8288 Link header (tags/catalog pagination)."""
    for part in header.split(","):
        url, _, attrs = part.partition(";")
        url = url.strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        for attr in attrs.split(";"):
            key, _, value = attr.strip().partition("=")
            if key.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return url[1:-1]
    return None
