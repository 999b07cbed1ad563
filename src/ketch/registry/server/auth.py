"""Who may call ``ketch registry serve``: htpasswd basic auth, or the registry's own token flow.

The server asks one question per request, ``authorize(request, access)``,
with the resources and actions the request needs (an empty list for
``GET /v2/``: any authenticated client). The answer is the user's name, or a
``Challenge`` (401 with ``WWW-Authenticate``) the server turns into the
spec's ``UNAUTHORIZED`` error, or ``Denied`` (403).

- ``basic``: ``Authorization: Basic`` checked against an htpasswd file
  (bcrypt), like distribution's ``auth: htpasswd``.
- ``token``: Docker's token flow with the registry as its own token server:
  requests need ``Authorization: Bearer <jwt>``; the challenge names the
  realm (``GET/POST /token`` on this server), the service and the scope the
  client should ask for. ``/token`` authenticates with the same htpasswd
  file (Basic, OAuth2 password grant or a refresh token) and grants every
  asked action to a known user; an anonymous client gets a token with no
  access, as Docker Hub does for a private repository.

Every authenticated user may do everything: there is no per-repository ACL.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from ketch.errors import InvalidArgument
from ketch.registry.server import token as tokens
from ketch.registry.server.htpasswd import Htpasswd

log = logging.getLogger("ketch.registry.auth")

DEFAULT_BASIC_REALM = "ketch registry"
DEFAULT_SERVICE = "ketch-registry"
TOKEN_PATH = "/token"
MAX_FORM = 64 * 1024
# Where the server's access log finds the user a request authenticated as
# (the same key the server sets after ``authorize``).
USER_KEY = web.RequestKey("ketch.registry.user", str)   # who the access log names


@dataclass(frozen=True, slots=True)
class Access:
    """What a request needs: actions on a repository (or ``registry:catalog``)."""

    type: str  # "repository" or "registry" (catalog)
    name: str  # repository name, or "catalog"
    actions: tuple[str, ...]  # subset of ("pull", "push", "delete", "*")


class Challenge(Exception):
    """Authentication missing or not good enough: HTTP 401 with ``WWW-Authenticate``."""

    def __init__(self, message: str, www_authenticate: str, code: str = "UNAUTHORIZED",
                 detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.www_authenticate = www_authenticate
        self.code = code
        self.detail = detail


class Denied(Exception):
    """Authenticated, but this is not allowed: HTTP 403 ``DENIED``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Authorizer(Protocol):
    async def authorize(self, request: web.Request, access: Sequence[Access]) -> str | None:
        """The user's name (None for an anonymous client), or raise Challenge/Denied."""
        ...

    def routes(self) -> list[web.RouteDef]:
        """Extra routes the server must serve (``/token`` in token mode)."""
        ...


def access_detail(access: Sequence[Access]) -> list[dict[str, str]] | None:
    """The error ``detail`` of an unauthorized request: one record per action, as distribution."""
    records = [{"Type": a.type, "Class": "", "Name": a.name, "Action": action}
               for a in access for action in a.actions]
    return records or None


def scope_param(access: Sequence[Access]) -> str:
    """``repository:x:pull,push registry:catalog:*``: what a client should ask /token for."""
    merged = tokens.merge(tokens.Grant(a.type, a.name, a.actions) for a in access)
    return " ".join(f"{g.type}:{g.name}:{','.join(g.actions)}" for g in merged if g.actions)


def _quote(value: str) -> str:
    # RFC 7235 quoted-string: a realm or service with a quote must not end the parameter.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header; None if absent or malformed."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class BasicAuthorizer:
    """htpasswd users by HTTP Basic; every user may do everything."""

    def __init__(self, users: Htpasswd, realm: str = DEFAULT_BASIC_REALM) -> None:
        self.users = users
        self.realm = realm

    def _challenge(self, access: Sequence[Access]) -> Challenge:
        return Challenge("authentication required", f"Basic realm={_quote(self.realm)}",
                         detail=access_detail(access))

    async def authorize(self, request: web.Request, access: Sequence[Access]) -> str | None:
        creds = basic_credentials(request)
        if creds is None:
            raise self._challenge(access)
        user, password = creds
        if not await self.users.verify(user, password):
            # The user name is worth logging (who is failing); the password never.
            log.info("basic auth failed for user %r from %s", user, request.remote)
            raise self._challenge(access)
        return user

    def routes(self) -> list[web.RouteDef]:
        return []


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
          ) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache",
                                 **(headers or {})})


def _unauthorized_body(message: str) -> dict[str, Any]:
    # Docker's client shows "details" of a 401 from a token server as the
    # message ("unauthorized: incorrect username or password"); other clients
    # read the spec's errors list.
    return {"errors": [{"code": "UNAUTHORIZED", "message": message, "detail": None}],
            "details": message}


async def _read_form(request: web.Request) -> dict[str, str] | None:
    """The fields of an OAuth2 form body; None if it is not one or too big.

    Read here rather than with ``request.post()``: the registry allows huge
    bodies (blob uploads), and a token request must not buffer one.
    """
    ctype = request.content_type
    if ctype not in ("application/x-www-form-urlencoded", "application/octet-stream"):
        return None
    raw = await request.content.read(MAX_FORM + 1)
    if len(raw) > MAX_FORM:
        return None
    try:
        pairs = urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True,
                                       strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    # The first of a repeated field wins, as Go's url.Values.Get.
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return _json(status, {"error": error, "error_description": description,
                          "details": description})


class TokenAuthorizer:
    """Bearer JWTs this server issues at ``/token`` and checks on every request."""

    def __init__(self, users: Htpasswd, signer: tokens.TokenSigner, *, service: str,
                 ttl: int, realm: str | None = None) -> None:
        if ttl <= 0:
            raise InvalidArgument(f"token TTL must be positive, got {ttl}")
        self.users = users
        self.signer = signer
        self.service = service
        self.ttl = ttl
        self.realm = realm

    def realm_for(self, request: web.Request) -> str:
        """The configured realm, else this server's own /token as the client reached it."""
        if self.realm:
            return self.realm
        return f"{request.scheme}://{request.host}{TOKEN_PATH}"

    def _challenge(self, request: web.Request, access: Sequence[Access], *,
                   error: str | None = None, description: str | None = None,
                   message: str = "authentication required") -> Challenge:
        header = (f"Bearer realm={_quote(self.realm_for(request))},"
                  f"service={_quote(self.service)}")
        scope = scope_param(access)
        if scope:
            header += f",scope={_quote(scope)}"
        if error:
            header += f",error={_quote(error)}"
        if description:
            header += f",error_description={_quote(description)}"
        return Challenge(message, header, detail=access_detail(access))

    async def authorize(self, request: web.Request, access: Sequence[Access]) -> str | None:
        raw = bearer_token(request)
        if raw is None:
            raise self._challenge(request, access)
        try:
            claims = self.signer.verify(raw, audience=self.service)
        except tokens.TokenError as exc:
            log.info("bearer token refused from %s: %s", request.remote, exc.message)
            raise self._challenge(request, access, error="invalid_token",
                                  description=exc.message) from None
        for a in access:
            if not tokens.covers(claims.access, a.type, a.name, a.actions):
                # 401, not RFC 6750's 403: docker and containers/image fetch a
                # new token with the challenge's scope only after a 401.
                raise self._challenge(request, access, error="insufficient_scope")
        return claims.subject or None

    def routes(self) -> list[web.RouteDef]:
        return [web.get(TOKEN_PATH, self.handle_get), web.post(TOKEN_PATH, self.handle_post)]

    def _grant(self, user: str | None, scopes: Sequence[str]) -> tuple[tokens.Grant, ...]:
        """What a token for ``user`` may do: all it asks if known, nothing if anonymous."""
        if user is None:
            return ()
        asked: list[tokens.Grant] = []
        for scope in scopes:
            asked.extend(tokens.parse_scope(scope))
        return tokens.merge(g for g in asked if g.actions)

    def _token_body(self, user: str | None, scopes: Sequence[str]) -> dict[str, Any]:
        grants = self._grant(user, scopes)
        raw, claims = self.signer.issue(subject=user or "", audience=self.service,
                                        access=grants, ttl=self.ttl)
        return {"token": raw, "access_token": raw, "expires_in": self.ttl,
                "issued_at": _iso(claims.issued_at)}

    def _refresh_token(self, user: str) -> str | None:
        entry = self.users.entry_hash(user)
        if entry is None:
            return None
        return self.signer.issue_refresh(subject=user, audience=self.service,
                                         fingerprint=self.signer.fingerprint(entry))

    async def handle_get(self, request: web.Request) -> web.Response:
        """Docker's token endpoint: Basic credentials or none, ``scope`` repeated."""
        user: str | None = None
        if "Authorization" in request.headers:
            creds = basic_credentials(request)
            if creds is None or not await self.users.verify(*creds):
                if creds is not None:
                    log.info("token request with a wrong password for user %r from %s",
                             creds[0], request.remote)
                return _json(401, _unauthorized_body("incorrect username or password"),
                             {"WWW-Authenticate": f"Basic realm={_quote(self.service)}"})
            user = creds[0]
            request[USER_KEY] = user
        try:
            body = self._token_body(user, request.query.getall("scope", []))
        except InvalidArgument as exc:
            return _oauth_error(400, "invalid_scope", exc.message)
        if user is not None and request.query.get("offline_token", "").lower() == "true":
            refresh = self._refresh_token(user)
            if refresh:
                body["refresh_token"] = refresh
        return _json(200, body)

    async def handle_post(self, request: web.Request) -> web.Response:
        """OAuth2 (distribution's spec): ``grant_type=password`` or ``refresh_token``."""
        form = await _read_form(request)
        if form is None:
            return _oauth_error(400, "invalid_request",
                                "expected a form (application/x-www-form-urlencoded) "
                                f"of at most {MAX_FORM} bytes")
        grant_type = form.get("grant_type", "")
        scopes = [form.get("scope", "")]
        user: str
        refresh: str | None = None
        if grant_type == "password":
            username, password = form.get("username", ""), form.get("password")
            if not username or password is None:
                return _oauth_error(400, "invalid_request", "missing username or password")
            if not await self.users.verify(username, password):
                log.info("token request with a wrong password for user %r from %s",
                         username, request.remote)
                return _json(401, _unauthorized_body("incorrect username or password"))
            user = username
            if form.get("access_type") == "offline":
                refresh = self._refresh_token(user)
        elif grant_type == "refresh_token":
            raw = form.get("refresh_token", "")
            if not raw:
                return _oauth_error(400, "invalid_request", "missing refresh_token")
            try:
                claims = self.signer.verify(raw, audience=self.service, use="refresh")
            except tokens.TokenError as exc:
                log.info("refresh token refused from %s: %s", request.remote, exc.message)
                return _json(401, _unauthorized_body(
                    "refresh token expired" if exc.expired else "invalid refresh token"))
            entry = self.users.entry_hash(claims.subject)
            if entry is None or not hmac.compare_digest(self.signer.fingerprint(entry),
                                                        claims.fingerprint):
                # The password changed or the user is gone since the token was issued.
                return _json(401, _unauthorized_body("refresh token revoked"))
            user = claims.subject
            refresh = raw
        else:
            return _oauth_error(400, "unsupported_grant_type",
                                f"unsupported grant_type: {grant_type!r}")
        request[USER_KEY] = user
        try:
            body = self._token_body(user, scopes)
        except InvalidArgument as exc:
            return _oauth_error(400, "invalid_scope", exc.message)
        body["scope"] = " ".join(
            f"{g.type}:{g.name}:{','.join(g.actions)}" for g in self._grant(user, scopes))
        if refresh:
            body["refresh_token"] = refresh
        return _json(200, body)


def authorizer_from_options(*, mode: str, htpasswd: str | None, token_ttl: int,
                            token_key_path: str | None, realm: str | None,
                            service: str) -> Authorizer | None:
    """The authorizer ``ketch registry serve --auth MODE`` asks for (None for ``none``)."""
    if mode == "none":
        return None
    if mode not in ("basic", "token"):
        raise InvalidArgument(f"unknown auth mode {mode!r} (none, basic or token)")
    if not htpasswd:
        raise InvalidArgument(f"--auth {mode} needs an htpasswd file (--htpasswd)")
    users = Htpasswd(htpasswd)
    if mode == "basic":
        return BasicAuthorizer(users, realm or DEFAULT_BASIC_REALM)
    if token_key_path is None:
        # Identity tokens that `docker login` stores would die with the process.
        log.warning("no --token-key: the token signing key lives in memory only; tokens and "
                    "docker login identity tokens are invalid after a restart")
    signer = tokens.TokenSigner(tokens.load_key(token_key_path))
    return TokenAuthorizer(users, signer, service=service or DEFAULT_SERVICE, ttl=token_ttl,
                           realm=realm)
