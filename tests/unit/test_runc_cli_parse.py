import pytest

from ketch.runtime.cli import COMMANDS, GLOBAL_FLAGS, UsageError, parse_flags, parse_signal


def test_go_style_flags():
    opts, rest = parse_flags(GLOBAL_FLAGS, ["--root", "/r", "-log=/l", "--debug", "state", "x"])
    assert opts == {"root": "/r", "log": "/l", "debug": True}
    assert rest == ["state", "x"]


def test_exec_args_after_id_are_not_flags():
    opts, rest = parse_flags(COMMANDS["exec"].flags, ["-e", "A=1", "--env=B=2", "-t", "id",
                                                     "sh", "-c", "echo -e"])
    assert opts == {"env": ["A=1", "B=2"], "tty": True}
    assert rest == ["id", "sh", "-c", "echo -e"]


def test_unknown_flag():
    with pytest.raises(UsageError, match="flag provided but not defined: -nope"):
        parse_flags(COMMANDS["create"].flags, ["--nope", "x"])


def test_bool_with_value():
    opts, _ = parse_flags(COMMANDS["kill"].flags, ["--all=false", "x"])
    assert opts == {"all": False}


@pytest.mark.parametrize("value, expected", [("KILL", 9), ("SIGTERM", 15), ("9", 9),
                                             ("sigusr1", 10), ("RTMIN+1", 35)])
def test_signals(value, expected):
    assert parse_signal(value) == expected
