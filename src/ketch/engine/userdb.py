"""Users and groups of a container, looked up in its own /etc/passwd and /etc/group.

``--user`` and ``--group-add`` name users and groups of the image, not of the
host, so they are resolved against files inside the rootfs, with the rules of
runc's user package that dockerd uses:

- ``""`` is uid 0 (with root's entry if there is one); ``name``, ``uid``,
  ``name:group``, ``uid:gid``, ``name:gid``, ``uid:group``;
- numbers need no entry (``1000:1000`` works on an image without /etc/passwd);
  names must exist ("unable to find user xyz: no matching entries in passwd file");
- without an explicit group, the user's primary gid and the groups that list
  the user as a member; with one, that group and no supplementary groups;
- a file that is missing counts as empty.

The files are found with every symlink resolved as if the rootfs were ``/``
(an image's ``/etc/passwd -> /host/etc/passwd`` stays inside it), and opened
without following a last symlink or blocking on a FIFO.

    u = exec_user(rootfs, "www:audio")          # ExecUser(uid=33, gid=29, sgids=[], ...)
    spec_user(rootfs, "www", ["daemon"])        # the OCI process.user, as dockerd builds it
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ketch.errors import InvalidArgument
from ketch.runtime.rootfs import secure_join
from ketch.runtime.spec import User

MIN_ID = 0
MAX_ID = 2**31 - 1
_MAX_FILE = 16 * 1024 * 1024     # a passwd file bigger than this is not a passwd file

PASSWD_PATH = "/etc/passwd"
GROUP_PATH = "/etc/group"

NO_PASSWD_ENTRIES = "no matching entries in passwd file"
NO_GROUP_ENTRIES = "no matching entries in group file"
RANGE_ERROR = f"uids and gids must be in range {MIN_ID}-{MAX_ID}"


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(slots=True)
class ExecUser:
    uid: int = 0
    gid: int = 0
    sgids: list[int] = field(default_factory=list)
    home: str = "/"
    name: str = ""


def _atoi(text: str) -> int:
    """Go's strconv.Atoi as runc's parser uses it: anything unparsable is 0."""
    try:
        return int(text, 10)
    except ValueError:
        return 0


def _number(text: str) -> int | None:
    """A decimal id (Go's Atoi accepts a sign; ranges are checked by the caller)."""
    t = text[1:] if text[:1] in "+-" else text
    return int(text, 10) if t.isdigit() else None


def read_in_rootfs(rootfs: str, path: str) -> str | None:
    """The text of ``path`` inside ``rootfs``, or None if it does not exist.

    Not a regular file (a FIFO, a device, a directory) is an error: reading
    one could block or read the host's data.
    """
    real = secure_join(rootfs, path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        if exc.errno == errno.ELOOP:    # a symlink appeared after secure_join: refuse it
            raise InvalidArgument(f"{path} in the container is a symlink that moved") from None
        raise InvalidArgument(f"cannot open {path} in the container: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{path} in the container is not a regular file")
        data = os.read(fd, _MAX_FILE)
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")


def _fields(line: str, n: int) -> list[str]:
    parts = line.split(":")
    return (parts + [""] * n)[:n]


def parse_passwd(text: str) -> list[PasswdEntry]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, _pw, uid, gid, _gecos, home, _shell = _fields(line, 7)
        out.append(PasswdEntry(name=name, uid=_atoi(uid), gid=_atoi(gid), home=home))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, _pw, gid, members = _fields(line, 4)
        out.append(GroupEntry(name=name, gid=_atoi(gid),
                              members=tuple(members.split(",")) if members else ()))
    return out


@dataclass(slots=True)
class UserDB:
    """The passwd and group entries of one rootfs (None: the file is absent)."""

    passwd: list[PasswdEntry] | None
    group: list[GroupEntry] | None

    @classmethod
    def from_rootfs(cls, rootfs: str) -> UserDB:
        p = read_in_rootfs(rootfs, PASSWD_PATH)
        g = read_in_rootfs(rootfs, GROUP_PATH)
        return cls(passwd=None if p is None else parse_passwd(p),
                   group=None if g is None else parse_group(g))

    def exec_user(self, spec: str, default: ExecUser | None = None) -> ExecUser:
        """runc's GetExecUser: ``spec`` as ``user[:group]``."""
        base = default or ExecUser()
        user = ExecUser(uid=base.uid, gid=base.gid, sgids=list(base.sgids), home=base.home)
        user_arg, _, group_arg = spec.partition(":")
        uid_arg = _number(user_arg)
        gid_arg = _number(group_arg)

        def user_matches(u: PasswdEntry) -> bool:
            if user_arg == "":
                return u.uid == user.uid
            if uid_arg is not None:
                return u.uid == uid_arg
            return u.name == user_arg

        users = [u for u in self.passwd or [] if user_matches(u)]
        matched = ""
        if users:
            matched = users[0].name
            user.uid, user.gid, user.home = users[0].uid, users[0].gid, users[0].home
            user.name = matched
        elif user_arg != "":
            if uid_arg is None:
                raise InvalidArgument(f"unable to find user {user_arg}: {NO_PASSWD_ENTRIES}")
            if not MIN_ID <= uid_arg <= MAX_ID:
                raise InvalidArgument(RANGE_ERROR)
            user.uid = uid_arg

        def group_matches(g: GroupEntry) -> bool:
            if group_arg != "":
                return g.gid == gid_arg if gid_arg is not None else g.name == group_arg
            return matched != "" and matched in g.members

        groups = [g for g in self.group or [] if group_matches(g)]
        if group_arg != "":
            if groups:
                user.gid = groups[0].gid
            else:
                if gid_arg is None:
                    raise InvalidArgument(f"unable to find group {group_arg}: {NO_GROUP_ENTRIES}")
                if not MIN_ID <= gid_arg <= MAX_ID:
                    raise InvalidArgument(RANGE_ERROR)
                user.gid = gid_arg
        elif groups:
            user.sgids = [g.gid for g in groups]
        return user

    def additional_groups(self, names: list[str]) -> list[int]:
        """runc's GetAdditionalGroups for ``--group-add``: names or ids, each once.

        The ids come in the order asked for (runc returns them from a Go map,
        in no particular order). A group asked for twice by name is not an
        error here (runc's loop reports the second one as missing).
        """
        entries = [g for g in self.group or []
                   if any(g.name == a or str(g.gid) == a for a in names)]
        gids: list[int] = []
        for ask in names:
            found = False
            for g in entries:
                if g.name == ask or str(g.gid) == ask:
                    if g.gid not in gids:
                        gids.append(g.gid)
                    found = True
                    break
            if found:
                continue
            n = _number(ask)
            if n is None:
                raise InvalidArgument(f"Unable to find group {ask}: {NO_GROUP_ENTRIES}")
            if not MIN_ID <= n <= MAX_ID:
                raise InvalidArgument(RANGE_ERROR)
            if n not in gids:
                gids.append(n)
        return gids


def exec_user(rootfs: str, spec: str) -> ExecUser:
    return UserDB.from_rootfs(rootfs).exec_user(spec)


def spec_user(rootfs: str, user: str, group_add: list[str] | None = None,
              *, db: Callable[[str], UserDB] = UserDB.from_rootfs) -> User:
    """The OCI ``process.user`` dockerd gives runc: the primary gid first among the
    additional gids (moby's fix for CVE-2022-36109), then the user's groups,
    then ``--group-add``'s."""
    try:
        userdb = db(rootfs)
        eu = userdb.exec_user(user)
        extra = userdb.additional_groups(group_add) if group_add else []
    except InvalidArgument as exc:
        # dockerd looks the user up itself while it builds the spec, so its error
        # reaches the client as it is, not wrapped in the runtime's "OCI runtime
        # create failed: ...: unknown" (the engine leaves errors so marked alone).
        exc.not_runtime = True  # type: ignore[attr-defined]
        raise
    return User(uid=eu.uid, gid=eu.gid, additional_gids=[eu.gid, *eu.sgids, *extra])
