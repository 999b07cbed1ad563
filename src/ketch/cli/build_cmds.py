"""``ketch build`` (also ``ketch builder build``) and ``ketch builder prune``.

The flags are docker 28's. The context is sent as docker sends it: a
directory becomes a tar filtered by its ignore file (``<Dockerfile>.dockerignore``
beside the Dockerfile first, then ``.dockerignore``), the Dockerfile and the
ignore file always in it; a Dockerfile from outside the context (``-f``) or
from stdin (``-f -``) is added under a random name ``.dockerfile.<hex>`` that
the tar's ``.dockerignore`` also names (so COPY never sees it); a context of
``-`` is a tar on stdin, or, when stdin is not an archive, the Dockerfile
itself with an empty context. The tar is made as the upload reads it
(``TarStream``): a large context is never held in memory.

ketch's own parts of the request: the progress comes back as typed events
(``ketchprogress=1``, drawn by ``ketch.cli.build_progress``); ``--secret``
files travel in the tar under ``.ketch-build-secrets/`` and ``--build-context``
directories under ``.ketch-build-contexts/``, which the daemon takes out of
the context. ``-o`` exports the image's filesystem (through a container that
is created, exported and removed), and ``--print-ast`` parses a Dockerfile
without any daemon.
"""

from __future__ import annotations

import os
import sys

from ketch.cli.command import Group, UsageFailure, command, option, pass_obj
from ketch.cli.session import Session, local
from ketch.errors import InvalidArgument, KetchError, NotSupported

TYPE_CHECKING = False     # typing costs the CLI start-up (ketch.record says why)
if TYPE_CHECKING:
    import tarfile
    from collections.abc import Iterable, Iterator, Mapping
    from typing import Any, BinaryIO

SECRETS_DIR = ".ketch-build-secrets"
CONTEXTS_DIR = ".ketch-build-contexts"
_PIECE = 1 << 20         # how much of a file is read (and sent) at once


def _fail(message: str) -> KetchError:
    return local(InvalidArgument(message))


def _flag_error(flag: str, value: str, why: str) -> UsageFailure:
    return UsageFailure(f'invalid argument "{value}" for "{flag}" flag: {why}')


# --- the context tar --------------------------------------------------------------------------


class TarStream:
    """A tar made as it is read: the upload's body. ``entries`` gives each member's header
    and its data (bytes, a path to read, or a file); data goes out in large pieces,
    straight from the files, with no thread, pipe or copy in between.

    A file that cannot be read ends the tar early, the error kept in ``error``: the
    command reports it in place of what the daemon says about a cut tar (docker's
    "error checking context")."""

    def __init__(self, entries: Iterator[tuple[tarfile.TarInfo, Any]], *,
                 compress: bool = False) -> None:
        self._chunks = self._generate(entries)
        self._pending = memoryview(b"")         # what is left of the last piece
        self.error: BaseException | None = None
        self._gzip: Any = None
        if compress:
            import zlib

            self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31)    # 31: the gzip format

    @staticmethod
    def _generate(entries: Iterator[tuple[tarfile.TarInfo, Any]]) -> Iterator[bytes]:
        import tarfile

        total = 0
        for info, data in entries:
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            yield header
            total += len(header)
            if not info.isreg() or info.size == 0:
                continue
            left = info.size
            if isinstance(data, bytes):
                yield data
                left -= len(data)
            else:
                fh = open(data, "rb") if isinstance(data, str) else data   # noqa: SIM115
                try:
                    while left > 0:
                        chunk = fh.read(min(left, _PIECE))
                        if not chunk:
                            break
                        yield chunk
                        left -= len(chunk)
                finally:
                    if isinstance(data, str):
                        fh.close()
            if left > 0:
                yield bytes(left)       # the file shrank while it was read (as GNU tar)
            total += info.size
            pad = -info.size % 512
            if pad:
                yield bytes(pad)
                total += pad
        # Two zero blocks end the archive; the last record is filled up (tar's blocking).
        end = 1024 + (-(total + 1024) % tarfile.RECORDSIZE)
        yield bytes(end)

    def _next(self) -> bytes:
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                if self._gzip is not None:
                    tail, self._gzip = self._gzip.flush(), None
                    return tail
                return b""
            except (OSError, KetchError) as exc:
                # The tar must not end cleanly at a member's edge: the daemon would build
                # without the rest (tar readers, Python's too, take a bad header there for
                # the end). A member whose data never comes makes every reader refuse it.
                import tarfile

                self.error = exc
                cut = tarfile.TarInfo(".ketch-context-incomplete")
                cut.size = 1
                self._chunks = iter([cut.tobuf(tarfile.PAX_FORMAT)])
                continue
            if self._gzip is None:
                return chunk
            out = self._gzip.compress(chunk)
            if out:
                return bytes(out)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [bytes(self._pending)]
            while True:
                chunk = self._next()
                if not chunk:
                    self._pending = memoryview(b"")
                    return b"".join(parts)
                parts.append(chunk)
        # Fill the request: small members' headers, data and padding are many pieces of
        # a few hundred bytes, and each read becomes one chunk (one send) of the upload.
        parts = []
        size = 0
        if self._pending:
            take = self._pending[:n]
            parts.append(bytes(take))
            size = len(take)
            self._pending = self._pending[len(take):]
        while size < n:
            chunk = self._next()
            if not chunk:
                break
            room = n - size
            if len(chunk) <= room:
                parts.append(chunk)
                size += len(chunk)
            else:
                view = memoryview(chunk)
                parts.append(bytes(view[:room]))
                self._pending = view[room:]
                size = n
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _info(path: str, arcname: str, links: dict[tuple[int, int], str]
          ) -> tarfile.TarInfo | None:
    """A member's header as docker's archive writes it: owned by root (0:0), the mtime in
    whole seconds (moby truncates it; a fraction would cost a PAX record, 1 KiB, per
    file), a second name of a file already sent as a hard link. None for a socket."""
    import stat
    import tarfile

    st = os.lstat(path)
    mode = st.st_mode
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(mode)
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
        else:
            if st.st_nlink > 1:
                links[key] = arcname
            info.size = st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return None
    return info


def tree_entries(root: str, rels: Iterable[str], prefix: str = "",
                 replace: Mapping[str, bytes] | None = None
                 ) -> Iterator[tuple[tarfile.TarInfo, Any]]:
    """The members for ``root/rel``, each ``rel`` as walk_context gives them, named
    ``prefix + rel``; ``replace`` gives other contents for some files (the amended
    .dockerignore)."""
    replace = replace or {}
    links: dict[tuple[int, int], str] = {}
    for rel in rels:
        path = os.path.join(root, rel)
        info = _info(path, prefix + rel, links)
        if info is None:
            continue
        if rel in replace and info.isreg():
            data = replace[rel]
            info.size = len(data)
            yield info, data
        else:
            yield info, path if info.isreg() else None


def bytes_entry(name: str, data: bytes, mode: int = 0o600) -> tuple[tarfile.TarInfo, bytes]:
    import tarfile
    import time

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    return info, data


def _patterns(context_dir: str, dockerfile_path: str | None) -> list[str]:
    from pathlib import Path

    from ketch.build.dockerignore import Matcher, ignore_file_for, read_file

    ignore = ignore_file_for(Path(context_dir), Path(dockerfile_path) if dockerfile_path
                             else None)
    patterns = read_file(ignore) if ignore is not None else []
    try:
        Matcher(patterns)       # refused here, before anything is sent, as docker does
    except KetchError as exc:
        raise _fail(f"error checking context: {exc}") from None
    return patterns


class Extras:
    """What travels in the tar besides the context: secrets and named contexts."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}
        self.contexts: dict[str, str] = {}

    def entries(self) -> Iterator[tuple[tarfile.TarInfo, Any]]:
        from pathlib import Path

        from ketch.build.dockerignore import walk_context

        for sid, data in self.secrets.items():
            yield bytes_entry(f"{SECRETS_DIR}/{sid}", data)
        for name, directory in self.contexts.items():
            rels = walk_context(Path(directory), _patterns(directory, None), None)
            yield from tree_entries(directory, rels, prefix=f"{CONTEXTS_DIR}/{name}/")


def random_dockerfile_name() -> str:
    """docker's name for a Dockerfile from outside the context: ``.dockerfile.`` and 20 hex."""
    return ".dockerfile." + os.urandom(10).hex()


def directory_context(context_dir: str, dockerfile: str | None, extras: Extras,
                      stdin_dockerfile: bytes | None = None
                      ) -> tuple[Iterator[tuple[tarfile.TarInfo, Any]], str]:
    """(the tar's members, the Dockerfile's name in the tar) for a directory context.

    ``dockerfile`` is ``-f`` as given (relative to the current directory, as docker reads
    it), or None for ``<context>/Dockerfile``; ``stdin_dockerfile`` is ``-f -``'s text."""
    from pathlib import Path

    from ketch.build.dockerignore import walk_context

    if not os.path.isdir(context_dir):
        raise _fail(f'unable to prepare context: path "{context_dir}" not found')
    context_abs = os.path.realpath(context_dir)
    outside: bytes | None = stdin_dockerfile
    df_path: str | None = None
    if stdin_dockerfile is None:
        if dockerfile:
            df_path = os.path.abspath(dockerfile)
        else:
            df_path = os.path.join(context_abs, "Dockerfile")
            if not os.path.lexists(df_path) and os.path.lexists(
                    os.path.join(context_abs, "dockerfile")):
                df_path = os.path.join(context_abs, "dockerfile")
        try:
            df_real = os.path.realpath(df_path, strict=True)
        except OSError as exc:
            raise _fail("unable to prepare context: unable to evaluate symlinks in Dockerfile "
                        f"path: lstat {exc.filename or df_path}: "
                        f"{os.strerror(exc.errno or 2).lower()}") from None
        rel = os.path.relpath(df_real, context_abs)
        if rel == ".." or rel.startswith("../"):
            with open(df_path, "rb") as fh:
                outside = fh.read()
            df_path = None
        else:
            df_path = df_real
    if outside is not None:
        name = random_dockerfile_name()
        patterns = _patterns(context_abs, None)
        ignore_path = os.path.join(context_abs, ".dockerignore")
        try:
            with open(ignore_path, "rb") as fh:
                ignore = fh.read()
            had_ignore = True
        except FileNotFoundError:
            ignore, had_ignore = b".dockerignore", False
        # docker's AddDockerfileToBuildContext: the daemon excludes the added file too.
        amended = ignore + b"\n" + name.encode() + b"\n"
        data = outside

        def members() -> Iterator[tuple[tarfile.TarInfo, Any]]:
            rels = walk_context(Path(context_abs), patterns, None)
            yield from tree_entries(context_abs, rels, replace={".dockerignore": amended})
            if not had_ignore:
                yield bytes_entry(".dockerignore", amended)
            yield bytes_entry(name, data)
            yield from extras.entries()

        return members(), name
    assert df_path is not None
    rel_df = os.path.relpath(df_path, context_abs).replace(os.sep, "/")
    patterns = _patterns(context_abs, df_path)

    def local_members() -> Iterator[tuple[tarfile.TarInfo, Any]]:
        yield from tree_entries(context_abs, walk_context(Path(context_abs), patterns, rel_df))
        yield from extras.entries()

    return local_members(), rel_df


_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def is_archive(head: bytes) -> bool:
    """docker's rule for ``build -``: compressed, or a valid tar header; else a Dockerfile."""
    import tarfile

    if any(head.startswith(m) for m in _ARCHIVE_MAGIC):
        return True
    if len(head) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class _Prefixed:
    """``head`` then the rest of ``rest``: stdin after its first bytes were looked at."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._rest.read(n)


def _read_head(stream: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < n:
        chunk = stream.read(n - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


# --- flags ----------------------------------------------------------------------------------


def _split_csv(values: Iterable[str]) -> list[str]:
    """pflag's ``strings`` kind: each value is a CSV list."""
    values = [v for v in values if v]
    if not values:
        return []       # csv costs the start-up ~5 ms: only when there is something to read
    import csv

    out: list[str] = []
    for v in values:
        out += next(csv.reader([v])) if v else []
    return out


def build_args(values: Iterable[str], environ: Mapping[str, str]) -> dict[str, str | None]:
    """``KEY=VAL``, or ``KEY`` to take it from the environment (null when not set there: the
    daemon then only warns if the Dockerfile never declares it), as docker's ValidateEnv."""
    out: dict[str, str | None] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if sep:
            out[key] = value
        else:
            out[key] = environ.get(key)
    return out


def labels(values: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, _, value = v.partition("=")
        out[key] = value
    return out


def parse_secret(spec: str, environ: Mapping[str, str]) -> tuple[str, bytes]:
    """``id=x,src=path`` | ``id=x,env=VAR`` | ``id=x`` (then $x, else the file ``x``), with
    ``type=file|env`` and ``source``/``src`` as buildx reads them."""
    import csv

    fields = next(csv.reader([spec])) if spec else []
    sid = src = env = typ = ""
    for f in fields:
        key, sep, value = f.partition("=")
        if not sep:
            raise _fail(f"invalid field '{f}' must be a key=value pair")
        key = key.strip().lower()
        if key == "type":
            if value not in ("file", "env"):
                raise _fail(f'unsupported secret type "{value}"')
            typ = value
        elif key == "id":
            sid = value
        elif key in ("source", "src"):
            src = value
        elif key == "env":
            env = value
        else:
            raise _fail(f"unexpected key '{key}' in '{f}'")
    if typ == "env" and not env:
        env = src or sid
        src = ""
    if not sid:
        sid = os.path.basename(src) if src else env
    if not sid or "/" in sid or sid in (".", ".."):
        raise _fail(f"invalid secret {spec!r}: it needs an id")
    if env:
        if env not in environ:
            raise _fail(f"secret {sid}: environment variable {env} is not set")
        return sid, environ[env].encode()
    if not src:
        if sid in environ:
            return sid, environ[sid].encode()
        src = sid
    try:
        with open(os.path.expanduser(src), "rb") as fh:
            return sid, fh.read()
    except OSError as exc:
        raise _fail(f"failed to read secret {sid} from {src}: {exc.strerror}") from None


def parse_build_context(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise _fail(f"invalid context value: {spec}, expected key=value")
    if "/" in name or name in (".", ".."):
        raise _fail(f"invalid build context name {name!r}")
    if "://" in value:
        raise local(NotSupported(f"--build-context {name}={value}: only local directories are "
                                 "supported as named contexts"))
    if not os.path.isdir(value):
        raise _fail(f"--build-context {name}: {value} is not a directory")
    return name, value


class Output:
    """``-o``: where the built filesystem goes (``local`` directory or ``tar`` file)."""

    def __init__(self, kind: str, dest: str) -> None:
        self.kind = kind
        self.dest = dest


def parse_output(spec: str) -> Output:
    if spec == "-":
        return Output("tar", "-")
    if "=" not in spec:
        return Output("local", spec)
    import csv

    attrs: dict[str, str] = {}
    for f in next(csv.reader([spec])):
        key, sep, value = f.partition("=")
        if not sep:
            raise _fail(f"invalid value {f}")
        attrs[key.strip().lower()] = value
    kind = attrs.get("type", "")
    if kind not in ("local", "tar"):
        raise local(NotSupported(f"output type {kind!r} is not supported by ketch build: use "
                                 "type=local,dest=DIR or type=tar,dest=FILE"))
    dest = attrs.get("dest", "")
    if not dest:
        raise _fail(f"dest is required for {kind} output")
    return Output(kind, dest)


# --- the command ----------------------------------------------------------------------------


@command("build", "[OPTIONS] PATH | URL | -", "Build an image from a Dockerfile", nargs=(0, 1),
         aliases=("ketch image build", "ketch build", "ketch builder build"))
@option("--add-host", "add_hosts", multiple=True,
        help='Add a custom host-to-IP mapping ("host:ip")')
@option("--build-arg", "build_arg", multiple=True, help="Set build-time variables")
@option("--build-context", "build_context", multiple=True,
        help="Additional build contexts (e.g., name=path)")
@option("--cache-from", "cache_from", multiple=True, metavar="strings",
        help="Images to consider as cache sources")
@option("--cgroup-parent", default="",
        help='Set the parent cgroup for the "RUN" instructions during build')
@option("--compress", is_flag=True, help="Compress the build context using gzip")
@option("--cpu-period", default="", metavar="int",
        help="Limit the CPU CFS (Completely Fair Scheduler) period")
@option("--cpu-quota", default="", metavar="int",
        help="Limit the CPU CFS (Completely Fair Scheduler) quota")
@option("-c", "--cpu-shares", default="", metavar="int", help="CPU shares (relative weight)")
@option("--cpuset-cpus", default="", help="CPUs in which to allow execution (0-3, 0,1)")
@option("--cpuset-mems", default="", help="MEMs in which to allow execution (0-3, 0,1)")
@option("-f", "--file", default="", help='Name of the Dockerfile (Default is "PATH/Dockerfile")')
@option("--force-rm", is_flag=True, help="Always remove intermediate containers")
@option("--iidfile", default="", help="Write the image ID to the file")
@option("--isolation", default="", help="Container isolation technology")
@option("--label", "label", multiple=True, help="Set metadata for an image")
@option("-m", "--memory", default="", metavar="bytes", help="Memory limit")
@option("--memory-swap", default="", metavar="bytes",
        help="Swap limit equal to memory plus swap: -1 to enable unlimited swap")
@option("--network", default="default",
        help='Set the networking mode for the "RUN" instructions during build (default '
             '"default")')
@option("--no-cache", is_flag=True, help="Do not use cache when building the image")
@option("--no-cache-filter", "no_cache_filter", multiple=True, metavar="strings",
        help="Do not cache specified stages")
@option("-o", "--output", "output", default="",
        help='Output destination (format: "type=local,dest=path")')
@option("--platform", default="", help="Set platform if server is multi-platform capable")
@option("--print-ast", "print_ast", default="", metavar="file",
        help="Print the parsed Dockerfile as JSON, one instruction per line (no daemon)")
@option("--progress", default="auto",
        help='Set type of progress output ("auto", "plain", "tty", "rawjson", "quiet"). Use '
             'plain to show container output')
@option("--pull", is_flag=True, help="Always attempt to pull a newer version of the image")
@option("-q", "--quiet", is_flag=True,
        help="Suppress the build output and print image ID on success")
@option("--rm", is_flag=True, default=True,
        help="Remove intermediate containers after a successful build (default true)")
@option("--secret", "secret", multiple=True, metavar="stringArray",
        help='Secret to expose to the build (format: "id=mysecret[,src=/local/secret]")')
@option("--security-opt", "security_opt", multiple=True, metavar="strings",
        help="Security options")
@option("--shm-size", default="", metavar="bytes", help='Size of "/dev/shm"')
@option("--squash", is_flag=True, help="Squash newly built layers into a single new layer")
@option("-t", "--tag", "tag", multiple=True,
        help='Name and optionally a tag in the "name:tag" format')
@option("--target", default="", help="Set the target build stage to build.")
@option("--ulimit", "ulimit", multiple=True, metavar="ulimit", help="Ulimit options (default [])")
@pass_obj
def build(session: Session, args: tuple[str, ...], **flags: Any) -> int:
    if flags["print_ast"]:
        if args:
            raise UsageFailure("ketch: 'ketch build --print-ast' accepts no PATH", 1)
        return print_ast(flags["print_ast"])
    if not args:
        raise UsageFailure("ketch: 'ketch build' requires 1 argument", 1)
    return run_build(session, args[0], flags)


def _int_flag(flags: Mapping[str, Any], key: str, flag: str) -> int:
    value = flags[key]
    if not value:
        return 0
    from ketch.cli.run_opts import parse_int

    try:
        return parse_int(value)
    except ValueError as exc:
        raise _flag_error(flag, value, str(exc)) from None


def _size_flag(flags: Mapping[str, Any], key: str, flag: str, swap: bool = False) -> int:
    value = flags[key]
    if not value:
        return 0
    if swap and value == "-1":
        return -1
    from ketch.cli.run_opts import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise _flag_error(flag, value, str(exc)) from None


def _query_args(flags: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``build_query``'s arguments from the flags (a bad value is a usage error, found
    before anything else is done, as pflag finds it), and the pairs sent as they are."""
    hosts, ulimits = [], []
    for h in flags["add_hosts"]:
        from ketch.cli.run_opts import check_extra_host

        try:
            hosts.append(check_extra_host(h))
        except ValueError as exc:
            raise _flag_error("--add-host", h, str(exc)) from None
    for u in flags["ulimit"]:
        from ketch.cli.run_opts import parse_ulimit

        try:
            ulimits.append(parse_ulimit(u))
        except ValueError as exc:
            raise _flag_error("--ulimit", u, str(exc)) from None
    network = flags["network"]
    platform = flags["platform"] or os.environ.get("DOCKER_DEFAULT_PLATFORM", "")
    kwargs: dict[str, Any] = dict(
        tags=flags["tag"],
        build_args=build_args(flags["build_arg"], os.environ), target=flags["target"],
        no_cache=flags["no_cache"], no_cache_filter=_split_csv(flags["no_cache_filter"]),
        cache_from=_split_csv(flags["cache_from"]), pull=flags["pull"],
        labels=labels(flags["label"]),
        network_mode="" if network == "default" else network, extra_hosts=hosts,
        platform=platform, memory=_size_flag(flags, "memory", "-m, --memory"),
        memory_swap=_size_flag(flags, "memory_swap", "--memory-swap", swap=True),
        cpu_shares=_int_flag(flags, "cpu_shares", "-c, --cpu-shares"),
        cpu_period=_int_flag(flags, "cpu_period", "--cpu-period"),
        cpu_quota=_int_flag(flags, "cpu_quota", "--cpu-quota"),
        cpuset_cpus=flags["cpuset_cpus"], cpuset_mems=flags["cpuset_mems"],
        shm_size=_size_flag(flags, "shm_size", "--shm-size"), ulimits=ulimits,
        remove=flags["rm"], force_remove=flags["force_rm"], ketch_progress=True,
        source_date_epoch=_source_date_epoch())
    # Sent as they are, for the daemon to refuse in dockerd's words.
    pairs: list[tuple[str, str]] = []
    if flags["squash"]:
        pairs.append(("squash", "1"))
    if flags["isolation"]:
        pairs.append(("isolation", flags["isolation"]))
    if flags["cgroup_parent"]:
        pairs.append(("cgroupparent", flags["cgroup_parent"]))
    pairs += [("securityopt", s) for s in _split_csv(flags["security_opt"])]
    return kwargs, pairs


def _source_date_epoch() -> int | None:
    """$SOURCE_DATE_EPOCH, as BuildKit reads it for reproducible timestamps."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise _fail(f"invalid SOURCE_DATE_EPOCH: {value}") from None


def _registry_auths(session: Session) -> dict[str, dict[str, str]]:
    """Every credential the config holds (docker's GetAllCredentials): the daemon picks the
    one for each base image's registry."""
    from ketch.cli.credentials import ConfigFile, config_dir

    directory = config_dir(session.config_dir)
    if not os.path.exists(os.path.join(directory, "config.json")):
        return {}
    try:
        cfg = ConfigFile.load(directory)
        keys = set((cfg.data.get("auths") or {}).keys()) | set(
            (cfg.data.get("credHelpers") or {}).keys())
        out: dict[str, dict[str, str]] = {}
        for key in sorted(keys):
            auth = cfg.get_auth(key)
            if not auth.empty():
                out[key] = auth.api_json()
        return out
    except KetchError:
        return {}       # as docker: a build of public images does not need them


def _is_remote(spec: str) -> bool:
    return spec.startswith(("http://", "https://", "git://", "git@", "github.com/"))


def run_build(session: Session, spec: str, flags: Mapping[str, Any]) -> int:
    from ketch.cli import build_progress

    progress = os.environ.get("BUILDKIT_PROGRESS", "auto") if flags["progress"] == "auto" \
        else flags["progress"]
    if progress not in build_progress.MODES:
        raise _flag_error("--progress", progress, "must be one of " +
                          ", ".join(build_progress.MODES))
    if flags["quiet"]:
        progress = "quiet"
    query_args, raw_pairs = _query_args(flags)
    output = parse_output(flags["output"]) if flags["output"] else None
    if output is not None and output.kind == "tar" and output.dest == "-" and \
            sys.stdout.isatty():
        raise _fail("refusing to write output to console")
    if _is_remote(spec):
        raise local(NotSupported("building from a URL or a git repository is not supported by "
                                 "ketch: clone or download it and build the directory"))
    extras = Extras()
    for s in flags["secret"]:
        sid, data = parse_secret(s, os.environ)
        extras.secrets[sid] = data
    for c in flags["build_context"]:
        name, directory = parse_build_context(c)
        extras.contexts[name] = directory
    dockerfile_flag = flags["file"]
    members: Iterator[tuple[tarfile.TarInfo, Any]] | None = None
    body: Any = None
    if spec == "-":
        if dockerfile_flag == "-":
            raise _fail("invalid argument: can't use stdin for both build context and "
                        "dockerfile")
        stdin = sys.stdin.buffer
        head = _read_head(stdin, 512)
        if is_archive(head):
            source = _Prefixed(head, stdin)
            df_name = dockerfile_flag
            if extras.secrets or extras.contexts:
                members = _copy_tar(source, extras)
            else:
                body = source
        else:
            data = head + stdin.read()
            df_name = "Dockerfile"
            members = iter([bytes_entry("Dockerfile", data, 0o644), *extras.entries()])
    client = session.connect()
    in_place: tuple[str, str, str] | None = None
    if spec != "-":
        if dockerfile_flag != "-":
            in_place = _in_place(spec, dockerfile_flag, client.host)
        if in_place is not None:
            df_name = in_place[2]
        else:
            stdin_df = sys.stdin.buffer.read() if dockerfile_flag == "-" else None
            members, df_name = directory_context(spec, dockerfile_flag
                                                if dockerfile_flag != "-" else None,
                                                extras, stdin_df)
    from ketch.client._build import build_query

    pairs = build_query(dockerfile=df_name, secrets=list(extras.secrets),
                        contexts=list(extras.contexts), **query_args) + raw_pairs
    auths = _registry_auths(session)
    renderer = build_progress.make(progress)
    if in_place is not None:
        # Only secrets and named contexts travel; the daemon reads the directory.
        if extras.secrets or extras.contexts:
            members = extras.entries()
        else:
            body = bytes(10240)     # an empty tar (one record), without loading tarfile
        pairs += [("ketchcontextdir", in_place[0]), ("ketchcontextid", in_place[1])]
    tar = TarStream(members, compress=flags["compress"]) if members is not None else None
    upload: Any = tar if tar is not None else body     # read() is all the upload needs
    image = ""
    try:
        try:
            messages = client.image_build(upload, pairs, registry_config=auths)
        except InvalidArgument as exc:
            if in_place is None or "ketchcontextdir" not in str(exc):
                raise
            # The daemon cannot see this directory as we do: send it as docker does.
            members, df_name = directory_context(spec, flags["file"], extras, None)
            body = None
            pairs = [p for p in pairs if p[0] not in ("ketchcontextdir", "ketchcontextid")]
            tar = TarStream(members, compress=flags["compress"])
            upload = tar
            messages = client.image_build(upload, pairs, registry_config=auths)
        image = _show(messages, renderer)
    except KetchError as exc:
        if tar is not None and tar.error is not None:
            raise _context_error(tar.error) from None
        from ketch.client._build import BuildFailed

        if isinstance(exc, BuildFailed):
            renderer.failed(str(exc))
            renderer.close()
            return 1
        raise
    if tar is not None and tar.error is not None:
        raise _context_error(tar.error)
    renderer.close()
    if progress == "quiet":
        sys.stdout.write(image + "\n")
    if flags["iidfile"]:
        try:
            with open(flags["iidfile"], "w") as fh:
                fh.write(image)         # docker writes it without a newline
        except OSError as exc:
            raise _fail(f"cannot write {flags['iidfile']}: {exc.strerror}") from None
    if output is not None:
        export_image(client, image, output)
    return 0


def _in_place(spec: str, dockerfile: str | None, host: str) -> tuple[str, str, str] | None:
    """(directory, "<dev>:<ino>", the Dockerfile's path in it) when the daemon can read
    the context where it is: a directory holding its Dockerfile, and a daemon on this
    machine's unix socket. Anything else (and ``KETCH_BUILD_CONTEXT=tar``) goes as the
    tar docker sends, whose code also words the errors."""
    if not host.startswith("unix://") or os.environ.get("KETCH_BUILD_CONTEXT", "") == "tar":
        return None
    try:
        path = os.path.realpath(spec, strict=True)
        st = os.stat(path)
        if dockerfile:
            df = os.path.realpath(dockerfile, strict=True)
        else:
            df = os.path.join(path, "Dockerfile")
            if not os.path.lexists(df):
                return None     # directory_context knows the fall-backs and the words
            df = os.path.realpath(df, strict=True)
    except OSError:
        return None
    rel = os.path.relpath(df, path)
    if rel == ".." or rel.startswith("../") or not os.path.isfile(df):
        return None
    import stat

    if not stat.S_ISDIR(st.st_mode):
        return None
    return path, f"{st.st_dev}:{st.st_ino}", rel.replace(os.sep, "/")


def _context_error(exc: BaseException) -> KetchError:
    if isinstance(exc, OSError):
        what = exc.filename or ""
        return _fail(f"error checking context: can't read '{what}': {exc.strerror}")
    if isinstance(exc, KetchError):
        return local(exc)
    return _fail(f"error checking context: {exc}")


def _copy_tar(source: Any, extras: Extras) -> Iterator[tuple[tarfile.TarInfo, Any]]:
    """A stdin tar's members with the secrets and named contexts added to its end (names
    of the reserved directories that the tar had are dropped: they would be taken for
    what the flags give)."""
    import tarfile

    with tarfile.open(fileobj=source, mode="r|*") as src:
        for member in src:
            top = member.name.lstrip("./").split("/", 1)[0]
            if top in (SECRETS_DIR, CONTEXTS_DIR):
                continue
            yield member, src.extractfile(member) if member.isreg() else None
    yield from extras.entries()


def _show(messages: Iterable[dict[str, Any]], renderer: Any) -> str:
    """Draws the events; the built image's ID."""
    image = ""
    for msg in messages:
        doc = msg.get("ketch")
        if isinstance(doc, dict):
            if doc.get("kind") == "result":
                image = str(doc.get("image", ""))
            renderer.event(doc)
        elif "stream" in msg:
            # A daemon that ignores ketchprogress answers with the legacy stream.
            sys.stderr.write(str(msg["stream"]))
        elif isinstance(msg.get("aux"), dict) and msg["aux"].get("ID"):
            image = str(msg["aux"]["ID"])
    return image


def export_image(client: Any, image: str, output: Output) -> None:
    """``-o``: the image's filesystem through a container made for the purpose (never
    started) and exported, as a directory or a tar file; the container is removed."""
    created = client.container_create({"Image": image, "Cmd": ["/ketch-build-output"],
                                       "Labels": {"ketch.build.output": "1"}})
    cid = created["Id"]
    try:
        resp = client.container_export(cid)
        try:
            if output.kind == "tar":
                write_tar(resp, output.dest)
            else:
                extract_tar(resp, output.dest)
        finally:
            resp.close()
    finally:
        client.container_remove(cid, force=True)


def write_tar(stream: Any, dest: str) -> None:
    import shutil

    if dest == "-":
        shutil.copyfileobj(stream, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
        return
    with open(dest, "wb") as fh:
        shutil.copyfileobj(stream, fh, 1 << 20)


def extract_tar(stream: Any, dest: str) -> None:
    """Into ``dest`` with tarfile's ``data`` filter (nothing outside ``dest``, no links out
    of it), skipping device nodes and FIFOs, which an export has and a directory does not
    need."""
    import tarfile

    def keep(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if member.isdev() or member.isfifo():
            return None
        return tarfile.data_filter(member, path)

    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=stream, mode="r|*") as tf:
        tf.extractall(dest, filter=keep)


# --- --print-ast -------------------------------------------------------------------------


def instruction_json(ins: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "instruction": ins.name, "flags": list(ins.flags), "args": list(ins.args),
        "json": ins.json, "start_line": ins.start_line, "end_line": ins.end_line,
        "heredocs": [{"name": h.name, "content": h.content, "expand": h.expand,
                      "chomp": h.chomp, "fd": h.fd} for h in ins.heredocs],
    }
    if ins.sub is not None:
        out["sub"] = instruction_json(ins.sub)
    return out


def print_ast(path: str) -> int:
    import json

    from ketch.build.dockerfile import ParseError, parse

    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        raise _fail(f"failed to read {path}: {exc.strerror}") from None
    try:
        df = parse(data)
    except ParseError as exc:
        sys.stderr.write(str(exc) + "\n")
        return 1
    for ins in df.instructions:
        sys.stdout.write(json.dumps(instruction_json(ins)) + "\n")
    return 0


# --- builder prune ------------------------------------------------------------------------


@command("prune", "", "Remove build cache")
@option("-a", "--all", "all_", is_flag=True,
        help="Remove all unused build cache, not just dangling ones")
@option("--filter", "filters", metavar="filter", multiple=True,
        help='Provide filter values (e.g. "until=24h")')
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@option("--keep-storage", default="", metavar="bytes",
        help="Amount of disk space to keep for cache")
@pass_obj
def prune(session: Session, args: tuple[str, ...], all_: bool, filters: tuple[str, ...],
          force: bool, keep_storage: str) -> int:
    import json

    from ketch.cli.formatting import human_size
    from ketch.cli.session import parse_filters
    from ketch.cli.system_cmds import confirm
    from ketch.client._http import form_encode

    flt = parse_filters(filters)
    keep = _size_flag({"keep_storage": keep_storage}, "keep_storage", "--keep-storage")
    if not force:
        what = "all build cache" if all_ else "all dangling build cache"
        if not confirm(f"WARNING! This will remove {what}. "
                       "Are you sure you want to continue? [y/N] "):
            return 0
    client = session.connect()
    pairs = [("keep-storage", str(keep))]   # dockerd 20.10 wants it, even 0
    if all_:
        pairs.append(("all", "1"))
    if flt:
        pairs.append(("filters", json.dumps(flt)))
    report = client._json("POST", "/build/prune?" + form_encode(pairs))
    deleted = report.get("CachesDeleted") or []
    if deleted:
        sys.stdout.write("Deleted build cache objects:\n" + "".join(f"{c}\n" for c in deleted)
                         + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}\n")
    return 0


builder = Group("builder", help="Manage builds", usage="COMMAND", lazy={})
builder.add_command(build)
builder.add_command(prune)


__all__ = ["build", "builder", "directory_context", "is_archive", "print_ast", "prune"]
