"""The build context a client sent, unpacked on the daemon's disk in one pass.

``POST /build`` carries the context as a tar stream (plain, gzip, bzip2 or
xz). ``extract_context`` writes it under a private directory and hashes
every regular file *while* writing it: the builder's cache keys for COPY/ADD
need the content digest of each source file, and a second read of a
20,000-file, 500 MB context would cost as much as the extraction itself.

Safety: the stream comes from any API client, so nothing in it may write
outside the destination. Names that are absolute or contain ``..`` are
refused; a file is never written through a symbolic link (every parent is
checked to be a real directory, and an existing link at the target is
replaced, not followed); hard links must name an entry already extracted;
device nodes and FIFOs are skipped (a context has no use for them, and
creating them would be a way into the host). Symbolic links themselves are
kept as they are, whatever they point to: they are data (a virtualenv in a
context points at /usr/bin/python), never followed here, and the builder
resolves them inside the context root.

Two top-level names are reserved when the request declares them (ketch's
CLI does, with ``ketchsecrets`` / ``ketchcontexts``): ``.ketch-build-secrets/<id>``
files go to a separate directory (0700, files 0600) and never appear in the
context; ``.ketch-build-contexts/<name>/...`` become extra named contexts
(``--build-context name=dir``), each with its own digests.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ketch.errors import InvalidArgument

SECRETS_PREFIX = ".ketch-build-secrets"
CONTEXTS_PREFIX = ".ketch-build-contexts"

_CHUNK = 1 << 20


@dataclass
class BuildContext:
    """An extracted context. ``remove()`` deletes everything it wrote."""

    root: str
    digests: dict[str, str] = field(default_factory=dict)   # rel path -> "sha256:<hex>"
    secrets: dict[str, str] = field(default_factory=dict)   # id -> file path (0600)
    contexts: dict[str, str] = field(default_factory=dict)  # name -> directory
    context_digests: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> digests
    base: str = ""                                          # the directory holding all of it
    # The client's own directory, read where it is (ketch's CLI on this machine): never
    # written to nor removed, its .dockerignore applied by the builder.
    in_place: bool = False

    def remove(self) -> None:
        if self.base:
            _remove_tree(self.base)

    def drop_build_files(self, dockerfile: str) -> list[str]:
        """dockerd's removeDockerfile, for the builder to call once it has read the
        Dockerfile: the Dockerfile and ``.dockerignore`` leave the context when
        ``.dockerignore`` names them. That is how the docker CLI's ``.dockerfile.<hex>``
        (a Dockerfile from stdin or from outside the context, which the CLI adds to the
        tar and to its ``.dockerignore``) never reaches ``COPY . /``. Returns what went."""
        from ketch.build.dockerignore import Matcher, clean, read_patterns

        ignore = os.path.join(self.root, ".dockerignore")
        try:
            st = os.lstat(ignore)
            if not stat.S_ISREG(st.st_mode):
                return []
            with open(ignore, "rb") as fh:
                text = fh.read().decode("utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return []
        matcher = Matcher(read_patterns(text))
        gone: list[str] = []
        for name in (".dockerignore", clean(dockerfile.replace(os.sep, "/"))):
            if name.startswith("../") or name in (".", "..") or not matcher.matches(name):
                continue
            path = os.path.join(self.root, name)
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
                os.unlink(path)
            except FileNotFoundError:
                continue
            self.digests.pop(name, None)
            gone.append(name)
        return gone


def _remove_tree(path: str) -> None:
    """rmtree that also gets through directories extracted read-only (mode 0555)."""

    def retry(func: Callable[..., object], p: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if func in (os.unlink, os.rmdir):
                func(p)
            else:
                os.chmod(p, 0o700)
                shutil.rmtree(p, onerror=retry)
        except OSError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)


def _clean_name(name: str) -> str:
    """The entry's path relative to the context, or InvalidArgument if it would escape."""
    if name.startswith("/"):
        raise InvalidArgument(f"invalid build context: absolute path {name!r} in the archive")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"invalid build context: path {name!r} leaves the context")
    return "/".join(parts)


class _Tree:
    """Writes entries below one directory, never through a symbolic link."""

    def __init__(self, root: str, *, private: bool = False) -> None:
        self.root = root
        self.private = private      # secrets: 0700 directories, 0600 files, whatever the tar says
        self.digests: dict[str, str] = {}
        self._dirs: set[str] = {""}   # rel dirs known to be real directories
        self._dir_meta: dict[str, tuple[int, int]] = {}   # rel dir -> (mode, mtime ns)
        os.makedirs(root, mode=0o700 if private else 0o755, exist_ok=True)

    def _parent(self, rel: str) -> str:
        """Makes sure every parent of ``rel`` is a real directory; returns the parent."""
        parent = rel.rpartition("/")[0]
        if parent in self._dirs:
            return parent
        path = self.root
        built = ""
        for part in parent.split("/"):
            built = f"{built}/{part}" if built else part
            path = os.path.join(path, part)
            if built in self._dirs:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o700 if self.private else 0o755)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    # A link (or file) where a directory is needed: writing through it
                    # could land anywhere on the host.
                    raise InvalidArgument(f"invalid build context: {built!r} is not a "
                                          "directory but entries are stored below it")
            self._dirs.add(built)
        return parent

    def _clear(self, path: str) -> None:
        """Later entries replace earlier ones (tar's rule); a directory stays a directory."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            _remove_tree(path)
            # What was known below it is gone too.
            rel = os.path.relpath(path, self.root)
            self._dirs = {d for d in self._dirs if not d.startswith(rel + "/")}
            self._dir_meta = {d: m for d, m in self._dir_meta.items()
                              if d != rel and not d.startswith(rel + "/")}
            self.digests = {f: d for f, d in self.digests.items()
                            if not f.startswith(rel + "/")}
        else:
            os.unlink(path)

    def directory(self, rel: str, mode: int, mtime_ns: int) -> None:
        if not rel:
            self._dir_meta[""] = (mode, mtime_ns)
            return
        self._parent(rel)
        path = os.path.join(self.root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
        else:
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
                os.mkdir(path, 0o700)
        self._dirs.add(rel)
        # Applied at the end: a read-only mode would stop the entries below it, and
        # every entry written inside would move the mtime again.
        self._dir_meta[rel] = (mode, mtime_ns)

    def file(self, rel: str, src: BinaryIO, mode: int, mtime_ns: int) -> None:
        self._parent(rel)
        path = os.path.join(self.root, rel)
        self._dirs.discard(rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            self._clear(path)
            fd = os.open(path, flags, 0o600)
        digest = hashlib.sha256()
        try:
            read, write, update = src.read, os.write, digest.update
            while True:
                chunk = read(_CHUNK)
                if not chunk:
                    break
                update(chunk)
                view = memoryview(chunk)
                while view:
                    n = write(fd, view)
                    view = view[n:]
            os.fchmod(fd, 0o600 if self.private else mode)
            if not self.private:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        self.digests[rel] = "sha256:" + digest.hexdigest()

    def symlink(self, rel: str, target: str, mtime_ns: int) -> None:
        self._parent(rel)
        path = os.path.join(self.root, rel)
        self._dirs.discard(rel)
        try:
            os.symlink(target, path)
        except FileExistsError:
            self._clear(path)
            os.symlink(target, path)
        self.digests.pop(rel, None)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def hardlink(self, rel: str, target_rel: str) -> None:
        if target_rel not in self.digests:
            # Only a regular file extracted earlier in this tree: anything else could
            # be a link to a host file (".." was refused already, but a name could
            # still reach through a symlink).
            raise InvalidArgument(f"invalid build context: hard link {rel!r} to "
                                  f"{target_rel!r}, which is not a file of the archive")
        self._parent(rel)
        path = os.path.join(self.root, rel)
        self._dirs.discard(rel)
        source = os.path.join(self.root, target_rel)
        try:
            os.link(source, path, follow_symlinks=False)
        except FileExistsError:
            if os.path.samefile(source, path):
                return
            self._clear(path)
            os.link(source, path, follow_symlinks=False)
        self.digests[rel] = self.digests[target_rel]

    def finish(self) -> None:
        # Deepest first, so setting a parent's mtime comes after its children changed it.
        for rel in sorted(self._dir_meta, key=lambda r: r.count("/") + (1 if r else 0),
                          reverse=True):
            mode, mtime_ns = self._dir_meta[rel]
            path = os.path.join(self.root, rel) if rel else self.root
            if self.private:
                os.chmod(path, 0o700)
                continue
            os.chmod(path, mode)
            os.utime(path, ns=(mtime_ns, mtime_ns))


def _open_stream(stream: BinaryIO) -> tarfile.TarFile:
    try:
        # 'r|*' reads forward only (no seeking back in an HTTP body) and recognises
        # gzip, bzip2 and xz by their magic bytes; anything else is read as a plain tar.
        return tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.ReadError as exc:
        if str(exc) == "empty file":
            # No body at all: an empty context (the builder then finds no Dockerfile).
            return tarfile.open(fileobj=io.BytesIO(bytes(1024)), mode="r|")
        raise InvalidArgument(f"invalid build context: not a tar archive: {exc}") from None
    except tarfile.CompressionError as exc:
        raise InvalidArgument(f"invalid build context: {exc}") from None


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's members, ending where Go's tar reader ends: the docker CLI's
    ``build -f -`` sends a tar whose last member has neither its padding nor the two
    zero blocks after it, which dockerd reads as the end. Python's reader calls that
    "unexpected end of data" when it looks for the next header; a member whose own
    data is cut short is still refused, when that data is read."""
    members = iter(tf)
    first = True
    while True:
        try:
            member = next(members)
        except StopIteration:
            return
        except tarfile.ReadError as exc:
            if str(exc) == "unexpected end of data" and not first:
                return
            raise
        first = False
        yield member


def extract_context(stream: BinaryIO, dest: str, *,
                    secrets: Collection[str] | None = None,
                    contexts: Collection[str] | None = None) -> BuildContext:
    """Unpacks the tar ``stream`` under ``dest`` (created if needed, 0700).

    ``secrets`` / ``contexts`` are the ids and names the request declared;
    only then are the reserved top-level directories read as secrets and
    named contexts, and each declared one must be present. On any failure,
    everything written is removed before the error is raised.
    """
    os.makedirs(dest, mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    ctx = BuildContext(root=os.path.join(dest, "context"), base=dest)
    main = _Tree(ctx.root)
    secret_tree: _Tree | None = None
    named: dict[str, _Tree] = {}
    want_secrets = set(secrets) if secrets is not None else None
    want_contexts = set(contexts) if contexts is not None else None
    for name in want_contexts or ():
        _check_id(name, "build context name")
    for name in want_secrets or ():
        _check_id(name, "secret id")

    def route(rel: str) -> tuple[_Tree, str] | None:
        """The tree an entry goes to and its path there (None: the entry is dropped)."""
        nonlocal secret_tree
        top, _, rest = rel.partition("/")
        if top == SECRETS_PREFIX and want_secrets is not None:
            if not rest:
                return None
            if "/" in rest or rest not in want_secrets:
                raise InvalidArgument(f"invalid build context: undeclared secret {rest!r}")
            if secret_tree is None:
                secret_tree = _Tree(os.path.join(dest, "secrets"), private=True)
            return secret_tree, rest
        if top == CONTEXTS_PREFIX and want_contexts is not None:
            if not rest:
                return None
            cname, _, inner = rest.partition("/")
            if cname not in want_contexts:
                raise InvalidArgument(f"invalid build context: undeclared build context "
                                      f"{cname!r}")
            tree = named.get(cname)
            if tree is None:
                tree = named[cname] = _Tree(os.path.join(dest, "contexts", cname))
            return tree, inner
        return main, rel

    try:
        tf = _open_stream(stream)
        try:
            for member in _members(tf):
                rel = _clean_name(member.name)
                routed = route(rel) if rel else (main, "")
                if routed is None:
                    continue
                tree, path = routed
                mtime_ns = int(member.mtime * 1_000_000_000)
                if member.isdir():
                    tree.directory(path, member.mode & 0o7777, mtime_ns)
                elif not path:
                    raise InvalidArgument(f"invalid build context: {member.name!r} must be a "
                                          "directory")
                elif member.isreg():
                    src = tf.extractfile(member)
                    assert src is not None
                    tree.file(path, src, member.mode & 0o7777, mtime_ns)  # type: ignore[arg-type]
                elif member.issym():
                    tree.symlink(path, member.linkname, mtime_ns)
                elif member.islnk():
                    target = _clean_name(member.linkname)
                    routed_target = route(target)
                    if routed_target is None or routed_target[0] is not tree:
                        raise InvalidArgument(f"invalid build context: hard link {member.name!r}"
                                              f" to {member.linkname!r} crosses a reserved "
                                              "directory")
                    tree.hardlink(path, routed_target[1])
                # Device nodes, FIFOs and anything else: skipped (see the module docstring).
        finally:
            tf.close()
        for tree in (main, *named.values(), *([secret_tree] if secret_tree else [])):
            tree.finish()
    except (tarfile.TarError, EOFError) as exc:
        ctx.remove()
        raise InvalidArgument(f"invalid build context: {exc}") from None
    except BaseException:
        ctx.remove()
        raise
    ctx.digests = main.digests
    if secret_tree is not None:
        ctx.secrets = {sid: os.path.join(secret_tree.root, sid) for sid in secret_tree.digests}
    for cname, tree in named.items():
        ctx.contexts[cname] = tree.root
        ctx.context_digests[cname] = tree.digests
    missing = sorted((want_secrets or set()) - set(ctx.secrets))
    if missing:
        ctx.remove()
        raise InvalidArgument(f"secret {missing[0]} not found in the request")
    for cname in sorted(want_contexts or ()):
        if cname not in ctx.contexts:
            # A named context may be an empty directory: it exists all the same.
            path = os.path.join(dest, "contexts", cname)
            os.makedirs(path, mode=0o755, exist_ok=True)
            ctx.contexts[cname] = path
            ctx.context_digests[cname] = {}
    return ctx


def _check_id(name: str, what: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise InvalidArgument(f"invalid {what} {name!r}")


__all__ = ["CONTEXTS_PREFIX", "SECRETS_PREFIX", "BuildContext", "extract_context"]
