"""ketch's Dockerfile parser: BuildKit's conformance cases, lines, directives, heredocs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import conformance_dir

from ketch.build.dockerfile import ParseError, dump, expand, parse
from ketch.errors import InvalidArgument

CASES = conformance_dir() / "dockerfile-parser"


def _cases(kind: str) -> list[Path]:
    d = CASES / kind
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


needs_cases = pytest.mark.skipif(not CASES.is_dir(), reason=f"{CASES} is absent")


@needs_cases
def test_case_counts() -> None:
    # The data set is BuildKit's: if it shrinks, the tests below prove less.
    assert len(_cases("positive")) == 33
    assert len(_cases("negative")) == 4


@needs_cases
@pytest.mark.parametrize("case", _cases("positive"), ids=lambda p: p.name)
def test_positive_case(case: Path) -> None:
    got = dump(parse((case / "Dockerfile").read_bytes()))
    assert got == (case / "result").read_text()


@needs_cases
@pytest.mark.parametrize("case", _cases("negative"), ids=lambda p: p.name)
def test_negative_case(case: Path) -> None:
    with pytest.raises(InvalidArgument, match="^dockerfile parse error on line"):
        parse((case / "Dockerfile").read_bytes())


def test_line_numbers_span_continuations_comments_and_heredocs() -> None:
    df = parse(
        "# syntax=docker/dockerfile:1\n"  # 1
        "\n"  # 2
        "FROM alpine AS base\n"  # 3
        "RUN echo a \\\n"  # 4
        "  # a comment inside\n"  # 5
        "\n"  # 6
        "  && echo b\n"  # 7
        "COPY <<EOF /x\n"  # 8
        "hello\n"  # 9
        "EOF\n"  # 10
        "CMD [\"sh\"]\n"  # 11
    )
    spans = [(i.name, i.start_line, i.end_line) for i in df.instructions]
    assert spans == [("from", 3, 3), ("run", 4, 7), ("copy", 8, 10), ("cmd", 11, 11)]
    run = df.instructions[1]
    assert run.args == ["echo a   && echo b"] and not run.json
    assert df.instructions[3].args == ["sh"] and df.instructions[3].json
    assert df.instructions[0].args == ["alpine", "AS", "base"]


def test_directives_and_backtick_escape() -> None:
    df = parse("# syntax = docker/dockerfile:1\n# ESCAPE=`\n# check=skip=all\nFROM a\nRUN x `\n y\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`",
                             "check": "skip=all"}
    assert df.escape == "`"
    assert df.instructions[1].args == ["x  y"]
    # A backslash is literal under a backtick escape: no continuation.
    df = parse("# escape=`\nFROM a\nRUN x \\\nRUN y\n")
    assert [i.args for i in df.instructions[1:]] == [["x \\"], ["y"]]


def test_directive_after_comment_or_instruction_is_a_comment() -> None:
    assert parse("# hi\n# escape=`\nFROM a\n").directives == {}
    assert parse("FROM a\n# escape=`\n").directives == {}
    # An unknown directive is a plain comment and ends the directive block.
    assert parse("# foo=bar\n# escape=`\nFROM a\n").escape == "\\"


def test_directive_errors() -> None:
    with pytest.raises(ParseError) as e:
        parse("# escape=x\nFROM a\n")
    assert str(e.value) == ("dockerfile parse error on line 1: "
                            "invalid escape token 'x' does not match ` or \\")
    with pytest.raises(ParseError) as e:
        parse("# escape=`\n# escape=\\\nFROM a\n")
    assert str(e.value) == ("dockerfile parse error on line 2: "
                            "only one escape parser directive can be used")


def test_flags_and_env_forms() -> None:
    df = parse("FROM a\nCOPY --from=build --chown=1:1 a b\nENV A=1 B=\"x y\"\nARG V=1 W\n")
    copy, env, arg = df.instructions[1:]
    assert copy.flags == ["--from=build", "--chown=1:1"] and copy.args == ["a", "b"]
    assert env.args == ["A", "1", "=", "B", '"x y"', "="]
    assert arg.args == ["V=1", "W"]


def test_heredocs() -> None:
    df = parse(
        "FROM a\n"
        "RUN <<EOF cat >/a; cat 3<<-'END' >/b\n"
        "one $X\n"
        "EOF\n"
        "\ttwo\n"
        "\tEND\n"
        "COPY <<\"A\" <<B /dst/\n"
        "a\n"
        "A\n"
        "b\n"
        "B\n"
        "RUN echo '<<NOT' \"<<NOPE\"\n"
    )
    run, copy, plain = df.instructions[1:]
    assert [(h.name, h.content, h.expand, h.chomp, h.fd) for h in run.heredocs] == [
        ("EOF", "one $X\n", True, False, None),
        ("END", "\ttwo\n", False, True, 3),
    ]
    assert (run.start_line, run.end_line) == (2, 6)
    assert [(h.name, h.content, h.expand) for h in copy.heredocs] == [
        ("A", "a\n", False), ("B", "b\n", True)]
    assert plain.heredocs == []
    # ENV cannot hold a heredoc: the marker is just text.
    assert parse("FROM a\nENV X <<EOF\n").instructions[1].heredocs == []


def test_unterminated_heredoc() -> None:
    with pytest.raises(ParseError, match="^dockerfile parse error on line 2: unterminated heredoc$"):
        parse("FROM a\nRUN <<EOF\nbody\n")


@pytest.mark.parametrize(("text", "message"), [
    ("FROM a\n\n# c\nRUN x\n\n\nRUNN y\n", "dockerfile parse error on line 7: unknown instruction: RUNN"),
    ("FROM a\nENV X\n", "dockerfile parse error on line 2: ENV must have two arguments"),
    ("FROM a\nLABEL x=1 y\n",
     "dockerfile parse error on line 2: Syntax error - can't find = in \"y\". "
     "Must be of the form: name=value"),
    ("FROM a\nCMD [\"a\", 1]\n", "dockerfile parse error on line 2: when using JSON array "
     "syntax, arrays must be comprised of strings only"),
    ("FROM a\nONBUILD ONBUILD RUN x\n", "dockerfile parse error on line 2: "
     "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM a\nONBUILD FROM b\n",
     "dockerfile parse error on line 2: FROM isn't allowed as an ONBUILD trigger"),
    ("\n# only a comment\n\n", "dockerfile parse error on line 3: file with no instructions"),
])
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse(text)
    assert str(e.value) == message


def test_dump_quotes_like_go() -> None:
    df = parse('FROM a\nCMD ["\\u0001", "\\u00e9", "\\t", "\\\\", "\\"", "\\u007f", "\\u0085"]\n')
    assert dump(df).splitlines()[1] == r'(cmd "\x01" "é" "\t" "\\" "\"" "\x7f" "\u0085")'


ENV = {"A": "a", "EMPTY": "", "SP": "x y"}


@pytest.mark.parametrize(("word", "want"), [
    ("$A", "a"),
    ("${A}b", "ab"),
    ("$A$A", "aa"),
    ("$UNSET-", "-"),
    ("$", "$"),
    ("a$", "a$"),
    ("$1x", "x"),
    ("${UNSET:-d}", "d"),
    ("${EMPTY:-d}", "d"),
    ("${EMPTY-d}", ""),
    ("${UNSET-d}", "d"),
    ("${A:-d}", "a"),
    ("${A:+p}", "p"),
    ("${EMPTY:+p}", ""),
    ("${EMPTY+p}", "p"),
    ("${UNSET+p}", ""),
    ("${UNSET:-$A}", "a"),
    ("${UNSET:-'q r'}", "q r"),
    ("${A:?boom}", "a"),
    ("'$A'", "$A"),
    ('"$A"', "a"),
    ('"${SP}"', "x y"),
    ("\\$A", "$A"),
    ("a\\ b", "a b"),
    ('"a\\"b"', 'a"b'),
    ('"a\\nb"', "a\\nb"),
    ("x\\", "x"),
    ("'it''s'", "its"),
])
def test_expand(word: str, want: str) -> None:
    assert expand(word, ENV) == want


def test_expand_with_backtick_escape() -> None:
    assert expand("`$A\\b", ENV, escape="`") == "$A\\b"


@pytest.mark.parametrize(("word", "message"), [
    ("${A", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:a}", "syntax error: bad substitution"),
    ("${A:-x", "syntax error: missing '}'"),
    ("'open", "unexpected end of statement while looking for matching single-quote"),
    ('"open', "unexpected end of statement while looking for matching double-quote"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${UNSET:?need it}", "UNSET: need it"),
    ("${A^}", "unsupported modifier (^) in substitution"),
])
def test_expand_errors(word: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        expand(word, ENV)
    assert str(e.value) == f"failed to process {json.dumps(word)}: {message}"


@pytest.mark.parametrize("word,expected", [
    ("${F%.gz}", "archive.tar"),
    ("${F%%.*}", "archive"),
    ("${F#*.}", "tar.gz"),
    ("${F##*.}", "gz"),
    ("${P%/*}", "/usr/local/bin"),
    ("${P##*/}", "tool"),
    ("${P/local/opt}", "/usr/opt/bin/tool"),
    ("${P//\\//:}", ":usr:local:bin:tool"),
    ("${F/[a-c]/X}", "Xrchive.tar.gz"),
    ("${F//[a-c]/X}", "XrXhive.tXr.gz"),
    ("${F/tar}", "archive..gz"),
    ("${F#nomatch}", "archive.tar.gz"),
    ("${UNSET#x}", ""),
    ("${F%$SUF}", "archive.tar"),
])
def test_expand_pattern_forms(word: str, expected: str) -> None:
    env = {"F": "archive.tar.gz", "P": "/usr/local/bin/tool", "SUF": ".gz"}
    assert expand(word, env) == expected


def test_expand_pattern_form_needs_its_brace() -> None:
    with pytest.raises(InvalidArgument, match="missing '}'"):
        expand("${A#a", ENV)
