"""The hand-written header parser of unpack.py against tarfile, the reference.

``_plain_header`` must either give exactly the TarInfo tarfile gives for a
block, or decline (None) and let tarfile read it. Two ways of checking:
field by field on headers written in every format, and a differential run
of ``unpack_layer`` with the fast path on and off over mutated archives
(same tree, same result, same error message).
"""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile

import pytest

from ketch.errors import KetchError
from ketch.image import unpack as unpack_mod
from ketch.image.unpack import unpack_layer

FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname",
          "uname", "gname", "devmajor", "devminor", "offset", "offset_data", "pax_headers",
          "sparse")


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object
           ) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = int(kw.get("mode", 0o644))  # type: ignore[call-overload]
    ti.uid = int(kw.get("uid", 0))  # type: ignore[call-overload]
    ti.gid = int(kw.get("gid", 0))  # type: ignore[call-overload]
    ti.uname = str(kw.get("uname", ""))
    ti.gname = str(kw.get("gname", ""))
    ti.mtime = int(kw.get("mtime", 1_700_000_000))  # type: ignore[call-overload]
    ti.linkname = str(kw.get("linkname", ""))
    ti.devmajor, ti.devminor = kw.get("dev", (0, 0))  # type: ignore[misc]
    ti.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return ti, data


def _archive(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


ORDINARY = [
    _entry("etc/", tarfile.DIRTYPE, mode=0o755),
    _entry("etc/hostname", data=b"box\n", uid=1000, gid=100, uname="me", gname="users"),
    _entry("etc/empty"),
    _entry("usr/bin/sh", tarfile.SYMTYPE, linkname="busybox", mode=0o777),
    _entry("usr/bin/ln", tarfile.LNKTYPE, linkname="etc/hostname"),
    _entry("dev/null", tarfile.CHRTYPE, dev=(1, 3), mode=0o666),
    _entry("dev/sda", tarfile.BLKTYPE, dev=(8, 0), mode=0o660),
    _entry("run/fifo", tarfile.FIFOTYPE),
    _entry("opt/suid", data=b"x" * 1000, mode=0o4755),
    # Between 100 and 255 bytes: ustar writes it with the prefix field.
    _entry("deep/" + "d" * 120 + "/file", data=b"y" * 513),
    _entry("deep/" + "d" * 120 + "/dir/", tarfile.DIRTYPE, mode=0o700),
    _entry("é/ünïcode", data=b"z"),
]


def _members_by_tarfile(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8",
                      errors="surrogateescape") as tf:
        return tf.getmembers()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_plain_headers_parse_as_tarfile_parses_them(fmt):
    data = _archive(ORDINARY, fmt)
    taken = 0
    for ref in _members_by_tarfile(data):
        if ref.offset_data - ref.offset != 512:
            continue  # behind an extended header: tarfile's business
        block = data[ref.offset:ref.offset + 512]
        got = unpack_mod._plain_header(block, ref.offset, "utf-8", "surrogateescape")
        assert got is not None, ref.name
        taken += 1
        for f in FIELDS:
            assert getattr(got, f) == getattr(ref, f), (ref.name, f)
    assert taken >= len(ORDINARY) - 3


def _header(**fields: bytes) -> bytes:
    """One ustar block with raw field values and a correct unsigned checksum."""
    ti, _ = _entry("f", data=b"")
    block = bytearray(ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
    where = {"name": (0, 100), "mode": (100, 8), "size": (124, 12), "mtime": (136, 12),
             "type": (156, 1), "prefix": (345, 155)}
    for key, value in fields.items():
        off, n = where[key]
        block[off:off + n] = value.ljust(n, b"\0")[:n]
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


@pytest.mark.parametrize("block", [
    b"\0" * 512,  # end of archive
    _header(size=b"\x80" + b"\0" * 10 + b"\x05"),  # base-256 number
    _header(mode=b"0644x"),  # not octal
    _header(mode=b"0649"),  # a 9
    _header(mode=b"+644"),  # a sign tarfile happens to accept
    _header(type=b"x"),  # pax header
    _header(type=b"L"),  # GNU long name
    _header(type=b"S"),  # old GNU sparse
    _header(type=b"Z"),  # unknown
], ids=["zeros", "base256", "junk", "nine", "sign", "pax", "gnulong", "sparse", "unknown"])
def test_unusual_headers_are_left_to_tarfile(block):
    assert unpack_mod._plain_header(block, 0, "utf-8", "surrogateescape") is None


def test_bad_and_signed_checksums_are_left_to_tarfile():
    block = bytearray(_header())
    block[148:156] = b"0000001\0"
    assert unpack_mod._plain_header(bytes(block), 0, "utf-8", "surrogateescape") is None
    # A high byte makes the signed sum differ; a signed checksum is valid for
    # tarfile but not taken here.
    block = bytearray(_header(name=b"\xff"))
    block[148:156] = b"        "
    signed = 256 + sum(b - 256 if b > 127 else b for b in block) - 256
    block[148:156] = b"%06o\0 " % signed
    assert unpack_mod._plain_header(bytes(block), 0, "utf-8", "surrogateescape") is None


# --------------------------------------------------------------------------
# Differential: unpack_layer with and without the fast path.


def _snapshot(root: str) -> list[tuple[str, int, int, int, int, int, int, bytes]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    body = f.read()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p).encode()
            else:
                body = b""
            # Directories made for missing parents carry the time of the run.
            mtime = 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out.append((os.path.relpath(p, root), st.st_mode, st.st_uid, st.st_gid,
                        st.st_size, mtime, st.st_nlink, body))
    return out


def _outcome(data: bytes, target: str, fast: bool, monkeypatch,
             whiteout_mode: str = "naive") -> object:
    """The tree or the error; ``fast=False``: tarfile parses every header."""
    if not fast:
        monkeypatch.setattr(unpack_mod, "_plain_header", lambda *a: None)
    try:
        res = unpack_layer(io.BytesIO(data), target, allow_devices=os.geteuid() == 0,
                           whiteout_mode=whiteout_mode)  # type: ignore[arg-type]
    except KetchError as exc:
        return (type(exc).__name__, str(exc).replace(target, "<target>"))
    finally:
        monkeypatch.undo()
    return (res, _snapshot(target))


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Archives with one header byte changed, or cut short, or padded."""
    offsets = [m.offset for m in _members_by_tarfile(data)]
    out = [data, data[: len(data) // 2], data[:-1024], data + b"\0" * 4096, data + b"junk"]
    for _ in range(count):
        b = bytearray(data)
        block = rng.choice(offsets)
        pos = block + rng.randrange(512)
        b[pos] = rng.choice([0, 0x20, 0x30, 0x37, 0x38, 0x2F, 0x80, 0xFF, rng.randrange(256)])
        if rng.random() < 0.7:  # mostly keep the checksum right, so the header gets parsed
            b[block + 148:block + 156] = b"        "
            b[block + 148:block + 156] = b"%06o\0 " % sum(b[block:block + 512])
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_fast_path_changes_nothing(tmp_path, monkeypatch, fmt):
    entries = [e for e in ORDINARY if e[0].type not in (tarfile.CHRTYPE, tarfile.BLKTYPE)
               or os.geteuid() == 0]
    data = _archive(entries, fmt)
    rng = random.Random(fmt * 7919)
    for i, case in enumerate(_mutations(data, rng, 80)):
        slow = _outcome(case, str(tmp_path / f"slow{i}"), False, monkeypatch)
        fast = _outcome(case, str(tmp_path / f"fast{i}"), True, monkeypatch)
        assert fast == slow, f"mutation {i}"


def test_headers_straddling_chunks(tmp_path, monkeypatch):
    """Chunk boundaries inside headers (a pipe's short reads) change nothing."""
    data = _archive(ORDINARY[:3] + ORDINARY[8:], tarfile.PAX_FORMAT)
    monkeypatch.setattr(unpack_mod, "_CHUNK", 97)  # a prime: every alignment occurs
    fast = _outcome(data, str(tmp_path / "fast"), True, monkeypatch)
    monkeypatch.setattr(unpack_mod, "_CHUNK", 97)
    slow = _outcome(data, str(tmp_path / "slow"), False, monkeypatch)
    assert fast == slow
    assert isinstance(fast, tuple) and not isinstance(fast[0], str)


# --------------------------------------------------------------------------
# Sequences where one entry depends on what an earlier one made.


def F(name: str, data: bytes = b"x", **kw: object) -> tuple[tarfile.TarInfo, bytes]:  # noqa: N802
    pax = kw.pop("pax", None)
    ti, body = _entry(name, data=data, **kw)
    if pax:
        ti.pax_headers = dict(pax)  # type: ignore[arg-type]
    return ti, body


def D(name: str) -> tuple[tarfile.TarInfo, bytes]:  # noqa: N802
    return _entry(name, tarfile.DIRTYPE, mode=0o755)


def H(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:  # noqa: N802
    return _entry(name, tarfile.LNKTYPE, linkname=target)


def S(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:  # noqa: N802
    return _entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


BIG = bytes(range(256)) * 8192  # 2 MiB: spans chunks
DEPENDENT = {
    "parent is a queued file": [F("a", BIG), F("f"), F("f/x")],
    "hardlink to a queued file": [F("a", BIG), H("b", "a"), H("c", "b")],
    "hardlink through a symlinked dir": [D("d"), F("d/f", BIG), S("l", "d"), H("h", "l/f")],
    "whiteout of a queued file": [F("a", BIG), F(".wh.a"), F("b")],
    "opaque dir with queued files": [D("d"), F("d/f", BIG), F("d/.wh..wh..opq")],
    "whiteout then directory": [F(".wh.d"), D("d"), F("d/f", BIG)],
    "file replaced by directory": [F("f", BIG), D("f")],
    "implicit directory replaced by file": [F("d/x", BIG), F("d")],
    "directory replaced by file": [D("d"), F("d/x"), F("d")],
    "duplicate file": [F("f", BIG), F("f", b"2")],
    "overlay xattr on a file after queued ones": [
        F("a", BIG), F("b", pax={"SCHILY.xattr.trusted.overlay.opaque": "y"}), F("c")],
    "xattr on a file": [F("a", BIG), F("b", pax={"SCHILY.xattr.user.k": "v"})],
    "many files in many dirs": [F(f"d{i % 7}/f{i}", bytes([i % 256]) * (i * 37)) for i in range(700)],
    "escape after queued files": [F("a", BIG), F("../evil")],
}


@pytest.mark.parametrize("mode", ["overlay", "naive"])
@pytest.mark.parametrize("case", sorted(DEPENDENT))
def test_dependent_entries_change_nothing(tmp_path, monkeypatch, case, mode):
    if mode == "overlay" and os.geteuid() != 0:
        pytest.skip("overlay whiteouts are device nodes: root only")
    data = _archive(DEPENDENT[case], tarfile.PAX_FORMAT)
    variants = [data, data[: len(data) - 1536 - len(BIG) // 2]]  # also cut in a file's data
    for i, case_data in enumerate(variants):
        slow = _outcome(case_data, str(tmp_path / f"slow{i}"), False, monkeypatch, mode)
        fast = _outcome(case_data, str(tmp_path / f"fast{i}"), True, monkeypatch, mode)
        assert fast == slow
    assert not [n for n in os.listdir(tmp_path) if ".unpack-" in n]
