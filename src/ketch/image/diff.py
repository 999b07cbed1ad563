"""Turn a snapshot's changes into a layer tar: the reverse of ``unpack``.

The lifecycle, as a commit uses it::

    with open(tmp_blob, "wb") as f:
        diff_id, size = write_layer(upper_dir, f)       # overlay snapshotter
    # or, for a copy-based snapshotter:
        diff_id, size = write_layer(new_tree, f, lower_dirs=[parent_tree],
                                    whiteout_mode="naive")

Why it is built this way:

* The output is deterministic, so committing the same directory twice gives
  the same diff_id and the same blob: entries sorted bytewise, depth first,
  PAX format, empty uname/gname, no atime/ctime, mtimes exactly as on disk
  (nanoseconds in a pax record when they are not whole seconds).
* ``"overlay"`` mode reads an overlayfs upper directory, which already holds
  only the changes: a 0:0 character device is a deletion (``.wh.<name>``) and
  ``trusted.overlay.opaque=y`` hides the lower directory (``.wh..wh..opq``,
  written before the directory's children as the OCI spec asks). Uppers
  using ``redirect_dir`` or ``metacopy`` cannot be expressed as a tar from the
  upper alone, so they are refused instead of producing a wrong layer.
* ``"naive"`` mode compares a full tree with its parent tree(s), as moby's
  ``ChangesDirs`` does: new or changed entries (type, mode, owner, size,
  mtime, link target, device, xattrs) are written with the directories above
  them, removed ones become ``.wh.<name>``.
* overlay's own xattrs and ``security.selinux`` (a host label) never go into
  a layer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Literal

from ketch.errors import InvalidArgument, NotSupported, System

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_UNSUPPORTED_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
_SKIPPED_XATTR_PREFIXES = ("trusted.overlay.", "security.selinux")
_COPY_BUF = 1 << 20


class _HashingWriter:
    """Counts and hashes what goes to ``out`` so diff_id needs no second pass."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass(slots=True)
class _Entry:
    """One thing to write: a path on disk or a whiteout marker."""

    rel: str
    path: str | None  # None for whiteouts
    st: os.stat_result | None
    whiteout_of: os.stat_result | None = None  # overlay: the char device it came from
    opaque_for: os.stat_result | None = None  # the directory an opaque marker belongs to


def _sorted_names(path: str) -> list[str]:
    return sorted(os.listdir(path), key=os.fsencode)


def _xattrs(path: str) -> list[tuple[str, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return []
        raise System(f"listxattr {path}: {exc.strerror}") from exc
    out = []
    for name in sorted(names):
        if name in _UNSUPPORTED_XATTRS:
            raise NotSupported(
                f"{path} has {name}: layers from overlay uppers with redirect_dir or "
                "metacopy cannot be written from the upper alone"
            )
        if name.startswith(_SKIPPED_XATTR_PREFIXES):
            continue
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
                continue
            raise System(f"getxattr {name} on {path}: {exc.strerror}") from exc
    return out


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


# -- overlay mode ------------------------------------------------------------


def _walk_overlay(root: str, rel: str, out: list[_Entry]) -> None:
    base = os.path.join(root, rel) if rel else root
    for name in _sorted_names(base):
        path = os.path.join(base, name)
        st = os.lstat(path)
        r = _join(rel, name)
        if _is_whiteout(st):
            out.append(_Entry(_join(rel, WHITEOUT_PREFIX + name), None, None, whiteout_of=st))
            continue
        out.append(_Entry(r, path, st))
        if stat.S_ISDIR(st.st_mode):
            if _is_opaque(path):
                out.append(_Entry(_join(r, WHITEOUT_OPAQUE), None, None, opaque_for=st))
            _walk_overlay(root, r, out)


# -- naive mode --------------------------------------------------------------


def _lower_lstat(lowers: list[str], rel: str) -> tuple[str, os.stat_result] | None:
    for lower in lowers:
        p = os.path.join(lower, rel)
        try:
            return p, os.lstat(p)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            continue
    return None


def _lower_names(lowers: list[str], rel: str) -> set[str]:
    names: set[str] = set()
    for lower in lowers:
        p = os.path.join(lower, rel) if rel else lower
        if os.path.isdir(p) and not os.path.islink(p):
            names.update(os.listdir(p))
    return names


def _same(a_path: str, a: os.stat_result, b_path: str, b: os.stat_result) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return False
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(a_path) == os.readlink(b_path)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev and a.st_mtime_ns == b.st_mtime_ns
    if not stat.S_ISDIR(a.st_mode) and (a.st_size, a.st_mtime_ns) != (b.st_size, b.st_mtime_ns):
        return False
    if stat.S_ISDIR(a.st_mode) and a.st_mtime_ns != b.st_mtime_ns:
        return False
    return _xattrs(a_path) == _xattrs(b_path)


def _walk_full(root: str, rel: str, out: list[_Entry]) -> None:
    base = os.path.join(root, rel) if rel else root
    for name in _sorted_names(base):
        path = os.path.join(base, name)
        st = os.lstat(path)
        r = _join(rel, name)
        out.append(_Entry(r, path, st))
        if stat.S_ISDIR(st.st_mode):
            _walk_full(root, r, out)


def _walk_naive(root: str, lowers: list[str], rel: str, out: list[_Entry]) -> bool:
    """Append the changes below ``rel``; say whether there were any."""
    base = os.path.join(root, rel) if rel else root
    upper_names = set(os.listdir(base))
    names = sorted(upper_names | _lower_names(lowers, rel), key=os.fsencode)
    changed = False
    for name in names:
        r = _join(rel, name)
        lower = _lower_lstat(lowers, r)
        if name not in upper_names:
            if lower is not None:
                out.append(_Entry(_join(rel, WHITEOUT_PREFIX + name), None, None))
                changed = True
            continue
        path = os.path.join(base, name)
        st = os.lstat(path)
        is_dir = stat.S_ISDIR(st.st_mode)
        if lower is None or stat.S_IFMT(lower[1].st_mode) != stat.S_IFMT(st.st_mode):
            out.append(_Entry(r, path, st))
            if is_dir:
                _walk_full(root, r, out)
            changed = True
            continue
        if is_dir:
            mark = len(out)
            out.append(_Entry(r, path, st))
            below = _walk_naive(root, lowers, r, out)
            if not below and _same(path, st, lower[0], lower[1]):
                del out[mark:]
            else:
                changed = True
            continue
        if not _same(path, st, lower[0], lower[1]):
            out.append(_Entry(r, path, st))
            changed = True
    return changed


# -- writing -----------------------------------------------------------------


def _mtime(info: tarfile.TarInfo, pax: dict[str, str], ns: int) -> None:
    sec, frac = divmod(ns, 1_000_000_000)
    info.mtime = sec
    if frac:
        pax["mtime"] = f"{sec}.{frac:09d}".rstrip("0")


def _clamped(ns: int, clamp_ns: int | None) -> int:
    return ns if clamp_ns is None or ns <= clamp_ns else clamp_ns


def _header(e: _Entry, links: dict[tuple[int, int], str],
            clamp_ns: int | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(e.rel)
    info.uname = info.gname = ""
    pax: dict[str, str] = {}
    info.pax_headers = pax
    if e.path is None:
        src = e.whiteout_of or e.opaque_for
        info.type = tarfile.REGTYPE
        info.size = 0
        info.mode = 0o600 if e.opaque_for is None else e.opaque_for.st_mode & 0o777
        if src is not None:
            info.uid, info.gid = src.st_uid, src.st_gid
        if e.whiteout_of is not None:
            _mtime(info, pax, _clamped(e.whiteout_of.st_mtime_ns, clamp_ns))
        else:
            info.mtime = 0
        return info
    st = e.st
    assert st is not None
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    _mtime(info, pax, _clamped(st.st_mtime_ns, clamp_ns))
    m = st.st_mode
    if stat.S_ISREG(m):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type = tarfile.LNKTYPE
            info.linkname = links[key]
        else:
            if st.st_nlink > 1:
                links[key] = e.rel
            info.type = tarfile.REGTYPE
            info.size = st.st_size
    elif stat.S_ISDIR(m):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(m):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(e.path)
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(m):
        info.type = tarfile.FIFOTYPE
    else:
        raise NotSupported(f"{e.path}: sockets and other special files cannot go in a layer")
    for name, value in _xattrs(e.path):
        pax["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return info


def write_layer(
    upper: str,
    out: BinaryIO,
    *,
    lower_dirs: list[str] | None = None,
    whiteout_mode: Literal["overlay", "naive"] = "overlay",
    clamp_mtime: int | None = None,
) -> tuple[str, int]:
    """Write the layer tar for ``upper`` to ``out``; return (diff_id, size).

    ``lower_dirs`` (top first) are the parent trees, needed only in
    ``"naive"`` mode; an overlay upper already holds just the changes.
    ``size`` is the number of tar bytes written. ``clamp_mtime`` (unix seconds,
    ``SOURCE_DATE_EPOCH``) caps every entry's mtime, so a rebuild that makes the same
    files makes the same bytes.
    """
    if whiteout_mode == "overlay":
        if lower_dirs:
            raise InvalidArgument(
                "lower_dirs are for whiteout_mode='naive'; an overlay upper holds the changes"
            )
    elif whiteout_mode != "naive":
        raise InvalidArgument(f"unknown whiteout mode {whiteout_mode!r}")
    if not os.path.isdir(upper):
        raise InvalidArgument(f"layer source {upper} is not a directory")
    entries: list[_Entry] = []
    if whiteout_mode == "overlay":
        if _is_opaque(upper):
            entries.append(_Entry(WHITEOUT_OPAQUE, None, None, opaque_for=os.lstat(upper)))
        _walk_overlay(upper, "", entries)
    else:
        _walk_naive(upper, list(lower_dirs or []), "", entries)

    clamp = None if clamp_mtime is None else clamp_mtime * 1_000_000_000
    writer = _HashingWriter(out)
    links: dict[tuple[int, int], str] = {}
    tf = tarfile.TarFile(
        fileobj=writer,  # type: ignore[arg-type]
        mode="w",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
        copybufsize=_COPY_BUF,
    )
    try:
        for e in entries:
            info = _header(e, links, clamp)
            if info.type == tarfile.REGTYPE and info.size:
                assert e.path is not None
                with open(e.path, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)
    except OSError as exc:
        raise System(f"writing layer from {upper}: {exc}") from exc
    finally:
        tf.close()
    return writer.digest(), writer.size
