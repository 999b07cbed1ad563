"""The filesystem half of Dockerfile COPY and ADD.

``select`` finds what the source arguments name in a build context (or in a
stage's root filesystem for ``COPY --from``) and describes every entry with a
content digest, so the executor can key its cache on content and say which
file changed. ``apply`` writes a selection into a container's root filesystem.

The rules are Docker's: a directory source copies its contents; a file lands
at ``dest/<name>`` when the destination ends in ``/`` or is a directory; globs
follow Go's ``filepath.Match`` per path component; modes and mtimes are kept,
the owner becomes 0:0 unless ``--chown`` says otherwise; ``--parents`` keeps
the sources' directories below the destination, from a ``/./`` marker on.
Messages are the words of dockerd's builder, because users compare them.

Every path is resolved inside its tree: a symlink in the context never reads a
host file, a symlink in the root filesystem never writes one.
"""

from __future__ import annotations

import bz2
import email.utils
import errno
import gzip
import hashlib
import http.client
import io
import lzma
import os
import posixpath
import re
import shutil
import socket
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ketch.build.dockerignore import Matcher
from ketch.errors import InvalidArgument, NotFound, System, Unavailable
from ketch.linux.securejoin import resolve_parts, secure_join

CHUNK = 1 << 20

# Docker's own words; the executor prefixes "COPY failed: " where dockerd does.
NO_SOURCE_FILES = "no source files were specified"
BAD_PATTERN = "syntax error in pattern"


def _sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


EMPTY_DIGEST = ""


@dataclass
class FileInfo:
    """One entry that will be copied; what the cache key is made of."""

    path: str  # relative to the source root, '/'-separated, no leading '/'
    kind: str  # 'file' | 'dir' | 'symlink', or 'fifo' | 'char' | 'block' from a stage's tree
    mode: int  # permission bits, setuid/setgid/sticky included
    size: int
    digest: str  # 'sha256:<hex>' of the content, of the target for a link, '' for a dir
    linkname: str = ""
    # When select saw it; apply gives it to the copy. Never part of a digest.
    mtime_ns: int = 0
    rdev: int = 0  # a device's number (its digest covers it)
    # The owner on disk: kept by COPY --from without --chown (dockerd does),
    # never part of a digest.
    uid: int = 0
    gid: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "mode": self.mode, "size": self.size,
                "digest": self.digest, "linkname": self.linkname, "mtime_ns": self.mtime_ns,
                "rdev": self.rdev, "uid": self.uid, "gid": self.gid}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FileInfo:
        return cls(path=str(doc["path"]), kind=str(doc["kind"]), mode=int(doc["mode"]),
                   size=int(doc.get("size", 0)), digest=str(doc.get("digest", "")),
                   linkname=str(doc.get("linkname", "")), mtime_ns=int(doc.get("mtime_ns", 0)),
                   rdev=int(doc.get("rdev", 0)), uid=int(doc.get("uid", 0)),
                   gid=int(doc.get("gid", 0)))

    def same_content(self, other: FileInfo) -> bool:
        """Equal for the cache: owner and mtime never count (Docker's rule)."""
        return (self.kind, self.mode, self.digest, self.linkname) == (
            other.kind, other.mode, other.digest, other.linkname)


@dataclass
class Source:
    """What one source argument (or one glob match) names."""

    path: str  # as named, cleaned, relative to the root ('' is the root itself)
    abs: str  # on disk, with its symlinks resolved inside the root
    is_dir: bool
    keep: str = ""  # with --parents: the part recreated below the destination
    entries: list[str] = field(default_factory=list)  # keys of Selection.files, parents first
    # With --parents: the keys of the directories recreated for ``keep``, top
    # first (a directory source's own one last); they carry their metadata.
    kept_dirs: list[str] = field(default_factory=list)


@dataclass
class Selection:
    sources: list[Source]
    files: dict[str, FileInfo]
    digest: str
    root: str = ""
    instruction: str = "COPY"
    from_stage: bool = False
    # Hardlinks inside one directory source: path -> the path first seen with
    # that inode. Kept as links, as dockerd's tar of a directory keeps them.
    links: dict[str, str] = field(default_factory=dict)


@dataclass
class FetchedFile:
    path: str
    name: str
    mtime: float | None


# -- globs -----------------------------------------------------------------


def has_wildcards(path: str) -> bool:
    """dockerd's containsWildcards: '*', '?' or '[' not escaped by '\\'."""
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's ``filepath.Match`` for one path component, as a regular expression.
    Bad patterns raise Go's ErrBadPattern words."""
    out: list[str] = []
    i, n = 0, len(pattern)

    def class_char(j: int) -> tuple[str, int]:
        if j >= n or pattern[j] in "-]":
            raise InvalidArgument(BAD_PATTERN)
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                raise InvalidArgument(BAD_PATTERN)
        return pattern[j], j + 1

    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
            i += 1
        elif ch == "?":
            out.append(".")
            i += 1
        elif ch == "\\":
            if i + 1 >= n:
                raise InvalidArgument(BAD_PATTERN)
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif ch == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            items: list[str] = []
            ranges = 0
            while True:
                if i < n and pattern[i] == "]" and ranges > 0:
                    i += 1
                    break
                lo, i = class_char(i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = class_char(i + 1)
                ranges += 1
                if lo <= hi:  # Go: an inverted range matches nothing, no error
                    items.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
            if items:
                out.append("[" + ("^" if negate else "") + "".join(items) + "]")
            else:
                out.append("." if negate else "(?!)")
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _sorted_names(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    # Go walks names in byte order.
    names.sort(key=os.fsencode)
    return names


def _expand_glob(root: str, pattern: str) -> list[str]:
    """The root-relative paths a wildcard source matches, in Go's walk order.
    Directories on the way are followed through symlinks, inside the root."""
    prefixes = [""]
    for component in pattern.split("/"):
        matched: list[str] = []
        regex = glob_regex(component) if has_wildcards(component) else None
        literal = _unescape(component)
        for prefix in prefixes:
            if regex is None:
                candidate = f"{prefix}/{literal}" if prefix else literal
                if os.path.lexists(secure_join(root, candidate, follow_final=False)):
                    matched.append(candidate)
                continue
            directory = secure_join(root, prefix)
            for name in _sorted_names(directory):
                if regex.match(name):
                    matched.append(f"{prefix}/{name}" if prefix else name)
        prefixes = matched
        if not prefixes:
            break
    return prefixes


# -- select ----------------------------------------------------------------


def _split_parents(source: str) -> tuple[str, str | None]:
    """``x/./y/z`` -> (``x/y/z``, ``x``): the pivot below which --parents keeps."""
    text = source
    while text.startswith("./"):
        text = text[2:]
    marker = text.find("/./")
    if marker < 0:
        return source, None
    return text[:marker] + "/" + text[marker + 3:], text[:marker]


def _clean_source(source: str) -> tuple[str, str]:
    """The root-relative path dockerd makes of a source argument, and the name
    its messages show; refuses an escape."""
    orig = source
    # dockerd drops one leading '/' and one './', then joins with the root.
    if orig.startswith("/") and len(orig) > 1:
        orig = orig[1:]
    if orig.startswith("./"):
        orig = orig[2:]
    cleaned = posixpath.normpath("/" + orig) if orig not in ("", "/") else "/"
    lexical = posixpath.normpath(orig) if orig not in ("", "/") else "."
    if lexical == ".." or lexical.startswith("../"):
        raise InvalidArgument(f"forbidden path outside the build context: {orig} ()")
    return cleaned.lstrip("/"), orig or "."


def _not_found(name: str, from_stage: bool) -> NotFound:
    stat_error = f"stat {name}: file does not exist"
    if from_stage:
        return NotFound(stat_error)  # dockerd names no context for COPY --from
    return NotFound(f"file not found in build context or excluded by .dockerignore: {stat_error}")


def hash_file(path: str, buf: bytearray | None = None) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks into one buffer (pass
    one in to hash many files without allocating a buffer each)."""
    digest = hashlib.sha256()
    if buf is None:
        buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            count = os.readv(fd, [buf])
            if not count:
                break
            digest.update(view[:count])
    finally:
        os.close(fd)
    return "sha256:" + digest.hexdigest()


class _Collector:
    """Walks sources, building FileInfo entries, with --exclude applied."""

    def __init__(self, root: str, excludes: Sequence[str], known: Mapping[str, str] | None,
                 instruction: str, ignore: Matcher | None = None) -> None:
        self.root = root
        self.ignore = ignore
        self.instruction = instruction
        self.matcher = Matcher(excludes) if excludes else None
        self.known = known or {}
        self.files: dict[str, FileInfo] = {}
        self.links: dict[str, str] = {}
        self._inodes: dict[tuple[int, int], str] = {}
        self._buf = bytearray(CHUNK)

    def info(self, key: str, real: str, abs_path: str, st: os.stat_result) -> FileInfo | None:
        """The entry's description; None for a socket, which tar (and so
        dockerd) skips."""
        info = self._describe(key, real, abs_path, st)
        if info is not None:
            info.uid, info.gid = st.st_uid, st.st_gid
        return info

    def _describe(self, key: str, real: str, abs_path: str,
                  st: os.stat_result) -> FileInfo | None:
        mode = stat.S_IMODE(st.st_mode)
        mtime = st.st_mtime_ns
        if stat.S_ISDIR(st.st_mode):
            return FileInfo(key, "dir", mode, 0, EMPTY_DIGEST, mtime_ns=mtime)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(abs_path)
            return FileInfo(key, "symlink", mode, 0, _sha256_bytes(os.fsencode(target)), target,
                            mtime)
        if stat.S_ISREG(st.st_mode):
            digest = self.known.get(real) or hash_file(abs_path, self._buf)
            return FileInfo(key, "file", mode, st.st_size, digest, mtime_ns=mtime)
        if stat.S_ISFIFO(st.st_mode):
            return FileInfo(key, "fifo", mode, 0, EMPTY_DIGEST, mtime_ns=mtime)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            # Only a stage's tree has these (COPY --from); tar carries them.
            kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
            number = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}".encode()
            return FileInfo(key, kind, mode, 0, _sha256_bytes(number), mtime_ns=mtime,
                            rdev=st.st_rdev)
        return None

    def excluded(self, path: str) -> bool:
        return self.matcher is not None and self.matcher.matches(path)

    def walk(self, src: Source, real: str) -> None:
        """Every entry below a directory source; exclude patterns are matched
        relative to that directory (BuildKit's rule)."""
        self._inodes = {}  # links are kept within one source, as one tar stream would
        self._walk(src, src.abs, "", real, None)

    def _walk(self, src: Source, directory: str, sub: str, real: str,
              parent: list[bool] | None) -> bool:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise System(f"reading {src.path or '.'}/{sub}: {exc.strerror}") from exc
        kept_any = False
        for entry in entries:
            rel = f"{sub}/{entry.name}" if sub else entry.name
            key = f"{src.path}/{rel}" if src.path else rel
            real_rel = f"{real}/{rel}" if real else rel
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            # .dockerignore'd in a context read in place: as if never sent.
            if self.ignore is not None and self.ignore.matches(real_rel) and \
                    not (is_dir and self.ignore.may_reinclude_below(real_rel)):
                continue
            results: list[bool] | None = None
            if self.matcher is not None:
                excluded, results = self.matcher.matches_below(rel, parent)
                if excluded:
                    if is_dir and self.matcher.may_reinclude_below(rel):
                        # Only sent if something below it is re-included.
                        mark = len(src.entries)
                        if self._walk(src, entry.path, rel, real, results):
                            info = self.info(key, real_rel, entry.path, st)
                            assert info is not None  # a directory
                            self.files[key] = info
                            src.entries.insert(mark, key)
                            kept_any = True
                    continue
            info = self.info(key, real_rel, entry.path, st)
            if info is None:
                continue
            self.files[key] = info
            src.entries.append(key)
            kept_any = True
            if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
                first = self._inodes.setdefault((st.st_dev, st.st_ino), key)
                if first != key:
                    self.links[key] = first
            if is_dir:
                self._walk(src, entry.path, rel, real, results)
        return kept_any


def select(root: str, sources: list[str], *, excludes: Sequence[str] = (), parents: bool = False,
           known_digests: Mapping[str, str] | None = None,
           instruction: str = "COPY", from_stage: bool = False,
           ignore: Matcher | None = None) -> Selection:
    """What ``sources`` name below ``root``, with a digest of all of it.

    A glob that matches nothing is skipped; only when nothing at all matched is
    it an error (dockerd's "no source files were specified"). A plain source
    that does not exist is an error of its own. ``--exclude`` patterns drop
    matches relative to the root, and entries below a directory source
    relative to that directory. ``from_stage`` says ``root`` is a stage's or an
    image's tree (COPY --from), which only changes the words of a "not found".
    ``ignore`` is the .dockerignore of a context read in place (not received as a
    tar): what it matches does not exist for COPY.
    """
    root = os.path.abspath(root)
    collector = _Collector(root, excludes, known_digests, instruction, ignore)
    selected: list[Source] = []
    for raw in sources:
        text, pivot = _split_parents(raw) if parents else (raw, None)
        name, shown = _clean_source(text)
        pivot_clean = _clean_source(pivot)[0] if pivot is not None else ""
        matches = _expand_glob(root, name) if has_wildcards(name) else [name]
        for path in matches:
            parts = resolve_parts(root, path)
            abs_path = os.path.join(root, *parts)
            if ignore is not None and parts and ignore.matches("/".join(parts)) and \
                    not (os.path.isdir(abs_path) and ignore.may_reinclude_below("/".join(parts))):
                if path != name:
                    continue            # a glob's match that was never sent
                raise _not_found(shown, from_stage)
            try:
                st = os.stat(abs_path)  # the source itself is followed (inside the root)
            except (FileNotFoundError, NotADirectoryError):
                raise _not_found(shown if path == name else path, from_stage) from None
            except OSError as exc:
                raise System(f"stat {path}: {exc.strerror}") from exc
            if path and collector.excluded(path):
                continue
            keep = ""
            if parents:
                # Matches start with the pivot: it is a literal prefix of the pattern.
                keep = path
                if pivot_clean and path.startswith(pivot_clean + "/"):
                    keep = path[len(pivot_clean) + 1:]
                elif pivot_clean and path == pivot_clean:
                    keep = ""
            src = Source(path=path, abs=abs_path, is_dir=stat.S_ISDIR(st.st_mode), keep=keep)
            if keep:
                _keep_dirs(collector, src, pivot_clean)
            real = "/".join(parts)
            if src.is_dir:
                collector.walk(src, real)
            else:
                info = collector.info(path, real, abs_path, st)
                if info is None:
                    continue
                collector.files[path] = info
                src.entries.append(path)
            selected.append(src)
    if not selected:
        raise InvalidArgument(NO_SOURCE_FILES)
    return Selection(sources=selected, files=collector.files, links=collector.links,
                     digest=digest_files(collector.files.values()), root=root,
                     instruction=instruction, from_stage=from_stage)


def _keep_dirs(collector: _Collector, src: Source, pivot: str) -> None:
    """The directories --parents recreates: copied with their own metadata, as
    BuildKit creates the parents of what an include pattern matched."""
    parts = src.keep.split("/")
    if not src.is_dir:
        parts.pop()
    for depth in range(1, len(parts) + 1):
        key = "/".join([pivot, *parts[:depth]] if pivot else parts[:depth])
        if key not in collector.files:
            real = resolve_parts(collector.root, key)
            abs_path = os.path.join(collector.root, *real)
            info = collector.info(key, "/".join(real), abs_path, os.stat(abs_path))
            assert info is not None and info.kind == "dir"
            collector.files[key] = info
        src.kept_dirs.append(key)


def digest_files(files: Iterable[FileInfo]) -> str:
    """One digest over the entries' content and modes (never mtimes or owners)."""
    h = hashlib.sha256()
    for info in sorted(files, key=lambda f: f.path):
        h.update(f"{info.path}\0{info.kind}\0{info.mode:o}\0{info.digest}\0{info.linkname}\n"
                 .encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


def diff_files(old: Mapping[str, FileInfo | Mapping[str, Any] | str], new: Selection) -> list[str]:
    """The paths added, removed or changed since ``old``, sorted. A plain string
    in ``old`` is a content digest alone; a mapping or FileInfo also compares
    kind, mode and link target."""
    changed: list[str] = []
    for path, info in new.files.items():
        before = old.get(path)
        if before is None:
            changed.append(path)
        elif isinstance(before, str):
            if before != info.digest:
                changed.append(path)
        else:
            prev = before if isinstance(before, FileInfo) else FileInfo.from_dict(before)
            if not prev.same_content(info):
                changed.append(path)
    changed.extend(p for p in old if p not in new.files)
    return sorted(changed)


# -- chmod -----------------------------------------------------------------


_BAD_CHMOD = "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777"
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)\Z")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")


@dataclass(frozen=True)
class SymbolicMode:
    """A chmod(1) symbolic mode (``u+x,go-w``, ``a=rX``): the result depends on
    each file's own mode and on whether it is a directory."""

    text: str
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    def apply(self, mode: int, is_dir: bool) -> int:
        for who, actions in self.clauses:
            # No "who" means all (BuildKit does not apply a umask here).
            mask = 0
            for w in who or "a":
                mask |= 0o7777 if w == "a" else _WHO_BITS[w]
            if not (set(who or "a") & {"o", "a"}):
                mask &= ~0o1000  # the sticky bit belongs to "o"/"a" only
            for op, perms in actions:
                bits = _perm_bits(perms, mode, is_dir) & mask
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    keep = mask
                    if is_dir and "s" not in perms:
                        # chmod(1): '=' keeps a directory's setuid/setgid
                        # bits unless 's' is named.
                        keep &= ~0o6000
                    mode = (mode & ~keep) | bits
        return mode & 0o7777


def _perm_bits(perms: str, mode: int, is_dir: bool) -> int:
    if perms in ("u", "g", "o"):
        # Copy another class's rwx bits to every class.
        shift = {"u": 6, "g": 3, "o": 0}[perms]
        rwx = (mode >> shift) & 0o7
        return rwx << 6 | rwx << 3 | rwx
    bits = 0
    for p in perms:
        if p == "r":
            bits |= 0o444
        elif p == "w":
            bits |= 0o222
        elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
            bits |= 0o111
        elif p == "s":
            bits |= 0o6000
        elif p == "t":
            bits |= 0o1000
    return bits


Chmod = int | SymbolicMode


def parse_chmod(text: str) -> int:
    """``--chmod`` in octal (what dockerd's API and older BuildKit accept)."""
    mode = parse_chmod_spec(text)
    if isinstance(mode, SymbolicMode):
        raise InvalidArgument(
            f"invalid chmod parameter: '{text}': a symbolic mode needs parse_chmod_spec")
    return mode


def parse_chmod_spec(text: str) -> Chmod:
    """``--chmod`` as BuildKit reads it: octal (at most 07777), or a symbolic
    mode that ``apply`` evaluates per file."""
    value = text.strip()
    if re.fullmatch(r"[0-7]+", value):
        mode = int(value, 8)
        if mode > 0o7777:
            raise InvalidArgument(_BAD_CHMOD.format(text))
        return mode
    clauses: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for part in value.split(",") if value else [""]:
        match = _CLAUSE.match(part)
        if match is None:
            raise InvalidArgument(_BAD_CHMOD.format(text))
        who, actions = match.groups()
        clauses.append((who, tuple((m.group(1), m.group(2))
                                   for m in _ACTION.finditer(actions))))
    return SymbolicMode(value, tuple(clauses))


# -- apply -----------------------------------------------------------------


Owner = tuple[int, int]


@dataclass
class _Writer:
    """Writes entries below resolved directories of one root filesystem."""

    rootfs: str
    uid: int | None
    gid: int | None
    chmod: Chmod | None
    # Directories whose metadata is set last (writing into them changes mtime).
    pending_dirs: list[tuple[str, int, int, Owner | None]] = field(default_factory=list)
    can_chown: bool = field(default_factory=lambda: os.geteuid() == 0)
    preserve_owner: bool = False

    @property
    def owner(self) -> Owner:
        return (self.uid if self.uid is not None else 0, self.gid if self.gid is not None else 0)

    def owner_of(self, info: FileInfo) -> Owner | None:
        """The owner an entry gets: --chown's, else its own when it comes from
        a stage (COPY --from keeps owners in dockerd), else root's."""
        if self.preserve_owner and self.uid is None and self.gid is None:
            return (info.uid, info.gid)
        return None

    def _chown_wanted(self) -> bool:
        # Unprivileged (unit tests, rootless): 0:0 cannot be had; an explicit
        # --chown still fails loudly.
        return self.can_chown or self.uid is not None or self.gid is not None

    def chown_fd(self, fd: int, owner: Owner | None = None) -> None:
        if self._chown_wanted():
            os.fchown(fd, *(owner or self.owner))

    def chown_path(self, path: str, owner: Owner | None = None) -> None:
        if self._chown_wanted():
            os.chown(path, *(owner or self.owner), follow_symlinks=False)

    def rel(self, host_path: str) -> str:
        """The container's view of a resolved path, for messages."""
        rel = os.path.relpath(host_path, self.rootfs)
        return "/" if rel == "." else "/" + rel

    def make_dirs(self, path: str) -> None:
        """Create the missing directories of a resolved ``path``, 0755 and owned
        like the copied files (dockerd's MkdirAllAndChownNew)."""
        missing: list[str] = []
        current = path
        while current != self.rootfs and not os.path.lexists(current):
            missing.append(current)
            current = os.path.dirname(current)
        if os.path.islink(current) or not os.path.isdir(current):
            raise InvalidArgument(f"mkdir {self.rel(current)}: not a directory")
        for directory in reversed(missing):
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)  # past the umask
            self.chown_path(directory)

    def clear(self, target: str) -> None:
        """Remove whatever is at ``target`` (never following a link)."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(target)
        else:
            os.unlink(target)

    def directory(self, target: str, mode: int, mtime_ns: int, owner: Owner | None = None) -> str:
        """A directory entry at ``target``: merged into an existing directory
        (whose mode, owner and mtime become the copied one's, as with dockerd),
        replacing anything else, a symlink included (dockerd's untar removes
        what is not a directory; it never writes through a link)."""
        try:
            st: os.stat_result | None = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(target)
            st = None
        if st is None:
            os.mkdir(target, 0o700)
        self.pending_dirs.append((target, mode, mtime_ns, owner))
        return target

    def open_new(self, target: str) -> int:
        """A fresh inode at ``target``, as tar would make: never write through an
        existing hardlink (or a symlink) into some other file."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(target, flags, 0o600)
        except FileExistsError:
            self.clear(target)
            return os.open(target, flags, 0o600)

    def file(self, source: str, target: str, mode: int, mtime_ns: int, size: int,
             owner: Owner | None = None) -> None:
        out = self.open_new(target)
        try:
            # The source was resolved by select: a link here now is refused.
            src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                _copy_fd(src, out, size)
            finally:
                os.close(src)
            self.finish_fd(out, mode, mtime_ns, owner)
        finally:
            os.close(out)

    def mode_for(self, mode: int, is_dir: bool) -> int:
        if self.chmod is None:
            return mode
        if isinstance(self.chmod, SymbolicMode):
            return self.chmod.apply(mode, is_dir)
        return self.chmod

    def finish_fd(self, fd: int, mode: int, mtime_ns: int, owner: Owner | None = None,
                  is_dir: bool = False) -> None:
        # Owner before mode: chown clears setuid/setgid bits.
        self.chown_fd(fd, owner)
        os.fchmod(fd, self.mode_for(mode, is_dir))
        # tar carries no atime: dockerd sets it to the mtime.
        os.utime(fd, ns=(mtime_ns, mtime_ns))

    def symlink(self, linkname: str, target: str, mtime_ns: int,
                owner: Owner | None = None) -> None:
        try:
            os.symlink(linkname, target)
        except FileExistsError:
            self.clear(target)
            os.symlink(linkname, target)
        self.chown_path(target, owner)
        os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def special(self, info: FileInfo, target: str, owner: Owner | None = None) -> None:
        """A fifo or a device node (root only, as for dockerd)."""
        bits = {"fifo": stat.S_IFIFO, "char": stat.S_IFCHR, "block": stat.S_IFBLK}[info.kind]
        self.clear(target)
        os.mknod(target, bits | 0o600, info.rdev)
        self.chown_path(target, owner)
        os.chmod(target, self.mode_for(info.mode, False))
        os.utime(target, ns=(info.mtime_ns, info.mtime_ns), follow_symlinks=False)

    def finish_dirs(self) -> None:
        for path, mode, mtime_ns, owner in reversed(self.pending_dirs):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self.finish_fd(fd, mode, mtime_ns, owner, is_dir=True)
            finally:
                os.close(fd)
        self.pending_dirs.clear()


def _copy_fd(src: int, dst: int, size: int) -> None:
    """Kernel-side copy: copy_file_range (reflinks on XFS/btrfs), else sendfile,
    else read/write. ``size`` (what select saw) saves the call that would
    return 0 at the end of the file."""
    offset = 0
    try:
        while True:
            n = os.copy_file_range(src, dst, max(size - offset, CHUNK))
            offset += n
            if n == 0 or offset >= size:
                return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL) or offset:
            raise
    try:
        while True:
            n = os.sendfile(dst, src, None, CHUNK * 8)
            if n == 0:
                return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    while chunk := os.read(src, CHUNK):
        os.write(dst, chunk)


def _dest_path(dest: str, workdir: str) -> tuple[str, bool]:
    """The absolute destination and whether it names a directory (a trailing
    '/', or '.' alone, as dockerd reads it)."""
    is_dir = dest.endswith("/") or dest in (".", "")
    if not dest.startswith("/"):
        dest = posixpath.join("/", workdir or "/", dest)
    return posixpath.normpath(dest), is_dir


def check_destination(sel: Selection, dest: str) -> None:
    """dockerd's rule for several sources, separate so the executor can check
    before it prepares a root filesystem."""
    if len(sel.sources) > 1 and not dest.endswith("/"):
        raise InvalidArgument(
            f"When using {sel.instruction} with more than one source file, "
            "the destination must be a directory and end with a /")


def apply(sel: Selection, rootfs: str, dest: str, *, workdir: str = "/", uid: int | None = None,
          gid: int | None = None, chmod: Chmod | None = None, parents: bool = False,
          extract_archives: bool = False) -> None:
    """Write the selection into ``rootfs`` at ``dest`` (relative to ``workdir``).

    Hardlinks stay links within one directory source (dockerd tars each
    source, and tar keeps them); between sources, and to files outside the
    selection, they become separate files.
    """
    check_destination(sel, dest)
    rootfs = os.path.abspath(rootfs)
    writer = _Writer(rootfs, uid, gid, chmod, preserve_owner=sel.from_stage)
    try:
        _apply(writer, sel, dest, workdir, parents, extract_archives)
    except OSError as exc:
        raise _os_error(exc, rootfs, sel.root) from exc


def _os_error(exc: OSError, rootfs: str, root: str) -> System:
    """dockerd's words, with paths as the container and the context see them
    (never the host's)."""
    name = exc.filename if isinstance(exc.filename, str) else ""
    for base, shown in ((rootfs, "/"), (root, "")):
        if name and base and (name == base or name.startswith(base + "/")):
            name = shown + os.path.relpath(name, base) if name != base else shown or "."
            break
    reason = (exc.strerror or str(exc)).lower()
    return System(f"failed to copy files: {name}: {reason}" if name
                  else f"failed to copy files: {reason}")


def _apply(writer: _Writer, sel: Selection, dest: str, workdir: str, parents: bool,
           extract_archives: bool) -> None:
    rootfs = writer.rootfs
    dest_abs, dest_is_dir = _dest_path(dest, workdir)
    for src in sel.sources:
        if parents:
            where = secure_join(rootfs, dest_abs)
            writer.make_dirs(where)
            for key in src.kept_dirs:
                info = sel.files[key]
                where = writer.directory(os.path.join(where, posixpath.basename(key)),
                                         info.mode, info.mtime_ns, writer.owner_of(info))
            if src.is_dir:
                _copy_tree(writer, sel, src, where)
            elif src.keep:
                _copy_one(writer, sel, src, os.path.join(where, posixpath.basename(src.keep)),
                          extract_archives)
            else:
                _copy_one(writer, sel, src, os.path.join(where, posixpath.basename(src.path)),
                          extract_archives)
            continue
        resolved = secure_join(rootfs, dest_abs)
        if src.is_dir:
            _copy_tree(writer, sel, src, resolved)
            continue
        if extract_archives and _archive_kind(src.abs) is not None:
            _unpack(writer, src.abs, resolved)
            continue
        if dest_is_dir or os.path.isdir(resolved):
            writer.make_dirs(resolved)
            target = os.path.join(resolved, posixpath.basename(src.path))
        else:
            writer.make_dirs(os.path.dirname(resolved))
            target = resolved
        _copy_one(writer, sel, src, target, False)
    writer.finish_dirs()


def _copy_one(writer: _Writer, sel: Selection, src: Source, target: str,
              extract_archives: bool) -> None:
    if extract_archives and _archive_kind(src.abs) is not None:
        _unpack(writer, src.abs, target)
        return
    info = sel.files[src.path]
    if info.kind == "file":
        writer.file(src.abs, target, info.mode, info.mtime_ns, info.size, writer.owner_of(info))
    else:
        writer.special(info, target, writer.owner_of(info))


def _copy_tree(writer: _Writer, sel: Selection, src: Source, target: str) -> None:
    """The contents of a directory source into the resolved ``target``."""
    if os.path.lexists(target) and not os.path.isdir(target):
        raise InvalidArgument("failed to copy files: failed to copy directory: "
                              f"mkdir {writer.rel(target)}: not a directory")
    writer.make_dirs(target)
    prefix = len(src.path) + 1 if src.path else 0
    placed: dict[str, str] = {"": target}
    copied: dict[str, str] = {}
    for key in src.entries:
        info = sel.files[key]
        sub = key[prefix:]
        parent, _, name = sub.rpartition("/")
        where = os.path.join(placed[parent], name)
        # Modes and mtimes as select saw them: the selection is what the cache
        # key describes.
        if info.kind == "dir":
            placed[sub] = writer.directory(where, info.mode, info.mtime_ns, writer.owner_of(info))
        elif info.kind == "symlink":
            writer.symlink(info.linkname, where, info.mtime_ns, writer.owner_of(info))
        elif info.kind != "file":
            writer.special(info, where, writer.owner_of(info))
        elif key in sel.links and sel.links[key] in copied:
            writer.clear(where)
            os.link(copied[sel.links[key]], where, follow_symlinks=False)
        else:
            writer.file(src.abs + "/" + sub, where, info.mode, info.mtime_ns, info.size,
                        writer.owner_of(info))
            copied[key] = where


# -- archives (ADD) --------------------------------------------------------

_MAGIC: list[tuple[bytes, str]] = [
    (b"\x1f\x8b\x08", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
]


def _open_decompressed(path: str, kind: str) -> io.BufferedIOBase:
    if kind == "gz":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _archive_kind(path: str) -> str | None:
    """'' for a plain tar, 'gz'/'bz2'/'xz' for a compressed one, None when the
    file is not a tar archive (decided by content, as dockerd does: the first
    header must be a valid tar header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    kind = ""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            kind = name
            break
    try:
        with _open_decompressed(path, kind) as f:
            block = f.read(tarfile.BLOCKSIZE)
    except (OSError, EOFError, lzma.LZMAError):
        return None
    if len(block) < tarfile.BLOCKSIZE or block == b"\0" * tarfile.BLOCKSIZE:
        return None
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return None
    return kind


def _unpack(copier: _Writer, archive: str, target: str) -> None:
    """Unpack a tar into the resolved directory ``target``, as dockerd does in
    a chroot there: every name and every link's parent is resolved inside
    ``target`` (a '..' or a symlink in the archive stops at its top, nothing is
    written beside it), entries keep the archive's modes, owners and mtimes;
    --chown and --chmod do not apply (dockerd ignores them for archives), and
    the directories made for the destination belong to root."""
    kind = _archive_kind(archive)
    assert kind is not None
    writer = _Writer(copier.rootfs, None, None, None, can_chown=copier.can_chown)
    writer.make_dirs(target)
    with _open_decompressed(archive, kind) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            parts = resolve_parts(target, member.name, follow_final=False)
            if not parts:
                continue  # the archive's top directory: the destination itself
            parent = os.path.join(target, *parts[:-1])
            writer.make_dirs(parent)
            where = os.path.join(parent, parts[-1])
            owner = (member.uid, member.gid)
            mtime_ns = int(member.mtime * 1_000_000_000)
            mode = member.mode & 0o7777
            if member.isdir():
                writer.directory(where, mode, mtime_ns, owner)
            elif member.issym():
                writer.symlink(member.linkname, where, mtime_ns, owner)
            elif member.islnk():
                source = secure_join(target, member.linkname, follow_final=False)
                if not os.path.lexists(source):
                    raise NotFound(f"hardlink target {member.linkname!r} of "
                                   f"{member.name!r} is not in the archive")
                writer.clear(where)
                os.link(source, where, follow_symlinks=False)
            elif member.isreg():
                fileobj = tar.extractfile(member)
                assert fileobj is not None
                _write_stream(writer, fileobj, where, mode, mtime_ns, owner)
            elif member.isfifo() or member.ischr() or member.isblk():
                node = "fifo" if member.isfifo() else "char" if member.ischr() else "block"
                writer.special(FileInfo(member.name, node, mode, 0, "", mtime_ns=mtime_ns,
                                        rdev=os.makedev(member.devmajor, member.devminor)),
                               where, owner)
            # Other entry types (GNU sparse is read as a file by tarfile) are skipped.
    writer.finish_dirs()


def _write_stream(writer: _Writer, data: IO[bytes], where: str, mode: int, mtime_ns: int,
                  owner: Owner) -> None:
    fd = writer.open_new(where)
    try:
        with os.fdopen(os.dup(fd), "wb", buffering=0) as out:
            shutil.copyfileobj(data, out, CHUNK)
        writer.finish_fd(fd, mode, mtime_ns, owner)
    finally:
        os.close(fd)


# -- URLs (ADD) ------------------------------------------------------------


def url_file_name(url: str) -> str:
    """The file name ADD gives a download: the URL path's last component."""
    path = urllib.parse.urlsplit(url).path
    name = posixpath.basename(path.rstrip("/")) if path else ""
    name = urllib.parse.unquote(name)
    if not name or name in (".", ".."):
        raise InvalidArgument(
            f"cannot determine filename from url: {url}")
    return name


def fetch_url(url: str, dest_dir: str, *, checksum: str | None = None,
              timeout: float = 30) -> FetchedFile:
    """Download ``url`` into ``dest_dir`` for ADD: mode 0600, mtime from
    Last-Modified when the server sends one, checksum verified when given.
    Nothing is left behind when the download fails."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise InvalidArgument(f"unsupported URL scheme {scheme!r}: {url}")
    want: tuple[str, str] | None = None
    if checksum is not None:
        alg, _, hexpart = checksum.partition(":")
        if alg not in ("sha256", "sha384", "sha512") or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise InvalidArgument(f"invalid checksum digest format: {checksum}")
        want = (alg, hexpart)
    name = url_file_name(url)
    os.makedirs(dest_dir, exist_ok=True)
    path = os.path.join(dest_dir, name)
    h = hashlib.new(want[0] if want else "sha256")
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as exc:
        body = exc.read(4096).decode("utf-8", "replace").strip() if exc.fp else ""
        # dockerd's words (remotecontext.GetWithStatusError)
        raise System(f"failed to GET {url} with status {exc.code} {exc.reason}: {body}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"failed to fetch {url}: no network access ({_reason(exc)})") from exc
    try:
        with response:
            last_modified = response.headers.get("Last-Modified")
            # http.client's read(n) returns short at a dropped connection
            # instead of raising: count against the announced length.
            expected = response.length
            received = 0
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    h.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                os.fchmod(fd, 0o600)  # also when the file was there before
            finally:
                os.close(fd)
            if expected is not None and received < expected:
                raise http.client.IncompleteRead(b"", expected - received)
    except (OSError, http.client.HTTPException) as exc:
        _remove(path)
        raise Unavailable(f"failed to fetch {url}: {_reason(exc)}") from exc
    if want is not None and h.hexdigest() != want[1]:
        _remove(path)
        raise InvalidArgument(
            f"checksum mismatch for {url}: expected {checksum}, got {want[0]}:{h.hexdigest()}")
    mtime: float | None = None
    if last_modified:
        try:
            mtime = email.utils.parsedate_to_datetime(last_modified).timestamp()
        except (TypeError, ValueError):
            mtime = None
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return FetchedFile(path=path, name=name, mtime=mtime)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _reason(exc: BaseException) -> str:
    reason: Any = getattr(exc, "reason", None) or exc
    if isinstance(reason, http.client.IncompleteRead):
        return f"unexpected EOF ({reason.expected} bytes missing)"
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host: {reason.strerror}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__
