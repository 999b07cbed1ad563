"""Reading a container's json-file or local log the way ``docker logs`` does.

The ``local`` driver's files (``local-logs/container.log``, found by that
name) are read by ``LocalLogCursor``, the same reader over binary frames
and gzipped rotated files; what follows holds for both formats.

The supervisor writes the files (``supervisor/logs.py``): ``<path>``, and when
``max-file`` > 1 the rotated ``<path>.1`` (newest) ... ``<path>.N`` (oldest).
This module reads them back as dockerd's json-file reader does (moby
daemon/logger/loggerutils/logfile.go and follow.go):

- Files are read oldest first. ``tail`` (N > 0) counts raw lines (both streams)
  backwards from the end, across files, reading blocks backwards so a large
  log is not scanned; ``tail`` < 0 is everything, 0 is nothing (and a follow
  starts at the end).
- ``since`` (inclusive) skips entries older than it until the first that is
  not; after that nothing is skipped, since timestamps need not be monotonic.
  ``until`` (inclusive) ends the read, follow included, at the first entry
  newer than it.
- Stream selection applies after both, as the API route does.
- Each entry comes back as it is in the file: a line cut at 16 KiB is several
  records without a newline (``partial``), and the API sends each as a message
  of its own, as dockerd does.
- ``follow`` goes on reading as the file grows, survives rotation (the file is
  renamed to ``.1`` and a new one created: the old one is drained, any newer
  rotated file read, then the new one) without losing or repeating entries,
  and ends when told that the container stopped, after draining what is left.

A line that is not JSON is skipped with a warning; dockerd gives up on the
rest of that file instead, which helps nobody. With ``max-file`` 1 the writer
truncates in place; entries written between the last read and the truncation
are lost to a follower, as with dockerd.

File reads block, so the async API does them in a worker thread, a bounded
batch at a time; ``read_logs`` is the same reader, blocking, for tools and tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import zlib
from collections.abc import AsyncGenerator, Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ketch.engine import locallog
from ketch.errors import InvalidArgument

log = logging.getLogger("ketch.engine.logs")

BATCH_BYTES = 1 << 20       # file bytes decoded per batch (per trip to a worker thread)
BLOCK = 64 * 1024           # backwards read size for tail
POLL_INTERVAL = 0.2         # seconds between checks of a followed file that did not grow


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One json-file entry: ``text`` is the ``log`` value as bytes, newline included."""

    stream: str             # "stdout" or "stderr"
    time_ns: int            # unix time in nanoseconds
    text: bytes
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        """A piece of a longer line, or output that ended without a newline."""
        return not self.text.endswith(b"\n")


@dataclass(frozen=True, slots=True)
class ReadOptions:
    stdout: bool = True
    stderr: bool = True
    since_ns: int | None = None     # inclusive; None: from the start
    until_ns: int | None = None     # inclusive; None: no end
    tail: int = -1                  # < 0: all lines; 0: none; N: the last N lines


# -- the API's values -------------------------------------------------------------------
_INT = re.compile(r"[+-]?[0-9]+")


def parse_timestamp(value: str) -> int | None:
    """``since``/``until`` as the API carries them: unix seconds, optionally ``.nanos``.

    The CLI turns ``--since 10m`` or a date into this form before sending. A
    fraction shorter than 9 digits is scaled (".5" is half a second), as moby's
    ParseTimestamps does. "" is no bound (None).
    """
    if value == "":
        return None
    secs, dot, frac = value.partition(".")
    if not _INT.fullmatch(secs):
        raise InvalidArgument(f'strconv.ParseInt: parsing "{secs}": invalid syntax')
    nanos = 0
    if dot:
        if not _INT.fullmatch(frac):
            raise InvalidArgument(f'strconv.ParseInt: parsing "{frac}": invalid syntax')
        nanos = int(frac) * 10 ** (9 - len(frac)) if len(frac) <= 9 else int(frac[:9])
    return int(secs) * 1_000_000_000 + nanos


def parse_tail(value: str) -> int:
    """``tail``: a number of lines; anything that is not a number ("all") means all, as dockerd."""
    return int(value) if _INT.fullmatch(value) else -1


_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2})"
                   r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})")
_seconds: dict[tuple[str, str], int] = {}       # consecutive entries share their second


def parse_time(value: str) -> int:
    """An entry's ``time`` (RFC 3339, any fraction length, any offset) in unix ns."""
    m = _TIME.fullmatch(value)
    if m is None:
        raise ValueError(f"bad time {value!r}")
    base, frac, zone = m.groups()
    secs = _seconds.get((base, zone))
    if secs is None:
        if len(_seconds) > 4096:
            _seconds.clear()
        iso = base[:10] + "T" + base[11:] + ("+00:00" if zone in "Zz" else zone)
        secs = _seconds[(base, zone)] = int(datetime.fromisoformat(iso).timestamp())
    return secs * 1_000_000_000 + (int(frac[:9].ljust(9, "0")) if frac else 0)


def _text(value: str) -> bytes:
    try:
        return value.encode()
    except UnicodeEncodeError:      # a lone surrogate escape: Go's decoder makes it U+FFFD
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode()


_decode = json.JSONDecoder().raw_decode
_SPACE = re.compile(r"[ \t\r\n]*")


def decode_entry(line: bytes) -> LogRecord:
    """One line of a json-file log. Raises ValueError when it is not an entry."""
    text = line.decode("utf-8", "replace")
    doc, end = _decode(text, len(text) - len(text.lstrip(" \t\r\n")))
    if end != len(text) and _SPACE.fullmatch(text, end) is None:
        raise ValueError("extra data after the entry")
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    attrs = doc.get("attrs")
    return LogRecord(stream=str(doc.get("stream", "")), time_ns=parse_time(doc.get("time", "")),
                     text=_text(doc.get("log", "")),
                     attrs={str(k): str(v) for k, v in attrs.items()}
                     if attrs and isinstance(attrs, dict) else {})


# -- the files ---------------------------------------------------------------------------
# (st_dev, st_ino): a file's identity across renames. A compressed rotated
# file of the local driver is known by the file it was made from: (st_dev,
# st_ino, st_mtime_ns), the mtime telling it apart from a later file that got
# the same inode number once the uncompressed one was removed.
FileId = tuple[int, ...]


_ROTATION_RETRIES = 5


def _ident(st: os.stat_result) -> FileId:
    return st.st_dev, st.st_ino


def _same_file(listed: FileId, opened: FileId) -> bool:
    """The file found at a name is still the one listed there (or it was
    compressed meanwhile: then it is known by the identity of its source)."""
    return listed == opened or (len(listed) == 2 and opened[:2] == listed)


def rotated_paths(path: str) -> list[str]:
    """``path.N`` that exist, oldest (highest N) first."""
    directory, base = os.path.split(path)
    pattern = re.compile(re.escape(base) + r"\.([0-9]+)")
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := pattern.fullmatch(name))]
    return [os.path.join(directory, name) for _, name in sorted(found, reverse=True)]


def _open(path: str) -> tuple[int, FileId] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    return fd, _ident(os.fstat(fd))


def _line_end(fd: int, size: int) -> int:
    """The offset just after the last newline before ``size`` (0 if none): a
    snapshot never ends in the middle of an entry being written."""
    pos = size
    while pos > 0:
        start = max(0, pos - BLOCK)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _tail_start(fd: int, end: int, n: int) -> tuple[int, int]:
    """(offset, count): where the last ``count`` (<= n) lines before ``end`` begin.

    ``end`` is just after a newline. Reads blocks backwards from it.
    """
    if end == 0 or n <= 0:
        return end, 0
    pos, seen = end - 1, 0      # the newline at end-1 ends the last line
    while pos > 0:
        start = max(0, pos - BLOCK)
        block = os.pread(fd, pos - start, start)
        i = len(block)
        while True:
            i = block.rfind(b"\n", 0, i)
            if i < 0:
                break
            seen += 1
            if seen == n:
                return start + i + 1, n
        pos = start
    return 0, seen + 1


@dataclass(slots=True)
class _Segment:
    """A file to read from ``offset``: up to ``end``, or while it grows (``end`` None)."""

    fd: int
    ident: FileId
    offset: int
    end: int | None
    path: str = ""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LogCursor:
    """The blocking reader behind ``read_logs`` and ``follow_logs``.

    ``next_batch`` returns the next records (possibly none when following and
    nothing new was written); ``done`` says no more will ever come.
    """

    def __init__(self, path: str, opts: ReadOptions = ReadOptions(), *,
                 follow: bool = False) -> None:
        self.path = path
        self.opts = opts
        self.follow = follow
        self.done = False
        self.idle = False
        self._since = opts.since_ns
        self._segments: list[_Segment] = []
        try:
            self._snapshot()
        except BaseException:
            self.close()
            raise

    # -- setup -----------------------------------------------------------------------------
    def _snapshot(self) -> None:
        # A rotation while the files are opened one by one shifts their names:
        # then open them again (rare: rotations are far apart next to this).
        for attempt in range(_ROTATION_RETRIES + 1):
            current, rotated = self._open_all()
            if attempt == _ROTATION_RETRIES or self._unmoved(current, rotated):
                break
            for seg in rotated:
                seg.close()
            if current is not None:
                os.close(current[0])
        cur_end = 0
        if current is not None:
            cur_end = self._complete_end(current[0], os.fstat(current[0]).st_size)
        segments = rotated
        if current is not None:
            segments.append(_Segment(current[0], current[1], 0, cur_end, self.path))
        self._segments = segments
        self._apply_tail(cur_end, current is not None)
        if self.follow:
            live = self._segments[-1] if self._segments else None
            if live is not None and live.path == self.path:
                live.end = None         # keeps growing; everything up to cur_end is history
            elif current is None:
                self._segments.append(_Segment(-1, (0, 0), 0, None, self.path))

    def _open_all(self) -> tuple[tuple[int, FileId] | None, list[_Segment]]:
        # The current file first: a rotation after this shows up below as a
        # rotated file with its identity, and is then left to the follow.
        current = _open(self.path)
        rotated: list[_Segment] = []
        for p in self._rotated_paths():
            opened = self._open_rotated(p, self.opts.since_ns)
            if opened is None:
                continue
            fd, ident = opened
            if current is not None and self._is_file(ident, *current):
                os.close(fd)
                continue
            rotated.append(_Segment(fd, ident, 0, self._complete_end(fd, os.fstat(fd).st_size),
                                    p))
        return current, rotated

    def _unmoved(self, current: tuple[int, FileId] | None, rotated: list[_Segment]) -> bool:
        """Whether every file opened is still under the name it was opened by."""
        try:
            now = _ident(os.stat(self.path))
        except FileNotFoundError:
            now = None
        if now != (current[1] if current is not None else None):
            return False
        for seg in rotated:
            try:
                ident = self._ident_of(seg.path)
            except FileNotFoundError:
                try:                        # compressed since: the same file
                    ident = self._ident_of(seg.path + ".gz")
                except FileNotFoundError:
                    return False
            if not _same_file(seg.ident, ident) and not _same_file(ident, seg.ident):
                return False
        return True

    def _apply_tail(self, cur_end: int, has_current: bool) -> None:
        tail = self.opts.tail
        if tail < 0:
            return
        if tail == 0:
            # Nothing old: only what the current file gets from now on.
            keep = self._segments[-1:] if has_current else []
            for s in self._segments:
                if s not in keep:
                    s.close()
            self._segments = keep
            if keep:
                keep[0].offset = cur_end
            return
        need = tail
        for i in range(len(self._segments) - 1, -1, -1):
            s = self._segments[i]
            assert s.end is not None
            start, count = self._tail_start(s.fd, s.end, need)
            need -= count
            if need == 0 or i == 0:
                s.offset = start
                for older in self._segments[:i]:
                    older.close()
                self._segments = self._segments[i:]
                return

    # -- reading -----------------------------------------------------------------------------
    def next_batch(self, budget: int = BATCH_BYTES) -> list[LogRecord]:
        """Records from about ``budget`` bytes of file; may be empty when
        everything read was filtered out. ``idle`` then says whether the
        followed file simply has nothing new."""
        out: list[LogRecord] = []
        self.idle = False
        while not self.done and budget > 0:
            if not self._segments:
                self.done = True
                break
            seg = self._segments[0]
            if seg.end is None:                     # the live file
                if seg.fd < 0 and not self._reopen(seg):
                    self.idle = True
                    break
                n = self._read(seg, os.fstat(seg.fd).st_size, budget, out)
                if n:
                    budget -= n
                    continue
                if self._rotated(seg):
                    continue
                self.idle = True
                break
            n = self._read(seg, seg.end, budget, out)
            budget -= n
            if seg.offset >= seg.end or n == 0:
                self._finish(seg)
        return out

    # -- the format: json-file here, overridden by LocalLogCursor ----------------------------
    def _rotated_paths(self) -> list[str]:
        return rotated_paths(self.path)

    def _open_rotated(self, path: str, since_ns: int | None = None) -> tuple[int, FileId] | None:
        """A rotated file to read with pread; None when gone (or, given
        ``since_ns``, known to hold nothing as new)."""
        return _open(path)

    def _ident_of(self, path: str) -> FileId:
        return _ident(os.stat(path))

    def _complete_end(self, fd: int, size: int) -> int:
        return _line_end(fd, size)

    def _is_file(self, ident: FileId, fd: int, held: FileId) -> bool:
        """Whether a rotated file's identity is the file held open as ``fd`` (``held``)."""
        return ident == held

    def _tail_start(self, fd: int, end: int, n: int) -> tuple[int, int]:
        return _tail_start(fd, end, n)

    def _read(self, seg: _Segment, limit: int, budget: int, out: list[LogRecord]) -> int:
        """Decode the complete lines in [offset, limit) (up to about ``budget`` bytes)."""
        if limit < seg.offset:                      # truncated in place (max-file 1)
            seg.offset = 0
        want = min(limit - seg.offset, max(budget, BLOCK))
        if want <= 0:
            return 0
        data = os.pread(seg.fd, want, seg.offset)
        last = data.rfind(b"\n")
        # One line longer than the budget: read on until its end.
        while last < 0 and seg.offset + len(data) < limit:
            more = os.pread(seg.fd, min(limit - seg.offset - len(data), BLOCK * 4),
                            seg.offset + len(data))
            if not more:
                break
            i = more.rfind(b"\n")
            data += more
            if i >= 0:
                last = len(data) - len(more) + i
        if last < 0:
            return 0
        for line in data[:last].split(b"\n"):
            self._admit(line, seg, out)
            if self.done:
                break
        seg.offset += last + 1
        return last + 1

    def _admit(self, line: bytes, seg: _Segment, out: list[LogRecord]) -> None:
        if not line.strip():
            return
        try:
            rec = decode_entry(line)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("%s: skipping a log line that is not an entry: %s", seg.path, exc)
            return
        self._filter(rec, out)

    def _filter(self, rec: LogRecord, out: list[LogRecord]) -> None:
        if self._since is not None:
            if rec.time_ns < self._since:
                return
            self._since = None      # later entries may be older; dockerd keeps them too
        if self.opts.until_ns is not None and rec.time_ns > self.opts.until_ns:
            self.done = True
            return
        if (rec.stream == "stdout" and self.opts.stdout) or (
                rec.stream == "stderr" and self.opts.stderr):
            out.append(rec)

    def _finish(self, seg: _Segment) -> None:
        if seg.end is not None and seg.offset < seg.end:
            log.warning("%s: the last log entry has no end", seg.path)
        seg.close()
        self._segments.pop(0)

    def _reopen(self, seg: _Segment) -> bool:
        """The live file did not exist yet (or was between rename and create)."""
        opened = _open(self.path)
        if opened is None:
            return False
        seg.fd, seg.ident = opened
        seg.offset = 0
        return True

    def _rotated(self, seg: _Segment) -> bool:
        """At the end of the live file: if the name now holds another file, the
        one read so far is final (the writer closes it before renaming it).

        Queue the rest of it, the rotated files newer than it (more than one
        rotation may have happened since the last look) and the new current
        file, opened first so that a rotation meanwhile cannot hide a file.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False            # between rename and create; look again later
        if _ident(st) == seg.ident:
            return False
        live = _Segment(-1, (0, 0), 0, None, self.path)
        if not self._reopen(live):
            return False
        seg.end = os.fstat(seg.fd).st_size
        # A rotation between the listing and the opens shifts the names: then
        # look again (the files already held stay as they are).
        for attempt in range(_ROTATION_RETRIES + 1):
            queue = self._newer_than(seg, live, strict=attempt < _ROTATION_RETRIES)
            if queue is not None:
                break
        self._segments[1:1] = [*(queue or []), live]
        return True

    def _newer_than(self, seg: _Segment, live: _Segment,
                    strict: bool) -> list[_Segment] | None:
        """The rotated files between ``seg`` (finished) and ``live``, opened,
        oldest first; None (when ``strict``) if one of them moved meanwhile.

        Known by position, not by a record of the files read: an inode
        number is reused once its file is gone, but not while we hold it.
        """
        idents: list[tuple[str, FileId]] = []
        for p in self._rotated_paths():                   # oldest first
            try:
                idents.append((p, self._ident_of(p)))
            except FileNotFoundError:
                pass
        ids = [ident for _, ident in idents]
        # Ours gone (a later rotation deleted it): every rotated file is newer.
        ours = [i for i, ident in enumerate(ids) if self._is_file(ident, seg.fd, seg.ident)]
        first = ours[-1] + 1 if ours else 0
        # The new live file may be rotated (and compressed) already: it ends the list.
        lives = [i for i, ident in enumerate(ids) if self._is_file(ident, live.fd, live.ident)]
        last = lives[0] if lives else len(ids)
        queue: list[_Segment] = []
        for p, ident in idents[first:last]:
            opened = self._open_rotated(p)
            if opened is not None and _same_file(ident, opened[1]):
                queue.append(_Segment(opened[0], opened[1], 0, os.fstat(opened[0]).st_size, p))
                continue
            if opened is not None:
                os.close(opened[0])
            if strict:
                for q in queue:
                    q.close()
                return None
            log.warning("%s: a rotated log file moved while it was being followed; "
                        "entries may be missing", p)
        return queue

    def close(self) -> None:
        for s in self._segments:
            s.close()
        self._segments = []


class LocalLogCursor(LogCursor):
    """``LogCursor`` over the ``local`` driver's files (``ketch.engine.locallog``).

    Frames instead of lines: ``tail`` walks back through each frame's
    trailing length; a snapshot ends after the last whole frame. Rotated
    files may be gzipped (``.N.gz``): one is decompressed into memory when
    it is read, unless its header says its last entry is older than
    ``since`` (then it is skipped, as dockerd does). A compressed file is
    recognised as the file a follower was reading through the identity the
    writer records in its header.
    """

    def _rotated_paths(self) -> list[str]:
        directory, base = os.path.split(self.path)
        pattern = re.compile(re.escape(base) + r"\.([0-9]+)(\.gz)?")
        try:
            names = os.listdir(directory or ".")
        except FileNotFoundError:
            return []
        found: dict[int, str] = {}
        for name in names:
            m = pattern.fullmatch(name)
            # Both while a file is being compressed: the plain one is complete.
            if m and (int(m.group(1)) not in found or not m.group(2)):
                found[int(m.group(1))] = name
        return [os.path.join(directory, found[n]) for n in sorted(found, reverse=True)]

    def _open_rotated(self, path: str, since_ns: int | None = None) -> tuple[int, FileId] | None:
        opened = _open(path)
        if opened is None or not path.endswith(".gz"):
            return opened
        fd, ident = opened
        try:
            meta = locallog.gzip_meta(fd)
            if since_ns is not None:
                last = _meta_time(meta.get("lastTime", ""))
                if last is not None and last < since_ns:
                    return None
            return locallog.decompress_to_fd(fd), _source_ident(meta) or ident
        except (OSError, zlib.error, EOFError) as exc:
            log.warning("%s: cannot read a compressed log file: %s", path, exc)
            return None
        finally:
            os.close(fd)

    def _ident_of(self, path: str) -> FileId:
        if not path.endswith(".gz"):
            return _ident(os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return _source_ident(locallog.gzip_meta(fd)) or _ident(os.fstat(fd))
        finally:
            os.close(fd)

    def _is_file(self, ident: FileId, fd: int, held: FileId) -> bool:
        if len(ident) == 3 and ident[:2] == held:
            return os.fstat(fd).st_mtime_ns == ident[2]
        return ident == held

    def _complete_end(self, fd: int, size: int) -> int:
        try:
            locallog.frame_before(fd, size)
            return size
        except ValueError:
            if size == 0:
                return 0
            return _frames_scan(fd, size)[-1]      # a frame being written: stop before it

    def _tail_start(self, fd: int, end: int, n: int) -> tuple[int, int]:
        if end == 0 or n <= 0:
            return end, 0
        pos, found = end, 0
        try:
            while pos > 0 and found < n:
                pos = locallog.frame_before(fd, pos)
                found += 1
            return pos, found
        except ValueError:
            # Not walkable backwards (damaged): count forwards instead.
            starts = _frames_scan(fd, end)
            found = min(n, len(starts) - 1)
            return starts[len(starts) - 1 - found], found

    def _read(self, seg: _Segment, limit: int, budget: int, out: list[LogRecord]) -> int:
        """Decode the whole frames in [offset, limit) (up to about ``budget`` bytes)."""
        if limit < seg.offset:
            seg.offset = 0
        want = min(limit - seg.offset, max(budget, BLOCK))
        if want <= 0:
            return 0
        data = os.pread(seg.fd, want, seg.offset)
        try:
            entries, used = locallog.split(data)
            if not entries and len(data) >= locallog.LEN_SIZE:
                # One frame larger than what was read: read just that frame.
                size = 2 * locallog.LEN_SIZE + int.from_bytes(data[:locallog.LEN_SIZE], "big")
                if seg.offset + size <= limit and size > len(data):
                    data = os.pread(seg.fd, size, seg.offset)
                    entries, used = locallog.split(data)
        except ValueError as exc:
            log.warning("%s: skipping the rest of a log file that is damaged at offset %d: %s",
                        seg.path, seg.offset, exc)
            seg.offset = limit
            return max(want, 1)
        for body in entries:
            data = bytes(body)
            plain = locallog.decode_plain(data)
            if plain is not None:
                rec = LogRecord(plain[0], plain[1], plain[2] + b"\n")
            else:
                try:
                    e = locallog.decode(data)
                except ValueError as exc:
                    log.warning("%s: skipping a log entry that does not decode: %s",
                                seg.path, exc)
                    continue
                rec = LogRecord(e.source, e.time_nano, e.text, dict(e.attrs))
            self._filter(rec, out)
            if self.done:
                break
        seg.offset += used
        return used


def _frames_scan(fd: int, end: int) -> list[int]:
    """The offsets where the whole frames before ``end`` start, and where the last ends."""
    starts = [0]
    pos = 0
    while pos < end:
        data = os.pread(fd, min(end - pos, BATCH_BYTES), pos)
        try:
            entries, used = locallog.split(data)
        except ValueError:
            break
        if not entries:
            if len(data) < locallog.LEN_SIZE:
                break
            size = 2 * locallog.LEN_SIZE + int.from_bytes(data[:locallog.LEN_SIZE], "big")
            if pos + size > end or size <= len(data):
                break
            try:
                entries, used = locallog.split(os.pread(fd, size, pos))
            except ValueError:
                break
            if not entries:
                break
        for body in entries:
            pos += len(body) + 2 * locallog.LEN_SIZE
            starts.append(pos)
    return starts


def _meta_time(value: str) -> int | None:
    """A compressed file's ``lastTime``; None when absent, unreadable or Go's zero time."""
    try:
        ns = parse_time(value)
    except ValueError:
        return None
    return None if value.startswith("0001-01-01T") else ns


def _source_ident(meta: dict[str, str]) -> FileId | None:
    parts = meta.get("ketchSource", "").split(":")
    return tuple(int(p) for p in parts) if len(parts) == 3 and all(
        p.isdigit() for p in parts) else None


def is_local(path: str) -> bool:
    """Whether ``path`` is a ``local`` driver's file (by its fixed place, ``local-logs/container.log``)."""
    directory, base = os.path.split(path)
    return base == locallog.LOG_FILE and os.path.basename(directory) == locallog.LOG_DIR


def open_cursor(path: str, opts: ReadOptions = ReadOptions(), *,
                follow: bool = False) -> LogCursor:
    """The reader for the log at ``path``, in its driver's format."""
    cls = LocalLogCursor if is_local(path) else LogCursor
    return cls(path, opts, follow=follow)


# -- the public readers --------------------------------------------------------------------
def read_logs(path: str, opts: ReadOptions = ReadOptions()) -> Iterator[LogRecord]:
    """The log as it is now (no follow), blocking. For tools and tests."""
    cursor = open_cursor(path, opts)
    try:
        while not cursor.done:
            yield from cursor.next_batch()
    finally:
        cursor.close()


Stop = asyncio.Event | Awaitable[object] | None


async def follow_batches(path: str, opts: ReadOptions = ReadOptions(), *, follow: bool = False,
                         stopped: Stop = None,
                         poll_interval: float = POLL_INTERVAL
                         ) -> AsyncGenerator[list[LogRecord], None]:
    """The log in batches of records, reading in a worker thread.

    Without ``follow`` it ends at the end of the log as it was when called.
    With it, it goes on as the file grows, until ``stopped`` (an
    ``asyncio.Event`` set, or an awaitable such as the supervisor's ``wait``
    finished) says no more will be written: what was written by then is read,
    then it ends. It also ends at the first entry after ``until``. Close it
    (``aclose``, or ``contextlib.aclosing``) when the consumer leaves early.
    """
    cursor = await asyncio.to_thread(open_cursor, path, opts, follow=follow)
    stop_task: asyncio.Future[Any] | None = None
    owned = False
    stopping = False
    try:
        while True:
            # Seen before reading: all that was written before the stop is then read.
            stopping = stopping or (stop_task is not None and stop_task.done())
            batch = await asyncio.to_thread(cursor.next_batch)
            if batch:
                yield batch
            if cursor.done:
                return
            if not cursor.idle:
                continue        # a batch that the filters emptied: go on
            if stopping or not follow:
                return
            if stop_task is None and stopped is not None:
                if isinstance(stopped, asyncio.Event):
                    stop_task, owned = asyncio.ensure_future(stopped.wait()), True
                elif asyncio.isfuture(stopped):
                    stop_task = stopped
                else:
                    stop_task, owned = asyncio.ensure_future(stopped), True
            if stop_task is not None:
                await asyncio.wait({stop_task}, timeout=poll_interval)
            else:
                await asyncio.sleep(poll_interval)
    finally:
        if stop_task is not None and owned and not stop_task.done():
            stop_task.cancel()
        cursor.close()


async def follow_logs(path: str, opts: ReadOptions = ReadOptions(), *, follow: bool = False,
                      stopped: Stop = None,
                      poll_interval: float = POLL_INTERVAL) -> AsyncGenerator[LogRecord, None]:
    """``follow_batches``, one record at a time."""
    batches = follow_batches(path, opts, follow=follow, stopped=stopped,
                             poll_interval=poll_interval)
    try:
        async for batch in batches:
            for rec in batch:
                yield rec
    finally:
        await batches.aclose()
