"""``/images/...``: list, inspect, history, tag, remove, prune, save, load, import.

Shapes follow moby's api/types/image and its image router
(api/server/router/image). The backend is the daemon's image service, called
in a worker thread (``asyncio.to_thread``) because it reads and writes disk
and SQLite; the event loop never waits on it.

Archives are never held whole in memory: a request body reaches the backend
through a file-like reader that pulls from aiohttp's stream as the backend
reads (the archive loader and the importer read forward only), and ``docker
save`` output goes out through a file-like writer that sends each chunk as
it is written. The response starts only with the first byte of the archive,
so a bad name is still an ordinary error status ("No such image: x", 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from aiohttp import web

from ketch.api import versions
from ketch.api.routers import add
from ketch.errors import InvalidArgument, NotSupported

if TYPE_CHECKING:
    from ketch.api.routers.system import ImageUsage

log = logging.getLogger("ketch.api")

CHUNK = 1 << 20
JSON_STREAM = "application/json"

# Aliases for annotations inside ImageBackend, whose ``list`` method shadows the builtin.
Filters = dict[str, list[str]]
Records = Sequence[Mapping[str, Any]]


class Summary(Protocol):
    """An image as ``GET /images/json`` lists it (``ketch.image.service.ImageSummary``)."""

    @property
    def id(self) -> str: ...

    @property
    def repo_tags(self) -> list[str]: ...

    def to_json(self) -> dict[str, Any]: ...


class ImageBackend(Protocol):
    """What these routes need from the daemon (moby's image backend pattern).

    Every method may block; the routes call them in a thread.
    """

    def list(self, filters: Filters | None = None, all: bool = False) -> Sequence[Summary]: ...

    def inspect(self, name: str) -> dict[str, Any]: ...

    def history(self, name: str) -> Records: ...

    def tag(self, src: str, dst: str) -> None: ...

    def remove(self, name: str, force: bool = False, noprune: bool = False) -> Records: ...

    def prune(self, filters: Filters | None = None, *, all: bool = False) -> dict[str, Any]: ...

    def disk_usage(self) -> ImageUsage: ...  # for /system/df

    def save(self, refs_or_ids: Sequence[str], out: BinaryIO) -> None: ...

    def load(self, stream: BinaryIO, moved: dict[str, str] | None = None
             ) -> Sequence[Summary]: ...

    def import_rootfs(self, tar_stream: BinaryIO, ref: str | None = None,
                      changes: Sequence[str] = (), message: str = "") -> Summary: ...


# --- request parsing (plain functions, unit-tested) ---------------------------------------


def bool_value(query: Mapping[str, str], key: str) -> bool:
    """moby's httputils.BoolValue: anything but "", 0, no, false, none is true."""
    value = query.get(key, "").strip().lower()
    return value not in ("", "0", "no", "false", "none")


def parse_filters(raw: str | None) -> Filters:
    """The ``filters`` parameter, both of moby's JSON forms, as ``{key: [values]}``.

    ``{"dangling":{"true":true}}`` (what clients send since API 1.22) and the
    legacy ``{"dangling":["true"]}``.
    """
    if raw is None or raw.strip() == "":
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"invalid filter: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid filter: expected a JSON object")
    out: Filters = {}
    for key, values in doc.items():
        if isinstance(values, dict):
            out[key] = [str(v) for v, on in values.items() if on is True]
        elif isinstance(values, list) and all(isinstance(v, str) for v in values):
            out[key] = list(values)
        else:
            raise InvalidArgument(f"invalid filter: values of {key!r} must be a map or a list")
    return out


def list_filters(query: Mapping[str, str], version: str) -> Filters:
    """``GET /images/json``'s filters, with API < 1.28's ``filter=<reference>`` folded in."""
    filters = parse_filters(query.get("filters"))
    legacy = query.get("filter", "")
    if legacy and not versions.at_least(version, "1.28"):
        filters.setdefault("reference", []).append(legacy)
    return filters


def tag_target(repo: str, tag: str) -> str:
    """``repo`` and ``tag`` query values as one reference, as moby joins them."""
    if not repo:
        raise InvalidArgument("repository name must have at least one component")
    return f"{repo}:{tag}" if tag else repo


def summary_json(s: Summary, version: str) -> dict[str, Any]:
    """One list entry; VirtualSize (equal to Size) only for clients before API 1.44."""
    out = s.to_json()
    if not versions.at_least(version, "1.44"):
        out["VirtualSize"] = out.get("Size", 0)
    return out


def inspect_json(doc: dict[str, Any], version: str) -> dict[str, Any]:
    """VirtualSize only before API 1.44; Container and ContainerConfig only before 1.45."""
    out = dict(doc)
    if versions.at_least(version, "1.45"):
        out.pop("Container", None)
        out.pop("ContainerConfig", None)
    if not versions.at_least(version, "1.44"):
        out["VirtualSize"] = out.get("Size", 0)
    return out


def load_messages(loaded: Sequence[Summary], moved: Mapping[str, str] | None = None
                  ) -> list[dict[str, str]]:
    """What ``docker load`` prints: one line per tag, or the id of an untagged image;
    a tag taken from another image says so first, as moby's setLoadedTag."""
    out: list[dict[str, str]] = []
    moved = moved or {}
    for s in loaded:
        if s.repo_tags:
            for t in s.repo_tags:
                if t in moved:
                    out.append({"stream": f"The image {t} already exists, renaming the old "
                                          f"one with ID {moved[t]} to empty string\n"})
                out.append({"stream": f"Loaded image: {t}\n"})
        else:
            out.append({"stream": f"Loaded image ID: {s.id}\n"})
    return out


def json_lines(messages: Sequence[dict[str, Any]]) -> bytes:
    """moby's streamformatter output: one JSON object per CRLF-terminated line."""
    return b"".join(json.dumps(m).encode() + b"\r\n" for m in messages)


async def json_stream(request: web.Request, messages: Sequence[dict[str, Any]]
                      ) -> web.StreamResponse:
    """Send ``messages`` as dockerd does, chunked: clients such as docker-py only
    read a body as a stream of JSON objects (not one document) when it is."""
    response = web.StreamResponse(headers={"Content-Type": JSON_STREAM})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(json_lines(messages))
    await response.write_eof()
    return response


# --- file-like bridges between the event loop and a worker thread ------------------------


class _BodyReader(io.RawIOBase):
    """A request body as a blocking, read-forward file, for use in a worker thread only."""

    def __init__(self, content: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._content = content
        self._loop = loop

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        want = min(len(view), CHUNK)
        data: bytes = asyncio.run_coroutine_threadsafe(
            self._content.read(want), self._loop).result()
        view[:len(data)] = data
        return len(data)


class _ResponseWriter(io.RawIOBase):
    """A streamed response as a blocking file; the response starts with the first write."""

    def __init__(self, request: web.Request, response: web.StreamResponse,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._request = request
        self._response = response
        self._loop = loop
        self.started = False

    def writable(self) -> bool:
        return True

    def write(self, buf: Any) -> int:
        data = bytes(buf)
        if not data:
            return 0
        if _on_loop(self._loop):
            # Only a finalizer writes from the loop's own thread (a BufferedWriter
            # flushing as it is collected, after the client left): waiting here for
            # the loop would stop the whole daemon.
            raise BrokenPipeError("the response is no longer being written")
        asyncio.run_coroutine_threadsafe(self._send(data), self._loop).result()
        return len(data)

    async def _send(self, data: bytes) -> None:
        if not self.started:
            self.started = True
            await self._response.prepare(self._request)
        await self._response.write(data)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def body_reader(request: web.Request) -> BinaryIO:
    raw = _BodyReader(request.content, asyncio.get_running_loop())
    return io.BufferedReader(raw, CHUNK)


# --- routes ---------------------------------------------------------------------------------


def setup(app: web.Application, backend: ImageBackend) -> None:
    """Adds the image routes, bound to ``backend``.

    Fixed paths are registered before the ``{name}`` ones; names may contain
    slashes (``me/box:1``), as in moby's ``{name:.*}`` routes.
    """

    async def list_images(request: web.Request) -> web.Response:
        version = versions.of(request.match_info)
        filters = list_filters(request.query, version)
        images = await asyncio.to_thread(backend.list, filters, bool_value(request.query, "all"))
        return web.json_response([summary_json(s, version) for s in images])

    async def inspect_image(request: web.Request) -> web.Response:
        version = versions.of(request.match_info)
        doc = await asyncio.to_thread(backend.inspect, request.match_info["name"])
        return web.json_response(inspect_json(doc, version))

    async def image_history(request: web.Request) -> web.Response:
        items = await asyncio.to_thread(backend.history, request.match_info["name"])
        return web.json_response([dict(i) for i in items])

    async def tag_image(request: web.Request) -> web.Response:
        dst = tag_target(request.query.get("repo", ""), request.query.get("tag", ""))
        await asyncio.to_thread(backend.tag, request.match_info["name"], dst)
        return web.Response(status=201)

    async def delete_image(request: web.Request) -> web.Response:
        records = await asyncio.to_thread(
            backend.remove, request.match_info["name"],
            bool_value(request.query, "force"), bool_value(request.query, "noprune"))
        return web.json_response([dict(r) for r in records])

    async def prune_images(request: web.Request) -> web.Response:
        # The backend checks the filters (names, dangling, until, label, label!)
        # with dockerd's words; ``docker image prune -a`` sends dangling=false.
        filters = parse_filters(request.query.get("filters"))
        return web.json_response(await asyncio.to_thread(backend.prune, filters))

    async def save(request: web.Request, names: list[str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        raw = _ResponseWriter(request, response, asyncio.get_running_loop())
        out = io.BufferedWriter(raw, CHUNK)

        def run() -> None:
            try:
                backend.save(names, out)
                out.flush()
            finally:
                # Whatever is still buffered is given up here, in this thread: not
                # flushed by a finalizer on the event loop's thread.
                with contextlib.suppress(OSError, ValueError):
                    out.close()

        try:
            await asyncio.to_thread(run)
        except Exception:
            if not raw.started:
                raise  # nothing sent yet: an ordinary error response
            # Headers and part of the tar are out: only a cut connection tells the
            # client that the archive is incomplete (a clean end would not).
            log.exception("GET %s: the archive stopped part way", request.path)
            if request.transport is not None:
                request.transport.abort()
            return response
        if not raw.started:
            await response.prepare(request)
        await response.write_eof()
        return response

    async def get_images(request: web.Request) -> web.StreamResponse:
        return await save(request, request.query.getall("names", []))

    async def get_image(request: web.Request) -> web.StreamResponse:
        return await save(request, [request.match_info["name"]])

    async def load_images(request: web.Request) -> web.StreamResponse:
        # The whole archive is read before anything is answered (a load is all or
        # nothing), so a failure keeps its status; ``quiet`` only silences
        # progress bars in dockerd, which ketch does not draw.
        moved: dict[str, str] = {}
        loaded = await asyncio.to_thread(backend.load, body_reader(request), moved)
        return await json_stream(request, load_messages(loaded, moved))

    async def create_image(request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("fromImage"):
            from ketch.api.routers import distribution

            return await distribution.pull_response(request)
        src = q.get("fromSrc", "")
        if not src:
            raise InvalidArgument("fromImage or fromSrc is required")
        if src != "-":
            raise NotSupported("importing images from a URL is not supported yet")
        if q.get("platform"):
            raise NotSupported("importing for another platform is not supported yet")
        repo, tag = q.get("repo", ""), q.get("tag", "")
        ref = tag_target(repo, tag) if repo else None
        changes = q.getall("changes", [])
        summary = await asyncio.to_thread(backend.import_rootfs, body_reader(request), ref,
                                          changes, q.get("message", ""))
        return await json_stream(request, [{"status": summary.id}])

    # /system/df reports on this store too (imported here: system imports this module).
    from ketch.api.routers import system

    system.stores(app).images = backend
    add(app, "GET", "/images/json", list_images)
    add(app, "GET", "/images/get", get_images)
    add(app, "POST", "/images/load", load_images)
    add(app, "POST", "/images/create", create_image)
    add(app, "POST", "/images/prune", prune_images)
    add(app, "GET", "/images/{name:.+}/json", inspect_image)
    add(app, "GET", "/images/{name:.+}/history", image_history)
    add(app, "GET", "/images/{name:.+}/get", get_image)
    add(app, "POST", "/images/{name:.+}/tag", tag_image)
    add(app, "DELETE", "/images/{name:.+}", delete_image)
