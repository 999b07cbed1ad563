"""write_layer: deterministic tars, whiteouts back from overlay form, naive diffs.

The judge for content is ``unpack_layer`` plus a tree walk, and for the tar
format ``tarfile`` reading the bytes back.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, NotSupported
from ketch.image.diff import write_layer
from ketch.image.unpack import unpack_layer

ROOT = os.geteuid() == 0


def _user_xattrs(path: Path) -> bool:
    probe = path / ".probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def build_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin/tool", 0o4755)
    os.link(root / "bin/tool", root / "bin/tool-hard")
    os.symlink("tool", root / "bin/sh")
    os.symlink("/bin/tool", root / "abs")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    os.mkfifo(root / "fifo")
    (root / "big").write_bytes(os.urandom(3 << 20))
    (root / "empty").mkdir()
    (root / "nonascii-\u00e9").write_bytes(b"e")
    (root / ("long-" + "n" * 150)).write_bytes(b"l")
    os.utime(root / "bin/tool", ns=(1, 1_700_000_000_123_456_789))
    os.utime(root / "bin", ns=(1, 1_600_000_000_000_000_000))
    if _user_xattrs(root):
        os.setxattr(root / "big", "user.note", b"\x00\xffbinary")


def snapshot(root: Path) -> dict[str, tuple]:
    """What must survive a round trip, per path."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = (p.read_bytes(), st.st_nlink)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            try:
                xattrs = sorted(
                    (n, os.getxattr(p, n, follow_symlinks=False))
                    for n in os.listxattr(p, follow_symlinks=False)
                )
            except OSError:
                xattrs = []
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, extra, xattrs)
    return out


def layer_bytes(upper: Path, **kw: object) -> tuple[bytes, str, int]:
    buf = io.BytesIO()
    diff_id, size = write_layer(str(upper), buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue(), diff_id, size


def test_deterministic_and_digest_matches(tmp_path):
    build_tree(tmp_path / "src")
    a, id_a, size_a = layer_bytes(tmp_path / "src")
    b, id_b, _ = layer_bytes(tmp_path / "src")
    assert a == b and id_a == id_b
    assert id_a == "sha256:" + hashlib.sha256(a).hexdigest()
    assert size_a == len(a)


def test_tar_format(tmp_path):
    build_tree(tmp_path / "src")
    data, _, _ = layer_bytes(tmp_path / "src")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names[0] == "abs"
    assert names.index("bin") < names.index("bin/sh") < names.index("bin/tool")
    assert all(m.uname == "" and m.gname == "" for m in members)
    tool = next(m for m in members if m.name == "bin/tool")
    hard = next(m for m in members if m.name == "bin/tool-hard")
    assert tool.isreg() and hard.islnk() and hard.linkname == "bin/tool"
    assert tool.pax_headers["mtime"] == "1700000000.123456789"
    assert not any(n.startswith(".") for n in names)  # no root entry, no whiteouts


def test_round_trip_through_unpack(tmp_path):
    src = tmp_path / "src"
    build_tree(src)
    data, diff_id, _ = layer_bytes(src)
    res = unpack_layer(io.BytesIO(data), str(tmp_path / "out"))
    assert res.diff_id == diff_id
    assert snapshot(tmp_path / "out") == snapshot(src)
    _, again, _ = layer_bytes(tmp_path / "out")
    assert again == diff_id


def test_lower_dirs_need_naive_mode(tmp_path):
    (tmp_path / "u").mkdir()
    with pytest.raises(InvalidArgument):
        write_layer(str(tmp_path / "u"), io.BytesIO(), lower_dirs=[str(tmp_path)])
    with pytest.raises(InvalidArgument):
        write_layer(str(tmp_path / "nope"), io.BytesIO())


def test_naive_diff_and_reapply(tmp_path):
    parent = tmp_path / "parent"
    build_tree(parent)
    (parent / "gone-dir/sub").mkdir(parents=True)
    (parent / "gone-dir/sub/f").write_bytes(b"f")
    (parent / "dir-to-file").mkdir()
    (parent / "dir-to-file/x").write_bytes(b"x")
    child = tmp_path / "child"
    # The copy-based snapshotter's view: a full copy, then changes.
    unpack_layer(
        io.BytesIO(layer_bytes(parent)[0]), str(child), whiteout_mode="naive", parent=str(parent)
    )
    os.unlink(child / "fifo")
    (child / "bin/new").write_bytes(b"new")
    (child / "big").write_bytes(b"smaller now")
    import shutil

    shutil.rmtree(child / "gone-dir")
    shutil.rmtree(child / "dir-to-file")
    (child / "dir-to-file").write_bytes(b"now a file")

    data, _, _ = layer_bytes(child, lower_dirs=[str(parent)], whiteout_mode="naive")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
    assert ".wh.fifo" in names and ".wh.gone-dir" in names
    assert "bin/new" in names and "bin" in names and "big" in names
    assert "dir-to-file" in names
    assert "tmp" not in names and "abs" not in names  # unchanged entries stay out

    again = tmp_path / "again"
    unpack_layer(io.BytesIO(data), str(again), whiteout_mode="naive", parent=str(parent))
    assert snapshot(again) == snapshot(child)


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts need root")
def test_overlay_upper_whiteouts(tmp_path):
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d/kept").write_bytes(b"k")
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")
    os.mknod(upper / "gone", stat.S_IFCHR, os.makedev(0, 0))
    data, _, _ = layer_bytes(upper)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == ["d", "d/.wh..wh..opq", "d/kept", ".wh.gone"] or names == [
        ".wh.gone",
        "d",
        "d/.wh..wh..opq",
        "d/kept",
    ]
    assert all(
        not k.startswith("SCHILY.xattr.trusted.overlay") for m in members for k in m.pax_headers
    )
    # And back: unpack gives the same overlay form, and the same diff_id again.
    res = unpack_layer(io.BytesIO(data), str(tmp_path / "out"))
    st = os.lstat(tmp_path / "out/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(tmp_path / "out/d", "trusted.overlay.opaque") == b"y"
    assert layer_bytes(tmp_path / "out")[1] == res.diff_id


@pytest.mark.skipif(not ROOT, reason="trusted xattrs need root")
def test_redirect_dir_upper_is_refused(tmp_path):
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(NotSupported, match="redirect"):
        write_layer(str(upper), io.BytesIO())
