"""The .env format with Compose's rules, and env_file entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.compose.dotenv import (
    EnvFile,
    env_file_entries,
    parse_dotenv,
    project_env_files,
    read_dotenv,
    read_env_files,
)
from ketch.compose.errors import ComposeError


def test_basic_statements() -> None:
    text = (
        "# a comment\n"
        "\n"
        "A=1\n"
        "export B=two\n"
        "C = spaced   \n"
        "D: yaml-style\n"
        "E=\n"
        "F=value # trailing comment\n"
        "G=no#comment\n"
        "H.dotted-name=x\n"
    )
    assert parse_dotenv(text) == {
        "A": "1",
        "B": "two",
        "C": "spaced",
        "D": "yaml-style",
        "E": "",
        "F": "value",
        "G": "no#comment",
        "H.dotted-name": "x",
    }


def test_quotes() -> None:
    text = (
        "S='literal $A \\n \"x\"'\n"
        'D="tab\\there\\nnew \\"q\\" back\\\\slash"\n'
        "SQ='it\\'s'\n"
        'DOLLAR="\\$A and $$A"\n'
        "A=alpha\n"
        'I="${A}-x"\n'
    )
    out = parse_dotenv(text)
    assert out["S"] == 'literal $A \\n "x"'
    assert out["D"] == 'tab\there\nnew "q" back\\slash'
    assert out["SQ"] == "it's"
    assert out["DOLLAR"] == "$A and $A"
    assert out["I"] == "alpha-x"


def test_multiline_quoted_values() -> None:
    text = 'KEY="line one\nline two"\nNEXT=1\nRAW=\'a\nb\'\n'
    assert parse_dotenv(text) == {"KEY": "line one\nline two", "NEXT": "1", "RAW": "a\nb"}


def test_interpolation_from_earlier_keys_and_lookup() -> None:
    env = {"FROM_ENV": "env", "BOTH": "env-wins"}
    text = (
        "BASE=base\n"
        "BOTH=file\n"
        "U=${BASE}/$FROM_ENV\n"
        "W=${BOTH}\n"
        "DEF=${NOPE:-fallback}\n"
        "LATER=${DEFINED_BELOW}\n"
        "DEFINED_BELOW=x\n"
    )
    out = parse_dotenv(text, lookup=env.get)
    assert out["U"] == "base/env"
    # the lookup (the environment) is asked before the file's own keys
    assert out["W"] == "env-wins"
    assert out["DEF"] == "fallback"
    assert out["LATER"] == ""


def test_bare_key_takes_the_environment() -> None:
    out = parse_dotenv("HOME_DIR\nMISSING\nX=1\nLAST", lookup={"HOME_DIR": "/h", "LAST": "l"}.get)
    assert out == {"HOME_DIR": "/h", "X": "1", "LAST": "l"}


def test_bom_is_ignored() -> None:
    assert parse_dotenv("\ufeffA=1\n") == {"A": "1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nB!C=2\n", 'failed to read /x/.env: line 2: unexpected character "!" in variable name "B!C=2"'),
        ('A=1\n\nB="open\n', "failed to read /x/.env: line 3: unterminated quoted value \"open"),
        ("MY KEY=1\n", "failed to read /x/.env: line 1: key cannot contain a space"),
    ],
)
def test_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ComposeError) as exc:
        parse_dotenv(text, filename="/x/.env")
    assert str(exc.value) == message


def test_required_variable_in_dotenv_errors() -> None:
    with pytest.raises(ComposeError, match="line 2: required variable X is missing a value: set X"):
        parse_dotenv("A=1\nB=${X:?set X}\n", filename="f")


def test_project_env_files_in_order(tmp_path: Path) -> None:
    first = tmp_path / "a.env"
    second = tmp_path / "b.env"
    first.write_text("A=1\nB=from-a\n")
    second.write_text("B=from-b\nC=${A}${OS}\n")
    out = project_env_files([str(first), str(second)], {"OS": "-os"})
    assert out == {"A": "1", "B": "from-b", "C": "1-os"}


def test_project_env_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    with pytest.raises(ComposeError) as exc:
        project_env_files([str(missing)], {})
    assert str(exc.value) == f"couldn't find env file: {missing}"


def test_env_file_entry_forms(tmp_path: Path) -> None:
    base = str(tmp_path)
    assert env_file_entries("a.env", base) == [EnvFile(os.path.join(base, "a.env"))]
    assert env_file_entries(["a.env", "/abs/b.env"], base) == [
        EnvFile(os.path.join(base, "a.env")),
        EnvFile("/abs/b.env"),
    ]
    assert env_file_entries(
        [{"path": "c.env", "required": False}, {"path": "d.env", "format": "raw"}], base
    ) == [EnvFile(os.path.join(base, "c.env"), required=False), EnvFile(os.path.join(base, "d.env"), format="raw")]
    assert env_file_entries(None, base) == []
    with pytest.raises(ComposeError):
        env_file_entries([{"required": True}], base)


def test_read_env_files_required_and_optional(tmp_path: Path) -> None:
    present = tmp_path / "one.env"
    present.write_text("A=1\nB=${A}-${PROJ}\n")
    later = tmp_path / "two.env"
    later.write_text("A=2\n")
    missing = tmp_path / "missing.env"
    entries = [EnvFile(str(present)), EnvFile(str(missing), required=False), EnvFile(str(later))]
    assert read_env_files(entries, {"PROJ": "p"}.get) == {"A": "2", "B": "1-p"}
    with pytest.raises(ComposeError) as exc:
        read_env_files([EnvFile(str(missing))])
    assert str(exc.value) == (
        f"env file {missing} not found: stat {missing}: no such file or directory"
    )


def test_raw_format_keeps_values_as_written(tmp_path: Path) -> None:
    raw = tmp_path / "raw.env"
    raw.write_text("# c\nA=\"quoted $X\"\nB='x' # not a comment\nINHERIT\n")
    assert read_dotenv(str(raw), fmt="raw", lookup={"INHERIT": "i"}.get) == {
        "A": '"quoted $X"',
        "B": "'x' # not a comment",
        "INHERIT": "i",
    }
    with pytest.raises(ComposeError, match='unsupported env_file format "toml"'):
        read_dotenv(str(raw), fmt="toml")


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ('K="\\0101\\x41\\u0041"', "K", "A\\x41\\u0041"),
        ('K="a\\\\nb"', "K", "a\\nb"),
        ("K=a\\tb", "K", "a\\tb"),
        ("exportK=1", "exportK", "1"),
        ("export\tK=1", "K", "1"),
        ("  export K='export x'", "K", "export x"),
        ("K=1:2=3", "K", "1:2=3"),
        ("K: a=b", "K", "a=b"),
        ('K="x#y" # c', "K", "x#y"),
        ("K=x #", "K", "x"),
        ("K=x\r", "K", "x"),
    ],
)
def test_single_statements(line: str, key: str, value: str) -> None:
    assert parse_dotenv(line)[key] == value


@pytest.mark.parametrize("text", ['K="', "K='x", 'K="x\\"', "K='x\\'", 'K="x\''])
def test_unterminated_quotes(text: str) -> None:
    with pytest.raises(ComposeError, match="unterminated quoted value"):
        parse_dotenv(text)
