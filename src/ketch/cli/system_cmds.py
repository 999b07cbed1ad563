"""``ketch version``, ``ketch info`` and ``ketch system df|prune|check|info``."""

from __future__ import annotations

import sys
from typing import Any

from ketch import __version__
from ketch.cli.command import (
    Group,
    command,
    format_option,
    option,
    pass_obj,
    prune_filter_option,
)
from ketch.cli.session import Session, local, parse_filters
from ketch.errors import InvalidArgument

GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


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


def _one(fmt: str, obj: dict[str, Any], *, name: str = "", parse_exit_code: int = 1,
         align: bool = False) -> str:
    """``version``/``info --format``: the template over one object (or its JSON).

    A failure part way prints what came before it, then Go's error as it is.
    """
    from ketch.cli.formatting import TemplateError, format_object, tabwrite

    text, error = format_object(fmt, obj, name=name, parse_exit_code=parse_exit_code)
    if align:
        text = tabwrite(text, 20, 1, 1)
    if error is not None:
        sys.stdout.write(text)
        raise TemplateError(error, prefix="")
    return text


def client_version() -> dict[str, Any]:
    import platform

    from ketch.client import CLIENT_API_VERSION

    machine = platform.machine()
    return {"Version": __version__, "ApiVersion": CLIENT_API_VERSION,
            "PythonVersion": f"{platform.python_implementation()} {platform.python_version()}",
            "OsArch": f"{sys.platform}/{GOARCH.get(machine, machine)}"}


@command("version", "[OPTIONS]", "Show the ketch version information")
@format_option
@pass_obj
def version(session: Session, args: tuple[str, ...], format_: str | None) -> int:
    from ketch.cli.session import error_text
    from ketch.errors import KetchError

    client = client_version()
    try:
        server: dict[str, Any] | None = session.connect().version()
        err = None
    except KetchError as exc:
        server, err = None, exc
    if format_:
        sys.stdout.write(_one(format_, {"Client": client, "Server": server}, name="version",
                              align=True))
    else:
        sys.stdout.write(format_version(client, server))
    if err is not None:
        sys.stderr.write(error_text(err) + "\n")
        return 1
    return 0


def _info(session: Session, format_: str | None) -> int:
    info = session.connect().info()
    if format_:
        sys.stdout.write(_one(format_, info, parse_exit_code=64))
        return 0
    sys.stdout.write(f"Client:\n Version: {__version__}\n\n")
    sys.stdout.write(format_info(info))
    for w in info.get("Warnings") or []:
        sys.stderr.write(f"{w}\n")
    return 0


@command("info", "[OPTIONS]", "Display system-wide information")
@format_option
@pass_obj
def info(session: Session, args: tuple[str, ...], format_: str | None) -> int:
    return _info(session, format_)


@command("info", "[OPTIONS]", "Display system-wide information")
@format_option
@pass_obj
def system_info(session: Session, args: tuple[str, ...], format_: str | None) -> int:
    return _info(session, format_)


@command("df", "[OPTIONS]", "Show docker disk usage")
@format_option
@option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage")
@pass_obj
def df(session: Session, args: tuple[str, ...], format_: str | None, verbose: bool) -> int:
    from ketch.cli import views

    data = session.connect().df()
    sys.stdout.write(views.system_df_output(data, format_, verbose=verbose))
    return 0


PRUNE_WARNING = """WARNING! This will remove:
  - all stopped containers
  - all networks not used by at least one container
{volumes}  - {images}
  - all build cache

Are you sure you want to continue? [y/N] """


@command("events", "[OPTIONS]", "Get real time events from the server",
         aliases=("ketch system events", "ketch events"))
@option("-f", "--filter", "filters", metavar="filter", multiple=True,
        help="Filter output based on conditions provided")
@option("--format", "format_", metavar="string",
        help="Format output using a custom template: 'json', or a Go template")
@option("--since", metavar="string", default="", help="Show all events created since timestamp")
@option("--until", metavar="string", default="", help="Stream events until this timestamp")
@pass_obj
def events(session: Session, args: tuple[str, ...], filters: tuple[str, ...],
           format_: str | None, since: str, until: str) -> int:
    from ketch.cli.container_cmds import go_timestamp
    from ketch.cli.formatting import TemplateError, go_json, parse

    raw_json = format_ in ("json", "{{json .}}")
    tmpl = None
    if format_ and not raw_json:
        try:
            tmpl = parse(format_)
            tmpl.execute(event_struct({}))   # docker checks it on an empty message first
        except TemplateError as exc:
            raise _exit(local(InvalidArgument(f"Error parsing format: {exc.go_message}")), 64) \
                from None
    flt = parse_filters(filters)
    stream = session.connect().events(since=go_timestamp(since), until=go_timestamp(until),
                                      filters=flt)
    try:
        for msg in stream:
            if raw_json:
                line = go_json(msg)           # the daemon's own JSON, key order and all
            elif tmpl is not None:
                try:
                    line = tmpl.execute(event_struct(msg))
                except TemplateError as exc:
                    raise local(InvalidArgument(exc.go_message)) from None
            else:
                line = pretty_event(msg)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    return 0


def _exit(exc: Any, code: int) -> Any:
    exc.exit_code = code
    return exc


def rfc3339_nano_fixed(time_nano: int) -> str:
    """Go's time.Unix(0, n).Format("2006-01-02T15:04:05.000000000Z07:00"), local time."""
    import time

    from ketch.cli.formatting import go_zone

    secs, nanos = divmod(time_nano, 1_000_000_000)
    t = time.localtime(secs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{nanos:09d}" + go_zone(t.tm_gmtoff or 0)


def pretty_event(msg: dict[str, Any]) -> str:
    """The docker CLI's event line: time, type, action, actor id, sorted attributes."""
    parts = []
    if msg.get("timeNano"):
        parts.append(rfc3339_nano_fixed(int(msg["timeNano"])) + " ")
    elif msg.get("time"):
        parts.append(rfc3339_nano_fixed(int(msg["time"]) * 1_000_000_000) + " ")
    actor = msg.get("Actor") or {}
    parts.append(f"{msg.get('Type', '')} {msg.get('Action', '')} {actor.get('ID', '')}")
    attrs = actor.get("Attributes") or {}
    if attrs:
        parts.append(" (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")")
    return "".join(parts)


def event_struct(msg: dict[str, Any]) -> Any:
    """An events.Message as templates see it: Go's field names (``{{.Actor.ID}}``)."""
    from ketch.cli.formatting import Struct

    actor = msg.get("Actor") or {}
    return Struct("*events.Message", {
        "Status": msg.get("status", ""), "ID": msg.get("id", ""), "From": msg.get("from", ""),
        "Type": msg.get("Type", ""), "Action": msg.get("Action", ""),
        "Actor": Struct("events.Actor", {"ID": actor.get("ID", ""),
                                         "Attributes": dict(actor.get("Attributes") or {})},
                        marshal=False),
        "Scope": msg.get("scope", ""), "Time": int(msg.get("time") or 0),
        "TimeNano": int(msg.get("timeNano") or 0)}, marshal=False)


def confirm(prompt: str) -> bool:
    """docker's prompt: only "y"/"Y" (after trimming) says yes; no terminal input says no."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    return line.strip().lower() == "y"


@command("prune", "[OPTIONS]", "Remove unused data")
@option("-a", "--all", "all_", is_flag=True,
        help="Remove all unused images not just dangling ones")
@prune_filter_option
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@option("--volumes", is_flag=True, help="Prune anonymous volumes")
@pass_obj
def prune(session: Session, args: tuple[str, ...], all_: bool, filters: tuple[str, ...],
          force: bool, volumes: bool) -> int:
    from ketch.cli.formatting import human_size

    flt = parse_filters(filters)
    if not force:
        text = PRUNE_WARNING.format(
            volumes="  - all anonymous volumes not used by at least one container\n"
            if volumes else "",
            images="all images without at least one container associated to them"
            if all_ else "all dangling images")
        if not confirm(text):
            return 0
    client = session.connect()
    reclaimed = 0
    kinds = ["containers", "networks"] + (["volumes"] if volumes else [])
    titles = {"containers": ("Deleted Containers:", "ContainersDeleted"),
              "networks": ("Deleted Networks:", "NetworksDeleted"),
              "volumes": ("Deleted Volumes:", "VolumesDeleted")}
    for kind in kinds:
        report = client.prune(kind, flt)
        title, key = titles[kind]
        names = report.get(key) or []
        if names:
            sys.stdout.write(title + "\n" + "".join(f"{n}\n" for n in names) + "\n")
        reclaimed += int(report.get("SpaceReclaimed") or 0)
    img_filters = dict(flt)
    img_filters["dangling"] = ["false" if all_ else "true"]
    report = client.images_prune(img_filters)
    from ketch.cli.image_cmds import print_deleted_images

    print_deleted_images(report)
    reclaimed += int(report.get("SpaceReclaimed") or 0)
    build = client.prune("build", flt)
    cache = build.get("CachesDeleted") or []
    if cache:
        sys.stdout.write("Deleted build cache objects:\n" + "".join(f"{c}\n" for c in cache)
                         + "\n")
    reclaimed += int(build.get("SpaceReclaimed") or 0)
    sys.stdout.write(f"Total reclaimed space: {human_size(reclaimed)}\n")
    return 0


@command("check", "[OPTIONS]",
         "Check the image store for damage (a store fsck; works without the daemon)")
@option("--root", metavar="string", default=None,
        help="The daemon's data root (default $KETCH_ROOT, else /var/lib/ketch)")
@option("--quick", is_flag=True, help="Do not re-hash every blob")
def check(args: tuple[str, ...], root: str | None, quick: bool) -> int:
    from ketch.cli.autostart import Place
    from ketch.errors import InvalidArgument
    from ketch.image.check import check_store

    root = root or Place.from_env().root
    import os

    if not os.path.isdir(root):
        raise local(InvalidArgument(f"no ketch data root at {root}"))
    store = os.path.join(root, "image")
    if not os.path.isdir(store):
        raise local(InvalidArgument(f"no image store at {store}"))
    problems = check_store(store, quick=quick)
    for p in problems:
        sys.stdout.write(f"{p}\n")
    if problems:
        sys.stderr.write(f"{len(problems)} problem(s) found in {root}\n")
        return 1
    sys.stdout.write(f"no problems found in {root}\n")
    return 0


@command("reset", "[OPTIONS]",
         "Stop a ketchd and remove everything it made: containers, mounts, network, "
         "cgroups, its data (works without the daemon)")
@option("--root", metavar="string", default=None,
        help="The daemon's data root (default $KETCH_ROOT, else /var/lib/ketch)")
@option("--exec-root", metavar="string", default=None,
        help="The daemon's exec root (default $KETCH_EXEC_ROOT, else /run/ketch)")
@option("--cgroup-parent", metavar="string", default="/ketch",
        help="The containers' cgroup parent the daemon used (default /ketch)")
@option("-p", "--pidfile", metavar="string", default=None,
        help="The daemon's pidfile (default <exec-root>/ketchd.pid)")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
def reset(args: tuple[str, ...], root: str | None, exec_root: str | None,
          cgroup_parent: str, pidfile: str | None, force: bool) -> int:
    from ketch.cli.autostart import Place
    from ketch.daemon.reset import reset as do_reset

    place = Place.from_env()
    root, exec_root = root or place.root, exec_root or place.exec_root
    if not force and not confirm(
            f"WARNING! This stops the ketchd of {root} and removes all its containers, "
            f"images, volumes and data.\nAre you sure you want to continue? [y/N] "):
        return 0
    # The cgroup auto-start put the daemon in, when this is the auto-started daemon's place.
    daemon_cgroup = place.cgroup if (root, exec_root) == (place.root, place.exec_root) else None
    rep = do_reset(root, exec_root, pidfile=pidfile, cgroup_parent=cgroup_parent,
                   daemon_cgroup=daemon_cgroup)
    for what, items in (("stopped", rep.stopped), ("removed container", rep.containers),
                        ("removed", rep.network), ("unmounted", rep.mounts)):
        for item in items:
            sys.stdout.write(f"{what} {item}\n")
    for err in rep.errors:
        sys.stderr.write(f"{err}\n")
    return 1 if rep.errors else 0


system = Group("system", help="Manage ketch", usage="COMMAND", lazy={})
for _cmd in (df, prune, check, reset, events):
    system.add_command(_cmd)
system.add_command(system_info, "info")
