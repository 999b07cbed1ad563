"""Image commands: ``images``, ``image inspect|history|tag|rm|prune|save|load|import|bootstrap``.

Each is docker's command with docker's flags and output; the work is done by
ketchd through the Engine API. ``bootstrap`` builds a base root filesystem
on this machine (busybox from busybox-static, Debian with debootstrap) and
sends it to the daemon as ``docker import`` does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from ketch.cli.command import (
    Group,
    command,
    filter_option,
    format_option,
    option,
    pass_obj,
    prune_filter_option,
)
from ketch.cli.session import Session, local, parse_filters
from ketch.errors import InvalidArgument, KetchError, NotSupported

# --- images ---------------------------------------------------------------------------------


@command("ls", "[OPTIONS] [REPOSITORY[:TAG]]", "List images", nargs=(0, 1),
         aliases=("ketch image ls", "ketch image list", "ketch images"))
@option("-a", "--all", "all_", is_flag=True,
        help="Show all images (default hides intermediate images)")
@option("--digests", is_flag=True, help="Show digests")
@filter_option
@format_option
@option("--no-trunc", is_flag=True, help="Don't truncate output")
@option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@pass_obj
def ls(session: Session, args: tuple[str, ...], all_: bool, digests: bool,
       filters: tuple[str, ...], format_: str | None, no_trunc: bool, quiet: bool) -> int:
    flt = parse_filters(filters)
    if args:
        flt.setdefault("reference", []).append(args[0])
    images = session.connect().images(all=all_, filters=flt)
    from ketch.cli import views

    sys.stdout.write(views.images_output(images, format_, quiet=quiet, no_trunc=no_trunc,
                                         digests=digests))
    return 0


# --- inspect --------------------------------------------------------------------------------


@command("inspect", "[OPTIONS] IMAGE [IMAGE...]",
         "Display detailed information on one or more images", nargs=(1, None))
@option("-f", "--format", "format_", metavar="string",
        help="Format output using a custom template: 'json', or a Go template")
@pass_obj
def inspect(session: Session, args: tuple[str, ...], format_: str | None) -> int:
    from ketch.cli.container_cmds import _inspect

    return _inspect(session, args, format_, False, ("image",), generic=False)


# --- history ------------------------------------------------------------------------------


@command("history", "[OPTIONS] IMAGE", "Show the history of an image", nargs=(1, 1),
         aliases=("ketch image history", "ketch history"))
@format_option
@option("-H", "--human", is_flag=True, default=True, metavar="",
        help="Print sizes and dates in human readable format (default true)")
@option("--no-trunc", is_flag=True, help="Don't truncate output")
@option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@pass_obj
def history(session: Session, args: tuple[str, ...], format_: str | None, human: bool,
            no_trunc: bool, quiet: bool) -> int:
    from ketch.cli import views

    items = session.connect().image_history(args[0])
    sys.stdout.write(views.history_output(items, format_, human=human, no_trunc=no_trunc,
                                          quiet=quiet))
    return 0


# --- tag, rm, prune -------------------------------------------------------------------------


def split_reference(ref: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag) checked with docker's grammar, as the docker CLI
    does before it asks the daemon; a digest cannot be a tag target."""
    from ketch.image.reference import normalize, parse

    try:
        normalize(ref)  # docker's grammar and messages (uppercase, 64-hex names, ...)
        parsed = parse(ref)
        if parsed.digest is not None:
            raise InvalidArgument("invalid reference format")
    except KetchError as exc:
        raise local(InvalidArgument(
            f'Error parsing reference: "{ref}" is not a valid repository/tag: {exc}')) from exc
    return parsed.name, parsed.tag or ""


@command("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
         "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", nargs=(2, 2),
         aliases=("ketch image tag", "ketch tag"))
@pass_obj
def tag(session: Session, args: tuple[str, ...]) -> int:
    repo, tg = split_reference(args[1])
    session.connect().image_tag(args[0], repo, tg)
    return 0


@command("rm", "[OPTIONS] IMAGE [IMAGE...]", "Remove one or more images", nargs=(1, None),
         aliases=("ketch image rm", "ketch image remove", "ketch rmi"))
@option("-f", "--force", is_flag=True, help="Force removal of the image")
@option("--no-prune", is_flag=True, help="Do not delete untagged parents")
@pass_obj
def rm(session: Session, args: tuple[str, ...], force: bool, no_prune: bool) -> int:
    from ketch.cli.session import error_text

    client = session.connect()
    failed = False
    for name in args:
        try:
            records = client.image_remove(name, force=force, noprune=no_prune)
        except KetchError as exc:
            sys.stderr.write(error_text(exc) + "\n")
            failed = True
            continue
        for r in records:
            for k in ("Untagged", "Deleted"):
                if r.get(k):
                    sys.stdout.write(f"{k}: {r[k]}\n")
    return 1 if failed else 0


def print_deleted_images(report: dict[str, Any]) -> None:
    """The "Deleted Images:" block of ``image prune`` and ``system prune``."""
    deleted = report.get("ImagesDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Images:\n")
        for d in deleted:
            for k in ("Untagged", "Deleted"):
                if d.get(k):
                    sys.stdout.write(f"{k.lower()}: {d[k]}\n")
        sys.stdout.write("\n")


def _print_deleted(report: dict[str, Any]) -> None:
    from ketch.cli.formatting import human_size

    print_deleted_images(report)
    sys.stdout.write(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}\n")


@command("prune", "[OPTIONS]", "Remove unused images")
@option("-a", "--all", "all_", is_flag=True,
        help="Remove all unused images, not just dangling ones")
@prune_filter_option
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@pass_obj
def prune(session: Session, args: tuple[str, ...], all_: bool, filters: tuple[str, ...],
          force: bool) -> int:
    from ketch.cli.system_cmds import confirm

    flt = parse_filters(filters)
    if not force:
        what = ("all images without at least one container associated to them" if all_
                else "all dangling images")
        if not confirm(f"WARNING! This will remove {what}.\n"
                       "Are you sure you want to continue? [y/N] "):
            return 0
    if all_:
        flt["dangling"] = ["false"]
    _print_deleted(session.connect().images_prune(flt))
    return 0


# --- save, load, import ---------------------------------------------------------------------


def _copy(src: Any, dst: BinaryIO) -> None:
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            break
        dst.write(chunk)


@command("save", "[OPTIONS] IMAGE [IMAGE...]",
         "Save one or more images to a tar archive (streamed to STDOUT by default)",
         nargs=(1, None), aliases=("ketch image save", "ketch save"))
@option("-o", "--output", metavar="string", default="",
        help="Write to a file, instead of STDOUT")
@pass_obj
def save(session: Session, args: tuple[str, ...], output: str) -> int:
    check_output(output, "failed to save image")
    client = session.connect()
    with client.images_save(list(args)) as resp:
        write_stream(resp, output, "ketch-save")
    return 0


def check_output(output: str, failure: str) -> None:
    """Where an archive may go (save, export): a file in an existing directory, or stdout
    when that is not a terminal."""
    if not output and sys.stdout.isatty():
        raise local(InvalidArgument("cowardly refusing to save to a terminal. "
                                    "Use the -o flag or redirect"))
    if output:
        d = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(d):
            raise local(InvalidArgument(
                f'{failure}: invalid output path: directory "{d}" does not exist'))


def write_stream(resp: Any, output: str, what: str) -> None:
    """An archive from the daemon to ``output``, or to stdout when that is empty (save,
    export). As docker: a temporary file beside the target, renamed when complete, so a
    failure never leaves a truncated archive under the asked-for name."""
    if not output:
        sys.stdout.flush()
        _copy(resp, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    tmp = f"{output}.{what}-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            _copy(resp, f)
        os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class _Progress:
    """Bytes sent so far, drawn on stderr when it is a terminal ("Loading  12.3MB/300MB")."""

    def __init__(self, f: BinaryIO, label: str, total: int | None) -> None:
        self.f = f
        self.label = label
        self.total = total
        self.sent = 0
        self.draw = sys.stderr.isatty()
        self._last = -1.0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sent += len(data)
        if self.draw:
            import time

            now = time.monotonic()
            if not data or now - self._last > 0.1:
                self._last = now
                self._show(done=not data)
        return data

    def _show(self, done: bool) -> None:
        from ketch.cli.formatting import human_size

        if self.total:
            width = 50
            filled = min(width, int(width * self.sent / self.total))
            bar = "=" * max(filled - 1, 0) + (">" if filled < width else "=")
            text = f"{self.label} [{bar.ljust(width)}]  {human_size(self.sent)}/" \
                   f"{human_size(self.total)}"
        else:
            text = f"{self.label}  {human_size(self.sent)}"
        sys.stderr.write("\r" + text + ("\n" if done else ""))
        sys.stderr.flush()


def _why(exc: OSError) -> str:
    """Go's wording of an errno ("no such file or directory")."""
    return (exc.strerror or str(exc)).lower()


def _print_stream(messages: Iterator[dict[str, Any]]) -> None:
    for m in messages:
        if m.get("stream"):
            sys.stdout.write(m["stream"])
        elif m.get("status"):
            sys.stdout.write(m["status"] + "\n")


@command("load", "[OPTIONS]", "Load an image from a tar archive or STDIN",
         aliases=("ketch image load", "ketch load"))
@option("-i", "--input", "input_", metavar="string", default="",
        help="Read from tar archive file, instead of STDIN")
@option("-q", "--quiet", is_flag=True, help="Suppress the load output")
@pass_obj
def load(session: Session, args: tuple[str, ...], input_: str, quiet: bool) -> int:
    if input_:
        try:
            f: BinaryIO = open(input_, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise local(InvalidArgument(f"open {input_}: {_why(exc)}")) from exc
        total: int | None = os.fstat(f.fileno()).st_size
    else:
        if sys.stdin.isatty():
            raise local(InvalidArgument("requested load from stdin, but stdin is empty"))
        f = sys.stdin.buffer
        total = None
    try:
        body: Any = f if quiet else _Progress(f, "Loading", total)
        _print_stream(session.connect().images_load(body, quiet=quiet))
    finally:
        if input_:
            f.close()
    return 0


@command("import", "[OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
         "Import the contents from a tarball to create a filesystem image", nargs=(1, 2),
         aliases=("ketch image import", "ketch import"))
@option("-c", "--change", "changes", metavar="list", multiple=True,
        help="Apply Dockerfile instruction to the created image")
@option("-m", "--message", metavar="string", default="",
        help="Set commit message for imported image")
@option("--platform", metavar="string", default="",
        help="Set platform if server is multi-platform capable")
@pass_obj
def import_(session: Session, args: tuple[str, ...], changes: tuple[str, ...], message: str,
            platform: str) -> int:
    src = args[0]
    repo, tg = split_reference(args[1]) if len(args) > 1 else ("", "")
    if "://" in src:
        raise local(NotSupported("importing from a URL is not supported: ketch has no "
                                 "network access for imports; download the file and "
                                 "import it from disk or stdin"))
    client = session.connect()
    if src == "-":
        f: BinaryIO = sys.stdin.buffer
    else:
        try:
            f = open(src, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise local(InvalidArgument(f"open {src}: {_why(exc)}")) from exc
    try:
        msgs = client.image_import(f, repo=repo, tag=tg, changes=changes,
                                   message=message or ("" if src == "-"
                                                       else f"Imported from {src}"),
                                   platform=platform)
        _print_stream(msgs)
    finally:
        if src != "-":
            f.close()
    return 0


# --- bootstrap ------------------------------------------------------------------------------


@command("bootstrap", "[OPTIONS] busybox[:TAG] | debian:SUITE",
         "Create a base image on this machine, without a registry", nargs=(1, 1))
@option("--mirror", metavar="string", default=None,
        help="Debian mirror for debian:SUITE (default: the host's apt sources)")
@option("-t", "--tag", "target", metavar="string", default="",
        help="Name the image differently (default: the argument)")
@pass_obj
def bootstrap(session: Session, args: tuple[str, ...], mirror: str | None, target: str) -> int:
    from ketch.cli.bootstrap_cmd import run_bootstrap

    return run_bootstrap(session, args[0], mirror=mirror, target=target)


image = Group("image", help="Manage images", usage="COMMAND",
              lazy={"pull": "ketch.cli.registry_client_cmds:pull",
                    "push": "ketch.cli.registry_client_cmds:push",
                    "build": "ketch.cli.build_cmds:build"})
for _name, _cmd in (("ls", ls), ("list", ls), ("inspect", inspect), ("history", history),
                    ("tag", tag), ("rm", rm), ("remove", rm), ("prune", prune),
                    ("save", save), ("load", load), ("import", import_),
                    ("bootstrap", bootstrap)):
    image.add_command(_cmd, _name)
image.hidden_names = {"list", "remove"}
