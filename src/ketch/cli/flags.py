"""Docker's flag syntax, read the way the docker CLI reads it (cobra over pflag).

Users type docker's spellings and scripts depend on them, so the rules are
pflag's, not those of a general-purpose parser:

- ``--name value``, ``--name=value``; ``-n value``, ``-nvalue``, ``-n=value``;
- boolean flags need no value and take an explicit one only after ``=``
  (``--rm=false``, ``-d=true``), with Go's ``strconv.ParseBool`` spellings;
- shorthand booleans cluster (``-it``); the first value flag in a cluster
  takes the rest of the word (``-p8080:80``) or the next word;
- ``--`` ends the flags; with ``interspersed`` off (``run``, ``exec``, ``top``)
  so does the first positional word, so a container's own ``-l`` stays its own;
- a list flag appends (``-e A -e B``), any other flag takes its last value;
- errors in pflag's words: ``unknown flag: --x``, ``unknown shorthand flag:
  'x' in -xyz``, ``flag needs an argument: --name`` / ``'n' in -n``,
  ``invalid argument "x" for "-d, --detach" flag: ...``, ``bad flag syntax: ---x``.

A value stays the word the user typed: each command reads its values itself
(sizes, durations, ports), with its own error messages.

Every command of the CLI imports this module, so it imports nothing itself,
not even ``typing`` or ``dataclasses`` (together 10-20 ms of start-up, more
than the work of a ``ketch ps``): its records are plain classes with slots.
"""

from __future__ import annotations

from ketch.gotext import go_quote  # noqa: F401 - the CLI modules import it from here

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

BOOL = "bool"
VALUE = "value"
LIST = "list"

TRUE_WORDS = ("1", "t", "T", "TRUE", "true", "True")
FALSE_WORDS = ("0", "f", "F", "FALSE", "false", "False")


class FlagError(Exception):
    """A command line pflag would refuse; the CLI prints it with the usage (exit 125)."""


class HelpRequested(Exception):
    """``-h``/``--help`` was given: the caller prints the command's help."""


class Option:
    """One flag: ``long`` and ``short`` without dashes; ``dest`` names its value."""

    __slots__ = ("default", "dest", "help", "hidden", "kind", "long", "metavar", "short")

    def __init__(self, dest: str, long: str = "", short: str = "", kind: str = VALUE,
                 default: Any = None, metavar: str = "string", help: str = "",
                 hidden: bool = False) -> None:
        self.dest = dest
        self.long = long
        self.short = short
        self.kind = kind
        self.default = default
        self.metavar = metavar
        self.help = help
        self.hidden = hidden

    def __repr__(self) -> str:
        return f"Option({self.label!r} -> {self.dest}, {self.kind})"

    @property
    def label(self) -> str:
        """How pflag names the flag in its errors: ``-m, --memory`` or ``--cpus``."""
        if self.short and self.long:
            return f"-{self.short}, --{self.long}"
        return f"--{self.long}" if self.long else f"-{self.short}"


class Parsed:
    """The values by dest (defaults for flags not given), the positional words, and the
    dests given on the command line (pflag's ``Changed``)."""

    __slots__ = ("args", "given", "values")

    def __init__(self, values: dict[str, Any], args: list[str]) -> None:
        self.values = values
        self.args = args
        self.given: set[str] = set()


def parse_bool(opt: Option, word: str) -> bool:
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise FlagError(f"invalid argument {go_quote(word)} for {go_quote(opt.label)} flag: "
                    f"strconv.ParseBool: parsing {go_quote(word)}: invalid syntax")


class FlagSet:
    """The flags of one command, indexed for parsing."""

    def __init__(self, options: Sequence[Option], *, help_long: bool = True,
                 help_short: bool = True, interspersed: bool = True) -> None:
        self.options = tuple(options)
        self.longs: dict[str, Option] = {}
        self.shorts: dict[str, Option] = {}
        for o in self.options:
            if o.long:
                self.longs[o.long] = o
            if o.short:
                self.shorts[o.short] = o
        self.help_long = help_long and "help" not in self.longs
        self.help_short = help_short and "h" not in self.shorts
        self.interspersed = interspersed

    def defaults(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for o in self.options:
            if o.dest not in values:
                values[o.dest] = () if o.kind == LIST and o.default is None else o.default
        return values

    def parse(self, words: Sequence[str]) -> Parsed:
        out = Parsed(self.defaults(), [])
        rest = list(words)
        rest.reverse()      # popped from the end: the next word is rest[-1]
        while rest:
            word = rest.pop()
            if len(word) < 2 or word[0] != "-":
                out.args.append(word)
                if not self.interspersed:
                    out.args.extend(reversed(rest))
                    break
                continue
            if word == "--":
                out.args.extend(reversed(rest))
                break
            if word[1] == "-":
                self._long(word, rest, out)
            else:
                shorts = word[1:]
                while shorts:
                    shorts = self._short(shorts, rest, out)
        return out

    def _long(self, word: str, rest: list[str], out: Parsed) -> None:
        body = word[2:]
        if body[:1] in ("-", "="):
            raise FlagError(f"bad flag syntax: {word}")
        name, eq, value = body.partition("=")
        opt = self.longs.get(name)
        if opt is None:
            if name == "help" and self.help_long:
                raise HelpRequested
            raise FlagError(f"unknown flag: --{name}")
        if eq:
            self._set(opt, value, out, explicit=True)
        elif opt.kind == BOOL:
            self._set(opt, "true", out, explicit=False)
        elif rest:
            self._set(opt, rest.pop(), out, explicit=True)
        else:
            raise FlagError(f"flag needs an argument: {word}")

    def _short(self, shorts: str, rest: list[str], out: Parsed) -> str:
        """One flag from the front of a cluster; what is left of the cluster."""
        c = shorts[0]
        opt = self.shorts.get(c)
        if opt is None:
            if c == "h" and self.help_short:
                raise HelpRequested
            raise FlagError(f"unknown shorthand flag: {_rune(c)} in -{shorts}")
        if len(shorts) > 2 and shorts[1] == "=":
            self._set(opt, shorts[2:], out, explicit=True)
            return ""
        if opt.kind == BOOL:
            self._set(opt, "true", out, explicit=False)
            return shorts[1:]
        if len(shorts) > 1:
            self._set(opt, shorts[1:], out, explicit=True)
            return ""
        if rest:
            self._set(opt, rest.pop(), out, explicit=True)
            return ""
        raise FlagError(f"flag needs an argument: {_rune(c)} in -{shorts}")

    @staticmethod
    def _set(opt: Option, word: str, out: Parsed, *, explicit: bool) -> None:
        out.given.add(opt.dest)
        if opt.kind == BOOL:
            out.values[opt.dest] = parse_bool(opt, word) if explicit else True
        elif opt.kind == LIST:
            out.values[opt.dest] = (*out.values.get(opt.dest, ()), word)
        else:
            out.values[opt.dest] = word


def _rune(c: str) -> str:
    """Go's %q of a rune: 'x'."""
    return "'\\''" if c == "'" else f"'{c}'"


__all__ = ["BOOL", "FALSE_WORDS", "LIST", "TRUE_WORDS", "VALUE", "FlagError", "FlagSet",
           "HelpRequested", "Option", "Parsed", "go_quote", "parse_bool"]
