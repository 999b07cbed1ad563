"""The container and exec endpoints of the Engine API, mixed into ``Client``.

Same conventions as the image methods: the API's JSON is returned as is,
non-2xx answers raise the error kind of their status with the daemon's
message. Streams (logs, stats, wait) come back as ``StreamResponse``; attach
and exec start hand over the raw connection (``Hijacked``) once the daemon has
answered ``101 UPGRADED``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping

from ketch.client._errors import from_status
from ketch.client._http import hijack, quote
from ketch.client._transport import HTTPTransport, Request, StreamResponse
from ketch.errors import NotModified, NotSupported, System
from ketch.record import Record

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

    from ketch.client._client import Filters


def _id(name: str) -> str:
    return quote(name, safe="")


def _q(params: Mapping[str, Any]) -> str:
    # _client imports this module to mix it in, so its query builder is fetched late.
    from ketch.client._client import _query

    return _query(params)


def _path_stat(header: str | None) -> dict[str, Any]:
    if not header:
        return {}
    import base64

    try:
        out: dict[str, Any] = json.loads(base64.b64decode(header))
    except ValueError as exc:
        raise System(f"the daemon sent a path stat that is not base64 JSON: {header[:80]!r}") \
            from exc
    return out


class Hijacked(Record):
    """The raw connection after an upgrade; ``first`` arrived with the answer's head."""

    __slots__ = ("first", "headers", "sock", "status")

    def __init__(self, sock: socket.socket, first: bytes, status: int,
                 headers: dict[str, str]) -> None:
        self.sock = sock
        self.first = first
        self.status = status
        self.headers = headers

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ContainersMixin:
    """Needs the Client's ``_json``, ``_send``, ``_open``, ``_versioned`` and ``transport``."""

    # Provided by Client; declared for the type checker.
    if TYPE_CHECKING:
        from ketch.client._transport import Transport

        transport: Transport

        def _send(self, method: str, path: str, body: Any = None) -> bytes: ...
        def _json(self, method: str, path: str, body: Any = None) -> Any: ...
        def _open(self, method: str, path: str, body: Any = None,
                  content_type: str | None = None) -> StreamResponse: ...
        def _versioned(self, path: str) -> str: ...

    # --- lifecycle --------------------------------------------------------------------------

    def container_create(self, body: Mapping[str, Any], *, name: str = "",
                         platform: str = "") -> dict[str, Any]:
        """``POST /containers/create?name=&platform=``: {"Id": ..., "Warnings": [...]}."""
        q = _q({"name": name, "platform": platform})
        out: dict[str, Any] = self._json("POST", "/containers/create" + q, dict(body))
        return out

    def container_start(self, cid: str, *, detach_keys: str = "") -> None:
        try:
            self._send("POST", f"/containers/{_id(cid)}/start" + _q({"detachKeys": detach_keys}))
        except NotModified:
            pass  # already running: docker's client takes 304 as success

    def container_stop(self, cid: str, *, timeout: int | None = None, signal: str = "") -> None:
        self._stopping(f"/containers/{_id(cid)}/stop" + _q({"t": timeout, "signal": signal}))

    def container_restart(self, cid: str, *, timeout: int | None = None,
                          signal: str = "") -> None:
        self._stopping(f"/containers/{_id(cid)}/restart" + _q({"t": timeout, "signal": signal}))

    def _stopping(self, path: str) -> None:
        """Stop and restart take the grace period and then some: no read timeout."""
        try:
            with self._open("POST", path) as resp:
                resp.read()
        except NotModified:
            pass  # already stopped: docker's client takes 304 as success

    def container_kill(self, cid: str, *, signal: str = "") -> None:
        self._send("POST", f"/containers/{_id(cid)}/kill" + _q({"signal": signal}))

    def container_remove(self, cid: str, *, force: bool = False, volumes: bool = False,
                         link: bool = False) -> None:
        q = _q({"force": force, "v": volumes, "link": link})
        self._send("DELETE", f"/containers/{_id(cid)}" + q)

    def container_pause(self, cid: str) -> None:
        self._send("POST", f"/containers/{_id(cid)}/pause")

    def container_unpause(self, cid: str) -> None:
        self._send("POST", f"/containers/{_id(cid)}/unpause")

    def container_rename(self, cid: str, new_name: str) -> None:
        self._send("POST", f"/containers/{_id(cid)}/rename" + _q({"name": new_name}))

    def container_update(self, cid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self._json("POST", f"/containers/{_id(cid)}/update", dict(body))
        return out

    def container_resize(self, cid: str, height: int, width: int) -> None:
        self._send("POST", f"/containers/{_id(cid)}/resize" + _q({"h": height, "w": width}))

    def container_wait(self, cid: str, *, condition: str = "") -> StreamResponse:
        """``POST /containers/{id}/wait``: returned once the daemon answered the head (the
        waiter is registered); read the body ({"StatusCode", "Error"}) with wait_result."""
        return self._open("POST", f"/containers/{_id(cid)}/wait" +
                          _q({"condition": condition}))

    @staticmethod
    def wait_result(resp: StreamResponse) -> dict[str, Any]:
        try:
            raw = resp.read()
        finally:
            resp.close()
        try:
            out: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise System(f"the daemon's wait answer is not JSON: {raw[:200]!r}") from exc
        return out

    # --- reading ----------------------------------------------------------------------------

    def containers(self, *, all: bool = False, limit: int | None = None, size: bool = False,
                   filters: Filters | None = None) -> list[dict[str, Any]]:
        q = _q({"all": all, "limit": limit if limit and limit > 0 else None, "size": size,
                    "filters": filters or {}})
        out: list[dict[str, Any]] = self._json("GET", "/containers/json" + q)
        return out

    def container_inspect(self, cid: str, *, size: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", f"/containers/{_id(cid)}/json" +
                                         _q({"size": size}))
        return out

    def container_logs(self, cid: str, *, follow: bool = False, stdout: bool = True,
                       stderr: bool = True, since: str = "", until: str = "",
                       timestamps: bool = False, tail: str = "all",
                       details: bool = False) -> StreamResponse:
        q = _q({"stdout": stdout, "stderr": stderr, "since": since, "until": until,
                    "timestamps": timestamps, "follow": follow, "tail": tail,
                    "details": details})
        return self._open("GET", f"/containers/{_id(cid)}/logs" + q)

    def container_top(self, cid: str, ps_args: str = "") -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", f"/containers/{_id(cid)}/top" +
                                         _q({"ps_args": ps_args}))
        return out

    def container_stats(self, cid: str, *, stream: bool = True,
                        one_shot: bool = False) -> StreamResponse:
        """One JSON document per line while ``stream``; one document otherwise."""
        q = f"?stream={'1' if stream else '0'}" + ("&one-shot=1" if one_shot else "")
        return self._open("GET", f"/containers/{_id(cid)}/stats" + q)

    def container_changes(self, cid: str) -> list[dict[str, Any]]:
        """``GET /containers/{id}/changes``: [{"Path": ..., "Kind": 0|1|2}] or null."""
        out: list[dict[str, Any]] = self._json("GET", f"/containers/{_id(cid)}/changes") or []
        return out

    def container_export(self, cid: str) -> StreamResponse:
        """``GET /containers/{id}/export``: the container's filesystem as a tar stream."""
        return self._open("GET", f"/containers/{_id(cid)}/export")

    def container_commit(self, cid: str, *, repo: str = "", tag: str = "", comment: str = "",
                         author: str = "", changes: list[str] | None = None,
                         pause: bool = True) -> dict[str, Any]:
        """``POST /commit``; as the docker CLI, ``pause`` is sent only to turn it off."""
        q: dict[str, Any] = {"container": cid, "repo": repo, "tag": tag, "comment": comment,
                             "author": author, "changes": list(changes or [])}
        if not pause:
            q["pause"] = "0"
        out: dict[str, Any] = self._json("POST", "/commit" + _q(q))
        return out

    def containers_prune(self, filters: Filters | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self._json("POST", "/containers/prune" +
                                         _q({"filters": filters}))
        return out

    # --- archives (cp) -----------------------------------------------------------------------

    def container_stat_path(self, cid: str, path: str) -> dict[str, Any]:
        """``HEAD /containers/{id}/archive?path=``: the path's stat (name, size, mode as Go's
        FileMode bits, mtime, linkTarget) from the X-Docker-Container-Path-Stat header."""
        resp = self.transport.request(Request(
            "HEAD", self._versioned(f"/containers/{_id(cid)}/archive" + _q({"path": path})),
            {"User-Agent": "ketch-cli"}))
        if not 200 <= resp.status < 300:
            raise from_status(resp.status, resp.body or
                              f"Could not find the file {path} in container {cid}".encode())
        return _path_stat(resp.header("X-Docker-Container-Path-Stat"))

    def container_archive_get(self, cid: str, path: str) -> tuple[StreamResponse, dict[str, Any]]:
        """``GET /containers/{id}/archive?path=``: a tar of the path, and its stat."""
        resp = self._open("GET", f"/containers/{_id(cid)}/archive" + _q({"path": path}))
        return resp, _path_stat(resp.header("X-Docker-Container-Path-Stat"))

    def container_archive_put(self, cid: str, path: str, tar: Any, *,
                              copy_uid_gid: bool = False) -> None:
        """``PUT /containers/{id}/archive?path=``: unpack ``tar`` (a file) into the directory
        ``path``; a directory is never replaced by a non-directory (docker's default)."""
        q = _q({"path": path, "noOverwriteDirNonDir": True, "copyUIDGID": copy_uid_gid})
        with self._open("PUT", f"/containers/{_id(cid)}/archive" + q, tar,
                        "application/x-tar") as resp:
            resp.read()

    # --- attach and exec --------------------------------------------------------------------

    def _hijack(self, path: str, body: Any | None) -> Hijacked:
        transport = self.transport
        if not isinstance(transport, HTTPTransport):
            raise NotSupported("attaching needs a real connection to the daemon")
        data = None
        headers = {"User-Agent": "ketch-cli", "Content-Type": "text/plain"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        sock = transport._connect(None)  # noqa: SLF001 - the one place that needs the socket
        try:
            status, hdrs, rest = hijack(sock, "POST", self._versioned(path), headers, data)
        except OSError as exc:
            sock.close()
            raise transport._unavailable(exc) from exc  # noqa: SLF001
        if status not in (101, 200):
            sock.close()
            raise from_status(status, rest)
        return Hijacked(sock, rest, status, hdrs)

    def container_attach(self, cid: str, *, stdin: bool = False, stdout: bool = True,
                         stderr: bool = True, logs: bool = False, stream: bool = True,
                         detach_keys: str = "") -> Hijacked:
        q = _q({"detachKeys": detach_keys, "logs": logs, "stderr": stderr, "stdin": stdin,
                    "stdout": stdout, "stream": stream})
        return self._hijack(f"/containers/{_id(cid)}/attach" + q, None)

    def exec_create(self, cid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self._json("POST", f"/containers/{_id(cid)}/exec", dict(body))
        return out

    def exec_start(self, exec_id: str, *, tty: bool = False, detach: bool = False,
                   console_size: tuple[int, int] | None = None) -> Hijacked | None:
        """Detached: started and None; else the hijacked stream of the exec's stdio."""
        body: dict[str, Any] = {"Detach": detach, "Tty": tty}
        if console_size is not None:
            body["ConsoleSize"] = list(console_size)
        if detach:
            self._send("POST", f"/exec/{_id(exec_id)}/start", body)
            return None
        return self._hijack(f"/exec/{_id(exec_id)}/start", body)

    def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        self._send("POST", f"/exec/{_id(exec_id)}/resize" + _q({"h": height, "w": width}))

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", f"/exec/{_id(exec_id)}/json")
        return out


__all__ = ["ContainersMixin", "Hijacked"]
