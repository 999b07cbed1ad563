"""unpack_layer against hostile and ordinary layers, built here with tarfile.

Every hostile layer must be refused with InvalidArgument and leave nothing
behind: no target, no temporary directory beside it, nothing outside.
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field

import pytest

from ketch.errors import AlreadyExists, InvalidArgument, NotFound, NotSupported
from ketch.image import unpack as unpack_mod
from ketch.image.unpack import UnpackResult, unpack_layer


@dataclass
class E:
    """One tar entry for the builders below."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    pax: dict[str, str] = field(default_factory=dict)
    dev: tuple[int, int] = (0, 0)
    mtime: int = 1_700_000_000


def make_tar(entries: list[E], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = e.type
            ti.mode = e.mode
            ti.mtime = e.mtime
            ti.linkname = e.linkname
            ti.pax_headers = dict(e.pax)
            ti.devmajor, ti.devminor = e.dev
            if e.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def F(name: str, data: bytes = b"x", **kw: object) -> E:  # noqa: N802 - reads like a table
    return E(name, data=data, **kw)  # type: ignore[arg-type]


def D(name: str, **kw: object) -> E:  # noqa: N802
    kw.setdefault("mode", 0o755)
    return E(name, type=tarfile.DIRTYPE, **kw)  # type: ignore[arg-type]


def S(name: str, target: str) -> E:  # noqa: N802
    return E(name, type=tarfile.SYMTYPE, linkname=target, mode=0o777)


def H(name: str, target: str) -> E:  # noqa: N802
    return E(name, type=tarfile.LNKTYPE, linkname=target)


def _unknown_type_tar() -> bytes:
    return make_tar([E("weird", type=b"Z")])


def _many_pax_headers() -> bytes:
    """Three 900 KiB pax headers in a row before one file."""
    one = make_tar([F("f", pax={"comment": "x" * (900 << 10)})])
    # Keep the first header block and its data, three times, then the member.
    with tarfile.open(fileobj=io.BytesIO(one)) as tf:
        member = tf.next()
        assert member is not None
        ext_end = member.offset_data - 512  # where the pax header + data ended
    return one[:ext_end] * 3 + one[ext_end:]


def _huge_sparse_map() -> bytes:
    """A PAX 1.0 sparse file whose map (read from the data) never ends."""
    count = 1_000_000
    sparse_map = f"{count}\n".encode() + b"0\n1\n" * count
    sparse_map += b"\0" * (-len(sparse_map) % 512)
    return make_tar(
        [
            F(
                "GNUSparseFile.0/f",
                sparse_map + b"x",
                pax={
                    "GNU.sparse.major": "1",
                    "GNU.sparse.minor": "0",
                    "GNU.sparse.name": "f",
                    "GNU.sparse.realsize": "1",
                },
            )
        ]
    )


def _gnu_long_name() -> bytes:
    return make_tar([F("a/" * 2100 + "f")], fmt=tarfile.GNU_FORMAT)


MALICIOUS: dict[str, tuple[list[E] | None, dict[str, object]]] = {
    "dotdot escape": ([F("../evil")], {}),
    "dot-slash dotdot escape": ([F("./../../evil")], {}),
    "dotdot after a component": ([D("a"), F("a/../../evil")], {}),
    "absolute dotdot escape": ([F("/../evil")], {}),
    "absolute hardlink to a host file": ([H("pw", "/etc/hostname")], {}),
    "symlink then write through": ([S("link", "/etc"), F("link/passwd")], {}),
    "symlink to root then write through": ([S("x", "/"), F("x/etc/passwd")], {}),
    "symlink chain then write through": (
        [S("a", "b"), S("b", "/etc"), F("a/passwd")],
        {},
    ),
    "relative symlink out of the root": ([D("d"), S("d/up", "../../..")], {}),
    "symlink loop": ([S("l1", "l2"), S("l2", "l1"), F("l1/x")], {}),
    "hardlink to outside": ([H("h", "../../etc/passwd")], {}),
    "hardlink to a missing file": ([H("h", "nothere")], {}),
    "hardlink to a symlink pointing outside": ([S("s", "/etc/passwd"), H("h", "s")], {}),
    "hardlink to a directory": ([D("d"), H("h", "d")], {}),
    "char device not allowed": (
        [E("null", type=tarfile.CHRTYPE, dev=(1, 3))],
        {"allow_devices": False},
    ),
    "block device not allowed": (
        [E("sda", type=tarfile.BLKTYPE, dev=(8, 0))],
        {"allow_devices": False},
    ),
    "name longer than PATH_MAX": ([F("a/" * 2100 + "f")], {}),
    "component longer than NAME_MAX": ([F("x" * 300)], {}),
    "huge pax header": ([F("f", pax={"comment": "x" * (2 << 20)})], {}),
    "duplicate entries": ([F("f", b"1"), F("f", b"2")], {}),
    "directory replaced by file": ([D("d"), F("d")], {}),
    "file replaced by directory": ([F("f"), D("f")], {}),
    "implicit directory replaced by file": ([F("d/x"), F("d")], {}),
    "parent is a file": ([F("f"), F("f/x")], {}),
    "whiteout of a path outside": ([F("../.wh.evil")], {}),
    "whiteout of dotdot": ([D("d"), F("d/.wh...")], {}),
    "whiteout of dot": ([F(".wh..")], {}),
    "whiteout through a symlink": ([S("l", "/etc"), F("l/.wh.passwd")], {}),
    "overlay xattr smuggled in": (
        [D("d", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})],
        {},
    ),
    "unknown entry type": (None, {"raw": "unknown"}),
    "GNU long name over PATH_MAX": (None, {"raw": "gnulong"}),
    "root replaced by file": ([F(".")], {}),
    "run of extended headers": (None, {"raw": "paxrun"}),
    "endless sparse map": (None, {"raw": "sparsemap"}),
}


def _bytes_for(entries: list[E] | None, opts: dict[str, object]) -> bytes:
    raw = opts.get("raw")
    if raw == "unknown":
        return _unknown_type_tar()
    if raw == "gnulong":
        return _gnu_long_name()
    if raw == "paxrun":
        return _many_pax_headers()
    if raw == "sparsemap":
        return _huge_sparse_map()
    assert entries is not None
    return make_tar(entries)


def assert_nothing_left(parent: os.PathLike[str] | str) -> None:
    left = sorted(os.listdir(parent))
    assert left == [], f"left behind: {left}"


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layer_is_refused(tmp_path, case):
    entries, opts = MALICIOUS[case]
    data = _bytes_for(entries, opts)
    work = tmp_path / "work"
    work.mkdir()
    kwargs = {k: v for k, v in opts.items() if k != "raw"}
    with pytest.raises(InvalidArgument) as info:
        unpack_layer(io.BytesIO(data), str(work / "target"), **kwargs)  # type: ignore[arg-type]
    assert str(info.value)
    assert_nothing_left(work)
    assert not (tmp_path / "evil").exists()


def test_corpus_is_big_enough():
    assert len(MALICIOUS) >= 20


def test_error_names_the_entry(tmp_path):
    data = make_tar([S("link", "/etc"), F("link/passwd")])
    with pytest.raises(InvalidArgument, match="link/passwd"):
        unpack_layer(io.BytesIO(data), str(tmp_path / "t"))


def test_truncated_and_garbage_layers(tmp_path):
    good = make_tar([F("f", os.urandom(50_000))])
    gz = gzip.compress(good)
    for data in (good[:1200], b"not a tar at all" * 100, gz[: len(gz) // 2], gz[:-4]):
        with pytest.raises(InvalidArgument):
            unpack_layer(io.BytesIO(data), str(tmp_path / "t"))
        assert_nothing_left(tmp_path)


def test_media_type_only_improves_the_error(tmp_path):
    with pytest.raises(InvalidArgument, match=r"declared as application/vnd\.oci.*gzip"):
        unpack_layer(
            io.BytesIO(b"garbage" * 200),
            str(tmp_path / "t"),
            media_type="application/vnd.oci.image.layer.v1.tar+gzip",
        )
    assert_nothing_left(tmp_path)


# -- ordinary layers ----------------------------------------------------------


def _tree(entries: list[E]) -> bytes:
    return make_tar(entries)


def test_regular_layer(tmp_path):
    data = _tree(
        [
            D("bin", mode=0o755),
            F("bin/tool", b"#!/bin/sh\n", mode=0o4755),
            D("tmp", mode=0o1777),
            S("bin/sh", "tool"),
            S("abs", "/bin/tool"),
            H("bin/tool2", "bin/tool"),
            E("pipe", type=tarfile.FIFOTYPE, mode=0o600),
            F("deep/implicit/file", b"z"),
            F("/absolute/name", b"a"),
        ]
    )
    target = tmp_path / "t"
    res = unpack_layer(io.BytesIO(data), str(target), allow_devices=False)
    assert isinstance(res, UnpackResult)
    assert res.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert res.files == 9
    # File data, plus each symlink's target length (dockerd's lstat sizes).
    assert res.size == len(b"#!/bin/sh\n") + 2 + len("tool") + len("/bin/tool")
    assert os.listdir(tmp_path) == ["t"]
    tool = os.lstat(target / "bin/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755
    assert tool.st_mtime == 1_700_000_000
    assert tool.st_nlink == 2
    assert os.lstat(target / "bin/tool2").st_ino == tool.st_ino
    assert stat.S_IMODE(os.lstat(target / "tmp").st_mode) == 0o1777
    assert os.lstat(target / "tmp").st_mtime == 1_700_000_000
    assert os.readlink(target / "bin/sh") == "tool"
    assert os.readlink(target / "abs") == "/bin/tool"
    assert stat.S_ISFIFO(os.lstat(target / "pipe").st_mode)
    assert (target / "deep/implicit/file").read_bytes() == b"z"
    assert (target / "absolute/name").read_bytes() == b"a"  # as moby: relative to root
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o755


def test_symlink_inside_root_is_followed_like_a_chroot(tmp_path):
    data = _tree([D("usr"), D("usr/lib"), S("lib", "usr/lib"), F("lib/libc.so", b"c")])
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(data), str(target))
    assert (target / "usr/lib/libc.so").read_bytes() == b"c"
    assert os.path.islink(target / "lib")


def test_mtime_nanoseconds_from_pax(tmp_path):
    data = _tree([F("f", pax={"mtime": "1700000000.123456789"})])
    unpack_layer(io.BytesIO(data), str(tmp_path / "t"))
    assert os.lstat(tmp_path / "t/f").st_mtime_ns == 1_700_000_000_123_456_789


def test_directory_mtime_survives_children(tmp_path):
    data = _tree([D("d", mtime=1000), F("d/a"), F("d/b")])
    unpack_layer(io.BytesIO(data), str(tmp_path / "t"))
    assert os.lstat(tmp_path / "t/d").st_mtime == 1000


def test_readonly_directory_is_filled_before_chmod(tmp_path):
    data = _tree([D("ro", mode=0o555), F("ro/f", b"1")])
    unpack_layer(io.BytesIO(data), str(tmp_path / "t"))
    assert (tmp_path / "t/ro/f").read_bytes() == b"1"
    assert stat.S_IMODE(os.lstat(tmp_path / "t/ro").st_mode) == 0o555


def test_empty_layer(tmp_path):
    data = b"\0" * 1024
    res = unpack_layer(io.BytesIO(data), str(tmp_path / "t"))
    assert res.files == 0
    assert res.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_target_must_be_absent_or_empty(tmp_path):
    data = _tree([F("f")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_bytes(b"")
    with pytest.raises(AlreadyExists):
        unpack_layer(io.BytesIO(data), str(tmp_path / "full"))
    (tmp_path / "empty").mkdir()
    unpack_layer(io.BytesIO(data), str(tmp_path / "empty"))
    assert (tmp_path / "empty/f").exists()
    assert sorted(os.listdir(tmp_path)) == ["empty", "full"]


def test_target_directory_must_exist(tmp_path):
    with pytest.raises(NotFound):
        unpack_layer(io.BytesIO(_tree([F("f")])), str(tmp_path / "no/such/t"))


def test_user_xattrs_from_pax(tmp_path):
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        pytest.skip("filesystem has no user xattrs")
    data = _tree([F("f", pax={"SCHILY.xattr.user.k": "v\udcff"})])
    unpack_layer(io.BytesIO(data), str(tmp_path / "t"))
    assert os.getxattr(tmp_path / "t/f", "user.k") == b"v\xff"


def test_sparse_file(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("no tar")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(8 << 20)
        f.write(b"end")
        f.seek(0)
        f.write(b"start")
    for fmt in ("gnu", "posix"):
        layer = tmp_path / f"l-{fmt}.tar"
        subprocess.run(
            ["tar", "-S", f"--format={fmt}", "-cf", str(layer), "-C", str(src), "sparse"],
            check=True,
        )
        target = tmp_path / f"t-{fmt}"
        with open(layer, "rb") as f:
            unpack_layer(f, str(target))
        data = (target / "sparse").read_bytes()
        assert data == (src / "sparse").read_bytes()
        assert os.lstat(target / "sparse").st_blocks * 512 < (8 << 20)


# -- compression ----------------------------------------------------------------


def _payload() -> bytes:
    return _tree([D("d"), F("d/f", os.urandom(300_000)), F("g", b"hello")])


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("kind", ["plain", "gzip", "gzip-multi", "zstd"])
def test_compression_is_detected_and_diff_id_is_uncompressed(tmp_path, kind):
    plain = _payload()
    if kind == "plain":
        blob = plain
    elif kind == "gzip":
        blob = gzip.compress(plain)
    elif kind == "gzip-multi":
        blob = gzip.compress(plain[:10_000]) + gzip.compress(plain[10_000:])
    else:
        if shutil.which("zstd") is None:
            pytest.skip("no zstd binary to make the fixture")
        blob = _zstd(plain)
    # A wrong media type is only a hint; the magic bytes decide.
    res = unpack_layer(
        io.BytesIO(blob), str(tmp_path / "t"), media_type="application/vnd.oci.image.layer.v1.tar"
    )
    assert res.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert (tmp_path / "t/g").read_bytes() == b"hello"


def _hide_zstandard(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "zstandard":
            raise ImportError("hidden for the test")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "zstandard", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_zstd_through_the_binary(tmp_path, monkeypatch):
    if shutil.which("zstd") is None:
        pytest.skip("no zstd binary")
    plain = _payload()
    blob = _zstd(plain)
    _hide_zstandard(monkeypatch)
    res = unpack_layer(io.BytesIO(blob), str(tmp_path / "t"))
    assert res.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()


def test_bad_zstd_through_the_binary(tmp_path, monkeypatch):
    if shutil.which("zstd") is None:
        pytest.skip("no zstd binary")
    blob = _zstd(_payload())[:2000]
    _hide_zstandard(monkeypatch)
    with pytest.raises(InvalidArgument):
        unpack_layer(io.BytesIO(blob), str(tmp_path / "t"))
    assert_nothing_left(tmp_path)


def test_zstd_without_any_decoder(tmp_path, monkeypatch):
    _hide_zstandard(monkeypatch)
    monkeypatch.setattr(unpack_mod.shutil, "which", lambda name: None)
    with pytest.raises(NotSupported, match="zstd"):
        unpack_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 64), str(tmp_path / "t"))
    assert_nothing_left(tmp_path)


# -- whiteouts -------------------------------------------------------------------


def _parent(tmp_path):
    parent = tmp_path / "parent"
    (parent / "a").mkdir(parents=True)
    (parent / "a/x").write_bytes(b"x")
    (parent / "a/y").write_bytes(b"y")
    (parent / "b").write_bytes(b"b")
    (parent / "c/old").mkdir(parents=True)
    (parent / "c/old/f").write_bytes(b"old")
    (parent / "keep").write_bytes(b"k")
    (parent / "e").mkdir()
    return parent


def test_naive_whiteouts_delete_the_lower(tmp_path):
    parent = _parent(tmp_path)
    data = _tree(
        [
            F("a/.wh.x", b""),
            F(".wh.b", b""),
            D("c"),
            F("c/.wh..wh..opq", b""),
            F("c/new", b"n"),
            F(".wh.nothing", b""),
            F("e", b"file replaces dir"),
            F(".wh..wh.plnk", b""),
        ]
    )
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(data), str(target), whiteout_mode="naive", parent=str(parent))
    assert sorted(os.listdir(target)) == ["a", "c", "e", "keep"]
    assert os.listdir(target / "a") == ["y"]
    assert os.listdir(target / "c") == ["new"]
    assert (target / "e").read_bytes() == b"file replaces dir"
    assert (parent / "a/x").exists()  # the parent itself is untouched


def test_naive_refuses_writing_through_a_parent_symlink(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    os.symlink("/etc", parent / "etc")
    os.symlink("../../../..", parent / "up")
    for entry in ("etc/passwd", "up/x", "etc/.wh.passwd"):
        work = tmp_path / "work"
        work.mkdir()
        with pytest.raises(InvalidArgument, match="points outside"):
            unpack_layer(
                io.BytesIO(_tree([F(entry)])),
                str(work / "t"),
                whiteout_mode="naive",
                parent=str(parent),
            )
        assert_nothing_left(work)
        work.rmdir()


def test_naive_without_parent_is_a_fresh_tree(tmp_path):
    data = _tree([F(".wh.gone", b""), D("d"), F("d/.wh..wh..opq", b""), F("d/f")])
    unpack_layer(io.BytesIO(data), str(tmp_path / "t"), whiteout_mode="naive")
    assert sorted(os.listdir(tmp_path / "t")) == ["d"]
    assert os.listdir(tmp_path / "t/d") == ["f"]


def test_parent_needs_naive_mode(tmp_path):
    with pytest.raises(InvalidArgument):
        unpack_layer(io.BytesIO(b""), str(tmp_path / "t"), parent=str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts need root")
def test_overlay_whiteouts_become_devices_and_xattrs(tmp_path):
    data = _tree([F(".wh.gone", b""), D("d"), F("d/.wh..wh..opq", b""), F("d/f")])
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(data), str(target))
    st = os.lstat(target / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(target / "d", "trusted.overlay.opaque") == b"y"
    assert not (target / "d/.wh..wh..opq").exists()
    assert not (target / ".wh.gone").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root")
def test_ownership_and_capabilities_when_root(tmp_path):
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # cap_net_bind_service+ep, VFS_CAP_REVISION_2
    ti_file = F(
        "ping",
        b"elf",
        mode=0o4755,
        pax={"SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")},
    )
    data = make_tar([ti_file])
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as src,
        tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for m in src:
            m.uid, m.gid = 1234, 5678
            dst.addfile(m, src.extractfile(m))
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(buf.getvalue()), str(target))
    st = os.lstat(target / "ping")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert stat.S_IMODE(st.st_mode) == 0o4755
    try:
        assert os.getxattr(target / "ping", "security.capability") == cap
    except OSError:
        pytest.skip("filesystem has no security xattrs")


SAME_LAYER = [
    # (entries, expected listing of the root, expected listing of d or None)
    ([F("f", b"mine"), F(".wh.f", b"")], ["d", "f"], None),
    ([F(".wh.f", b""), F("f", b"mine")], ["d", "f"], None),
    ([F(".wh.d", b""), D("d"), F("d/new")], ["d", "f"], ["new"]),
    ([D("d"), F("d/new"), F(".wh.d", b"")], ["d", "f"], ["new"]),
    ([F(".wh.d", b""), F("d/new")], ["d", "f"], ["new"]),
    ([D("d/sub"), F(".wh.d", b"")], ["d", "f"], ["sub"]),
]


@pytest.mark.parametrize("entries, top, in_d", SAME_LAYER)
def test_whiteout_and_entry_in_the_same_layer_naive(tmp_path, entries, top, in_d):
    """OCI: a whiteout hides lower layers only; this layer's entry stays."""
    parent = tmp_path / "parent"
    (parent / "d").mkdir(parents=True)
    (parent / "d/old").write_bytes(b"old")
    (parent / "f").write_bytes(b"lower")
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(_tree(entries)), str(target), whiteout_mode="naive", parent=str(parent))
    assert sorted(os.listdir(target)) == top
    if in_d is not None:
        assert sorted(os.listdir(target / "d")) == in_d
    if "f" in [e.name for e in entries]:
        assert (target / "f").read_bytes() == b"mine"


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts need root")
@pytest.mark.parametrize("entries, top, in_d", SAME_LAYER)
def test_whiteout_and_entry_in_the_same_layer_overlay(tmp_path, entries, top, in_d):
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(_tree(entries)), str(target))
    names = [e.name for e in entries]
    if "f" in names:
        assert (target / "f").read_bytes() == b"mine"
    if in_d is not None:
        assert sorted(os.listdir(target / "d")) == in_d
        assert os.getxattr(target / "d", "trusted.overlay.opaque") == b"y"


def test_duplicate_whiteouts_are_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="duplicate"):
        unpack_layer(
            io.BytesIO(_tree([F(".wh.x", b""), F(".wh.x", b"")])),
            str(tmp_path / "t"),
            whiteout_mode="naive",
        )
    assert_nothing_left(tmp_path)
