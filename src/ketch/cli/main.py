"""``ketch``: the Docker-style CLI.

Commands are declared in ``image_cmds``, ``container_cmds``, ``system_cmds`` and
``volume_cmds`` (``ketch.cli.command``), loaded only when run (``python -X importtime -m ketch.cli.main images``); they talk
to ketchd through ``ketch.client``. Errors and usage mistakes are printed
and numbered as the docker CLI does: daemon errors exit 1 with "Error
response from daemon: ...", unknown flags exit 125.
"""

from __future__ import annotations

import os
import sys

from ketch import __version__

TYPE_CHECKING = False     # typing costs the CLI's start-up; see ketch.cli.flags
if TYPE_CHECKING:
    from ketch.cli.command import Group

COMMANDS = {
    "version": "ketch.cli.system_cmds:version",
    "volume": "ketch.cli.volume_cmds:volume",
    "network": "ketch.cli.network_cmds:network",
    "registry": "ketch.cli.registry_cmds:registry",
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
    "commit": "ketch.cli.filesystem_cmds:commit",
    "create": "ketch.cli.container_cmds:create",
    "diff": "ketch.cli.filesystem_cmds:diff",
    "events": "ketch.cli.system_cmds:events",
    "export": "ketch.cli.filesystem_cmds:export",
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
    "pull": "ketch.cli.registry_client_cmds:pull",
    "push": "ketch.cli.registry_client_cmds:push",
    "login": "ketch.cli.registry_client_cmds:login",
    "logout": "ketch.cli.registry_client_cmds:logout",
    "search": "ketch.cli.registry_client_cmds:search",
    "build": "ketch.cli.build_cmds:build",
    "builder": "ketch.cli.build_cmds:builder",
    "compose": "ketch.cli.compose_cmds:compose",
}


def _root() -> Group:
    from ketch.cli.command import Group
    from ketch.cli.flags import BOOL, Option

    return Group("ketch", help="A self-sufficient runtime for containers",
                 usage="[OPTIONS] COMMAND", lazy=COMMANDS, options=(
                     Option("config", "config", metavar="string",
                            help="Location of client config files (default: $KETCH_CONFIG, "
                                 "$DOCKER_CONFIG, else ~/.docker)"),
                     Option("host", "host", "H", metavar="list",
                            help="Daemon socket to connect to (default: $KETCH_HOST, "
                                 "$DOCKER_HOST, else unix:///run/ketch/ketch.sock)"),
                     Option("debug", "debug", "D", BOOL, False, help="Enable debug mode"),
                     Option("show_version", "version", "v", BOOL, False,
                            help="Print version information and quit")))


def _usage_tail(hint: str = "Run") -> str:
    from ketch.cli.command import Group, Invocation

    cmd, path = Invocation.current or (None, "ketch")
    if cmd is None:
        usage = f"Usage:  {path} [OPTIONS] COMMAND"
    elif isinstance(cmd, Group) and path != "ketch":
        usage = f"Usage:  {path}"       # docker names a group bare in its errors
    else:
        usage = cmd.usage_text(path)
    return f"\n\n{usage}\n\n{hint} '{path} --help' for more information"


def _dispatch(args: list[str]) -> int:
    from ketch.cli.command import Invocation, UsageFailure
    from ketch.cli.flags import FlagError, HelpRequested
    from ketch.cli.session import Session

    root = _root()
    Invocation.current = (root, "ketch")
    try:
        parsed = root.flags.parse(args)
    except HelpRequested:
        sys.stdout.write(root.help_text("ketch"))
        return 0
    except FlagError as exc:
        raise UsageFailure(str(exc), 125) from None
    if parsed.values["show_version"]:
        sys.stdout.write(f"ketch version {__version__}\n")
        return 0
    session = Session(parsed.values["host"], parsed.values["debug"], parsed.values["config"])
    rv = root.dispatch("ketch", parsed.args, session)
    return rv if isinstance(rv, int) else 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"]):
        sys.stdout.write(f"ketch version {__version__}\n")
        return 0
    from ketch.cli.command import Invocation, UnknownCommand, UsageFailure
    from ketch.cli.session import error_text
    from ketch.errors import KetchError

    try:
        return _dispatch(args)
    except UsageFailure as exc:
        sys.stderr.write(exc.message + _usage_tail(exc.hint) + "\n")
        return exc.status
    except UnknownCommand as exc:
        # docker 28's words; a group's own usage line when the unknown name is under one.
        cur = Invocation.current
        usage = ""
        if cur is not None and cur[1] != "ketch":
            usage = f"\n\nUsage:  {cur[1]}"
        sys.stderr.write(f"ketch: unknown command: {exc.path}{usage}\n\n"
                         f"Run '{exc.path.rsplit(' ', 1)[0]} --help' for more information\n")
        return 1
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


def entry() -> None:
    """The ``ketch`` command: ``main``, then out without the interpreter's teardown
    (finalizing every loaded module and a last garbage collection: 4-5 ms of a
    ``ketch run``, measured). Everything a command writes goes through stdout and
    stderr, flushed here; files it opens are closed by their ``with`` blocks."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or 141
    except OSError:
        pass
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
