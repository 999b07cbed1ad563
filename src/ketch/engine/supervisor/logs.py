"""Container logs in Docker's json-file format, byte for byte.

Each line a container writes becomes one JSON object on one line:

    {"log":"hello\\n","stream":"stdout","time":"2026-12-01T06:54:57.123456789Z"}

as dockerd writes it (20.10 and later), so ``docker logs`` readers, log
shippers and ketch's own ``logs`` all read the same files:

- Output is cut into lines at ``\\n``; the newline stays in ``log``.
- A line longer than 16 KiB is cut into 16 KiB pieces written without a
  newline ("partial" entries); every piece of one line carries the time of the
  first. Output that ends without a newline is a partial entry too.
- ``time`` is RFC 3339 in UTC with nanoseconds, trailing zeros trimmed (Go's
  ``time.RFC3339Nano``).
- Strings are escaped as Go's encoder does: ``<``, ``>``, ``&``, U+2028/9 and
  control characters other than ``\\n``/``\\r`` as ``\\u00XX``; invalid UTF-8
  as ``\\ufffd``.
- ``max-size`` rotates the file before a write once it has reached the size
  (so a file may exceed it by one entry); ``max-file`` keeps that many files:
  ``container-json.log``, ``.1``, ``.2``... With one file it is truncated.

The ``local`` driver's files (``LocalFile``) hold the same entries in
dockerd's binary format (``ketch.engine.locallog``), with its defaults:
rotation at 20 MB, 5 files, rotated files gzipped.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from ketch.engine import locallog
from ketch.errors import InvalidArgument, NotSupported

BUF_SIZE = 16 * 1024        # dockerd's line buffer: longer lines are split here
FILE_MODE = 0o640


def rfc3339nano(time_ns: int) -> str:
    secs, nanos = divmod(time_ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"}
_NEEDS_ESCAPE = re.compile("[\x00-\x1f\"\\\\<>&\u2028\u2029\udc80-\udcff]")


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if "\udc80" <= ch <= "\udcff":      # a byte that was not UTF-8 (surrogateescape)
        return "\\ufffd"
    return f"\\u{ord(ch):04x}"


def json_string(data: bytes | str) -> bytes:
    text = data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")
    return b'"' + _NEEDS_ESCAPE.sub(_escape, text).encode("utf-8", "surrogatepass") + b'"'


def encode_entry(line: bytes, stream: str, time_ns: int,
                 attrs: dict[str, str] | None = None) -> bytes:
    """One json-file entry, newline-terminated; ``line`` already holds its ``\\n`` if any."""
    out = b'{"log":' + json_string(line) + b',"stream":' + json_string(stream)
    if attrs:
        out += b',"attrs":{' + b",".join(
            json_string(k) + b":" + json_string(v) for k, v in sorted(attrs.items())) + b"}"
    return out + b',"time":"' + rfc3339nano(time_ns).encode() + b'"}\n'


# -- log options ------------------------------------------------------------------------
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
JSON_FILE_OPTS = {"max-size", "max-file", "compress", "labels", "labels-regex", "env",
                  "env-regex", "tag"}
COMMON_OPTS = locallog.COMMON_OPTS


def parse_size(value: str) -> int:
    """Docker's ``RAMInBytes``: ``10m`` = 10 MiB, units are powers of 1024."""
    m = _SIZE_RE.match(value)
    if not m:
        raise InvalidArgument(f"invalid size: '{value}'")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_log_opts(opts: dict[str, str]) -> tuple[int, int]:
    """(max size in bytes or -1, max files) from json-file's ``--log-opt``s, as dockerd checks them.

    ``labels``/``env``/``tag`` are the engine's to resolve into ``attrs``; they
    are accepted here so a daemon can validate every option in one place.
    """
    for key in opts:
        if key not in JSON_FILE_OPTS and key not in COMMON_OPTS:
            raise InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
    max_size = -1
    if opts.get("max-size"):
        max_size = parse_size(opts["max-size"])
        if max_size <= 0:
            raise InvalidArgument("max-size must be a positive number")
    max_file = 1
    if opts.get("max-file"):
        try:
            max_file = int(opts["max-file"])
        except ValueError:
            raise InvalidArgument(
                f'strconv.Atoi: parsing "{opts["max-file"]}": invalid syntax') from None
        if max_file < 1:
            raise InvalidArgument("max-file cannot be less than 1")
    if opts.get("compress", "false").lower() in ("true", "1"):
        raise NotSupported("json-file: compress is not supported by ketch")
    return max_size, max_file


# -- the file ---------------------------------------------------------------------------
class JsonFile:
    """An append-only json-file log with dockerd's size-based rotation."""

    def __init__(self, path: str, max_size: int = -1, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max_file
        self.fd = self._open(os.O_APPEND)
        self.size = os.fstat(self.fd).st_size

    def _open(self, extra: int) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | extra, FILE_MODE)

    def write(self, entry: bytes) -> None:
        if self.max_size > 0 and self.size >= self.max_size:
            self.rotate()
        view = memoryview(entry)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def rotate(self) -> None:
        os.close(self.fd)
        if self.max_file > 1:
            for i in range(self.max_file - 1, 1, -1):
                try:
                    os.replace(f"{self.path}.{i - 1}", f"{self.path}.{i}")
                except FileNotFoundError:
                    pass
            os.replace(self.path, f"{self.path}.1")
        self.fd = self._open(os.O_APPEND | os.O_TRUNC)
        self.size = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


Defer = Callable[[Callable[[], None]], None]    # runs a function later, in the loop


class LocalFile:
    """The ``local`` driver's file: framed protobuf entries, rotated as dockerd does.

    Before a write, a file at or over ``max_size`` is rotated: ``.N-1`` becomes
    ``.N`` (the oldest is removed), the file becomes ``.1`` and a new one is
    created. With ``compress`` the new ``.1`` is then gzipped into ``.1.gz``
    a piece per loop turn through ``defer`` (all at once without it), so a
    rotation does not stall the other containers' output. With fewer than
    two files the old one is simply unlinked (readers holding it keep it).
    """

    def __init__(self, path: str, opts: locallog.Options | None = None,
                 defer: Defer | None = None) -> None:
        self.path = path
        self.opts = opts or locallog.Options()
        self.defer = defer
        self.fd = self._open(os.O_APPEND)
        self.size = os.fstat(self.fd).st_size
        self.last_ns = 0
        self.gz: locallog.GzipWriter | None = None

    def _open(self, extra: int) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | extra, FILE_MODE)

    def write(self, entry: locallog.Entry) -> None:
        if self.size >= self.opts.max_size >= 0:
            self.rotate()
        view = memoryview(locallog.frame(entry))
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n
        self.last_ns = entry.time_nano

    def _name(self, i: int) -> str:
        return f"{self.path}.{i}" + (".gz" if self.opts.compress else "")

    def rotate(self) -> None:
        self.finish_compression()       # one at a time, as dockerd's rotateMu
        os.close(self.fd)
        self.fd = -1
        n = self.opts.max_file
        st: os.stat_result | None = None
        if n < 2:
            _unlink(self.path)
        else:
            _unlink(self._name(n - 1))
            for i in range(n - 1, 1, -1):
                try:
                    os.replace(self._name(i - 1), self._name(i))
                except FileNotFoundError:
                    pass
            try:
                st = os.stat(self.path)
                os.replace(self.path, f"{self.path}.1")
            except FileNotFoundError:
                st = None       # removed behind our back: nothing to keep
        self.fd = self._open(os.O_TRUNC)
        self.size = 0
        if st is not None and self.opts.compress:
            # Go's zero time when nothing was written since the start: "no information".
            last = rfc3339nano(self.last_ns) if self.last_ns else "0001-01-01T00:00:00Z"
            meta = {"lastTime": last,
                    "ketchSource": f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"}
            try:
                self.gz = locallog.GzipWriter(f"{self.path}.1", f"{self.path}.1.gz", meta,
                                              FILE_MODE)
            except OSError:
                return          # .1 stays uncompressed, and readable
            if self.defer is None:
                self.finish_compression()
            else:
                self.defer(self._compress_step)

    def _compress_step(self) -> None:
        gz = self.gz
        if gz is None:
            return
        try:
            done = gz.step()
        except OSError:
            gz.abort()          # the uncompressed file stays, readable
            done = True
        if done:
            self.gz = None
        elif self.defer is not None:
            self.defer(self._compress_step)

    def finish_compression(self) -> None:
        gz, self.gz = self.gz, None
        if gz is not None:
            try:
                gz.finish()
            except OSError:
                gz.abort()

    def close(self) -> None:
        self.finish_compression()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- lines ------------------------------------------------------------------------------
Emit = Callable[[bytes, int], None]     # (the "log" value, time in ns)


class LineSplitter:
    """Cuts one stream's bytes into log entries the way dockerd's copier does.

    While ``emit`` runs, ``piece`` is the entry's partial metadata (None for
    a whole line): an id per cut line, ordinals from 1, ``last`` on the piece
    that ended with its newline. json-file has no place for it; local keeps it.
    """

    def __init__(self, emit: Emit, clock: Callable[[], int] = time.time_ns) -> None:
        self.emit = emit
        self.clock = clock
        self._buf = bytearray()
        self._partial_ts: int | None = None     # time of the first piece of a long line
        self._partial_id = ""
        self._ordinal = 0
        self.piece: locallog.Partial | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            i = self._buf.find(b"\n", 0, BUF_SIZE)
            if i >= 0:
                self._put(bytes(self._buf[:i + 1]), last=True)
                del self._buf[:i + 1]
            elif len(self._buf) >= BUF_SIZE:
                self._put(bytes(self._buf[:BUF_SIZE]), last=False)
                del self._buf[:BUF_SIZE]
            else:
                return

    def snapshot(self) -> list[Any]:
        return [base64.b64encode(bytes(self._buf)).decode(), self._partial_ts,
                self._partial_id, self._ordinal]

    def restore(self, data: list[Any]) -> None:
        self._buf = bytearray(base64.b64decode(data[0]))
        self._partial_ts = data[1]
        if len(data) >= 4:              # a snapshot from before partial metadata has none
            self._partial_id, self._ordinal = str(data[2]), int(data[3])

    def close(self) -> None:
        """End of the stream: what is left is a partial entry (it had no newline)."""
        if self._buf:
            self._put(bytes(self._buf), last=False)
            self._buf.clear()

    def _put(self, line: bytes, last: bool) -> None:
        if self._partial_ts is None:
            ts = self.clock()
            if last:
                self.piece = None
            else:
                self._partial_ts = ts
                self._partial_id, self._ordinal = secrets.token_hex(32), 1
                self.piece = locallog.Partial(self._partial_id, 1, False)
        else:
            ts = self._partial_ts
            self._ordinal += 1
            self.piece = locallog.Partial(self._partial_id, self._ordinal, last)
            if last:
                self._partial_ts = None
        try:
            self.emit(line, ts)
        finally:
            self.piece = None


class StreamLog:
    """stdout and stderr of one container into one json-file or local file
    (or nowhere, driver "none")."""

    def __init__(self, file: JsonFile | LocalFile | None, attrs: dict[str, str] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.file = file
        self.attrs = attrs or None
        self.splitters: dict[str, LineSplitter] = {}
        for name in ("stdout", "stderr"):
            self.splitters[name] = LineSplitter(self._emitter(name), clock)

    def _emitter(self, stream: str) -> Emit:
        def emit(line: bytes, ts: int) -> None:
            f = self.file
            if isinstance(f, JsonFile):
                f.write(encode_entry(line, stream, ts, self.attrs))
            elif f is not None:
                piece = self.splitters[stream].piece
                f.write(locallog.Entry(stream, ts, line.removesuffix(b"\n"), piece))
        return emit

    def feed(self, stream: str, data: bytes) -> None:
        self.splitters[stream].feed(data)

    def end(self, stream: str) -> None:
        self.splitters[stream].close()

    def close(self) -> None:
        for s in self.splitters.values():
            s.close()
        if self.file is not None:
            self.file.close()

    # -- carried across a re-exec of the supervisor -----------------------------------------
    def snapshot(self) -> dict[str, Any]:
        f = self.file
        out: dict[str, Any] = {
            "path": f.path if f else None, "attrs": self.attrs or {},
            "pending": {name: sp.snapshot() for name, sp in self.splitters.items()}}
        if isinstance(f, LocalFile):
            f.finish_compression()      # the new process has no callback pending
            out.update(driver=locallog.NAME, maxSize=f.opts.max_size, maxFile=f.opts.max_file,
                       compress=f.opts.compress, lastNs=f.last_ns)
        else:
            out.update(maxSize=f.max_size if f else -1, maxFile=f.max_file if f else 1)
        return out

    @classmethod
    def restore(cls, data: dict[str, Any], defer: Defer | None = None) -> StreamLog:
        """``defer``: as for ``open_log`` (without it, a local log compresses at once)."""
        f: JsonFile | LocalFile | None = None
        if data["path"] and data.get("driver") == locallog.NAME:
            f = LocalFile(data["path"], locallog.Options(
                data["maxSize"], data["maxFile"], bool(data["compress"])), defer)
            f.last_ns = int(data.get("lastNs", 0))
        elif data["path"]:
            f = JsonFile(data["path"], data["maxSize"], data["maxFile"])
        log = cls(f, data["attrs"])
        for name, pending in data["pending"].items():
            log.splitters[name].restore(pending)
        return log


def check_values(driver: str, opts: dict[str, str]) -> None:
    """dockerd's start-time check of a driver's option values, in its words
    ("failed to initialize logging driver: ...")."""
    if driver == locallog.NAME:
        locallog.parse_options(opts)
    elif driver == "json-file":
        try:
            parse_log_opts(opts)
        except InvalidArgument as exc:
            raise InvalidArgument(f"failed to initialize logging driver: {exc}") from None


def open_log(driver: str, path: str, opts: dict[str, str], attrs: dict[str, str] | None = None,
             defer: Defer | None = None) -> StreamLog:
    """The supervisor's ``create``: a container's log for its driver and options.

    Option values are checked here, when the container starts, as dockerd
    does when it starts the logger (keys were checked at create).
    """
    if driver == "none":
        return StreamLog(None)
    if driver not in ("json-file", locallog.NAME):
        raise NotSupported(f"log driver {driver} is not supported by the supervisor")
    if not path:
        raise InvalidArgument(f"create: log.path is required for {driver}")
    if driver == locallog.NAME:
        local_opts = locallog.parse_options(opts)
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        return StreamLog(LocalFile(path, local_opts, defer))
    check_values(driver, opts)
    max_size, max_file = parse_log_opts(opts)
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    return StreamLog(JsonFile(path, max_size, max_file), attrs)
