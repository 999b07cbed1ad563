"""Docker's ``local`` log driver: the file format, shared by the writer and the reader.

The supervisor writes it (``supervisor/logs.py``) and ketchd reads it
(``logread.py``); both import this module, which needs only the stdlib, so
the supervisor stays lean.

The format is dockerd's (moby daemon/logger/local), so files move between
the two engines:

- Each message is a protobuf ``LogEntry`` (``source`` = 1, ``time_nano`` = 2,
  ``line`` = 3, ``partial`` = 4, ``partial_log_metadata`` = 5 with ``last`` =
  1, ``id`` = 2, ``ordinal`` = 3), encoded here by hand: a few varint and
  length-delimited fields do not justify a protobuf dependency. proto3 leaves
  out fields with their zero value, and so does dockerd.
- A frame is the entry's length as a big-endian uint32, the entry, and the
  length again: the trailing copy lets ``--tail`` walk the file backwards.
- ``line`` has no trailing newline. A line cut at 16 KiB carries partial
  metadata (a random 64-hex id, ordinals from 1, ``last`` on the piece that
  ended with a newline); the reader gives back a newline after an entry
  that is whole or the last piece, as dockerd's reader does.
- The file is ``local-logs/container.log`` in the container's directory,
  rotated at ``max-size`` (default 20 MB) into ``container.log.1`` ...
  ``container.log.<max-file - 1>`` (default 5 files in all), and, with
  ``compress`` (the default), each rotated file gzipped into ``.N.gz`` whose
  gzip header's extra field holds ``{"lastTime": <time of its last entry>}``,
  which lets a reader with ``--since`` skip whole files unopened.

ketch adds one key to that JSON, ``ketchSource`` ("<st_dev>:<st_ino>:<st_mtime_ns>"
of the file before it was compressed), so a follower that held the
uncompressed file can tell which compressed file it became; dockerd ignores
unknown keys.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass

from ketch.errors import InvalidArgument

NAME = "local"
LOG_DIR = "local-logs"
LOG_FILE = "container.log"
LEN_SIZE = 4                    # the uint32 before and after each entry
MAX_ENTRY = 1_000_000           # dockerd refuses to decode an entry larger than this
DEFAULT_MAX_SIZE = 20 * 1024 * 1024
DEFAULT_MAX_FILE = 5
OPTS = frozenset({"max-size", "max-file", "compress"})
# Options of every driver, handled (and checked) by the daemon, not by the driver.
COMMON_OPTS = frozenset({"mode", "max-buffer-size"})


@dataclass(frozen=True, slots=True)
class Partial:
    """A piece of a line longer than the copier's buffer (or of unterminated output)."""

    id: str
    ordinal: int
    last: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    source: str                 # "stdout" or "stderr"
    time_nano: int
    line: bytes                 # without its newline
    partial: Partial | None = None
    attrs: tuple[tuple[str, str], ...] = ()     # field 6 of newer dockerds; never written here

    @property
    def text(self) -> bytes:
        """The line as ``docker logs`` shows it: a newline unless it is an unfinished piece."""
        if self.partial is None or self.partial.last:
            return self.line + b"\n"
        return self.line


# -- protobuf -----------------------------------------------------------------------------
_U64 = (1 << 64) - 1


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return bytes((n,))
    n &= _U64               # negative int64/int32: ten bytes of two's complement, as Go does
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


_SOURCES = {name: b"\x0a" + _varint(len(name)) + name.encode() for name in ("stdout", "stderr")}


def encode(e: Entry) -> bytes:
    """The protobuf bytes of one ``LogEntry``."""
    out = bytearray()
    if e.source:
        out += _SOURCES.get(e.source) or _bytes_field(1, e.source.encode())
    if e.time_nano:
        out += _key(2, 0) + _varint(e.time_nano)
    if e.line:
        out += _bytes_field(3, e.line)
    if e.partial is not None:
        out += _key(4, 0) + b"\x01"
        md = bytearray()
        if e.partial.last:
            md += _key(1, 0) + b"\x01"
        if e.partial.id:
            md += _bytes_field(2, e.partial.id.encode())
        if e.partial.ordinal:
            md += _key(3, 0) + _varint(e.partial.ordinal)
        out += _bytes_field(5, bytes(md))
    return bytes(out)


def frame(e: Entry) -> bytes:
    body = encode(e)
    n = struct.pack(">I", len(body))
    return n + body + n


def _read_varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def _signed(n: int, bits: int) -> int:
    n &= (1 << bits) - 1
    return n - (1 << bits) if n >> (bits - 1) else n


def _fields(buf: bytes | memoryview) -> list[tuple[int, int, int | bytes]]:
    """(field, wire type, value) of a message; unknown fields are kept for the caller to skip."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            value = bytes(buf[i:i + n])
            i += n
        elif wire == 1:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 5:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated field")
        out.append((field, wire, value))
    return out


_STREAM_NAMES = {b"stdout": "stdout", b"stderr": "stderr"}


def decode(buf: bytes | memoryview) -> Entry:
    """One ``LogEntry`` from its protobuf bytes. Raises ValueError when it is not one."""
    data = bytes(buf)
    fast = decode_plain(data)
    if fast is not None:
        return Entry(*fast)
    return _decode_any(data)


_M0 = int.from_bytes(b"\x7f" * 9, "little")
_M1 = sum(0x7F << (16 * k) for k in range(5))
_M2 = sum(0x3FFF << (32 * k) for k in range(3))
_M3 = sum(0x0FFFFFFF << (64 * k) for k in range(2))


def _varint9(data: bytes, i: int) -> int:
    """A nine-byte varint (every time from 2005 to 2262) without a loop: the
    7-bit groups packed pairwise, then by fours, then by eights."""
    x = int.from_bytes(data[i:i + 9], "little") & _M0
    x = (x & _M1) | ((x >> 8 & _M1) << 7)
    x = (x & _M2) | ((x >> 16 & _M2) << 14)
    x = (x & _M3) | ((x >> 32 & _M3) << 28)
    return (x & ((1 << 56) - 1)) | ((x >> 64) << 56)


def decode_plain(data: bytes) -> tuple[str, int, bytes] | None:
    """(source, time_nano, line) of the common entry (no partial metadata, no
    other field), for readers going through many; None for anything else."""
    n = len(data)
    if n < 2 or data[0] != 0x0A:
        return None
    end = 2 + data[1]
    source = _STREAM_NAMES.get(data[2:end])
    if source is None or end + 1 >= n or data[end] != 0x10:
        return None
    i = end + 1
    if n >= i + 9 and data[i + 8] < 0x80 and min(data[i:i + 8]) >= 0x80:
        time_nano, i = _varint9(data, i), i + 9
    else:
        time_nano, i = _read_varint(data, i)
        time_nano = _signed(time_nano, 64)
    if i == n:
        return source, time_nano, b""
    if data[i] != 0x1A or i + 1 >= n:
        return None
    size = data[i + 1]
    if size < 0x80:
        i += 2
    else:
        size, i = _read_varint(data, i + 1)
    if i + size != n:
        return None
    return source, time_nano, data[i:]


def _decode_any(buf: bytes) -> Entry:
    source, time_nano, line, is_partial = "", 0, b"", False
    md: Partial | None = None
    attrs: list[tuple[str, str]] = []
    for field, wire, value in _fields(buf):
        if field == 1 and isinstance(value, bytes):
            source = value.decode("utf-8", "replace")
        elif field == 2 and wire == 0 and isinstance(value, int):
            time_nano = _signed(value, 64)
        elif field == 3 and isinstance(value, bytes):
            line = value
        elif field == 4 and wire == 0:
            is_partial = bool(value)
        elif field == 5 and isinstance(value, bytes):
            last, pid, ordinal = False, "", 0
            for f, w, v in _fields(value):
                if f == 1 and w == 0:
                    last = bool(v)
                elif f == 2 and isinstance(v, bytes):
                    pid = v.decode("utf-8", "replace")
                elif f == 3 and w == 0 and isinstance(v, int):
                    ordinal = _signed(v, 32)
            md = Partial(pid, ordinal, last)
        elif field == 6 and isinstance(value, bytes):
            kv = {f: v for f, _, v in _fields(value) if isinstance(v, bytes)}
            attrs.append((kv.get(1, b"").decode("utf-8", "replace"),
                          kv.get(2, b"").decode("utf-8", "replace")))
    if is_partial and md is None:
        md = Partial("", 0, False)
    return Entry(source, time_nano, line, md if is_partial else None, tuple(attrs))


# -- frames ----------------------------------------------------------------------------------
def split(data: bytes | memoryview) -> tuple[list[memoryview], int]:
    """The entries of the whole frames at the start of ``data``, and the bytes they take.

    Stops before a frame whose two lengths differ or that is too large, and
    raises ValueError when ``data`` starts with one: the file is not in this
    format (or is damaged) from there on.
    """
    view = memoryview(data)
    out: list[memoryview] = []
    i, end = 0, len(view)
    while end - i >= 2 * LEN_SIZE:
        (n,) = struct.unpack_from(">I", view, i)
        if n > MAX_ENTRY:
            if out:
                break
            raise ValueError(f"log message is too large ({n} > {MAX_ENTRY})")
        stop = i + 2 * LEN_SIZE + n
        if stop > end:
            break
        (m,) = struct.unpack_from(">I", view, stop - LEN_SIZE)
        if m != n:
            if out:
                break
            raise ValueError("log message header and footer indicate different message sizes")
        out.append(view[i + LEN_SIZE:stop - LEN_SIZE])
        i = stop
    return out, i


def frame_before(fd: int, end: int) -> int:
    """The offset of the frame that ends at ``end`` (read through its trailing length).

    Raises ValueError when the two lengths do not agree (``end`` is not the
    end of a frame).
    """
    if end < 2 * LEN_SIZE:
        raise ValueError("no frame ends here")
    tail = os.pread(fd, LEN_SIZE, end - LEN_SIZE)
    if len(tail) != LEN_SIZE:
        raise ValueError("short read")
    (n,) = struct.unpack(">I", tail)
    start = end - 2 * LEN_SIZE - n
    if n > MAX_ENTRY or start < 0:
        raise ValueError("no frame ends here")
    head = os.pread(fd, LEN_SIZE, start)
    if len(head) != LEN_SIZE or struct.unpack(">I", head)[0] != n:
        raise ValueError("log message header and footer indicate different message sizes")
    return start


# -- options -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Options:
    max_size: int = DEFAULT_MAX_SIZE    # bytes; a file at or over it is rotated before a write
    max_file: int = DEFAULT_MAX_FILE
    compress: bool = True


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def from_human_size(value: str) -> int:
    """go-units' ``FromHumanSize``: decimal units (``20m`` is 20,000,000 bytes)."""
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"invalid size: '{value}'")
    return int(float(m.group(1)) * _DECIMAL[(m.group(2) or "").lower()])


def check_keys(opts: dict[str, str]) -> None:
    """The create-time check (dockerd's ValidateLogOpt for this driver)."""
    for key in opts:
        if key not in OPTS and key not in COMMON_OPTS:
            raise InvalidArgument(f"unknown log opt '{key}' for log driver {NAME}")


def parse_options(opts: dict[str, str]) -> Options:
    """The start-time check and values, with dockerd 20.10's messages."""
    check_keys(opts)
    pre = "failed to initialize logging driver: "
    max_size, max_file, compress = DEFAULT_MAX_SIZE, DEFAULT_MAX_FILE, True
    if "max-size" in opts:
        v = opts["max-size"]
        try:
            max_size = from_human_size(v)
        except ValueError as exc:
            raise InvalidArgument(f"{pre}invalid value for max-size: {v}: {exc}") from None
    if "max-file" in opts:
        v = opts["max-file"]
        try:
            max_file = int(v, 10)
        except ValueError:
            raise InvalidArgument(f'{pre}invalid value for max-file: {v}: '
                                  f'strconv.Atoi: parsing "{v}": invalid syntax') from None
    if "compress" in opts:
        v = opts["compress"]
        if v not in _TRUE | _FALSE:
            raise InvalidArgument(f'{pre}error reading compress log option: '
                                  f'strconv.ParseBool: parsing "{v}": invalid syntax')
        compress = v in _TRUE
    if max_file < 0:
        raise InvalidArgument(f"{pre}max file count cannot be less than 0")
    if compress and max_file <= 1:
        raise InvalidArgument(f"{pre}compression cannot be enabled when max file count is 1")
    return Options(max_size, max_file, compress)


# -- compressed rotated files -------------------------------------------------------------------
_GZ_MAGIC = b"\x1f\x8b\x08"
FEXTRA, FNAME, FCOMMENT, FHCRC = 4, 8, 16, 2


def gzip_header(meta: dict[str, str]) -> bytes:
    """A gzip member header as Go's writer makes it for dockerd: no mtime, OS
    unknown, and the metadata as raw JSON in the extra field."""
    extra = json.dumps(meta, separators=(",", ":")).encode()
    return (_GZ_MAGIC + bytes([FEXTRA]) + b"\0\0\0\0" + b"\x00\xff"
            + struct.pack("<H", len(extra)) + extra)


def gzip_meta(fd: int) -> dict[str, str]:
    """The JSON of a gzip file's extra field ({} when it has none or it is not JSON)."""
    head = os.pread(fd, 12, 0)
    if len(head) < 12 or not head.startswith(_GZ_MAGIC) or not head[3] & FEXTRA:
        return {}
    (xlen,) = struct.unpack_from("<H", head, 10)
    try:
        doc = json.loads(os.pread(fd, xlen, 12))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


class GzipWriter:
    """Compresses one file into a gzip file a piece at a time, so the
    supervisor's loop can do other work in between (dockerd uses a goroutine).

    Writes ``<dest>.tmp`` and renames it: a reader never sees half a file.
    ``finish`` then removes the source.
    """

    def __init__(self, src: str, dest: str, meta: dict[str, str], mode: int = 0o640) -> None:
        self.src, self.dest = src, dest
        self.tmp = dest + ".tmp"
        self.in_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.out_fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                  mode)
        except OSError:
            os.close(self.in_fd)
            raise
        self.z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.crc = 0
        self.size = 0
        self.done = False
        self._write(gzip_header(meta))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.out_fd, view):]

    def step(self, chunk: int = 256 * 1024) -> bool:
        """Compress up to ``chunk`` more bytes; True when the file is complete."""
        if self.done:
            return True
        data = os.read(self.in_fd, chunk)
        if data:
            self.crc = zlib.crc32(data, self.crc)
            self.size += len(data)
            self._write(self.z.compress(data))
            return False
        self._write(self.z.flush() + struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        self._close()
        os.replace(self.tmp, self.dest)
        os.unlink(self.src)
        self.done = True
        return True

    def finish(self) -> None:
        while not self.step(1 << 20):
            pass

    def abort(self) -> None:
        self._close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
        self.done = True

    def _close(self) -> None:
        for fd in (self.in_fd, self.out_fd):
            if fd >= 0:
                os.close(fd)
        self.in_fd = self.out_fd = -1


def decompress_to_fd(fd: int) -> int:
    """A gzip file's content in an anonymous memory file (for pread and backwards tail)."""
    out = os.memfd_create("ketch-log", os.MFD_CLOEXEC)
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pos = 0
        while True:
            data = os.pread(fd, 1 << 20, pos)
            if not data:
                break
            pos += len(data)
            chunk = d.decompress(data)
            while d.unconsumed_tail:            # never: no max_length given
                chunk += d.decompress(d.unconsumed_tail)
            _write_all(out, chunk)
            if d.eof:
                break
        _write_all(out, d.flush())
    except BaseException:
        os.close(out)
        raise
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
