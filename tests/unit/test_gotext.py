"""Go's text forms: strconv.Quote, time.Duration.String, time.ParseDuration."""

from __future__ import annotations

import pytest

from ketch.gotext import go_duration, go_quote, parse_duration


@pytest.mark.parametrize("text, ns", [
    ("1m30s", 90_000_000_000), ("500ms", 500_000_000), ("1.5h", 5_400_000_000_000),
    ("-2s", -2_000_000_000), ("+3s", 3_000_000_000), ("0", 0), (".5s", 500_000_000),
    ("1.s", 1_000_000_000), ("1h2m3.004005006s", 3_723_004_005_006), ("10us", 10_000),
    ("3µs", 3_000), ("2μs", 2_000), ("300ms1us", 300_001_000),
    ("1.0000000001s", 1_000_000_000),         # below a nanosecond: dropped, as Go does
])
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text, message", [
    ("", 'time: invalid duration ""'), ("x", 'time: invalid duration "x"'),
    ("-", 'time: invalid duration "-"'), ("s", 'time: invalid duration "s"'),
    ("1", 'time: missing unit in duration "1"'), ("1s2", 'time: missing unit in duration "1s2"'),
    ("1z", 'time: unknown unit "z" in duration "1z"'),
])
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (1, "1ns"), (1_500, "1.5µs"), (1_500_000, "1.5ms"), (999_999_999, "999.999999ms"),
    (1_000_000_000, "1s"), (1_500_000_000, "1.5s"), (60_000_000_000, "1m0s"),
    (90_000_000_000, "1m30s"), (3_600_000_000_000, "1h0m0s"), (3_661_500_000_000, "1h1m1.5s"),
    (-1_500_000, "-1.5ms"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text
    assert parse_duration(text) == ns


def test_go_quote() -> None:
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("tab\tnl\n") == '"tab\\tnl\\n"'
    assert go_quote("é") == '"é"'
    assert go_quote("\x00") == '"\\x00"'
    assert go_quote("\u200b") == '"\\u200b"'
