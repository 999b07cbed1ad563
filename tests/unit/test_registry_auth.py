"""Registry server auth through HTTP: basic challenges, the token endpoint, Bearer checks."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ketch.errors import InvalidArgument
from ketch.registry.server import auth as au
from ketch.registry.server import token as tk
from ketch.registry.server.auth import Access, Challenge, Denied, authorizer_from_options

PULL_X = [Access("repository", "x", ("pull",))]
PUSH_X = [Access("repository", "x", ("pull", "push"))]
CATALOG = [Access("registry", "catalog", ("*",))]
NEEDS: dict[str, list[Access]] = {"/v2/": [], "/v2/x/pull": PULL_X, "/v2/x/push": PUSH_X,
                                  "/v2/_catalog": CATALOG}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    set_password(path, "alice", "wonderland")
    return path


def set_password(path: Path, user: str, password: str) -> None:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")


def make_app(authorizer: au.Authorizer) -> web.Application:
    """What the server does with the interface: Challenge -> 401, Denied -> 403."""

    async def handle(request: web.Request) -> web.Response:
        try:
            user = await authorizer.authorize(request, NEEDS[request.path])
        except Challenge as c:
            return web.json_response(
                {"errors": [{"code": c.code, "message": c.message, "detail": c.detail}]},
                status=401, headers={"WWW-Authenticate": c.www_authenticate})
        except Denied as d:
            return web.json_response({"errors": [{"code": "DENIED", "message": d.message}]},
                                     status=403)
        return web.json_response({"user": user})

    app = web.Application()
    app.add_routes(authorizer.routes())
    for path in NEEDS:
        app.router.add_route("*", path, handle)
    return app


Script = Callable[[TestClient[web.Request, web.Application]], Awaitable[Any]]


def run(authorizer: au.Authorizer | None, script: Script) -> Any:
    assert authorizer is not None

    async def go() -> Any:
        async with TestClient(TestServer(make_app(authorizer))) as client:
            return await script(client)

    return asyncio.run(go())


def basic_authorizer(users: Path, realm: str | None = "my-realm") -> au.Authorizer | None:
    return authorizer_from_options(mode="basic", htpasswd=str(users), token_ttl=300,
                                   token_key_path=None, realm=realm, service="svc")


def token_authorizer(users: Path, tmp_path: Path, *, realm: str | None = None,
                     ttl: int = 300) -> au.TokenAuthorizer:
    a = authorizer_from_options(mode="token", htpasswd=str(users), token_ttl=ttl,
                                token_key_path=str(tmp_path / "token.key"), realm=realm,
                                service="svc")
    assert isinstance(a, au.TokenAuthorizer)
    return a


# -- options -----------------------------------------------------------------

def test_options(users: Path, tmp_path: Path) -> None:
    assert authorizer_from_options(mode="none", htpasswd=None, token_ttl=300,
                                   token_key_path=None, realm=None, service="svc") is None
    assert isinstance(basic_authorizer(users), au.BasicAuthorizer)
    assert isinstance(token_authorizer(users, tmp_path), au.TokenAuthorizer)
    with pytest.raises(InvalidArgument, match="needs an htpasswd file"):
        authorizer_from_options(mode="basic", htpasswd=None, token_ttl=300,
                                token_key_path=None, realm=None, service="svc")
    with pytest.raises(InvalidArgument, match="unknown auth mode"):
        authorizer_from_options(mode="ldap", htpasswd=str(users), token_ttl=300,
                                token_key_path=None, realm=None, service="svc")
    with pytest.raises(InvalidArgument, match="TTL must be positive"):
        token_authorizer(users, tmp_path, ttl=0)


def test_scope_param_and_detail() -> None:
    access = [Access("repository", "x", ("pull",)), Access("repository", "x", ("push",)),
              Access("registry", "catalog", ("*",)), Access("repository", "y", ())]
    assert au.scope_param(access) == "repository:x:pull,push registry:catalog:*"
    assert au.access_detail(PUSH_X) == [
        {"Type": "repository", "Class": "", "Name": "x", "Action": "pull"},
        {"Type": "repository", "Class": "", "Name": "x", "Action": "push"}]
    assert au.access_detail([]) is None


# -- basic -------------------------------------------------------------------

def test_basic_challenges_as_distribution(users: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        out = []
        for path, headers in (("/v2/", {}), ("/v2/x/pull", basic("alice", "wrong")),
                              ("/v2/_catalog", {}), ("/v2/", basic("bob", "wonderland")),
                              ("/v2/", {"Authorization": "Basic !!!notbase64"}),
                              ("/v2/", {"Authorization": "Basic " + base64.b64encode(
                                  b"no-colon").decode()}),
                              ("/v2/", {"Authorization": "Bearer abc"})):
            r = await c.get(path, headers=headers)
            out.append((r.status, r.headers.get("WWW-Authenticate"), await r.json()))
        return out

    got = run(basic_authorizer(users), script)
    assert all(status == 401 and header == 'Basic realm="my-realm"'
               for status, header, _ in got)
    assert got[0][2] == {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                     "detail": None}]}
    assert got[1][2]["errors"][0]["detail"] == [
        {"Type": "repository", "Class": "", "Name": "x", "Action": "pull"}]
    assert got[2][2]["errors"][0]["detail"] == [
        {"Type": "registry", "Class": "", "Name": "catalog", "Action": "*"}]


def test_basic_accepts_the_right_password(users: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        return [(r.status, await r.json()) for r in [
            await c.get("/v2/", headers=basic("alice", "wonderland")),
            await c.put("/v2/x/push", headers=basic("alice", "wonderland")),
            await c.get("/v2/_catalog", headers={"authorization": basic(
                "alice", "wonderland")["Authorization"].replace("Basic", "basic")})]]

    assert run(basic_authorizer(users), script) == [(200, {"user": "alice"})] * 3


def test_basic_realm_default_and_quoting(users: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> str:
        return (await c.get("/v2/")).headers["WWW-Authenticate"]

    assert run(basic_authorizer(users, None), script) == 'Basic realm="ketch registry"'
    assert run(basic_authorizer(users, 'say "hi"'), script) == r'Basic realm="say \"hi\""'


def test_basic_sees_a_changed_password(users: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[int]:
        first = (await c.get("/v2/", headers=basic("alice", "wonderland"))).status
        set_password(users, "alice", "looking-glass")
        return [first, (await c.get("/v2/", headers=basic("alice", "wonderland"))).status,
                (await c.get("/v2/", headers=basic("alice", "looking-glass"))).status]

    assert run(basic_authorizer(users), script) == [200, 401, 200]


# -- token: the registry side ------------------------------------------------

def parse_challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    params = {}
    for part in rest.split('",'):
        key, _, value = part.partition("=")
        params[key] = value.strip('"')
    return params


def test_token_challenge_names_realm_service_and_scope(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        out = []
        for path in ("/v2/", "/v2/x/push", "/v2/_catalog"):
            r = await c.get(path)
            out.append((r.status, parse_challenge(r.headers["WWW-Authenticate"]),
                        (await r.json())["errors"][0]["code"], str(c.make_url("/token"))))
        return out

    got = run(token_authorizer(users, tmp_path), script)
    assert [g[0] for g in got] == [401] * 3 and [g[2] for g in got] == ["UNAUTHORIZED"] * 3
    realm = got[0][3]
    assert got[0][1] == {"realm": realm, "service": "svc"}
    assert got[1][1] == {"realm": realm, "service": "svc", "scope": "repository:x:pull,push"}
    assert got[2][1] == {"realm": realm, "service": "svc", "scope": "registry:catalog:*"}


def test_token_realm_configured(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> dict[str, str]:
        return parse_challenge((await c.get("/v2/x/pull")).headers["WWW-Authenticate"])

    got = run(token_authorizer(users, tmp_path, realm="https://auth.example/token"), script)
    assert got["realm"] == "https://auth.example/token"


async def fetch_token(c: TestClient[web.Request, web.Application], *scopes: str,
                      headers: dict[str, str] | None = None, **params: str) -> Any:
    query = [("service", "svc"), *(("scope", s) for s in scopes), *params.items()]
    r = await c.get("/token", params=query, headers=headers or {})
    return r.status, await r.json()


def test_token_flow_grants_what_a_user_asks(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        status, body = await fetch_token(c, "repository:x:pull,push", "registry:catalog:*",
                                         headers=basic("alice", "wonderland"))
        assert status == 200, body
        auth = bearer(body["token"])
        return [body, *[(r.status, await r.json()) for r in [
            await c.get("/v2/", headers=auth), await c.get("/v2/x/pull", headers=auth),
            await c.patch("/v2/x/push", headers=auth), await c.get("/v2/_catalog", headers=auth)]]]

    body, *results = run(token_authorizer(users, tmp_path), script)
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"].endswith("Z") and "T" in body["issued_at"]
    assert "refresh_token" not in body
    assert results == [(200, {"user": "alice"})] * 4


def test_insufficient_scope_is_a_401_naming_the_scope(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> Any:
        _, body = await fetch_token(c, "repository:x:pull", "repository:other:push",
                                    headers=basic("alice", "wonderland"))
        r = await c.post("/v2/x/push", headers=bearer(body["token"]))
        return r.status, parse_challenge(r.headers["WWW-Authenticate"])

    status, params = run(token_authorizer(users, tmp_path), script)
    assert status == 401
    assert params["scope"] == "repository:x:pull,push"
    assert params["error"] == "insufficient_scope"


def test_anonymous_gets_a_token_with_no_access(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> Any:
        status, body = await fetch_token(c, "repository:x:pull")
        auth = bearer(body["token"])
        v2 = await c.get("/v2/", headers=auth)
        pull = await c.get("/v2/x/pull", headers=auth)
        return (status, body, v2.status, await v2.json(), pull.status,
                parse_challenge(pull.headers["WWW-Authenticate"]))

    status, body, v2_status, v2_body, pull_status, params = run(
        token_authorizer(users, tmp_path), script)
    assert status == 200
    claims = tk.TokenSigner(tk.load_key(str(tmp_path / "token.key"))).verify(
        body["token"], audience="svc")
    assert claims.access == () and claims.subject == ""
    # Authenticated only (the ping) is fine, and nobody is named; a repository is not.
    assert (v2_status, v2_body) == (200, {"user": None})
    assert pull_status == 401 and params["error"] == "insufficient_scope"


def test_wrong_password_at_token_endpoint(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        out = []
        for headers in (basic("alice", "nope"), basic("mallory", "wonderland"),
                        {"Authorization": "Basic %%%"}, {"Authorization": "Bearer x"}):
            r = await c.get("/token", params={"service": "svc", "scope": "repository:x:pull"},
                            headers=headers)
            out.append((r.status, await r.json()))
        return out

    for status, body in run(token_authorizer(users, tmp_path), script):
        assert status == 401
        assert body["details"] == "incorrect username or password"
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
        assert "token" not in body


def test_bad_scope_at_token_endpoint(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> Any:
        return await fetch_token(c, "repository:x", headers=basic("alice", "wonderland"))

    status, body = run(token_authorizer(users, tmp_path), script)
    assert status == 400 and body["error"] == "invalid_scope"


def test_expired_and_bad_tokens_get_invalid_token(users: Path, tmp_path: Path) -> None:
    a = token_authorizer(users, tmp_path, ttl=60)
    old, _ = a.signer.issue(subject="alice", audience="svc",
                            access=(tk.Grant("repository", "x", ("pull",)),), ttl=60,
                            now=1_000_000_000)
    foreign, _ = tk.TokenSigner(b"q" * 32).issue(
        subject="alice", audience="svc", access=(tk.Grant("repository", "x", ("pull",)),),
        ttl=60)
    other_service, _ = a.signer.issue(subject="alice", audience="elsewhere",
                                      access=(tk.Grant("repository", "x", ("pull",)),), ttl=60)

    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        out = []
        for raw in (old, foreign, other_service, "garbage"):
            r = await c.get("/v2/x/pull", headers=bearer(raw))
            out.append((r.status, parse_challenge(r.headers["WWW-Authenticate"])))
        return out

    got = run(a, script)
    for status, params in got:
        assert status == 401
        assert params["error"] == "invalid_token"
        assert params["scope"] == "repository:x:pull"
    assert got[0][1]["error_description"] == "token expired"


def test_basic_credentials_are_not_accepted_on_registry_requests_in_token_mode(
        users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> Any:
        r = await c.get("/v2/x/pull", headers=basic("alice", "wonderland"))
        return r.status, parse_challenge(r.headers["WWW-Authenticate"])

    status, params = run(token_authorizer(users, tmp_path), script)
    assert status == 401 and "error" not in params


# -- token: OAuth2 POST and refresh tokens -----------------------------------

def test_offline_token_on_get(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> Any:
        _, body = await fetch_token(c, headers=basic("alice", "wonderland"),
                                    offline_token="true", client_id="docker")
        _, anon = await fetch_token(c, offline_token="true")
        return body, anon

    body, anon = run(token_authorizer(users, tmp_path), script)
    assert body["refresh_token"] and body["refresh_token"] != body["token"]
    assert "refresh_token" not in anon


def test_password_grant_and_refresh_grant(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        r = await c.post("/token", data={
            "grant_type": "password", "username": "alice", "password": "wonderland",
            "service": "svc", "client_id": "docker", "access_type": "offline",
            "scope": "repository:x:pull repository:y:push"})
        first = await r.json()
        r2 = await c.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": first["refresh_token"],
            "service": "svc", "client_id": "docker", "scope": "repository:x:pull,push"})
        second = await r2.json()
        push = await c.put("/v2/x/push", headers=bearer(second["access_token"]))
        no_offline = await (await c.post("/token", data={
            "grant_type": "password", "username": "alice", "password": "wonderland",
            "service": "svc", "client_id": "docker"})).json()
        return [r.status, first, r2.status, second, push.status, no_offline]

    status, first, status2, second, push, no_offline = run(token_authorizer(users, tmp_path),
                                                           script)
    assert status == 200 and status2 == 200 and push == 200
    assert first["scope"] == "repository:x:pull repository:y:push"
    assert first["expires_in"] == 300 and first["access_token"]
    assert second["scope"] == "repository:x:pull,push"
    assert second["refresh_token"] == first["refresh_token"]
    assert "refresh_token" not in no_offline


def test_oauth_errors(users: Path, tmp_path: Path) -> None:
    a = token_authorizer(users, tmp_path)
    access_token, _ = a.signer.issue(subject="alice", audience="svc", access=(), ttl=60)

    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        out = []
        for form in ({"grant_type": "password", "username": "alice", "password": "bad"},
                     {"grant_type": "password", "password": "wonderland"},
                     {"grant_type": "client_credentials"},
                     {"grant_type": "refresh_token"},
                     {"grant_type": "refresh_token", "refresh_token": "junk"},
                     {"grant_type": "refresh_token", "refresh_token": access_token},
                     {"grant_type": "password", "username": "alice", "password": "wonderland",
                      "scope": "nonsense"}):
            r = await c.post("/token", data={"service": "svc", "client_id": "t", **form})
            body = await r.json()
            out.append((r.status, body.get("error") or body["errors"][0]["code"]))
        return out

    assert run(a, script) == [(401, "UNAUTHORIZED"), (400, "invalid_request"),
                              (400, "unsupported_grant_type"), (400, "invalid_request"),
                              (401, "UNAUTHORIZED"), (401, "UNAUTHORIZED"),
                              (400, "invalid_scope")]


def test_a_password_change_revokes_refresh_tokens(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        _, body = await fetch_token(c, headers=basic("alice", "wonderland"),
                                    offline_token="true")
        form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                "service": "svc", "client_id": "t"}
        before = (await c.post("/token", data=form)).status
        set_password(users, "alice", "looking-glass")
        r = await c.post("/token", data=form)
        return [before, r.status, (await r.json())["details"]]

    assert run(token_authorizer(users, tmp_path), script) == [200, 401, "refresh token revoked"]


def test_token_responses_are_not_cached(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> str:
        r = await c.get("/token", params={"service": "svc"}, headers=basic("alice", "wonderland"))
        return r.headers["Cache-Control"]

    assert run(token_authorizer(users, tmp_path), script) == "no-store"


def test_exception_attributes() -> None:
    ch = Challenge("m", 'Basic realm="r"')
    assert (ch.message, ch.www_authenticate, ch.code, ch.detail, str(ch)) == (
        "m", 'Basic realm="r"', "UNAUTHORIZED", None, "m")
    assert Denied("no").message == "no"


def test_an_expired_refresh_token_says_so(users: Path, tmp_path: Path) -> None:
    a = token_authorizer(users, tmp_path)
    entry = a.users.entry_hash("alice")
    assert entry is not None
    old = a.signer.issue_refresh(subject="alice", audience="svc",
                                 fingerprint=a.signer.fingerprint(entry), now=1_000_000_000)

    async def script(c: TestClient[web.Request, web.Application]) -> Any:
        r = await c.post("/token", data={"grant_type": "refresh_token", "refresh_token": old,
                                         "service": "svc", "client_id": "t"})
        return r.status, (await r.json())["details"]

    assert run(a, script) == (401, "refresh token expired")


def test_token_post_reads_only_small_forms(users: Path, tmp_path: Path) -> None:
    async def script(c: TestClient[web.Request, web.Application]) -> list[Any]:
        out = []
        big = "grant_type=password&username=alice&password=wonderland&pad=" + "x" * au.MAX_FORM
        for data, ctype in ((big, "application/x-www-form-urlencoded"),
                            ('{"grant_type": "password"}', "application/json")):
            r = await c.post("/token", data=data, headers={"Content-Type": ctype})
            out.append((r.status, (await r.json())["error"]))
        return out

    assert run(token_authorizer(users, tmp_path), script) == [(400, "invalid_request")] * 2
