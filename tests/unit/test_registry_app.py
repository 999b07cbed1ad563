"""The registry's HTTP API, driven with aiohttp's test client (and one real server on port 0)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.unit.image_blobs import OCI_INDEX, OCI_MANIFEST, sha
from tests.unit.image_blobs import oci_manifest as manifest
from yarl import URL

from ketch.registry.server.app import access_logger, make_app, serve
from ketch.registry.server.auth import Access, Challenge, Denied
from ketch.registry.server.fsdriver import FSDriver
from ketch.registry.server.store import Store

Scenario = Callable[[TestClient], Awaitable[None]]


def run(scenario: Scenario, tmp_path: Path, driver: FSDriver | None = None,
        **app_args: Any) -> Store:
    store = Store(driver or FSDriver(str(tmp_path / "reg")))

    async def go() -> None:
        async with TestClient(TestServer(make_app(store, **app_args))) as client:
            await scenario(client)

    asyncio.run(go())
    return store


async def error_code(resp: Any) -> str:
    body = await resp.json()
    return str(body["errors"][0]["code"])


async def push_blob(c: TestClient, name: str, data: bytes) -> str:
    r = await c.post(f"/v2/{name}/blobs/uploads/?digest={sha(data)}", data=data)
    assert r.status == 201, await r.text()
    return sha(data)


async def push_image(c: TestClient, name: str, tag: str, layer: bytes = b"layer",
                     **extra: Any) -> bytes:
    await push_blob(c, name, b"{}")
    await push_blob(c, name, layer)
    data = manifest(b"{}", [layer], **extra)
    r = await c.put(f"/v2/{name}/manifests/{tag}", data=data,
                    headers={"Content-Type": OCI_MANIFEST})
    assert r.status == 201, await r.text()
    return data


def test_base_and_api_version_header(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        r = await c.get("/v2/")
        assert r.status == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert await r.json() == {}
        r = await c.get("/v2/a/nothing/here")
        assert r.status == 404
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"

    run(scenario, tmp_path)


def test_chunked_upload(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40000          # 10 MB: several pieces of the writer

    async def scenario(c: TestClient) -> None:
        r = await c.post("/v2/app/blobs/uploads/")
        assert r.status == 202
        loc = r.headers["Location"]
        assert loc.startswith("/v2/app/blobs/uploads/")
        assert r.headers["Range"] == "0-0" and r.headers["Docker-Upload-UUID"] in loc
        half = len(data) // 2
        r = await c.patch(loc, data=data[:half],
                          headers={"Content-Range": f"0-{half - 1}",
                                   "Content-Type": "application/octet-stream"})
        assert r.status == 202 and r.headers["Range"] == f"0-{half - 1}"
        # a chunk that does not start where the upload ends
        r = await c.patch(loc, data=data[half:], headers={"Content-Range": f"5-{len(data) - 1}"})
        assert r.status == 416 and await error_code(r) == "RANGE_INVALID"
        assert r.headers["Range"] == f"0-{half - 1}"
        r = await c.get(loc)
        assert r.status == 204 and r.headers["Range"] == f"0-{half - 1}"
        # a streamed chunk without Content-Range goes on at the end
        r = await c.patch(loc, data=data[half:-10])
        assert r.status == 202
        r = await c.put(f"{loc}?digest={sha(data)}", data=data[-10:])
        assert r.status == 201
        assert r.headers["Location"] == f"/v2/app/blobs/{sha(data)}"
        assert r.headers["Docker-Content-Digest"] == sha(data)
        r = await c.get(loc)
        assert r.status == 404 and await error_code(r) == "BLOB_UPLOAD_UNKNOWN"
        r = await c.get(f"/v2/app/blobs/{sha(data)}")
        assert r.status == 200 and await r.read() == data

    run(scenario, tmp_path)


def test_wrong_digest_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        r = await c.post(f"/v2/app/blobs/uploads/?digest={sha(b'other')}", data=b"content")
        assert r.status == 400 and await error_code(r) == "DIGEST_INVALID"
        r = await c.head(f"/v2/app/blobs/{sha(b'content')}")
        assert r.status == 404
        r = await c.post("/v2/app/blobs/uploads/")
        loc = r.headers["Location"]
        r = await c.put(f"{loc}?digest={sha(b'full')}", data=b"ful")
        assert r.status == 400 and await error_code(r) == "DIGEST_INVALID"
        r = await c.put(f"{loc}?digest=sha256:nothex", data=b"")
        assert r.status == 400 and await error_code(r) == "DIGEST_INVALID"

    store = run(scenario, tmp_path)
    assert [i.path for i in store.driver.walk("/") if i.path.startswith("/blobs")] == []


def test_cancel_upload(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        r = await c.post("/v2/app/blobs/uploads/")
        loc = r.headers["Location"]
        await c.patch(loc, data=b"partial")
        r = await c.delete(loc)
        assert r.status == 204
        r = await c.patch(loc, data=b"more")
        assert r.status == 404 and await error_code(r) == "BLOB_UPLOAD_UNKNOWN"
        r = await c.get("/v2/app/blobs/uploads/not-a-uuid")
        assert r.status == 404 and await error_code(r) == "BLOB_UPLOAD_UNKNOWN"

    run(scenario, tmp_path)


def test_blob_head_get_ranges_and_delete(tmp_path: Path) -> None:
    data = b"0123456789" * 1000

    async def scenario(c: TestClient) -> None:
        digest = await push_blob(c, "app", data)
        r = await c.head(f"/v2/app/blobs/{digest}")
        assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
        assert r.headers["Docker-Content-Digest"] == digest
        r = await c.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=10-19"})
        assert r.status == 206 and await r.read() == data[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        r = await c.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=9990-"})
        assert r.status == 206 and await r.read() == data[9990:]
        assert r.headers["ETag"] == f'"{digest}"'
        # If-Range: the range only while the entity is the one the client names.
        r = await c.get(f"/v2/app/blobs/{digest}",
                        headers={"Range": "bytes=0-1", "If-Range": f'"{digest}"'})
        assert r.status == 206 and await r.read() == data[:2]
        r = await c.get(f"/v2/app/blobs/{digest}",
                        headers={"Range": "bytes=0-1", "If-Range": '"other"'})
        assert r.status == 200 and await r.read() == data
        r = await c.get(f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"})
        assert r.status == 416
        r = await c.get(f"/v2/app/blobs/{digest}")
        assert r.status == 200 and await r.read() == data
        assert r.headers["Content-Type"] == "application/octet-stream"
        r = await c.get(f"/v2/other/blobs/{digest}")
        assert r.status == 404 and await error_code(r) == "BLOB_UNKNOWN"
        r = await c.delete(f"/v2/app/blobs/{digest}")
        assert r.status == 202
        r = await c.get(f"/v2/app/blobs/{digest}")
        assert r.status == 404 and await error_code(r) == "BLOB_UNKNOWN"
        r = await c.get("/v2/app/blobs/sha256:1234")
        assert r.status == 400 and await error_code(r) == "DIGEST_INVALID"

    run(scenario, tmp_path)


def test_cross_repository_mount(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        digest = await push_blob(c, "src", b"shared")
        r = await c.post(f"/v2/dst/blobs/uploads/?mount={digest}&from=src")
        assert r.status == 201 and r.headers["Location"] == f"/v2/dst/blobs/{digest}"
        assert r.headers["Docker-Content-Digest"] == digest
        r = await c.head(f"/v2/dst/blobs/{digest}")
        assert r.status == 200
        # not in the source: an ordinary upload session instead
        r = await c.post(f"/v2/dst2/blobs/uploads/?mount={sha(b'x')}&from=src")
        assert r.status == 202 and "/v2/dst2/blobs/uploads/" in r.headers["Location"]

    run(scenario, tmp_path)


def test_manifest_put_get_head_delete(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        data = await push_image(c, "org/app", "v1")
        digest = sha(data)
        for ref in ("v1", digest):
            r = await c.get(f"/v2/org/app/manifests/{ref}")
            assert r.status == 200 and await r.read() == data
            assert r.headers["Content-Type"] == OCI_MANIFEST
            assert r.headers["Docker-Content-Digest"] == digest
        r = await c.head("/v2/org/app/manifests/v1")
        assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
        r = await c.put(f"/v2/org/app/manifests/{digest}", data=data,
                        headers={"Content-Type": OCI_MANIFEST})
        assert r.status == 201 and r.headers["Location"] == f"/v2/org/app/manifests/{digest}"
        r = await c.delete(f"/v2/org/app/manifests/{digest}")
        assert r.status == 202
        r = await c.get("/v2/org/app/manifests/v1")
        assert r.status == 404 and await error_code(r) == "MANIFEST_UNKNOWN"
        r = await c.head("/v2/org/app/manifests/v1")
        assert r.status == 404

    run(scenario, tmp_path)


def test_manifest_errors(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        await push_blob(c, "app", b"{}")
        r = await c.put("/v2/app/manifests/v1", data=manifest(b"{}", [b"missing", b"gone"]),
                        headers={"Content-Type": OCI_MANIFEST})
        # one error per missing blob, its detail the digest (what Docker's registry sends)
        assert r.status == 400 and await r.json() == {"errors": [
            {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry",
             "detail": sha(b"missing")},
            {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry",
             "detail": sha(b"gone")}]}
        # dockerd turns a MANIFEST_UNKNOWN without detail into a 500: there is always one
        r = await c.get("/v2/app/manifests/nosuch")
        assert r.status == 404 and (await r.json())["errors"][0] == {
            "code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "nosuch"}}
        r = await c.put("/v2/app/manifests/v1", data=b"{", headers={"Content-Type": OCI_MANIFEST})
        assert r.status == 400 and await error_code(r) == "MANIFEST_INVALID"
        r = await c.put("/v2/app/manifests/bad:tag!", data=manifest(b"{}", []),
                        headers={"Content-Type": OCI_MANIFEST})
        assert r.status == 400 and await error_code(r) in ("TAG_INVALID", "DIGEST_INVALID")
        r = await c.put("/v2/app/manifests/.bad", data=manifest(b"{}", []),
                        headers={"Content-Type": OCI_MANIFEST})
        assert r.status == 400 and await error_code(r) == "TAG_INVALID"
        r = await c.put("/v2/app/manifests/big", data=b" " * (4 * 1024 * 1024 + 1),
                        headers={"Content-Type": OCI_MANIFEST})
        assert r.status == 413 and await error_code(r) == "SIZE_INVALID"
        r = await c.get("/v2/Upper/manifests/v1")
        assert r.status == 400 and await error_code(r) == "NAME_INVALID"
        r = await c.get(URL("/v2/a/../b/manifests/v1", encoded=True))
        assert r.status in (400, 404)
        r = await c.get(URL("/v2/a/%2E%2E/b/manifests/v1", encoded=True))
        assert r.status == 400 and await error_code(r) == "NAME_INVALID"
        r = await c.post("/v2/app/tags/list")
        assert r.status == 405 and await error_code(r) == "UNSUPPORTED"

    run(scenario, tmp_path)


def test_index_and_referrers(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        child = await push_image(c, "app", "amd64")
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha(child), "size": len(child)}]}).encode()
        r = await c.put("/v2/app/manifests/multi", data=index, headers={"Content-Type": OCI_INDEX})
        assert r.status == 201
        r = await c.get("/v2/app/manifests/multi")
        assert r.headers["Content-Type"] == OCI_INDEX
        subject = {"mediaType": OCI_INDEX, "digest": sha(index), "size": len(index)}
        sig = manifest(b"{}", [b"layer"], artifactType="application/x-sig", subject=subject)
        r = await c.put(f"/v2/app/manifests/{sha(sig)}", data=sig,
                        headers={"Content-Type": OCI_MANIFEST})
        assert r.status == 201 and r.headers["OCI-Subject"] == sha(index)
        r = await c.get(f"/v2/app/referrers/{sha(index)}")
        assert r.status == 200 and r.headers["Content-Type"] == OCI_INDEX
        body = await r.json()
        assert body["mediaType"] == OCI_INDEX
        assert [m["digest"] for m in body["manifests"]] == [sha(sig)]
        assert body["manifests"][0]["artifactType"] == "application/x-sig"
        r = await c.get(f"/v2/app/referrers/{sha(index)}?artifactType=application/other")
        assert r.headers["OCI-Filters-Applied"] == "artifactType"
        assert (await r.json())["manifests"] == []
        r = await c.get(f"/v2/app/referrers/{sha(b'none')}")
        assert r.status == 200 and (await r.json())["manifests"] == []

    run(scenario, tmp_path)


def test_tags_and_catalog_pagination(tmp_path: Path) -> None:
    async def scenario(c: TestClient) -> None:
        data = await push_image(c, "app", "a")
        for tag in ("c", "b", "d"):
            await c.put(f"/v2/app/manifests/{tag}", data=data,
                        headers={"Content-Type": OCI_MANIFEST})
        r = await c.get("/v2/app/tags/list")
        assert await r.json() == {"name": "app", "tags": ["a", "b", "c", "d"]}
        assert "Link" not in r.headers
        r = await c.get("/v2/app/tags/list?n=2")
        assert (await r.json())["tags"] == ["a", "b"]
        assert r.headers["Link"] == '</v2/app/tags/list?n=2&last=b>; rel="next"'
        r = await c.get("/v2/app/tags/list?n=2&last=b")
        assert (await r.json())["tags"] == ["c", "d"] and "Link" not in r.headers
        r = await c.get("/v2/app/tags/list?n=0")
        assert (await r.json())["tags"] == []
        r = await c.get("/v2/app/tags/list?n=x")
        assert r.status == 400 and await error_code(r) == "PAGINATION_NUMBER_INVALID"
        r = await c.get("/v2/nobody/tags/list")
        assert r.status == 404 and await error_code(r) == "NAME_UNKNOWN"
        for name in ("b/x", "c"):
            await push_image(c, name, "t")
        r = await c.get("/v2/_catalog?n=2")
        assert await r.json() == {"repositories": ["app", "b/x"]}
        assert r.headers["Link"] == '</v2/_catalog?n=2&last=b%2Fx>; rel="next"'
        r = await c.get("/v2/_catalog?n=2&last=b/x")
        assert await r.json() == {"repositories": ["c"]}

    run(scenario, tmp_path)


def test_read_only_and_no_delete(tmp_path: Path) -> None:
    async def writable(c: TestClient) -> None:
        await push_image(c, "app", "v1")

    run(writable, tmp_path)

    async def read_only(c: TestClient) -> None:
        r = await c.get("/v2/app/manifests/v1")
        assert r.status == 200
        for method, path in (("POST", "/v2/app/blobs/uploads/"), ("PUT", "/v2/app/manifests/x"),
                             ("DELETE", "/v2/app/manifests/v1")):
            r = await c.request(method, path, data=b"")
            assert r.status == 405 and await error_code(r) == "UNSUPPORTED", (method, path)

    run(read_only, tmp_path, read_only=True)

    async def no_delete(c: TestClient) -> None:
        r = await c.delete("/v2/app/manifests/v1")
        assert r.status == 405 and await error_code(r) == "UNSUPPORTED"
        r = await c.delete(f"/v2/app/blobs/{sha(b'{}')}")
        assert r.status == 405 and await error_code(r) == "UNSUPPORTED"
        await push_blob(c, "app", b"still writable")
        r = await c.post("/v2/app/blobs/uploads/")
        r = await c.delete(r.headers["Location"])      # cancelling an upload is no delete
        assert r.status == 204

    run(no_delete, tmp_path, delete_enabled=False)


class RecordingAuthorizer:
    """Allows user "u" (header X-User: u) everything but deletes; records every question."""

    def __init__(self) -> None:
        self.asked: list[list[Access]] = []

    async def authorize(self, request: web.Request, access: Sequence[Access]) -> str | None:
        self.asked.append(list(access))
        if request.headers.get("X-User") != "u":
            raise Challenge("authentication required", 'Basic realm="test"')
        if any("delete" in a.actions for a in access):
            raise Denied("no deletes for you")
        if any(a.name == "secret" for a in access):
            raise Denied("not this one")
        return "u"

    def routes(self) -> list[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="token endpoint")

        return [web.get("/token", hello)]


def test_authorizer_hook(tmp_path: Path) -> None:
    auth = RecordingAuthorizer()
    user = {"X-User": "u"}

    async def scenario(c: TestClient) -> None:
        r = await c.get("/v2/")
        assert r.status == 401 and await error_code(r) == "UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"] == 'Basic realm="test"'
        assert auth.asked[-1] == []
        r = await c.get("/v2/", headers=user)
        assert r.status == 200
        r = await c.get("/token")
        assert await r.text() == "token endpoint"
        r = await c.post("/v2/app/blobs/uploads/", headers=user)
        assert r.status == 202
        assert auth.asked[-1] == [Access("repository", "app", ("pull", "push"))]
        r = await c.get("/v2/app/tags/list", headers=user)
        assert auth.asked[-1] == [Access("repository", "app", ("pull",))]
        r = await c.delete("/v2/app/manifests/v1", headers=user)
        assert r.status == 403 and await error_code(r) == "DENIED"
        assert auth.asked[-1] == [Access("repository", "app", ("delete",))]
        r = await c.get("/v2/_catalog", headers=user)
        assert auth.asked[-1] == [Access("registry", "catalog", ("*",))]
        # a mount from a repository the client may not pull falls back to an upload
        r = await c.post(f"/v2/app/blobs/uploads/?mount={sha(b'x')}&from=secret", headers=user)
        assert r.status == 202
        assert auth.asked[-1] == [Access("repository", "secret", ("pull",))]

    run(scenario, tmp_path, authorizer=auth)


def test_real_server_with_access_log(tmp_path: Path) -> None:
    out = io.StringIO()
    store = Store(FSDriver(str(tmp_path / "reg")))

    async def go() -> None:
        stop = asyncio.Event()
        ports: list[int] = []
        task = asyncio.create_task(serve(make_app(store), "127.0.0.1", 0, stop=stop,
                                         access_log=access_logger("-", out), ready=ports.append))
        while not ports:
            await asyncio.sleep(0.01)

        def fetch() -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/_catalog") as resp:
                data: bytes = resp.read()
                return data

        assert json.loads(await asyncio.to_thread(fetch)) == {"repositories": []}
        stop.set()
        await task

    asyncio.run(go())
    line = out.getvalue().strip()
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith('] "GET /v2/_catalog HTTP/1.1" 200 20')


class RealServer:
    """``serve`` on 127.0.0.1 and a kernel-chosen port, in a thread of its own."""

    def __init__(self, app: web.Application, **kw: Any) -> None:
        import threading

        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()

        def ready(port: int) -> None:
            self.port = port
            self._ready.set()

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve(app, "127.0.0.1", 0, ready=ready, stop=self._stop, **kw)

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),))
        self._thread.start()
        assert self._ready.wait(10)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


def _raw(port: int, head: str, body: bytes) -> None:
    """Send a request whose body stops short of its Content-Length, then hang up."""
    import socket

    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + body)
        # Let the server read what was sent: bytes still in aiohttp's buffer when the
        # connection drops are discarded with it, and the test wants a known prefix.
        time.sleep(0.3)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        try:
            s.recv(1000)
        except OSError:
            pass


def test_truncated_transfers_keep_a_resumable_prefix_and_never_a_blob(tmp_path: Path) -> None:
    store = Store(FSDriver(str(tmp_path / "reg")))
    srv = RealServer(make_app(store))
    data = bytes(range(256)) * 4000
    base = f"http://127.0.0.1:{srv.port}"
    try:
        req = urllib.request.Request(f"{base}/v2/app/blobs/uploads/", method="POST")
        with urllib.request.urlopen(req) as resp:
            loc = resp.headers["Location"]
        _raw(srv.port, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n",
             data[:300_000])
        # the finalizing PUT cut short too: nothing becomes a blob
        _raw(srv.port, f"PUT {loc}?digest={sha(data)} HTTP/1.1\r\nHost: x\r\n"
                       f"Content-Length: {len(data)}\r\n\r\n", b"")
        with urllib.request.urlopen(f"{base}{loc}") as resp:
            kept = int(resp.headers["Range"].split("-")[1]) + 1
        assert 0 < kept <= 300_000
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(f"{base}/v2/app/blobs/{sha(data)}",
                                                          method="HEAD"))
        assert exc.value.code == 404
        # the client resumes from where the server says it is
        req = urllib.request.Request(f"{base}{loc}?digest={sha(data)}", data=data[kept:],
                                     method="PUT",
                                     headers={"Content-Range": f"{kept}-{len(data) - 1}"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 201
        with urllib.request.urlopen(f"{base}/v2/app/blobs/{sha(data)}") as resp:
            assert resp.read() == data
    finally:
        srv.close()


def test_tls(tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess

    from ketch.registry.server.app import ssl_context

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = RealServer(make_app(Store(FSDriver(str(tmp_path / "reg")))),
                     tls=ssl_context(str(cert), str(key)))
    try:
        client = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://127.0.0.1:{srv.port}/v2/", context=client) as resp:
            assert resp.status == 200
            assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    finally:
        srv.close()


def test_cli_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "ketch.cli.main", "registry", "serve",
                             "--addr", "127.0.0.1:0", "--root", str(tmp_path / "reg")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+) ", line)
        assert m, line
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/v2/") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_running_registry_removes_abandoned_uploads(tmp_path: Path) -> None:
    from ketch.registry.server.app import AppOptions
    from ketch.registry.server.store import upload_dir

    driver = FSDriver(str(tmp_path / "reg"))
    store = Store(driver)
    old = store.start_upload("app")
    driver.put_content(upload_dir("app", old.upload_id) + "/startedat", b"1000")
    fresh = store.start_upload("app")

    async def scenario(c: TestClient) -> None:
        for _ in range(100):
            if [u for u, _ in store.uploads("app")] == [fresh.upload_id]:
                break
            await asyncio.sleep(0.02)
        r = await c.get(f"/v2/app/blobs/uploads/{old.upload_id}")
        assert r.status == 404 and await error_code(r) == "BLOB_UPLOAD_UNKNOWN"
        r = await c.get(f"/v2/app/blobs/uploads/{fresh.upload_id}")
        assert r.status == 204

    run(scenario, tmp_path, driver, options=AppOptions(upload_max_age=3600, purge_interval=0.05))
