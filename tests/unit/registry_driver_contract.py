"""The storage driver contract: what every registry storage driver must do alike.

The registry server is written once against ``StorageDriver``; these tests
pin the behaviour it relies on, so a backend that passes them can serve a
registry. A driver's test module subclasses ``DriverContract`` under a
``Test`` name and provides a ``driver`` fixture giving an empty store::

    @pytest.fixture
    def driver(tmp_path): return FSDriver(str(tmp_path))

    class TestFSDriverContract(DriverContract):
        pass

This module's name has no ``test_`` prefix so pytest does not collect the
class on its own (it has no ``driver`` fixture here).

Writers are tested with 12 MiB across several sessions, so uploads cross the
5 MiB minimum part size of S3 (a driver on S3 runs with that part size).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.registry.server.driver import FileInfo, PathNotFound, StorageDriver

MiB = 1024 * 1024

BAD_PATHS = ["", "a", "a/b", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/..", "/.",
             "/a/..", "/a b", "/a\x00b", "/\u00e4", "/a/b?", "/a#b", "/a\\b", "/a\nb"]


def blob(n: int, seed: int = 0) -> bytes:
    """Incompressible, reproducible bytes (a shifted or truncated copy never compares equal)."""
    return random.Random(seed).randbytes(n)


def walked(driver: StorageDriver, path: str = "/") -> list[str]:
    return [info.path for info in driver.walk(path)]


class DriverContract:
    """The tests; a subclass per driver runs them with its ``driver`` fixture."""

    def test_name(self, driver: StorageDriver) -> None:
        assert isinstance(driver.name, str) and driver.name

    def test_new_store_is_empty(self, driver: StorageDriver) -> None:
        assert driver.list("/") == []
        assert walked(driver) == []
        assert driver.stat("/").is_dir

    # -- whole files -------------------------------------------------------

    def test_put_get_round_trip(self, driver: StorageDriver) -> None:
        data = bytes(range(256)) * 17
        driver.put_content("/repos/a/b/c", data)
        assert driver.get_content("/repos/a/b/c") == data
        driver.put_content("/empty", b"")
        assert driver.get_content("/empty") == b""
        assert driver.stat("/empty").size == 0

    def test_get_content_missing(self, driver: StorageDriver) -> None:
        with pytest.raises(PathNotFound) as info:
            driver.get_content("/nope/x")
        assert info.value.path == "/nope/x"
        assert isinstance(info.value, NotFound)
        driver.put_content("/dir/file", b"x")
        with pytest.raises(PathNotFound):  # a directory is not a file
            driver.get_content("/dir")

    def test_put_content_replaces(self, driver: StorageDriver) -> None:
        driver.put_content("/f", b"old" * 1000)
        driver.put_content("/f", b"new")
        assert driver.get_content("/f") == b"new"
        assert driver.stat("/f").size == 3

    def test_put_content_is_atomic_for_readers(self, driver: StorageDriver) -> None:
        # Sizes differ, so a reader that caught a half-written file, an empty
        # one or none at all would see something other than one of them.
        a, b = b"a" * 300_000, b"b" * 200_000
        driver.put_content("/atomic", a)
        bad: list[Any] = []
        reads = [0]
        stop = threading.Event()

        def read_loop() -> None:
            while not stop.is_set():
                try:
                    content = driver.get_content("/atomic")
                except Exception as exc:  # noqa: BLE001 - reported by the assertion
                    bad.append(exc)
                    return
                reads[0] += 1
                if content not in (a, b):
                    bad.append(len(content))

        thread = threading.Thread(target=read_loop)
        thread.start()
        try:
            for i in range(30):
                driver.put_content("/atomic", a if i % 2 else b)
        finally:
            stop.set()
            thread.join(60)
        assert not thread.is_alive()
        assert bad == []
        assert reads[0] > 0
        assert driver.get_content("/atomic") == a

    # -- readers -----------------------------------------------------------

    def test_reader_whole_and_from_offset(self, driver: StorageDriver) -> None:
        data = blob(3 * MiB + 123)
        driver.put_content("/blobs/r", data)
        with driver.reader("/blobs/r") as f:
            assert f.read() == data
        with driver.reader("/blobs/r", 1_000_001) as f:
            assert f.read() == data[1_000_001:]
        with driver.reader("/blobs/r", len(data) - 1) as f:
            assert f.read() == data[-1:]
        # From the end: nothing left, which is no error (a resumed download that had it all).
        with driver.reader("/blobs/r", len(data)) as f:
            assert f.read() == b""

    def test_reader_in_pieces(self, driver: StorageDriver) -> None:
        data = blob(2 * MiB + 7, seed=1)
        driver.put_content("/blobs/p", data)
        pieces = []
        sizes = [1, 10, 65536, MiB, 3, MiB]
        with driver.reader("/blobs/p", 5) as f:
            for n in sizes:
                piece = f.read(n)
                assert len(piece) <= n
                pieces.append(piece)
            pieces.append(f.read())
            assert f.read(10) == b""
        assert b"".join(pieces) == data[5:]
        assert [len(p) for p in pieces[:3]] == [1, 10, 65536]

    def test_reader_missing(self, driver: StorageDriver) -> None:
        with pytest.raises(PathNotFound):
            driver.reader("/nope")
        with pytest.raises(PathNotFound):
            driver.reader("/nope", 10)
        driver.put_content("/d/f", b"x")
        with pytest.raises(PathNotFound):
            driver.reader("/d")

    # -- writers -----------------------------------------------------------

    def test_writer_commit(self, driver: StorageDriver) -> None:
        w = driver.writer("/up/data")
        assert w.size == 0
        assert w.write(b"hello ") == 6
        assert w.write(bytearray(b"wor")) == 3
        assert w.write(memoryview(b"ld")) == 2
        assert w.size == 11
        w.commit()
        assert driver.get_content("/up/data") == b"hello world"
        assert driver.stat("/up/data").size == 11

    def test_writer_empty_commit(self, driver: StorageDriver) -> None:
        driver.writer("/e").commit()
        assert driver.get_content("/e") == b""

    def test_writer_large_single_write(self, driver: StorageDriver) -> None:
        data = blob(11 * MiB + 3, seed=4)
        w = driver.writer("/big")
        assert w.write(data) == len(data)
        assert w.size == len(data)
        w.commit()
        assert driver.get_content("/big") == data

    def test_unfinished_file_is_not_at_its_path(self, driver: StorageDriver) -> None:
        driver.put_content("/f", b"committed")
        w = driver.writer("/f")
        w.write(b"new content")
        w.close()
        assert driver.get_content("/f") == b"committed"
        w = driver.writer("/g")
        w.write(b"x")
        w.close()
        with pytest.raises(PathNotFound):
            driver.get_content("/g")
        with pytest.raises(PathNotFound):
            driver.stat("/g")
        assert walked(driver) == ["/f"]
        assert driver.list("/") == ["/f"]

    def test_writer_append_across_reopen(self, driver: StorageDriver) -> None:
        data = blob(12 * MiB + 5, seed=2)
        path = "/uploads/u1/data"
        # Each session writes data[start:end] in pieces of ``step``; the ends
        # fall before, across and after the 5 MiB and 10 MiB part boundaries,
        # and one session writes nothing.
        sessions = [(0, MiB, 64 * 1024), (MiB, 5 * MiB + MiB // 2, 5 * MiB),
                    (5 * MiB + MiB // 2, 5 * MiB + MiB // 2, 1),
                    (5 * MiB + MiB // 2, 9 * MiB + 17, MiB + 1),
                    (9 * MiB + 17, len(data), 4 * MiB)]
        for i, (start, end, step) in enumerate(sessions):
            w = driver.writer(path, append=i > 0)
            assert w.size == start
            for at in range(start, end, step):
                w.write(data[at:min(at + step, end)])
            assert w.size == end
            if end == len(data):
                w.commit()
            else:
                w.close()
        assert driver.get_content(path) == data
        assert driver.stat(path).size == len(data)
        with driver.reader(path, 5 * MiB - 3) as f:
            assert f.read() == data[5 * MiB - 3:]

    def test_writer_without_append_starts_over(self, driver: StorageDriver) -> None:
        w = driver.writer("/u")
        w.write(b"abc")
        w.close()
        w = driver.writer("/u")
        assert w.size == 0
        w.write(b"x")
        w.commit()
        assert driver.get_content("/u") == b"x"

    def test_writer_append_to_nothing_starts_empty(self, driver: StorageDriver) -> None:
        w = driver.writer("/new", append=True)
        assert w.size == 0
        w.write(b"z")
        w.commit()
        assert driver.get_content("/new") == b"z"

    def test_writer_commit_replaces(self, driver: StorageDriver) -> None:
        driver.put_content("/f", b"old")
        w = driver.writer("/f")
        w.write(b"new")
        w.commit()
        assert driver.get_content("/f") == b"new"

    def test_writer_cancel_leaves_nothing(self, driver: StorageDriver) -> None:
        data = blob(6 * MiB + 1, seed=3)  # more than one S3 part: the upload has parts
        w = driver.writer("/c/data")
        w.write(data)
        w.close()
        w = driver.writer("/c/data", append=True)
        assert w.size == len(data)
        w.write(b"more")
        w.cancel()
        with pytest.raises(PathNotFound):
            driver.get_content("/c/data")
        with pytest.raises(PathNotFound):
            driver.stat("/c/data")
        assert walked(driver) == []
        w = driver.writer("/c/data", append=True)
        assert w.size == 0
        w.cancel()
        assert walked(driver) == []

    def test_writer_cancel_keeps_committed_file(self, driver: StorageDriver) -> None:
        driver.put_content("/k", b"kept")
        w = driver.writer("/k")
        w.write(b"zzz")
        w.cancel()
        assert driver.get_content("/k") == b"kept"

    # -- stat, list --------------------------------------------------------

    def test_stat_file_dir_missing(self, driver: StorageDriver) -> None:
        before = time.time()
        driver.put_content("/s/dir/file", b"12345")
        info = driver.stat("/s/dir/file")
        assert (info.path, info.size, info.is_dir) == ("/s/dir/file", 5, False)
        assert isinstance(info, FileInfo)
        assert abs(info.mtime - before) < 300
        d = driver.stat("/s/dir")
        assert (d.path, d.size, d.is_dir) == ("/s/dir", 0, True)
        assert driver.stat("/s").is_dir
        for missing in ["/s/di", "/s/dir/fil", "/s/dir/file/x", "/missing"]:
            with pytest.raises(PathNotFound):
                driver.stat(missing)

    def test_list_direct_children_sorted(self, driver: StorageDriver) -> None:
        for p in ["/l/b", "/l/a/x", "/l/a/y/z", "/l/c-d", "/l/c", "/lx/y"]:
            driver.put_content(p, b"1")
        assert driver.list("/l") == ["/l/a", "/l/b", "/l/c", "/l/c-d"]
        assert driver.list("/l/a") == ["/l/a/x", "/l/a/y"]
        assert driver.list("/") == ["/l", "/lx"]
        for missing in ["/missing", "/l/b", "/l/a/y/z/w", "/l/az"]:
            with pytest.raises(PathNotFound):
                driver.list(missing)

    # -- move, delete ------------------------------------------------------

    def test_move_replaces_destination(self, driver: StorageDriver) -> None:
        driver.put_content("/m/src", b"source")
        driver.put_content("/m/dst", b"destination")
        driver.move("/m/src", "/m/dst")
        assert driver.get_content("/m/dst") == b"source"
        with pytest.raises(PathNotFound):
            driver.get_content("/m/src")
        driver.move("/m/dst", "/n/deep/new")
        assert driver.get_content("/n/deep/new") == b"source"
        assert walked(driver) == ["/n/deep/new"]

    def test_move_missing_or_directory(self, driver: StorageDriver) -> None:
        with pytest.raises(PathNotFound):
            driver.move("/m/none", "/m/other")
        driver.put_content("/dir/f", b"x")
        with pytest.raises(PathNotFound):
            driver.move("/dir", "/other")
        assert walked(driver) == ["/dir/f"]

    def test_move_large_file(self, driver: StorageDriver) -> None:
        data = blob(7 * MiB, seed=5)
        driver.put_content("/blobs/big", data)
        driver.move("/blobs/big", "/blobs/sha256/ab/abcd/data")
        assert driver.get_content("/blobs/sha256/ab/abcd/data") == data
        assert walked(driver) == ["/blobs/sha256/ab/abcd/data"]

    def test_delete_file(self, driver: StorageDriver) -> None:
        driver.put_content("/d/a", b"1")
        driver.put_content("/d/b", b"2")
        driver.delete("/d/a")
        with pytest.raises(PathNotFound):
            driver.get_content("/d/a")
        assert driver.list("/d") == ["/d/b"]
        for missing in ["/d/a", "/nothing", "/d/b/c"]:
            with pytest.raises(PathNotFound):
                driver.delete(missing)

    def test_delete_subtree(self, driver: StorageDriver) -> None:
        for p in ["/t/a", "/t/b/c", "/t/b/d/e", "/tt/keep", "/t-x"]:
            driver.put_content(p, b"x")
        driver.delete("/t")
        assert walked(driver) == ["/t-x", "/tt/keep"]
        with pytest.raises(PathNotFound):
            driver.stat("/t")
        assert driver.list("/") == ["/t-x", "/tt"]

    # -- walk --------------------------------------------------------------

    def test_walk_sorted_files_only(self, driver: StorageDriver) -> None:
        files = {"/w/b": 1, "/w/a/b": 2, "/w/a-c": 3, "/w/a.x": 4, "/w/a/a/z": 5,
                 "/w/a0": 6, "/wz": 7}
        for p, n in files.items():
            driver.put_content(p, b"x" * n)
        # Sorted as strings: "/w/a-c" < "/w/a.x" < "/w/a/..." < "/w/a0".
        infos = list(driver.walk("/w"))
        assert [i.path for i in infos] == sorted(p for p in files if p.startswith("/w/"))
        assert all(i.size == files[i.path] and not i.is_dir for i in infos)
        assert walked(driver) == sorted(files)
        assert walked(driver, "/w/a") == ["/w/a/a/z", "/w/a/b"]
        # A file walks as itself.
        assert walked(driver, "/w/b") == ["/w/b"]
        with pytest.raises(PathNotFound):
            walked(driver, "/w/none")

    # -- paths -------------------------------------------------------------

    @pytest.mark.parametrize("bad", BAD_PATHS)
    def test_invalid_paths_refused(self, driver: StorageDriver, bad: str) -> None:
        driver.put_content("/ok", b"ok")
        calls = [
            lambda: driver.get_content(bad),
            lambda: driver.put_content(bad, b"x"),
            lambda: driver.reader(bad),
            lambda: driver.writer(bad),
            lambda: driver.writer(bad, append=True),
            lambda: driver.stat(bad),
            lambda: driver.list(bad),
            lambda: driver.move(bad, "/ok"),
            lambda: driver.move("/ok", bad),
            lambda: driver.delete(bad),
            lambda: list(driver.walk(bad)),
        ]
        for n, call in enumerate(calls):
            with pytest.raises(InvalidArgument):
                call()
                pytest.fail(f"call {n} accepted {bad!r}")
        assert walked(driver) == ["/ok"]
        assert driver.get_content("/ok") == b"ok"

