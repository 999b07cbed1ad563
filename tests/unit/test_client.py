"""The client over a fake transport: negotiation, paths, status -> kinds, host choice."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from ketch import errors as e
from ketch.cli.system_cmds import bytes_size, format_info, format_version
from ketch.client import (
    DEFAULT_HOST,
    Client,
    FakeTransport,
    HTTPTransport,
    Request,
    Response,
    from_status,
    resolve_host,
)
from ketch.client._transport import parse_host


def daemon(api_version: str = "1.45", routes: dict[str, tuple[int, object]] | None = None):
    """A fake ketchd: /_ping answers with ``api_version``; other paths from ``routes``."""
    routes = routes or {}

    def handle(req: Request) -> Response:
        if req.path == "/_ping":
            return Response(200, {"Api-Version": api_version}, b"OK")
        if req.path in routes:
            status, body = routes[req.path]
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            return Response(status, {"Content-Type": "application/json"}, raw)
        return Response(404, {}, b'{"message": "page not found"}')

    return FakeTransport(handle)


def test_negotiates_once_then_versioned_paths() -> None:
    t = daemon(routes={"/v1.45/version": (200, {"Version": "0.1.0"}),
                       "/v1.45/info": (200, {"ID": "x"})})
    c = Client("unix:///x.sock", transport=t)
    assert c.version() == {"Version": "0.1.0"}
    assert c.info() == {"ID": "x"}
    assert [r.path for r in t.requests] == ["/_ping", "/v1.45/version", "/v1.45/info"]


def test_older_daemon_is_spoken_to_at_its_version() -> None:
    t = daemon("1.41", {"/v1.41/info": (200, {})})
    Client("unix:///x.sock", transport=t).info()
    assert t.requests[-1].path == "/v1.41/info"


def test_newer_daemon_is_spoken_to_at_ours() -> None:
    # "1.100" > "1.45" numerically, though not as strings.
    t = daemon("1.100", {"/v1.45/info": (200, {})})
    Client("unix:///x.sock", transport=t).info()
    assert t.requests[-1].path == "/v1.45/info"


def test_fixed_version_skips_ping() -> None:
    t = daemon(routes={"/v1.30/info": (200, {})})
    Client("unix:///x.sock", transport=t, version="1.30").info()
    assert [r.path for r in t.requests] == ["/v1.30/info"]


@pytest.mark.parametrize(("status", "kind"), [
    (400, e.InvalidArgument), (401, e.Unauthorized), (403, e.Forbidden), (404, e.NotFound),
    (409, e.Conflict), (304, e.NotModified), (501, e.NotSupported), (503, e.Unavailable),
    (500, e.System), (418, e.InvalidArgument), (502, e.System),
])
def test_status_to_kind(status: int, kind: type[e.KetchError]) -> None:
    t = daemon(routes={"/v1.45/info": (status, {"message": "the daemon's words"})})
    with pytest.raises(kind) as info:
        Client("unix:///x.sock", transport=t).info()
    assert type(info.value) is kind
    assert str(info.value) == "the daemon's words"


def test_non_json_error_body_is_kept_as_text() -> None:
    assert str(from_status(500, b"plain failure\n")) == "plain failure"
    assert str(from_status(500, b"")) == "error status 500"


def test_version_too_new_message_reaches_the_caller() -> None:
    msg = "client version 1.50 is too new. Maximum supported API version is 1.45"
    t = daemon(routes={"/v1.45/version": (400, {"message": msg})})
    with pytest.raises(e.InvalidArgument, match="too new"):
        Client("unix:///x.sock", transport=t).version()


def test_non_json_success_is_a_system_error() -> None:
    t = daemon(routes={"/v1.45/info": (200, b"<html>")})
    with pytest.raises(e.System, match="not JSON"):
        Client("unix:///x.sock", transport=t).info()


def test_resolve_host_order() -> None:
    env = {"KETCH_HOST": "unix:///k.sock", "DOCKER_HOST": "unix:///d.sock"}
    assert resolve_host("tcp://h:1", env) == "tcp://h:1"
    assert resolve_host(None, env) == "unix:///k.sock"
    assert resolve_host(None, {"DOCKER_HOST": "unix:///d.sock"}) == "unix:///d.sock"
    assert resolve_host(None, {}) == DEFAULT_HOST == "unix:///run/ketch/ketch.sock"


def test_parse_host() -> None:
    assert parse_host("unix:///run/ketch/ketch.sock") == ("unix", "/run/ketch/ketch.sock", 0)
    assert parse_host("/tmp/k.sock") == ("unix", "/tmp/k.sock", 0)
    assert parse_host("tcp://10.0.0.1:2376") == ("tcp", "10.0.0.1", 2376)
    assert parse_host("tcp://h") == ("tcp", "h", 2375)
    with pytest.raises(e.InvalidArgument):
        parse_host("ssh://h")


def test_no_daemon_is_unavailable_with_dockers_wording(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/none.sock"
    with pytest.raises(e.Unavailable) as info:
        Client(host).version()
    assert str(info.value).startswith(f"Cannot connect to the ketch daemon at {host}. "
                                      "Is the ketch daemon running?")


def test_http_transport_over_a_real_unix_socket(tmp_path: Path) -> None:
    """The stdlib transport against a one-shot server on AF_UNIX."""
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            seen.append(data)
            body = b'{"message": "No such container: x"}'
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    th = threading.Thread(target=serve)
    th.start()
    try:
        resp = HTTPTransport(f"unix://{path}").request(Request("GET", "/v1.45/containers/x/json"))
    finally:
        th.join(5)
        srv.close()
        os.unlink(path)
    assert resp.status == 404
    assert str(from_status(resp.status, resp.body)) == "No such container: x"
    assert seen[0].startswith(b"GET /v1.45/containers/x/json HTTP/1.1\r\n")


def test_cli_formats() -> None:
    client = {"Version": "0.1.0", "ApiVersion": "1.45", "PythonVersion": "CPython 3.11",
              "OsArch": "linux/amd64"}
    server = {"Platform": {"Name": "ketch 0.1.0"}, "Components": [{
        "Name": "Engine", "Version": "0.1.0",
        "Details": {"ApiVersion": "1.45", "MinAPIVersion": "1.24", "Os": "linux",
                    "Arch": "amd64"}}]}
    out = format_version(client, server)
    assert out.startswith("Client:\n Version:")
    assert "\nServer: ketch 0.1.0\n Engine:\n" in out
    assert "API version:      1.45 (minimum version 1.24)" in out
    assert "Server:" not in format_version(client, None)
    info = format_info({"Containers": 0, "MemTotal": 25275232256, "Labels": ["a=b"]})
    assert " Total Memory: 23.54GiB" in info and "  a=b" in info
    assert bytes_size(0) == "0B" and bytes_size(1536) == "1.5KiB"


def _answer(raw: bytes, method: str = "GET"):
    """read_response over a socketpair whose other end sent ``raw`` and closed."""
    from ketch.client._http import read_response

    a, b = socket.socketpair()
    b.sendall(raw)
    b.close()
    status, headers, body, _ = read_response(a, method)
    data = body.read()
    a.close()
    return status, headers, data


def test_http_framings() -> None:
    from ketch.client._http import ProtocolError

    assert _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA")[2] == b"hello"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    assert _answer(chunked)[2] == b"abcde"
    assert _answer(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")[2] == b"until the end"
    assert _answer(b"HTTP/1.1 204 No Content\r\n\r\n")[2] == b""
    status, headers, _ = _answer(b"HTTP/1.1 404 Not Found\r\nA: 1\r\nA: 2\r\n\r\n")
    assert status == 404 and headers["A"] == "1, 2"
    with pytest.raises(ProtocolError):
        _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(ProtocolError):
        _answer(b"SSH-2.0-OpenSSH\r\n")


def test_http_chunked_upload() -> None:
    import io

    from ketch.client._http import send_request

    a, b = socket.socketpair()
    send_request(a, "POST", "/x", {"User-Agent": "t"}, io.BytesIO(b"0123456789"))
    a.close()
    raw = b""
    while chunk := b.recv(65536):
        raw += chunk
    b.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Host: localhost" in head
    assert body == b"a\r\n0123456789\r\n0\r\n\r\n"


def test_quoting_is_urllib_parses() -> None:
    # The client quotes by itself (urllib.parse costs the CLI's start-up); same results.
    import random
    import urllib.parse

    from ketch.client._http import form_encode, quote

    rnd = random.Random(5)
    alphabet = "abc /:@?&=+%~._-\u00ff\u00e9\u4e2d\n\"'{}[],"
    for _ in range(3000):
        s = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        for safe in ("", "/", "/:@"):
            assert quote(s, safe) == urllib.parse.quote(s, safe=safe)
        pairs = [(s, s[::-1]), ("filters", '{"label": ["a b"]}')]
        assert form_encode(pairs) == urllib.parse.urlencode(pairs)
