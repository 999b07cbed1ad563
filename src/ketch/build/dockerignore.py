""".dockerignore: reading the patterns, matching paths, walking a build context.

The semantics are moby's (moby/patternmatcher and its ignorefile reader), so a
context sent by ketch holds exactly the files ``docker build`` would send:

- a line starting with ``#`` is a comment (only at column 0, before trimming);
  blank lines are skipped; patterns are trimmed, cleaned like Go's
  ``filepath.Clean`` and lose a leading ``/``; ``!`` marks an exception;
- ``*`` and ``?`` never cross ``/``, ``[...]`` classes follow Go's
  ``filepath.Match``, ``\\`` escapes, ``**`` spans any number of directories;
- a pattern matching a parent directory matches everything below it, and the
  last matching pattern decides (exceptions re-include).

Matching is done the way moby does it: each pattern becomes a small regular
expression built character by character, with the same quirks (``[`` and ``]``
are passed through to the regular expression as they are).
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from ketch.errors import InvalidArgument

# Go's filepath.ErrBadPattern reads exactly like this; Docker prints it as is.
BAD_PATTERN = "syntax error in pattern"

# Characters with a regexp meaning but none in a filepath pattern (moby escapes
# exactly these; '\\', '[', ']', '*', '?' get their own handling).
_REGEX_ONLY = set(".+()|{}$")

_UTF8_BOM = "\ufeff"


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` on '/'-separated paths (posixpath.normpath keeps '//')."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file's text, as moby's ReadAll returns them."""
    patterns: list[str] = []
    # bufio.Scanner splits on '\n' and drops one '\r' before it.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines):
        line = raw[:-1] if raw.endswith("\r") else raw
        if number == 0 and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM) :]
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def read_file(path: Path) -> list[str]:
    """The patterns of an ignore file; a missing file means no patterns."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return read_patterns(data.decode("utf-8", errors="surrogateescape"))


def ignore_file_for(context_dir: Path, dockerfile: Path | None = None) -> Path | None:
    """The ignore file that applies: ``<Dockerfile name>.dockerignore`` next to the
    Dockerfile wins over the context's ``.dockerignore`` (BuildKit's rule)."""
    if dockerfile is not None:
        specific = dockerfile.parent / (dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    default = context_dir / ".dockerignore"
    if default.is_file():
        return default
    return None


def _validate(pattern: str) -> None:
    """Reject what Go's filepath.Match rejects anywhere in the pattern."""
    i, n = 0, len(pattern)

    def class_char(j: int) -> int:
        # One character of a class: '\\'-escaped or anything but '-' and ']'.
        if j >= n or pattern[j] in "-]":
            raise InvalidArgument(BAD_PATTERN)
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                raise InvalidArgument(BAD_PATTERN)
        return j + 1

    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise InvalidArgument(BAD_PATTERN)
            i += 2
        elif ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and pattern[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = class_char(i)
                if i < n and pattern[i] == "-":
                    i = class_char(i + 1)
                ranges += 1
        else:
            i += 1


_EXACT, _PREFIX, _SUFFIX, _REGEX = "exact", "prefix", "suffix", "regex"


class Pattern:
    """One cleaned pattern; ``exclusion`` is true for a ``!`` exception.

    A plain class, not a dataclass: ``ketch build`` imports this at start-up, and
    dataclasses costs it ~10 ms (it imports inspect).
    """

    __slots__ = ("text", "exclusion", "_kind", "_regex", "_broken")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        self._kind: str | None = None
        self._regex: re.Pattern[str] | None = None
        self._broken = False

    def __repr__(self) -> str:
        return f"Pattern(text={self.text!r}, exclusion={self.exclusion!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and (self.text, self.exclusion) == (
            other.text, other.exclusion)

    __hash__ = None  # type: ignore[assignment]

    def _compile(self) -> None:
        # Built as moby builds its regexp, so the same patterns mean the same.
        regex = "^"
        kind = _EXACT
        text = self.text
        i, n, step = 0, len(text), 0
        while i < n:
            ch = text[i]
            i += 1
            if ch == "*":
                if i < n and text[i] == "*":
                    i += 1
                    if i < n and text[i] == "/":
                        i += 1  # "**/" is the same as "**"
                    if i >= n:
                        if kind == _EXACT:
                            kind = _PREFIX
                        else:
                            regex += ".*"
                            kind = _REGEX
                    else:
                        regex += "(.*/)?"
                        kind = _REGEX
                    if step == 0:
                        kind = _SUFFIX
                else:
                    regex += "[^/]*"
                    kind = _REGEX
            elif ch == "?":
                regex += "[^/]"
                kind = _REGEX
            elif ch in _REGEX_ONLY:
                regex += "\\" + ch
            elif ch == "\\":
                if i < n:
                    regex += "\\" + text[i]
                    i += 1
                    kind = _REGEX
                else:
                    regex += "\\\\"
            elif ch in "[]":
                regex += ch
                kind = _REGEX
            else:
                regex += ch
            step += 1
        if kind == _REGEX:
            try:
                # Python warns about "[[" and "--" in classes; RE2 reads them
                # the same way Python still does.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    self._regex = re.compile(regex + r"\Z")
            except re.error:
                self._broken = True
        self._kind = kind

    def match(self, path: str) -> bool:
        """Whether this pattern alone matches the slash-separated ``path``."""
        if self._kind is None:
            self._compile()
        if self._broken:
            raise InvalidArgument(BAD_PATTERN)
        if self._kind == _EXACT:
            return path == self.text
        if self._kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self._kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            # "**/foo" also matches "foo" itself.
            return suffix.startswith("/") and path == suffix[1:]
        assert self._regex is not None
        return self._regex.match(path) is not None


class Matcher:
    """An ordered list of patterns; ``matches(path)`` means "leave it out"."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise InvalidArgument('illegal exclusion pattern: "!"')
                text = text[1:]
            _validate(text)
            self.patterns.append(Pattern(text, exclusion))

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """True when ``path`` (slash-separated, relative to the context) is excluded."""
        path = clean(path)
        if path == ".":
            return False  # the context itself is never excluded
        parent = path.rsplit("/", 1)[0] if "/" in path else "."
        parents = parent.split("/") if parent != "." else []
        matched = False
        for pattern in self.patterns:
            # An exception only matters once something matched, and a plain
            # pattern only when nothing did: the last deciding pattern wins.
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit:
                for depth in range(1, len(parents) + 1):
                    if pattern.match("/".join(parents[:depth])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def matches_below(self, path: str, parent: list[bool] | None) -> tuple[bool, list[bool]]:
        """Match ``path`` reusing its parent directory's per-pattern results, as
        moby's MatchesUsingParentResults does during a walk (``parent`` is None
        for an entry at the top). Returns the decision and this path's results."""
        matched = False
        results = [False] * len(self.patterns)
        for index, pattern in enumerate(self.patterns):
            hit = parent[index] if parent is not None else False
            if not hit:
                if pattern.exclusion != matched:
                    continue
                hit = pattern.match(path)
                if not hit and parent is None and "/" in path:
                    parents = path.split("/")[:-1]
                    hit = any(
                        pattern.match("/".join(parents[:depth]))
                        for depth in range(1, len(parents) + 1)
                    )
            results[index] = hit
            if hit:
                matched = not pattern.exclusion
        return matched, results

    def may_reinclude_below(self, directory: str) -> bool:
        """Whether an exception could re-include something inside the excluded
        ``directory``. BuildKit's rule: any exception with a wildcard (besides a
        trailing ``/*`` or ``/**``) could match anywhere; otherwise an exception
        must name a path inside the directory."""
        exceptions = [_without_trailing_glob(p.text) for p in self.patterns if p.exclusion]
        if any(any(c in _GLOB_CHARS for c in text) for text in exceptions):
            return True
        prefix = directory + "/"
        return any((text + "/").startswith(prefix) for text in exceptions)


_GLOB_CHARS = set("*[]?^\\")


def _without_trailing_glob(text: str) -> str:
    for suffix in ("/**", "/*"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return text


def keep_build_files(patterns: list[str], dockerfile: str | None) -> list[str]:
    """The patterns plus exceptions that keep ``.dockerignore`` and the Dockerfile
    (the docker CLI sends both even when the ignore file names them)."""
    result = list(patterns)
    matcher = Matcher(result)
    if matcher.matches(".dockerignore"):
        result.append("!.dockerignore")
    if dockerfile is not None:
        name = dockerfile.replace(os.sep, "/")
        if Matcher(result).matches(name):
            result.append("!" + name)
    return result


def walk_context(
    context_dir: Path, patterns: Iterable[str], dockerfile: str | None = "Dockerfile"
) -> Iterator[str]:
    """The slash-separated relative paths to send, in lexical order, parents
    before children. Symlinks are yielded as links, never followed. An excluded
    directory is only entered when an exception could re-include something in it;
    it is then sent only if something below it is (just before that entry), as
    BuildKit does. ``dockerfile`` is the Dockerfile's path inside the context
    (None when it is not in the context)."""
    matcher = Matcher(keep_build_files(list(patterns), dockerfile))
    yield from _walk(context_dir, "", matcher, None, [])


def _walk(
    base: Path, rel: str, matcher: Matcher, parent: list[bool] | None, pending: list[str]
) -> Iterator[str]:
    """``pending`` holds the excluded ancestors entered but not sent yet; it is
    shared down the recursion and emptied once one of them is sent."""
    directory = base / rel if rel else base
    with os.scandir(directory) as entries:
        # Go walks names in byte order.
        names = sorted(((e.name, e) for e in entries), key=lambda item: os.fsencode(item[0]))
    for name, entry in names:
        path = f"{rel}/{name}" if rel else name
        is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
        excluded, results = matcher.matches_below(path, parent)
        if excluded:
            if is_dir and matcher.may_reinclude_below(path):
                pending.append(path)
                yield from _walk(base, path, matcher, results, pending)
                if pending and pending[-1] == path:
                    pending.pop()  # nothing below it was sent
            continue
        yield from pending
        pending.clear()
        yield path
        if is_dir:
            yield from _walk(base, path, matcher, results, pending)
