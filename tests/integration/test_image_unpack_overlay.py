"""Whiteouts for real: layers unpacked in overlay form, merged by the kernel.

A lower layer and an upper layer (with a whiteout and an opaque directory)
are unpacked with ``unpack_layer``, mounted with overlayfs
(``lowerdir=upper:lower``, both read-only layers as a snapshotter's view),
and the merged tree must show what Docker would show. The mount is undone in
a finalizer, also when the test fails. Then the merged changes made through a
writable mount go back into a layer with ``write_layer``.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.layers import make_tar as _tar
from tests.layers import overlay_available as _overlay_available

from ketch.image.diff import write_layer
from ketch.image.unpack import unpack_layer

pytestmark = pytest.mark.root


def _mount(lowerdir: str, target: Path, *, upper: Path | None = None, work: Path | None = None):
    opts = f"lowerdir={lowerdir}"
    if upper is not None and work is not None:
        opts += f",upperdir={upper},workdir={work}"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not _overlay_available():
        pytest.skip("no overlayfs in this kernel")
    lower = _tar(
        [
            ("etc/", None),
            ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            ("etc/secret", b"lower secret\n"),
            ("opt/", None),
            ("opt/app/", None),
            ("opt/app/old-1", b"1"),
            ("opt/app/old-2", b"2"),
            ("keep", b"kept\n"),
        ]
    )
    upper = _tar(
        [
            ("etc/", None),
            ("etc/.wh.secret", b""),
            ("opt/", None),
            ("opt/app/", None),
            ("opt/app/.wh..wh..opq", b""),
            ("opt/app/new", b"new\n"),
        ]
    )
    lo, up = tmp_path / "lower", tmp_path / "upper"
    unpack_layer(io.BytesIO(lower), str(lo))
    unpack_layer(io.BytesIO(upper), str(up))
    return lo, up


def test_whiteouts_and_opaque_dirs_in_a_real_overlay(tmp_path, layers, mounts):
    lo, up = layers
    merged = tmp_path / "merged"
    merged.mkdir()
    _mount(f"{up}:{lo}", merged)
    mounts.append(merged)

    assert not (merged / "etc/secret").exists()
    assert (merged / "etc/passwd").read_bytes().startswith(b"root:")
    assert sorted(os.listdir(merged / "etc")) == ["passwd"]
    assert sorted(os.listdir(merged / "opt/app")) == ["new"]
    assert (merged / "keep").read_bytes() == b"kept\n"
    # The lower layer itself is untouched.
    assert (lo / "etc/secret").exists() and (lo / "opt/app/old-1").exists()


def test_changes_through_overlay_become_a_layer_again(tmp_path, layers, mounts):
    lo, up = layers
    rw_upper, work, merged = tmp_path / "rw", tmp_path / "work", tmp_path / "m"
    for d in (rw_upper, work, merged):
        d.mkdir()
    _mount(f"{up}:{lo}", merged, upper=rw_upper, work=work)
    mounts.append(merged)
    os.unlink(merged / "keep")
    (merged / "etc/hostname").write_bytes(b"box\n")
    subprocess.run(["rm", "-rf", str(merged / "opt/app")], check=True)
    (merged / "opt/app").mkdir()
    (merged / "opt/app/fresh").write_bytes(b"f")
    subprocess.run(["umount", str(merged)], check=True)
    mounts.remove(merged)

    buf = io.BytesIO()
    diff_id, size = write_layer(str(rw_upper), buf)
    assert size == len(buf.getvalue())
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        names = tf.getnames()
    assert ".wh.keep" in names
    assert "etc/hostname" in names
    assert "opt/app/.wh..wh..opq" in names and "opt/app/fresh" in names

    # The new layer on top of the old two shows the same tree as the mount did.
    top = tmp_path / "top"
    res = unpack_layer(io.BytesIO(buf.getvalue()), str(top))
    assert res.diff_id == diff_id
    view = tmp_path / "view"
    view.mkdir()
    _mount(f"{top}:{up}:{lo}", view)
    mounts.append(view)
    assert not (view / "keep").exists()
    assert (view / "etc/hostname").read_bytes() == b"box\n"
    assert sorted(os.listdir(view / "opt/app")) == ["fresh"]
    assert sorted(os.listdir(view / "etc")) == ["hostname", "passwd"]
