"""The copy-based snapshotter: every active snapshot is a full copy of its parent.

It needs no root and no overlayfs, so unit tests and unprivileged runs use
it (containerd's "native" snapshotter). It costs a copy per ``prepare``
(``cp -a --reflink=auto``, so cheap on btrfs/xfs) and full trees on disk.

Layout under ``root``: ``metadata.db`` and ``snapshots/<id>/fs``, the whole
tree of that snapshot. What the mounts describe:

* active: a read-write bind of its own ``fs``, which starts as a copy of
  the parent's tree;
* view: a read-only bind of the parent's ``fs`` (committed trees never
  change, so a view needs no copy), or of its own empty ``fs`` without one.

Whiteouts do not exist here: deleting a file deletes it. ``apply_layer``
imports a layer with ``unpack_layer(..., whiteout_mode="naive",
parent=<the active tree>)`` into a copy that then replaces the tree, and
``write_layer(..., whiteout_mode="naive", lower_dirs=[<parent's tree>])``
turns changes back into a tar by comparing trees.

Unprivileged callers cannot mount; a single bind mount's ``source`` is then
the directory to use directly.
"""

from __future__ import annotations

import os
import subprocess

from ketch.errors import System
from ketch.image.snapshot import BaseSnapshotter, Kind, Mount, Record


class NaiveSnapshotter(BaseSnapshotter):
    """Snapshots as full directory copies under ``root``."""

    def _populate(self, new_dir: str, rec: Record, chain: list[Record]) -> None:
        fs = os.path.join(new_dir, "fs")
        os.mkdir(fs, 0o755)
        if rec.kind is not Kind.ACTIVE or not chain:
            return
        parent_fs = self._fs(chain[0])
        proc = subprocess.run(
            ["cp", "-a", "--reflink=auto", "--", parent_fs + "/.", fs],
            capture_output=True,
        )
        if proc.returncode != 0:
            raise System(f"copying {parent_fs} for snapshot {rec.name}: "
                         f"{proc.stderr.decode(errors='replace').strip()}")

    def _describe(self, rec: Record, chain: list[Record]) -> list[Mount]:
        if rec.kind is Kind.ACTIVE:
            return [Mount("bind", self._fs(rec), ["rbind", "rw"])]
        source = self._fs(chain[0]) if chain else self._fs(rec)
        return [Mount("bind", source, ["rbind", "ro"])]
