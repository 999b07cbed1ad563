"""Containers' filesystems: ``/containers/{id}/archive`` (HEAD, GET, PUT), ``/export``,
``/changes`` and ``POST /commit``.

Shapes follow moby's api/server/router/container (copy.go, container_routes.go):
the stat travels base64-encoded in ``X-Docker-Container-Path-Stat``, archives
are ``application/x-tar`` streams, commit answers 201 ``{"Id": ...}``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ketch.api import versions
from ketch.api.routers import add
from ketch.api.routers.images import bool_value
from ketch.engine.files import STAT_HEADER, ContainerFiles
from ketch.errors import InvalidArgument

if TYPE_CHECKING:
    from ketch.engine.containers import Engine


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.read(1 << 16):
        yield chunk


def _commit_config(raw: bytes) -> dict[str, Any] | None:
    """The body of ``POST /commit``: a container config, or nothing ("null" from the CLI)."""
    if not raw.strip():
        return None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    return doc


def setup(app: web.Application, engine: Engine) -> None:
    files = ContainerFiles(engine)

    async def stat_path(request: web.Request) -> web.Response:
        st = await files.stat(request.match_info["id"], request.query.get("path", ""))
        return web.Response(status=200, headers={STAT_HEADER: st.header(),
                                                 "Content-Type": "application/json"})

    async def get_archive(request: web.Request) -> web.StreamResponse:
        async with files.get_archive(request.match_info["id"],
                                     request.query.get("path", "")) as (st, chunks):
            response = web.StreamResponse(headers={STAT_HEADER: st.header(),
                                                   "Content-Type": "application/x-tar"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                async for chunk in chunks:
                    await response.write(chunk)
                await response.write_eof()
            return response

    async def put_archive(request: web.Request) -> web.Response:
        q = request.query
        await files.put_archive(request.match_info["id"], q.get("path", ""),
                                _body_chunks(request),
                                no_overwrite_dir_non_dir=bool_value(q, "noOverwriteDirNonDir"),
                                copy_uid_gid=bool_value(q, "copyUIDGID"))
        return web.Response(status=200)

    async def export(request: web.Request) -> web.StreamResponse:
        async with files.export(request.match_info["id"]) as chunks:
            response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                async for chunk in chunks:
                    await response.write(chunk)
                await response.write_eof()
            return response

    async def changes(request: web.Request) -> web.Response:
        import asyncio

        out = await asyncio.to_thread(files.changes, request.match_info["id"])
        return web.json_response(out)

    async def commit(request: web.Request) -> web.Response:
        q = request.query
        config = _commit_config(await request.read())
        pause = bool_value(q, "pause")
        if q.get("pause", "") == "" and versions.at_least(versions.of(request.match_info),
                                                          "1.13"):
            pause = True
        image_id = await files.commit(
            q.get("container", ""), repo=q.get("repo", ""), tag=q.get("tag", ""),
            comment=q.get("comment", ""), author=q.get("author", ""), pause=pause,
            changes=q.getall("changes", []), config=config)
        return web.json_response({"Id": image_id}, status=201)

    add(app, "HEAD", "/containers/{id}/archive", stat_path)
    add(app, "GET", "/containers/{id}/archive", get_archive)
    add(app, "PUT", "/containers/{id}/archive", put_archive)
    add(app, "GET", "/containers/{id}/export", export)
    add(app, "GET", "/containers/{id}/changes", changes)
    add(app, "POST", "/commit", commit)
