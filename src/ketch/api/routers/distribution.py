"""Registry routes: pull (``POST /images/create?fromImage=``), push, ``/auth``, ``/distribution``.

Credentials come from the client in the ``X-Registry-Auth`` header (base64url
JSON, docker's AuthConfig); ketchd never reads the client's files. Pulls and
pushes answer with dockerd's JSON progress stream: an error before the first
message is an ordinary error response (so ``docker pull`` of a missing tag
prints "Error response from daemon: ..."), one after it ends the stream as an
``errorDetail`` message, as moby's write-flusher does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ketch.api.routers import add
from ketch.errors import (
    InvalidArgument,
    KetchError,
    NotSupported,
    System,
    Unauthorized,
    Unavailable,
)

if TYPE_CHECKING:
    from ketch.engine.distribution import Distribution, Emit
    from ketch.registry.client import Credentials

log = logging.getLogger(__name__)

DISTRIBUTION: web.AppKey[Distribution] = web.AppKey("distribution")
JSON_STREAM = "application/json"


class ClientGone(Exception):
    """The client hung up: the work in the thread stops at its next message."""


def registry_auth(request: web.Request, header: str = "X-Registry-Auth") -> Credentials | None:
    """The credentials a client sent, or None; a malformed header is a 400 (moby)."""
    value = request.headers.get(header, "")
    if not value:
        return None
    from ketch.registry.client import Credentials

    try:
        return Credentials.from_header(value)
    except (ValueError, KetchError) as exc:
        raise InvalidArgument(f"invalid {header} header: {exc}") from None


def error_message(exc: BaseException) -> dict[str, Any]:
    text = str(exc) if isinstance(exc, KetchError) else f"{type(exc).__name__}: {exc}"
    return {"errorDetail": {"message": text}, "error": text}


async def json_progress(request: web.Request, work: Callable[[Emit], Any]) -> web.StreamResponse:
    """Run ``work(emit)`` in a thread and stream what it emits (see the module docstring)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    gone = False

    def emit(message: dict[str, Any]) -> None:
        if gone:
            raise ClientGone()
        loop.call_soon_threadsafe(queue.put_nowait, ("message", message))

    def run() -> None:
        try:
            work(emit)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    task = loop.run_in_executor(None, run)
    response: web.StreamResponse | None = None
    try:
        while True:
            kind, value = await queue.get()
            if kind == "error" and response is None:
                raise value
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": JSON_STREAM})
                response.enable_chunked_encoding()
                await response.prepare(request)
            if kind == "message":
                await response.write(json.dumps(value).encode() + b"\r\n")
                continue
            if kind == "error":
                if not isinstance(value, KetchError | ClientGone):
                    log.error("%s %s failed", request.method, request.path, exc_info=value)
                await response.write(json.dumps(error_message(value)).encode() + b"\r\n")
            break
        await response.write_eof()
        return response
    finally:
        # Done, failed, or the client hung up (ConnectionError, CancelledError): the
        # thread's next message stops it; its result is not needed any more.
        gone = True
        task.add_done_callback(lambda f: f.exception())


@contextlib.contextmanager
def as_dockerd(kinds: tuple[type[KetchError], ...]) -> Iterator[None]:
    """Registry failures as dockerd reports them: a 500 with the message (an
    unreachable registry is not this daemon being unavailable)."""
    try:
        yield
    except kinds as exc:
        raise System(str(exc)) from None


def pull_response(request: web.Request) -> Any:
    """``POST /images/create?fromImage=...`` (called by the image router)."""
    dist = request.app.get(DISTRIBUTION)
    if dist is None:
        raise NotSupported("pulling images is not supported by this daemon")
    q = request.query
    creds = registry_auth(request)
    from_image, tag, platform = q.get("fromImage", ""), q.get("tag", ""), q.get("platform", "")
    # Errors in the names are answered before any stream starts (400).
    from ketch.engine.distribution import parse_platform, pull_reference

    pull_reference(from_image, tag)
    parse_platform(platform)

    def work(emit: Emit) -> None:
        with as_dockerd((Unauthorized, Unavailable)):
            # dockerd answers a refused pull with 500, not 401 (on a 401 the docker
            # CLI would start an interactive login, even with no terminal).
            dist.pull(from_image, tag, platform=platform, creds=creds, emit=emit)

    return json_progress(request, work)


def setup(app: web.Application, dist: Distribution) -> None:
    """Adds the registry routes; the image router's create route pulls through ``dist``."""
    app[DISTRIBUTION] = dist

    async def push(request: web.Request) -> web.StreamResponse:
        creds = registry_auth(request)
        name, tag = request.match_info["name"], request.query.get("tag", "")
        if request.query.get("platform"):
            raise NotSupported("pushing one platform of an image is not supported: ketch "
                               "keeps one platform per image")
        def work(emit: Emit) -> None:
            try:
                dist.push(name, tag, creds=creds, emit=emit)
            except Unauthorized as exc:
                # dockerd's push says only this, without the request it refused.
                if str(exc).endswith(": no basic auth credentials"):
                    raise Unauthorized("no basic auth credentials") from None
                raise

        return await json_progress(request, work)

    async def auth(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise InvalidArgument("invalid JSON in the request body") from None
        from ketch.registry.client import Credentials

        creds = Credentials.from_json(body if isinstance(body, dict) else {})
        def login() -> dict[str, str]:
            with as_dockerd((Unavailable,)):
                return dist.login(creds)

        result = await asyncio.to_thread(login)
        return web.json_response(result)

    async def distribution_inspect(request: web.Request) -> web.Response:
        creds = registry_auth(request)
        def inspect() -> dict[str, Any]:
            with as_dockerd((Unavailable,)):
                return dist.inspect(request.match_info["name"], creds)

        doc = await asyncio.to_thread(inspect)
        return web.json_response(doc)

    async def search(request: web.Request) -> web.Response:
        # There is no index to search (no Docker Hub, and registries have no search
        # API): say so as dockerd says an unreachable index.
        term = request.query.get("term", "")
        if not term:
            raise InvalidArgument("term is required")
        raise Unavailable("searching is not supported: ketch knows no registry index to "
                          "search (registries have no search API; use "
                          "GET /v2/_catalog on your own registry)")

    add(app, "POST", "/auth", auth)
    add(app, "GET", "/images/search", search)
    add(app, "POST", "/images/{name:.+}/push", push)
    add(app, "GET", "/distribution/{name:.+}/json", distribution_inspect)
