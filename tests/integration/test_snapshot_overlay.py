"""Import two real layers into the overlay snapshotter, run on them, diff back.

The path ``image pull`` and ``docker commit`` take, with the real kernel:
each layer tar (built here, with a ``.wh.`` whiteout and an opaque
directory) is unpacked with ``unpack_layer`` into the writable directory of
a ``prepare``d snapshot and committed under its OCI chain ID; a view of the
top is mounted and must look as Docker shows the image. Then a container
snapshot on top is changed through its overlay mount and ``write_layer`` on
its upper directory gives a layer with the whiteout and the opaque marker,
which imports again to the same tree. Every mount is lazily unmounted in a
finalizer, newest first, and nothing under the tmp dir may stay mounted.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.layers import Mounter
from tests.layers import make_tar as _tar
from tests.layers import overlay_available as _overlay_available

from ketch.image.diff import write_layer
from ketch.image.snapshot import Kind, chain_id, writable_dir
from ketch.image.snapshot.overlay import OverlaySnapshotter
from ketch.image.unpack import unpack_layer

pytestmark = pytest.mark.root


LOWER = _tar([
    ("etc/", None),
    ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    ("etc/secret", b"lower secret\n"),
    ("opt/", None),
    ("opt/app/", None),
    ("opt/app/old-1", b"1"),
    ("opt/app/old-2", b"2"),
    ("keep", b"kept\n"),
])

UPPER = _tar([
    ("etc/", None),
    ("etc/.wh.secret", b""),
    ("opt/", None),
    ("opt/app/", None),
    ("opt/app/.wh..wh..opq", b""),
    ("opt/app/new", b"new\n"),
])


def _diff_id(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounter]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not _overlay_available():
        pytest.skip("no overlayfs in this kernel")
    base = tmp_path / "mnt"
    base.mkdir()
    m = Mounter(base)
    try:
        yield m
    finally:
        m.release(tmp_path)


def _import(sn: OverlaySnapshotter, layers: list[bytes]) -> list[str]:
    """Unpack each layer into a prepared snapshot, commit it by chain ID."""
    diff_ids: list[str] = []
    parent = None
    for i, blob in enumerate(layers):
        diff_ids.append(_diff_id(blob))
        name = chain_id(diff_ids)
        key = f"extract-{i}-{name}"
        res = unpack_layer(io.BytesIO(blob), writable_dir(sn.prepare(key, parent)))
        assert res.diff_id == diff_ids[-1]
        sn.commit(name, key)
        parent = name
    return diff_ids


def _check_image(root: Path) -> None:
    assert not (root / "etc/secret").exists()
    assert sorted(os.listdir(root / "etc")) == ["passwd"]
    assert (root / "etc/passwd").read_bytes().startswith(b"root:")
    assert sorted(os.listdir(root / "opt/app")) == ["new"]
    assert (root / "keep").read_bytes() == b"kept\n"


def test_import_run_and_diff(tmp_path: Path, mounts: Mounter) -> None:
    sn = OverlaySnapshotter(str(tmp_path / "snapshotter"))
    diff_ids = _import(sn, [LOWER, UPPER])
    top = chain_id(diff_ids)
    assert sn.stat(top).parent == diff_ids[0]  # chain ID of one layer is its diff ID
    assert sn.stat(top).kind is Kind.COMMITTED

    # The upper layer holds overlay's own whiteout forms.
    upper_fs = tmp_path / "snapshotter" / "snapshots" / "2" / "fs"
    st = os.lstat(upper_fs / "etc" / "secret")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(upper_fs / "opt" / "app", "trusted.overlay.opaque") == b"y"

    view = mounts.mount(sn.view("image-view", top), "view")
    _check_image(view)

    # Run a container on it and turn its changes into a layer.
    rootfs = mounts.mount(sn.prepare("container", top), "rootfs")
    os.unlink(rootfs / "keep")
    (rootfs / "etc/hostname").write_bytes(b"box\n")
    subprocess.run(["rm", "-rf", str(rootfs / "opt/app")], check=True)
    (rootfs / "opt/app").mkdir()
    (rootfs / "opt/app/fresh").write_bytes(b"f")
    mounts.unmount(rootfs)

    buf = io.BytesIO()
    diff_id, size = write_layer(writable_dir(sn.mounts("container")), buf)
    layer = buf.getvalue()
    assert size == len(layer) and diff_id == _diff_id(layer)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        names = tf.getnames()
    assert ".wh.keep" in names
    assert "etc/hostname" in names
    assert "opt/app/.wh..wh..opq" in names and "opt/app/fresh" in names
    assert not any("secret" in n for n in names)  # the lower whiteout is not a change

    # docker commit: the container snapshot becomes the new top layer.
    committed = chain_id([*diff_ids, diff_id])
    sn.commit(committed, "container")

    # Importing the three layers afresh gives the same tree as the committed one.
    fresh = OverlaySnapshotter(str(tmp_path / "fresh"))
    again = _import(fresh, [LOWER, UPPER, layer])
    assert chain_id(again) == committed
    for name, s in (("v-committed", sn), ("v-fresh", fresh)):
        root = mounts.mount(s.view(name, committed), name)
        assert not (root / "keep").exists()
        assert sorted(os.listdir(root / "etc")) == ["hostname", "passwd"]
        assert (root / "etc/hostname").read_bytes() == b"box\n"
        assert sorted(os.listdir(root / "opt/app")) == ["fresh"]

    # The original image view is unchanged by all of this.
    _check_image(view)
