"""Containers' filesystems: ``docker cp`` (stat, get, put), ``export``, ``diff``, ``commit``.

What the routes call (``ContainerFiles(engine)``)::

    st = await files.stat("c1", "/etc/passwd")          # HEAD /containers/c1/archive
    async with files.get_archive("c1", "/etc") as (st, chunks): ...   # GET .../archive
    await files.put_archive("c1", "/tmp", body_chunks)   # PUT .../archive
    async with files.export("c1") as chunks: ...         # GET .../export
    files.changes("c1")                                  # GET .../changes
    await files.commit("c1", repo="me/x", tag="1")       # POST /commit

Why it is built this way:

* The container's files are untrusted, and a running container can change
  them while we look (swap a directory for a symlink to ``/``). So nothing
  here walks them from the daemon: every stat, archive and extraction runs
  in a short-lived helper process (``python -I -m ketch.engine.files``) that
  enters a private mount namespace, mounts what the container sees (its
  rootfs, its volumes and binds, its /etc/hosts files) and ``chroot``s into
  it. Symlinks then resolve inside the container by the kernel's own rules,
  as moby's chrootarchive does, and the mounts vanish with the helper: a
  stopped container needs no mount or unmount on the host.
* On top of the chroot, extraction keeps moby's own checks (an entry may not
  climb out of the extraction directory with ``..``, nor a relative symlink
  or a hardlink point above it), so archives are refused where dockerd
  refuses them.
* Paths, the stat header (Go's ``FileMode`` bits, RFC 3339 times), archive
  entry names and error messages are dockerd's (daemon/archive*.go,
  container/archive.go, pkg/archive), because the docker CLI and docker-py
  act on them.
* ``changes`` and ``commit`` read the overlay upper directory. ketch has no
  "init layer" like dockerd's, so the mount targets the runtime creates in
  the upper (/etc/hosts, /etc/hostname, /etc/resolv.conf, /dev/console, ...)
  are left out of both, as dockerd's init layer hides them.

The helper speaks a tiny protocol on its stdout: a frame (4-byte big-endian
length + JSON: ``{"ok": ...}`` or ``{"kind": "NotFound", "message": ...}``),
then, for ``get``/``export``, the tar stream. Its request is one JSON
argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import stat
import struct
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from ketch.errors import (
    Conflict,
    InvalidArgument,
    KetchError,
    NotFound,
    NotSupported,
    System,
)

if TYPE_CHECKING:
    import asyncio

    from ketch.engine.containers import Engine
    from ketch.engine.store import Container

STAT_HEADER = "X-Docker-Container-Path-Stat"
CHANGE_MODIFY, CHANGE_ADD, CHANGE_DELETE = 0, 1, 2
_CHUNK = 1 << 16

# Go's os.FileMode type bits (io/fs), which the stat header carries.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20

# What dockerd's init layer holds (daemon/initlayer): mount targets and the like the
# runtime creates in the container's upper dir, which are not the user's changes.
RUNTIME_PATHS = frozenset({
    "/dev/pts", "/dev/shm", "/dev/console", "/proc", "/sys", "/.dockerenv",
    "/etc/resolv.conf", "/etc/hosts", "/etc/hostname", "/etc/mtab",
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
    "/dev/ptmx", "/dev/mqueue", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr",
    "/sbin/docker-init",
})
# Directories that hold nothing but runtime paths are the runtime's too.
RUNTIME_DIRS = frozenset({"/dev", "/etc", "/sbin"})


# --- the stat header ----------------------------------------------------------------------


def go_file_mode(mode: int) -> int:
    """A ``st_mode`` as Go's ``os.FileMode`` (what dockerd puts in the stat header)."""
    out = mode & 0o777
    kind = stat.S_IFMT(mode)
    out |= {stat.S_IFDIR: GO_MODE_DIR, stat.S_IFLNK: GO_MODE_SYMLINK,
            stat.S_IFBLK: GO_MODE_DEVICE, stat.S_IFCHR: GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE,
            stat.S_IFIFO: GO_MODE_NAMED_PIPE, stat.S_IFSOCK: GO_MODE_SOCKET}.get(kind, 0)
    if mode & stat.S_ISUID:
        out |= GO_MODE_SETUID
    if mode & stat.S_ISGID:
        out |= GO_MODE_SETGID
    if mode & stat.S_ISVTX:
        out |= GO_MODE_STICKY
    return out


def go_time(ns: int, utc_offset: int | None = None) -> str:
    """Go's ``time.Time`` in JSON (RFC 3339, nanoseconds trimmed, the local zone)."""
    secs, frac = divmod(ns, 1_000_000_000)
    if utc_offset is None:
        utc_offset = time.localtime(secs).tm_gmtoff
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs + utc_offset))
    digits = f"{frac:09d}".rstrip("0")
    if utc_offset == 0:
        zone = "Z"
    else:
        sign = "+" if utc_offset > 0 else "-"
        h, m = divmod(abs(utc_offset) // 60, 60)
        zone = f"{sign}{h:02d}:{m:02d}"
    return f"{base}.{digits}{zone}" if digits else f"{base}{zone}"


@dataclass(frozen=True, slots=True)
class PathStat:
    """moby's ``container.PathStat``: what HEAD /archive answers in its header."""

    name: str
    size: int
    mode: int           # Go FileMode bits
    mtime: str
    link_target: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "mode": self.mode,
                "mtime": self.mtime, "linkTarget": self.link_target}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PathStat:
        return cls(name=str(doc["name"]), size=int(doc["size"]), mode=int(doc["mode"]),
                   mtime=str(doc["mtime"]), link_target=str(doc.get("linkTarget", "")))

    def header(self) -> str:
        import base64

        return base64.b64encode(json.dumps(self.to_json(), separators=(",", ":")).encode()
                                ).decode()


# --- docker's path rules (container/archive.go, pkg/archive) --------------------------------


def preserve_trailing(cleaned: str, original: str) -> str:
    """pkg/archive's PreserveTrailingDotOrSeparator: ``a/.`` and ``a/`` keep their tail."""
    if original.endswith("/.") and not cleaned.endswith("/."):
        return cleaned.rstrip("/") + "/." if cleaned != "/" else "/."
    if original.endswith("/") and not cleaned.endswith("/"):
        return cleaned + "/"
    return cleaned


def abs_container_path(path: str) -> str:
    """The user's path as an absolute one in the container, its ``/.`` or ``/`` kept."""
    cleaned = os.path.normpath("/" + path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return preserve_trailing(cleaned, path)


def go_base(path: str) -> str:
    """Go's ``filepath.Base``: the last element, trailing slashes ignored; "/" for "/"."""
    stripped = path.rstrip("/")
    if not stripped:
        return "/" if path else "."
    return stripped.rsplit("/", 1)[-1]


def split_dir(abs_path: str) -> tuple[str, str]:
    """Go's ``filepath.Split``: everything up to the last slash, and the rest."""
    i = abs_path.rfind("/")
    return abs_path[:i + 1], abs_path[i + 1:]


def under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


# --- the helper's request -----------------------------------------------------------------


@dataclass(slots=True)
class Bind:
    """A mount the container has, made again inside the helper's namespace."""

    source: str
    destination: str
    rw: bool = True
    volume: bool = True      # a volume or bind (as opposed to the /etc files)


@dataclass(slots=True)
class Job:
    """What the helper is asked to do; JSON on its command line."""

    op: str                            # stat | get | put | export
    rootfs: str                        # the container's rootfs mount point on the host
    layer_mounts: list[dict[str, Any]] = field(default_factory=list)   # if not mounted
    binds: list[Bind] = field(default_factory=list)
    readonly_rootfs: bool = False
    path: str = ""
    container: str = ""                # as the user named it, for messages
    no_overwrite_dir_non_dir: bool = False
    chown_user: str | None = None      # copyUIDGID: the container's Config.User

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, text: str) -> Job:
        doc = json.loads(text)
        doc["binds"] = [Bind(**b) for b in doc.get("binds", [])]
        return cls(**doc)


_KINDS: dict[str, type[KetchError]] = {
    "NotFound": NotFound, "InvalidArgument": InvalidArgument, "Conflict": Conflict,
    "NotSupported": NotSupported, "System": System,
}


def write_frame(out: BinaryIO, doc: dict[str, Any]) -> None:
    data = json.dumps(doc).encode()
    out.write(struct.pack(">I", len(data)) + data)
    out.flush()


def error_frame(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, KetchError):
        kind = next((k for k, cls in _KINDS.items() if type(exc) is cls), None)
        if kind is None:
            kind = next((k for k, cls in _KINDS.items() if isinstance(exc, cls)), "System")
        return {"kind": kind, "message": exc.message}
    if isinstance(exc, OSError):
        return {"kind": "System", "message": f"{exc.strerror or exc}"
                + (f": {exc.filename}" if exc.filename else "")}
    return {"kind": "System", "message": str(exc) or type(exc).__name__}


def frame_error(doc: dict[str, Any]) -> KetchError:
    cls = _KINDS.get(str(doc.get("kind")), System)
    return cls(str(doc.get("message", "")))


def parse_frame(head: bytes) -> int:
    if len(head) != 4:
        raise System("the file helper ended without an answer")
    return int(struct.unpack(">I", head)[0])


# --- inside the helper (after chroot) ----------------------------------------------------


def resolve_in_root(path: str) -> str:
    """moby's FollowSymlinkInScope, inside the chroot: every symlink followed, cleaned."""
    return os.path.realpath(path) if path else "/"


def stat_path(abs_path: str) -> tuple[PathStat, str]:
    """container.ResolvePath + StatPath: the directory part resolved, the last element
    not followed (a symlink is reported as one, with its resolved target)."""
    dir_part, base = split_dir(abs_path)
    resolved = resolve_in_root(dir_part).rstrip("/") + "/" + base
    st = os.lstat(resolved)
    link = ""
    if stat.S_ISLNK(st.st_mode):
        link = resolve_in_root(abs_path)
    return (PathStat(name=go_base(abs_path), size=st.st_size, mode=go_file_mode(st.st_mode),
                     mtime=go_time(st.st_mtime_ns), link_target=link), resolved)


# Go's file type bits (moby's fillGo18FileTypeBits) by tar entry type.
_GO_TYPE_BITS = {tarfile.REGTYPE: 0o100000, tarfile.LNKTYPE: 0o100000,
                 tarfile.DIRTYPE: 0o040000, tarfile.SYMTYPE: 0o120000,
                 tarfile.CHRTYPE: 0o020000, tarfile.BLKTYPE: 0o060000,
                 tarfile.FIFOTYPE: 0o010000}


class _GoTarInfo(tarfile.TarInfo):
    """An entry whose header's mode field carries the file type bits, as moby writes it
    (``0100644`` for a file, ``040755`` for a directory): Python's tarfile keeps only
    the permission bits there."""

    def tobuf(self, format: Literal[0, 1, 2] | None = tarfile.PAX_FORMAT,
              encoding: str | None = tarfile.ENCODING,
              errors: str = "surrogateescape") -> bytes:
        buf = super().tobuf(format, encoding, errors)
        bits = _GO_TYPE_BITS.get(self.type, 0)
        if not bits:
            return buf
        # The entry's own header block comes last, after any pax extended header.
        head = bytearray(buf[-tarfile.BLOCKSIZE:])
        head[100:108] = b"%07o\0" % ((self.mode & 0o7777) | bits)
        head[148:156] = b" " * 8
        head[148:156] = b"%06o\0 " % sum(head)
        return buf[:-tarfile.BLOCKSIZE] + bytes(head)


class TarWriter:
    """pkg/archive's TarWithOptions: lexical walk, dirs with a trailing slash, hardlinks
    within the archive, numeric owners, whole-second times, security.capability kept,
    sockets skipped."""

    def __init__(self, out: BinaryIO) -> None:
        self.tf = tarfile.open(  # noqa: SIM115 - closed by close()
            fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
            errors="surrogateescape")
        self.links: dict[tuple[int, int], str] = {}

    def add_tree(self, src: str, name: str, *, include_top: bool = True) -> None:
        st = os.lstat(src)
        if include_top:
            self.add(src, name, st)
        if stat.S_ISDIR(st.st_mode):
            try:
                children = sorted(os.listdir(src), key=os.fsencode)
            except OSError:
                return
            for child in children:
                path = src.rstrip("/") + "/" + child
                self.add_tree(path, f"{name.rstrip('/')}/{child}" if name else child)

    def add(self, path: str, name: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return
        info = _GoTarInfo(name + "/" if stat.S_ISDIR(mode) and not name.endswith("/")
                          else name)
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        data: BinaryIO | None = None
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                info.type = tarfile.LNKTYPE
                info.linkname = self.links[key]
            else:
                if st.st_nlink > 1:
                    self.links[key] = name
                info.size = st.st_size
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    return   # gone or unreadable meanwhile: skipped, as a racing file
                data = os.fdopen(fd, "rb")
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        with contextlib.suppress(OSError):
            cap = os.getxattr(path, "security.capability", follow_symlinks=False)
            info.pax_headers = {"SCHILY.xattr.security.capability":
                                cap.decode("utf-8", "surrogateescape")}
        try:
            if data is not None:
                # A file that shrank meanwhile would desync the stream: pad it.
                self.tf.addfile(info, _Exactly(data, info.size))
            else:
                self.tf.addfile(info)
        finally:
            if data is not None:
                data.close()

    def close(self) -> None:
        self.tf.close()


class _Exactly:
    """A file read as exactly ``size`` bytes (zero-padded if it shrank meanwhile)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n) if n else b""
        if len(data) < n:
            data += b"\0" * (n - len(data))
        self.left -= len(data)
        return data


def archive_path(abs_path: str, out: BinaryIO) -> PathStat:
    """daemon/archive.go containerArchivePath, after the stat: the tar of the path, its
    entries named from the name the user asked for (``a/.`` gives ``.``)."""
    st, resolved = stat_path(abs_path)
    resolved = os.path.normpath(resolved)
    rebase = go_base(abs_path)
    writer = TarWriter(out)
    try:
        writer.add_tree(resolved, rebase)
    finally:
        writer.close()
    return st


def export_root(out: BinaryIO) -> None:
    """The whole filesystem, entries relative to the root (as ``docker export``)."""
    writer = TarWriter(out)
    try:
        writer.add_tree("/", "", include_top=False)
    finally:
        writer.close()


@dataclass(slots=True)
class ExtractOptions:
    no_overwrite_dir_non_dir: bool = False
    chown: tuple[int, int] | None = None


def _outside(name: str, dest: str) -> KetchError:
    return InvalidArgument(f"{json.dumps(name)} is outside of {json.dumps(dest)}")


def extract(stream: BinaryIO, dest: str, opts: ExtractOptions) -> None:
    """pkg/archive's Unpack into ``dest`` (inside the chroot): existing directories merge,
    anything else is replaced, parents are made 0755, owners and modes and times as in
    the archive, directory times last."""
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|*", encoding="utf-8",
                          errors="surrogateescape") as tf:
            for m in tf:
                _extract_one(tf, m, dest, opts, dirs)
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"the archive is not a valid tar: {exc}") from None
    for path, m in dirs:
        with contextlib.suppress(OSError):
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)


def _extract_one(tf: tarfile.TarFile, m: tarfile.TarInfo, dest: str, opts: ExtractOptions,
                 dirs: list[tuple[str, tarfile.TarInfo]]) -> None:
    name = os.path.normpath(m.name) if m.name else "."
    if name.startswith("/"):
        name = name.lstrip("/") or "."
    path = os.path.normpath(os.path.join(dest, name))
    if not under(path, dest):
        raise _outside(m.name, dest)
    if name != "." and "/" in name:
        parent = os.path.dirname(path)
        if not os.path.lexists(parent):
            os.makedirs(parent, 0o755)
    is_dir = m.isdir()
    try:
        existing: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        was_dir = stat.S_ISDIR(existing.st_mode)
        if opts.no_overwrite_dir_non_dir and was_dir and not is_dir:
            raise InvalidArgument(f'cannot overwrite directory "{path}" with non-directory '
                                  f'"{dest}"')
        if opts.no_overwrite_dir_non_dir and not was_dir and is_dir:
            raise InvalidArgument(f'cannot overwrite non-directory "{path}" with directory '
                                  f'"{dest}"')
        if was_dir and name == ".":
            return
        if not (was_dir and is_dir):
            if was_dir:
                import shutil

                shutil.rmtree(path)
            else:
                os.unlink(path)
    mode = m.mode & 0o7777
    if is_dir:
        if not os.path.isdir(path) or os.path.islink(path):
            os.mkdir(path, mode)
    elif m.isreg():
        src = tf.extractfile(m)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        with os.fdopen(fd, "wb") as f:
            if src is not None:
                while chunk := src.read(_CHUNK):
                    f.write(chunk)
    elif m.issym():
        # Go's filepath.Join, which never restarts at an absolute second part.
        target = os.path.normpath(os.path.dirname(path) + "/" + m.linkname)
        if not under(target, dest):
            raise InvalidArgument(f'invalid symlink "{path}" -> "{m.linkname}"')
        os.symlink(m.linkname, path)
    elif m.islnk():
        target = os.path.normpath(dest + "/" + m.linkname)
        if not under(target, dest):
            raise InvalidArgument(f'invalid hardlink "{target}" -> "{m.linkname}"')
        os.link(target, path, follow_symlinks=False)
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(path, kind | mode, os.makedev(m.devmajor, m.devminor))
    elif m.isfifo():
        os.mkfifo(path, mode)
    else:
        raise InvalidArgument(f"unhandled tar header type {m.type!r}")
    if m.islnk():
        return     # the same inode as its target, whose entry set its metadata
    uid, gid = opts.chown if opts.chown is not None else (m.uid, m.gid)
    os.chown(path, uid, gid, follow_symlinks=False)
    for key, value in m.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        xname = key[len("SCHILY.xattr."):]
        if xname.startswith("trusted.overlay."):
            continue   # would change how the container's overlay merges
        try:
            os.setxattr(path, xname, value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
    if not m.issym():
        os.chmod(path, mode)      # after chown, which clears setuid bits
        if not is_dir:
            os.utime(path, (m.mtime, m.mtime))
    else:
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
    if is_dir:
        dirs.append((path, m))


def put_checks(abs_path: str, job: Job) -> str:
    """daemon/archive.go containerExtractToDir's checks; the resolved directory."""
    resolved = resolve_in_root(abs_path)
    try:
        st = os.lstat(resolved)
    except FileNotFoundError:
        raise NotFound(f"Could not find the file {job.path} in container "
                       f"{job.container}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument("extraction point is not a directory")
    volume = _volume_of(resolved, job.binds)
    if volume is not None:
        if not volume.rw:
            raise InvalidArgument("mounted volume is marked read-only")
    elif job.readonly_rootfs:
        raise InvalidArgument("container rootfs is marked read-only")
    return resolved


def _volume_of(path: str, binds: list[Bind]) -> Bind | None:
    best: Bind | None = None
    for b in binds:
        if b.volume and under(path, b.destination) and (
                best is None or len(b.destination) > len(best.destination)):
            best = b
    return best


def _run_job(job: Job) -> int:
    """The helper's work once chrooted; the answer frame, then data, on stdout.

    Once data has started, a failure can only end the stream early (as with
    dockerd): it goes to stderr and the exit status.
    """
    out = sys.stdout.buffer
    abs_path = abs_container_path(job.path) if job.op != "export" else "/"
    streaming = False
    try:
        if job.op in ("stat", "get"):
            st, _ = stat_path(abs_path)
            write_frame(out, {"ok": st.to_json()})
            if job.op == "get":
                streaming = True
                archive_path(abs_path, out)
        elif job.op == "export":
            write_frame(out, {"ok": True})
            streaming = True
            export_root(out)
        elif job.op == "put":
            _put_job(job, abs_path)
            write_frame(out, {"ok": True})
        else:
            raise InvalidArgument(f"unknown operation {job.op}")
        out.flush()
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the daemon
        if streaming:
            sys.stderr.write(f"{error_frame(exc)['message']}\n")
            return 1
        if isinstance(exc, FileNotFoundError):
            write_frame(out, {"kind": "NotFound", "message": f"Could not find the file "
                              f"{job.path} in container {job.container}"})
        elif isinstance(exc, NotADirectoryError):
            # A path through a file ("/etc/passwd/x") is no missing file for dockerd:
            # its lstat error goes back as a system error (our path is the container's).
            write_frame(out, {"kind": "System", "message": f"lstat {abs_path}: not a directory"})
        elif job.op == "put" and isinstance(exc, (InvalidArgument, Conflict)):
            # dockerd wraps every failed extraction (bad target, read-only, breakout) as
            # a system error: 500 with the message, which the clients show as is.
            write_frame(out, {"kind": "System", "message": exc.message})
        else:
            write_frame(out, error_frame(exc))
        return 1


def _put_job(job: Job, abs_path: str) -> None:
    dest = put_checks(abs_path, job)
    chown = None
    if job.chown_user:
        from ketch.engine.userdb import exec_user

        eu = exec_user("/", job.chown_user)
        chown = (eu.uid, eu.gid)
    extract(sys.stdin.buffer, dest,
            ExtractOptions(no_overwrite_dir_non_dir=job.no_overwrite_dir_non_dir,
                           chown=chown))


def _enter(job: Job) -> None:
    """Private mount namespace, the container's mounts, chroot."""
    from ketch.linux import syscalls as sc
    from ketch.linux.mount import is_mountpoint
    from ketch.runtime.rootfs import secure_join

    sys_ = sc.LinuxSyscalls()
    sys_.unshare(0x00020000)  # CLONE_NEWNS
    sys_.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    root = job.rootfs
    if not is_mountpoint(root):
        if not job.layer_mounts:
            raise System(f"the rootfs of container {job.container} is not mounted")
        for m in job.layer_mounts:
            if m.get("cwd"):
                os.chdir(m["cwd"])
            flags = 0
            opts = [o for o in m["options"] if o not in ("ro", "rw", "bind", "rbind")]
            if "ro" in m["options"]:
                flags |= sc.MS_RDONLY
            if "bind" in m["options"] or "rbind" in m["options"]:
                flags |= sc.MS_BIND | sc.MS_REC
            sys_.mount(m["source"], root, None if flags & sc.MS_BIND else m["type"], flags,
                       ",".join(opts) or None)
            os.chdir("/")
    if job.readonly_rootfs:
        # The rootfs itself refuses writes; the volumes mounted below stay writable.
        sys_.mount(None, root, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    for b in sorted(job.binds, key=lambda b: b.destination.rstrip("/").count("/")):
        try:
            src_st = os.stat(b.source)
        except OSError:
            continue
        target = secure_join(root, b.destination)
        if not os.path.lexists(target):
            if not b.volume or job.readonly_rootfs:
                continue
            # dockerd makes missing mount targets too (daemon.mountVolumes).
            if stat.S_ISDIR(src_st.st_mode):
                os.makedirs(target, 0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o755))
        elif os.path.islink(target) or (stat.S_ISDIR(src_st.st_mode)
                                        != stat.S_ISDIR(os.lstat(target).st_mode)):
            continue
        sys_.mount(b.source, target, None, sc.MS_BIND | sc.MS_REC)
        if not b.rw:
            sys_.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    os.chroot(root)
    os.chdir("/")


def helper_main(argv: list[str]) -> int:
    """``python -I -m ketch.engine.files JOB``: one job, then exit."""
    out = sys.stdout.buffer
    try:
        job = Job.decode(argv[0])
        os.umask(0)
        # Everything the job needs is imported before the chroot hides the host's files.
        if job.op == "put":
            import bz2  # noqa: F401 - tarfile's "r|*" decompresses with these
            import lzma  # noqa: F401
            import shutil  # noqa: F401
            import zlib  # noqa: F401
            if job.chown_user:
                import ketch.engine.userdb  # noqa: F401
        _enter(job)
    except BaseException as exc:  # noqa: BLE001 - reported to the daemon
        write_frame(out, error_frame(exc))
        return 1
    return _run_job(job)


# --- the daemon's side ----------------------------------------------------------------------


class _Helper:
    """A running helper process: its answer frame, then its data."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def answer(self) -> Any:
        assert self.proc.stdout is not None
        import asyncio

        try:
            head = await self.proc.stdout.readexactly(4)
            body = await self.proc.stdout.readexactly(parse_frame(head))
        except asyncio.IncompleteReadError:
            err = b""
            if self.proc.stderr is not None:
                with contextlib.suppress(Exception):
                    err = await asyncio.wait_for(self.proc.stderr.read(4096), 5)
            raise System("the file helper failed: "
                         + (err.decode(errors="replace").strip() or "no answer")) from None
        doc = json.loads(body)
        if "ok" not in doc:
            raise frame_error(doc)
        return doc["ok"]

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(_CHUNK):
            yield chunk

    async def close(self) -> None:
        import asyncio

        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10)


class ContainerFiles:
    """The engine's filesystem operations on containers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- helper sessions ------------------------------------------------------------------

    def _binds(self, c: Container, ref: str) -> tuple[list[Bind], list[str]]:
        """The container's volumes and binds (volumes mounted for ``ref``), and its
        /etc files; the names of the volumes to release afterwards."""
        from ketch.volume.planner import MountPoint

        binds: list[Bind] = []
        used: list[str] = []
        for rec in c.mount_points:
            mp = MountPoint.from_record(rec)
            if mp.type == "volume" and mp.name:
                source = self.engine.volumes.mount(mp.name, ref)
                used.append(mp.name)
            elif mp.type == "bind":
                source = mp.source
            else:
                continue     # tmpfs: only the running container's namespace has it
            binds.append(Bind(source=source, destination=mp.destination, rw=mp.rw))
        hc = c.host_config
        cdir = self.engine._dir(c.id)
        for name in ("hostname", "hosts", "resolv.conf"):
            src = os.path.join(cdir, name)
            if os.path.isfile(src):
                binds.append(Bind(source=src, destination=f"/etc/{name}",
                                  rw=not hc.get("ReadonlyRootfs"), volume=False))
        return binds, used

    @contextlib.asynccontextmanager
    async def _session(self, ref: str, job: Job, *, mounts: bool = True
                       ) -> AsyncIterator[_Helper]:
        """A helper for ``job`` in the container's filesystem; with ``mounts``, its
        volumes, binds and /etc files mounted where the container has them."""
        import asyncio
        import secrets

        c = self.engine.store.get(ref)
        if c.state.status in ("removing", "dead"):
            raise Conflict(f"container {c.id} is being removed" if c.state.status == "removing"
                           else f"container {c.id} is dead")
        running = c.state.status in ("running", "paused")
        # A stopped container's rootfs is mounted in the helper's own namespace; holding
        # the engine's start lock meanwhile keeps a start from mounting it beside us.
        lock = self.engine._lock(c.id) if not running else contextlib.nullcontext()
        usage_ref = f"archive-{secrets.token_hex(6)}"
        async with lock:
            binds, used = (await asyncio.to_thread(self._binds, c, usage_ref) if mounts
                           else ([], []))
            try:
                job.rootfs = self.engine._rootfs(c.id)
                job.container = ref
                job.binds = binds
                job.readonly_rootfs = bool(c.host_config.get("ReadonlyRootfs"))
                if not running:
                    job.layer_mounts = [dataclasses.asdict(m) for m in
                                        self.engine.images.snapshotter.mounts(c.id)]
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-m", "ketch.engine.files", job.encode(),
                    stdin=asyncio.subprocess.PIPE if job.op == "put" else
                    asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    close_fds=True)
                helper = _Helper(proc)
                try:
                    yield helper
                finally:
                    await helper.close()
            finally:
                for name in used:
                    with contextlib.suppress(KetchError, OSError):
                        await asyncio.to_thread(self.engine.volumes.unmount, name, usage_ref)

    @staticmethod
    def _path(path: str) -> str:
        if not path:
            raise InvalidArgument("bad parameter: pathcannot be empty")  # dockerd's words
        return path

    # --- the operations -------------------------------------------------------------------

    async def stat(self, ref: str, path: str) -> PathStat:
        """``HEAD /containers/{id}/archive``."""
        async with self._session(ref, Job(op="stat", rootfs="", path=self._path(path))) as h:
            return PathStat.from_json(await h.answer())

    @contextlib.asynccontextmanager
    async def get_archive(self, ref: str, path: str
                          ) -> AsyncIterator[tuple[PathStat, AsyncIterator[bytes]]]:
        """``GET /containers/{id}/archive``: the stat, then the tar's chunks."""
        async with self._session(ref, Job(op="get", rootfs="", path=self._path(path))) as h:
            st = PathStat.from_json(await h.answer())
            c = self.engine.store.get(ref)
            self.engine.on_event("archive-path", c, {"path": path})
            yield st, h.chunks()

    async def put_archive(self, ref: str, path: str, body: AsyncIterator[bytes], *,
                          no_overwrite_dir_non_dir: bool = False,
                          copy_uid_gid: bool = False) -> None:
        """``PUT /containers/{id}/archive``: the tar extracted at ``path`` (a directory)."""
        import asyncio

        c = self.engine.store.get(ref)
        user = str(c.config.get("User") or "") if copy_uid_gid else ""
        job = Job(op="put", rootfs="", path=self._path(path),
                  no_overwrite_dir_non_dir=no_overwrite_dir_non_dir, chown_user=user or None)
        async with self._session(ref, job) as h:
            stdin = h.proc.stdin
            assert stdin is not None

            async def pump() -> None:
                try:
                    async for chunk in body:
                        stdin.write(chunk)
                        await stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    return    # the helper stopped reading: its answer says why
                finally:
                    with contextlib.suppress(OSError):
                        stdin.close()

            feeder = asyncio.ensure_future(pump())
            try:
                await h.answer()
            finally:
                if not feeder.done():
                    feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder
        self.engine.on_event("extract-to-dir", c, {"path": path})

    @contextlib.asynccontextmanager
    async def export(self, ref: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """``GET /containers/{id}/export``: the container's filesystem as one tar."""
        # dockerd exports the container's own filesystem: not its volumes, binds or
        # /etc files (their mount points are there, empty), so none is mounted.
        async with self._session(ref, Job(op="export", rootfs=""), mounts=False) as h:
            await h.answer()
            c = self.engine.store.get(ref)
            self.engine.on_event("export", c, {})
            yield h.chunks()

    # --- changes --------------------------------------------------------------------------

    def layer_dirs(self, cid: str) -> tuple[str, list[str]]:
        """The container's overlay upper dir and its lower dirs (top first)."""
        mounts = self.engine.images.snapshotter.mounts(cid)
        for m in mounts:
            if m.type != "overlay":
                continue
            upper, lowers = "", []
            for opt in m.options:
                key, _, value = opt.partition("=")
                if key == "upperdir":
                    upper = value
                elif key == "lowerdir":
                    lowers = value.split(":")
            base = m.cwd or ""
            if upper:
                return (os.path.join(base, upper),
                        [os.path.join(base, low) for low in lowers])
        if self.engine.images.snapshotter_name == "overlayfs" and mounts and \
                mounts[0].type == "bind" and "rw" in mounts[0].options:
            return mounts[0].source, []      # an image without layers: all is new
        raise NotSupported("container changes need the overlayfs snapshotter")

    def changes(self, ref: str) -> list[dict[str, Any]] | None:
        """``GET /containers/{id}/changes`` (moby's OverlayChanges, in its order)."""
        c = self.engine.store.get(ref)
        upper, lowers = self.layer_dirs(c.id)
        out = overlay_changes(upper, lowers)
        return [{"Path": p, "Kind": k} for p, k in out] or None

    # --- commit ---------------------------------------------------------------------------

    async def commit(self, ref: str, *, repo: str = "", tag: str = "", comment: str = "",
                     author: str = "", pause: bool = True, changes: list[str] | None = None,
                     config: dict[str, Any] | None = None) -> str:
        """``POST /commit``: a new image, the container's changes as one layer on its image."""
        import asyncio

        from ketch.image.reference import normalize

        c = self.engine.store.get(ref)
        if c.state.status == "dead":
            raise Conflict(f"You cannot commit container {c.id} which is Dead")
        if c.state.status == "removing":
            raise Conflict(f"cannot commit container {c.id} which is being removed")
        target = None
        if repo:
            target = normalize(f"{repo}:{tag}" if tag else repo)
            if target.digest is not None:
                raise InvalidArgument("refusing to create a tag with a digest reference")
        elif tag:
            raise InvalidArgument("tag without a repository")
        paused = False
        if pause and c.state.status == "running":
            with contextlib.suppress(KetchError):
                await self.engine.pause(c.id)
                paused = True
        try:
            upper, _ = self.layer_dirs(c.id)
            image_id = await asyncio.to_thread(
                commit_image, self.engine.images, c.image_id, upper,
                container_config=c.config, user_config=config, changes=list(changes or []),
                author=author, comment=comment, target=target)
        finally:
            if paused:
                with contextlib.suppress(KetchError):
                    await self.engine.unpause(c.id)
        self.engine.on_event("commit", c, {"comment": comment, "imageID": image_id,
                                           "imageRef": target.familiar() if target else ""})
        return image_id


# --- changes ----------------------------------------------------------------------------------


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _lower_stat(lowers: list[str], rel: str) -> os.stat_result | None:
    for low in lowers:
        try:
            return os.stat(low + rel)
        except OSError:
            continue
    return None


def _lower_names(lowers: list[str], rel: str) -> set[str]:
    """The names the lower layers show in directory ``rel`` (top first, as merged)."""
    names: set[str] = set()
    hidden: set[str] = set()      # whited out by a higher lower
    for low in lowers:
        d = low + rel
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for name in entries:
            try:
                if _is_whiteout(os.lstat(f"{d}/{name}")):
                    hidden.add(name)
                    continue
            except OSError:
                continue
            if name not in hidden:
                names.add(name)
        if _is_opaque(d):
            break
    return names


def runtime_stub(upper: str, rel: str, st: os.stat_result) -> bool:
    """A mount target or file the runtime made, not a change of the user's (dockerd
    keeps these in its init layer): empty files, empty dirs, /dev nodes, the mtab link,
    and /dev, /etc, /sbin when they hold nothing else."""
    if rel in RUNTIME_PATHS:
        if stat.S_ISREG(st.st_mode):
            return st.st_size == 0
        if stat.S_ISDIR(st.st_mode):
            return all(runtime_stub(upper, f"{rel}/{n}", os.lstat(f"{upper}{rel}/{n}"))
                       for n in os.listdir(upper + rel))
        return not _is_whiteout(st)
    if rel in RUNTIME_DIRS and stat.S_ISDIR(st.st_mode) and not _is_opaque(upper + rel):
        return all(runtime_stub(upper, f"{rel}/{n}", os.lstat(f"{upper}{rel}/{n}"))
                   for n in os.listdir(upper + rel))
    return False


def overlay_changes(upper: str, lowers: list[str]) -> list[tuple[str, int]]:
    """moby's archive.OverlayChanges over an upper dir: whiteouts are deletions, entries
    that exist below are modifications (a directory only if its size, mode or mtime
    changed), the rest additions; a changed entry's parent is reported modified."""
    out: list[tuple[str, int]] = []
    changed_dirs: set[str] = set()

    def walk(rel: str) -> None:
        base = upper + rel
        names = sorted(os.listdir(base or "/"), key=os.fsencode)
        for name in names:
            path_rel = f"{rel}/{name}"
            st = os.lstat(upper + path_rel)
            if runtime_stub(upper, path_rel, st):
                continue
            visit(path_rel, st)
            if stat.S_ISDIR(st.st_mode):
                walk(path_rel)
        if rel and _is_opaque(base):
            # A directory removed and made again hides everything below it: what it
            # hid is deleted, as dockerd reports it.
            for name in sorted(_lower_names(lowers, rel) - set(names), key=os.fsencode):
                out.append((f"{rel}/{name}", CHANGE_DELETE))

    def visit(rel: str, st: os.stat_result) -> None:
        deleted = _is_whiteout(st)
        kind = CHANGE_DELETE if deleted else CHANGE_ADD
        if not deleted:
            low = _lower_stat(lowers, rel)
            if low is not None:
                if stat.S_ISDIR(low.st_mode) and stat.S_ISDIR(st.st_mode) and \
                        not _is_opaque(upper + rel) and low.st_size == st.st_size and \
                        low.st_mode == st.st_mode and \
                        int(low.st_mtime) == int(st.st_mtime):
                    return
                kind = CHANGE_MODIFY
        if stat.S_ISDIR(st.st_mode):
            changed_dirs.add(rel)
        if kind in (CHANGE_ADD, CHANGE_DELETE):
            parent = os.path.dirname(rel)
            if parent != "/" and parent not in changed_dirs:
                out.append((parent, CHANGE_MODIFY))
                changed_dirs.add(parent)
        out.append((rel, kind))

    walk("")
    return out


# --- commit -----------------------------------------------------------------------------------


def _merge_config(user: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """daemon/commit.go merge: the user's config, its empty parts from the container's."""
    out = dict(user)
    if not out.get("User"):
        out["User"] = image.get("User", "")
    ports = dict(out.get("ExposedPorts") or {})
    for p in image.get("ExposedPorts") or {}:
        ports.setdefault(p, {})
    out["ExposedPorts"] = ports or None
    env = list(out.get("Env") or [])
    if not env:
        env = list(image.get("Env") or [])
    else:
        keys = {e.partition("=")[0] for e in env}
        env += [e for e in image.get("Env") or [] if e.partition("=")[0] not in keys]
    out["Env"] = env
    labels = dict(out.get("Labels") or {})
    for k, v in (image.get("Labels") or {}).items():
        labels.setdefault(k, v)
    out["Labels"] = labels
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = image.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = image.get("Entrypoint")
    if not out.get("WorkingDir"):
        out["WorkingDir"] = image.get("WorkingDir", "")
    volumes = dict(out.get("Volumes") or {})
    volumes.update(image.get("Volumes") or {})
    out["Volumes"] = volumes or None
    if not out.get("StopSignal"):
        out["StopSignal"] = image.get("StopSignal", "")
    if image.get("Healthcheck") and not out.get("Healthcheck"):
        out["Healthcheck"] = image["Healthcheck"]
    return out


def image_config_of(container_config: dict[str, Any], user_config: dict[str, Any] | None,
                    changes: list[str]) -> dict[str, Any]:
    """The committed image's ``config``: the user's (or else the container's) config,
    ``--change`` lines applied, then merged with the container's."""
    from ketch.image import oci
    from ketch.image.service import apply_changes
    from ketch.jsonmodel import from_json, to_json

    base = dict(user_config) if user_config else dict(container_config)
    cc = from_json(oci.ContainerConfig, base, where="Config")
    apply_changes(cc, changes)
    merged = {**base, **to_json(cc)}
    if cc.entrypoint is None and "Entrypoint" in merged and changes and any(
            ln.strip().lower().startswith("entrypoint") for ln in changes):
        merged["Entrypoint"] = None
    return _merge_config(merged, container_config)


@dataclass(slots=True)
class _Created:
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)

    def rollback(self, images: Any) -> None:
        """Remove what a failed commit made, snapshots first (newest first)."""
        for key in reversed(self.snapshots):
            with contextlib.suppress(KetchError, OSError):
                images.snapshotter.remove(key)
        for digest in self.blobs:
            with contextlib.suppress(KetchError, OSError):
                images.content.delete(digest)


def filtered_layer(upper: str, out: BinaryIO,
                   clamp_mtime: int | None = None) -> tuple[str, int, int]:
    """The upper dir as a layer tar without the runtime's stubs: (diff_id, size, entries).
    ``clamp_mtime`` caps mtimes (``SOURCE_DATE_EPOCH``, see ``write_layer``)."""
    import hashlib
    import tempfile

    from ketch.image.diff import write_layer

    skip = _stub_names(upper)
    if not skip:
        diff_id, n = write_layer(upper, out, clamp_mtime=clamp_mtime)
        return diff_id, n, len(os.listdir(upper)) or int(_is_opaque(upper))
    digest = hashlib.sha256()
    size = entries = 0

    class _Out:
        def write(self, data: bytes) -> int:
            nonlocal size
            digest.update(data)
            size += len(data)
            out.write(data)
            return len(data)

    with tempfile.TemporaryFile() as raw:
        write_layer(upper, raw, clamp_mtime=clamp_mtime)  # type: ignore[arg-type]
        raw.seek(0)
        with tarfile.open(fileobj=raw, mode="r:", encoding="utf-8",
                          errors="surrogateescape") as src, \
                tarfile.open(fileobj=_Out(), mode="w|",  # type: ignore[call-overload]
                             format=tarfile.PAX_FORMAT, encoding="utf-8",
                             errors="surrogateescape") as dst:
            for m in src:
                if "/" + m.name.rstrip("/") in skip:
                    continue
                entries += 1
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    return "sha256:" + digest.hexdigest(), size, entries


def _stub_names(upper: str) -> set[str]:
    """Paths under ``upper`` (as "/a/b") that ``runtime_stub`` leaves out, with children."""
    out: set[str] = set()

    def add_all(rel: str) -> None:
        out.add(rel)
        p = upper + rel
        if os.path.isdir(p) and not os.path.islink(p):
            for n in os.listdir(p):
                add_all(f"{rel}/{n}")

    for rel in sorted(RUNTIME_PATHS | RUNTIME_DIRS):
        p = upper + rel
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if runtime_stub(upper, rel, st):
            add_all(rel)
    return out


def commit_image(images: Any, base_image_id: str, upper: str, *,
                 container_config: dict[str, Any], user_config: dict[str, Any] | None,
                 changes: list[str], author: str, comment: str, target: Any) -> str:
    """The image ``docker commit`` makes: the base image's layers plus ``upper`` as one
    more (none when nothing changed, as moby's empty layer), a config with the merged
    container config and one more history entry; tagged ``target``. Returns its id.

    Built from the image service's stores under its lock, so gc never sees the new
    blobs unnamed; undone on failure.
    """
    import secrets

    from ketch.image import oci
    from ketch.image.content import Descriptor
    from ketch.image.metadata import ImageRecord, Layer, rfc3339_now
    from ketch.image.service import SIZE_LABEL
    from ketch.image.snapshot import apply_layer

    cfg = image_config_of(container_config, user_config, changes)
    created = _Created()
    with images._locked():   # the service's host-wide lock (see the report to the lead)
        try:
            base = images.get(base_image_id)
            raw_config = json.loads(images.content.read(base.id))
            manifest = oci.parse_manifest(images.content.read(base.manifest_digest))
            with images.content.writer(f"image-{secrets.token_hex(8)}") as w:
                try:
                    diff_id, size, entries = filtered_layer(upper, w)
                    existed = images.content.exists(w.digest())
                    desc = w.commit()
                except BaseException:
                    w.abort()
                    raise
            if not existed:
                created.blobs.append(desc.digest)
            layers = list(base.layers)
            manifest_layers = list(manifest.layers)
            diff_ids = list(raw_config.get("rootfs", {}).get("diff_ids") or [])
            empty = entries == 0
            if not empty:
                chain = oci.chain_ids([*diff_ids, diff_id])[-1]
                layer_size = _commit_snapshot(images, desc, chain, base.chain_id, created,
                                              SIZE_LABEL, apply_layer)
                layers.append(Layer(diff_id, chain, layer_size))
                manifest_layers.append(Descriptor(oci.MEDIA_TYPE_OCI_LAYER, desc.digest,
                                                  desc.size))
                diff_ids.append(diff_id)
            now = rfc3339_now()
            cmd = container_config.get("Cmd") or []
            history = list(raw_config.get("history") or [])
            entry: dict[str, Any] = {"created": now,
                                     "created_by": " ".join(str(x) for x in cmd)}
            if author:
                entry["author"] = author
            if comment:
                entry["comment"] = comment
            if empty:
                entry["empty_layer"] = True
            history.append(entry)
            doc = dict(raw_config)
            doc.update({"created": now, "config": cfg, "history": history,
                        "rootfs": {"type": "layers", "diff_ids": diff_ids}})
            for key, value in (("author", author), ("comment", comment)):
                if value:
                    doc[key] = value
                else:
                    doc.pop(key, None)
            config_bytes = json.dumps(doc, separators=(",", ":")).encode()
            config_digest = _put(images, config_bytes, created)
            new_manifest = oci.Manifest(
                media_type=oci.MEDIA_TYPE_OCI_MANIFEST,
                config=Descriptor(oci.MEDIA_TYPE_OCI_CONFIG, config_digest, len(config_bytes)),
                layers=manifest_layers)
            manifest_digest = _put(images, oci.encode(new_manifest), created)
            labels = dict(cfg.get("Labels") or {})
            rec = ImageRecord(id=config_digest, manifest_digest=manifest_digest, created=now,
                              size=sum(la.size for la in layers), parent=base.id,
                              layers=tuple(layers), labels=labels)
            with images.metadata.transaction():
                images.metadata.add_image(rec)
                if target is not None:
                    images.metadata.tag(target, rec.id)
            return config_digest
        except BaseException:
            created.rollback(images)
            raise


def _put(images: Any, data: bytes, created: _Created) -> str:
    import secrets

    from ketch.image import oci

    digest = oci.digest_of(data)
    if not images.content.exists(digest):
        images.content.put(f"image-{secrets.token_hex(8)}", data, digest)
        created.blobs.append(digest)
    return digest


def _commit_snapshot(images: Any, desc: Any, chain: str, parent: str | None,
                     created: _Created, size_label: str, apply_layer: Any) -> int:
    """The new layer as a committed snapshot (the same tree a pull of it would make)."""
    import secrets

    from ketch.errors import AlreadyExists
    from ketch.image.snapshot import Kind

    with contextlib.suppress(NotFound):
        info = images.snapshotter.stat(chain)
        if info.kind is Kind.COMMITTED:
            return int(info.labels.get(size_label, "0") or 0)
    key = f"extract-{secrets.token_hex(6)}-{chain}"
    mounts = images.snapshotter.prepare(key, parent)
    try:
        with images.content.open(desc.digest) as f:
            res = apply_layer(mounts, f, media_type=desc.media_type)
        try:
            images.snapshotter.commit(chain, key, labels={size_label: str(res.size)})
        except AlreadyExists:
            images.snapshotter.remove(key)
            return int(res.size)
    except BaseException:
        with contextlib.suppress(KetchError, OSError):
            images.snapshotter.remove(key)
        raise
    created.snapshots.append(chain)
    return int(res.size)


if __name__ == "__main__":
    sys.exit(helper_main(sys.argv[1:]))
