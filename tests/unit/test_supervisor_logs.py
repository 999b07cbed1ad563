"""The json-file writer: dockerd's line splitting, escaping, timestamps and rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.engine.supervisor.logs import (
    BUF_SIZE,
    JsonFile,
    LineSplitter,
    StreamLog,
    encode_entry,
    json_string,
    parse_log_opts,
    parse_size,
    rfc3339nano,
)
from ketch.errors import InvalidArgument, NotSupported

T0 = 1_764_572_097_123_456_789      # 2025-12-01T06:54:57.123456789Z


def test_time_is_rfc3339nano_with_trailing_zeros_trimmed():
    assert rfc3339nano(T0) == "2025-12-01T06:54:57.123456789Z"
    assert rfc3339nano(T0 - 789) == "2025-12-01T06:54:57.123456Z"
    assert rfc3339nano(T0 - 123_456_789) == "2025-12-01T06:54:57Z"
    assert rfc3339nano(T0 - 56_789) == "2025-12-01T06:54:57.1234Z"


def test_strings_are_escaped_as_gos_encoder_does():
    assert json_string(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert json_string(b"\n\r\t\x00\x1b") == b'"\\n\\r\\u0009\\u0000\\u001b"'
    assert json_string(b"<a&b>") == b'"\\u003ca\\u0026b\\u003e"'
    assert json_string("é\u2028".encode()) == '"é\\u2028"'.encode()
    assert json_string(b"ok\xff\xfe!") == b'"ok\\ufffd\\ufffd!"'
    # Whatever is escaped, it is JSON that reads back to the text.
    assert json.loads(json_string(b"x<\t>\n")) == "x<\t>\n"


def test_entry_shape_and_key_order():
    line = encode_entry(b"hi\n", "stdout", T0)
    assert line == b'{"log":"hi\\n","stream":"stdout","time":"2025-12-01T06:54:57.123456789Z"}\n'
    # As dockerd 20.10 wrote it for `printf "a\tb<&>\n"` (seen on this machine).
    assert encode_entry(b"a\tb<&>\n", "stdout", 1_796_108_631_546_931_300) == (
        b'{"log":"a\\u0009b\\u003c\\u0026\\u003e\\n","stream":"stdout",'
        b'"time":"2026-12-01T07:03:51.5469313Z"}\n')
    with_attrs = encode_entry(b"x", "stderr", T0, {"b": "2", "a": "1"})
    assert with_attrs.startswith(b'{"log":"x","stream":"stderr","attrs":{"a":"1","b":"2"},"time"')


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def split(chunks: list[bytes], close: bool = True) -> list[tuple[bytes, int]]:
    out: list[tuple[bytes, int]] = []
    s = LineSplitter(lambda line, ts: out.append((line, ts)), Clock())
    for c in chunks:
        s.feed(c)
    if close:
        s.close()
    return out


def test_lines_keep_their_newline_and_may_come_in_pieces():
    out = split([b"one\ntw", b"o\nthr", b"ee\n"])
    assert [line for line, _ in out] == [b"one\n", b"two\n", b"three\n"]
    assert len({ts for _, ts in out}) == 3


def test_output_ending_without_newline_is_partial():
    assert [line for line, _ in split([b"a\nno newline"])] == [b"a\n", b"no newline"]
    assert split([b"pending"], close=False) == []


def test_long_lines_are_cut_at_16k_with_the_first_pieces_time():
    long = b"x" * (BUF_SIZE * 2 + 10) + b"\n"
    out = split([long[i:i + 1000] for i in range(0, len(long), 1000)] + [b"next\n"])
    assert [len(line) for line, _ in out] == [BUF_SIZE, BUF_SIZE, 11, 5]
    assert not out[0][0].endswith(b"\n") and out[2][0].endswith(b"\n")
    assert out[0][1] == out[1][1] == out[2][1] < out[3][1]


def test_a_line_of_exactly_16k_plus_newline():
    out = split([b"y" * BUF_SIZE + b"\n"])
    assert [len(line) for line, _ in out] == [BUF_SIZE, 1]
    assert out[1][0] == b"\n"


def read(path: Path) -> list[str]:
    return [json.loads(x)["log"] for x in path.read_text().splitlines()] if path.exists() else []


def test_rotation_keeps_max_file_files(tmp_path):
    p = tmp_path / "c-json.log"
    f = JsonFile(str(p), max_size=100, max_file=3)
    for i in range(12):
        f.write(encode_entry(f"line {i}\n".encode(), "stdout", T0))
    f.close()
    files = sorted(x.name for x in tmp_path.iterdir())
    assert files == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    # Rotation happens before a write once the size is reached: one entry over, at most.
    entry = len(encode_entry(b"line 0\n", "stdout", T0))
    assert all(x.stat().st_size <= 100 + entry for x in tmp_path.iterdir())
    lines = read(tmp_path / "c-json.log.2") + read(tmp_path / "c-json.log.1") + read(p)
    numbers = [int(x.split()[1]) for x in lines]
    assert numbers == list(range(numbers[0], 12))


def test_one_file_is_truncated_and_appending_resumes(tmp_path):
    p = tmp_path / "c-json.log"
    f = JsonFile(str(p), max_size=150, max_file=1)
    for i in range(5):
        f.write(encode_entry(f"{i}\n".encode(), "stdout", T0))
    f.close()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c-json.log"]
    assert read(p)[-1] == "4\n" and len(read(p)) < 5
    size = p.stat().st_size
    g = JsonFile(str(p))            # a restarted writer appends
    assert g.size == size
    g.write(encode_entry(b"5\n", "stdout", T0))
    g.close()
    assert read(p)[-1] == "5\n"
    assert oct(p.stat().st_mode & 0o777) == "0o640"


def test_stream_log_routes_streams_and_flushes_at_end(tmp_path):
    p = tmp_path / "c-json.log"
    log = StreamLog(JsonFile(str(p)), {"tag": "web"}, Clock())
    log.feed("stdout", b"a\nb")
    log.feed("stderr", b"e\n")
    log.end("stdout")
    log.close()
    entries = [json.loads(x) for x in p.read_text().splitlines()]
    assert [(e["log"], e["stream"]) for e in entries] == [("a\n", "stdout"), ("e\n", "stderr"),
                                                          ("b", "stdout")]
    assert all(e["attrs"] == {"tag": "web"} for e in entries)


def test_log_opts_as_dockerd_checks_them():
    assert parse_log_opts({}) == (-1, 1)
    assert parse_log_opts({"max-size": "10m", "max-file": "3"}) == (10 << 20, 3)
    assert parse_size("1.5k") == 1536 and parse_size("2GiB") == 2 << 30 and parse_size("7") == 7
    with pytest.raises(InvalidArgument, match="invalid size: 'ten'"):
        parse_log_opts({"max-size": "ten"})
    with pytest.raises(InvalidArgument, match="max-size must be a positive number"):
        parse_log_opts({"max-size": "0"})
    with pytest.raises(InvalidArgument, match="max-file cannot be less than 1"):
        parse_log_opts({"max-file": "0"})
    with pytest.raises(InvalidArgument, match="unknown log opt 'max-sise' for json-file"):
        parse_log_opts({"max-sise": "1m"})
    with pytest.raises(NotSupported):
        parse_log_opts({"compress": "true"})
