"""extract_context: one pass that unpacks and hashes, and refuses every way out of dest."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from ketch.build.context import extract_context
from ketch.errors import InvalidArgument


def _tar(entries: Sequence[tuple[str, str, bytes | str, int]]) -> bytes:
    """(name, kind, data-or-linkname, mode) -> a tar archive's bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 1_600_000_000
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tf.addfile(info)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_files_dirs_links_modes_mtimes_and_digests(tmp_path: Path) -> None:
    data = _tar([
        ("./", "dir", b"", 0o755),
        ("Dockerfile", "file", b"FROM busybox\n", 0o644),
        ("src", "dir", b"", 0o750),
        ("src/run.sh", "file", b"#!/bin/sh\necho hi\n", 0o755),
        ("src/link", "sym", "/usr/bin/python3", 0o777),
        ("src/same", "hard", "src/run.sh", 0o755),
    ])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    root = Path(ctx.root)
    assert (root / "Dockerfile").read_bytes() == b"FROM busybox\n"
    assert ctx.digests == {"Dockerfile": _sha(b"FROM busybox\n"),
                           "src/run.sh": _sha(b"#!/bin/sh\necho hi\n"),
                           "src/same": _sha(b"#!/bin/sh\necho hi\n")}
    assert stat.S_IMODE((root / "src/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "src").stat().st_mode) == 0o750
    assert (root / "src").stat().st_mtime == 1_600_000_000
    assert (root / "src/run.sh").stat().st_mtime == 1_600_000_000
    # a link is kept as it is, never followed
    assert os.readlink(root / "src/link") == "/usr/bin/python3"
    assert (root / "src/same").stat().st_ino == (root / "src/run.sh").stat().st_ino
    ctx.remove()
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_contexts_are_recognised_by_magic(tmp_path: Path, compress: object) -> None:
    data = compress(_tar([("a", "file", b"x" * 5000, 0o644)]))  # type: ignore[operator]
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert ctx.digests == {"a": _sha(b"x" * 5000)}


def test_an_empty_body_is_an_empty_context(tmp_path: Path) -> None:
    ctx = extract_context(io.BytesIO(b""), str(tmp_path / "b"))
    assert ctx.digests == {} and os.listdir(ctx.root) == []


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="invalid build context"):
        extract_context(io.BytesIO(b"FROM busybox\n" * 100), str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("entries", [
    [("../evil", "file", b"x", 0o644)],
    [("a/../../evil", "file", b"x", 0o644)],
    [("/etc/evil", "file", b"x", 0o644)],
    # a file through a link that points out of the context
    [("out", "sym", "/tmp", 0o777), ("out/evil", "file", b"x", 0o644)],
    [("out", "sym", "..", 0o777), ("out/evil", "file", b"x", 0o644)],
    # hard links may only name files of the archive
    [("h", "hard", "/etc/passwd", 0o644)],
    [("h", "hard", "../x", 0o644)],
    [("l", "sym", "/etc", 0o777), ("h", "hard", "l/passwd", 0o644)],
])
def test_escapes_are_refused_and_nothing_is_left(tmp_path: Path,
                                                 entries: list[tuple[str, str, bytes, int]]
                                                 ) -> None:
    with pytest.raises(InvalidArgument):
        extract_context(io.BytesIO(_tar(entries)), str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "evil").exists()


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    data = _tar([("f", "sym", str(victim), 0o777), ("f", "file", b"new", 0o644)])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert victim.read_bytes() == b"keep"
    assert not os.path.islink(os.path.join(ctx.root, "f"))
    assert ctx.digests == {"f": _sha(b"new")}


def test_device_nodes_and_fifos_are_skipped(tmp_path: Path) -> None:
    data = _tar([("null", "chr", b"", 0o666), ("pipe", "fifo", b"", 0o644),
                 ("ok", "file", b"1", 0o644)])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert sorted(os.listdir(ctx.root)) == ["ok"]


def test_read_only_directories_still_take_their_entries_and_are_removed(tmp_path: Path) -> None:
    data = _tar([("ro", "dir", b"", 0o555), ("ro/f", "file", b"1", 0o444)])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert stat.S_IMODE(os.stat(os.path.join(ctx.root, "ro")).st_mode) == 0o555
    ctx.remove()
    assert not (tmp_path / "b").exists()


def test_secrets_and_named_contexts_when_declared(tmp_path: Path) -> None:
    data = _tar([
        ("Dockerfile", "file", b"FROM x\n", 0o644),
        (".ketch-build-secrets", "dir", b"", 0o755),
        (".ketch-build-secrets/token", "file", b"s3cr3t", 0o644),
        (".ketch-build-contexts/lib/a.txt", "file", b"A", 0o644),
        (".ketch-build-contexts/lib/sub/b.txt", "file", b"B", 0o600),
    ])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"), secrets=["token"],
                          contexts=["lib", "empty"])
    assert sorted(os.listdir(ctx.root)) == ["Dockerfile"]
    assert ctx.digests == {"Dockerfile": _sha(b"FROM x\n")}
    secret = Path(ctx.secrets["token"])
    assert secret.read_bytes() == b"s3cr3t"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert not str(secret).startswith(ctx.root + "/")
    lib = Path(ctx.contexts["lib"])
    assert (lib / "sub/b.txt").read_bytes() == b"B"
    assert ctx.context_digests["lib"] == {"a.txt": _sha(b"A"), "sub/b.txt": _sha(b"B")}
    assert os.listdir(ctx.contexts["empty"]) == []
    ctx.remove()
    assert not (tmp_path / "b").exists()


def test_reserved_names_are_ordinary_when_not_declared(tmp_path: Path) -> None:
    data = _tar([(".ketch-build-secrets/token", "file", b"x", 0o644)])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert ctx.digests == {".ketch-build-secrets/token": _sha(b"x")} and ctx.secrets == {}


def test_undeclared_or_missing_secrets_are_refused(tmp_path: Path) -> None:
    data = _tar([(".ketch-build-secrets/other", "file", b"x", 0o644)])
    with pytest.raises(InvalidArgument, match="undeclared secret"):
        extract_context(io.BytesIO(data), str(tmp_path / "b"), secrets=["token"])
    with pytest.raises(InvalidArgument, match="secret token not found"):
        extract_context(io.BytesIO(_tar([("a", "file", b"1", 0o644)])),
                        str(tmp_path / "c"), secrets=["token"])
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_tar_without_its_last_padding_and_end_blocks_is_whole(tmp_path: Path) -> None:
    """What the docker CLI sends for ``build -f - DIR``: its last member (the amended
    .dockerignore) stops right after its data, as dockerd's reader accepts."""
    data = _tar([("Dockerfile", "file", b"FROM x\n", 0o644),
                 (".dockerignore", "file", b"a\nb\n", 0o600)])
    cut = data[:data.index(b"a\nb\n") + 4]
    assert len(cut) % 512 != 0
    ctx = extract_context(io.BytesIO(cut), str(tmp_path / "b"))
    assert ctx.digests == {"Dockerfile": _sha(b"FROM x\n"), ".dockerignore": _sha(b"a\nb\n")}


def test_a_member_whose_data_is_cut_is_refused(tmp_path: Path) -> None:
    data = _tar([("a", "file", b"1", 0o644), ("b", "file", b"x" * 2000, 0o644)])
    with pytest.raises(InvalidArgument, match="unexpected end of data"):
        extract_context(io.BytesIO(data[:data.index(b"x" * 100) + 1000]), str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_the_dockerfile_and_ignore_file_leave_when_the_ignore_file_names_them(
        tmp_path: Path) -> None:
    # the docker CLI's tar for "build -f - DIR"
    data = _tar([("a.txt", "file", b"a", 0o644),
                 (".dockerfile.0123456789abcdef0123", "file", b"FROM x\n", 0o600),
                 (".dockerignore", "file", b".dockerignore\n.dockerfile.0123456789abcdef0123\n",
                  0o600)])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert ctx.drop_build_files(".dockerfile.0123456789abcdef0123") == [
        ".dockerignore", ".dockerfile.0123456789abcdef0123"]
    assert set(ctx.digests) == {"a.txt"} and os.listdir(ctx.root) == ["a.txt"]


def test_build_files_stay_unless_named(tmp_path: Path) -> None:
    data = _tar([("Dockerfile", "file", b"FROM x\n", 0o644),
                 (".dockerignore", "file", b"*.log\n!Dockerfile\n", 0o644)])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert ctx.drop_build_files("Dockerfile") == []
    assert set(ctx.digests) == {"Dockerfile", ".dockerignore"}
    ctx2 = extract_context(io.BytesIO(_tar([("Dockerfile", "file", b"FROM x\n", 0o644)])),
                           str(tmp_path / "c"))
    assert ctx2.drop_build_files("Dockerfile") == []    # no .dockerignore at all


def test_a_later_entry_replaces_a_directory(tmp_path: Path) -> None:
    data = _tar([("d/x", "file", b"1", 0o644), ("d", "file", b"now a file", 0o644),
                 ("e", "file", b"2", 0o644)])
    ctx = extract_context(io.BytesIO(data), str(tmp_path / "b"))
    assert ctx.digests == {"d": _sha(b"now a file"), "e": _sha(b"2")}
    data = _tar([("d/x", "file", b"1", 0o644), ("d", "file", b"f", 0o644),
                 ("d/y", "file", b"2", 0o644)])
    with pytest.raises(InvalidArgument, match="is not a directory"):
        extract_context(io.BytesIO(data), str(tmp_path / "c"))
