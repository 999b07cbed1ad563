"""The overlayfs snapshotter: one directory per layer, stacked by the kernel.

Layout under ``root``::

    metadata.db              names, parents, kinds, labels (see __init__.py)
    snapshots/<id>/fs        the snapshot's own files (an overlay upper dir)
    snapshots/<id>/work      overlay's work dir, same filesystem as fs

What ``prepare``/``view``/``mounts`` describe (containerd's overlay.go):

* active, no parent: a read-write bind of ``fs`` (a base layer is unpacked
  straight into it);
* active with parents: ``overlay`` with ``lowerdir`` = the parents' ``fs``,
  nearest first, and this snapshot's ``upperdir``/``workdir``;
* view of one committed layer: a read-only bind of that layer's ``fs``
  (overlay needs two lowers without an upper, and a bind is cheaper);
* view of a chain: ``overlay`` with lowers only, which is read-only.

Whiteouts are overlay's own (0:0 character devices, ``trusted.overlay.opaque``);
``unpack_layer`` writes them and ``write_layer`` reads them back, so a layer
goes in and out of an upper directory unchanged.

Long chains: the kernel copies at most one page (4096 bytes) of mount
options, and ``lowerdir=/var/lib/.../snapshots/123/fs:...`` passes that at a
few dozen layers. When the absolute form does not fit, the options use paths
relative to ``snapshots/`` (``lowerdir=123/fs:122/fs``, about 7 bytes a
layer) and ``Mount.cwd`` tells the caller to mount from that directory, as
moby's overlay2 (``l/`` links plus chdir) and containerd's mount helper do.
Overlay stacks at most 500 lowers; past either limit ``NotSupported`` is
raised at ``prepare``/``view`` time, before anything is created.
"""

from __future__ import annotations

import os

from ketch.errors import NotSupported
from ketch.image.snapshot import BaseSnapshotter, Kind, Mount, Record

MAX_LOWERS = 500  # overlayfs' OVL_MAX_STACK


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 4096


class OverlaySnapshotter(BaseSnapshotter):
    """Snapshots as overlayfs layers under ``root`` (which must support overlay's xattrs).

    ``index_off``: add ``index=off`` to overlay mounts (containerd does, so
    the same lower can be used by many overlays at once even on kernels built
    with the index feature on); by default when the kernel knows the option.
    ``page_size`` is the mount-option limit; tests may lower it.
    """

    def __init__(self, root: str, *, index_off: bool | None = None,
                 page_size: int | None = None) -> None:
        super().__init__(root)
        if index_off is None:
            index_off = os.path.exists("/sys/module/overlay/parameters/index")
        self._index_off = index_off
        self._page_size = page_size or _page_size()

    def _populate(self, new_dir: str, rec: Record, chain: list[Record]) -> None:
        os.mkdir(os.path.join(new_dir, "fs"), 0o755)
        os.mkdir(os.path.join(new_dir, "work"), 0o700)

    def _describe(self, rec: Record, chain: list[Record]) -> list[Mount]:
        fs = self._fs(rec)
        if not chain:
            return [Mount("bind", fs, ["rbind", "rw" if rec.kind is Kind.ACTIVE else "ro"])]
        if rec.kind is Kind.VIEW and len(chain) == 1:
            return [Mount("bind", self._fs(chain[0]), ["rbind", "ro"])]
        return [self._overlay(rec, chain)]

    def _overlay(self, rec: Record, chain: list[Record]) -> Mount:
        if len(chain) > MAX_LOWERS:
            raise NotSupported(
                f"snapshot {rec.name} stacks {len(chain)} layers; overlayfs mounts at most "
                f"{MAX_LOWERS} lower layers (squash the image)")
        limit = self._page_size - 1  # the options string and its NUL in one page

        def options(base: str) -> list[str]:
            opts = ["index=off"] if self._index_off else []
            if rec.kind is Kind.ACTIVE:
                opts.append(f"workdir={os.path.join(base, str(rec.id), 'work')}")
                opts.append(f"upperdir={os.path.join(base, str(rec.id), 'fs')}")
            lowers = ":".join(os.path.join(base, str(r.id), "fs") for r in chain)
            opts.append(f"lowerdir={lowers}")
            return opts

        absolute = options(self._meta.snapshots_dir)
        if len(",".join(absolute)) <= limit:
            return Mount("overlay", "overlay", absolute)
        relative = options("")
        size = len(",".join(relative))
        if size > limit:
            raise NotSupported(
                f"snapshot {rec.name} stacks {len(chain)} layers; even with short relative "
                f"paths its overlay options take {size} bytes and the kernel accepts "
                f"{limit} (squash the image)")
        return Mount("overlay", "overlay", relative, cwd=self._meta.snapshots_dir)
