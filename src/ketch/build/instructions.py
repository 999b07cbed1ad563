"""Typed Dockerfile commands from the parser's tree, and the stages they form.

The parser (``dockerfile.py``) splits lines; this module checks each
instruction's flags and argument counts the way BuildKit's instruction layer
does, before any step runs, so a bad flag on line 30 fails the build at once.
Words are kept unexpanded: variables are expanded by the executor with the
environment of the step they run in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ketch.build.dockerfile import Dockerfile, Heredoc, Instruction, ParseError
from ketch.errors import InvalidArgument

# The flags each instruction accepts; a value of True means the flag may repeat.
_FLAGS: dict[str, dict[str, bool]] = {
    "from": {"platform": False},
    "run": {"mount": True, "network": False, "security": False},
    "copy": {"from": False, "chown": False, "chmod": False, "link": False, "parents": False,
             "exclude": True},
    "add": {"chown": False, "chmod": False, "link": False, "checksum": False,
            "keep-git-dir": False, "exclude": True},
    "healthcheck": {"interval": False, "timeout": False, "start-period": False,
                    "start-interval": False, "retries": False},
}
_BOOL_FLAGS = {"link", "parents", "keep-git-dir"}

# Proxy args every build knows without an ARG line; left out of history (BuildKit).
PREDEFINED_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                   "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


@dataclass
class Command:
    """One instruction ready for the executor: name, checked flags, raw words."""

    name: str                     # lower case: "run", "copy", ...
    original: str                 # the line as written (joined), for messages and history
    line: int
    flags: dict[str, list[str]] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    json: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    trigger: str = ""             # ONBUILD's instruction text

    def flag(self, name: str, default: str = "") -> str:
        values = self.flags.get(name)
        return values[-1] if values else default

    def flag_set(self, name: str) -> bool:
        return name in self.flags


@dataclass
class Stage:
    """``FROM base [AS name]`` and the commands up to the next FROM."""

    index: int
    base: str                     # unexpanded, may name an earlier stage
    name: str                     # lower-cased ``AS`` name, or ""
    platform: str
    line: int
    original: str
    commands: list[Command] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass
class Plan:
    """The whole Dockerfile: global ARGs (before the first FROM) and the stages."""

    global_args: list[Command]
    stages: list[Stage]
    escape: str = "\\"

    def stage_named(self, name: str) -> Stage | None:
        key = name.lower()
        for st in self.stages:
            if st.name == key:
                return st
        if key.isdigit() and int(key) < len(self.stages):
            return self.stages[int(key)]
        return None


def _parse_flags(ins: Instruction) -> dict[str, list[str]]:
    allowed = _FLAGS.get(ins.name, {})
    out: dict[str, list[str]] = {}
    for raw in ins.flags:
        if not raw.startswith("--"):
            raise ParseError(f"invalid flag {raw!r}", ins.start_line)
        name, eq, value = raw[2:].partition("=")
        if name not in allowed:
            raise ParseError(f"unknown flag: {name}", ins.start_line)
        if name in _BOOL_FLAGS:
            if eq and value.lower() not in ("true", "false"):
                raise ParseError(f"expecting boolean value for flag {name}, not: {value}",
                                 ins.start_line)
            value = "true" if not eq else value.lower()
        elif not eq:
            raise ParseError(f"missing a value on flag: {name}", ins.start_line)
        if name in out and not allowed[name]:
            raise ParseError(f"duplicate flag specified: {name}", ins.start_line)
        out.setdefault(name, []).append(value)
    return out


def _command(ins: Instruction) -> Command:
    flags = _parse_flags(ins)
    cmd = Command(name=ins.name, original=ins.original, line=ins.start_line, flags=flags,
                  args=list(ins.args), json=ins.json, heredocs=list(ins.heredocs))
    n = ins.name
    if n == "onbuild":
        assert ins.sub is not None        # the parser refuses an empty ONBUILD
        cmd.trigger = ins.original.split(None, 1)[1].strip()
        return cmd
    if n in ("copy", "add"):
        if len(cmd.args) < 2 and not (cmd.heredocs and cmd.args):
            raise ParseError(f"{n.upper()} requires at least two arguments, but only "
                             f"{len(cmd.args)} provided", ins.start_line)
    elif n in ("run", "cmd", "entrypoint", "shell"):
        if n in ("run", "shell") and not cmd.args:
            raise ParseError(f"{n.upper()} requires at least one argument", ins.start_line)
        if n == "shell" and not cmd.json:
            raise ParseError("SHELL requires the arguments to be in JSON form",
                             ins.start_line)
    elif n in ("env", "label"):
        if not cmd.args:
            raise ParseError(f"{n.upper()} requires at least one argument", ins.start_line)
    elif n == "arg":
        if not cmd.args:
            raise ParseError("ARG requires at least one argument", ins.start_line)
    elif n in ("expose", "volume"):
        if not cmd.args:
            raise ParseError(f"{n.upper()} requires at least one argument", ins.start_line)
    elif n in ("user", "workdir", "stopsignal", "maintainer"):
        if not cmd.args or not cmd.args[0].strip():
            raise ParseError(f"{n.upper()} requires exactly one argument", ins.start_line)
    elif n == "healthcheck" and not cmd.args:
        raise ParseError("HEALTHCHECK requires an argument", ins.start_line)
    return cmd


def plan(df: Dockerfile) -> Plan:
    """Stages and global ARGs; ParseError for what BuildKit refuses before building."""
    global_args: list[Command] = []
    stages: list[Stage] = []
    for ins in df.instructions:
        if ins.name == "from":
            flags = _parse_flags(ins)
            args = ins.args
            if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
                raise ParseError("FROM requires either one or three arguments",
                                 ins.start_line)
            name = args[2].lower() if len(args) == 3 else ""
            if name and not _valid_stage_name(name):
                raise ParseError(f"invalid name for build stage: {args[2]!r}, name can't start "
                                 "with a number or contain symbols", ins.start_line)
            if name and any(s.name == name for s in stages):
                raise ParseError(f"duplicate stage name {name!r}", ins.start_line)
            stages.append(Stage(index=len(stages), base=args[0], name=name,
                                platform=flags.get("platform", [""])[-1], line=ins.start_line,
                                original=ins.original))
            continue
        cmd = _command(ins)
        if not stages:
            if ins.name != "arg":
                # dockerd's words, without a line (it is not a syntax error)
                raise InvalidArgument("no build stage in current context")
            global_args.append(cmd)
            continue
        stages[-1].commands.append(cmd)
    if not stages:
        raise InvalidArgument("the Dockerfile has no FROM instruction: no build stage")
    return Plan(global_args=global_args, stages=stages, escape=df.escape)


def _valid_stage_name(name: str) -> bool:
    import re

    return re.fullmatch(r"[a-z][a-z0-9-_.]*", name) is not None


def arg_pairs(cmd: Command) -> list[tuple[str, str | None]]:
    """``ARG a b=1``: names with their default (None when there is none)."""
    out: list[tuple[str, str | None]] = []
    for word in cmd.args:
        name, eq, default = word.partition("=")
        if not name:
            raise ParseError(f"ARG names can not be blank: {word!r}", cmd.line)
        out.append((name, default if eq else None))
    return out


def triples(cmd: Command) -> list[tuple[str, str]]:
    """ENV/LABEL's parsed (key, value) pairs, values still unexpanded."""
    a = cmd.args
    return [(a[i], a[i + 1]) for i in range(0, len(a) - 2, 3)]
