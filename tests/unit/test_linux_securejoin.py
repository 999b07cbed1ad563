"""secure_join: symlinks resolved as if the directory were '/'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.linux.securejoin import resolve_parts, secure_join


def test_plain_and_missing_components(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert secure_join(str(tmp_path), "/a/b/c") == str(tmp_path / "a/b/c")
    assert secure_join(str(tmp_path), "") == str(tmp_path)
    assert secure_join(str(tmp_path), "./a/./") == str(tmp_path / "a")


def test_dotdot_stops_at_the_top(tmp_path: Path) -> None:
    assert secure_join(str(tmp_path), "../../etc/passwd") == str(tmp_path / "etc/passwd")
    assert secure_join(str(tmp_path), "a/../../b") == str(tmp_path / "b")


def test_absolute_link_is_relative_to_root(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", tmp_path / "lib")
    os.symlink("/etc", tmp_path / "etc")  # points at itself once resolved
    assert secure_join(str(tmp_path), "/lib/x") == str(tmp_path / "usr/lib/x")
    assert resolve_parts(str(tmp_path), "lib") == ["usr", "lib"]


def test_relative_link_cannot_climb_out(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.symlink("../../../../tmp", tmp_path / "d/up")
    assert secure_join(str(tmp_path), "d/up/f") == str(tmp_path / "tmp/f")


def test_final_component_kept_when_asked(tmp_path: Path) -> None:
    os.symlink("/target", tmp_path / "link")
    assert secure_join(str(tmp_path), "link", follow_final=False) == str(tmp_path / "link")
    assert secure_join(str(tmp_path), "link") == str(tmp_path / "target")


def test_link_loop_is_an_error(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        secure_join(str(tmp_path), "a/x")


def test_below_a_file_is_kept_as_written(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert secure_join(str(tmp_path), "f/g") == str(tmp_path / "f/g")

