"""The API's byte streams: stdcopy framing, the logs body, and the hijack of a
connection for attach/exec, driven by a raw socket client and by the real
docker CLI (``docker exec`` against a tiny fake daemon)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from ketch.api import make_app, streams
from ketch.api.routers import add
from ketch.api.routers.system import HostFacts
from ketch.api.streams import (
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    STDERR,
    STDIN,
    STDOUT,
    SYSTEMERR,
    Demuxer,
    frame,
    iter_frames,
    stdcopy,
)
from ketch.engine.logread import LogRecord, ReadOptions, follow_batches
from ketch.engine.supervisor.logs import JsonFile, encode_entry
from ketch.errors import InvalidArgument, System

T0 = 1_764_572_097_123_456_789      # 2025-12-01T06:54:57.123456789Z
SEC = 1_000_000_000


class SystemBackend:
    """For /_ping, which the docker CLI calls first."""

    def facts(self) -> HostFacts:
        return HostFacts(
            id="0d1c", name="box", server_version="0.1.0", git_commit="abc1234", build_time="",
            runtime_version="CPython 3.11.7", os="linux", arch="amd64", machine="x86_64",
            kernel_version="6.1.0", operating_system="Debian GNU/Linux 12 (bookworm)", ncpu=4,
            mem_total=8 << 30, root_dir="/var/lib/ketch", cgroup_version="2",
            cgroup_controllers=frozenset({"cpu", "memory", "pids"}))


# -- framing ------------------------------------------------------------------------------
def test_frame_layout():
    assert frame(STDOUT, b"hi") == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    assert frame(STDERR, b"") == b"\x02\x00\x00\x00\x00\x00\x00\x00"
    big = frame(STDOUT, b"x" * 70000)
    assert big[:8] == b"\x01\x00\x00\x00\x00\x01\x11\x70" and len(big) == 70008


def test_demuxer_takes_any_pieces():
    data = frame(STDOUT, b"one") + frame(STDERR, b"two\n") + frame(SYSTEMERR, b"") + frame(
        STDIN, b"x" * 40000)
    for size in (1, 3, 8, 9, 1000, len(data)):
        d = Demuxer()
        got = [f for i in range(0, len(data), size) for f in d.feed(data[i:i + size])]
        assert got == [(STDOUT, b"one"), (STDERR, b"two\n"), (SYSTEMERR, b""),
                       (STDIN, b"x" * 40000)]
        assert d.pending == 0
    d = Demuxer()
    assert d.feed(frame(STDOUT, b"abc")[:-1]) == [] and d.pending == 10
    with pytest.raises(InvalidArgument, match="Unrecognized input header: 7"):
        Demuxer().feed(b"\x07\x00\x00\x00\x00\x00\x00\x01x")


def test_stdcopy_routes_streams_and_stops_at_a_daemon_error():
    out, err = io.BytesIO(), io.BytesIO()
    data = frame(STDOUT, b"a") + frame(STDERR, b"b") + frame(STDIN, b"c") + frame(STDOUT, b"cut")
    assert stdcopy(io.BytesIO(data[:-1]).read, out, err) == 3   # a cut frame is dropped
    assert (out.getvalue(), err.getvalue()) == (b"ac", b"b")
    with pytest.raises(System, match="error from daemon in stream: boom"):
        stdcopy(io.BytesIO(frame(STDOUT, b"a") + frame(SYSTEMERR, b"boom")).read, out, err)
    assert list(iter_frames(io.BytesIO(b"").read)) == []


def test_content_type_by_version_and_tty():
    assert streams.stream_content_type(True, "1.42") == MULTIPLEXED_STREAM
    assert streams.stream_content_type(True, "1.41") == RAW_STREAM
    assert streams.stream_content_type(False, "1.45") == RAW_STREAM


# -- the logs query and messages -------------------------------------------------------------
def test_logs_query():
    q = streams.logs_query({"stdout": "1", "tail": "all", "since": "1700000000.5",
                            "until": "0", "timestamps": "true", "follow": "1"})
    assert (q.stdout, q.stderr, q.follow, q.timestamps, q.details) == (
        True, False, True, True, False)
    assert q.tail == -1 and q.until_ns is None
    assert q.since_ns == 1_700_000_000 * SEC + SEC // 2
    assert q.read_options() == ReadOptions(stdout=True, stderr=False,
                                           since_ns=q.since_ns, tail=-1)
    assert streams.logs_query({"stderr": "1", "tail": "3", "until": "5"}).until_ns == 5 * SEC
    with pytest.raises(InvalidArgument, match="Bad parameters: you must choose at least one"):
        streams.logs_query({"stdout": "0", "tail": "1"})
    with pytest.raises(InvalidArgument, match="invalid syntax"):
        streams.logs_query({"stdout": "1", "since": "yesterday"})


def test_timestamps_are_fixed_width_and_details_are_query_escaped():
    assert streams.timestamp_fixed(T0) == "2025-12-01T06:54:57.123456789Z"
    assert streams.timestamp_fixed(T0 - 123_456_789) == "2025-12-01T06:54:57.000000000Z"
    rec = LogRecord("stdout", T0 - 789, b"hi\n", {"b": "x y", "a": "1=2,3&"})
    assert streams.log_message(rec) == b"hi\n"
    assert streams.log_message(rec, details=True) == b"a=1%3D2%2C3%26,b=x+y hi\n"
    assert streams.log_message(rec, timestamps=True, details=True) == (
        b"2025-12-01T06:54:57.123456000Z a=1%3D2%2C3%26,b=x+y hi\n")
    assert streams.log_message(LogRecord("stdout", T0, b"x"), details=True) == b" x"


def test_encode_logs_frames_each_message():
    recs = [LogRecord("stdout", T0, b"a\n"), LogRecord("stderr", T0, b"b"),
            LogRecord("weird", T0, b"c\n")]
    assert streams.encode_logs(recs, multiplexed=True) == frame(STDOUT, b"a\n") + frame(
        STDERR, b"b")
    assert streams.encode_logs(recs, multiplexed=False) == b"a\nb"


# -- the logs route ------------------------------------------------------------------------
async def serve(app: web.Application, path: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    return runner


def http_get(path: str, target: str) -> tuple[bytes, bytes]:
    """A GET over the unix socket; (head, de-chunked body)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    body = b""
    if b"chunked" in head.lower():
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
    else:
        body = rest
    return head, body


def logs_app(log_path: str, *, tty: bool = False, stopped: asyncio.Event | None = None,
             closed: list[str] | None = None) -> web.Application:
    app = make_app(SystemBackend())

    async def logs(request: web.Request) -> web.StreamResponse:
        q = streams.logs_query(request.query)
        batches = follow_batches(log_path, q.read_options(), follow=q.follow,
                                 stopped=stopped, poll_interval=0.01)

        async def tracked() -> AsyncIterator[Sequence[LogRecord]]:
            try:
                async for b in batches:
                    yield b
            finally:
                await batches.aclose()
                if closed is not None:
                    closed.append("closed")

        return await streams.write_logs(request, tracked(), tty=tty, timestamps=q.timestamps,
                                        details=q.details, check_interval=0.05)

    add(app, "GET", "/containers/{id}/logs", logs)
    return app


def write_log(path: Path, n: int) -> None:
    f = JsonFile(str(path), max_size=200, max_file=5)
    for i in range(n):
        f.write(encode_entry(f"line {i}\n".encode(), "stderr" if i % 2 else "stdout",
                             T0 + i * SEC, {"tag": "web"}))
    f.close()


def run_with_server(app: web.Application, sock_path: str,
                    client: Callable[[], object]) -> object:
    async def main() -> object:
        runner = await serve(app, sock_path)
        try:
            return await asyncio.to_thread(client)
        finally:
            await runner.cleanup()
    return asyncio.run(main())


def test_logs_route_multiplexed_with_timestamps(tmp_path):
    log_path, sock = tmp_path / "c-json.log", str(tmp_path / "api.sock")
    write_log(log_path, 10)
    head, body = run_with_server(  # type: ignore[misc]
        logs_app(str(log_path)), sock,
        lambda: http_get(sock, "/v1.45/containers/c/logs?stdout=1&stderr=1&tail=3&timestamps=1"))
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert f"Content-Type: {MULTIPLEXED_STREAM}".encode() in head
    assert Demuxer().feed(body) == [
        (STDERR, b"2025-12-01T06:55:04.123456789Z line 7\n"),
        (STDOUT, b"2025-12-01T06:55:05.123456789Z line 8\n"),
        (STDERR, b"2025-12-01T06:55:06.123456789Z line 9\n")]


def test_logs_route_raw_for_old_clients_and_tty(tmp_path):
    log_path, sock = tmp_path / "c-json.log", str(tmp_path / "api.sock")
    write_log(log_path, 4)
    head, body = run_with_server(  # type: ignore[misc]
        logs_app(str(log_path)), sock,
        lambda: http_get(sock, "/v1.41/containers/c/logs?stdout=1&details=1"))
    assert f"Content-Type: {RAW_STREAM}".encode() in head
    assert Demuxer().feed(body) == [(STDOUT, b"tag=web line 0\n"), (STDOUT, b"tag=web line 2\n")]
    head, body = run_with_server(  # type: ignore[misc]
        logs_app(str(log_path), tty=True), sock,
        lambda: http_get(sock, "/v1.45/containers/c/logs?stdout=1&stderr=1"))
    assert f"Content-Type: {RAW_STREAM}".encode() in head
    assert body == b"line 0\nline 1\nline 2\nline 3\n"


def test_logs_route_errors_before_the_stream_are_statuses(tmp_path):
    sock = str(tmp_path / "api.sock")
    head, body = run_with_server(  # type: ignore[misc]
        logs_app(str(tmp_path / "c-json.log")), sock,
        lambda: http_get(sock, "/containers/c/logs?tail=1"))
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body) == {"message": "Bad parameters: you must choose at least one stream"}


def test_logs_read_error_goes_in_band(tmp_path):
    sock = str(tmp_path / "api.sock")
    app = make_app(SystemBackend())

    async def broken() -> AsyncIterator[Sequence[LogRecord]]:
        yield [LogRecord("stdout", T0, b"ok\n")]
        raise OSError("disk on fire")

    async def logs(request: web.Request) -> web.StreamResponse:
        return await streams.write_logs(request, broken(), tty=False)

    add(app, "GET", "/containers/{id}/logs", logs)
    _, body = run_with_server(app, sock,  # type: ignore[misc]
                              lambda: http_get(sock, "/containers/c/logs?stdout=1"))
    assert Demuxer().feed(body) == [(STDOUT, b"ok\n"),
                                    (SYSTEMERR, b"Error grabbing logs: disk on fire\n")]


def test_follow_streams_until_stopped(tmp_path):
    log_path, sock = tmp_path / "c-json.log", str(tmp_path / "api.sock")
    write_log(log_path, 2)

    async def main() -> bytes:
        stopped = asyncio.Event()
        runner = await serve(logs_app(str(log_path), stopped=stopped), sock)
        try:
            got = asyncio.create_task(asyncio.to_thread(
                http_get, sock, "/containers/c/logs?stdout=1&stderr=1&follow=1"))
            await asyncio.sleep(0.2)
            f = JsonFile(str(log_path), max_size=200, max_file=5)
            for i in range(2, 12):
                f.write(encode_entry(f"line {i}\n".encode(), "stdout", T0 + i * SEC))
            f.close()
            stopped.set()
            _, body = await asyncio.wait_for(got, 10)
            return body
        finally:
            await runner.cleanup()

    body = asyncio.run(main())
    assert [d for _, d in Demuxer().feed(body)] == [f"line {i}\n".encode() for i in range(12)]


def test_follow_ends_when_the_client_leaves(tmp_path):
    log_path, sock = tmp_path / "c-json.log", str(tmp_path / "api.sock")
    write_log(log_path, 1)
    closed: list[str] = []

    async def main() -> None:
        runner = await serve(logs_app(str(log_path), closed=closed), sock)
        try:
            def client() -> bytes:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(sock)
                    s.sendall(b"GET /containers/c/logs?stdout=1&follow=1 HTTP/1.1\r\n"
                              b"Host: x\r\n\r\n")
                    return s.recv(65536)
            first = await asyncio.to_thread(client)
            assert first.startswith(b"HTTP/1.1 200 OK")
            for _ in range(200):
                if closed:
                    break
                await asyncio.sleep(0.02)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert closed == ["closed"]


# -- hijack --------------------------------------------------------------------------------
def echo_supervisor(fd: int, tty: bool) -> None:
    """Stands in for the supervisor: stdin echoed as stdout; after stdin's EOF
    (the client's half-close) output still flows."""
    with socket.socket(fileno=fd) as sock:
        def out(stream: int, data: bytes) -> None:
            sock.sendall(data if tty else frame(stream, data))
        while data := sock.recv(65536):
            out(STDOUT, data)
        out(STDERR, b"stdin closed\n")
        sock.shutdown(socket.SHUT_RDWR)


async def exec_start(request: web.Request) -> web.StreamResponse:
    body = await request.json()         # read before the hijack
    tty = bool(body.get("Tty"))
    version = streams.versions.of(request.match_info)
    sock = await streams.hijack(request, streams.stream_content_type(not tty, version))
    threading.Thread(target=echo_supervisor, args=(sock.detach(), tty)).start()
    return web.Response()


def hijack_app(fail_after: bool = False) -> web.Application:
    app = make_app(SystemBackend())

    async def attach(request: web.Request) -> web.StreamResponse:
        version = streams.versions.of(request.match_info)
        sock = await streams.hijack(request, streams.stream_content_type(True, version))
        if fail_after:
            sock.sendall(b"exec failed: no such file\r\n")     # in band, as dockerd
            sock.close()
            raise InvalidArgument("this must not reach the client")
        # As the real route: hand the fd over (here to a thread), keep no copy.
        threading.Thread(target=echo_supervisor, args=(sock.detach(), False)).start()
        return web.Response(text="must not reach the client either")

    add(app, "POST", "/containers/{id}/attach", attach)
    add(app, "POST", "/exec/{id}/start", exec_start)
    return app


def raw_exchange(path: str | tuple[str, int], request: bytes, stdin: Sequence[bytes]
                 ) -> tuple[bytes, bytes]:
    """Send a request, read the answer's head, then send stdin, half-close, read to EOF."""
    family = socket.AF_UNIX if isinstance(path, str) else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for piece in stdin:
            s.sendall(piece)
        s.shutdown(socket.SHUT_WR)
        while chunk := s.recv(65536):
            body += chunk
    return head, body


UPGRADE = b"Connection: Upgrade\r\nUpgrade: tcp\r\n"


def test_hijack_upgrade_echo_and_half_close(tmp_path):
    sock = str(tmp_path / "api.sock")
    req = (b"POST /v1.45/containers/c/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\n"
           b"Host: api\r\nContent-Type: text/plain\r\n" + UPGRADE + b"\r\n")
    head, body = run_with_server(  # type: ignore[misc]
        hijack_app(), sock, lambda: raw_exchange(sock, req, [b"hello ", b"world\n"]))
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 101 UPGRADED", b"Content-Type: " + MULTIPLEXED_STREAM.encode(),
        b"Connection: Upgrade", b"Upgrade: tcp"]
    frames = Demuxer().feed(body)
    assert b"".join(d for s, d in frames if s == STDOUT) == b"hello world\n"
    # Output after the client's half-close, then the end: nothing from aiohttp in between.
    assert frames[-1] == (STDERR, b"stdin closed\n")
    assert frame(STDERR, b"stdin closed\n") == body[-len(frame(STDERR, b"stdin closed\n")):]


def test_hijack_over_tcp(tmp_path):
    req = (b"POST /v1.45/containers/c/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\n"
           b"Host: api\r\n" + UPGRADE + b"\r\n")

    async def main() -> tuple[bytes, bytes]:
        runner = web.AppRunner(hijack_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            host, port = runner.addresses[0][:2]
            return await asyncio.to_thread(raw_exchange, (host, port), req, [b"over tcp"])
        finally:
            await runner.cleanup()

    head, body = asyncio.run(main())
    assert head.startswith(b"HTTP/1.1 101 UPGRADED")
    assert Demuxer().feed(body) == [(STDOUT, b"over tcp"), (STDERR, b"stdin closed\n")]


def test_hijack_without_upgrade_answers_200_raw(tmp_path):
    sock = str(tmp_path / "api.sock")
    req = b"POST /v1.41/containers/c/attach?stream=1 HTTP/1.1\r\nHost: api\r\n\r\n"
    head, body = run_with_server(  # type: ignore[misc]
        hijack_app(), sock, lambda: raw_exchange(sock, req, [b"x"]))
    assert head.split(b"\r\n") == [b"HTTP/1.1 200 OK", b"Content-Type: " + RAW_STREAM.encode()]
    assert Demuxer().feed(body) == [(STDOUT, b"x"), (STDERR, b"stdin closed\n")]


def test_hijack_after_reading_a_body_and_tty_is_raw(tmp_path):
    sock = str(tmp_path / "api.sock")
    payload = json.dumps({"Detach": False, "Tty": True}).encode()
    req = (b"POST /v1.45/exec/e1/start HTTP/1.1\r\nHost: api\r\n"
           b"Content-Type: application/json\r\n" + UPGRADE +
           f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    head, body = run_with_server(  # type: ignore[misc]
        hijack_app(), sock, lambda: raw_exchange(sock, req, [b"ls\r"]))
    assert b"Content-Type: " + RAW_STREAM.encode() in head
    assert body == b"ls\rstdin closed\n"


def test_after_the_hijack_aiohttp_writes_nothing(tmp_path):
    sock = str(tmp_path / "api.sock")
    req = b"POST /containers/c/attach HTTP/1.1\r\nHost: api\r\n" + UPGRADE + b"\r\n"
    head, body = run_with_server(  # type: ignore[misc]
        hijack_app(fail_after=True), sock, lambda: raw_exchange(sock, req, []))
    assert head.startswith(b"HTTP/1.1 101 UPGRADED")
    assert body == b"exec failed: no such file\r\n"


def test_the_server_still_serves_after_hijacks(tmp_path):
    sock = str(tmp_path / "api.sock")
    req = b"POST /containers/c/attach HTTP/1.1\r\nHost: api\r\n" + UPGRADE + b"\r\n"

    def client() -> tuple[bytes, bytes]:
        for _ in range(20):
            raw_exchange(sock, req, [b"x"])
        return http_get(sock, "/_ping")

    before = len(os.listdir("/proc/self/fd"))
    head, body = run_with_server(hijack_app(), sock, client)  # type: ignore[misc]
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b"OK"
    assert len(os.listdir("/proc/self/fd")) <= before + 1     # no leaked connection fds


# -- the real docker CLI -----------------------------------------------------------------------
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def fake_daemon(exit_code: int, log_path: Path | None = None,
                stopped: asyncio.Event | None = None) -> web.Application:
    """Just enough of the Engine API for ``docker exec -i``, ``docker attach`` and
    ``docker logs`` against one running container "box"."""
    app = make_app(SystemBackend())
    add(app, "POST", "/exec/{id}/start", exec_start)
    if log_path is not None:
        add(app, "GET", "/containers/{id}/logs", _logs_handler(log_path, stopped))
    done = threading.Event()

    async def inspect_container(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        return web.json_response({
            "Id": cid * 8, "Name": "/" + cid,
            "State": {"Status": "running", "Running": True, "Paused": False,
                      "Restarting": False},
            "Config": {"Tty": False, "OpenStdin": True, "AttachStdin": True,
                       "AttachStdout": True, "AttachStderr": True}})

    async def create_exec(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"Id": "e1"}, status=201)

    async def inspect_exec(request: web.Request) -> web.Response:
        return web.json_response({"ID": "e1", "Running": False, "ExitCode": exit_code,
                                  "ProcessConfig": {"tty": False}})

    async def wait(request: web.Request) -> web.Response:
        # The CLI waits for the exit while attached; "exit" once stdin has ended.
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await asyncio.to_thread(done.wait, 30)
        await response.write(json.dumps({"StatusCode": exit_code, "Error": None}).encode())
        return response

    async def attach(request: web.Request) -> web.StreamResponse:
        version = streams.versions.of(request.match_info)
        sock = await streams.hijack(request, streams.stream_content_type(True, version))

        def run(fd: int) -> None:
            try:
                echo_supervisor(fd, False)
            finally:
                done.set()
        threading.Thread(target=run, args=(sock.detach(),)).start()
        return web.Response()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    add(app, "GET", "/containers/{id}/json", inspect_container)
    add(app, "POST", "/containers/{id}/exec", create_exec)
    add(app, "GET", "/exec/{id}/json", inspect_exec)
    add(app, "POST", "/exec/{id}/resize", ok)
    add(app, "POST", "/containers/{id}/wait", wait)
    add(app, "POST", "/containers/{id}/attach", attach)
    add(app, "POST", "/containers/{id}/resize", ok)
    return app


def _logs_handler(log_path: Path, stopped: asyncio.Event | None
                  ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def logs(request: web.Request) -> web.StreamResponse:
        q = streams.logs_query(request.query)
        batches = follow_batches(str(log_path), q.read_options(), follow=q.follow,
                                 stopped=stopped, poll_interval=0.01)
        return await streams.write_logs(request, batches, tty=False, timestamps=q.timestamps,
                                        details=q.details)
    return logs


def docker(tmp_path: Path, sock: str, *args: str, stdin: bytes = b""
           ) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "DOCKER_CONFIG": str(tmp_path / "cfg")}
    return subprocess.run([DOCKER, "-H", f"unix://{sock}", *args], input=stdin,
                          capture_output=True, env=env, timeout=60)


needs_docker = pytest.mark.skipif(not os.access(DOCKER, os.X_OK), reason="no docker CLI")


@needs_docker
def test_docker_exec_through_the_hijack(tmp_path):
    sock = str(tmp_path / "api.sock")
    res = run_with_server(fake_daemon(3), sock, lambda: docker(
        tmp_path, sock, "exec", "-i", "box", "cat", stdin=b"hello from stdin\n" * 1000))
    assert isinstance(res, subprocess.CompletedProcess)
    assert res.stdout == b"hello from stdin\n" * 1000, res.stderr
    assert res.stderr == b"stdin closed\n"
    assert res.returncode == 3


@needs_docker
def test_docker_attach_through_the_hijack(tmp_path):
    sock = str(tmp_path / "api.sock")
    res = run_with_server(fake_daemon(5), sock, lambda: docker(
        tmp_path, sock, "attach", "box", stdin=b"typed\n"))
    assert isinstance(res, subprocess.CompletedProcess)
    assert (res.stdout, res.stderr, res.returncode) == (b"typed\n", b"stdin closed\n", 5)


@needs_docker
def test_docker_logs(tmp_path):
    sock, log_path = str(tmp_path / "api.sock"), tmp_path / "c-json.log"
    write_log(log_path, 6)
    res = run_with_server(fake_daemon(0, log_path), sock, lambda: docker(
        tmp_path, sock, "logs", "-t", "--tail", "3", "box"))
    assert isinstance(res, subprocess.CompletedProcess)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"2025-12-01T06:55:01.123456789Z line 4\n"
    assert res.stderr == (b"2025-12-01T06:55:00.123456789Z line 3\n"
                          b"2025-12-01T06:55:02.123456789Z line 5\n")
    res = run_with_server(fake_daemon(0, log_path), sock, lambda: docker(
        tmp_path, sock, "logs", "--details", "--since", "1764572100", "--until",
        "1764572101.123456789", "box"))
    assert isinstance(res, subprocess.CompletedProcess)
    assert (res.stdout, res.stderr) == (b"tag=web line 4\n", b"tag=web line 3\n")


@needs_docker
def test_docker_logs_follow(tmp_path):
    sock, log_path = str(tmp_path / "api.sock"), tmp_path / "c-json.log"
    write_log(log_path, 1)

    async def main() -> subprocess.CompletedProcess[bytes]:
        stopped = asyncio.Event()
        runner = await serve(fake_daemon(0, log_path, stopped), sock)
        try:
            proc = asyncio.create_task(asyncio.to_thread(
                docker, tmp_path, sock, "logs", "-f", "box"))
            await asyncio.sleep(0.5)
            # Rotations while the CLI follows; enough files kept that none is lost.
            f = JsonFile(str(log_path), max_size=200, max_file=100)
            for i in range(1, 30):
                f.write(encode_entry(f"line {i}\n".encode(), "stdout", T0 + i * SEC))
            f.close()
            stopped.set()
            return await asyncio.wait_for(proc, 30)
        finally:
            await runner.cleanup()

    res = asyncio.run(main())
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"".join(f"line {i}\n".encode() for i in range(30))



def test_docker_py_exec_socket(tmp_path):
    docker_py = pytest.importorskip("docker")
    sock = str(tmp_path / "api.sock")

    def client() -> list[tuple[int, bytes]]:
        api = docker_py.APIClient(base_url=f"unix://{sock}", version="1.45")
        try:
            eid = api.exec_create("box", ["cat"], stdin=True)["Id"]
            conn = api.exec_start(eid, socket=True)
            raw = conn._sock
            raw.sendall(b"from docker-py\n")
            raw.shutdown(socket.SHUT_WR)        # stdin done; output must keep coming
            data = b""
            while chunk := raw.recv(65536):
                data += chunk
            conn.close()
            return Demuxer().feed(data)
        finally:
            api.close()

    frames = run_with_server(fake_daemon(0), sock, client)
    assert frames == [(STDOUT, b"from docker-py\n"), (STDERR, b"stdin closed\n")]
