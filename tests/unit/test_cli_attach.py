"""attach: docker's stream framing, detach keys, half-close, and the hijack handshake."""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from ketch.cli.attach import (
    DEFAULT_DETACH_KEYS,
    Demuxer,
    EscapeProxy,
    Session,
    Streams,
    detach_key_bytes,
)
from ketch.client._http import hijack
from ketch.errors import InvalidArgument


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


def test_demux_whole_and_split_frames() -> None:
    wire = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"more")
    whole = list(Demuxer().feed(wire))
    assert whole == [(1, b"out\n"), (2, b"err\n"), (1, b"more")]
    # The same bytes one at a time: headers split anywhere, payloads handed on as they come.
    d = Demuxer()
    pieces = [p for i in range(len(wire)) for p in d.feed(wire[i:i + 1])]
    joined: dict[int, bytes] = {}
    for s, b in pieces:
        joined[s] = joined.get(s, b"") + b
    assert joined == {1: b"out\nmore", 2: b"err\n"}
    assert not d.pending
    list(d.feed(frame(1, b"abc")[:5]))
    assert d.pending


def test_detach_key_spelling() -> None:
    assert detach_key_bytes("ctrl-p,ctrl-q") == DEFAULT_DETACH_KEYS == b"\x10\x11"
    assert detach_key_bytes("ctrl-a,x") == b"\x01x"
    assert detach_key_bytes("ctrl-@,ctrl-[,ctrl-_") == b"\x00\x1b\x1f"
    with pytest.raises(InvalidArgument, match="Unknown character: 'foo'"):
        detach_key_bytes("foo")


def test_escape_proxy_holds_back_a_prefix_and_releases_it() -> None:
    p = EscapeProxy(b"\x10\x11")
    assert p.feed(b"ab\x10") == (b"ab", False)      # ctrl-p held back
    assert p.feed(b"c") == (b"\x10c", False)        # not followed by ctrl-q: let through
    assert p.feed(b"\x10\x10") == (b"\x10", False)  # a second ctrl-p restarts the match
    assert p.feed(b"\x11rest") == (b"", True)       # complete: detach, the rest is dropped


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    return a, b


def test_session_demuxes_and_half_closes_after_stdin_eof() -> None:
    client, daemon = _pair()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(in_w, b"hello\n")
    os.close(in_w)  # stdin ends at once

    def fake_daemon() -> None:
        # Read stdin to its EOF (the client's half-close), then answer and close.
        got = b""
        while True:
            chunk = daemon.recv(1024)
            if not chunk:
                break
            got += chunk
        daemon.sendall(frame(1, got) + frame(2, b"warn\n"))
        daemon.close()

    t = threading.Thread(target=fake_daemon)
    t.start()
    s = Session(client, frame(1, b"first "), False, Streams(in_r, out_w, err_w))
    assert s.run() is True
    t.join(5)
    client.close()
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    assert os.read(out_r, 1024) == b"first hello\n"
    assert os.read(err_r, 1024) == b"warn\n"
    os.close(out_r)
    os.close(err_r)


def test_session_tty_detach_keys_end_it_without_eof() -> None:
    client, daemon = _pair()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, b"ls\r\x10\x11")
    s = Session(client, b"", True, Streams(in_r, out_w, None))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(s.run()))
    t.start()
    got = b""
    while len(got) < 3:
        got += daemon.recv(1024)
    t.join(5)
    assert result == [False] and s.detached
    assert got == b"ls\r"           # the keys themselves never reach the container
    for fd in (in_r, in_w, out_r, out_w):
        os.close(fd)
    client.close()
    daemon.close()


def test_hijack_reads_head_and_keeps_early_bytes() -> None:
    client, daemon = _pair()
    reply = (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
             b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + frame(1, b"early"))

    def server() -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += daemon.recv(1024)
        assert b"Upgrade: tcp" in buf and b"Connection: Upgrade" in buf
        assert b"Connection: close" not in buf
        daemon.sendall(reply)

    t = threading.Thread(target=server)
    t.start()
    status, headers, rest = hijack(client, "POST", "/v1.45/containers/x/attach?stream=1", {},
                                   None)
    t.join(5)
    assert status == 101 and headers["Upgrade"] == "tcp"
    assert rest == frame(1, b"early")
    client.close()
    daemon.close()


def test_hijack_error_answer_gives_the_body() -> None:
    client, daemon = _pair()
    body = b'{"message":"No such container: x"}'

    def server() -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += daemon.recv(1024)
        daemon.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
        daemon.close()

    t = threading.Thread(target=server)
    t.start()
    status, _, rest = hijack(client, "POST", "/v1.45/containers/x/attach", {}, None)
    t.join(5)
    assert (status, rest) == (404, body)
    client.close()


class _FakeWait:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def read(self, n: int = -1) -> bytes:
        data, self.body = self.body, b""
        return data

    def close(self) -> None:
        pass


class _FakeClient:
    """Records the calls `ketch run` makes; the "daemon" side sends output and exit 3."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.daemon: socket.socket | None = None

    def container_attach(self, cid: str, **kw: object):  # type: ignore[no-untyped-def]
        from ketch.client._containers import Hijacked

        self.calls.append(f"attach {cid} {sorted(k for k, v in kw.items() if v is True)}")
        ours, self.daemon = socket.socketpair()
        return Hijacked(ours, b"", 101, {})

    def container_wait(self, cid: str, condition: str = "") -> _FakeWait:
        self.calls.append(f"wait {cid} {condition}")
        return _FakeWait(b'{"StatusCode":3,"Error":null}')

    def wait_result(self, resp: _FakeWait) -> dict[str, object]:
        import json

        out: dict[str, object] = json.loads(resp.read())
        return out

    def container_start(self, cid: str) -> None:
        self.calls.append(f"start {cid}")
        assert self.daemon is not None
        self.daemon.sendall(frame(1, b"out\n"))
        self.daemon.close()


def test_run_attaches_and_waits_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from ketch.cli import container_cmds

    out_r, out_w = os.pipe()
    monkeypatch.setattr("ketch.cli.attach.stdio_streams",
                        lambda *a: Streams(None, out_w, None))
    client = _FakeClient()
    config = {"AttachStdin": False, "AttachStdout": True, "AttachStderr": True, "Tty": False}
    code = container_cmds._start_attached(client, "c1", config, auto_remove=True,
                                          detach=False, detach_keys="", sig_proxy=False,
                                          cmd="run", print_id=False)
    os.close(out_w)
    assert code == 3
    assert client.calls == ["attach c1 ['stderr', 'stdout', 'stream']", "wait c1 removed",
                            "start c1"]
    assert os.read(out_r, 100) == b"out\n"
    os.close(out_r)
