"""ketch.cli.flags reads command lines as pflag does (checked against the docker CLI 28)."""

from __future__ import annotations

import pytest

from ketch.cli.flags import BOOL, LIST, VALUE, FlagError, FlagSet, HelpRequested, Option

OPTS = (
    Option("detach", "detach", "d", BOOL, None),
    Option("interactive", "interactive", "i", BOOL, None),
    Option("tty", "tty", "t", BOOL, None),
    Option("name", "name", "n"),
    Option("publish", "publish", "p", LIST),
    Option("env", "env", "e", LIST),
    Option("network", "network", kind=VALUE),
    Option("network", "net", kind=VALUE, hidden=True),   # an alias fills the same value
    Option("rm", "rm", kind=BOOL, default=False),
)


def parse(*words: str, interspersed: bool = True) -> tuple[dict[str, object], list[str]]:
    p = FlagSet(OPTS, interspersed=interspersed).parse(words)
    return p.values, p.args


def test_spellings_of_values() -> None:
    for words in (("--name", "x"), ("--name=x"), ("-n", "x"), ("-nx",), ("-n=x",)):
        words = (words,) if isinstance(words, str) else words
        assert parse(*words)[0]["name"] == "x", words
    assert parse("--name=")[0]["name"] == ""              # an empty value is a value
    assert parse("--name", "--rm")[0]["name"] == "--rm"   # the next word, whatever it is
    assert parse("-n", "a", "-n", "b")[0]["name"] == "b"  # the last one wins


def test_lists_append_in_order_and_aliases_share_a_value() -> None:
    values, _ = parse("-e", "A=1", "--env=B", "-eC", "-p80:80")
    assert values["env"] == ("A=1", "B", "C") and values["publish"] == ("80:80",)
    assert parse("--net", "none")[0]["network"] == "none"
    assert parse()[0]["env"] == ()


def test_bools() -> None:
    values, _ = parse("-it")
    assert values["interactive"] is True and values["tty"] is True and values["detach"] is None
    assert parse("--rm=false")[0]["rm"] is False
    assert parse("-d=false")[0]["detach"] is False
    assert parse("--rm=T")[0]["rm"] is True
    assert parse("-itd")[0]["detach"] is True
    # A value flag in a cluster takes the rest of the word.
    values, _ = parse("-itnfoo")
    assert values["name"] == "foo" and values["tty"] is True
    # A bool does not take the next word.
    assert parse("--rm", "false") == ({**parse()[0], "rm": True}, ["false"])


def test_positionals() -> None:
    assert parse("a", "-d", "b")[1] == ["a", "b"]
    assert parse("a", "-d", "b", interspersed=False)[1] == ["a", "-d", "b"]
    assert parse("-d", "--", "-i", "x")[1] == ["-i", "x"]
    assert parse("-", "x")[1] == ["-", "x"]
    values, args = parse("-d", "img", "sh", "--name", "x", interspersed=False)
    assert values["name"] is None and args == ["img", "sh", "--name", "x"]


@pytest.mark.parametrize(("words", "message"), [
    (["--bogus"], "unknown flag: --bogus"),
    (["--bogus=1"], "unknown flag: --bogus"),
    (["-z"], "unknown shorthand flag: 'z' in -z"),
    (["-dz"], "unknown shorthand flag: 'z' in -z"),
    (["-dzq"], "unknown shorthand flag: 'z' in -zq"),
    (["--name"], "flag needs an argument: --name"),
    (["-n"], "flag needs an argument: 'n' in -n"),
    (["-dn"], "flag needs an argument: 'n' in -n"),
    (["---x"], "bad flag syntax: ---x"),
    (["--=x"], "bad flag syntax: --=x"),
    (["-d=x"], 'invalid argument "x" for "-d, --detach" flag: '
               'strconv.ParseBool: parsing "x": invalid syntax'),
    (["--rm=yes"], 'invalid argument "yes" for "--rm" flag: '
                   'strconv.ParseBool: parsing "yes": invalid syntax'),
    (["--rm="], 'invalid argument "" for "--rm" flag: '
                'strconv.ParseBool: parsing "": invalid syntax'),
])
def test_errors_in_pflags_words(words: list[str], message: str) -> None:
    with pytest.raises(FlagError) as err:
        parse(*words)
    assert str(err.value) == message


def test_help() -> None:
    for words in (["--help"], ["-h"], ["-dh"]):
        with pytest.raises(HelpRequested):
            parse(*words)
    # A command that owns -h (run's --hostname) keeps it; --help still asks for help.
    flags = FlagSet((Option("hostname", "hostname", "h"),), help_short=False)
    assert flags.parse(["-h", "box"]).values["hostname"] == "box"
    with pytest.raises(HelpRequested):
        flags.parse(["--help"])
    # With interspersed off, a --help after the first positional belongs to the command.
    assert parse("img", "--help", interspersed=False)[1] == ["img", "--help"]


def test_given_records_what_was_on_the_line() -> None:
    p = FlagSet(OPTS).parse(["--rm=false", "-e", "A"])
    assert p.given == {"rm", "env"}
