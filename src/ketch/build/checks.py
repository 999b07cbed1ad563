"""Build checks: BuildKit's Dockerfile lint rules that need no build to decide,
configured by the ``# check=skip=<rules|all>;error=<bool>`` directive.

Each finding is a warning in the build's progress (``--progress plain`` prints
them at the end, as BuildKit does); with ``error=true`` any finding fails the
build before a step runs. The rule names and their messages are BuildKit's
(docs.docker.com/reference/build-checks), so a user can look them up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ketch.build.dockerfile import Dockerfile, Instruction
from ketch.errors import InvalidArgument

_SECRET_WORDS = re.compile(r"(?i)(?:^|_)(?:api_?key|auth|credential|key|passwd|password|"
                           r"pword|secret|token)(?:$|_)")
_NOT_SECRET = re.compile(r"(?i)^(?:public_?key|.*_?path|.*_?file|.*_?dir)$")


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    line: int

    def text(self) -> str:
        return f"{self.rule}: {self.message} (line {self.line})"


@dataclass(frozen=True)
class CheckConfig:
    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False


def parse_directive(value: str | None) -> CheckConfig:
    """``skip=A,B;error=true`` (BuildKit's syntax; unknown keys are an error)."""
    if not value:
        return CheckConfig()
    skip: set[str] = set()
    skip_all = error = False
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, val = part.partition("=")
        key = key.strip().lower()
        if not eq:
            raise InvalidArgument(f"invalid check directive {part!r}: expected key=value")
        if key == "skip":
            names = {n.strip() for n in val.split(",") if n.strip()}
            skip_all = "all" in {n.lower() for n in names}
            skip |= names
        elif key == "error":
            if val.strip().lower() not in ("true", "false"):
                raise InvalidArgument(f"invalid check directive: error={val} is not a boolean")
            error = val.strip().lower() == "true"
        else:
            raise InvalidArgument(f"invalid check directive key {key!r}")
    return CheckConfig(frozenset(skip), skip_all, error)


def _keyword(original: str) -> str:
    return original.split(None, 1)[0] if original.strip() else ""


def run_checks(df: Dockerfile) -> list[Finding]:
    """The findings the directive does not skip, in line order."""
    cfg = parse_directive(df.directives.get("check"))
    if cfg.skip_all:
        return []
    out: list[Finding] = []

    def add(rule: str, message: str, line: int) -> None:
        if rule not in cfg.skip:
            out.append(Finding(rule, message, line))

    stage_cmds: dict[str, int] = {}
    declared: set[str] = set()
    casing = {"upper": 0, "lower": 0}
    for ins in df.instructions:
        word = _keyword(ins.original)
        if word.isupper():
            casing["upper"] += 1
        elif word.islower():
            casing["lower"] += 1
    majority = "upper" if casing["upper"] >= casing["lower"] else "lower"
    for ins in df.instructions:
        _check_one(ins, add, majority, stage_cmds, declared)
    return out


def _check_one(ins: Instruction, report: Callable[[str, str, int], None], majority: str,
               stage_cmds: dict[str, int], declared: set[str]) -> None:
    word = _keyword(ins.original)
    name = ins.name
    if word and not (word.isupper() if majority == "upper" else word.islower()):
        report("ConsistentInstructionCasing",
               f"Command '{word}' should match the case of the command majority "
               f"({majority}case)", ins.start_line)
    if name == "from":
        stage_cmds.clear()
        if len(ins.args) == 3:
            as_word = ins.args[1]
            if word.isupper() != as_word.isupper() and (word.isupper() or as_word.isupper()):
                report("FromAsCasing", f"'{as_word}' and '{word}' keywords' casing do not match",
                       ins.start_line)
            if ins.args[2] != ins.args[2].lower():
                report("StageNameCasing", f"Stage name '{ins.args[2]}' should be lowercase",
                       ins.start_line)
            if ins.args[2].lower() in ("context", "scratch"):
                report("ReservedStageName",
                       f"'{ins.args[2]}' is reserved and should not be used as a stage name",
                       ins.start_line)
        for flag in ins.flags:
            if flag.startswith("--platform=") and "$" not in flag:
                report("FromPlatformFlagConstDisallowed",
                       f"FROM {flag} flag should not use constant value "
                       f"\"{flag.split('=', 1)[1]}\"", ins.start_line)
    elif name in ("cmd", "entrypoint"):
        if not ins.json and ins.args:
            report("JSONArgsRecommended",
                   f"JSON arguments recommended for {name.upper()} to prevent unintended "
                   "behavior related to OS signals", ins.start_line)
        seen = stage_cmds.get(name)
        if seen is not None:
            report("MultipleInstructionsDisallowed",
                   f"Multiple {name.upper()} instructions should not be used in the same "
                   "stage because only the last one will be used", seen)
        stage_cmds[name] = ins.start_line
    elif name == "healthcheck":
        seen = stage_cmds.get(name)
        if seen is not None:
            report("MultipleInstructionsDisallowed",
                   "Multiple HEALTHCHECK instructions should not be used in the same stage "
                   "because only the last one will be used", seen)
        stage_cmds[name] = ins.start_line
    elif name == "maintainer":
        report("MaintainerDeprecated",
               "Maintainer instruction is deprecated in favor of using label",
               ins.start_line)
    elif name in ("env", "label"):
        # The parser marks the legacy "KEY value" form with a separator of "" (not "=").
        seps = ins.args[2::3]
        if any(sep != "=" for sep in seps):
            report("LegacyKeyValueFormat",
                   f"\"{name.upper()} key=value\" should be used instead of legacy "
                   f"\"{name.upper()} key value\" format", ins.start_line)
        if name == "env":
            for key in ins.args[0::3]:
                if _SECRET_WORDS.search(key) and not _NOT_SECRET.match(key):
                    report("SecretsUsedInArgOrEnv",
                           "Do not use ARG or ENV instructions for sensitive data "
                           f"(ENV \"{key}\")", ins.start_line)
    elif name == "arg":
        for wordarg in ins.args:
            key = wordarg.partition("=")[0]
            declared.add(key)
            if _SECRET_WORDS.search(key) and not _NOT_SECRET.match(key):
                report("SecretsUsedInArgOrEnv",
                       "Do not use ARG or ENV instructions for sensitive data "
                       f"(ARG \"{key}\")", ins.start_line)
    elif name == "workdir":
        path = ins.args[0] if ins.args else ""
        if path and not path.startswith(("/", "$")):
            report("WorkdirRelativePath",
                   f"Relative workdir \"{path}\" can have unexpected results if the base "
                   "image changes", ins.start_line)
    elif name == "expose":
        for port in ins.args:
            proto = port.partition("/")[2]
            if proto and proto != proto.lower():
                report("ExposeProtoCasing",
                       f"Defined protocol '{port}' in EXPOSE instruction should be lowercase",
                       ins.start_line)
            if ":" in port:
                report("ExposeInvalidFormat",
                       f"EXPOSE instruction should not define an IP address or host-port "
                       f"mapping, found '{port}'", ins.start_line)
