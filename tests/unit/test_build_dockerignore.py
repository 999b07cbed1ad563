""".dockerignore: moby's pattern conformance cases, the reader, and the context walk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import conformance_dir

from ketch.build.dockerignore import (
    BAD_PATTERN,
    Matcher,
    clean,
    ignore_file_for,
    read_file,
    read_patterns,
    walk_context,
)
from ketch.errors import InvalidArgument

CONFORMANCE = conformance_dir()
CASES_FILE = CONFORMANCE / "dockerignore-cases.json"


def _cases() -> list[Any]:
    if not CASES_FILE.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CASES_FILE} is absent"))]
    cases = json.loads(CASES_FILE.read_text())
    return [pytest.param(c, id=f"{i}-{c['source']}") for i, c in enumerate(cases)]


@pytest.mark.parametrize("case", _cases())
def test_conformance(case: dict[str, Any]) -> None:
    if case["error"]:
        with pytest.raises(InvalidArgument):
            Matcher(case["patterns"]).matches(case["path"])
        return
    assert Matcher(case["patterns"]).matches(case["path"]) is case["match"]


def test_conformance_file_has_all_cases() -> None:
    if not CASES_FILE.is_file():
        pytest.skip(f"{CASES_FILE} is absent")
    assert len(json.loads(CASES_FILE.read_text())) == 137


def test_bad_class_message() -> None:
    with pytest.raises(InvalidArgument, match=BAD_PATTERN):
        Matcher(["a[x-"])


def test_lone_exclamation_message() -> None:
    with pytest.raises(InvalidArgument, match='illegal exclusion pattern: "!"'):
        Matcher(["!"])


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [
        ("", "."),
        ("a//b/", "a/b"),
        ("./a/./b", "a/b"),
        ("a/../../b", "../b"),
        ("//a", "/a"),
        ("/../a", "/a"),
        ("a/..", "."),
    ],
)
def test_clean_like_go(path: str, cleaned: str) -> None:
    assert clean(path) == cleaned


def test_read_patterns_rules() -> None:
    text = (
        "\ufeff# comment\n"
        "  # not a comment once indented? no: trimmed after the check\n"
        "\n"
        "   \n"
        "/abs/path\n"
        "./rel//x/\n"
        "! keep/../me \r\n"
        "  spaced  \n"
        "/\n"
        "!\n"
    )
    assert read_patterns(text) == [
        "# not a comment once indented? no: trimmed after the check",
        "abs/path",
        "rel/x",
        "!me",
        "spaced",
        "/",
        "!",
    ]


def test_bom_only_stripped_on_first_line() -> None:
    assert read_patterns("a\n\ufeffb") == ["a", "\ufeffb"]


def test_indented_hash_is_a_pattern_matching_that_name() -> None:
    patterns = read_patterns("  #x\n")
    assert Matcher(patterns).matches("#x")


def test_read_file_missing_is_empty(tmp_path: Path) -> None:
    assert read_file(tmp_path / "nope") == []


def test_ignore_file_choice(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    dockerfile = tmp_path / "sub" / "app.Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    assert ignore_file_for(tmp_path, dockerfile) is None
    (tmp_path / ".dockerignore").write_text("x\n")
    assert ignore_file_for(tmp_path, dockerfile) == tmp_path / ".dockerignore"
    specific = tmp_path / "sub" / "app.Dockerfile.dockerignore"
    specific.write_text("y\n")
    assert ignore_file_for(tmp_path, dockerfile) == specific
    assert ignore_file_for(tmp_path, None) == tmp_path / ".dockerignore"


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def test_walk_excludes_directories_and_files(tmp_path: Path) -> None:
    _tree(tmp_path, ["Dockerfile", "a.go", "b.txt", "node_modules/x/y.js", "src/c.go", "src/d.md"])
    got = list(walk_context(tmp_path, ["node_modules", "*.md", "**/*.go"]))
    # "*.md" only matches at the top: moby anchors patterns at the context root.
    assert got == ["Dockerfile", "b.txt", "src", "src/d.md"]


def test_walk_does_not_enter_excluded_dir_without_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, ["Dockerfile", "secret/a", "secret/b/c", "docs/x", "docs/keep"])
    entered: list[str] = []
    real_scandir = os.scandir

    def spy(path: Any) -> Any:
        entered.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    got = list(walk_context(tmp_path, ["secret", "docs", "!docs/keep"]))
    assert got == ["Dockerfile", "docs", "docs/keep"]
    assert entered == [".", "docs"]


def test_walk_exception_below_excluded_dir(tmp_path: Path) -> None:
    _tree(tmp_path, ["Dockerfile", "docs/README.md", "docs/other.md", "docs/deep/README.md"])
    got = list(walk_context(tmp_path, ["docs", "!docs/README.md"]))
    # The excluded directory is entered, and sent only because something below is.
    assert got == ["Dockerfile", "docs", "docs/README.md"]


def test_walk_last_pattern_wins(tmp_path: Path) -> None:
    _tree(tmp_path, ["Dockerfile", "a.log", "keep.log"])
    got = list(walk_context(tmp_path, ["*.log", "!keep.log", "keep*"]))
    assert got == ["Dockerfile"]


def test_walk_wildcard_exception_opens_excluded_dirs(tmp_path: Path) -> None:
    # BuildKit enters every excluded dir once an exception has a wildcard.
    _tree(tmp_path, ["Dockerfile", "build/keep.txt", "build/x.o", "out/y.o"])
    assert list(walk_context(tmp_path, ["build", "out", "!**/keep.txt"])) == [
        "Dockerfile",
        "build",
        "build/keep.txt",
    ]
    # A trailing "/*" still counts as a plain prefix.
    assert list(walk_context(tmp_path, ["build", "out", "!build/*"])) == [
        "Dockerfile",
        "build",
        "build/keep.txt",
        "build/x.o",
    ]


def test_walk_nested_pending_dirs_sent_once(tmp_path: Path) -> None:
    _tree(tmp_path, ["Dockerfile", "a/b/keep", "a/b/z", "a/c/keep", "a/d"])
    got = list(walk_context(tmp_path, ["a", "!a/b/keep", "!a/c/keep"]))
    assert got == ["Dockerfile", "a", "a/b", "a/b/keep", "a/c", "a/c/keep"]


def test_walk_uses_parent_results(tmp_path: Path) -> None:
    # A directory re-included by an exception keeps its contents.
    _tree(tmp_path, ["Dockerfile", "logs/keep/a.log", "logs/b.log"])
    got = list(walk_context(tmp_path, ["logs", "!logs/keep"]))
    assert got == ["Dockerfile", "logs", "logs/keep", "logs/keep/a.log"]


def test_walk_keeps_dockerfile_and_dockerignore(tmp_path: Path) -> None:
    _tree(tmp_path, ["Dockerfile", ".dockerignore", "ci/build.Dockerfile", "x"])
    got = list(walk_context(tmp_path, ["*", "ci"], dockerfile="ci/build.Dockerfile"))
    assert got == [".dockerignore", "ci", "ci/build.Dockerfile"]
    assert list(walk_context(tmp_path, ["*"])) == [".dockerignore", "Dockerfile"]


def test_walk_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    ctx = tmp_path / "ctx"
    _tree(outside, ["secret"])
    _tree(ctx, ["Dockerfile", "real/f"])
    os.symlink(outside, ctx / "link")
    os.symlink(ctx / "real", ctx / "real-link")
    got = list(walk_context(ctx, []))
    assert got == ["Dockerfile", "link", "real", "real/f", "real-link"]


def test_walk_invalid_pattern_is_an_error(tmp_path: Path) -> None:
    _tree(tmp_path, ["Dockerfile"])
    with pytest.raises(InvalidArgument, match=BAD_PATTERN):
        list(walk_context(tmp_path, ["[a-"]))


def test_context_itself_never_excluded() -> None:
    assert Matcher(["*", "**"]).matches(".") is False
