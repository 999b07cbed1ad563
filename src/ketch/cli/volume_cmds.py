"""``ketch volume create|ls|inspect|rm|prune``: docker's volume commands, flags and output.

The work is ketchd's (``/volumes`` of the Engine API); these commands parse
flags as the docker CLI does, print what it prints, and exit as it exits.
The volume calls go through the client's plumbing (``_json``/``_send``)
until ``ketch.client.Client`` has volume methods of its own.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ketch.cli.command import Group, command, filter_option, format_option, option, pass_obj
from ketch.cli.session import Session, local, parse_filters
from ketch.errors import InvalidArgument, KetchError

if TYPE_CHECKING:
    from ketch.client import Client

UNUSED_WARNING = ("WARNING! This will remove anonymous local volumes not used by at least "
                  "one container.\nAre you sure you want to continue? [y/N] ")
ALL_WARNING = ("WARNING! This will remove all local volumes not used by at least one "
               "container.\nAre you sure you want to continue? [y/N] ")


def _path(name: str) -> str:
    return "/volumes/" + quote(name, safe="")


def _query(**params: Any) -> str:
    from ketch.client._client import _query as encode

    return encode(params)


def _older(version: str, than: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".") if p.isdigit())

    return key(version) < key(than)


def _kv(words: tuple[str, ...]) -> dict[str, str]:
    """docker's ConvertKVStringsToMap / MapOpts: "k=v" -> {k: v}, "k" -> {k: ""}."""
    out: dict[str, str] = {}
    for w in words:
        key, _, value = w.partition("=")
        out[key] = value
    return out


# --- create ---------------------------------------------------------------------------------


@command("create", "[OPTIONS] [VOLUME]", "Create a volume", nargs=(0, 1))
@option("-d", "--driver", metavar="string", default="local",
        help='Specify volume driver name (default "local")')
@option("--label", "labels", metavar="list", multiple=True,
        help="Set metadata for a volume")
@option("-o", "--opt", "opts", metavar="map", multiple=True,
        help="Set driver specific options (default map[])")
@option("--name", metavar="string", default="", hidden=True,
        help="Specify volume name")
@pass_obj
def create(session: Session, args: tuple[str, ...], driver: str, labels: tuple[str, ...],
           opts: tuple[str, ...], name: str) -> int:
    if args:
        if name and name != args[0]:
            raise local(InvalidArgument("conflicting options: cannot specify a volume-name "
                                        "through both --name and as a positional arg"))
        name = args[0]
    body = {"Name": name, "Driver": driver, "DriverOpts": _kv(opts), "Labels": _kv(labels)}
    v = session.connect()._json("POST", "/volumes/create", body)
    sys.stdout.write(f"{v.get('Name', '')}\n")
    return 0


# --- ls -------------------------------------------------------------------------------------


@command("ls", "[OPTIONS]", "List volumes", aliases=("ketch volume ls", "ketch volume list"))
@filter_option
@format_option
@option("-q", "--quiet", is_flag=True, help="Only display volume names")
@pass_obj
def ls(session: Session, args: tuple[str, ...], filters: tuple[str, ...],
       format_: str | None, quiet: bool) -> int:
    from ketch.cli import views

    flt = parse_filters(filters)
    doc = session.connect()._json("GET", "/volumes" + _query(filters=flt))
    sys.stdout.write(views.volumes_output(doc.get("Volumes") or [], format_, quiet=quiet))
    for w in doc.get("Warnings") or []:
        sys.stderr.write(f"{w}\n")
    return 0


# --- inspect --------------------------------------------------------------------------------


@command("inspect", "[OPTIONS] VOLUME [VOLUME...]",
         "Display detailed information on one or more volumes", nargs=(1, None))
@option("-f", "--format", "format_", metavar="string",
        help="Format output using a custom template: 'json', or a Go template")
@pass_obj
def inspect(session: Session, args: tuple[str, ...], format_: str | None) -> int:
    from ketch.cli.formatting import check_inspect_format, inspect_format

    check_inspect_format(format_)
    client = session.connect()
    found: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in args:
        try:
            found.append(client._json("GET", _path(name)))
        except KetchError as exc:
            errors.append(f"Error response from daemon: {exc}")
    text, failed = inspect_format(format_, found)
    sys.stdout.write(text)
    errors = failed + errors
    if errors:
        sys.stderr.write("\n".join(errors) + "\n")
        return 1
    return 0


# --- rm -------------------------------------------------------------------------------------


@command("rm", "[OPTIONS] VOLUME [VOLUME...]", "Remove one or more volumes", nargs=(1, None),
         aliases=("ketch volume rm", "ketch volume remove"))
@option("-f", "--force", is_flag=True, help="Force the removal of one or more volumes")
@pass_obj
def rm(session: Session, args: tuple[str, ...], force: bool) -> int:
    from ketch.cli.session import error_text

    client = session.connect()
    errors: list[str] = []
    for name in args:
        try:
            client._send("DELETE", _path(name) + _query(force=force))
        except KetchError as exc:
            errors.append(error_text(exc))
            continue
        sys.stdout.write(f"{name}\n")
    if errors:
        sys.stderr.write("\n".join(errors) + "\n")
        return 1
    return 0


# --- prune ----------------------------------------------------------------------------------


def prune_report_text(report: dict[str, Any]) -> str:
    from ketch.cli.formatting import human_size

    out = ""
    deleted = report.get("VolumesDeleted") or []
    if deleted:
        out += "Deleted Volumes:\n" + "".join(f"{n}\n" for n in deleted) + "\n"
    return out + f"Total reclaimed space: {human_size(int(report.get('SpaceReclaimed') or 0))}\n"


@command("prune", "[OPTIONS]", "Remove unused local volumes")
@option("-a", "--all", "all_", is_flag=True,
        help="Remove all unused volumes, not just anonymous ones")
@option("--filter", "filters", metavar="filter", multiple=True,
        help='Provide filter values (e.g. "label=<label>")')
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@pass_obj
def prune(session: Session, args: tuple[str, ...], all_: bool, filters: tuple[str, ...],
          force: bool) -> int:
    from ketch.cli.system_cmds import confirm

    flt = parse_filters(filters)
    client: Client = session.connect()
    # Before API 1.42 the daemon prunes every unused volume, and says so.
    old_api = _older(client.negotiate(), "1.42")
    warning = ALL_WARNING if old_api else UNUSED_WARNING
    if all_:
        if "all" in flt:
            raise local(InvalidArgument("conflicting options: cannot specify both --all and "
                                        "--filter all=1"))
        if old_api:
            raise local(InvalidArgument('"--all" requires API version 1.42, but the ketch '
                                        f"daemon API version is {client.negotiate()}"))
        flt["all"] = ["true"]
        warning = ALL_WARNING
    if not force and not confirm(warning):
        return 0
    sys.stdout.write(prune_report_text(client.prune("volumes", flt)))
    return 0


volume = Group("volume", help="Manage volumes", usage="COMMAND", lazy={})
for _name, _cmd in (("create", create), ("ls", ls), ("list", ls), ("inspect", inspect),
                    ("rm", rm), ("remove", rm), ("prune", prune)):
    volume.add_command(_cmd, _name)
volume.hidden_names = {"list", "remove"}
