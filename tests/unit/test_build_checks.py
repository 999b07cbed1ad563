"""Build checks (BuildKit's lint rules) and the ``# check`` directive."""

from __future__ import annotations

import pytest

from ketch.build.checks import parse_directive, run_checks
from ketch.build.dockerfile import parse
from ketch.errors import InvalidArgument


def rules(text: str) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in run_checks(parse(text))]


def test_a_clean_dockerfile_has_no_findings() -> None:
    assert rules('FROM busybox AS build\nENV A=1\nWORKDIR /app\nCMD ["sh"]\n') == []


def test_each_rule() -> None:
    found = rules(
        "FROM busybox as Build\n"        # 1 FromAsCasing, StageNameCasing
        "MAINTAINER me\n"                # 2
        "ENV A 1\n"                      # 3 LegacyKeyValueFormat
        "ARG API_TOKEN\n"                # 4 SecretsUsedInArgOrEnv
        "workdir app\n"                  # 5 ConsistentInstructionCasing, WorkdirRelativePath
        "EXPOSE 80/TCP 127.0.0.1:80:80\n"  # 6 ExposeProtoCasing, ExposeInvalidFormat
        "CMD echo one\n"                 # 7 JSONArgsRecommended, MultipleInstructionsDisallowed
        "CMD [\"two\"]\n"                # 8
        "FROM --platform=linux/amd64 busybox AS scratch\n")  # 9 const platform, reserved
    assert found == [
        ("FromAsCasing", 1), ("StageNameCasing", 1), ("MaintainerDeprecated", 2),
        ("LegacyKeyValueFormat", 3), ("SecretsUsedInArgOrEnv", 4),
        ("ConsistentInstructionCasing", 5), ("WorkdirRelativePath", 5),
        ("ExposeProtoCasing", 6), ("ExposeInvalidFormat", 6),
        ("JSONArgsRecommended", 7), ("MultipleInstructionsDisallowed", 7),
        ("ReservedStageName", 9), ("FromPlatformFlagConstDisallowed", 9)]


def test_the_directive_skips_and_errors() -> None:
    text = "CMD echo\nFROM busybox\nCMD echo hi\nMAINTAINER x\n"
    assert [r for r, _ in rules("# check=skip=JSONArgsRecommended\n" + text)] == [
        "MaintainerDeprecated"]
    assert rules("# check=skip=all\n" + text) == []
    assert parse_directive("skip=A,B;error=true").error
    with pytest.raises(InvalidArgument, match="error=maybe"):
        parse_directive("error=maybe")
    with pytest.raises(InvalidArgument, match="key"):
        parse_directive("nope=1")


def test_message_words() -> None:
    (f,) = run_checks(parse("FROM busybox\nCMD echo hi\n"))
    assert f.text() == ("JSONArgsRecommended: JSON arguments recommended for CMD to prevent "
                        "unintended behavior related to OS signals (line 2)")
