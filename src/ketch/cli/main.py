"""``ketch``: the Docker-style CLI.

Commands are click commands in ``image_cmds`` and ``system_cmds``, loaded
only when run (``python -X importtime -m ketch.cli.main images``); they talk
to ketchd through ``ketch.client``. Errors and usage mistakes are printed
and numbered as the docker CLI does: daemon errors exit 1 with "Error
response from daemon: ...", unknown flags exit 125.
"""

from __future__ import annotations

import sys

from ketch import __version__

COMMANDS = {
    "version": "ketch.cli.system_cmds:version",
    "volume": "ketch.cli.volume_cmds:volume",
    "info": "ketch.cli.system_cmds:info",
    "system": "ketch.cli.system_cmds:system",
    "image": "ketch.cli.image_cmds:image",
    "images": "ketch.cli.image_cmds:ls",
    "history": "ketch.cli.image_cmds:history",
    "import": "ketch.cli.image_cmds:import_",
    "inspect": "ketch.cli.container_cmds:inspect_any",
    "load": "ketch.cli.image_cmds:load",
    "rmi": "ketch.cli.image_cmds:rm",
    "save": "ketch.cli.image_cmds:save",
    "tag": "ketch.cli.image_cmds:tag",
    "container": "ketch.cli.container_cmds:container",
    "attach": "ketch.cli.container_cmds:attach",
    "cp": "ketch.cli.container_cmds:cp",
    "create": "ketch.cli.container_cmds:create",
    "exec": "ketch.cli.container_cmds:exec_",
    "kill": "ketch.cli.container_cmds:kill",
    "logs": "ketch.cli.container_cmds:logs",
    "pause": "ketch.cli.container_cmds:pause",
    "port": "ketch.cli.container_cmds:port",
    "ps": "ketch.cli.container_cmds:ps",
    "rename": "ketch.cli.container_cmds:rename",
    "restart": "ketch.cli.container_cmds:restart",
    "rm": "ketch.cli.container_cmds:rm",
    "run": "ketch.cli.container_cmds:run",
    "start": "ketch.cli.container_cmds:start",
    "stats": "ketch.cli.container_cmds:stats",
    "stop": "ketch.cli.container_cmds:stop",
    "top": "ketch.cli.container_cmds:top",
    "unpause": "ketch.cli.container_cmds:unpause",
    "update": "ketch.cli.container_cmds:update",
    "wait": "ketch.cli.container_cmds:wait",
}


def _root():  # type: ignore[no-untyped-def]  # click's decorators are untyped at runtime
    import click

    from ketch.cli.command import LazyGroup
    from ketch.cli.session import Session

    @click.group("ketch", cls=LazyGroup, lazy=COMMANDS, usage="[OPTIONS] COMMAND",
                 help="A self-sufficient runtime for containers",
                 invoke_without_command=True)
    @click.option("-H", "--host", "host", metavar="list",
                  help="Daemon socket to connect to (default: $KETCH_HOST, $DOCKER_HOST, "
                       "else unix:///run/ketch/ketch.sock)")
    @click.option("-D", "--debug", is_flag=True, help="Enable debug mode")
    @click.option("-v", "--version", "show_version", is_flag=True,
                  help="Print version information and quit")
    @click.pass_context
    def root(ctx: click.Context, host: str | None, debug: bool, show_version: bool) -> int:
        if show_version:
            click.echo(f"ketch version {__version__}")
            ctx.exit(0)
        if ctx.invoked_subcommand is None:
            click.echo(ctx.get_help(), nl=False)
            ctx.exit(0)
        ctx.obj = Session(host, debug)
        return 0

    return root


def _usage_tail(ctx: object) -> str:
    from ketch.cli.command import DockerCommand

    cmd = getattr(ctx, "command", None)
    path = getattr(ctx, "command_path", "ketch")
    if isinstance(cmd, DockerCommand):
        usage = cmd.usage_text(ctx)  # type: ignore[arg-type]
    else:
        usage = f"Usage:  {path} [OPTIONS] COMMAND"
    return f"\n\n{usage}\n\nRun '{path} --help' for more information"


def _usage_error(exc: Exception) -> tuple[str, int]:
    """click's usage errors in docker's words, with docker's exit codes."""
    import click

    from ketch.cli.command import UsageFailure

    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, UsageFailure):
        return exc.message + _usage_tail(ctx), exc.status
    if isinstance(exc, click.NoSuchOption):
        name = exc.option_name
        if name.startswith("--") or len(name) == 2:
            what = f"unknown flag: {name}" if name.startswith("--") else \
                f"unknown shorthand flag: '{name[1:]}' in {name}"
        else:
            what = f"unknown flag: {name}"
        return what + _usage_tail(ctx), 125
    if isinstance(exc, click.BadOptionUsage) and "requires an argument" in exc.message:
        return f"flag needs an argument: {exc.option_name}" + _usage_tail(ctx), 125
    if isinstance(exc, click.UsageError):
        return exc.format_message() + _usage_tail(ctx), 125
    return str(exc), 125


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"]):
        sys.stdout.write(f"ketch version {__version__}\n")
        return 0
    import click

    from ketch.cli.session import error_text
    from ketch.errors import KetchError

    try:
        rv = _root().main(args, prog_name="ketch", standalone_mode=False)
    except click.UsageError as exc:
        text, code = _usage_error(exc)
        sys.stderr.write(text + "\n")
        return code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return 130
    except KetchError as exc:
        sys.stderr.write(error_text(exc) + "\n")
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ketch images | head`: the reader left; say nothing, as docker does.
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - keep Python's exit flush quiet
        except OSError:
            pass
        return 141
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
