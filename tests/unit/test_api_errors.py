"""Kinds -> HTTP status and body, as dockerd answers (moby errdefs/http_helpers.go)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ketch import errors as e
from ketch.api.errors import STATUS_OF_KIND, error_middleware, status_of

CASES = [
    (e.NotFound("No such container: x"), 404),
    (e.InvalidArgument("bad"), 400),
    (e.Conflict("in use"), 409),
    (e.AlreadyExists("name taken"), 409),
    (e.InvalidTransition("cannot start"), 409),
    (e.NotModified("already started"), 304),
    (e.Unauthorized("no creds"), 401),
    (e.Forbidden("not allowed"), 403),
    (e.Unavailable("registry down"), 503),
    (e.NotSupported("no macvlan here"), 501),
    (e.System("EIO"), 500),
    (e.MultiError([OSError("a"), OSError("b")]), 500),
    (e.KetchError("plain"), 500),
    (RuntimeError("bug"), 500),
]


@pytest.mark.parametrize(("exc", "status"), CASES, ids=lambda v: type(v).__name__)
def test_status_of(exc: BaseException, status: int) -> None:
    assert status_of(exc) == status


def test_every_kind_in_errors_module_has_a_row_or_is_500() -> None:
    kinds = [k for k, _ in STATUS_OF_KIND]
    assert len(kinds) == len(set(kinds))
    assert all(issubclass(k, e.KetchError) for k in kinds)


def _run(app: web.Application, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
    async def go() -> tuple[int, Any, dict[str, str]]:
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path)
            body: Any = await resp.read()
            if resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body, dict(resp.headers)

    return asyncio.run(go())


def _raising_app(exc: BaseException) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/boom", handler)
    return app


@pytest.mark.parametrize(("exc", "status"), [c for c in CASES if c[1] != 304],
                         ids=lambda v: type(v).__name__)
def test_middleware_body_is_message(exc: BaseException, status: int) -> None:
    got, body, _ = _run(_raising_app(exc), "GET", "/boom")
    assert got == status
    assert body == {"message": str(exc)}


def test_not_modified_has_no_body() -> None:
    status, body, _ = _run(_raising_app(e.NotModified("already")), "GET", "/boom")
    assert (status, body) == (304, b"")


def test_unknown_path_is_dockerd_404() -> None:
    status, body, _ = _run(_raising_app(e.System("x")), "GET", "/containers/json")
    assert (status, body) == (404, {"message": "page not found"})


def test_wrong_method_is_json_too() -> None:
    status, body, _ = _run(_raising_app(e.System("x")), "POST", "/boom")
    assert status == 405
    assert body == {"message": "method not allowed"}
