"""Bearer tokens for ``ketch registry serve --auth token``: JWTs the registry issues and checks.

The registry is its own token server (Docker's token flow with realm
``/token``), so one process both signs and verifies: an HMAC key (HS256) is
enough and needs nothing beyond the standard library. Clients treat tokens
as opaque strings.

Two kinds of token share the key and are told apart by the ``token_use``
claim, so neither can stand in for the other:

- access tokens (short-lived, ``token_ttl``) carry the granted access list
  (``[{"type", "name", "actions"}]``, as Docker's token spec);
- refresh tokens (docker's "identity token", long-lived) name a user and
  carry a fingerprint of their htpasswd entry, so a changed password or a
  removed user revokes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ketch.errors import InvalidArgument

log = logging.getLogger("ketch.registry.auth")

ISSUER = "ketch-registry"
KEY_MIN_BYTES = 32
# Clocks of one host agree, but a token checked right at its edge should not
# fail for a rounding of seconds.
LEEWAY = 5
REFRESH_TTL = 30 * 24 * 3600
ACTIONS = ("pull", "push", "delete", "*")

_SCOPE_TYPE = re.compile(r"([a-z0-9]+)(?:\([a-z0-9]+\))?")


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of a token's access list: a resource and the actions allowed on it."""

    type: str
    name: str
    actions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    subject: str
    audience: str
    issued_at: int
    expires_at: int
    access: tuple[Grant, ...]
    use: str
    fingerprint: str = ""


class TokenError(Exception):
    """A token that cannot be accepted; ``expired`` tells the two RFC 6750 cases apart."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.expired = expired


def parse_scope(scope: str) -> list[Grant]:
    """Docker's ``scope`` values (``repository:name:pull,push``), several separated by spaces.

    The name may itself hold colons (``repository:localhost:5000/x:pull``): the
    type ends at the first colon, the actions start after the last. A type's
    class (``repository(plugin)``) is dropped: ketch does not tell classes
    apart. Unknown actions are ignored rather than refused, as token servers do.
    """
    grants: list[Grant] = []
    for item in scope.split():
        rtype, sep, rest = item.partition(":")
        name, sep2, actions = rest.rpartition(":")
        m = _SCOPE_TYPE.fullmatch(rtype)
        if not sep or not sep2 or not name or m is None:
            raise InvalidArgument(f"invalid scope: {item!r}")
        wanted = tuple(dict.fromkeys(a for a in actions.split(",") if a in ACTIONS))
        grants.append(Grant(m.group(1), name, wanted))
    return grants


def merge(grants: Iterable[Grant]) -> tuple[Grant, ...]:
    """One grant per resource, actions united in first-seen order."""
    merged: dict[tuple[str, str], dict[str, None]] = {}
    for g in grants:
        merged.setdefault((g.type, g.name), {}).update(dict.fromkeys(g.actions))
    return tuple(Grant(t, n, tuple(a)) for (t, n), a in merged.items())


def covers(granted: Sequence[Grant], rtype: str, name: str, actions: Iterable[str]) -> bool:
    """True if the granted list allows every one of ``actions`` on the resource."""
    have: set[str] = set()
    for g in granted:
        if g.type == rtype and g.name == name:
            have.update(g.actions)
    return "*" in have or all(a in have for a in actions)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise TokenError("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None


def load_key(path: str | None) -> bytes:
    """The signing key: read from ``path``, created there (0600) if missing.

    Without a path the key lives in memory only, so tokens do not survive a
    restart of the server; clients simply fetch new ones.
    """
    if path is None:
        return secrets.token_bytes(KEY_MIN_BYTES)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        # O_EXCL: two servers starting at once must not both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    try:
        os.write(fd, (secrets.token_hex(KEY_MIN_BYTES) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("token signing key generated at %s", path)
    return _read_key(path)


def _read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = f.read().strip()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token key %s is readable by others (mode %o): anyone who can read it "
                    "can forge tokens", path, stat.S_IMODE(st.st_mode))
    if len(key) < KEY_MIN_BYTES:
        raise InvalidArgument(f"token key {path} is too short "
                              f"(at least {KEY_MIN_BYTES} bytes needed)")
    return key


class TokenSigner:
    """Issues and verifies the registry's HS256 JWTs."""

    def __init__(self, key: bytes, *, issuer: str = ISSUER) -> None:
        if len(key) < KEY_MIN_BYTES:
            raise InvalidArgument(f"token key too short (at least {KEY_MIN_BYTES} bytes)")
        self._key = key
        self.issuer = issuer
        # Names the key without revealing it: a token signed by another key
        # (an older server's) is told apart from a tampered one in the logs.
        self.kid = hashlib.sha256(b"kid:" + key).hexdigest()[:16]

    def fingerprint(self, secret: bytes) -> str:
        """A keyed digest of ``secret`` (a user's htpasswd hash) for refresh tokens."""
        return hmac.new(self._key, b"fp:" + secret, hashlib.sha256).hexdigest()[:32]

    def _sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "HS256", "kid": self.kid}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(claims, separators=(",", ":")).encode()))
        sig = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64(sig)

    def issue(self, *, subject: str, audience: str, access: Sequence[Grant], ttl: int,
              now: float | None = None) -> tuple[str, Claims]:
        """A signed access token and its claims."""
        iat = int(time.time() if now is None else now)
        claims = Claims(subject=subject, audience=audience, issued_at=iat,
                        expires_at=iat + ttl, access=tuple(access), use="access")
        return self._sign(self._claims_json(claims)), claims

    def issue_refresh(self, *, subject: str, audience: str, fingerprint: str,
                      ttl: int = REFRESH_TTL, now: float | None = None) -> str:
        """A signed refresh token for ``subject``."""
        iat = int(time.time() if now is None else now)
        claims = Claims(subject=subject, audience=audience, issued_at=iat,
                        expires_at=iat + ttl, access=(), use="refresh",
                        fingerprint=fingerprint)
        return self._sign(self._claims_json(claims))

    def _claims_json(self, c: Claims) -> dict[str, Any]:
        out: dict[str, Any] = {
            "iss": self.issuer, "sub": c.subject, "aud": c.audience,
            "exp": c.expires_at, "nbf": c.issued_at, "iat": c.issued_at,
            "jti": secrets.token_urlsafe(12), "token_use": c.use,
        }
        if c.use == "access":
            out["access"] = [g.to_json() for g in c.access]
        if c.fingerprint:
            out["fp"] = c.fingerprint
        return out

    def verify(self, token: str, *, audience: str, use: str = "access",
               now: float | None = None) -> Claims:
        """The claims of a token this signer issued for ``audience``; TokenError otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed token")
        try:
            header = json.loads(_unb64(parts[0]))
        except ValueError:
            raise TokenError("malformed token") from None
        # Only our own algorithm: "none" or an asymmetric one named by an
        # attacker must never select how the signature is checked.
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise TokenError("unsupported token algorithm")
        signing_input = (parts[0] + "." + parts[1]).encode()
        want = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(want, _unb64(parts[2])):
            raise TokenError("invalid token signature")
        try:
            body = json.loads(_unb64(parts[1]))
        except ValueError:
            raise TokenError("malformed token") from None
        if not isinstance(body, dict):
            raise TokenError("malformed token")
        return self._check_claims(body, audience=audience, use=use,
                                  now=time.time() if now is None else now)

    def _check_claims(self, body: dict[str, Any], *, audience: str, use: str,
                      now: float) -> Claims:
        exp, nbf, iat = body.get("exp"), body.get("nbf", 0), body.get("iat", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, nbf, iat)):
            raise TokenError("malformed token times")
        assert isinstance(exp, int) and isinstance(nbf, int) and isinstance(iat, int)
        if body.get("iss") != self.issuer:
            raise TokenError("token issued by another issuer")
        if body.get("token_use") != use:
            raise TokenError(f"not an {use} token" if use == "access" else f"not a {use} token")
        aud = body.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if audience not in auds:
            raise TokenError("token issued for another service")
        if now > exp + LEEWAY:
            raise TokenError("token expired", expired=True)
        if nbf > now + LEEWAY:
            raise TokenError("token not yet valid")
        sub = body.get("sub", "")
        if not isinstance(sub, str):
            raise TokenError("malformed token subject")
        access: list[Grant] = []
        if use == "access":
            raw = body.get("access", [])
            if not isinstance(raw, list):
                raise TokenError("malformed token access")
            for item in raw:
                if not isinstance(item, dict):
                    raise TokenError("malformed token access")
                rtype, name, actions = item.get("type"), item.get("name"), item.get("actions")
                if (not isinstance(rtype, str) or not isinstance(name, str)
                        or not isinstance(actions, list)
                        or not all(isinstance(a, str) for a in actions)):
                    raise TokenError("malformed token access")
                access.append(Grant(rtype, name, tuple(actions)))
        fp = body.get("fp", "")
        return Claims(subject=sub, audience=audience, issued_at=iat, expires_at=exp,
                      access=tuple(access), use=use, fingerprint=fp if isinstance(fp, str) else "")
