"""The HTTP face of the registry: OCI distribution spec v1.1 routes over a ``Store``.

    app = make_app(Store(FSDriver(root)), authorizer=None, read_only=False)
    await serve(app, "127.0.0.1", 5000)            # or run(app, ...) from a CLI

Repository names contain slashes, so ``/v2/`` is routed here by regular
expressions on the rest of the path (the spec's own ``<name>`` rule decides
what a name is, in ``store.check_name``). Every failure is a ``RegistryError``
that leaves as the spec's JSON error body; every response carries
``Docker-Distribution-API-Version: registry/2.0``, which Docker checks at ``/v2/``.

Blob bytes never sit whole in memory: uploads stream to the driver's writer in
large pieces, hashed as they go (the write of one piece overlaps the receipt of
the next), and downloads go out by sendfile when the driver has a host file.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, urlencode

from aiohttp import ClientPayloadError, web
from aiohttp.abc import AbstractAccessLogger

from ketch.registry.server import errors as E
from ketch.registry.server.auth import USER_KEY
from ketch.registry.server.errors import RegistryError
from ketch.registry.server.store import (
    Store,
    UploadSession,
    check_digest,
    check_name,
    check_upload_id,
)

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

log = logging.getLogger("ketch.registry")

API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"
# Uploads reach the driver in pieces of this size: few thread hops, bounded memory.
WRITE_PIECE = 4 << 20
READ_PIECE = 1 << 20
CATALOG_DEFAULT_N = 100
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CATALOG_MAX_N = 1000      # as Docker's registry: a catalog page is walked, not indexed
UPLOAD_TURN_WAIT = 60.0     # seconds a request waits for the one before it on an upload

Handler = Callable[[web.Request, "re.Match[str]"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class AppOptions:
    """How the registry behaves beyond the spec's defaults.

    ``upload_max_age``: upload sessions older than this (seconds) are removed
    at start and every ``purge_interval`` seconds (a writable registry only):
    gc cannot run beside a live server, so the server tidies these itself.
    """

    read_only: bool = False
    delete_enabled: bool = True
    upload_max_age: float = 7 * 24 * 3600
    purge_interval: float = 24 * 3600


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: re.Pattern[str]
    methods: dict[str, tuple[str, str]]    # method -> (handler attribute, access kind)


# The access kinds: "pull", "push" (push and pull), "delete", "catalog", "base" (log in only).
_ROUTES: tuple[_Route, ...] = (
    _Route(re.compile(r""), {"GET": ("base", "base"), "HEAD": ("base", "base")}),
    _Route(re.compile(r"_catalog"), {"GET": ("catalog", "catalog")}),
    _Route(re.compile(r"(?P<name>.+)/tags/list"), {"GET": ("tags_list", "pull")}),
    _Route(re.compile(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"), {
        "GET": ("get_manifest", "pull"), "HEAD": ("get_manifest", "pull"),
        "PUT": ("put_manifest", "push"), "DELETE": ("delete_manifest", "delete")}),
    _Route(re.compile(r"(?P<name>.+)/blobs/uploads/?"), {"POST": ("start_upload", "push")}),
    _Route(re.compile(r"(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)"), {
        "GET": ("upload_status", "push"), "PATCH": ("patch_upload", "push"),
        "PUT": ("finish_upload", "push"), "DELETE": ("cancel_upload", "push")}),
    _Route(re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"), {
        "GET": ("get_blob", "pull"), "HEAD": ("get_blob", "pull"),
        "DELETE": ("delete_blob", "delete")}),
    _Route(re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)"), {
        "GET": ("referrers", "pull")}),
)
_WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})


def _error_response(exc: RegistryError) -> web.Response:
    return web.Response(status=exc.status, body=exc.body(), content_type="application/json",
                        headers=exc.headers)


def _code_named(code: str) -> E.ErrorCode:
    for c in E.ALL_CODES:
        if c.code == code:
            return c
    return E.UNAUTHORIZED


def _page(items: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """The items after ``last`` (sorted input), at most ``n``; and whether more follow."""
    start = bisect.bisect_right(items, last) if last else 0
    rest = items[start:]
    if n is None:
        return rest, False
    return rest[:n], len(rest) > n


def _page_args(request: web.Request, default_n: int | None, max_n: int | None
               ) -> tuple[int | None, str | None]:
    n_text = request.query.get("n")
    n = default_n
    if n_text is not None and n_text != "":
        try:
            n = int(n_text)
        except ValueError:
            raise RegistryError(E.PAGINATION_NUMBER_INVALID, detail={"n": n_text}) from None
        if n < 0 or (max_n is not None and n > max_n):
            raise RegistryError(E.PAGINATION_NUMBER_INVALID, detail={"n": n})
    return n, request.query.get("last") or None


def _next_link(path: str, n: int, last: str) -> str:
    return f'<{path}?{urlencode({"n": n, "last": last})}>; rel="next"'


def _parse_content_range(value: str) -> tuple[int, int]:
    """``start-end`` (inclusive, as Docker sends it; ``bytes=``/``bytes `` tolerated)."""
    text = value.strip()
    for prefix in ("bytes=", "bytes "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.split("/", 1)[0]
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if m is None:
        raise RegistryError(E.RANGE_INVALID, detail={"Content-Range": value})
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise RegistryError(E.RANGE_INVALID, detail={"Content-Range": value})
    return start, end


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=a-b`` / ``a-`` / ``-n`` range within ``size``: (start, end exclusive).

    None when the header is not one we understand (the whole blob is sent, as
    HTTP allows); RANGE_INVALID when it asks for bytes past the end.
    """
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        count = int(m.group(2))
        if count == 0:
            raise RegistryError(E.RANGE_INVALID, headers={"Content-Range": f"bytes */{size}"})
        return max(0, size - count), size
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size
    if start >= size or end <= start:
        raise RegistryError(E.RANGE_INVALID, headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size)


class RegistryApp:
    """The handlers; one per app, holding the store, the authorizer and the options."""

    def __init__(self, store: Store, authorizer: Any = None,
                 options: AppOptions | None = None) -> None:
        self.store = store
        self.authorizer = authorizer
        self.options = options or AppOptions()
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def _upload_turn(self, upload_id: str) -> AsyncIterator[None]:
        """Requests on one upload, one after the other.

        A client that lost its connection mid-chunk asks where the upload stands
        and resumes at once, while the server may still be writing what arrived:
        it waits for that request to end instead of reading a size about to change.
        """
        lock, users = self._turns.get(upload_id) or (asyncio.Lock(), 0)
        self._turns[upload_id] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(UPLOAD_TURN_WAIT):
                    await lock.acquire()
            except TimeoutError:
                raise RegistryError(E.BLOB_UPLOAD_INVALID,
                                    detail="another request is writing to this upload") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._turns[upload_id]
            if users <= 1:
                del self._turns[upload_id]
            else:
                self._turns[upload_id] = (lock, users - 1)

    # -- dispatch --

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except RegistryError as exc:
            return _error_response(exc)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        for route in _ROUTES:
            m = route.pattern.fullmatch(tail)
            if m is None:
                continue
            entry = route.methods.get(request.method)
            if entry is None:
                raise RegistryError(E.UNSUPPORTED, headers={"Allow": ", ".join(route.methods)})
            attr, kind = entry
            name = m.groupdict().get("name")
            if name is not None:
                check_name(name)
            if request.method in _WRITES:
                if self.options.read_only:
                    raise RegistryError(E.UNSUPPORTED, "The registry is in read-only mode.")
                if kind == "delete" and not self.options.delete_enabled:
                    raise RegistryError(E.UNSUPPORTED, "Deletes are disabled on this registry.")
            await self.authorize(request, kind, name)
            handler: Handler = getattr(self, attr)
            return await handler(request, m)
        raise web.HTTPNotFound(text="404 page not found\n")

    # -- authorization --

    async def authorize(self, request: web.Request, kind: str, name: str | None,
                        extra: Sequence[tuple[str, str]] = ()) -> None:
        """Ask the authorizer for the access a route needs; spec errors when it says no."""
        if self.authorizer is None:
            return
        from ketch.registry.server.auth import Access

        accesses: list[Any] = []
        if kind == "catalog":
            accesses.append(Access("registry", "catalog", ("*",)))
        elif kind in ("pull", "push", "delete") and name is not None:
            actions = {"pull": ("pull",), "push": ("pull", "push"), "delete": ("delete",)}[kind]
            accesses.append(Access("repository", name, actions))
        for repo, action in extra:
            accesses.append(Access("repository", repo, (action,)))
        await self._ask(request, accesses)

    async def _ask(self, request: web.Request, accesses: list[Any]) -> None:
        from ketch.registry.server.auth import Challenge, Denied

        try:
            user = await self.authorizer.authorize(request, accesses)
        except Challenge as exc:
            code = getattr(exc, "code", "UNAUTHORIZED") or "UNAUTHORIZED"
            raise RegistryError(_code_named(code), exc.message, getattr(exc, "detail", None),
                                status=401,
                                headers={"WWW-Authenticate": exc.www_authenticate}) from None
        except Denied as exc:
            raise RegistryError(E.DENIED, getattr(exc, "message", None) or E.DENIED.message
                                ) from None
        if user:
            request[USER_KEY] = user

    async def _may_pull(self, request: web.Request, repo: str) -> bool:
        """Whether the client may pull ``repo`` (a mount's source); never a challenge."""
        if self.authorizer is None:
            return True
        from ketch.registry.server.auth import Access

        try:
            await self._ask(request, [Access("repository", repo, ("pull",))])
        except RegistryError:
            return False
        return True

    # -- base, catalog, tags --

    async def base(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        return web.json_response({})

    async def catalog(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        n, last = _page_args(request, CATALOG_DEFAULT_N, CATALOG_MAX_N)
        repos = await asyncio.to_thread(self.store.repositories)
        page, more = _page(repos, n, last)
        headers = {}
        if more and n and page:
            headers["Link"] = _next_link("/v2/_catalog", n, page[-1])
        return web.json_response({"repositories": page}, headers=headers)

    async def tags_list(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        name = m["name"]
        n, last = _page_args(request, None, None)
        tags = await asyncio.to_thread(self.store.tags, name)
        page, more = _page(tags, n, last)
        headers = {}
        if more and n and page:
            headers["Link"] = _next_link(f"/v2/{name}/tags/list", n, page[-1])
        return web.json_response({"name": name, "tags": page}, headers=headers)

    # -- manifests --

    async def get_manifest(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        rec = await asyncio.to_thread(self.store.get_manifest, m["name"], m["reference"])
        headers = {"Docker-Content-Digest": rec.digest, "ETag": f'"{rec.digest}"',
                   "Content-Type": rec.media_type}
        if request.method == "HEAD":
            headers["Content-Length"] = str(rec.size)
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=rec.data, headers=headers)

    async def put_manifest(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        name, reference = m["name"], m["reference"]
        limit = self.store.max_manifest_size
        if request.content_length is not None and request.content_length > limit:
            raise RegistryError(E.SIZE_INVALID, "manifest too big", status=413,
                                detail={"size": request.content_length, "limit": limit})
        data = bytearray()
        async for chunk in request.content.iter_chunked(READ_PIECE):
            data += chunk
            if len(data) > limit:
                raise RegistryError(E.SIZE_INVALID, "manifest too big", status=413,
                                    detail={"limit": limit})
        rec = await asyncio.to_thread(self.store.put_manifest, name, reference, bytes(data),
                                      request.headers.get("Content-Type"))
        headers = {"Location": f"/v2/{name}/manifests/{rec.digest}",
                   "Docker-Content-Digest": rec.digest}
        if rec.subject:
            headers["OCI-Subject"] = rec.subject
        return web.Response(status=201, headers=headers)

    async def delete_manifest(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        await asyncio.to_thread(self.store.delete_manifest, m["name"], m["reference"])
        return web.Response(status=202)

    async def referrers(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        artifact_type = request.query.get("artifactType") or None
        descs = await asyncio.to_thread(self.store.referrers, m["name"], m["digest"],
                                        artifact_type)
        headers = {"Content-Type": OCI_INDEX}    # exactly: clients compare it, no charset
        if artifact_type:
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}
        return web.Response(body=json.dumps(body).encode(), headers=headers)

    # -- blobs --

    async def get_blob(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        name, digest = m["name"], m["digest"]
        check_digest(digest)
        info = await asyncio.to_thread(self.store.stat_blob, name, digest)
        headers = {"Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "Cache-Control": "max-age=31536000"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(info.size)
            return web.Response(status=200, headers=headers)
        # Read and written here, never sendfile: with sendfile the only copy of the
        # bytes falls to the client's receive, and a single-threaded client (skopeo
        # copying layer after layer) then pulls slower than from the Go registry
        # (bench/registry.py: 1.02-1.08x with sendfile, 0.92x without).
        return await self._stream_blob(request, name, digest, info.size, headers)

    async def _stream_blob(self, request: web.Request, name: str, digest: str, size: int,
                           headers: dict[str, str]) -> web.StreamResponse:
        start, end = 0, size
        status = 200
        rng = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if rng and (if_range is None or if_range == headers.get("ETag")):
            parsed = _parse_range(rng, size)
            if parsed is not None:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        reader = await asyncio.to_thread(self.store.open_blob, name, digest, start)
        try:
            await resp.prepare(request)
            left = end - start
            while left > 0:
                chunk = await asyncio.to_thread(reader.read, min(READ_PIECE, left))
                if not chunk:
                    break
                await resp.write(chunk)
                left -= len(chunk)
        finally:
            await asyncio.to_thread(reader.close)
        await resp.write_eof()
        return resp

    async def delete_blob(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        await asyncio.to_thread(self.store.delete_blob, m["name"], m["digest"])
        return web.Response(status=202)

    # -- uploads --

    @staticmethod
    def _upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
        return {"Location": f"/v2/{name}/blobs/uploads/{upload_id}",
                "Range": f"0-{max(size - 1, 0)}", "Docker-Upload-UUID": upload_id}

    @staticmethod
    def _blob_created(name: str, digest: str) -> web.Response:
        return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}",
                                                 "Docker-Content-Digest": digest})

    async def start_upload(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        name = m["name"]
        mount, source = request.query.get("mount"), request.query.get("from")
        if mount:
            check_digest(mount)
            if source:
                check_name(source)
                if await self._may_pull(request, source):
                    info = await asyncio.to_thread(self.store.mount_blob, name, source, mount)
                    if info is not None:
                        return self._blob_created(name, info.digest)
            # not mountable: an ordinary upload session, which the client then fills (202)
        digest = request.query.get("digest")
        status = await asyncio.to_thread(self.store.start_upload, name)
        if digest:
            check_digest(digest)
            session = await asyncio.to_thread(self.store.open_upload, name, status.upload_id)
            try:
                await self._receive(request, session)
                info = await asyncio.to_thread(session.finish, digest)
            except BaseException:
                await asyncio.to_thread(session.cancel)
                await asyncio.to_thread(self._forget_upload, name, status.upload_id)
                raise
            return self._blob_created(name, info.digest)
        return web.Response(status=202,
                            headers=self._upload_headers(name, status.upload_id, 0))

    def _forget_upload(self, name: str, upload_id: str) -> None:
        try:
            self.store.cancel_upload(name, upload_id)
        except RegistryError:
            pass

    async def _receive(self, request: web.Request, session: UploadSession) -> int:
        """Stream the request body into ``session``; bytes received.

        Pieces of WRITE_PIECE go to the writer in a thread while the next piece
        is read from the socket, so disk and network work at the same time.
        """
        received = 0
        pending: asyncio.Future[None] | None = None
        parts: list[bytes] = []
        buffered = 0
        try:
            async for chunk in request.content.iter_chunked(READ_PIECE):
                parts.append(chunk)
                buffered += len(chunk)
                received += len(chunk)
                if buffered >= WRITE_PIECE:
                    piece = b"".join(parts)
                    parts, buffered = [], 0
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(asyncio.to_thread(session.write, piece))
        finally:
            # Also when the client hung up: what arrived is kept, so that the upload
            # resumes from there (GET on the upload tells the client where it stands).
            if pending is not None:
                await pending
            if parts:
                await asyncio.to_thread(session.write, b"".join(parts))
        return received

    async def _open(self, name: str, upload_id: str) -> UploadSession:
        check_upload_id(upload_id)
        return await asyncio.to_thread(self.store.open_upload, name, upload_id)

    async def patch_upload(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        async with self._upload_turn(m["uuid"]):
            return await self._patch_upload(request, m["name"], m["uuid"])

    async def _patch_upload(self, request: web.Request, name: str, upload_id: str
                            ) -> web.StreamResponse:
        session = await self._open(name, upload_id)
        try:
            crange = request.headers.get("Content-Range")
            if crange:
                start, end = _parse_content_range(crange)
                length = request.content_length
                if start != session.size or (length is not None and length != end - start + 1):
                    raise RegistryError(E.RANGE_INVALID,
                                        detail={"expected_start": session.size},
                                        headers=self._upload_headers(name, upload_id,
                                                                     session.size))
            await self._receive(request, session)
            size = session.size
        finally:
            await asyncio.to_thread(session.close)
        return web.Response(status=202, headers=self._upload_headers(name, upload_id, size))

    async def finish_upload(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        async with self._upload_turn(m["uuid"]):
            return await self._finish_upload(request, m["name"], m["uuid"])

    async def _finish_upload(self, request: web.Request, name: str, upload_id: str
                             ) -> web.StreamResponse:
        digest = request.query.get("digest")
        if not digest:
            raise RegistryError(E.DIGEST_INVALID, detail="digest missing")
        check_digest(digest)
        session = await self._open(name, upload_id)
        finished = False
        try:
            crange = request.headers.get("Content-Range")
            if crange:
                start, _ = _parse_content_range(crange)
                if start != session.size:
                    raise RegistryError(E.RANGE_INVALID,
                                        headers=self._upload_headers(name, upload_id,
                                                                     session.size))
            await self._receive(request, session)
            finished = True
            info = await asyncio.to_thread(session.finish, digest)
        finally:
            if not finished:
                await asyncio.to_thread(session.close)
        return self._blob_created(name, info.digest)

    async def upload_status(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        name, upload_id = m["name"], m["uuid"]
        check_upload_id(upload_id)
        async with self._upload_turn(upload_id):
            status = await asyncio.to_thread(self.store.upload_status, name, upload_id)
        return web.Response(status=204, headers=self._upload_headers(name, upload_id,
                                                                     status.size))

    async def cancel_upload(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        name, upload_id = m["name"], m["uuid"]
        check_upload_id(upload_id)
        async with self._upload_turn(upload_id):
            await asyncio.to_thread(self.store.cancel_upload, name, upload_id)
        return web.Response(status=204, headers={"Docker-Upload-UUID": upload_id})


REGISTRY_KEY = web.AppKey("ketch.registry", RegistryApp)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[API_VERSION_HEADER] = API_VERSION


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
                  ) -> web.StreamResponse:
    """Unexpected failures as the spec's UNKNOWN error, logged with their traceback."""
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except RegistryError as exc:
        return _error_response(exc)
    except web.HTTPException:
        raise
    except (ConnectionError, ClientPayloadError) as exc:
        # The client hung up mid-body (what arrived is kept for a resumed upload): no
        # traceback, a line in the access log, and an answer nobody will read.
        log.info("%s %s: the client went away: %s", request.method, request.path, exc)
        return _error_response(RegistryError(E.BLOB_UPLOAD_INVALID, "incomplete request body"))
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return _error_response(RegistryError(E.UNKNOWN, detail=str(exc)))


async def _purge_uploads(app: web.Application) -> AsyncIterator[None]:
    """Remove abandoned upload sessions now and then, for as long as the app runs."""
    handlers = app[REGISTRY_KEY]
    options = handlers.options

    async def loop() -> None:
        while True:
            try:
                gone = await asyncio.to_thread(handlers.store.purge_uploads,
                                               options.upload_max_age)
                if gone:
                    log.info("removed %d abandoned uploads", len(gone))
            except Exception:
                log.exception("removing abandoned uploads failed")
            await asyncio.sleep(options.purge_interval)

    task = asyncio.ensure_future(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_app(store: Store, *, authorizer: Any = None, read_only: bool = False,
             delete_enabled: bool = True, options: AppOptions | None = None
             ) -> web.Application:
    """The registry as an aiohttp application (``authorizer`` None: everyone may do anything).

    ``options``, when given, replaces ``read_only`` and ``delete_enabled``.
    """
    app = web.Application(middlewares=[_errors])
    options = options or AppOptions(read_only, delete_enabled)
    handlers = RegistryApp(store, authorizer, options)
    app[REGISTRY_KEY] = handlers
    if not options.read_only:
        app.cleanup_ctx.append(_purge_uploads)
    if authorizer is not None:
        app.add_routes(authorizer.routes())

    async def v2_redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/v2/")

    app.router.add_route("*", "/v2", v2_redirect)
    app.router.add_route("*", "/v2/{tail:.*}", handlers.dispatch)
    app.on_response_prepare.append(_on_prepare)
    return app


# --- serving ----------------------------------------------------------------------------------

class CommonLogAccessLogger(AbstractAccessLogger):
    """One line per request in the common log format (host ident user [time] "request" status bytes)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
        remote = request.remote or "-"
        user = request.get(USER_KEY) or "-"
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        # the body's bytes (body_length would count the headers too); none for HEAD
        size = response.content_length if request.method != "HEAD" else 0
        line = (f'{remote} - {quote(str(user), safe="@._-")} [{when}] '
                f'"{request.method} {request.path_qs} {version}" '
                f"{response.status} {size if size is not None else '-'}")
        self.logger.info(line)


def access_logger(target: str | None, stream: TextIO | None = None) -> logging.Logger | None:
    """A logger writing bare lines to ``target`` (a file path, or ``-`` for stdout)."""
    if not target:
        return None
    logger = logging.getLogger(f"ketch.registry.access.{id(stream)}.{target}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(stream or sys.stdout)
    else:
        handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    return logger


def ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from PEM certificate chain and key files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def start(app: web.Application, host: str | None, port: int, *,
                tls: ssl.SSLContext | None = None, access_log: logging.Logger | None = None
                ) -> tuple[web.AppRunner, int]:
    """Start listening; the runner (``await runner.cleanup()`` stops it) and the bound port."""
    runner = web.AppRunner(app, access_log=access_log, access_log_class=CommonLogAccessLogger,
                           handle_signals=False, read_bufsize=READ_PIECE)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls, backlog=256)
    await site.start()
    bound = port
    sockets = getattr(site._server, "sockets", None)    # port 0: the one the kernel chose
    if sockets:
        bound = sockets[0].getsockname()[1]
    return runner, bound


async def serve(app: web.Application, host: str | None, port: int, *,
                tls: ssl.SSLContext | None = None, access_log: logging.Logger | None = None,
                stop: asyncio.Event | None = None,
                ready: Callable[[int], None] | None = None) -> None:
    """Serve until ``stop`` is set, or SIGTERM/SIGINT arrive; in-flight requests finish first."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass    # not the main thread (tests): the caller sets ``stop``
    runner, bound = await start(app, host, port, tls=tls, access_log=access_log)
    try:
        if ready is not None:
            ready(bound)
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
