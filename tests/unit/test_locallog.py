"""The local log driver: its codec, options, writer (rotation, compression) and reader.

The byte-level expectations come from a file dockerd 20.10 wrote (checked
by hand with xxd, and by tests/integration/test_locallog_docker.py against
a live dockerd): field order 1-5, proto3 zero values left out, a big-endian
length on both sides.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import struct
from pathlib import Path

import pytest

from ketch.daemon.main import parser, settings_from
from ketch.engine import locallog as L
from ketch.engine.logread import (
    LocalLogCursor,
    LogCursor,
    ReadOptions,
    follow_logs,
    open_cursor,
    read_logs,
)
from ketch.engine.model import DaemonDefaults, HostConfig, adapt_host_config
from ketch.engine.supervisor.logs import BUF_SIZE, LocalFile, StreamLog, open_log
from ketch.errors import InvalidArgument, NotSupported
from ketch.jsonmodel import from_json


class Clock:
    def __init__(self, start: int = 1_700_000_000_000_000_000) -> None:
        self.t = start

    def __call__(self) -> int:
        self.t += 1000
        return self.t


def logfile(tmp_path: Path) -> Path:
    d = tmp_path / "local-logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / "container.log"


# -- codec -------------------------------------------------------------------------------
def test_frame_is_dockerds_bytes() -> None:
    e = L.Entry("stdout", 1796117897268845601, b"hello")
    # What dockerd 20.10 wrote for `echo hello` (the time is that file's).
    expected = bytes.fromhex("00000019" "0a067374646f7574" "10a1b8b9cbe1f6c5f618"
                             "1a0568656c6c6f" "00000019")
    assert L.frame(e) == expected
    assert L.decode(L.split(expected)[0][0]) == e


def test_partial_metadata_fields() -> None:
    pid = "2ff1bb01e087cc8f9127315b8da59c1ddb1c328feddc128fb412c66b05b34565"
    first = L.Entry("stdout", 1796117897284518036, b"partial", L.Partial(pid, 1, False))
    body = L.encode(first)
    # partial=true (field 4), then the metadata: no "last" (false), the id, ordinal 1.
    assert body.endswith(b" \x01*D\x12@" + pid.encode() + b"\x18\x01")
    assert L.decode(body) == first
    last = L.Entry("stderr", 5, b"", L.Partial(pid, 3, True))
    assert L.decode(L.encode(last)) == last
    assert first.text == b"partial" and last.text == b"\n"
    assert L.Entry("stdout", 1, b"x").text == b"x\n"


def test_negative_time_and_unknown_fields() -> None:
    e = L.Entry("stdout", -1, b"x")
    body = L.encode(e)
    assert L.decode(body).time_nano == -1
    # A field this version does not know (field 9, fixed32) and attrs (field 6, newer dockerds).
    extra = bytes([9 << 3 | 5]) + b"\0\0\0\0" + bytes([6 << 3 | 2, 6]) + b"\x0a\x01k\x12\x01v"
    got = L.decode(body + extra)
    assert (got.time_nano, got.line, got.attrs) == (-1, b"x", (("k", "v"),))


def test_the_fast_decoder_agrees_with_the_general_one() -> None:
    import random

    rnd = random.Random(7)
    times = [0, 1, 127, 128, 2**56 - 1, 2**56, 2**63 - 1, -1, -(2**63),
             *(rnd.randrange(2**60, 2**61) for _ in range(300))]
    for t in times:
        for line in (b"", b"x", b"y" * 127, b"z" * 128, b"w" * 20000):
            for source in ("stdout", "stderr", "other"):
                e = L.Entry(source, t, line)
                body = L.encode(e)
                assert L.decode(body) == e
                assert L._decode_any(body) == e
                plain = L.decode_plain(body)
                assert plain is None or plain == (source, t, line)
    for t, line in ((2**60, b"x"), (2**60, b""), (200, b"z" * 300)):     # the fast way taken
        assert L.decode_plain(L.encode(L.Entry("stderr", t, line))) == ("stderr", t, line)
    pe = L.Entry("stdout", 5, b"p", L.Partial("id", 1))
    assert L.decode_plain(L.encode(pe)) is None and L.decode(L.encode(pe)) == pe


def test_split_stops_before_an_unfinished_frame_and_refuses_a_damaged_one() -> None:
    a, b = L.frame(L.Entry("stdout", 1, b"a")), L.frame(L.Entry("stderr", 2, b"bb"))
    entries, used = L.split(a + b[:-1])
    assert len(entries) == 1 and used == len(a)
    with pytest.raises(ValueError, match="different message sizes"):
        L.split(a[:-1] + b"\x07")
    entries, used = L.split(a + b[:-1] + b"\x07" + a)     # up to the damage
    assert len(entries) == 1 and used == len(a)
    with pytest.raises(ValueError, match="too large"):
        L.split(struct.pack(">I", 2_000_000) + b"\0" * 8)


# -- options -----------------------------------------------------------------------------
def test_options_defaults_and_dockerd_messages() -> None:
    assert L.parse_options({}) == L.Options(20 * 1024 * 1024, 5, True)
    # FromHumanSize is decimal, unlike json-file's max-size.
    assert L.parse_options({"max-size": "1m", "max-file": "2"}).max_size == 1_000_000
    assert L.parse_options({"max-file": "0", "compress": "false"}) == L.Options(
        20 * 1024 * 1024, 0, False)
    assert L.parse_options({"mode": "non-blocking", "max-buffer-size": "1m"}).compress
    pre = "failed to initialize logging driver: "
    cases = {
        "max-size=abc": "invalid value for max-size: abc: invalid size: 'abc'",
        "max-size=-1": "invalid value for max-size: -1: invalid size: '-1'",
        "max-file=abc": 'invalid value for max-file: abc: strconv.Atoi: parsing "abc": '
                        "invalid syntax",
        "max-file=-1": "max file count cannot be less than 0",
        "max-file=1": "compression cannot be enabled when max file count is 1",
        "compress=maybe": 'error reading compress log option: strconv.ParseBool: '
                          'parsing "maybe": invalid syntax',
    }
    for opt, msg in cases.items():
        k, _, v = opt.partition("=")
        with pytest.raises(InvalidArgument) as err:
            L.parse_options({k: v})
        assert str(err.value) == pre + msg
    with pytest.raises(InvalidArgument, match="^unknown log opt 'tag' for log driver local$"):
        L.parse_options({"tag": "x"})


def test_create_time_validation() -> None:
    def check(driver: str, **cfg: str) -> None:
        hc = from_json(HostConfig, {"LogConfig": {"Type": driver, "Config": cfg}})
        adapt_host_config(hc, DaemonDefaults())

    check("local", **{"max-size": "abc"})           # values wait for the start
    check("none", x="1")
    for driver, cfg, msg in [
        ("local", {"x": "1"}, "unknown log opt 'x' for log driver local"),
        ("json-file", {"x": "1"}, "unknown log opt 'x' for json-file log driver"),
        ("local", {"mode": "x"}, "logger: logging mode not supported: x"),
        ("local", {"max-buffer-size": "1m"},
         "logger: max-buffer-size option is only supported with 'mode=non-blocking'"),
        ("local", {"mode": "non-blocking", "max-buffer-size": "zz"},
         "error parsing option max-buffer-size: invalid size: 'zz'"),
        ("foo", {}, 'error looking up logging plugin foo: plugin "foo" not found'),
    ]:
        with pytest.raises(InvalidArgument) as err:
            check(driver, **cfg)
        assert str(err.value) == msg
    with pytest.raises(NotSupported):
        check("syslog")


def test_daemon_json_log_driver(tmp_path: Path) -> None:
    conf = tmp_path / "daemon.json"
    conf.write_text(json.dumps({"log-driver": "local", "log-opts": {"max-file": "3"}}))
    s, _ = settings_from(parser().parse_args(["--config-file", str(conf)]))
    assert (s.log_driver, s.log_opts) == ("local", {"max-file": "3"})
    conf.write_text(json.dumps({"log-driver": "local", "log-opts": {"x": "1"}}))
    with pytest.raises(InvalidArgument,
                       match="failed to set log opts: unknown log opt 'x' for log driver local"):
        settings_from(parser().parse_args(["--config-file", str(conf)]))


# -- the writer --------------------------------------------------------------------------
def entries_of(path: Path) -> list[L.Entry]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    frames, used = L.split(data)
    assert used == len(data)
    return [L.decode(f) for f in frames]


def test_stream_log_lines_and_partials(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    log = StreamLog(LocalFile(str(p)), clock=Clock())
    log.feed("stdout", b"one\ntw")
    log.feed("stderr", b"err\n")
    log.feed("stdout", b"o\n" + b"x" * (BUF_SIZE + 10) + b"\n")
    log.feed("stdout", b"tail")
    log.close()
    es = entries_of(p)
    assert [(e.source, e.line) for e in es] == [
        ("stdout", b"one"), ("stderr", b"err"), ("stdout", b"two"),
        ("stdout", b"x" * BUF_SIZE), ("stdout", b"x" * 10), ("stdout", b"tail")]
    assert [e.partial is None for e in es[:3]] == [True, True, True]
    first, last, tail = es[3].partial, es[4].partial, es[5].partial
    assert first is not None and last is not None and tail is not None
    assert len(first.id) == 64 and first.id == last.id != tail.id
    assert (first.ordinal, first.last, last.ordinal, last.last) == (1, False, 2, True)
    assert (tail.ordinal, tail.last) == (1, False)
    assert es[3].time_nano == es[4].time_nano       # the pieces carry the first's time
    assert [r.text for r in read_logs(str(p))] == [
        b"one\n", b"err\n", b"two\n", b"x" * BUF_SIZE, b"x" * 10 + b"\n", b"tail"]


def test_rotation_and_compression(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    f = LocalFile(str(p), L.Options(max_size=100, max_file=3, compress=True))
    log = StreamLog(f, clock=Clock())
    for i in range(12):
        log.feed("stdout", b"line-%02d\n" % i)       # 35-byte frames: 3 per file
    log.close()
    names = sorted(os.listdir(p.parent))
    assert names == ["container.log", "container.log.1.gz", "container.log.2.gz"]
    assert [e.line for e in entries_of(p.parent / "container.log.2.gz")] == [
        b"line-03", b"line-04", b"line-05"]
    assert [e.line for e in entries_of(p)] == [b"line-09", b"line-10", b"line-11"]
    # The header: Go's layout, and the last entry's time as dockerd writes it.
    raw = (p.parent / "container.log.1.gz").read_bytes()
    assert raw[:10] == b"\x1f\x8b\x08\x04\0\0\0\0\0\xff"
    fd = os.open(p.parent / "container.log.1.gz", os.O_RDONLY)
    try:
        meta = L.gzip_meta(fd)
    finally:
        os.close(fd)
    last = entries_of(p.parent / "container.log.1.gz")[-1]
    assert meta["lastTime"].startswith("2023-11-14T22:13:20.")
    frac = f"{last.time_nano % 10**9:09d}".rstrip("0")
    assert meta["lastTime"] == f"2023-11-14T22:13:20.{frac}Z"
    assert [r.text for r in read_logs(str(p))] == [b"line-%02d\n" % i for i in range(3, 12)]


def test_compression_waits_for_the_loop_and_readers_see_either_file(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    pending: list[object] = []
    f = LocalFile(str(p), L.Options(max_size=30, max_file=2, compress=True), pending.append)
    log = StreamLog(f, clock=Clock())
    log.feed("stdout", b"aaaa-0\nbbbb-1\n")
    # Rotated, not compressed yet (the .gz is written under another name): .1 is read.
    assert sorted(os.listdir(p.parent)) == ["container.log", "container.log.1",
                                            "container.log.1.gz.tmp"]
    assert [r.text for r in read_logs(str(p))] == [b"aaaa-0\n", b"bbbb-1\n"]
    while pending:
        step = pending.pop()
        assert callable(step)
        step()
    assert sorted(os.listdir(p.parent)) == ["container.log", "container.log.1.gz"]
    assert [r.text for r in read_logs(str(p))] == [b"aaaa-0\n", b"bbbb-1\n"]
    log.feed("stdout", b"cccc-2\n")      # rotates again: .1.gz dropped (max-file 2)
    log.close()                          # finishes the pending compression
    assert sorted(os.listdir(p.parent)) == ["container.log", "container.log.1.gz"]
    assert [r.text for r in read_logs(str(p))] == [b"bbbb-1\n", b"cccc-2\n"]


def test_max_file_without_compression_and_one_file(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    log = StreamLog(LocalFile(str(p), L.Options(30, 3, False)), clock=Clock())
    for i in range(5):
        log.feed("stdout", b"line-%d\n" % i)
    log.close()
    assert sorted(os.listdir(p.parent)) == ["container.log", "container.log.1",
                                            "container.log.2"]
    assert [r.text for r in read_logs(str(p))] == [b"line-%d\n" % i for i in (2, 3, 4)]
    q = logfile(tmp_path / "one")
    log = StreamLog(LocalFile(str(q), L.Options(30, 1, False)), clock=Clock())
    for i in range(3):
        log.feed("stdout", b"line-%d\n" % i)
    log.close()
    assert os.listdir(q.parent) == ["container.log"]
    assert [r.text for r in read_logs(str(q))] == [b"line-2\n"]


def test_open_log_and_snapshot_restore(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    with pytest.raises(InvalidArgument, match="compression cannot be enabled"):
        open_log("local", str(p), {"max-file": "1"})
    log = open_log("local", str(p), {"max-size": "60", "max-file": "3", "mode": "blocking"})
    assert isinstance(log.file, LocalFile) and log.file.opts == L.Options(60, 3, True)
    log.feed("stdout", b"a" * (BUF_SIZE + 5))      # a piece written, 5 bytes pending
    snap = json.loads(json.dumps(log.snapshot()))
    log.file.close()
    again = StreamLog.restore(snap)
    assert isinstance(again.file, LocalFile) and again.file.opts == L.Options(60, 3, True)
    again.feed("stdout", b"\n")
    again.close()
    es = [e for name in ("container.log.1.gz", "container.log") for e in
          entries_of(p.parent / name)]
    assert [len(e.line) for e in es] == [BUF_SIZE, 5]
    assert es[0].partial and es[1].partial and es[0].partial.id == es[1].partial.id
    assert (es[1].partial.ordinal, es[1].partial.last) == (2, True)


# -- the reader --------------------------------------------------------------------------
def write_lines(p: Path, n: int, opts: L.Options, clock: Clock | None = None,
                stream: str = "stdout") -> StreamLog:
    log = StreamLog(LocalFile(str(p), opts), clock=clock or Clock())
    for i in range(n):
        log.feed(stream, b"line-%03d\n" % i)
    return log


def test_cursor_kind_by_path(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    p.touch()
    json_log = tmp_path / "x-json.log"
    json_log.touch()
    assert isinstance(open_cursor(str(p)), LocalLogCursor)
    assert type(open_cursor(str(json_log))) is LogCursor


def test_tail_since_until_across_compressed_files(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    clock = Clock(0)
    write_lines(p, 40, L.Options(100, 5, True), clock).close()
    assert len(os.listdir(p.parent)) == 5
    kept = [r.text for r in read_logs(str(p))]
    assert len(kept) < 40 and kept[-1] == b"line-039\n"
    first = int(kept[0][5:8])
    assert kept == [b"line-%03d\n" % i for i in range(first, 40)]
    for n in (1, 3, 4, 5, 9, len(kept), 100):
        assert [r.text for r in read_logs(str(p), ReadOptions(tail=n))] == kept[-n:]
    assert list(read_logs(str(p), ReadOptions(tail=0))) == []
    # line i was written at (i + 1) us
    since = [r.text for r in read_logs(str(p), ReadOptions(since_ns=(36 + 1) * 1000))]
    assert since == [b"line-%03d\n" % i for i in range(36, 40)]
    until = [r.text for r in read_logs(str(p), ReadOptions(until_ns=(first + 2) * 1000))]
    assert until == kept[:2]
    # tail counts entries first (32..39), then since and until apply, as dockerd's.
    both = read_logs(str(p), ReadOptions(since_ns=30_000, until_ns=35_000, tail=8))
    assert [r.text for r in both] == [b"line-032\n", b"line-033\n", b"line-034\n"]
    assert [r.text for r in read_logs(str(p), ReadOptions(stdout=False))] == []


def test_since_skips_compressed_files_by_their_header(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p = logfile(tmp_path)
    write_lines(p, 40, L.Options(100, 5, True), Clock(0)).close()
    opened: list[int] = []
    real = L.decompress_to_fd

    def counting(fd: int) -> int:
        opened.append(fd)
        return real(fd)

    monkeypatch.setattr(L, "decompress_to_fd", counting)
    got = [r.text for r in read_logs(str(p), ReadOptions(since_ns=39_000))]
    assert got == [b"line-038\n", b"line-039\n"]
    assert len(opened) <= 1         # at most the newest rotated file is decompressed


def test_a_frame_being_written_is_not_read(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    whole = L.frame(L.Entry("stdout", 1, b"done"))
    half = L.frame(L.Entry("stdout", 2, b"being written"))[:7]
    p.write_bytes(whole + half)
    assert [r.text for r in read_logs(str(p))] == [b"done\n"]
    assert [r.text for r in read_logs(str(p), ReadOptions(tail=5))] == [b"done\n"]


def test_damaged_file_is_read_up_to_the_damage(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    good = L.frame(L.Entry("stdout", 1, b"good"))
    p.write_bytes(good + b"\0\0\0\x05garbage!!")
    assert [r.text for r in read_logs(str(p))] == [b"good\n"]


def test_dockerd_gzip_without_ketch_identity_is_read(tmp_path: Path) -> None:
    """A rotated file as dockerd writes it (only lastTime in its header)."""
    p = logfile(tmp_path)
    old = L.frame(L.Entry("stdout", 1000, b"old"))
    header = L.gzip_header({"lastTime": "1970-01-01T00:00:00.000001Z"})
    body = gzip.compress(old)[10:]              # deflate data + trailer, after a plain header
    (p.parent / "container.log.1.gz").write_bytes(header + body)
    p.write_bytes(L.frame(L.Entry("stdout", 2000, b"new")))
    assert [r.text for r in read_logs(str(p))] == [b"old\n", b"new\n"]
    assert [r.text for r in read_logs(str(p), ReadOptions(since_ns=1500))] == [b"new\n"]


def test_follow_across_rotation_and_compression(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    pending: list[object] = []
    log = StreamLog(LocalFile(str(p), L.Options(100, 4, True), pending.append), clock=Clock())
    log.feed("stdout", b"line-000\n")

    def run_pending() -> None:
        while pending:
            step = pending.pop()
            assert callable(step)
            step()

    async def scenario() -> list[bytes]:
        stopped = asyncio.Event()
        got: list[bytes] = []

        async def reader() -> None:
            async for rec in follow_logs(str(p), follow=True, stopped=stopped,
                                         poll_interval=0.01):
                got.append(rec.text)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        for i in range(1, 30):
            log.feed("stdout", b"line-%03d\n" % i)
            if i % 3 == 0:
                run_pending()           # some compressions before the reader looks, some after
            if i % 7 == 0:
                await asyncio.sleep(0.03)
        run_pending()
        await asyncio.sleep(0.05)
        stopped.set()
        await asyncio.wait_for(task, 5)
        return got

    got = asyncio.run(scenario())
    log.close()
    assert got == [b"line-%03d\n" % i for i in range(30)]


def test_follow_with_tail_zero_sees_only_new(tmp_path: Path) -> None:
    p = logfile(tmp_path)
    log = write_lines(p, 5, L.Options(100, 3, True))

    async def scenario() -> list[bytes]:
        stopped = asyncio.Event()
        got: list[bytes] = []

        async def reader() -> None:
            async for rec in follow_logs(str(p), ReadOptions(tail=0), follow=True,
                                         stopped=stopped, poll_interval=0.01):
                got.append(rec.text)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        log.feed("stdout", b"new-1\nnew-2\nnew-3\nnew-4\n")
        await asyncio.sleep(0.05)
        stopped.set()
        await asyncio.wait_for(task, 5)
        return got

    assert asyncio.run(scenario()) == [b"new-1\n", b"new-2\n", b"new-3\n", b"new-4\n"]
    log.close()



@pytest.mark.parametrize("seed", range(2))
def test_follow_many_rotations_between_looks(tmp_path: Path, seed: int) -> None:
    """Bursts of rotations (compressed at once) between the reader's looks,
    the new live file itself rotated and compressed before it is listed, and
    inode numbers reused: every entry once, in order."""
    import random

    rnd = random.Random(seed)
    p = logfile(tmp_path)
    log = StreamLog(LocalFile(str(p), L.Options(120, 60, True)), clock=Clock())

    async def scenario() -> tuple[list[bytes], int]:
        stopped = asyncio.Event()
        got: list[bytes] = []

        async def reader() -> None:
            async for rec in follow_logs(str(p), follow=True, stopped=stopped,
                                         poll_interval=0.003):
                got.append(rec.text)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.01)
        i = 0
        while i < 500:
            for _ in range(rnd.randrange(1, 25)):
                log.feed("stdout", b"line-%03d\n" % i)
                i += 1
            await asyncio.sleep(rnd.random() * 0.01)
        await asyncio.sleep(0.05)
        stopped.set()
        await asyncio.wait_for(task, 10)
        return got, i

    got, n = asyncio.run(scenario())
    log.close()
    assert got == [b"line-%03d\n" % i for i in range(n)]


def test_follow_when_the_new_file_is_rotated_before_it_is_listed(tmp_path: Path) -> None:
    """The race a follower meets under fast rotation, made to happen: right after
    it opened the new current file, that file is rotated and compressed too."""
    p = logfile(tmp_path)
    log = StreamLog(LocalFile(str(p), L.Options(60, 10, True)), clock=Clock())
    log.feed("stdout", b"line-0\n")                     # 34-byte frames: 2 a file
    cursor = LocalLogCursor(str(p), follow=True)
    got = [r.text for r in cursor.next_batch()]
    log.feed("stdout", b"line-1\nline-2\n")             # rotated: line-2 in a new file
    real = cursor._reopen
    raced: list[bool] = []

    def reopen_then_rotate(seg: object) -> bool:
        opened = real(seg)  # type: ignore[arg-type]
        if opened and not raced:
            raced.append(True)
            log.feed("stdout", b"line-3\nline-4\n")     # and that one rotated at once
        return opened

    cursor._reopen = reopen_then_rotate  # type: ignore[method-assign]
    for _ in range(10):
        got += [r.text for r in cursor.next_batch()]
    cursor.close()
    log.close()
    assert raced
    assert got == [b"line-%d\n" % i for i in range(5)]


def test_a_read_that_meets_a_rotation_opens_the_files_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = logfile(tmp_path)
    log = write_lines(p, 9, L.Options(100, 10, True))         # 3 entries a file
    real = LocalLogCursor._open_rotated
    raced: list[bool] = []

    def open_then_rotate(self: LocalLogCursor, path: str,
                         since_ns: int | None = None) -> tuple[int, tuple[int, ...]] | None:
        opened = real(self, path, since_ns)
        if not raced:               # after the oldest file: every name shifts by one
            raced.append(True)
            log.feed("stdout", b"line-009\n")
        return opened

    monkeypatch.setattr(LocalLogCursor, "_open_rotated", open_then_rotate)
    got = [r.text for r in read_logs(str(p))]
    log.close()
    assert raced
    assert got == [b"line-%03d\n" % i for i in range(len(got))] and len(got) >= 9
