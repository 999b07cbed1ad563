"""Registry authentication: Basic, and Bearer tokens fetched, cached and refreshed.

The dance Docker does (distribution's auth package), reproduced:

1. ``GET /v2/`` (the ping) answers 401 with challenges, or 200 (no auth).
2. For a Bearer challenge, a token for the operation's scopes
   (``repository:library/busybox:pull``) comes from the challenge's realm:
   ``GET realm?service=..&scope=..`` with the user's password as Basic auth
   (anonymous without one), or, when the credentials hold an identity token
   (an OAuth refresh token from an earlier login), ``POST realm`` with
   ``grant_type=refresh_token``. A Basic challenge is answered with the
   password directly, on every request.
3. Tokens are cached per (realm, service, scopes, user) until shortly before
   they expire; a 401 with ``error="invalid_token"`` drops the cached token,
   ``insufficient_scope`` adds the scope the server asked for, and the
   request is retried once.

Everything here is shared by threads: the cache is locked, and a token being
fetched is fetched once while other threads wanting it wait.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from ketch.errors import InvalidArgument, Unauthorized, Unavailable
from ketch.registry.client.challenge import Challenge, parse_challenges
from ketch.registry.client.errors import error_from_response
from ketch.registry.client.options import Credentials
from ketch.registry.client.transport import Body, Transport

# distribution's minimum token lifetime: shorter ones are treated as 60 s.
MIN_TOKEN_LIFETIME = 60.0
# Refresh this long before expiry, so a token does not expire in flight.
EXPIRY_MARGIN = 10.0
CLIENT_ID = "ketch"
MAX_TOKEN_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float
    refresh_token: str = ""

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - EXPIRY_MARGIN


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def merge_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """One scope per resource with its actions united, in a stable order.

    ``repository:a:pull`` + ``repository:a:push`` -> ``repository:a:pull,push``:
    token servers grant per scope string, and duplicates would make the
    cache key differ for the same access.
    """
    merged: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        for one in scope.split(" "):
            kind, _, rest = one.partition(":")
            name, _, actions = rest.rpartition(":")
            if not name:
                merged.setdefault((kind, rest), [])
                continue
            have = merged.setdefault((kind, name), [])
            for action in actions.split(","):
                if action and action not in have:
                    have.append(action)
    return tuple(sorted(f"{k}:{n}:{','.join(sorted(a))}" if a else f"{k}:{n}"
                        for (k, n), a in merged.items()))


class TokenCache:
    """Tokens by (realm, service, scopes, identity); one fetch per key at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], Token] = {}
        self._fetching: dict[tuple[str, ...], threading.Lock] = {}

    def get(self, key: tuple[str, ...]) -> Token | None:
        with self._lock:
            token = self._tokens.get(key)
        return token if token is not None and token.fresh(time.monotonic()) else None

    def put(self, key: tuple[str, ...], token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def drop(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(key, None)

    def fetch_lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._lock:
            return self._fetching.setdefault(key, threading.Lock())


def _identity(creds: Credentials) -> str:
    basic = creds.basic()
    if creds.identity_token:
        return "identity:" + creds.identity_token
    if basic is not None:
        return f"basic:{basic[0]}:{basic[1]}"
    return "anonymous"


def fetch_token(transport: Transport, challenge: Challenge, scopes: Sequence[str],
                creds: Credentials, verify: bool, context: str,
                offline: bool = False) -> Token:
    """Ask the challenge's realm for a token; errors are prefixed with ``context``.

    ``context`` names the registry request the token is for (``Get
    "https://host/v2/"``): Docker reports token failures under it.
    """
    realm = challenge.get("realm")
    if not realm:
        raise InvalidArgument(f"{context}: no realm specified for token auth challenge")
    parts = urllib.parse.urlsplit(realm)
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(f"{context}: invalid token auth challenge realm: {realm}")
    service = challenge.get("service")
    basic = creds.basic()
    headers = {"Accept": "application/json"}
    if creds.identity_token:
        form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                "client_id": CLIENT_ID}
        if service:
            form["service"] = service
        if scopes:
            form["scope"] = " ".join(scopes)
        if offline:
            form["access_type"] = "offline"
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        resp = transport.request("POST", realm, headers, Body.of(data), verify=verify)
    else:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if service:
            query.append(("service", service))
        query.extend(("scope", s) for s in scopes)
        if basic is not None:
            query.append(("account", basic[0]))
            headers["Authorization"] = basic_header(*basic)
        if offline:
            query.extend([("offline_token", "true"), ("client_id", CLIENT_ID)])
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        resp = transport.request("GET", url, headers, verify=verify)
    with resp:
        body = resp.read(MAX_TOKEN_RESPONSE)
        if resp.status != 200:
            raise error_from_response(resp.status, body,
                                      parse_challenges(resp.header_all("WWW-Authenticate")),
                                      context=context)
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise Unavailable(f"{context}: unable to decode token response: {body[:200]!r}") from None
    if not isinstance(doc, dict):
        raise Unavailable(f"{context}: unable to decode token response")
    value = doc.get("token") or doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise Unavailable(f"{context}: authorization server did not include a token in the response")
    lifetime = doc.get("expires_in")
    if not isinstance(lifetime, int | float) or lifetime < MIN_TOKEN_LIFETIME:
        lifetime = MIN_TOKEN_LIFETIME
    refresh = doc.get("refresh_token")
    return Token(value, time.monotonic() + float(lifetime),
                 refresh if isinstance(refresh, str) else "")


@dataclass
class Authorizer:
    """Authorization for one registry endpoint and one set of credentials.

    ``challenges`` come from the ping; a later 401 may replace them (a
    registry that allows anonymous pulls but challenges pushes).
    """

    transport: Transport
    creds: Credentials
    challenges: list[Challenge]
    cache: TokenCache
    verify_realm: bool = True
    extra_scopes: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _bearer_key(self, challenge: Challenge, scopes: tuple[str, ...]) -> tuple[str, ...]:
        return (challenge.get("realm"), challenge.get("service"), " ".join(scopes),
                _identity(self.creds))

    def _scopes(self, scopes: Sequence[str]) -> tuple[str, ...]:
        with self._lock:
            return merge_scopes([*scopes, *self.extra_scopes])

    def headers(self, scopes: Sequence[str], context: str) -> dict[str, str]:
        """The Authorization header for a request needing ``scopes`` (empty when none is due)."""
        basic = self.creds.basic()
        with self._lock:
            challenges = list(self.challenges)
        if (basic is None and challenges and all(c.scheme == "basic" for c in challenges)):
            # dockerd's basic handler gives up before sending anything: the
            # request is named, though it never left.
            raise Unauthorized(f"{context}: no basic auth credentials")
        for challenge in challenges:
            if challenge.scheme == "bearer":
                if self.creds.registry_token:
                    return {"Authorization": "Bearer " + self.creds.registry_token}
                return {"Authorization": "Bearer " + self.token(challenge, self._scopes(scopes),
                                                                 context).value}
            if challenge.scheme == "basic" and basic is not None:
                return {"Authorization": basic_header(*basic)}
        return {}

    def token(self, challenge: Challenge, scopes: tuple[str, ...], context: str,
              offline: bool = False) -> Token:
        key = self._bearer_key(challenge, scopes)
        token = self.cache.get(key)
        if token is not None and not offline:
            return token
        with self.cache.fetch_lock(key):
            token = self.cache.get(key)  # another thread may have fetched it meanwhile
            if token is not None and not offline:
                return token
            verify = self.verify_realm
            token = fetch_token(self.transport, challenge, scopes, self.creds, verify, context,
                                offline=offline)
            self.cache.put(key, token)
            return token

    def unauthorized(self, response_challenges: list[Challenge], scopes: Sequence[str]) -> bool:
        """Learn from a 401; True when a retry may succeed.

        A retry is worth it when the server's challenges differ from the ones
        used (first challenge on a registry that answered the ping with 200),
        when it calls the token invalid (expired or revoked: the cached one is
        dropped), or when it asks for a scope the token lacked.
        """
        if not response_challenges:
            return False
        retry = False
        with self._lock:
            if response_challenges != self.challenges:
                old_schemes = {c.scheme for c in self.challenges}
                self.challenges = response_challenges
                retry = {c.scheme for c in response_challenges} != old_schemes
        for challenge in response_challenges:
            if challenge.scheme != "bearer":
                continue
            error = challenge.get("error")
            asked = challenge.get("scope")
            if asked:
                with self._lock:
                    before = merge_scopes([*scopes, *self.extra_scopes])
                    self.extra_scopes.update(asked.split(" "))
                    after = merge_scopes([*scopes, *self.extra_scopes])
                retry = retry or after != before
            if error == "invalid_token" or retry:
                self.cache.drop(self._bearer_key(challenge, self._scopes(scopes)))
                retry = True
        return retry
