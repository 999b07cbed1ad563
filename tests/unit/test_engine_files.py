"""ketch.engine.files without a daemon: docker's path rules, the stat header, the tar
writer and extractor (in a plain directory, without the helper's chroot), the overlay
change list, commit's config merge, and the helper's frames."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from ketch.engine import files
from ketch.errors import InvalidArgument, NotFound, System

# --- paths and the stat header -------------------------------------------------------------


@pytest.mark.parametrize(("path", "want"), [
    ("etc", "/etc"), ("/etc/", "/etc/"), ("/etc/.", "/etc/."), ("a/../b", "/b"),
    ("../../x", "/x"), ("/", "/"), (".", "/"), ("/d/./", "/d/"), ("//x//y", "/x/y"),
])
def test_abs_container_path(path: str, want: str) -> None:
    assert files.abs_container_path(path) == want


@pytest.mark.parametrize(("path", "want"), [
    ("/", "/"), ("/etc", "etc"), ("/etc/", "etc"), ("/etc/.", "."), ("a", "a"),
])
def test_go_base(path: str, want: str) -> None:
    assert files.go_base(path) == want


def test_split_dir() -> None:
    assert files.split_dir("/etc/passwd") == ("/etc/", "passwd")
    assert files.split_dir("/etc/") == ("/etc/", "")
    assert files.split_dir("/") == ("/", "")


def test_go_file_mode_bits() -> None:
    assert files.go_file_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert files.go_file_mode(stat.S_IFLNK | 0o777) == 134218239      # dockerd's number
    assert files.go_file_mode(stat.S_IFREG | 0o644) == 420
    assert files.go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert files.go_file_mode(stat.S_IFBLK | 0o660) == (1 << 26) | 0o660
    assert files.go_file_mode(stat.S_IFIFO | 0o600) == (1 << 25) | 0o600
    assert files.go_file_mode(stat.S_IFSOCK | 0o700) == (1 << 24) | 0o700
    assert files.go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert files.go_file_mode(stat.S_IFDIR | stat.S_ISVTX | 0o777) == \
        (1 << 31) | (1 << 20) | 0o777
    assert files.go_file_mode(stat.S_IFDIR | stat.S_ISGID | 0o755) == \
        (1 << 31) | (1 << 22) | 0o755


def test_go_time() -> None:
    ns = 1_700_000_000_123_456_789
    assert files.go_time(ns, 0) == "2023-11-14T22:13:20.123456789Z"
    assert files.go_time(1_700_000_000_000_000_000, 0) == "2023-11-14T22:13:20Z"
    assert files.go_time(1_700_000_000_500_000_000, 3600) == "2023-11-14T23:13:20.5+01:00"
    assert files.go_time(1_700_000_000_000_000_000, -5400) == "2023-11-14T20:43:20-01:30"


def test_stat_header_is_dockerds_json() -> None:
    st = files.PathStat(name="d", size=4096, mode=2147484141, mtime="2026-01-01T00:00:00Z")
    raw = base64.b64decode(st.header()).decode()
    assert raw == ('{"name":"d","size":4096,"mode":2147484141,'
                   '"mtime":"2026-01-01T00:00:00Z","linkTarget":""}')
    assert files.PathStat.from_json(json.loads(raw)) == st


def test_stat_path_does_not_follow_the_last_symlink(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to("d")
    st, resolved = files.stat_path(f"{tmp_path}/l")
    assert st.name == "l" and st.mode == files.GO_MODE_SYMLINK | 0o777
    assert st.link_target == f"{tmp_path}/d"
    assert resolved == f"{tmp_path}/l"
    st, _ = files.stat_path(f"{tmp_path}/l/")       # a trailing slash follows it
    assert st.mode == files.GO_MODE_DIR | (os.stat(tmp_path / "d").st_mode & 0o777)
    assert st.name == "l" and st.link_target == ""
    st, _ = files.stat_path(f"{tmp_path}/d/.")
    assert st.name == "."
    with pytest.raises(FileNotFoundError):
        files.stat_path(f"{tmp_path}/missing")


# --- the tar writer ------------------------------------------------------------------------


def _tree(root: Path) -> None:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f").write_text("x\n")
    (root / "d" / "le").symlink_to("e")
    os.link(root / "d" / "e" / "f", root / "d" / "hard")


def test_archive_names_and_rebase(tmp_path: Path) -> None:
    _tree(tmp_path)
    buf = io.BytesIO()
    files.archive_path(f"{tmp_path}/d", buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert list(members) == ["d", "d/e", "d/e/f", "d/hard", "d/le"]
        assert members["d/le"].issym() and members["d/le"].linkname == "e"
        assert members["d/hard"].islnk() and members["d/hard"].linkname == "d/e/f"
        assert members["d/e/f"].uname == "" and tf.extractfile("d/e/f").read() == b"x\n"  # type: ignore[union-attr]
    buf = io.BytesIO()
    files.archive_path(f"{tmp_path}/d/.", buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        assert tf.getnames()[:3] == [".", "./e", "./e/f"]
    # raw names: directories end with a slash, as Go's writer makes them
    assert b"./e/\0" in buf.getvalue()


def test_archive_skips_sockets(tmp_path: Path) -> None:
    import socket

    (tmp_path / "d").mkdir()
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tmp_path / "d" / "sock"))
        buf = io.BytesIO()
        files.archive_path(f"{tmp_path}/d", buf)
    finally:
        s.close()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        assert tf.getnames() == ["d"]


# --- the extractor ------------------------------------------------------------------------


def _tar(*entries: tuple[str, str, bytes | str]) -> io.BytesIO:
    """(name, kind "f"|"d"|"l"|"h", data or link target) -> a tar stream."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.uid, info.gid = os.getuid(), os.getgid()
            if kind == "f":
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o640
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            else:
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            tf.addfile(info)
    buf.seek(0)
    return buf


def test_extract_merges_and_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "keep").mkdir(parents=True)
    (dest / "keep" / "old").write_text("old")
    (dest / "file_to_dir").write_text("x")
    files.extract(_tar(("keep", "d", b""), ("keep/new", "f", b"new"),
                       ("deep/er/f", "f", b"p"), ("file_to_dir", "d", b""),
                       ("ln", "l", "keep/new"), ("hl", "h", "keep/new")),
                  str(dest), files.ExtractOptions())
    assert (dest / "keep" / "old").read_text() == "old"          # merged, not replaced
    assert (dest / "keep" / "new").read_text() == "new"
    assert stat.S_IMODE((dest / "keep" / "new").stat().st_mode) == 0o640
    assert stat.S_IMODE((dest / "keep").stat().st_mode) == 0o750
    assert (dest / "keep").stat().st_mtime == 1_600_000_000      # directory times last
    assert (dest / "deep" / "er" / "f").read_text() == "p"
    assert (dest / "file_to_dir").is_dir()
    assert os.readlink(dest / "ln") == "keep/new"
    assert os.path.samefile(dest / "hl", dest / "keep" / "new")


def test_extract_no_overwrite_dir_non_dir(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "f").write_text("x")
    opts = files.ExtractOptions(no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidArgument, match="cannot overwrite directory"):
        files.extract(_tar(("d", "f", b"")), str(dest), opts)
    with pytest.raises(InvalidArgument, match="cannot overwrite non-directory"):
        files.extract(_tar(("f", "d", b"")), str(dest), opts)


@pytest.mark.parametrize(("entries", "message"), [
    ((("../evil", "f", b"x"),), '"../evil" is outside of'),
    ((("a/../../evil", "f", b"x"),), "is outside of"),
    ((("up", "l", "../../x"),), "invalid symlink"),
    ((("sub/up", "l", "../../x"),), "invalid symlink"),
    ((("h", "h", "../../etc/passwd"),), "invalid hardlink"),
])
def test_extract_refuses_breakouts(tmp_path: Path, entries: tuple[tuple[str, str, bytes | str],
                                                                     ...], message: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidArgument, match=message):
        files.extract(_tar(*entries), str(dest), files.ExtractOptions())
    assert not (tmp_path / "evil").exists() and not (tmp_path / "x").exists()


def test_extract_allows_inner_relative_links(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    files.extract(_tar(("a/b", "l", "../c"), ("abs", "l", "/etc")), str(dest),
                  files.ExtractOptions())
    assert os.readlink(dest / "a" / "b") == "../c"
    assert os.readlink(dest / "abs") == "/etc"


def test_extract_rejects_garbage(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        files.extract(io.BytesIO(b"x" * 1000), str(tmp_path), files.ExtractOptions())


def test_put_checks(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "vol").mkdir()
    (tmp_path / "ro").mkdir()
    job = files.Job(op="put", rootfs="/", path="/x", container="c1", readonly_rootfs=True,
                    binds=[files.Bind(f"{tmp_path}/src", f"{tmp_path}/vol"),
                           files.Bind(f"{tmp_path}/src", f"{tmp_path}/ro", rw=False),
                           files.Bind(f"{tmp_path}/h", f"{tmp_path}", volume=False)])
    assert files.put_checks(f"{tmp_path}/vol", job) == f"{tmp_path}/vol"
    with pytest.raises(InvalidArgument, match="mounted volume is marked read-only"):
        files.put_checks(f"{tmp_path}/ro", job)
    with pytest.raises(InvalidArgument, match="container rootfs is marked read-only"):
        files.put_checks(str(tmp_path), job)
    with pytest.raises(InvalidArgument, match="extraction point is not a directory"):
        files.put_checks(f"{tmp_path}/f", job)
    with pytest.raises(NotFound, match="Could not find the file /x in container c1"):
        files.put_checks(f"{tmp_path}/missing", job)


# --- changes ------------------------------------------------------------------------------


def test_overlay_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in ("bin", "etc", "same"):
        (lower / d).mkdir(parents=True)
    (lower / "bin" / "vi").write_text("vi")
    (lower / "etc" / "motd").write_text("old")
    (upper / "bin").mkdir(parents=True)
    (upper / "bin" / "vi").write_text("")              # stands for a whiteout below
    (upper / "etc").mkdir()
    (upper / "etc" / "motd").write_text("new")
    (upper / "etc" / "hosts").write_text("")            # a runtime mount target
    (upper / "same").mkdir()
    (upper / "new" / "dir").mkdir(parents=True)
    for d in ("bin", "etc", "same"):                    # copied-up dirs, unchanged
        st = os.stat(lower / d)
        os.chmod(upper / d, st.st_mode)
        os.utime(upper / d, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setattr(files, "_is_whiteout",
                        lambda st: st.st_size == 0 and stat.S_ISREG(st.st_mode)
                        and st.st_ino == os.stat(upper / "bin" / "vi").st_ino)
    got = files.overlay_changes(str(upper), [str(lower)])
    assert got == [("/bin", 0), ("/bin/vi", 2), ("/etc/motd", 0), ("/new", 1),
                   ("/new/dir", 1)]


def test_runtime_stubs(tmp_path: Path) -> None:
    up = tmp_path
    (up / "etc").mkdir()
    (up / "etc" / "hosts").write_text("")
    (up / "dev" / "pts").mkdir(parents=True)
    (up / "dev" / "console").write_text("")
    assert files.runtime_stub(str(up), "/etc", os.lstat(up / "etc"))
    assert files.runtime_stub(str(up), "/dev", os.lstat(up / "dev"))
    assert files._stub_names(str(up)) == {"/etc", "/etc/hosts", "/dev", "/dev/pts",
                                          "/dev/console"}
    (up / "etc" / "hosts").write_text("user text")      # the user's file, not a stub
    assert not files.runtime_stub(str(up), "/etc/hosts", os.lstat(up / "etc" / "hosts"))
    assert not files.runtime_stub(str(up), "/etc", os.lstat(up / "etc"))
    (up / "dev" / "mine").write_text("")
    assert files._stub_names(str(up)) == {"/dev/pts", "/dev/console", "/etc/hosts"} - \
        {"/etc/hosts"}


def test_filtered_layer_drops_stubs(tmp_path: Path) -> None:
    up = tmp_path / "up"
    (up / "etc").mkdir(parents=True)
    (up / "etc" / "hostname").write_text("")
    (up / "root").mkdir()
    (up / "root" / "f").write_text("data")
    out = io.BytesIO()
    diff_id, size, entries = files.filtered_layer(str(up), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert tf.getnames() == ["root", "root/f"]
    assert entries == 2 and size == len(out.getvalue())
    import hashlib

    assert diff_id == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert files.filtered_layer(str(empty), io.BytesIO())[2] == 0


# --- commit's config ------------------------------------------------------------------------


def test_image_config_of_merges_like_dockerd() -> None:
    container = {"Hostname": "abc", "Image": "busybox", "Env": ["PATH=/bin", "A=1"],
                 "Cmd": ["sleep", "60"], "Entrypoint": None, "Labels": {"l": "1"},
                 "ExposedPorts": {"80/tcp": {}}, "WorkingDir": "/w", "User": "u"}
    cfg = files.image_config_of(container, None, ["ENV B=2", "LABEL m=2", "EXPOSE 443"])
    assert cfg["Env"] == ["PATH=/bin", "A=1", "B=2"]
    assert cfg["Labels"] == {"l": "1", "m": "2"}
    assert set(cfg["ExposedPorts"]) == {"80/tcp", "443/tcp"}
    assert cfg["Cmd"] == ["sleep", "60"] and cfg["Hostname"] == "abc"
    assert cfg["WorkingDir"] == "/w" and cfg["User"] == "u"
    # a user config: its empty parts come from the container's
    cfg = files.image_config_of(container, {"Cmd": ["sh"], "Env": ["A=9"]}, [])
    assert cfg["Cmd"] == ["sh"] and cfg["Env"] == ["A=9", "PATH=/bin"]
    assert cfg["User"] == "u" and cfg["Labels"] == {"l": "1"}
    cfg = files.image_config_of(container, None, ['ENTRYPOINT ["/bin/x"]'])
    assert cfg["Entrypoint"] == ["/bin/x"] and cfg["Cmd"] == ["sleep", "60"]
    with pytest.raises(InvalidArgument, match="run is not a valid change command"):
        files.image_config_of(container, None, ["RUN x"])


# --- the helper's protocol -----------------------------------------------------------------


def test_job_round_trip() -> None:
    job = files.Job(op="put", rootfs="/r", path="/tmp", container="c",
                    binds=[files.Bind("/s", "/d", rw=False, volume=False)],
                    chown_user="1000:1000", no_overwrite_dir_non_dir=True)
    assert files.Job.decode(job.encode()) == job


def test_frames_and_errors() -> None:
    buf = io.BytesIO()
    files.write_frame(buf, {"ok": 1})
    raw = buf.getvalue()
    assert files.parse_frame(raw[:4]) == len(raw) - 4
    with pytest.raises(System):
        files.parse_frame(b"")
    doc = files.error_frame(NotFound("Could not find the file /x in container c"))
    assert doc == {"kind": "NotFound", "message": "Could not find the file /x in container c"}
    err = files.frame_error(doc)
    assert isinstance(err, NotFound) and err.message == doc["message"]
    assert files.error_frame(PermissionError(13, "Permission denied", "/x")) == \
        {"kind": "System", "message": "Permission denied: /x"}
    assert isinstance(files.frame_error({"kind": "Weird", "message": "m"}), System)


def test_overlay_changes_opaque_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "bin").mkdir(parents=True)
    for n in ("sh", "ls", "gone"):
        (lower / "bin" / n).write_text(n)
    (upper / "bin").mkdir(parents=True)
    (upper / "bin" / "ls").write_text("new ls")
    (upper / "bin" / "n").write_text("n")
    opaque = str(upper / "bin")
    monkeypatch.setattr(files, "_is_opaque", lambda p: p == opaque)
    got = files.overlay_changes(str(upper), [str(lower)])
    assert got == [("/bin", 0), ("/bin/ls", 0), ("/bin/n", 1), ("/bin/gone", 2),
                   ("/bin/sh", 2)]
