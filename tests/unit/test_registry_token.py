"""The registry's JWTs: scopes, signing, expiry, audiences, the two token kinds, the key file."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.registry.server import token as tk
from ketch.registry.server.token import Grant, TokenError, TokenSigner

KEY = b"k" * 32
NOW = 1_800_000_000


def signer(key: bytes = KEY) -> TokenSigner:
    return TokenSigner(key)


def b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def payload(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    result: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result


@pytest.mark.parametrize(("scope", "want"), [
    ("repository:library/alpine:pull", [Grant("repository", "library/alpine", ("pull",))]),
    ("repository:a/b:pull,push", [Grant("repository", "a/b", ("pull", "push"))]),
    ("repository:localhost:5000/x:push", [Grant("repository", "localhost:5000/x", ("push",))]),
    ("repository(plugin):p:pull", [Grant("repository", "p", ("pull",))]),
    ("registry:catalog:*", [Grant("registry", "catalog", ("*",))]),
    ("repository:x:pull,frobnicate,pull", [Grant("repository", "x", ("pull",))]),
    ("repository:x:pull repository:y:delete",
     [Grant("repository", "x", ("pull",)), Grant("repository", "y", ("delete",))]),
    ("", []),
])
def test_parse_scope(scope: str, want: list[Grant]) -> None:
    assert tk.parse_scope(scope) == want


@pytest.mark.parametrize("scope", ["repository", "repository:x", "repository::pull",
                                   "Repository:x:pull", ":x:pull"])
def test_parse_scope_refuses_malformed(scope: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid scope"):
        tk.parse_scope(scope)


def test_merge_and_covers() -> None:
    merged = tk.merge([Grant("repository", "x", ("pull",)), Grant("repository", "y", ("push",)),
                       Grant("repository", "x", ("push", "pull"))])
    assert merged == (Grant("repository", "x", ("pull", "push")),
                      Grant("repository", "y", ("push",)))
    assert tk.covers(merged, "repository", "x", ("pull", "push"))
    assert not tk.covers(merged, "repository", "y", ("pull",))
    assert not tk.covers(merged, "repository", "z", ("pull",))
    assert tk.covers(merged, "repository", "z", ())
    star = (Grant("registry", "catalog", ("*",)),)
    assert tk.covers(star, "registry", "catalog", ("*",))
    assert tk.covers(star, "registry", "catalog", ("pull", "delete"))
    assert not tk.covers(star, "repository", "catalog", ("pull",))


def test_issue_and_verify() -> None:
    s = signer()
    access = (Grant("repository", "x", ("pull", "push")),)
    raw, claims = s.issue(subject="alice", audience="svc", access=access, ttl=300, now=NOW)
    assert claims.expires_at == NOW + 300
    body = payload(raw)
    assert body["sub"] == "alice" and body["aud"] == "svc" and body["exp"] == NOW + 300
    assert body["access"] == [{"type": "repository", "name": "x", "actions": ["pull", "push"]}]
    got = s.verify(raw, audience="svc", now=NOW + 10)
    assert (got.subject, got.access, got.use) == ("alice", access, "access")


def test_two_tokens_differ() -> None:
    s = signer()
    a, _ = s.issue(subject="a", audience="svc", access=(), ttl=60, now=NOW)
    b, _ = s.issue(subject="a", audience="svc", access=(), ttl=60, now=NOW)
    assert a != b


def test_expiry_with_leeway() -> None:
    s = signer()
    raw, _ = s.issue(subject="a", audience="svc", access=(), ttl=60, now=NOW)
    s.verify(raw, audience="svc", now=NOW + 60 + tk.LEEWAY)
    with pytest.raises(TokenError, match="expired") as exc:
        s.verify(raw, audience="svc", now=NOW + 61 + tk.LEEWAY)
    assert exc.value.expired


def test_not_yet_valid() -> None:
    s = signer()
    raw, _ = s.issue(subject="a", audience="svc", access=(), ttl=60, now=NOW + 100)
    with pytest.raises(TokenError, match="not yet valid") as exc:
        s.verify(raw, audience="svc", now=NOW)
    assert not exc.value.expired


def test_audience_must_match() -> None:
    s = signer()
    raw, _ = s.issue(subject="a", audience="svc", access=(), ttl=60, now=NOW)
    with pytest.raises(TokenError, match="another service"):
        s.verify(raw, audience="other", now=NOW)


def test_other_key_and_tampering_are_refused() -> None:
    raw, _ = signer().issue(subject="a", audience="svc",
                            access=(Grant("repository", "x", ("pull",)),), ttl=60, now=NOW)
    with pytest.raises(TokenError, match="signature"):
        signer(b"z" * 32).verify(raw, audience="svc", now=NOW)
    header, _, sig = raw.split(".")
    forged = payload(raw)
    forged["access"] = [{"type": "repository", "name": "x", "actions": ["*"]}]
    with pytest.raises(TokenError, match="signature"):
        signer().verify(f"{header}.{b64(forged)}.{sig}", audience="svc", now=NOW)


def test_alg_none_and_others_are_refused() -> None:
    raw, _ = signer().issue(subject="a", audience="svc", access=(), ttl=60, now=NOW)
    _, body, _ = raw.split(".")
    for alg in ("none", "HS512", "RS256", "hs256"):
        with pytest.raises(TokenError, match="algorithm"):
            signer().verify(f"{b64({'alg': alg, 'typ': 'JWT'})}.{body}.", audience="svc",
                            now=NOW)


@pytest.mark.parametrize("raw", ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.", "bm90anNvbg.e30.x"])
def test_malformed_tokens(raw: str) -> None:
    with pytest.raises(TokenError):
        signer().verify(raw, audience="svc", now=NOW)


def test_well_signed_but_malformed_claims_are_refused() -> None:
    s = signer()
    for claims in ({"iss": tk.ISSUER, "aud": "svc", "token_use": "access"},  # no exp
                   {"iss": tk.ISSUER, "aud": "svc", "token_use": "access", "exp": "soon"},
                   {"iss": "someone", "aud": "svc", "token_use": "access", "exp": NOW + 9},
                   {"iss": tk.ISSUER, "aud": "svc", "token_use": "access", "exp": NOW + 9,
                    "access": [{"type": "repository", "name": "x", "actions": "pull"}]},
                   {"iss": tk.ISSUER, "aud": "svc", "token_use": "access", "exp": NOW + 9,
                    "access": {"x": 1}}):
        with pytest.raises(TokenError):
            s.verify(s._sign(claims), audience="svc", now=NOW)
    # An audience list naming this service is fine (RFC 7519 allows both forms).
    ok = s._sign({"iss": tk.ISSUER, "aud": ["a", "svc"], "token_use": "access", "exp": NOW + 9})
    assert s.verify(ok, audience="svc", now=NOW).access == ()


def test_refresh_and_access_tokens_do_not_stand_in_for_each_other() -> None:
    s = signer()
    refresh = s.issue_refresh(subject="alice", audience="svc", fingerprint="fp", now=NOW)
    access, _ = s.issue(subject="alice", audience="svc", access=(), ttl=60, now=NOW)
    with pytest.raises(TokenError, match="not an access token"):
        s.verify(refresh, audience="svc", now=NOW)
    with pytest.raises(TokenError, match="not a refresh token"):
        s.verify(access, audience="svc", use="refresh", now=NOW)
    claims = s.verify(refresh, audience="svc", use="refresh", now=NOW + tk.REFRESH_TTL - 1)
    assert (claims.subject, claims.fingerprint) == ("alice", "fp")
    with pytest.raises(TokenError, match="expired"):
        s.verify(refresh, audience="svc", use="refresh", now=NOW + tk.REFRESH_TTL + 60)


def test_fingerprint_is_keyed() -> None:
    assert signer().fingerprint(b"$2y$hash") == signer().fingerprint(b"$2y$hash")
    assert signer().fingerprint(b"$2y$hash") != signer().fingerprint(b"$2y$other")
    assert signer().fingerprint(b"$2y$hash") != signer(b"z" * 32).fingerprint(b"$2y$hash")


def test_short_key_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="too short"):
        TokenSigner(b"short")


def test_load_key_generates_0600_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "token.key"
    key = tk.load_key(str(path))
    assert len(key) >= tk.KEY_MIN_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tk.load_key(str(path)) == key
    # A token issued under the first load verifies under the second (a restart).
    raw, _ = TokenSigner(key).issue(subject="a", audience="svc", access=(), ttl=60, now=NOW)
    TokenSigner(tk.load_key(str(path))).verify(raw, audience="svc", now=NOW)


def test_load_key_reads_a_given_key_and_refuses_a_short_one(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"x" * 40 + b"\n")
    os.chmod(path, 0o600)
    assert tk.load_key(str(path)) == b"x" * 40
    path.write_bytes(b"tiny\n")
    with pytest.raises(InvalidArgument, match="too short"):
        tk.load_key(str(path))


def test_load_key_warns_about_a_readable_key(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"x" * 40)
    os.chmod(path, 0o644)
    tk.load_key(str(path))
    assert "readable by others" in caplog.text
    assert "xxxx" not in caplog.text


def test_memory_key_without_path() -> None:
    a, b = tk.load_key(None), tk.load_key(None)
    assert len(a) == tk.KEY_MIN_BYTES and a != b
