"""The directory storage driver: atomic whole files, resumable writers, listing, moves, deletes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.registry.server.driver import PathNotFound
from ketch.registry.server.fsdriver import FSDriver


@pytest.fixture
def drv(tmp_path: Path) -> FSDriver:
    return FSDriver(str(tmp_path / "store"))


def test_put_get_and_replace(drv: FSDriver) -> None:
    drv.put_content("/a/b/c", b"one")
    assert drv.get_content("/a/b/c") == b"one"
    drv.put_content("/a/b/c", b"two")
    assert drv.get_content("/a/b/c") == b"two"
    # no temporary file is left next to it
    assert os.listdir(os.path.join(drv.root, "a", "b")) == ["c"]


def test_missing_paths_raise_path_not_found(drv: FSDriver) -> None:
    drv.put_content("/file", b"x")
    for call in (lambda: drv.delete("/file/under"), lambda: drv.get_content("/file/under"),
                 lambda: drv.stat("/file/under"), lambda: drv.list("/file"),lambda: drv.get_content("/nope"), lambda: drv.reader("/nope"),
                 lambda: drv.stat("/nope"), lambda: drv.list("/nope"),
                 lambda: drv.delete("/nope"), lambda: drv.move("/nope", "/x"),
                 lambda: list(drv.walk("/nope"))):
        with pytest.raises(PathNotFound):
            call()


@pytest.mark.parametrize("path", ["a", "/a/", "/a/../b", "/a/./b", "/a//b", "/a/b#c", "/a b"])
def test_invalid_paths_refused(drv: FSDriver, path: str) -> None:
    with pytest.raises(InvalidArgument):
        drv.put_content(path, b"x")


def test_reader_from_offset(drv: FSDriver) -> None:
    drv.put_content("/f", b"0123456789")
    with drv.reader("/f", 4) as f:
        assert f.read() == b"456789"


def test_writer_is_invisible_until_commit_and_resumes(drv: FSDriver) -> None:
    w = drv.writer("/up/data")
    w.write(b"hello ")
    assert w.size == 6
    w.close()
    with pytest.raises(PathNotFound):
        drv.get_content("/up/data")
    assert drv.list("/up") == []          # the partial file is hidden
    w = drv.writer("/up/data", append=True)
    assert w.size == 6
    w.write(memoryview(b"world"))
    assert w.size == 11
    w.commit()
    assert drv.get_content("/up/data") == b"hello world"
    assert os.listdir(os.path.join(drv.root, "up")) == ["data"]


def test_writer_without_append_starts_over_and_cancel_drops(drv: FSDriver) -> None:
    w = drv.writer("/u/data")
    w.write(b"abc")
    w.close()
    w = drv.writer("/u/data")
    assert w.size == 0
    w.write(b"x")
    w.cancel()
    assert os.listdir(os.path.join(drv.root, "u")) == []
    w = drv.writer("/u/data", append=True)
    assert w.size == 0
    w.cancel()


def test_list_stat_walk(drv: FSDriver) -> None:
    drv.put_content("/r/a.x", b"1")
    drv.put_content("/r/a/b", b"22")
    drv.put_content("/r/c", b"333")
    assert drv.list("/r") == ["/r/a", "/r/a.x", "/r/c"]
    assert drv.list("/") == ["/r"]
    assert drv.stat("/r/c").size == 3
    assert drv.stat("/r/a").is_dir
    assert [i.path for i in drv.walk("/r")] == sorted(["/r/a.x", "/r/a/b", "/r/c"])
    assert [i.size for i in drv.walk("/r/a/b")] == [2]


def test_move_replaces_and_delete_prunes_empty_dirs(drv: FSDriver) -> None:
    drv.put_content("/x/src", b"new")
    drv.put_content("/y/z/dst", b"old")
    drv.move("/x/src", "/y/z/dst")
    assert drv.get_content("/y/z/dst") == b"new"
    drv.delete("/y/z/dst")
    assert not os.path.exists(os.path.join(drv.root, "y"))
    assert os.path.isdir(drv.root)
    drv.put_content("/t/a/b", b"1")
    drv.delete("/t")
    with pytest.raises(PathNotFound):
        drv.stat("/t")


