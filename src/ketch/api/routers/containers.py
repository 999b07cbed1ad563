"""``/containers/...``: create, start, stop, restart, kill, wait, remove, inspect, list,
rename, pause, unpause, top, and the containers' part of ``/system/df`` and prune.

Shapes and statuses follow moby's container router (api/server/router/
container). The engine lives on the daemon's event loop, so handlers await
it directly; it moves blocking work to threads itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ketch.api import versions
from ketch.api.routers import add, json_object
from ketch.api.routers.images import bool_value, parse_filters
from ketch.errors import InvalidArgument, KetchError, NotFound

if TYPE_CHECKING:
    from ketch.api.routers.system import PruneOptions
    from ketch.engine.containers import Engine


def _int(query: Mapping[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"invalid value for {key}: {raw}") from None


_RUNNING: set[asyncio.Task[None]] = set()
EXEC_EXIT_GRACE = 0.5   # seconds an inspect of a running exec waits for its exit


async def _outside_the_request(coro: Any) -> None:
    """Run ``coro`` as its own task: after a hijack aiohttp may cancel the handler
    (the connection it knew is gone), and the hand-over to the supervisor must not
    stop half-way."""
    task = asyncio.ensure_future(coro)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


async def _json_body(request: web.Request) -> dict[str, Any]:
    return json_object(await request.read())


class ContainerUsage:
    """The engine as ``/system/df`` and ``/containers/prune`` see it (called from threads)."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop

    def disk_usage(self) -> list[dict[str, Any]]:
        return [self.engine.summary(c, size=True) for c in self.engine.store.all()]

    def prune(self, filters: Mapping[str, Sequence[str]], options: PruneOptions
              ) -> dict[str, Any]:
        flt = {k: list(v) for k, v in filters.items()}
        return asyncio.run_coroutine_threadsafe(self.engine.prune(flt), self.loop).result()


# Architecture names as the OCI image spec (and docker's platforms package) spell them.
_ARCH = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
         "armel": "arm", "i386": "386"}


def _check_platform(engine: Engine, body: bytes, platform: str) -> None:
    """``create?platform=os/arch[/variant]``: ketch has one image per name, for this
    machine, and pulls nothing; an image of another platform is dockerd's "not found"
    (the docker CLI then tries to pull it, and says why that fails)."""
    try:
        ref = str(json.loads(body or b"{}").get("Image") or "")
    except (ValueError, AttributeError):
        return          # the create itself reports the malformed body
    parts = platform.lower().split("/")
    if len(parts) > 3 or not all(parts):
        raise InvalidArgument(f'"{platform}": unknown operating system or architecture: '
                              "invalid argument")
    try:
        img = engine.images.inspect(ref)
    except KetchError:
        return          # no such image: the create says so
    want = [parts[0], _ARCH.get(parts[1], parts[1]) if len(parts) > 1 else ""]
    have = [str(img.get("Os") or "linux"), str(img.get("Architecture") or "")]
    if len(parts) > 2:
        want.append(parts[2])
        have.append(str(img.get("Variant") or ""))
    if want[1] == "":
        want[1] = have[1]
    if want != have:
        raise NotFound(f"image with reference {ref} was found but does not match the "
                       f"specified platform: wanted {'/'.join(want)}, "
                       f"actual: {'/'.join(h for h in have if h)}")


def setup(app: web.Application, engine: Engine) -> None:
    from ketch.api.routers import system

    async def on_startup(app: web.Application) -> None:
        system.stores(app).containers = ContainerUsage(engine, asyncio.get_running_loop())

    app.on_startup.append(on_startup)

    async def create(request: web.Request) -> web.Response:
        body = await request.read()
        if request.query.get("platform"):
            await asyncio.to_thread(_check_platform, engine, body, request.query["platform"])
        cid, warnings = await engine.create(body, request.query.get("name", ""),
                                            api_version=versions.of(request.match_info))
        return web.json_response({"Id": cid, "Warnings": warnings}, status=201)

    async def list_containers(request: web.Request) -> web.Response:
        q = request.query
        limit = _int(q, "limit")
        rows = engine.ps(all=bool_value(q, "all"), limit=-1 if limit is None else limit,
                         size=bool_value(q, "size"), filters=parse_filters(q.get("filters")))
        return web.json_response(rows)

    async def inspect(request: web.Request) -> web.Response:
        doc = engine.inspect(request.match_info["id"], size=bool_value(request.query, "size"))
        _shape_endpoints(doc, versions.of(request.match_info))
        return web.json_response(doc)

    async def start(request: web.Request) -> web.Response:
        if request.query.get("checkpoint"):
            from ketch.errors import NotSupported

            raise NotSupported("checkpoints are not supported")
        await engine.start(request.match_info["id"])
        return web.Response(status=204)

    async def stop(request: web.Request) -> web.Response:
        await engine.stop(request.match_info["id"], _int(request.query, "t"),
                          request.query.get("signal") or None)
        return web.Response(status=204)

    async def restart(request: web.Request) -> web.Response:
        await engine.restart(request.match_info["id"], _int(request.query, "t"),
                             request.query.get("signal") or None)
        return web.Response(status=204)

    async def kill(request: web.Request) -> web.Response:
        name = request.match_info["id"]
        from ketch.engine.containers import parse_signal

        sig = request.query.get("signal") or None
        if sig is not None:
            parse_signal(sig)       # refused as it is: dockerd parses it before the kill
        try:
            await engine.kill(name, sig)
        except KetchError as exc:
            # dockerd's router wraps every kill error in its name for the container
            text = str(exc)
            if not text.startswith("Cannot kill container"):
                raise type(exc)(f"Cannot kill container: {name}: {text}") from exc
            raise
        return web.Response(status=204)

    async def wait(request: web.Request) -> web.StreamResponse:
        # As dockerd: check the container, send the headers at once (the docker CLI
        # waits for them before it starts the container), the body when it exits.
        cid = request.match_info["id"]
        engine.store.get(cid)
        condition = request.query.get("condition", "not-running")
        waiter = asyncio.ensure_future(engine.wait(cid, condition))
        try:
            await asyncio.sleep(0)
            if waiter.done():
                return web.json_response(waiter.result())
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            result = await waiter
            # A client that stopped waiting (it hung up) is no error of ours.
            with contextlib.suppress(ConnectionResetError):
                await response.write(json.dumps(result).encode() + b"\n")
                await response.write_eof()
            return response
        finally:
            if not waiter.done():
                waiter.cancel()

    async def remove(request: web.Request) -> web.Response:
        q = request.query
        if bool_value(q, "link"):
            from ketch.errors import NotSupported

            raise NotSupported("links are not supported")
        await engine.remove(request.match_info["id"], force=bool_value(q, "force"),
                            volumes=bool_value(q, "v"))
        return web.Response(status=204)

    async def rename(request: web.Request) -> web.Response:
        await engine.rename(request.match_info["id"], request.query.get("name", ""))
        return web.Response(status=204)

    async def pause(request: web.Request) -> web.Response:
        await engine.pause(request.match_info["id"])
        return web.Response(status=204)

    async def unpause(request: web.Request) -> web.Response:
        await engine.unpause(request.match_info["id"])
        return web.Response(status=204)

    async def top(request: web.Request) -> web.Response:
        out = await engine.top(request.match_info["id"], request.query.get("ps_args", "-ef"))
        return web.json_response(out)

    async def attach(request: web.Request) -> web.StreamResponse:
        from ketch.api import streams

        q = request.query
        with_logs = bool_value(q, "logs")
        if with_logs:
            # dockerd's containerAttach: the log so far first, then (stream=1) the live
            # output; a container that is not running has only its log to give.
            c = engine.store.get(request.match_info["id"])
            if not bool_value(q, "stream") or c.state.status not in ("created", "running",
                                                                     "paused"):
                return await _attach_log_only(request, c)
        # dockerd's attach event comes before the stream (and, for `docker run`, before
        # the start's network connect, which ketch does while preparing the attach).
        engine.on_event("attach", engine.attachable(request.match_info["id"]), {})
        c = await engine.ready_for_attach(request.match_info["id"])
        tty = bool(c.config.get("Tty"))
        content_type = streams.stream_content_type(not tty, versions.of(request.match_info))
        # Not started yet (docker run): the supervisor gets the connection before the
        # client reads the answer, since the client starts the container right then.
        early = c.state.status in ("created", "exited")
        sock = streams.take_socket(request)

        async def run() -> None:
            try:
                if not early:
                    streams.answer_upgrade(request, sock, content_type)
                    if with_logs:
                        await _send_log(sock, c, q)
                await engine.attach(c.id, sock, stdin=bool_value(q, "stdin"),
                                    stdout=bool_value(q, "stdout"),
                                    stderr=bool_value(q, "stderr"),
                                    detach_keys=q.get("detachKeys"))
                if early:
                    streams.answer_upgrade(request, sock, content_type)
            except Exception as exc:  # noqa: BLE001 - after the hijack, errors go in band
                with contextlib.suppress(OSError):
                    if early:
                        streams.answer_upgrade(request, sock, content_type)
                    sock.sendall(f"{exc}\r\n".encode())
            finally:
                sock.close()

        await _outside_the_request(run())
        return web.Response()

    async def _send_log(sock: Any, c: Any, q: Mapping[str, str]) -> None:
        """The container's whole log, as the attach stream carries it (framed unless tty)."""
        from ketch.api import streams
        from ketch.engine.logread import ReadOptions, follow_batches

        path = engine.log_path(c)
        if not path:
            return      # a driver without a reader (none): nothing to replay, as dockerd
        opts = ReadOptions(stdout=bool_value(q, "stdout"), stderr=bool_value(q, "stderr"))
        multiplexed = not c.config.get("Tty")
        async for batch in follow_batches(path, opts):
            data = streams.encode_logs(batch, multiplexed=multiplexed)
            if data:
                await asyncio.to_thread(sock.sendall, data)

    async def _attach_log_only(request: web.Request, c: Any) -> web.StreamResponse:
        from ketch.api import streams

        content_type = streams.stream_content_type(not c.config.get("Tty"),
                                                   versions.of(request.match_info))
        sock = streams.take_socket(request)

        async def run() -> None:
            try:
                streams.answer_upgrade(request, sock, content_type)
                await _send_log(sock, c, request.query)
                engine.on_event("attach", c, {})
            except Exception as exc:  # noqa: BLE001 - after the hijack, errors go in band
                with contextlib.suppress(OSError):
                    sock.sendall(f"{exc}\r\n".encode())
            finally:
                sock.close()

        await _outside_the_request(run())
        return web.Response()

    async def logs(request: web.Request) -> web.StreamResponse:
        from ketch.api import streams
        from ketch.engine.logread import follow_batches

        c = engine.store.get(request.match_info["id"])
        lq = streams.logs_query(request.query)
        path = engine.log_path(c)
        if not path:
            from ketch.errors import NotSupported

            raise NotSupported('configured logging driver does not support reading')
        running = c.state.status in ("running", "paused") or c.state.restarting
        stopped = engine.exit_event(c.id) if running else None
        batches = follow_batches(path, lq.read_options(), follow=lq.follow and running,
                                 stopped=stopped)
        return await streams.write_logs(request, batches, tty=bool(c.config.get("Tty")),
                                        timestamps=lq.timestamps, details=lq.details)

    async def resize(request: web.Request) -> web.Response:
        h, w = _int(request.query, "h") or 0, _int(request.query, "w") or 0
        await engine.resize(request.match_info["id"], h, w)
        return web.Response(status=200)

    async def exec_create(request: web.Request) -> web.Response:
        body = await _json_body(request)
        eid = engine.execs.create(request.match_info["id"], body)
        return web.json_response({"Id": eid}, status=201)

    async def exec_start(request: web.Request) -> web.StreamResponse:
        from ketch.api import streams

        body = await _json_body(request)
        ex = engine.execs.get(request.match_info["id"])
        detach = bool(body.get("Detach"))
        tty = body.get("Tty")
        if detach:
            await engine.execs.start(ex.id, detach=True, tty=tty)
            return web.Response(status=200)
        multiplexed = not (tty if tty is not None else ex.tty)
        sock = await streams.hijack(request,
                                    streams.stream_content_type(multiplexed,
                                                                versions.of(request.match_info)))

        async def run() -> None:
            try:
                await engine.execs.start(ex.id, detach=False, tty=tty, sock=sock)
                # Our copy of the connection is held until the exit code is recorded:
                # the client sees the end of the stream only then, and the exec
                # inspect that follows (docker-py's exec_run, the docker CLI) finds
                # the code, as with dockerd, whose handler returns when the process
                # has ended.
                await ex.done.wait()
            except Exception as exc:  # noqa: BLE001 - in band after the hijack, as dockerd
                # dockerd writes it on the exec's stdout (a frame when multiplexed); the
                # docker CLI prints it and exits with the exec's code (126, 127).
                msg = f"{exc}\r\n".encode()
                with contextlib.suppress(OSError):
                    sock.sendall(streams.frame(streams.STDOUT, msg) if multiplexed else msg)
            finally:
                sock.close()

        await _outside_the_request(run())
        return web.Response()

    async def exec_inspect(request: web.Request) -> web.Response:
        ex = engine.execs.get(request.match_info["id"])
        if ex.running:
            # The supervisor ends an exec's stream when its output ends, a moment
            # before the exit is reaped and recorded; clients inspect right after
            # the end of the stream (docker-py's exec_run, the docker CLI) and
            # expect the exit code, as dockerd ends the stream after the exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ex.done.wait(), EXEC_EXIT_GRACE)
        return web.json_response(ex.inspect())

    async def exec_resize(request: web.Request) -> web.Response:
        h, w = _int(request.query, "h") or 0, _int(request.query, "w") or 0
        await engine.execs.resize(request.match_info["id"], h, w)
        return web.Response(status=200)

    add(app, "POST", "/containers/create", create)
    add(app, "POST", "/containers/{id}/attach", attach)
    add(app, "GET", "/containers/{id}/logs", logs)
    add(app, "POST", "/containers/{id}/resize", resize)
    add(app, "POST", "/containers/{id}/exec", exec_create)
    add(app, "POST", "/exec/{id}/start", exec_start)
    add(app, "GET", "/exec/{id}/json", exec_inspect)
    add(app, "POST", "/exec/{id}/resize", exec_resize)
    add(app, "GET", "/containers/json", list_containers)
    add(app, "GET", "/containers/{id}/json", inspect)
    add(app, "POST", "/containers/{id}/start", start)
    add(app, "POST", "/containers/{id}/stop", stop)
    add(app, "POST", "/containers/{id}/restart", restart)
    add(app, "POST", "/containers/{id}/kill", kill)
    add(app, "POST", "/containers/{id}/wait", wait)
    add(app, "DELETE", "/containers/{id}", remove)
    add(app, "POST", "/containers/{id}/rename", rename)
    add(app, "POST", "/containers/{id}/pause", pause)
    add(app, "POST", "/containers/{id}/unpause", unpause)
    add(app, "GET", "/containers/{id}/top", top)


def _shape_endpoints(doc: dict[str, Any], version: str) -> None:
    """Aliases as the client's API version has them: with the short container ID
    before 1.45 (as stored), without it since; no DNSNames before 1.44."""
    short = str(doc.get("Id", ""))[:12]
    for ep in ((doc.get("NetworkSettings") or {}).get("Networks") or {}).values():
        if not isinstance(ep, dict):
            continue
        if not versions.at_least(version, "1.44"):
            ep.pop("DNSNames", None)
        if versions.at_least(version, "1.45") and ep.get("Aliases"):
            ep["Aliases"] = [a for a in ep["Aliases"] if a != short] or None
