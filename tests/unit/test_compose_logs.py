"""compose logs: prefixes, padding, colours, whole lines out of multiplexed or raw streams."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from ketch.compose.logs import COLORS, LogPrinter, Target, follow_all, short_name
from ketch.errors import NotFound


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


class Resp:
    """A log response handing out the given chunks, one per read."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        assert len(chunk) <= n
        return chunk

    def close(self) -> None:
        self.closed = True


class Client:
    def __init__(self, streams: dict[str, list[bytes]]) -> None:
        self.streams = streams
        self.responses: dict[str, Resp] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def container_logs(self, cid: str, **kw: Any) -> Resp:
        self.calls.append((cid, kw))
        if cid not in self.streams:
            raise NotFound(f"No such container: {cid}")
        self.responses[cid] = Resp(self.streams[cid])
        return self.responses[cid]


def lines_of(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


# --- prefix and colour ---------------------------------------------------------------------------

def test_short_name() -> None:
    assert short_name("proj-web-1", "proj") == "web-1"
    assert short_name("custom", "proj") == "custom"
    assert short_name("projx-web-1", "proj") == "projx-web-1"


def test_prefix_padded_to_longest_name_plus_one() -> None:
    out = io.StringIO()
    p = LogPrinter(out)
    p.register(["web-1", "database-1"])
    assert p.width == len("database-1") + 1
    p.line("web-1", "hello")
    p.line("database-1", "ready")
    assert lines_of(out) == ["web-1       | hello", "database-1  | ready"]


def test_single_name_prefix() -> None:
    out = io.StringIO()
    p = LogPrinter(out)
    p.register(["web-1"])
    p.line("web-1", "text")
    assert out.getvalue() == "web-1  | text\n"


def test_no_prefix() -> None:
    out = io.StringIO()
    p = LogPrinter(out, prefix=False)
    p.register(["web-1"])
    p.line("web-1", "text")
    assert out.getvalue() == "text\n"


def test_colours_rotate_per_container() -> None:
    out = io.StringIO()
    p = LogPrinter(out, color=True)
    names = [f"s{i:02d}" for i in range(len(COLORS) + 1)]
    p.register(names)
    p.register(["s00"])            # registered again: keeps its colour
    p.line("s00", "a")
    p.line("s01", "b")
    p.line(names[-1], "c")
    first, second, wrapped = lines_of(out)
    assert first == f"\x1b[{COLORS[0]}ms00  |\x1b[0m a"
    assert second == f"\x1b[{COLORS[1]}ms01  |\x1b[0m b"
    assert wrapped.startswith(f"\x1b[{COLORS[0]}m{names[-1]}")
    assert COLORS[0] == "36" and COLORS[1] == "33"


def test_no_colour_has_no_escapes() -> None:
    out = io.StringIO()
    p = LogPrinter(out, color=False)
    p.register(["web-1"])
    p.line("web-1", "a")
    p.status("web-1", "exited with code 0")
    assert "\x1b" not in out.getvalue()
    assert lines_of(out) == ["web-1  | a", "web-1 exited with code 0"]


def test_status_is_coloured_whole() -> None:
    out = io.StringIO()
    p = LogPrinter(out, color=True)
    p.register(["web-1", "db-1"])
    p.status("db-1", "exited with code 3")
    assert out.getvalue() == f"\x1b[{COLORS[1]}mdb-1 exited with code 3\x1b[0m\n"


# --- streams -------------------------------------------------------------------------------------

def copy(chunks: list[bytes], *, tty: bool = False, width_names: tuple[str, ...] = ("web-1",)
         ) -> tuple[list[str], Resp]:
    out = io.StringIO()
    p = LogPrinter(out)
    p.register(width_names)
    client = Client({"c1": chunks})
    p.copy(client, Target("web-1", "c1", tty=tty), follow=False)
    return lines_of(out), client.responses["c1"]


def test_multiplexed_frames_become_prefixed_lines() -> None:
    got, resp = copy([frame(1, b"one\ntwo\n") + frame(2, b"err\n")])
    assert got == ["web-1  | one", "web-1  | two", "web-1  | err"]
    assert resp.closed


def test_partial_line_across_frames_is_joined() -> None:
    got, _ = copy([frame(1, b"hel"), frame(1, b"lo\nwor"), frame(1, b"ld\n")])
    assert got == ["web-1  | hello", "web-1  | world"]


def test_frame_split_across_reads() -> None:
    data = frame(1, b"first line\n") + frame(2, b"second\n")
    chunks = [data[i:i + 3] for i in range(0, len(data), 3)]
    got, _ = copy(chunks)
    assert got == ["web-1  | first line", "web-1  | second"]


def test_stdout_and_stderr_partials_are_kept_apart() -> None:
    got, _ = copy([frame(1, b"out-"), frame(2, b"err-"), frame(1, b"done\n"),
                   frame(2, b"done\n")])
    assert got == ["web-1  | out-done", "web-1  | err-done"]


def test_unterminated_last_line_is_printed_at_the_end() -> None:
    got, _ = copy([frame(1, b"a\nno newline")])
    assert got == ["web-1  | a", "web-1  | no newline"]


def test_carriage_returns_are_dropped() -> None:
    got, _ = copy([frame(1, b"dos line\r\n")])
    assert got == ["web-1  | dos line"]


def test_tty_stream_is_raw() -> None:
    # no frame headers: the bytes are the output (a header-looking byte is text)
    got, _ = copy([b"\x01raw ", b"text\nmore\n"], tty=True)
    assert got == ["web-1  | \x01raw text", "web-1  | more"]


def test_invalid_utf8_is_replaced() -> None:
    got, _ = copy([frame(1, b"caf\xe9\n")])
    assert got == ["web-1  | caf\ufffd"]


def test_copy_passes_the_options() -> None:
    p = LogPrinter(io.StringIO())
    client = Client({"c1": []})
    p.copy(client, Target("web-1", "c1"), follow=True, tail="5", since="10m",
           until="1m", timestamps=True)
    assert client.calls == [("c1", {"follow": True, "tail": "5", "since": "10m",
                                    "until": "1m", "timestamps": True})]


def test_copy_of_a_gone_container_prints_nothing() -> None:
    out = io.StringIO()
    LogPrinter(out).copy(Client({}), Target("web-1", "gone"), follow=False)
    assert out.getvalue() == ""


def test_stop_event_ends_a_follow() -> None:
    stop = threading.Event()
    stop.set()
    out = io.StringIO()
    client = Client({"c1": [frame(1, b"never\n")]})
    LogPrinter(out).copy(client, Target("web-1", "c1"), follow=True, stop=stop)
    assert out.getvalue() == ""
    assert client.responses["c1"].closed


def test_follow_all_interleaves_only_whole_lines() -> None:
    out = io.StringIO()
    p = LogPrinter(out)
    many = 200
    streams = {
        "a": [frame(1, b"a" * 50 + b"\n") for _ in range(many)],
        "b": [frame(1, b"b" * 10), frame(1, b"b" * 40 + b"\n")] * many,
    }
    ended: list[str] = []
    targets = [Target("api-1", "a"), Target("bee-1", "b")]
    threads = follow_all(p, Client(streams), targets, follow=False,
                         on_end=lambda t: ended.append(t.name))
    for t in threads:
        t.join(10)
    assert sorted(ended) == ["api-1", "bee-1"]
    got = lines_of(out)
    assert len(got) == 2 * many
    assert got.count("api-1  | " + "a" * 50) == many
    assert got.count("bee-1  | " + "b" * 50) == many


@pytest.mark.parametrize("names, width", [(["a-1"], 4), (["a-1", "long-name-12"], 13)])
def test_follow_all_registers_names_for_width(names: list[str], width: int) -> None:
    p = LogPrinter(io.StringIO())
    for t in follow_all(p, Client({}), [Target(n, n) for n in names], follow=False):
        t.join(5)
    assert p.width == width
