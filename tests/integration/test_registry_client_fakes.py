"""The registry client against small fake registries: what docker-registry 2.8 never does.

docker-registry ignores ``n`` on tags/list, never redirects blobs to other
hosts, and always sends proper manifests; registries in the wild do all of
these, so a fake (stdlib http.server on 127.0.0.1) plays them here.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from tests.integration.registry_client_support import MemorySink

from ketch.errors import InvalidArgument, NotSupported, System, Unauthorized, Unavailable
from ketch.image.content import Descriptor
from ketch.image.reference import normalize
from ketch.registry.client import Credentials, Registries, RegistryOptions

Handler = Callable[["Request"], tuple[int, dict[str, str], bytes]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Fake:
    """An HTTP server whose routes are functions; it records every request."""

    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Request] = field(default_factory=list)
    port: int = 0

    def start(self) -> Fake:
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                fake.seen.append(req)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                matches = [p for p in fake.routes if self.path.startswith(p)]
                route = fake.routes[max(matches, key=len)] if matches else None
                status, headers, body = route(req) if route else (404, {}, b"")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake().start()
    f.routes["/v2/"] = lambda r: (200, {}, b"{}") if r.path == "/v2/" else (404, {}, b"")
    try:
        yield f
    finally:
        f.close()


def test_tags_follow_link_pagination(fake: Fake, regs: Registries) -> None:
    tags = [f"t{i}" for i in range(5)]

    def tags_list(req: Request) -> tuple[int, dict[str, str], bytes]:
        query = dict(p.split("=", 1) for p in req.path.partition("?")[2].split("&") if "=" in p)
        n = int(query.get("n", "100"))
        start = tags.index(query["last"]) + 1 if "last" in query else 0
        page = tags[start:start + n]
        headers = {"Content-Type": "application/json"}
        if start + n < len(tags):
            headers["Link"] = f'</v2/pag/tags/list?last={page[-1]}&n={n}>; rel="next"'
        return 200, headers, json.dumps({"name": "pag", "tags": page}).encode()

    fake.routes["/v2/pag/tags/list"] = tags_list
    assert regs.repository(normalize(f"{fake.netloc}/pag")).tags(n=2) == tags
    assert len([r for r in fake.seen if "/tags/list" in r.path]) == 3


def test_blob_redirect_drops_credentials(fake: Fake, regs: Registries) -> None:
    storage = Fake().start()
    try:
        data = b"redirected blob" * 1000
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        storage.routes["/store/"] = lambda r: (200, {}, data)
        fake.routes["/v2/red/blobs/"] = lambda r: (
            307, {"Location": f"http://{storage.netloc}/store/{dgst}?sig=1"}, b"")
        fake.routes["/v2/"] = lambda r: (200, {}, b"{}")
        creds = Credentials(registry_token="tok")
        repo = regs.repository(normalize(f"{fake.netloc}/red:t"), creds)
        sink = MemorySink()
        repo.fetch_blob(Descriptor(digest=dgst, size=len(data)), sink)
        assert bytes(sink.buf) == data
        assert [r.headers.get("authorization") for r in storage.seen] == [None]
    finally:
        storage.close()


def test_basic_challenge_after_an_open_ping(fake: Fake, regs: Registries) -> None:
    good = "Basic " + base64.b64encode(b"u:p").decode()
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": []}).encode()

    def manifests(req: Request) -> tuple[int, dict[str, str], bytes]:
        if req.headers.get("authorization") != good:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        return 200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, body

    fake.routes["/v2/sec/manifests/"] = manifests
    got = regs.repository(normalize(f"{fake.netloc}/sec:t"), Credentials(username="u", password="p"))
    assert got.resolve("t").data == body
    with pytest.raises(Unauthorized) as exc:
        regs.repository(normalize(f"{fake.netloc}/sec:t")).resolve("t")
    assert "no basic auth credentials" in str(exc.value)


def test_schema1_and_wrong_digest_refused(fake: Fake, regs: Registries) -> None:
    fake.routes["/v2/old/manifests/"] = lambda r: (
        200, {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
        b'{"schemaVersion":1}')
    with pytest.raises(NotSupported, match="schema 1 is not supported"):
        regs.repository(normalize(f"{fake.netloc}/old:t")).resolve("t")
    liar = json.dumps({"schemaVersion": 2, "config": {}}).encode()
    fake.routes["/v2/liar/manifests/"] = lambda r: (200, {"Content-Type": "application/json"}, liar)
    wanted = "sha256:" + "1" * 64
    with pytest.raises(InvalidArgument, match=f"manifest verification failed for digest {wanted}"):
        regs.repository(normalize(f"{fake.netloc}/liar:t")).resolve(wanted)


def test_docker_hub_names_go_to_their_configured_endpoint() -> None:
    """``endpoints`` keeps Docker Hub names on loopback (tests never reach past it)."""
    regs = Registries(RegistryOptions(certs_dirs=(), timeout=10,
                                      endpoints=(("docker.io", "http://127.0.0.1:9"),)))
    try:
        with pytest.raises(Unavailable) as exc:
            regs.repository(normalize("busybox")).resolve("latest")
    finally:
        regs.close()
    assert str(exc.value) == ('Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: '
                              'connect: connection refused')


def test_unreadable_upload_content_is_not_a_network_error(fake: Fake, regs: Registries) -> None:
    fake.routes["/v2/up/blobs/"] = lambda r: (404, {}, b"")
    fake.routes["/v2/up/blobs/uploads/"] = lambda r: (
        202, {"Location": f"http://{fake.netloc}/v2/up/blobs/uploads/u1?s=1"}, b"")

    def broken() -> io.BytesIO:
        raise PermissionError(13, "Permission denied")

    repo = regs.repository(normalize(f"{fake.netloc}/up:t"))
    with pytest.raises(System, match="cannot read the content to upload"):
        repo.push_blob(Descriptor(digest="sha256:" + "2" * 64, size=10), broken)
    with pytest.raises(System, match="ended after 3 of 10 bytes"):
        repo.push_blob(Descriptor(digest="sha256:" + "2" * 64, size=10), lambda: io.BytesIO(b"abc"))
