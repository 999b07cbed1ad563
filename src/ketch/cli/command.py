"""Commands and groups that look and fail like the docker CLI's.

Users know docker's help layout, its usage errors and their exit codes
(unknown flag: 125; wrong number of arguments: 1), and scripts depend on
them, so commands are declared with docker's usage line and argument counts,
flags are read by ``ketch.cli.flags`` with pflag's rules, and the help is laid
out as docker lays it out. Subcommands are imported only when they are run:
the CLI's start-up pays for the one command it runs, and nothing else.

A command is a function with decorators::

    @command("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", "Create a tag ...", nargs=(2, 2))
    @option("-f", "--force", is_flag=True, help="...")
    @pass_obj
    def tag(session, args, force): ...

``args`` are the positional words; every flag arrives under its name.
"""

from __future__ import annotations

import importlib
import sys

from ketch.cli.flags import BOOL, LIST, VALUE, FlagError, FlagSet, HelpRequested, Option, Parsed

TYPE_CHECKING = False     # typing costs the CLI's start-up; see ketch.cli.flags
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

_UNSET: Any = object()


class UsageFailure(Exception):
    """A usage error worded and numbered as docker's: printed with the command's usage
    line and a ``--help`` hint, exit ``exit_code`` (125 for flags, 1 for arguments)."""

    def __init__(self, message: str, exit_code: int = 125, hint: str = "Run") -> None:
        super().__init__(message)
        self.message = message
        self.status = exit_code
        self.hint = hint            # the last line's first word, as docker's validator has it


def _plural(n: int) -> str:
    return f"{n} argument" + ("" if n == 1 else "s")


def option(*decls: str, is_flag: bool = False, multiple: bool = False, default: Any = _UNSET,
           metavar: str | None = None, help: str = "", hidden: bool = False
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@option("-a", "--all", "all_", is_flag=True)``: dashes mark the flag's spellings;
    a bare word names the value (else the long name with ``_`` for ``-``)."""
    short = long = dest = ""
    for d in decls:
        if d.startswith("--"):
            long = d[2:]
        elif d.startswith("-"):
            short = d[1:]
        else:
            dest = d
    kind = BOOL if is_flag else LIST if multiple else VALUE
    if default is _UNSET:
        default = False if is_flag else None
    opt = Option(dest or long.replace("-", "_"), long, short, kind, default,
                 metavar if metavar is not None else ("list" if multiple else "string"),
                 help, hidden)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__dict__.setdefault("__ketch_options__", []).append(opt)
        return fn

    return wrap


def pass_obj(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The callback takes the invocation's Session as its first argument."""
    fn.__dict__["__ketch_session__"] = True
    return fn


def _parse(flags: FlagSet, words: Sequence[str], help_text: Callable[[], str]) -> Parsed | None:
    """The words read by ``flags``; None once the help asked for was printed."""
    try:
        return flags.parse(words)
    except HelpRequested:
        sys.stdout.write(help_text())
        return None
    except FlagError as exc:
        raise UsageFailure(str(exc), 125) from None


class Command:
    """A command with docker's usage line, argument count check and help layout."""

    def __init__(self, name: str, callback: Callable[..., Any], *, usage: str, help: str,
                 nargs: tuple[int, int | None] = (0, 0), aliases: tuple[str, ...] = (),
                 options: Sequence[Option] = (), interspersed: bool = True,
                 help_short: bool = True, hidden: bool = False) -> None:
        self.name = name
        self.callback = callback
        self.usage_line = usage
        self.help = help
        self.nargs = nargs
        self.aliases = aliases
        self.options = tuple(options)
        self.hidden = hidden
        self.flags = FlagSet(self.options, help_short=help_short, interspersed=interspersed)
        self.pass_session = bool(callback.__dict__.get("__ketch_session__"))

    def usage_text(self, path: str) -> str:
        return f"Usage:  {path} {self.usage_line}".rstrip()

    def check_args(self, path: str, args: Sequence[str]) -> None:
        """docker/cli's positional-argument validators, word for word: NoArgs,
        ExactArgs, RequiresMinArgs ("See ..."), RequiresMaxArgs (docker 28 prints
        "SRun ..." there, a typo users see) and RequiresRangeArgs."""
        lo, hi = self.nargs
        n = len(args)
        if lo <= n and (hi is None or n <= hi):
            return
        hint = "Run"
        if hi is None:
            what, hint = f"requires at least {_plural(lo)}", "See"
        elif lo == hi:
            what = f"requires {_plural(lo)}" if lo else "accepts no arguments"
        elif lo == 0:
            what, hint = f"requires at most {_plural(hi)}", "SRun"
        else:
            what = f"requires at least {lo} and at most {_plural(hi)}"
        raise UsageFailure(f"ketch: '{path}' {what}", 1, hint)

    def invoke(self, path: str, words: Sequence[str], session: Any) -> Any:
        parsed = _parse(self.flags, words, lambda: self.help_text(path))
        if parsed is None:
            return 0
        self.check_args(path, parsed.args)
        if self.pass_session:
            return self.callback(session, args=tuple(parsed.args), **parsed.values)
        return self.callback(args=tuple(parsed.args), **parsed.values)

    def help_text(self, path: str) -> str:
        lines = [self.usage_text(path), "", self.help]
        if self.aliases:
            lines += ["", "Aliases:", "  " + ", ".join(self.aliases)]
        opts = [o for o in self.options if not o.hidden]
        if opts:
            lines += ["", "Options:"]
            rows = []
            for o in opts:
                name = (f"-{o.short}, " if o.short else "    ") + (f"--{o.long}" if o.long else "")
                if o.kind != BOOL and o.metavar:
                    name += f" {o.metavar}"
                rows.append((name, o.help))
            if not self.flags.help_short:
                # docker lists --help where -h means something else (run, create)
                rows.append(("    --help", "Print usage"))
                rows.sort(key=lambda r: r[0].split("--", 1)[-1])
            width = max(len(n) for n, _ in rows) + 3
            lines += [f"  {n.ljust(width)}{h}".rstrip() for n, h in rows]
        return "\n".join(lines) + "\n"


class Group:
    """Commands under one name (``ketch image ...``), some imported on first use.

    ``lazy`` maps a command name to ``"module:attribute"``; several names may
    point at one command (docker's aliases: ``images`` and ``image ls``).
    """

    def __init__(self, name: str, *, help: str, usage: str = "COMMAND",
                 lazy: dict[str, str] | None = None, options: Sequence[Option] = (),
                 hidden_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.usage_line = usage
        self.lazy = dict(lazy or {})
        self.commands: dict[str, Command | Group] = {}
        self.options = tuple(options)
        self.hidden_names = set(hidden_names)
        self.hidden = False
        self.flags = FlagSet(self.options, interspersed=False)

    def add_command(self, cmd: Command | Group, name: str | None = None) -> None:
        self.commands[name or cmd.name] = cmd

    def names(self) -> list[str]:
        return sorted(set(self.lazy) | set(self.commands))

    def get(self, name: str) -> Command | Group | None:
        if name in self.commands:
            return self.commands[name]
        target = self.lazy.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        cmd: Command | Group = getattr(importlib.import_module(module), attr)
        return cmd

    def usage_text(self, path: str) -> str:
        return f"Usage:  {path} {self.usage_line}".rstrip()

    def help_text(self, path: str) -> str:
        lines = [self.usage_text(path), "", self.help]
        rows = []
        for name in self.names():
            if name in self.hidden_names:
                continue
            cmd = self.get(name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.help.splitlines()[0] if cmd.help else ""))
        if rows:
            lines += ["", "Commands:"]
            width = max(len(n) for n, _ in rows) + 3
            lines += [f"  {n.ljust(width)}{h}".rstrip() for n, h in rows]
        opts = [o for o in self.options if not o.hidden]
        if opts:
            lines += ["", "Options:"]
            for o in opts:
                spell = ", ".join(x for x in (f"-{o.short}" if o.short else "",
                                             f"--{o.long}" if o.long else "") if x)
                lines.append(f"  {spell}".ljust(28) + o.help)
        lines += ["", f"Run '{path} COMMAND --help' for more information on a command."]
        return "\n".join(lines) + "\n"

    def invoke(self, path: str, words: Sequence[str], session: Any) -> Any:
        parsed = _parse(self.flags, words, lambda: self.help_text(path))
        if parsed is None:
            return 0
        return self.dispatch(path, parsed.args, session)

    def dispatch(self, path: str, args: Sequence[str], session: Any) -> Any:
        """Run the command named by ``args[0]``; the group's help without one."""
        if not args:
            sys.stdout.write(self.help_text(path))
            return 0
        cmd = self.get(args[0])
        if cmd is None:
            raise UnknownCommand(f"{path} {args[0]}")
        # an alias is named by its command's name in messages (cobra's CommandPath):
        # the first of the command's names under this group (``network remove`` is
        # ``network rm``, ``container list`` is ``container ls``)
        name = args[0]
        if isinstance(cmd, Command):
            here = [a.rsplit(" ", 1)[1] for a in cmd.aliases if a.rsplit(" ", 1)[0] == path]
            if args[0] in here:
                name = here[0]
        return Invocation.run(cmd, f"{path} {name}", args[1:], session)


class UnknownCommand(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Invocation:
    """Which command is running, so a usage error is printed with its usage line."""

    current: tuple[Command | Group, str] | None = None

    @classmethod
    def run(cls, cmd: Command | Group, path: str, words: Sequence[str], session: Any) -> Any:
        cls.current = (cmd, path)
        return cmd.invoke(path, words, session)


def command(name: str, usage: str, help: str, *, nargs: tuple[int, int | None] = (0, 0),
            aliases: tuple[str, ...] = (), options: Sequence[Option] = (),
            interspersed: bool = True, help_short: bool = True
            ) -> Callable[[Callable[..., Any]], Command]:
    """``@command("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", "Create a tag ...",
    nargs=(2, 2))``; the callback receives the positional words as ``args``. Options come
    from ``options`` and then the ``@option`` decorators, in the order they are written."""

    def wrap(fn: Callable[..., Any]) -> Command:
        decorated = list(reversed(fn.__dict__.get("__ketch_options__", [])))
        return Command(name, fn, usage=usage, help=help, nargs=nargs, aliases=aliases,
                       options=(*options, *decorated), interspersed=interspersed,
                       help_short=help_short)

    return wrap


def format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return option("--format", "format_", metavar="string",
                  help="Format output using a custom template: 'table', "
                       "'table TEMPLATE', 'json', or a Go template")(fn)


def filter_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-f, --filter`` of the listing commands."""
    return option("-f", "--filter", "filters", metavar="filter", multiple=True,
                  help="Filter output based on conditions provided")(fn)


def prune_filter_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--filter`` of the prune commands, whose ``-f`` is ``--force``."""
    return option("--filter", "filters", metavar="filter", multiple=True,
                  help='Provide filter values (e.g. "until=<timestamp>")')(fn)


__all__ = ["Command", "Group", "Invocation", "UnknownCommand", "UsageFailure",
           "command", "filter_option", "format_option", "option", "pass_obj",
           "prune_filter_option"]
