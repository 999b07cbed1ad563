"""Reading json-file logs back as ``docker logs`` does: order across rotated
files, tail, since/until, stream selection, partial lines, and follow through
rotations. The files are written by the supervisor's own writer."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from ketch.engine import logread
from ketch.engine.logread import (
    LogRecord,
    ReadOptions,
    follow_batches,
    follow_logs,
    parse_tail,
    parse_time,
    parse_timestamp,
    read_logs,
)
from ketch.engine.supervisor.logs import BUF_SIZE, JsonFile, StreamLog, encode_entry
from ketch.errors import InvalidArgument

T0 = 1_764_572_097_123_456_789      # 2025-12-01T06:54:57.123456789Z
SEC = 1_000_000_000


def entry(i: int, stream: str = "stdout", ts: int | None = None) -> bytes:
    return encode_entry(f"line {i}\n".encode(), stream, T0 + i * SEC if ts is None else ts)


def write(path: Path, entries: list[bytes], max_size: int = -1, max_file: int = 1) -> JsonFile:
    f = JsonFile(str(path), max_size, max_file)
    for e in entries:
        f.write(e)
    return f


def numbers(records: list[LogRecord]) -> list[int]:
    return [int(r.text.split()[1]) for r in records]


def test_parse_api_values():
    assert parse_timestamp("") is None
    assert parse_timestamp("1700000000") == 1_700_000_000 * SEC
    assert parse_timestamp("1700000000.000000001") == 1_700_000_000 * SEC + 1
    assert parse_timestamp("1700000000.5") == 1_700_000_000 * SEC + SEC // 2
    with pytest.raises(InvalidArgument, match='parsing "abc": invalid syntax'):
        parse_timestamp("abc")
    with pytest.raises(InvalidArgument):
        parse_timestamp("1.x")
    assert parse_tail("all") == -1 and parse_tail("") == -1 and parse_tail("5") == 5
    assert parse_tail("0") == 0 and parse_tail("-3") == -3 and parse_tail("5 lines") == -1


def test_parse_time_of_an_entry():
    assert parse_time("2025-12-01T06:54:57.123456789Z") == T0
    assert parse_time("2025-12-01T06:54:57Z") == T0 - 123_456_789
    assert parse_time("2025-12-01T06:54:57.1234Z") == T0 - 56_789
    assert parse_time("2025-12-01T07:54:57.123456789+01:00") == T0
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_entries_come_back_as_written(tmp_path):
    p = tmp_path / "c-json.log"
    log = StreamLog(JsonFile(str(p)), {"tag": "web", "a b": "x=y"})
    log.feed("stdout", b"out\n")
    log.feed("stderr", b"err <&>\t\xff\n")
    log.close()
    recs = list(read_logs(str(p)))
    assert [(r.stream, r.text) for r in recs] == [
        ("stdout", b"out\n"), ("stderr", "err <&>\t\ufffd\n".encode())]
    assert recs[0].attrs == {"tag": "web", "a b": "x=y"}
    assert not recs[0].partial
    assert [r.stream for r in read_logs(str(p), ReadOptions(stdout=False))] == ["stderr"]
    assert [r.stream for r in read_logs(str(p), ReadOptions(stderr=False))] == ["stdout"]


def test_long_lines_are_separate_partial_records(tmp_path):
    p = tmp_path / "c-json.log"
    log = StreamLog(JsonFile(str(p)))
    long = b"z" * (BUF_SIZE * 2 + 3) + b"\n"
    log.feed("stdout", long + b"tail without newline")
    log.close()
    recs = list(read_logs(str(p)))
    assert [len(r.text) for r in recs] == [BUF_SIZE, BUF_SIZE, 4, 20]
    assert [r.partial for r in recs] == [True, True, False, True]
    assert b"".join(r.text for r in recs[:3]) == long
    assert recs[0].time_ns == recs[1].time_ns == recs[2].time_ns


def test_rotated_files_are_read_oldest_first(tmp_path):
    p = tmp_path / "c-json.log"
    write(p, [entry(i) for i in range(40)], max_size=300, max_file=4).close()
    assert (tmp_path / "c-json.log.3").exists()
    got = numbers(list(read_logs(str(p))))
    assert got == list(range(got[0], 40)) and got[0] > 0    # the oldest rotated away


@pytest.mark.parametrize("block", [7, 64 * 1024])
def test_tail_counts_lines_backwards_across_files(tmp_path, monkeypatch, block):
    monkeypatch.setattr(logread, "BLOCK", block)
    p = tmp_path / "c-json.log"
    write(p, [entry(i, "stderr" if i % 3 == 0 else "stdout") for i in range(40)],
          max_size=300, max_file=4).close()
    everything = numbers(list(read_logs(str(p))))
    current = len(p.read_bytes().splitlines())
    for n in (1, 2, current, current + 1, current + 5, len(everything) - 1):
        assert numbers(list(read_logs(str(p), ReadOptions(tail=n)))) == everything[-n:], n
    assert numbers(list(read_logs(str(p), ReadOptions(tail=1000)))) == everything
    assert list(read_logs(str(p), ReadOptions(tail=0))) == []
    # The tail counts lines of both streams; the stream choice applies after.
    assert numbers(list(read_logs(str(p), ReadOptions(tail=6, stdout=False)))) == [
        i for i in everything[-6:] if i % 3 == 0]


def test_since_and_until_are_inclusive(tmp_path):
    p = tmp_path / "c-json.log"
    write(p, [entry(i) for i in range(10)], max_size=200, max_file=10).close()
    opts = ReadOptions(since_ns=T0 + 3 * SEC, until_ns=T0 + 6 * SEC)
    assert numbers(list(read_logs(str(p), opts))) == [3, 4, 5, 6]
    assert numbers(list(read_logs(str(p), ReadOptions(since_ns=T0 + 2 * SEC + 1)))) == list(
        range(3, 10))
    assert numbers(list(read_logs(str(p), ReadOptions(until_ns=T0 - 1)))) == []
    # tail first, then since
    assert numbers(list(read_logs(str(p), ReadOptions(tail=3, since_ns=T0 + 8 * SEC)))) == [
        8, 9]


def test_since_stops_filtering_after_the_first_match(tmp_path):
    # Clocks go backwards sometimes; dockerd keeps everything after the first match.
    p = tmp_path / "c-json.log"
    times = [0, 5, 2, 7]
    write(p, [entry(i, ts=T0 + t * SEC) for i, t in enumerate(times)]).close()
    assert numbers(list(read_logs(str(p), ReadOptions(since_ns=T0 + 4 * SEC)))) == [1, 2, 3]


def test_bad_lines_are_skipped_and_an_unfinished_one_is_not_read(tmp_path):
    p = tmp_path / "c-json.log"
    p.write_bytes(entry(0) + b"garbage\n" + b"\n" + entry(5)[:-1] + b"{}\n" + b"[1]\n"
                  + b"  " + entry(1) + entry(2)[:-10])
    assert numbers(list(read_logs(str(p)))) == [0, 1]
    assert numbers(list(read_logs(str(p), ReadOptions(tail=1)))) == [1]


def test_a_missing_log_is_empty(tmp_path):
    assert list(read_logs(str(tmp_path / "nope-json.log"))) == []


def test_filtered_batches_do_not_end_the_read(tmp_path, monkeypatch):
    p = tmp_path / "c-json.log"
    write(p, [entry(i) for i in range(50)] + [entry(50, "stderr")]).close()
    monkeypatch.setattr(logread, "BATCH_BYTES", 100)
    monkeypatch.setattr(logread, "BLOCK", 100)

    async def main() -> list[LogRecord]:
        return [r async for r in follow_logs(str(p), ReadOptions(stdout=False))]

    assert numbers(asyncio.run(main())) == [50]


# -- follow ----------------------------------------------------------------------------------
async def collect(path: Path, opts: ReadOptions, stopped: asyncio.Event,
                  out: list[LogRecord]) -> None:
    async for rec in follow_logs(str(path), opts, follow=True, stopped=stopped,
                                 poll_interval=0.01):
        out.append(rec)


def test_follow_through_rotations_loses_and_repeats_nothing(tmp_path):
    p = tmp_path / "c-json.log"
    # Enough files kept that none is deleted before the reader gets to it.
    f = write(p, [entry(i) for i in range(5)], max_size=250, max_file=100)

    async def main() -> list[LogRecord]:
        stopped = asyncio.Event()
        out: list[LogRecord] = []
        task = asyncio.create_task(collect(p, ReadOptions(tail=2), stopped, out))
        await asyncio.sleep(0.05)
        for i in range(5, 200):
            f.write(entry(i))
            if i % 7 == 0:
                await asyncio.sleep(0.005)      # sometimes several rotations per look
        f.close()
        stopped.set()
        await asyncio.wait_for(task, 10)
        return out

    assert numbers(asyncio.run(main())) == list(range(3, 200))


def test_follow_after_many_rotations_between_looks(tmp_path):
    p = tmp_path / "c-json.log"
    f = write(p, [entry(0)], max_size=100, max_file=50)

    async def main() -> list[int]:
        stopped = asyncio.Event()
        batches = follow_batches(str(p), follow=True, stopped=stopped, poll_interval=0.05)
        got = numbers(await batches.__anext__())
        for i in range(1, 30):                  # 30 rotations before the next look
            f.write(entry(i))
        f.close()
        stopped.set()
        async for b in batches:
            got += numbers(b)
        return got

    assert asyncio.run(main()) == list(range(30))


def test_follow_with_one_file_truncated_in_place(tmp_path):
    p = tmp_path / "c-json.log"
    f = write(p, [], max_size=200, max_file=1)

    async def main() -> list[int]:
        stopped = asyncio.Event()
        out: list[LogRecord] = []
        task = asyncio.create_task(collect(p, ReadOptions(), stopped, out))
        for i in range(20):
            f.write(entry(i))
            for _ in range(500):                # the reader keeps up: nothing lost
                if len(out) > i:
                    break
                await asyncio.sleep(0.01)
        f.close()
        stopped.set()
        await asyncio.wait_for(task, 10)
        return numbers(out)

    assert asyncio.run(main()) == list(range(20))


def test_follow_tail_zero_starts_at_the_end_and_waits_for_lines(tmp_path):
    p = tmp_path / "c-json.log"
    f = write(p, [entry(0), entry(1)])
    os.write(f.fd, entry(2)[:5])            # an entry half written when the follow starts
    f.size += 5

    async def main() -> list[LogRecord]:
        stopped = asyncio.Event()
        out: list[LogRecord] = []
        task = asyncio.create_task(collect(p, ReadOptions(tail=0), stopped, out))
        await asyncio.sleep(0.05)
        os.write(f.fd, entry(2)[5:])
        await asyncio.sleep(0.05)
        assert numbers(out) == [2]
        f.write(entry(3))
        f.close()
        stopped.set()
        await asyncio.wait_for(task, 10)
        return out

    assert numbers(asyncio.run(main())) == [2, 3]


def test_follow_waits_for_the_file_to_appear_and_stops_on_an_awaitable(tmp_path):
    p = tmp_path / "c-json.log"

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()
        out = []
        async def run() -> None:
            async for rec in follow_logs(str(p), follow=True, stopped=exited,
                                         poll_interval=0.01):
                out.append(rec)
        task = asyncio.create_task(run())
        await asyncio.sleep(0.05)
        write(p, [entry(0), entry(1)]).close()
        exited.set_result(0)
        await asyncio.wait_for(task, 10)
        return numbers(out)

    assert asyncio.run(main()) == [0, 1]


def test_follow_ends_at_the_first_entry_after_until(tmp_path):
    p = tmp_path / "c-json.log"
    f = write(p, [entry(0)])

    async def main() -> list[int]:
        out = []
        async def run() -> None:
            async for rec in follow_logs(str(p), ReadOptions(until_ns=T0 + 2 * SEC),
                                         follow=True, poll_interval=0.01):
                out.append(rec)
        task = asyncio.create_task(run())
        for i in range(1, 5):
            f.write(entry(i))
        await asyncio.wait_for(task, 10)      # no stop signal needed
        f.close()
        return numbers(out)

    assert asyncio.run(main()) == [0, 1, 2]


def test_closing_a_follow_early_closes_its_files(tmp_path):
    p = tmp_path / "c-json.log"
    write(p, [entry(0)], max_size=50, max_file=3).close()
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        gen = follow_logs(str(p), follow=True, poll_interval=0.01)
        assert (await gen.__anext__()).text == b"line 0\n"
        await gen.aclose()

    asyncio.run(main())
    assert len(os.listdir("/proc/self/fd")) == before


def test_records_are_plain_values():
    r = LogRecord("stdout", T0, b"x", {"a": "b"})
    assert r.partial and json.dumps(r.attrs) == '{"a": "b"}'
