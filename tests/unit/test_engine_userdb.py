"""userdb: --user and --group-add resolved inside the container's rootfs, as runc's user package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.engine import userdb
from ketch.engine.userdb import ExecUser, UserDB, exec_user, spec_user
from ketch.errors import InvalidArgument

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
   www:x:33:33:www:/var/www:/bin/false
app:x:1000:1000::/home/app:/bin/sh

app:x:1001:1001:shadowed:/nowhere:/bin/sh
weird:x:notanumber:7::/w:
"""
GROUP = """\
root:x:0:
daemon:x:1:app
tty:x:5:
audio:x:29:www,app
www:x:33:
app:x:1000:
staff:x:50:app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return str(tmp_path)


@pytest.mark.parametrize(("spec", "want"), [
    ("", (0, 0, [], "/root")),
    ("root", (0, 0, [], "/root")),
    ("www", (33, 33, [29], "/var/www")),           # implicit group: + groups listing www
    ("app", (1000, 1000, [1, 29, 50], "/home/app")),   # first entry of a duplicated name wins
    ("1000", (1000, 1000, [1, 29, 50], "/home/app")),
    ("www:audio", (33, 29, [], "/var/www")),       # explicit group: no supplementary groups
    ("www:5", (33, 5, [], "/var/www")),
    ("www:4242", (33, 4242, [], "/var/www")),      # numeric gid without an entry
    ("4242", (4242, 0, [], "/")),                  # numeric uid without an entry
    ("4242:4343", (4242, 4343, [], "/")),
    ("4242:audio", (4242, 29, [], "/")),
    ("weird", (0, 7, [], "/w")),                   # unparsable ids read as 0, as runc
    ("0:tty", (0, 5, [], "/root")),
])
def test_exec_user(rootfs: str, spec: str, want: tuple[int, int, list[int], str]) -> None:
    u = exec_user(rootfs, spec)
    assert (u.uid, u.gid, u.sgids, u.home) == want


@pytest.mark.parametrize(("spec", "message"), [
    ("nobody", "unable to find user nobody: no matching entries in passwd file"),
    ("www:nogroup", "unable to find group nogroup: no matching entries in group file"),
    ("nobody:audio", "unable to find user nobody: no matching entries in passwd file"),
    ("4294967296", "uids and gids must be in range 0-2147483647"),
    ("1:4294967296", "uids and gids must be in range 0-2147483647"),
])
def test_exec_user_errors(rootfs: str, spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        exec_user(rootfs, spec)
    assert str(err.value) == message


def test_missing_files_count_as_empty(tmp_path: Path) -> None:
    assert exec_user(str(tmp_path), "") == ExecUser(uid=0, gid=0, sgids=[], home="/")
    assert exec_user(str(tmp_path), "1000:1000").uid == 1000
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        exec_user(str(tmp_path), "app")
    with pytest.raises(InvalidArgument, match="unable to find group staff"):
        exec_user(str(tmp_path), "0:staff")
    assert UserDB.from_rootfs(str(tmp_path)).additional_groups(["12"]) == [12]


def test_additional_groups(rootfs: str) -> None:
    db = UserDB.from_rootfs(rootfs)
    assert db.additional_groups(["audio", "50", "999", "tty"]) == [29, 50, 999, 5]
    assert db.additional_groups(["29", "audio"]) == [29]     # the same group twice, once
    with pytest.raises(InvalidArgument) as err:
        db.additional_groups(["nogroup"])
    assert str(err.value) == "Unable to find group nogroup: no matching entries in group file"
    with pytest.raises(InvalidArgument, match="must be in range"):
        db.additional_groups(["-1"])


def test_spec_user_puts_the_primary_gid_first(rootfs: str) -> None:
    u = spec_user(rootfs, "www", ["daemon", "1234"])
    assert (u.uid, u.gid, u.additional_gids) == (33, 33, [33, 29, 1, 1234])
    u = spec_user(rootfs, "www:audio", ["daemon", "1234"])
    assert (u.uid, u.gid, u.additional_gids) == (33, 29, [29, 1, 1234])
    u = spec_user(rootfs, "")
    assert (u.uid, u.gid, u.additional_gids) == (0, 0, [0])


def test_symlinks_stay_inside_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:666:666::/:/bin/sh\n")
    # An absolute link means "/" of the container; a relative one cannot climb out either.
    (root / "real").mkdir()
    (root / "real" / "passwd").write_text("good:x:7:7::/:/bin/sh\n")
    os.symlink("/real/passwd", root / "etc" / "passwd")
    assert exec_user(str(root), "good").uid == 7
    os.unlink(root / "etc" / "passwd")
    os.symlink("../../../../outside/passwd", root / "etc" / "passwd")
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        exec_user(str(root), "evil")
    os.unlink(root / "etc" / "passwd")
    os.symlink(str(outside / "passwd"), root / "etc" / "passwd")
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        exec_user(str(root), "evil")
    # /etc itself a link to the host's /etc: resolved as the container's /etc
    os.unlink(root / "etc" / "passwd")
    os.rmdir(root / "etc")
    os.symlink(str(outside), root / "etc")
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        exec_user(str(root), "evil")


def test_special_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc" / "passwd")     # reading would block
    with pytest.raises(InvalidArgument, match="/etc/passwd in the container is not a regular"):
        exec_user(str(tmp_path), "root")
    os.unlink(tmp_path / "etc" / "passwd")
    (tmp_path / "etc" / "passwd").mkdir()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        exec_user(str(tmp_path), "root")


def test_parsers_tolerate_what_runc_tolerates() -> None:
    users = userdb.parse_passwd("short:x:5\n\n  spaced:x:6:6:g:/h:/s  \nroot:x:0:0::/root:/bin/sh")
    assert [(u.name, u.uid, u.gid, u.home) for u in users] == [
        ("short", 5, 0, ""), ("spaced", 6, 6, "/h"), ("root", 0, 0, "/root")]
    groups = userdb.parse_group("g:x:9:a,b\nempty:x:10:\nbare:x:11")
    assert [(g.name, g.gid, g.members) for g in groups] == [
        ("g", 9, ("a", "b")), ("empty", 10, ()), ("bare", 11, ())]
