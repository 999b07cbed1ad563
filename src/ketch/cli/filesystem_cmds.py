"""A container's filesystem as a whole: ``diff``, ``export`` and ``commit``.

(``cp`` moves single paths and lives with the other container commands.) Each
is docker 28's command with its flags, output and messages; ketchd does the
work (``/containers/{id}/changes``, ``/containers/{id}/export``, ``/commit``).
"""

from __future__ import annotations

import sys

from ketch.cli.command import command, option, pass_obj
from ketch.cli.session import Session, local
from ketch.errors import InvalidArgument, KetchError

# The daemon's change kinds, as docker prints them.
KINDS = {0: "C", 1: "A", 2: "D"}


@command("diff", "CONTAINER", "Inspect changes to files or directories on a container's "
         "filesystem", nargs=(1, 1), aliases=("ketch container diff", "ketch diff"))
@pass_obj
def diff(session: Session, args: tuple[str, ...]) -> int:
    changes = session.connect().container_changes(args[0])
    sys.stdout.write("".join(f"{KINDS.get(int(c.get('Kind', 0)), '?')} {c.get('Path', '')}\n"
                             for c in changes))
    return 0


@command("export", "[OPTIONS] CONTAINER", "Export a container's filesystem as a tar archive",
         nargs=(1, 1), aliases=("ketch container export", "ketch export"))
@option("-o", "--output", metavar="string", default="",
        help="Write to a file, instead of STDOUT")
@pass_obj
def export(session: Session, args: tuple[str, ...], output: str) -> int:
    from ketch.cli.image_cmds import check_output, write_stream

    check_output(output, "failed to export container")
    with session.connect().container_export(args[0]) as resp:
        write_stream(resp, output, "ketch-export")
    return 0


@command("commit", "[OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
         "Create a new image from a container's changes", nargs=(1, 2),
         aliases=("ketch container commit", "ketch commit"))
@option("-a", "--author", metavar="string", default="",
        help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
@option("-c", "--change", "changes", multiple=True,
        help="Apply Dockerfile instruction to the created image")
@option("-m", "--message", metavar="string", default="", help="Commit message")
@option("-p", "--pause", is_flag=True, default=True,
        help="Pause container during commit (default true)")
@pass_obj
def commit(session: Session, args: tuple[str, ...], author: str, changes: tuple[str, ...],
           message: str, pause: bool) -> int:
    repo = tag = ""
    if len(args) > 1:
        repo, tag = _target(args[1])
    resp = session.connect().container_commit(args[0], repo=repo, tag=tag, comment=message,
                                              author=author, changes=list(changes),
                                              pause=pause)
    sys.stdout.write(f"{resp.get('Id', '')}\n")
    return 0


def _target(ref: str) -> tuple[str, str]:
    """The docker CLI's reading of commit's REPOSITORY[:TAG]: docker's grammar, no digest."""
    from ketch.image.reference import normalize, parse

    try:
        full = normalize(ref)
        typed = parse(ref)          # the tag only when one was written, as docker sends it
    except KetchError as exc:
        raise local(InvalidArgument(str(exc))) from exc
    if full.digest is not None:
        raise local(InvalidArgument("refusing to create a tag with a digest reference"))
    return full.familiar_name, typed.tag or ""


__all__ = ["commit", "diff", "export"]
