"""``ketch image bootstrap``: base images made on this machine, imported like ``docker import``.

The root filesystem is built here (the CLI runs as root on the host whose
packages it uses), written as a layer tar into a pipe by a thread, and sent
to ketchd's import endpoint as it is produced, so nothing the size of the
image is held in memory or written twice. Steps are reported on stderr;
the image ID alone goes to stdout, as ``docker import`` prints it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import BinaryIO

from ketch.cli.session import Session, local
from ketch.errors import InvalidArgument, NotFound, System

BUSYBOX_CHANGES = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   'CMD ["sh"]']


def step(text: str) -> None:
    sys.stderr.write(f"=> {text}\n")
    sys.stderr.flush()


def _busybox_binary() -> str:
    from ketch.image.bootstrap import find_static_busybox

    try:
        return find_static_busybox()
    except NotFound:
        if os.geteuid() != 0:
            raise
    step("installing Debian's busybox-static (apt-get install -y busybox-static)")
    out = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                          "busybox-static"], capture_output=True, text=True, check=False,
                         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-3:])
        raise System(f"could not install busybox-static: {tail}")
    return find_static_busybox()


def _pin_times(tree: str, stamp: int) -> None:
    """Every file time set to ``stamp``: the same host gives the same layer digest."""
    for dirpath, dirnames, filenames in os.walk(tree, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (stamp, stamp), follow_symlinks=False)
    os.utime(tree, (stamp, stamp))


Writer = Callable[[str, BinaryIO], object]


def _stream_tree(tree: str, send: Callable[[BinaryIO], None], writer: Writer) -> None:
    """Write ``tree`` as a layer tar into a pipe while ``send`` reads the other end."""
    r, w = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with open(w, "wb", buffering=1 << 20) as out:
                writer(tree, out)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)

    class Feed:
        """The pipe's reader; a failed writer fails the read, so the upload is cut
        off mid-body (the daemon then drops the import) instead of ending cleanly
        with half a tree."""

        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            data = self.f.read(n)
            if not data:
                th.join()
                if failure:
                    raise System(f"writing the root filesystem failed: {failure[0]}")
            return data

    th = threading.Thread(target=produce, name="layer-writer", daemon=True)
    th.start()
    with open(r, "rb", buffering=1 << 20) as reader:
        try:
            send(Feed(reader))  # type: ignore[arg-type]  # read() is all a body needs
        finally:
            reader.close()  # a writer still going gets EPIPE and stops
            th.join()
    if failure:
        raise System(f"writing the root filesystem failed: {failure[0]}")


def _write_layer(tree: str, out: BinaryIO) -> object:
    from ketch.image.diff import write_layer

    return write_layer(tree, out)


def _import(session: Session, tree: str, target: str, changes: list[str], message: str,
            writer: Writer = _write_layer) -> int:
    from ketch.cli.image_cmds import split_reference

    repo, tag = split_reference(target)
    client = session.connect()
    image_id: list[str] = []

    def send(body: BinaryIO) -> None:
        for m in client.image_import(body, repo=repo, tag=tag, changes=changes,
                                     message=message):
            if m.get("status"):
                image_id.append(m["status"])

    step(f"importing as {target}")
    _stream_tree(tree, send, writer)
    if not image_id:
        raise System("the daemon did not report the new image's ID")
    sys.stdout.write(image_id[-1] + "\n")
    return 0


def _workdir() -> str:
    base = os.environ.get("TMPDIR") or "/var/tmp"
    return tempfile.mkdtemp(prefix="ketch-bootstrap-", dir=base)


def bootstrap_busybox(session: Session, ref: str) -> int:
    from ketch.image.bootstrap import busybox_rootfs

    binary = _busybox_binary()
    work = _workdir()
    try:
        tree = os.path.join(work, "rootfs")
        step(f"building a busybox root filesystem from {binary}")
        busybox_rootfs(tree)
        _pin_times(tree, int(os.stat(binary).st_mtime))
        return _import(session, tree, ref, BUSYBOX_CHANGES,
                       f"ketch image bootstrap {ref} (from the host's {binary})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bootstrap_debian(session: Session, what: str, target: str, mirror: str | None) -> int:
    from ketch.image import debootstrap as dbs

    ref = dbs.parse_debian_reference(what)
    if os.geteuid() != 0:
        raise local(InvalidArgument("bootstrapping a Debian image runs debootstrap, "
                                    "which needs root"))
    session.connect()  # no daemon, no point in a long debootstrap
    work = _workdir()

    def show(p: dbs.Progress) -> None:
        if p.new_step or p.level != "info":
            step(str(p))

    try:
        tree = os.path.join(work, "rootfs")
        step(f"debootstrap --variant=minbase {ref.suite} "
             f"(from {mirror or dbs.host_mirror()})")
        dbs.debootstrap_rootfs(tree, ref.suite, mirror=mirror, progress=show)
        return _import(session, tree, target or ref.ref, dbs.image_changes(ref.suite),
                       dbs.history_comment(ref.suite), writer=dbs.rootfs_tar)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_bootstrap(session: Session, what: str, *, mirror: str | None, target: str) -> int:
    from ketch.image.debootstrap import is_debian_reference

    name = what.partition(":")[0]
    if name == "busybox":
        return bootstrap_busybox(session, target or what)
    if is_debian_reference(what):
        return bootstrap_debian(session, what, target, mirror)
    raise local(InvalidArgument(f"cannot bootstrap {what!r}: ketch makes busybox[:TAG] "
                                "(from busybox-static) and debian:RELEASE (with debootstrap)"))
