"""The image service on overlayfs, for real: bootstrap busybox, mount a container rootfs.

The container's rootfs is mounted exactly as the engine will do it (from the
``Mount`` records, in ``Mount.cwd`` when set) and unmounted in a finalizer,
also when the test fails; a leak check then looks for mounts left behind.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.layers import Mounter

from ketch.image.service import BOOTSTRAP_CREATED_BY, ImageService
from ketch.image.snapshot.overlay import OverlaySnapshotter

pytestmark = pytest.mark.root


def _overlay_available() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        return False


def _busybox_available() -> bool:
    from ketch.errors import NotFound
    from ketch.image.bootstrap import find_static_busybox

    try:
        find_static_busybox()
    except NotFound:
        return False
    return True


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not _overlay_available():
        pytest.skip("no overlayfs in this kernel")
    if not _busybox_available():
        pytest.skip("no static busybox on this host")
    base = tmp_path / "mnt"
    base.mkdir()
    m = Mounter(base)
    try:
        yield m
    finally:
        m.release(tmp_path)


def test_bootstrap_busybox_and_run_from_its_rootfs(tmp_path: Path, mounter: Mounter) -> None:
    svc = ImageService(tmp_path / "images")
    assert isinstance(svc.snapshotter, OverlaySnapshotter)
    summary = svc.bootstrap_busybox()
    assert summary.repo_tags == ["busybox:latest"]
    assert svc.bootstrap_busybox().id == summary.id  # deterministic: same host, same image
    doc = svc.inspect("busybox")
    assert doc["Config"]["Cmd"] == ["sh"]
    assert any(e.startswith("PATH=") for e in doc["Config"]["Env"])
    assert len(doc["RootFS"]["Layers"]) == 1
    assert svc.history("busybox")[0]["CreatedBy"] == BOOTSTRAP_CREATED_BY

    mounts = svc.rootfs_mounts("busybox", "ctr-1")
    assert mounts[0].type == "overlay"
    root = mounter.mount(mounts, "ctr-1")
    assert (root / "bin" / "busybox").is_file()
    out = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "echo hi > /tmp/x; cat /tmp/x"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "hi\n"
    mounter.unmount(root)

    # The write went to the container's snapshot, not the image's layer.
    chain = svc.get("busybox").chain_id
    assert chain is not None
    [layer] = svc.snapshotter.view("look", chain)
    assert layer.type == "bind" and not os.path.exists(os.path.join(layer.source, "tmp", "x"))
    svc.snapshotter.remove("look")
    assert svc.gc().snapshots == []
    svc.snapshotter.remove("ctr-1")
    res = svc.remove("busybox")
    assert {"Deleted": chain} in res
    assert list(svc.snapshotter.walk()) == [] and list(svc.content.walk()) == []
    assert svc.check() == []
