"""click, made to look and fail like the docker CLI.

Users know docker's help layout, its usage errors and their exit codes
(unknown flag: 125; wrong number of arguments: 1), and scripts depend on
them, so commands are declared with docker's usage line and argument counts,
and the help is laid out as docker lays it out. Subcommands are imported only
when they are run: the CLI's start-up pays for the one command it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

# Global options are spelled as docker spells them.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UsageFailure(click.UsageError):
    """A usage error worded and numbered as docker's (``exit_code`` 1 or 125)."""

    def __init__(self, message: str, ctx: click.Context | None, exit_code: int) -> None:
        super().__init__(message, ctx)
        self.status = exit_code


def _plural(n: int) -> str:
    return f"{n} argument" + ("" if n == 1 else "s")


class DockerCommand(click.Command):
    """A command with docker's usage line, argument count check and help layout."""

    def __init__(self, *args: Any, usage: str = "", nargs: tuple[int, int | None] = (0, 0),
                 aliases: tuple[str, ...] = (), **kw: Any) -> None:
        kw.setdefault("context_settings", CONTEXT)
        super().__init__(*args, **kw)
        self.usage_line = usage
        self.nargs = nargs
        self.aliases = aliases

    def usage_text(self, ctx: click.Context) -> str:
        return f"Usage:  {ctx.command_path} {self.usage_line}".rstrip()

    def check_args(self, ctx: click.Context, args: tuple[str, ...]) -> None:
        lo, hi = self.nargs
        n = len(args)
        if lo <= n and (hi is None or n <= hi):
            return
        if hi is None:
            want = f"at least {_plural(lo)}"
        elif lo == hi:
            want = _plural(lo) if lo else "no arguments"
        elif n > hi:
            want = f"at most {_plural(hi)}"
        else:
            want = f"at least {_plural(lo)}"
        raise UsageFailure(f"ketch: '{ctx.command_path}' requires {want}", ctx, 1)

    def invoke(self, ctx: click.Context) -> Any:
        self.check_args(ctx, tuple(ctx.params.get("args", ())))
        return super().invoke(ctx)

    def get_help(self, ctx: click.Context) -> str:
        lines = [self.usage_text(ctx), "", self.help or ""]
        if self.aliases:
            lines += ["", "Aliases:", "  " + ", ".join(self.aliases)]
        opts = [p for p in self.get_params(ctx) if isinstance(p, click.Option)]
        if opts:
            lines += ["", "Options:"]
            rows = []
            for p in opts:
                shorts = [o for o in p.opts if not o.startswith("--")]
                longs = [o for o in p.opts if o.startswith("--")]
                name = (shorts[0] + ", " if shorts else "    ") + (longs[0] if longs else "")
                if not p.is_flag:
                    name += f" {p.metavar or p.type.name}"
                rows.append((name, p.help or ""))
            width = max(len(n) for n, _ in rows) + 3
            lines += [f"  {n.ljust(width)}{h}".rstrip() for n, h in rows]
        return "\n".join(lines) + "\n"


class LazyGroup(click.Group):
    """A group whose commands live in modules imported on first use.

    ``lazy`` maps a command name to ``"module:attribute"``; several names may
    point at one command (docker's aliases: ``images`` and ``image ls``).
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None,
                 usage: str = "", hidden_names: tuple[str, ...] = (), **kw: Any) -> None:
        kw.setdefault("context_settings", CONTEXT)
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})
        self.usage_line = usage
        self.hidden_names = set(hidden_names)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.lazy) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = self.lazy.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        cmd: click.Command = getattr(importlib.import_module(module), attr)
        return cmd

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        cmd = self.get_command(ctx, name)
        if cmd is None and not ctx.resilient_parsing:
            if name.startswith("-"):
                raise UsageFailure(f"unknown flag: {name}", ctx, 125)
            raise UsageFailure(f"ketch: '{name}' is not a ketch command.", ctx, 1)
        return name, cmd, args[1:]

    def get_help(self, ctx: click.Context) -> str:
        lines = [f"Usage:  {ctx.command_path} {self.usage_line or '[OPTIONS] COMMAND'}", "",
                 self.help or ""]
        rows = []
        for name in self.list_commands(ctx):
            if name in self.hidden_names:
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, (cmd.help or "").splitlines()[0] if cmd.help else ""))
        if rows:
            lines += ["", "Commands:"]
            width = max(len(n) for n, _ in rows) + 3
            lines += [f"  {n.ljust(width)}{h}".rstrip() for n, h in rows]
        opts = [p for p in self.get_params(ctx) if isinstance(p, click.Option)]
        if opts:
            lines += ["", "Options:"]
            for p in opts:
                lines.append(f"  {', '.join(p.opts)}".ljust(28) + (p.help or ""))
        lines += ["", f"Run '{ctx.command_path} COMMAND --help' for more information on a command."]
        return "\n".join(lines) + "\n"


def command(name: str, usage: str, help: str, *, nargs: tuple[int, int | None] = (0, 0),
            aliases: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], DockerCommand]:
    """``@command("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", "Create a tag ...",
    nargs=(2, 2))``; the callback receives the positional words as ``args``."""

    def wrap(fn: Callable[..., Any]) -> DockerCommand:
        fn = click.argument("args", nargs=-1, metavar="")(fn)
        cmd = click.command(name, cls=DockerCommand, help=help, usage=usage, nargs=nargs,
                            aliases=aliases, add_help_option=True)(fn)
        assert isinstance(cmd, DockerCommand)
        return cmd

    return wrap


def format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--format", "format_", metavar="string", default=None,
                        help="Format output using a custom template: 'table', "
                             "'table TEMPLATE', 'json', or a Go template")(fn)


def filter_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-f, --filter`` of the listing commands."""
    return click.option("-f", "--filter", "filters", metavar="filter", multiple=True,
                        help="Filter output based on conditions provided")(fn)


def prune_filter_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--filter`` of the prune commands, whose ``-f`` is ``--force``."""
    return click.option("--filter", "filters", metavar="filter", multiple=True,
                        help='Provide filter values (e.g. "until=<timestamp>")')(fn)
