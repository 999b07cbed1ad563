"""COPY/ADD on the filesystem: selection, digests, and writing into a rootfs."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import lzma
import os
import socket
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.build import copy as cp
from ketch.errors import InvalidArgument, NotFound, System, Unavailable

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def make_tree(base: Path, spec: dict[str, str | None]) -> None:
    """name -> content (None: a directory; 'link:<target>': a symlink)."""
    for name, content in spec.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif content.startswith("link:"):
            os.symlink(content[5:], path)
        else:
            path.write_text(content)


def listing(base: Path) -> dict[str, str]:
    """rel path -> 'd' | 'l:<target>' | file content."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(base))
            if path.is_symlink():
                out[rel] = "l:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "d"
            else:
                out[rel] = path.read_text()
    return out


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    make_tree(root, {
        "a.txt": "a", "b.txt": "b", "c.md": "c",
        "dir/x.txt": "x", "dir/sub/y.txt": "y", "dir/link": "link:../a.txt",
        "dir/empty": None,
    })
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    root.mkdir()
    return root


def copy(ctx: Path, rootfs: Path, sources: list[str], dest: str, **kw: object) -> None:
    select_kw = {k: kw.pop(k) for k in ("excludes", "parents", "instruction") if k in kw}
    sel = cp.select(str(ctx), sources, **select_kw)  # type: ignore[arg-type]
    if "parents" in select_kw:
        kw["parents"] = select_kw["parents"]
    cp.apply(sel, str(rootfs), dest, **kw)  # type: ignore[arg-type]


# -- select ----------------------------------------------------------------


def test_select_describes_files_dirs_and_links(ctx: Path) -> None:
    sel = cp.select(str(ctx), ["dir"])
    assert sel.sources[0].is_dir and sel.sources[0].path == "dir"
    assert sel.sources[0].entries == ["dir/empty", "dir/link", "dir/sub", "dir/sub/y.txt",
                                      "dir/x.txt"]
    x = sel.files["dir/x.txt"]
    assert (x.kind, x.size, x.digest) == ("file", 1, "sha256:" + hashlib.sha256(b"x").hexdigest())
    link = sel.files["dir/link"]
    assert (link.kind, link.linkname) == ("symlink", "../a.txt")
    assert link.digest == "sha256:" + hashlib.sha256(b"../a.txt").hexdigest()
    assert sel.files["dir/sub"].kind == "dir" and sel.files["dir/sub"].digest == ""


def test_digest_ignores_mtime_but_not_mode_or_content(ctx: Path) -> None:
    first = cp.select(str(ctx), ["dir", "a.txt"]).digest
    os.utime(ctx / "dir/x.txt", (1, 1))
    assert cp.select(str(ctx), ["dir", "a.txt"]).digest == first
    os.chmod(ctx / "dir/x.txt", 0o755)
    second = cp.select(str(ctx), ["dir", "a.txt"]).digest
    assert second != first
    (ctx / "dir/x.txt").write_text("X")
    assert cp.select(str(ctx), ["dir", "a.txt"]).digest not in (first, second)


def test_known_digests_are_used_instead_of_reading(ctx: Path) -> None:
    fake = "sha256:" + "0" * 64
    sel = cp.select(str(ctx), ["dir"], known_digests={"dir/x.txt": fake})
    assert sel.files["dir/x.txt"].digest == fake


def test_known_digests_keyed_by_real_path_through_a_source_link(ctx: Path) -> None:
    os.symlink("dir", ctx / "dlink")
    fake = "sha256:" + "1" * 64
    sel = cp.select(str(ctx), ["dlink"], known_digests={"dir/x.txt": fake})
    assert sel.files["dlink/x.txt"].digest == fake


@pytest.mark.parametrize("source", ["../x", "/../x", "a/../../x", ".."])
def test_source_outside_the_context_is_forbidden(ctx: Path, source: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        cp.select(str(ctx), [source])
    shown = source[1:] if source.startswith("/") else source
    assert str(err.value) == f"forbidden path outside the build context: {shown} ()"


@pytest.mark.parametrize(("source", "shown"), [
    ("./nofile", "nofile"), ("/nofile", "nofile"), ("dir/../nofile", "dir/../nofile"),
    ("dir/x.txt/y", "dir/x.txt/y")])
def test_missing_source(ctx: Path, source: str, shown: str) -> None:
    with pytest.raises(NotFound) as err:
        cp.select(str(ctx), [source])
    assert str(err.value) == ("file not found in build context or excluded by .dockerignore: "
                              f"stat {shown}: file does not exist")


def test_missing_source_in_a_stage(ctx: Path) -> None:
    with pytest.raises(NotFound) as err:
        cp.select(str(ctx), ["/nofile"], from_stage=True)
    assert str(err.value) == "stat nofile: file does not exist"


def test_glob_matching_nothing(ctx: Path) -> None:
    with pytest.raises(InvalidArgument, match="^no source files were specified$"):
        cp.select(str(ctx), ["*.none"])
    # dockerd skips an empty glob when another source matched
    assert [s.path for s in cp.select(str(ctx), ["*.none", "a.txt"]).sources] == ["a.txt"]


@pytest.mark.parametrize(("pattern", "expected"), [
    ("*.txt", ["a.txt", "b.txt"]),
    ("?.md", ["c.md"]),
    ("[ab].txt", ["a.txt", "b.txt"]),
    ("[^a].txt", ["b.txt"]),
    ("[a-b]*", ["a.txt", "b.txt"]),
    ("*/*.txt", ["dir/x.txt"]),
    ("d*/s*/*", ["dir/sub/y.txt"]),
    ("dir/*", ["dir/empty", "dir/link", "dir/sub", "dir/x.txt"]),
])
def test_globs(ctx: Path, pattern: str, expected: list[str]) -> None:
    assert [s.path for s in cp.select(str(ctx), [pattern]).sources] == expected


def test_star_never_crosses_a_slash(ctx: Path) -> None:
    with pytest.raises(InvalidArgument, match="no source files"):
        cp.select(str(ctx), ["*y.txt"])


def test_glob_escapes(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a*b": "star", "axb": "x", "q?": "q"})
    assert [s.path for s in cp.select(str(tmp_path), ["a\\**"]).sources] == ["a*b"]
    assert [s.path for s in cp.select(str(tmp_path), ["a*b"]).sources] == ["a*b", "axb"]
    assert [s.path for s in cp.select(str(tmp_path), ["q\\?*"]).sources] == ["q?"]
    # without a live wildcard dockerd takes the name as written, backslash included
    with pytest.raises(NotFound, match=r"stat a\\\*b:"):
        cp.select(str(tmp_path), ["a\\*b"])


def test_bad_glob_pattern(ctx: Path) -> None:
    with pytest.raises(InvalidArgument, match="syntax error in pattern"):
        cp.select(str(ctx), ["[a"])


def test_go_match_classes() -> None:
    with pytest.raises(InvalidArgument):
        cp.glob_regex("[]a]")  # Go: ']' cannot open a class
    with pytest.raises(InvalidArgument):
        cp.glob_regex("a\\")
    assert cp.glob_regex("[z-a]x").match("bx") is None  # an inverted range matches nothing
    assert cp.glob_regex("[\\]]").match("]")
    assert cp.glob_regex("*").match(".hidden")


def test_source_symlink_is_followed_inside_the_context(ctx: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    os.symlink(str(outside), ctx / "abs")          # /<tmp>/outside, read inside ctx
    os.symlink("../outside/secret", ctx / "rel")   # climbs: stays at ctx's top
    os.symlink("dir/x.txt", ctx / "good")
    with pytest.raises(NotFound):
        cp.select(str(ctx), ["abs/secret"])
    with pytest.raises(NotFound):
        cp.select(str(ctx), ["rel"])
    sel = cp.select(str(ctx), ["good"])
    assert sel.files["good"].kind == "file" and sel.sources[0].abs == str(ctx / "dir/x.txt")


def test_fifos_and_devices_are_copied_sockets_skipped(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    os.mkfifo(ctx / "fifo", 0o640)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(ctx / "sock"))
        if os.geteuid() == 0:
            os.mknod(ctx / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        sel = cp.select(str(ctx), ["."])
        assert "sock" not in sel.files and sel.files["fifo"].kind == "fifo"
        with pytest.raises(InvalidArgument, match="no source files"):
            cp.select(str(ctx), ["sock"])
    if os.geteuid() != 0:
        return
    assert sel.files["null"].kind == "char"
    cp.apply(sel, str(rootfs), "/d/")
    assert stat.S_ISFIFO(os.lstat(rootfs / "d/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(rootfs / "d/fifo").st_mode) == 0o640
    assert os.lstat(rootfs / "d/null").st_rdev == os.makedev(1, 3)


# -- apply: destinations ---------------------------------------------------


def test_directory_source_copies_its_contents(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["dir"], "/newdir")
    assert listing(rootfs) == {
        "newdir": "d", "newdir/x.txt": "x", "newdir/sub": "d", "newdir/sub/y.txt": "y",
        "newdir/link": "l:../a.txt", "newdir/empty": "d"}
    # dockerd creates the destination 0755 whatever the source directory's mode
    assert stat.S_IMODE(os.stat(rootfs / "newdir").st_mode) == 0o755


def test_file_to_name_to_slash_and_to_existing_dir(ctx: Path, rootfs: Path) -> None:
    (rootfs / "existing").mkdir()
    copy(ctx, rootfs, ["a.txt"], "/renamed")
    copy(ctx, rootfs, ["a.txt"], "/new/dir/")
    copy(ctx, rootfs, ["a.txt"], "/existing")
    assert (rootfs / "renamed").read_text() == "a"
    assert (rootfs / "new/dir/a.txt").read_text() == "a"
    assert (rootfs / "existing/a.txt").read_text() == "a"
    for created in ("new", "new/dir"):
        assert stat.S_IMODE(os.stat(rootfs / created).st_mode) == 0o755


def test_relative_dest_uses_workdir(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["a.txt"], "sub/", workdir="/app")
    copy(ctx, rootfs, ["b.txt"], ".", workdir="/app")
    assert (rootfs / "app/sub/a.txt").read_text() == "a"
    assert (rootfs / "app/b.txt").read_text() == "b"


def test_several_sources_need_a_slash(ctx: Path, rootfs: Path) -> None:
    msg = ("When using COPY with more than one source file, "
           "the destination must be a directory and end with a /")
    with pytest.raises(InvalidArgument) as err:
        copy(ctx, rootfs, ["a.txt", "b.txt"], "/x")
    assert str(err.value) == msg
    with pytest.raises(InvalidArgument, match="^When using ADD with more"):
        copy(ctx, rootfs, ["*.txt"], "/x", instruction="ADD")
    assert listing(rootfs) == {}
    copy(ctx, rootfs, ["*.txt", "dir"], "/x/")
    assert set(listing(rootfs)) >= {"x/a.txt", "x/b.txt", "x/x.txt", "x/sub/y.txt"}


def test_directory_onto_a_file_fails(ctx: Path, rootfs: Path) -> None:
    (rootfs / "f").write_text("file")
    with pytest.raises(InvalidArgument, match="mkdir /f: not a directory"):
        copy(ctx, rootfs, ["dir"], "/f/")


def test_modes_and_mtimes_are_kept(ctx: Path, rootfs: Path) -> None:
    os.chmod(ctx / "dir/x.txt", 0o4751)
    os.chmod(ctx / "dir/sub", 0o700)
    os.utime(ctx / "dir/x.txt", ns=(5_000_000_000, 1_000_000_123))
    os.utime(ctx / "dir/sub", ns=(5_000_000_000, 2_000_000_000))
    os.utime(ctx / "dir/link", ns=(5_000_000_000, 3_000_000_000), follow_symlinks=False)
    copy(ctx, rootfs, ["dir"], "/d")
    st = os.stat(rootfs / "d/x.txt")
    assert stat.S_IMODE(st.st_mode) == 0o4751
    assert st.st_mtime_ns == 1_000_000_123 and st.st_atime_ns == 1_000_000_123
    sub = os.stat(rootfs / "d/sub")
    assert stat.S_IMODE(sub.st_mode) == 0o700 and sub.st_mtime_ns == 2_000_000_000
    assert os.lstat(rootfs / "d/link").st_mtime_ns == 3_000_000_000


def test_existing_files_are_replaced_with_fresh_inodes(ctx: Path, rootfs: Path,
                                                       tmp_path: Path) -> None:
    (rootfs / "d").mkdir()
    (rootfs / "d/x.txt").write_text("old")
    os.link(rootfs / "d/x.txt", rootfs / "other")
    (rootfs / "d/sub").write_text("a file where a dir comes")
    os.symlink("/etc/passwd", rootfs / "d/link")
    copy(ctx, rootfs, ["dir"], "/d")
    assert (rootfs / "d/x.txt").read_text() == "x"
    assert (rootfs / "other").read_text() == "old"  # the hardlink's twin untouched
    assert (rootfs / "d/sub/y.txt").read_text() == "y"
    assert os.readlink(rootfs / "d/link") == "../a.txt"


def test_dest_symlinks_resolve_inside_rootfs(ctx: Path, rootfs: Path, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    os.symlink(str(host), rootfs / "abs")              # absolute: read as rootfs + path
    os.symlink("../../../../" + str(host), rootfs / "climb")
    copy(ctx, rootfs, ["a.txt"], "/abs/")
    copy(ctx, rootfs, ["dir"], "/climb/in")
    assert list(host.iterdir()) == []
    assert (rootfs / str(host).lstrip("/") / "a.txt").read_text() == "a"
    assert (rootfs / str(host).lstrip("/") / "in/x.txt").read_text() == "x"


def test_file_dest_link_in_a_directory_is_replaced_not_followed(ctx: Path, rootfs: Path,
                                                                tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (rootfs / "d").mkdir()
    os.symlink(str(victim), rootfs / "d/a.txt")
    copy(ctx, rootfs, ["a.txt"], "/d/")
    assert victim.read_text() == "keep"
    assert not (rootfs / "d/a.txt").is_symlink()
    assert (rootfs / "d/a.txt").read_text() == "a"


def test_existing_symlink_where_a_directory_comes_is_replaced(tmp_path: Path,
                                                              rootfs: Path) -> None:
    """dockerd's legacy builder replaces it (BuildKit refuses: "cannot copy to
    non-directory"); nobody writes through it."""
    ctx = tmp_path / "c"
    make_tree(ctx, {"lib/mod.so": "so"})
    (rootfs / "usr/lib").mkdir(parents=True)
    os.symlink("usr/lib", rootfs / "lib")
    copy(ctx, rootfs, ["."], "/")
    assert not (rootfs / "lib").is_symlink()
    assert (rootfs / "lib/mod.so").read_text() == "so"
    assert list((rootfs / "usr/lib").iterdir()) == []


def test_existing_directory_takes_the_copied_metadata(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "c"
    make_tree(ctx, {"usr": None})
    os.chmod(ctx / "usr", 0o700)
    os.utime(ctx / "usr", (978307200, 978307200))
    (rootfs / "usr/bin").mkdir(parents=True)
    copy(ctx, rootfs, ["."], "/")
    st = os.stat(rootfs / "usr")
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime == 978307200
    assert (rootfs / "usr/bin").is_dir()


# -- --parents and --exclude -----------------------------------------------


def test_parents_keep_the_source_path(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["dir/x.txt", "dir/sub/y.txt"], "/p/", parents=True)
    assert listing(rootfs) == {"p": "d", "p/dir": "d", "p/dir/x.txt": "x", "p/dir/sub": "d",
                               "p/dir/sub/y.txt": "y"}


def test_parents_from_the_dot_marker_and_with_globs(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["./dir/./sub/*.txt", "dir/*.txt"], "/p/", parents=True)
    assert set(listing(rootfs)) == {"p", "p/sub", "p/sub/y.txt", "p/dir", "p/dir/x.txt"}


def test_parents_marker_on_a_directory(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["dir/./sub"], "/p/", parents=True)
    assert listing(rootfs) == {"p": "d", "p/sub": "d", "p/sub/y.txt": "y"}
    # only "/./" is a marker (BuildKit cuts at it); a trailing "/." is a plain dot
    copy(ctx, rootfs, ["dir/.", "a.txt"], "/q/", parents=True)
    assert set(listing(rootfs)) >= {"q/dir/x.txt", "q/dir/sub/y.txt", "q/a.txt"}


def test_parents_recreate_directories_with_their_metadata(ctx: Path, rootfs: Path) -> None:
    os.chmod(ctx / "dir", 0o750)
    os.chmod(ctx / "dir/sub", 0o700)
    os.utime(ctx / "dir", (978307200, 978307200))
    sel = cp.select(str(ctx), ["dir/sub/y.txt"], parents=True)
    assert sel.sources[0].kept_dirs == ["dir", "dir/sub"]
    assert sel.files["dir"].mode == 0o750
    cp.apply(sel, str(rootfs), "/p/", parents=True)
    assert stat.S_IMODE(os.stat(rootfs / "p/dir").st_mode) == 0o750
    assert os.stat(rootfs / "p/dir").st_mtime == 978307200
    assert stat.S_IMODE(os.stat(rootfs / "p/dir/sub").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(rootfs / "p").st_mode) == 0o755
    os.chmod(ctx / "dir", 0o755)
    assert cp.select(str(ctx), ["dir/sub/y.txt"], parents=True).digest != sel.digest


def test_parents_with_a_directory_source(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["dir/sub"], "/p/", parents=True)
    assert listing(rootfs) == {"p": "d", "p/dir": "d", "p/dir/sub": "d", "p/dir/sub/y.txt": "y"}


def test_without_parents_the_marker_is_a_plain_dot(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["dir/./sub"], "/p/")
    assert listing(rootfs) == {"p": "d", "p/y.txt": "y"}


def test_exclude_inside_a_directory_source(ctx: Path, rootfs: Path) -> None:
    sel = cp.select(str(ctx), ["dir"], excludes=["*.txt", "sub"])
    assert sorted(sel.files) == ["dir/empty", "dir/link"]
    sel = cp.select(str(ctx), ["."], excludes=["**/*.txt", "!dir/sub/y.txt"])
    assert "dir/sub/y.txt" in sel.files and "dir/sub" in sel.files
    assert "a.txt" not in sel.files and "dir/x.txt" not in sel.files
    cp.apply(sel, str(rootfs), "/")
    assert (rootfs / "dir/sub/y.txt").read_text() == "y"
    assert not (rootfs / "a.txt").exists()


def test_exclude_reincludes_below_an_excluded_directory(ctx: Path) -> None:
    sel = cp.select(str(ctx), ["."], excludes=["dir", "!dir/sub/y.txt"])
    assert sorted(k for k in sel.files if k.startswith("dir")) == [
        "dir", "dir/sub", "dir/sub/y.txt"]
    assert sel.sources[0].entries.index("dir") < sel.sources[0].entries.index("dir/sub")


def test_exclude_applies_to_glob_matches(ctx: Path) -> None:
    sel = cp.select(str(ctx), ["*"], excludes=["*.txt"])
    assert [s.path for s in sel.sources] == ["c.md", "dir"]
    with pytest.raises(InvalidArgument, match="no source files"):
        cp.select(str(ctx), ["a.txt"], excludes=["a.txt"])


def test_exclude_changes_the_digest(ctx: Path) -> None:
    assert (cp.select(str(ctx), ["dir"]).digest
            != cp.select(str(ctx), ["dir"], excludes=["x.txt"]).digest)


# -- chmod / chown ---------------------------------------------------------


@pytest.mark.parametrize(("text", "mode"), [("755", 0o755), ("0644", 0o644), ("4755", 0o4755)])
def test_parse_chmod(text: str, mode: int) -> None:
    assert cp.parse_chmod(text) == mode


@pytest.mark.parametrize("text", ["", "abc", "99", "17777", "u+q", "z=r", "u+x,"])
def test_parse_chmod_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid chmod parameter"):
        cp.parse_chmod_spec(text)


def test_parse_chmod_octal_only_wants_the_spec_for_symbolic_modes() -> None:
    with pytest.raises(InvalidArgument, match="symbolic mode needs parse_chmod_spec"):
        cp.parse_chmod("u+x")


SYMBOLIC = ["u+x", "go-w", "a=rX", "u=rwx,g=rx,o=", "+x", "o=u", "g+s", "+t", "a-x",
            "u+s,g+s", "=r", "ug=rw", "o+X", "u-s", "g=u,o-rwx", "a+rwx,u-w+s", "u=rws",
            "g=", "a=", "o=t", "u=g,g=o"]


@pytest.mark.parametrize("spec", SYMBOLIC)
def test_symbolic_modes_agree_with_chmod(tmp_path: Path, spec: str) -> None:
    """GNU chmod(1) is the oracle (umask 0, so a missing "who" means all)."""
    import subprocess

    parsed = cp.parse_chmod_spec(spec)
    assert isinstance(parsed, cp.SymbolicMode)
    for start in (0o644, 0o755, 0o4750, 0o600):
        for is_dir in (False, True):
            path = tmp_path / f"{start:o}-{is_dir}"
            if is_dir:
                path.mkdir()
            else:
                path.write_text("")
            os.chmod(path, start)
            subprocess.run(["sh", "-c", 'umask 0; chmod "$0" "$1"', spec, str(path)],
                           check=True)
            want = stat.S_IMODE(os.stat(path).st_mode)
            assert parsed.apply(start, is_dir) == want, (spec, oct(start), is_dir)


def test_symbolic_chmod_applied_per_file(ctx: Path, rootfs: Path) -> None:
    os.chmod(ctx / "dir/x.txt", 0o600)
    copy(ctx, rootfs, ["dir"], "/d", chmod=cp.parse_chmod_spec("go+rX"))
    assert stat.S_IMODE(os.stat(rootfs / "d/x.txt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(rootfs / "d/sub").st_mode) == 0o755


def test_chmod_applies_to_files_and_dirs(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["dir"], "/d", chmod=0o751)
    assert stat.S_IMODE(os.stat(rootfs / "d/x.txt").st_mode) == 0o751
    assert stat.S_IMODE(os.stat(rootfs / "d/sub").st_mode) == 0o751
    assert stat.S_IMODE(os.stat(rootfs / "d").st_mode) == 0o755  # created, not copied


@as_root
def test_owner_is_root_unless_chown(ctx: Path, rootfs: Path) -> None:
    os.chown(ctx / "a.txt", 1234, 1234)
    copy(ctx, rootfs, ["a.txt"], "/plain/")
    assert os.stat(rootfs / "plain/a.txt").st_uid == 0
    os.chmod(ctx / "dir/x.txt", 0o4755)
    copy(ctx, rootfs, ["dir"], "/own/deep", uid=1000, gid=2000)
    for rel in ("own", "own/deep", "own/deep/x.txt", "own/deep/sub", "own/deep/sub/y.txt"):
        st = os.stat(rootfs / rel)
        assert (st.st_uid, st.st_gid) == (1000, 2000), rel
    assert os.lstat(rootfs / "own/deep/link").st_uid == 1000
    # chown before chmod: the setuid bit survives
    assert stat.S_IMODE(os.stat(rootfs / "own/deep/x.txt").st_mode) == 0o4755


@as_root
def test_copy_from_a_stage_keeps_owners_unless_chown(ctx: Path, rootfs: Path) -> None:
    os.chown(ctx / "dir/x.txt", 1234, 5678)
    os.chown(ctx / "dir/link", 1234, 5678, follow_symlinks=False)
    os.chown(ctx / "dir/sub", 42, 43)
    sel = cp.select(str(ctx), ["dir"], from_stage=True)
    assert sel.digest == cp.select(str(ctx), ["dir"]).digest  # owners never count
    cp.apply(sel, str(rootfs), "/kept")
    assert os.stat(rootfs / "kept/x.txt").st_uid == 1234
    assert os.lstat(rootfs / "kept/link").st_gid == 5678
    assert (os.stat(rootfs / "kept/sub").st_uid, os.stat(rootfs / "kept/sub").st_gid) == (42, 43)
    assert os.stat(rootfs / "kept").st_uid == 0  # made for the destination: root's
    cp.apply(sel, str(rootfs), "/chowned", uid=7, gid=8)
    assert os.stat(rootfs / "chowned/x.txt").st_uid == 7
    cp.apply(cp.select(str(ctx), ["dir/x.txt"], from_stage=True), str(rootfs), "/one")
    assert os.stat(rootfs / "one").st_uid == 1234


# -- archives (ADD) --------------------------------------------------------


def make_tar(members: list[tuple[str, str, str]], compress: str = "") -> bytes:
    """(name, type, data-or-linkname) -> tar bytes, compressed as asked."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.uid = info.gid = 0
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
            else:
                raw = data.encode()
                info.size, info.mode = len(raw), 0o640
                tar.addfile(info, io.BytesIO(raw))
    raw = buf.getvalue()
    compressors = {"": lambda b: b, "gz": gzip.compress, "bz2": bz2.compress,
                   "xz": lzma.compress}
    return compressors[compress](raw)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("compress", ["", "gz", "bz2", "xz"])
def test_add_unpacks_archives_by_content(tmp_path: Path, rootfs: Path, compress: str) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    (ctx / "blob.dat").write_bytes(make_tar(
        [("top", "dir", ""), ("top/f", "file", "data"), ("top/l", "sym", "f"),
         ("top/h", "hard", "top/f")], compress))
    (rootfs / "out").mkdir()
    (rootfs / "out/top").mkdir()
    (rootfs / "out/top/f").write_text("old")
    sel = cp.select(str(ctx), ["blob.dat"], instruction="ADD")
    cp.apply(sel, str(rootfs), "/out", extract_archives=True)
    assert (rootfs / "out/top/f").read_text() == "data"
    assert os.readlink(rootfs / "out/top/l") == "f"
    assert os.stat(rootfs / "out/top/h").st_ino == os.stat(rootfs / "out/top/f").st_ino
    st = os.stat(rootfs / "out/top/f")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime == 1_600_000_000
    assert stat.S_IMODE(os.stat(rootfs / "out/top").st_mode) == 0o750


def test_add_copies_non_archives_and_copy_never_unpacks(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    (ctx / "x.tar.gz").write_bytes(gzip.compress(b"not a tar at all"))
    (ctx / "real.tar").write_bytes(make_tar([("f", "file", "in")]))
    sel = cp.select(str(ctx), ["x.tar.gz"])
    cp.apply(sel, str(rootfs), "/a/", extract_archives=True)
    assert (rootfs / "a/x.tar.gz").read_bytes() == (ctx / "x.tar.gz").read_bytes()
    cp.apply(cp.select(str(ctx), ["real.tar"]), str(rootfs), "/b/")
    assert (rootfs / "b/real.tar").is_file()


def test_add_archive_names_and_links_stay_inside_the_destination(tmp_path: Path,
                                                                  rootfs: Path) -> None:
    """dockerd unpacks in a chroot at the destination: '..' and symlinks in the
    archive stop at its top (nothing refused, nothing written beside it)."""
    ctx = tmp_path / "c"
    ctx.mkdir()
    host = tmp_path / "host"
    host.mkdir()
    (rootfs / "etc").mkdir()
    (ctx / "t.tar").write_bytes(make_tar([
        ("/abs.txt", "file", "abs"),
        ("../up.txt", "file", "up"),
        ("a/../../up2.txt", "file", "up2"),
        ("rel", "sym", "../../etc"),           # kept as written: read in the container
        ("rel/through.txt", "file", "r"),      # written through it, below the destination
        ("abs", "sym", str(host)),
        ("abs/through.txt", "file", "a"),
        ("hl", "hard", "../../abs.txt"),       # resolved below the destination too
    ]))
    cp.apply(cp.select(str(ctx), ["t.tar"]), str(rootfs), "/x/", extract_archives=True)
    x = rootfs / "x"
    assert (x / "abs.txt").read_text() == "abs"
    assert (x / "up.txt").read_text() == "up" and (x / "up2.txt").read_text() == "up2"
    assert os.readlink(x / "rel") == "../../etc"
    assert (x / "etc/through.txt").read_text() == "r"
    assert list((rootfs / "etc").iterdir()) == []
    assert list(host.iterdir()) == []
    assert (x / str(host).lstrip("/") / "through.txt").read_text() == "a"
    assert os.stat(x / "hl").st_ino == os.stat(x / "abs.txt").st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "host", "rootfs"]


def test_add_archive_hardlink_to_nothing(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    (ctx / "t.tar").write_bytes(make_tar([("h", "hard", "missing")]))
    with pytest.raises(NotFound, match="hardlink target 'missing'"):
        cp.apply(cp.select(str(ctx), ["t.tar"]), str(rootfs), "/x/", extract_archives=True)


@as_root
def test_add_archive_keeps_its_owners_and_ignores_chown(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.uid, info.gid, info.size = 1234, 4321, 1
        tar.addfile(info, io.BytesIO(b"x"))
    (ctx / "t.tar").write_bytes(buf.getvalue())
    sel = cp.select(str(ctx), ["t.tar"], instruction="ADD")
    cp.apply(sel, str(rootfs), "/y/z", uid=7, gid=8, chmod=0o777, extract_archives=True)
    st = os.stat(rootfs / "y/z/f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o644)
    assert os.stat(rootfs / "y/z").st_uid == 0 and os.stat(rootfs / "y").st_uid == 0


# -- fetch_url -------------------------------------------------------------


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(served), **kw)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/short":
                super().do_GET()
                return
            # Promises 100 bytes, sends 10 and hangs up.
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_url(http_dir: tuple[str, Path], tmp_path: Path) -> None:
    base, served = http_dir
    (served / "file.bin").write_bytes(b"payload")
    os.utime(served / "file.bin", (1_500_000_000, 1_500_000_000))
    got = cp.fetch_url(f"{base}/file.bin?x=1", str(tmp_path / "dl"))
    assert got.name == "file.bin" and Path(got.path).read_bytes() == b"payload"
    assert got.mtime == 1_500_000_000 and os.stat(got.path).st_mtime == 1_500_000_000
    assert stat.S_IMODE(os.stat(got.path).st_mode) == 0o600


def test_fetch_url_checksum(http_dir: tuple[str, Path], tmp_path: Path) -> None:
    base, served = http_dir
    (served / "f").write_bytes(b"payload")
    good = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    assert Path(cp.fetch_url(f"{base}/f", str(tmp_path), checksum=good).path).exists()
    with pytest.raises(InvalidArgument, match="checksum mismatch"):
        cp.fetch_url(f"{base}/f", str(tmp_path / "bad"), checksum="sha256:" + "0" * 64)
    assert not (tmp_path / "bad/f").exists()
    with pytest.raises(InvalidArgument, match="invalid checksum digest format"):
        cp.fetch_url(f"{base}/f", str(tmp_path), checksum="md5:abc")


def test_fetch_url_failures(http_dir: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_dir
    with pytest.raises(System, match=f"^failed to GET {base}/missing with status 404 "):
        cp.fetch_url(f"{base}/missing", str(tmp_path))
    assert not (tmp_path / "missing").exists()
    with pytest.raises(Unavailable, match=f"^failed to fetch {base}/short: "):
        cp.fetch_url(f"{base}/short", str(tmp_path))
    assert not (tmp_path / "short").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/y"
    with pytest.raises(Unavailable) as err:
        cp.fetch_url(url, str(tmp_path))
    assert str(err.value) == f"failed to fetch {url}: no network access (connection refused)"
    with pytest.raises(InvalidArgument, match="cannot determine filename"):
        cp.fetch_url(f"{base}/", str(tmp_path))


# -- diff_files ------------------------------------------------------------


def test_diff_files(ctx: Path) -> None:
    before = cp.select(str(ctx), ["dir"])
    old = {p: f.to_dict() for p, f in before.files.items()}
    assert cp.diff_files(old, before) == []
    (ctx / "dir/x.txt").write_text("changed")
    (ctx / "dir/new.txt").write_text("n")
    os.remove(ctx / "dir/sub/y.txt")
    os.chmod(ctx / "dir/empty", 0o700)
    after = cp.select(str(ctx), ["dir"])
    assert cp.diff_files(old, after) == ["dir/empty", "dir/new.txt", "dir/sub/y.txt",
                                         "dir/x.txt"]
    by_digest = {p: f.digest for p, f in before.files.items()}
    assert cp.diff_files(by_digest, after) == ["dir/new.txt", "dir/sub/y.txt", "dir/x.txt"]
    assert cp.diff_files(before.files, after) == cp.diff_files(old, after)


def test_hardlinks_inside_a_directory_source_stay_links(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "c"
    make_tree(ctx, {"d/a": "same", "d/sub/x": "other"})
    os.link(ctx / "d/a", ctx / "d/sub/b")
    os.link(ctx / "d/a", ctx / "single")
    sel = cp.select(str(ctx), ["d", "single"])
    assert sel.links == {"d/sub/b": "d/a"}
    cp.apply(sel, str(rootfs), "/out/")
    assert os.stat(rootfs / "out/a").st_ino == os.stat(rootfs / "out/sub/b").st_ino
    assert os.stat(rootfs / "out/single").st_ino != os.stat(rootfs / "out/a").st_ino
    assert os.stat(rootfs / "out/a").st_nlink == 2


def test_os_errors_name_container_paths(tmp_path: Path) -> None:
    rootfs = str(tmp_path / "r")
    err = cp._os_error(OSError(28, "No space left on device", rootfs + "/app/x"), rootfs, "")
    assert str(err) == "failed to copy files: /app/x: no space left on device"
    err = cp._os_error(OSError(5, "Input/output error", "/ctx/a"), rootfs, "/ctx")
    assert str(err) == "failed to copy files: a: input/output error"


def test_select_in_place_context_hides_dockerignored_paths(tmp_path: Path) -> None:
    """A context read in place (not received as a tar) hides what .dockerignore
    names, as if the client had never sent it."""
    from ketch.build.dockerignore import Matcher

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "a.txt").write_text("a")
    (tmp_path / "keep" / "secret.key").write_text("k")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "x.log").write_text("x")
    (tmp_path / "logs" / "important.log").write_text("i")
    ignore = Matcher(["**/*.key", "logs", "!logs/important.log"])
    sel = cp.select(str(tmp_path), ["."], ignore=ignore)
    assert sorted(sel.files) == ["keep", "keep/a.txt", "logs", "logs/important.log"]
    globbed = cp.select(str(tmp_path), ["keep/*"], ignore=ignore)
    assert sorted(globbed.files) == ["keep/a.txt"]
    with pytest.raises(NotFound, match="secret.key"):
        cp.select(str(tmp_path), ["keep/secret.key"], ignore=ignore)
    assert sorted(cp.select(str(tmp_path), ["logs"], ignore=ignore).files) == [
        "logs/important.log"]
