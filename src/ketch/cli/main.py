"""``ketch``: the Docker-style CLI.

Only ``version`` and ``info`` exist so far; they go through ``ketch.client``
to ketchd. Every other command says plainly that it is not available yet.
Arguments are parsed by hand here, not with click, so these two commands
start with the stdlib only (``python -X importtime -m ketch.cli.main version``);
click arrives with the commands that need its richer parsing.

Starting ketchd automatically when the default socket has no daemon is not
done yet: ``ketch`` tells the user to start it.
"""

from __future__ import annotations

import sys
from typing import Any

from ketch import __version__

USAGE = """Usage:  ketch [OPTIONS] COMMAND

Options:
  -H, --host string   Daemon socket to connect to (default: $KETCH_HOST, $DOCKER_HOST,
                      else unix:///run/ketch/ketch.sock)
  -v, --version       Print version information and quit

Commands:
  version     Show the ketch version information
  info        Display system-wide information
"""

GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def _parse(args: list[str]) -> tuple[str | None, list[str]]:
    """Global options before the command (``-H``/``--host``), then the command words."""
    host = None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-H", "--host"):
            if i + 1 >= len(args):
                raise SystemExit(_fail(f"flag needs an argument: {a}", 125))
            host = args[i + 1]
            i += 2
        elif a.startswith("--host="):
            host = a.split("=", 1)[1]
            i += 1
        elif a.startswith("-H") and len(a) > 2:
            host = a[2:]
            i += 1
        else:
            break
    return host, args[i:]


def _fail(message: str, code: int = 1) -> int:
    sys.stderr.write(message.rstrip("\n") + "\n")
    return code


def bytes_size(n: float) -> str:
    """docker's units.BytesSize: binary units, 4 significant digits ("23.54GiB")."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


def _rows(rows: list[tuple[str, Any]], indent: str, width: int) -> list[str]:
    return [f"{indent}{(k + ':').ljust(width)}{v}" for k, v in rows]


def format_version(client: dict[str, Any], server: dict[str, Any] | None) -> str:
    """Client and Server sections laid out as ``docker version`` lays them out."""
    lines = ["Client:"]
    lines += _rows([("Version", client["Version"]), ("API version", client["ApiVersion"]),
                    ("Python version", client["PythonVersion"]),
                    ("OS/Arch", client["OsArch"])], " ", 19)
    if server is not None:
        lines += ["", f"Server: {server.get('Platform', {}).get('Name', '')}".rstrip()]
        for comp in server.get("Components") or []:
            d = comp.get("Details") or {}
            lines.append(f" {comp.get('Name', '')}:")
            rows: list[tuple[str, Any]] = [("Version", comp.get("Version", ""))]
            if comp.get("Name") == "Engine":
                rows += [
                    ("API version",
                     f"{d.get('ApiVersion', '')} (minimum version {d.get('MinAPIVersion', '')})"),
                    ("Go version", d.get("GoVersion", "")),
                    ("Git commit", d.get("GitCommit", "")),
                    ("Built", d.get("BuildTime", "")),
                    ("OS/Arch", f"{d.get('Os', '')}/{d.get('Arch', '')}"),
                    ("Experimental", d.get("Experimental", "false")),
                ]
            lines += _rows(rows, "  ", 18)
    return "\n".join(lines) + "\n"


def format_info(info: dict[str, Any]) -> str:
    """A short summary of ``/info``, in ``docker info``'s words and order."""
    rows: list[tuple[str, Any]] = [
        ("Containers", info.get("Containers", 0)),
        (" Running", info.get("ContainersRunning", 0)),
        (" Paused", info.get("ContainersPaused", 0)),
        (" Stopped", info.get("ContainersStopped", 0)),
        ("Images", info.get("Images", 0)),
        ("Server Version", info.get("ServerVersion", "")),
        ("Storage Driver", info.get("Driver", "")),
        ("Cgroup Driver", info.get("CgroupDriver", "")),
        ("Cgroup Version", info.get("CgroupVersion", "")),
        ("Default Runtime", info.get("DefaultRuntime", "")),
        ("Kernel Version", info.get("KernelVersion", "")),
        ("Operating System", info.get("OperatingSystem", "")),
        ("OSType", info.get("OSType", "")),
        ("Architecture", info.get("Architecture", "")),
        ("CPUs", info.get("NCPU", 0)),
        ("Total Memory", bytes_size(info.get("MemTotal", 0))),
        ("Name", info.get("Name", "")),
        ("ID", info.get("ID", "")),
        ("Root Dir", info.get("DockerRootDir", "")),
        ("Debug Mode", str(bool(info.get("Debug", False))).lower()),
    ]
    lines = ["Server:"] + [f" {k}: {v}" for k, v in rows]
    labels = info.get("Labels") or []
    if labels:
        lines.append(" Labels:")
        lines += [f"  {label}" for label in labels]
    return "\n".join(lines) + "\n"


def _client_version() -> dict[str, Any]:
    import platform

    from ketch.client import CLIENT_API_VERSION

    machine = platform.machine()
    return {"Version": __version__, "ApiVersion": CLIENT_API_VERSION,
            "PythonVersion": f"{platform.python_implementation()} {platform.python_version()}",
            "OsArch": f"{sys.platform}/{GOARCH.get(machine, machine)}"}


def _error_text(exc: Exception) -> str:
    from ketch.errors import Unavailable

    if isinstance(exc, Unavailable):
        return str(exc)
    return f"Error response from daemon: {exc}"


def cmd_version(host: str | None) -> int:
    from ketch.client import Client
    from ketch.errors import KetchError

    client = _client_version()
    try:
        server = Client(host).version()
    except KetchError as exc:
        sys.stdout.write(format_version(client, None))
        return _fail(_error_text(exc))
    sys.stdout.write(format_version(client, server))
    return 0


def cmd_info(host: str | None) -> int:
    from ketch.client import Client
    from ketch.errors import KetchError

    sys.stdout.write(f"Client:\n Version: {__version__}\n\n")
    try:
        info = Client(host).info()
    except KetchError as exc:
        return _fail(_error_text(exc))
    sys.stdout.write(format_info(info))
    for w in info.get("Warnings") or []:
        sys.stderr.write(f"{w}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"]):
        print(f"ketch version {__version__}")
        return 0
    if args in (["--help"], ["-h"], ["help"], []):
        sys.stdout.write(USAGE)
        return 0
    host, rest = _parse(args)
    if not rest:
        sys.stdout.write(USAGE)
        return 0
    command, extra = rest[0], rest[1:]
    if command in ("version", "info"):
        if extra in (["--help"], ["-h"]):
            sys.stdout.write(f"Usage:  ketch {command}\n")
            return 0
        if extra:
            return _fail(f'"ketch {command}" accepts no arguments yet: {" ".join(extra)}', 125)
        return cmd_version(host) if command == "version" else cmd_info(host)
    return _fail(f"ketch: '{command}' is not available yet in this version of ketch; "
                 "only 'ketch version' and 'ketch info' talk to ketchd so far "
                 "(use ketch-runc to run containers)")


if __name__ == "__main__":
    sys.exit(main())
