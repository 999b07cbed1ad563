"""One suite for every Snapshotter (containerd's ``core/snapshots/testsuite``).

Each test runs against the copy-based ``NaiveSnapshotter`` (always) and the
``OverlaySnapshotter`` (only as root with overlayfs; skipped otherwise). The
mounts a snapshotter describes are really mounted when running as root, with
``mount(8)`` from ``Mount.cwd`` as a caller must; without root only single
bind mounts can be used, and their source directory stands in for the mount.
Every mount is lazily unmounted in a finalizer, newest first, and the test
then checks that nothing under its tmp dir is left in /proc/self/mountinfo.

The tail of the file tests what needs neither root nor mounts: chain IDs,
the kind lifecycle, and the overlay option strings (long-chain form, limits).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.layers import make_tar as _tar
from tests.layers import overlay_available as _overlay_available

from ketch.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    InvalidTransition,
    NotFound,
    NotSupported,
)
from ketch.image.snapshot import (
    Kind,
    Mount,
    Snapshotter,
    apply_layer,
    can_commit,
    chain_id,
    check_transition,
    writable_dir,
)
from ketch.image.snapshot.naive import NaiveSnapshotter
from ketch.image.snapshot.overlay import MAX_LOWERS, OverlaySnapshotter


def _root() -> bool:
    return os.geteuid() == 0


Factory = Callable[[Path], Snapshotter]

IMPLEMENTATIONS: dict[str, Factory] = {
    "naive": lambda root: NaiveSnapshotter(str(root)),
    "overlay": lambda root: OverlaySnapshotter(str(root)),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A factory for snapshotters of one implementation (re-opening a root is allowed)."""
    if request.param == "overlay":
        if not _root():
            pytest.skip("overlay snapshotter needs root")
        if not _overlay_available():
            pytest.skip("no overlayfs in this kernel")
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def sn(make: Factory, tmp_path: Path) -> Snapshotter:
    return make(tmp_path / "root")


class Mounter:
    """Mounts descriptions the way a caller must, and undoes every mount."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.active: list[Path] = []
        self.n = 0

    def mount(self, mounts: list[Mount]) -> Path:
        assert len(mounts) == 1, mounts
        m = mounts[0]
        if not _root():
            assert m.type == "bind", f"cannot use a {m.type} mount without root"
            return Path(m.source)
        self.n += 1
        target = self.base / f"mnt{self.n}"
        target.mkdir()
        cmd = ["mount"]
        if m.type != "bind":
            cmd += ["-t", m.type]
        cmd += ["-o", ",".join(m.options), m.source, str(target)]
        proc = subprocess.run(cmd, cwd=m.cwd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{cmd} (cwd={m.cwd}): {proc.stderr}"
        self.active.append(target)
        return target

    def unmount(self, target: Path) -> None:
        """Unmount before commit: a committed layer must not stay an upper dir."""
        if target in self.active:
            subprocess.run(["umount", str(target)], check=True, capture_output=True)
            self.active.remove(target)

    def cleanup(self) -> None:
        for target in reversed(self.active):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
        self.active.clear()


def _mounted_under(base: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if str(base) in line]


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    base = tmp_path / "mnt"
    base.mkdir()
    m = Mounter(base)
    try:
        yield m
    finally:
        m.cleanup()
        left = _mounted_under(tmp_path)
        assert not left, f"mounts left behind: {left}"
        shutil.rmtree(base, ignore_errors=True)


def _files(root: Path) -> dict[str, str]:
    """Regular files under root, relative path -> content."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.read_text()
    return out


def _layer(sn: Snapshotter, mounter: Mounter, name: str, parent: str | None,
           change: Callable[[Path], None]) -> None:
    """prepare, change through the mount, unmount, commit."""
    key = f"extract-{name}"
    target = mounter.mount(sn.prepare(key, parent))
    change(target)
    mounter.unmount(target)
    sn.commit(name, key)


# --------------------------------------------------------------------------
# Parametrized over the implementations.


def test_prepare_commit_view_chain(sn: Snapshotter, mounter: Mounter) -> None:
    def base(root: Path) -> None:
        (root / "etc").mkdir()
        (root / "etc" / "os-release").write_text("ketch\n")

    def second(root: Path) -> None:
        (root / "bin").mkdir()
        (root / "bin" / "sh").write_text("#!\n")
        (root / "etc" / "os-release").write_text("ketch 2\n")

    _layer(sn, mounter, "L1", None, base)
    _layer(sn, mounter, "L2", "L1", second)

    v1 = mounter.mount(sn.view("v1", "L1"))
    assert _files(v1) == {"etc/os-release": "ketch\n"}
    v2 = mounter.mount(sn.view("v2", "L2"))
    assert _files(v2) == {"etc/os-release": "ketch 2\n", "bin/sh": "#!\n"}
    assert sn.stat("v2").kind is Kind.VIEW
    assert sn.stat("L2").kind is Kind.COMMITTED
    assert sn.stat("L2").parent == "L1"


def test_view_is_read_only(sn: Snapshotter, mounter: Mounter) -> None:
    if not _root():
        pytest.skip("read-only is enforced by the mount, which needs root")
    _layer(sn, mounter, "L1", None, lambda r: (r / "f").write_text("x"))
    _layer(sn, mounter, "L2", "L1", lambda r: (r / "g").write_text("y"))
    for key, parent in (("v1", "L1"), ("v2", "L2")):
        target = mounter.mount(sn.view(key, parent))
        with pytest.raises(OSError):
            (target / "new").write_text("no")


def test_write_in_active_appears_in_view_of_child(sn: Snapshotter, mounter: Mounter) -> None:
    _layer(sn, mounter, "base", None, lambda r: (r / "a").write_text("a"))
    target = mounter.mount(sn.prepare("container", "base"))
    (target / "written").write_text("by the container\n")
    assert sn.mounts("container") == sn.mounts("container")  # stable descriptions
    mounter.unmount(target)
    sn.commit("image2", "container")
    _layer(sn, mounter, "child", "image2", lambda r: (r / "c").write_text("c"))
    view = mounter.mount(sn.view("v", "child"))
    assert _files(view) == {"a": "a", "written": "by the container\n", "c": "c"}


def test_deletions_hide_lower_files(sn: Snapshotter, mounter: Mounter) -> None:
    def base(root: Path) -> None:
        (root / "etc").mkdir()
        (root / "etc" / "passwd").write_text("root\n")
        (root / "etc" / "group").write_text("root\n")
        (root / "opt").mkdir()
        (root / "opt" / "old1").write_text("1")
        (root / "opt" / "old2").write_text("2")

    def upper(root: Path) -> None:
        (root / "etc" / "passwd").unlink()       # a whiteout in overlay
        shutil.rmtree(root / "opt")              # then recreated: an opaque dir
        (root / "opt").mkdir()
        (root / "opt" / "new").write_text("n")

    _layer(sn, mounter, "L1", None, base)
    _layer(sn, mounter, "L2", "L1", upper)
    _layer(sn, mounter, "L3", "L2", lambda r: (r / "top").write_text("t"))
    for key, parent in (("v2", "L2"), ("v3", "L3")):
        view = mounter.mount(sn.view(key, parent))
        files = _files(view)
        assert "etc/passwd" not in files and not (view / "etc" / "passwd").exists()
        assert files["etc/group"] == "root\n"
        assert sorted(os.listdir(view / "opt")) == ["new"]
    # The lower layer itself is untouched.
    assert _files(mounter.mount(sn.view("v1", "L1")))["etc/passwd"] == "root\n"


def test_remove_refuses_parents_with_children(sn: Snapshotter, mounter: Mounter) -> None:
    _layer(sn, mounter, "L1", None, lambda r: (r / "f").write_text("x"))
    sn.prepare("active", "L1")
    sn.view("view", "L1")
    with pytest.raises(Conflict, match="has children"):
        sn.remove("L1")
    sn.remove("active")
    with pytest.raises(Conflict):
        sn.remove("L1")
    sn.remove("view")
    sn.remove("L1")
    assert list(sn.walk()) == []
    with pytest.raises(NotFound):
        sn.stat("L1")
    with pytest.raises(NotFound):
        sn.remove("L1")


def test_remove_deletes_the_tree(sn: Snapshotter, tmp_path: Path, mounter: Mounter) -> None:
    _layer(sn, mounter, "L1", None, lambda r: (r / "f").write_text("x"))
    before = set(os.listdir(tmp_path / "root" / "snapshots"))
    assert len(before) == 1
    sn.remove("L1")
    assert os.listdir(tmp_path / "root" / "snapshots") == []


def test_stat_walk_and_labels(sn: Snapshotter, mounter: Mounter) -> None:
    sn.prepare("a", labels={"owner": "test"})
    sn.commit("A", "a", labels={"committed": "yes"})
    sn.prepare("b", "A")
    sn.view("c", "A")
    info = sn.stat("A")
    assert (info.name, info.parent, info.kind) == ("A", None, Kind.COMMITTED)
    assert info.labels == {"owner": "test", "committed": "yes"}
    assert info.created > 0
    walked = [(i.name, i.parent, i.kind) for i in sn.walk()]
    assert walked == [("A", None, Kind.COMMITTED), ("b", "A", Kind.ACTIVE),
                      ("c", "A", Kind.VIEW)]


def test_usage_counts_own_changes(sn: Snapshotter, mounter: Mounter) -> None:
    empty = sn.prepare("empty")
    u0 = sn.usage("empty")
    assert u0.inodes == 1  # the directory itself
    target = mounter.mount(empty)
    (target / "big").write_bytes(b"x" * 100_000)
    (target / "d").mkdir()
    (target / "d" / "small").write_bytes(b"y")
    os.link(target / "big", target / "d" / "hardlink")
    mounter.unmount(target)
    u = sn.usage("empty")
    assert u.inodes == 4  # root, big (once, despite the hard link), d, small
    assert u.size >= 100_000 + u0.size
    assert u.size < 2 * 100_000  # the hard link is counted once
    assert u.content == 100_001   # apparent sizes, no directories, the link once
    sn.commit("E", "empty")
    assert sn.usage("E") == u


def test_errors(sn: Snapshotter, mounter: Mounter) -> None:
    sn.prepare("a")
    with pytest.raises(AlreadyExists):
        sn.prepare("a")
    with pytest.raises(NotFound):
        sn.prepare("b", "missing")
    with pytest.raises(InvalidArgument, match="only committed"):
        sn.prepare("b", "a")  # an active snapshot is no parent
    with pytest.raises(NotFound):
        sn.commit("A", "missing")
    sn.commit("A", "a")
    with pytest.raises(NotFound):
        sn.commit("A2", "a")  # it is called A now
    with pytest.raises(InvalidArgument, match="committed"):
        sn.mounts("A")
    sn.view("v", "A")
    with pytest.raises(InvalidTransition, match="from View to Committed"):
        sn.commit("V", "v")
    sn.prepare("c", "A")
    with pytest.raises(AlreadyExists):
        sn.commit("A", "c")
    with pytest.raises(InvalidArgument):
        sn.prepare("")
    # Failed operations left nothing behind.
    assert [i.name for i in sn.walk()] == ["A", "v", "c"]


def test_metadata_survives_reopen_and_sweeps_leftovers(make: Factory, tmp_path: Path,
                                                       mounter: Mounter) -> None:
    sn = make(tmp_path / "root")
    _layer(sn, mounter, "L1", None, lambda r: (r / "f").write_text("x"))
    mounts = sn.prepare("b", "L1")
    leftover = tmp_path / "root" / "snapshots" / ".new-99"
    leftover.mkdir()
    (leftover / "junk").write_text("crash")
    again = make(tmp_path / "root")
    assert [(i.name, i.kind) for i in again.walk()] == [("L1", Kind.COMMITTED),
                                                         ("b", Kind.ACTIVE)]
    assert again.mounts("b") == mounts
    assert not leftover.exists()


def test_chain_of_150_layers(sn: Snapshotter, mounter: Mounter) -> None:
    n = 150
    parent = None
    for i in range(n):
        name = f"layer{i}"
        _layer(sn, mounter, name, parent,
               lambda r, i=i: (r / f"file{i:03d}").write_text(str(i)))
        parent = name
    mounts = sn.view("top", parent)
    if isinstance(sn, OverlaySnapshotter):
        assert mounts[0].cwd is not None, "150 absolute lowerdirs cannot fit in one page"
        assert len(",".join(mounts[0].options)) < 4096
    view = mounter.mount(mounts)
    files = _files(view)
    assert files == {f"file{i:03d}": str(i) for i in range(n)}
    # and a writable container on top of the whole chain
    target = mounter.mount(sn.prepare("container", parent))
    (target / "file000").write_text("changed")
    assert len(os.listdir(target)) == n
    assert writable_dir(sn.mounts("container"))
    assert _files(view)["file000"] == "0"


# --------------------------------------------------------------------------
# No root, no mounts.


def test_chain_id() -> None:
    a = "sha256:" + "a" * 64
    b = "sha256:" + "b" * 64
    c = "sha256:" + "c" * 64
    assert chain_id([a]) == a
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_id([a, b]) == ab
    assert chain_id([a, b, c]) == "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    with pytest.raises(InvalidArgument):
        chain_id([])
    with pytest.raises(InvalidArgument):
        chain_id(["nocolon"])


def test_kind_active_can_commit() -> None:
    assert can_commit(Kind.ACTIVE)
    check_transition("k", Kind.ACTIVE, Kind.COMMITTED)


def test_kind_view_cannot_commit() -> None:
    assert not can_commit(Kind.VIEW)
    with pytest.raises(InvalidTransition, match="from View to Committed"):
        check_transition("k", Kind.VIEW, Kind.COMMITTED)


def test_kind_committed_is_final() -> None:
    assert not can_commit(Kind.COMMITTED)
    for to in Kind:
        with pytest.raises(InvalidTransition):
            check_transition("k", Kind.COMMITTED, to)


def test_writable_dir() -> None:
    assert writable_dir([Mount("bind", "/s/1/fs", ["rbind", "rw"])]) == "/s/1/fs"
    ov = Mount("overlay", "overlay", ["upperdir=2/fs", "workdir=2/work", "lowerdir=1/fs"],
               cwd="/s")
    assert writable_dir([ov]) == "/s/2/fs"
    with pytest.raises(InvalidArgument):
        writable_dir([Mount("bind", "/s/1/fs", ["rbind", "ro"])])
    with pytest.raises(InvalidArgument):
        writable_dir([Mount("overlay", "overlay", ["lowerdir=2/fs:1/fs"])])


def _overlay_chain(tmp_path: Path, n: int, **kw: object) -> OverlaySnapshotter:
    sn = OverlaySnapshotter(str(tmp_path / "o"), index_off=False, **kw)  # type: ignore[arg-type]
    parent = None
    for i in range(n):
        sn.prepare(f"k{i}", parent)
        sn.commit(f"c{i}", f"k{i}")
        parent = f"c{i}"
    return sn


def test_overlay_descriptions(tmp_path: Path) -> None:
    sn = _overlay_chain(tmp_path, 2)
    snaps = str(tmp_path / "o" / "snapshots")
    assert sn.prepare("a0") == [Mount("bind", f"{snaps}/3/fs", ["rbind", "rw"])]
    assert sn.view("v0") == [Mount("bind", f"{snaps}/4/fs", ["rbind", "ro"])]
    assert sn.view("v1", "c0") == [Mount("bind", f"{snaps}/1/fs", ["rbind", "ro"])]
    assert sn.view("v2", "c1") == [
        Mount("overlay", "overlay", [f"lowerdir={snaps}/2/fs:{snaps}/1/fs"])]
    assert sn.prepare("a2", "c1") == [Mount("overlay", "overlay", [
        f"workdir={snaps}/7/work", f"upperdir={snaps}/7/fs",
        f"lowerdir={snaps}/2/fs:{snaps}/1/fs"])]


def test_overlay_index_off(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(str(tmp_path / "o"), index_off=True)
    sn.prepare("a")
    sn.commit("A", "a")
    assert sn.prepare("b", "A")[0].options[0] == "index=off"


def test_overlay_long_chain_uses_relative_paths(tmp_path: Path) -> None:
    sn = _overlay_chain(tmp_path, 5, page_size=256)
    [m] = sn.prepare("top", "c4")
    assert m.cwd == str(tmp_path / "o" / "snapshots")
    assert m.options == ["workdir=6/work", "upperdir=6/fs",
                         "lowerdir=5/fs:4/fs:3/fs:2/fs:1/fs"]


def test_overlay_options_too_long_for_a_page(tmp_path: Path) -> None:
    _overlay_chain(tmp_path, 5)
    sn = OverlaySnapshotter(str(tmp_path / "o"), index_off=False, page_size=40)
    with pytest.raises(NotSupported, match="kernel accepts 39"):
        sn.prepare("top", "c4")
    # Refused before anything was made.
    assert [i.name for i in sn.walk()] == [f"c{i}" for i in range(5)]
    assert sorted(os.listdir(tmp_path / "o" / "snapshots")) == [str(i) for i in range(1, 6)]


def test_overlay_at_most_500_lowers(tmp_path: Path) -> None:
    sn = _overlay_chain(tmp_path, MAX_LOWERS + 1, page_size=1 << 16)
    [m] = sn.view("ok", f"c{MAX_LOWERS - 1}")
    assert m.options[0].count(":") == MAX_LOWERS - 1
    with pytest.raises(NotSupported, match="at most 500 lower layers"):
        sn.view("too-many", f"c{MAX_LOWERS}")


def test_apply_layers_with_whiteouts(sn: Snapshotter, mounter: Mounter) -> None:
    if isinstance(sn, OverlaySnapshotter) and not _root():
        pytest.skip("overlay whiteouts need root")
    lower = _tar([("etc/", None), ("etc/passwd", b"root\n"), ("etc/secret", b"s\n"),
                  ("opt/", None), ("opt/old", b"o"), ("keep", b"k")])
    upper = _tar([("etc/", None), ("etc/.wh.secret", b""), ("opt/", None),
                  ("opt/.wh..wh..opq", b""), ("opt/new", b"n")])
    diff_ids: list[str] = []
    parent = None
    for i, blob in enumerate((lower, upper)):
        diff_ids.append("sha256:" + hashlib.sha256(blob).hexdigest())
        key = f"extract-{i}"
        res = apply_layer(sn.prepare(key, parent), io.BytesIO(blob))
        assert res.diff_id == diff_ids[-1]
        parent = chain_id(diff_ids)
        sn.commit(parent, key)
    assert parent is not None
    view = mounter.mount(sn.view("v", parent))
    assert _files(view) == {"etc/passwd": "root\n", "opt/new": "n", "keep": "k"}
    # Applying onto an active snapshot that already has files (naive: a copy).
    mounts = sn.prepare("third", parent)
    apply_layer(mounts, io.BytesIO(_tar([(".wh.keep", b""), ("added", b"a")])))
    sn.commit("L3", "third")
    files = _files(mounter.mount(sn.view("v3", "L3")))
    assert files == {"etc/passwd": "root\n", "opt/new": "n", "added": "a"}
    assert _files(view)["keep"] == "k"
