"""The ``.env`` format as Docker Compose v2 reads it, and a service's ``env_file:`` entries.

One statement per ``KEY=VALUE`` (``KEY: VALUE`` too, and an optional ``export``
prefix); ``#`` starts a comment line, and `` #`` ends an unquoted value.
Single-quoted values are literal; double-quoted values understand ``\\n \\t \\\\ \\"``
(and the other C escapes, ``\\$`` meaning a literal ``$``) and then interpolate.
Quoted values may span lines. Unquoted and double-quoted values interpolate
``${VAR}`` forms from the lookup first (the caller's environment), then from the
keys read so far. A ``KEY`` alone on its line takes its value from the lookup,
and is left out when the lookup has none.

Errors are ``ComposeError`` naming the file and the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ketch.compose.errors import ComposeError
from ketch.compose.interpolation import Lookup, TemplateError, substitute
from ketch.gotext import go_quote

# The escapes a double-quoted value understands (Go's rune escapes minus \x \u \U,
# plus \$ and the \0NNN octal form), as Compose does.
_ESCAPE = re.compile(r"\\(?:[abcfnrtv$\"\\]|0[0-7]{0,3})")
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "c": "\\c", "f": "\f", "n": "\n", "r": "\r",
    "t": "\t", "v": "\v", '"': '"', "\\": "\\",
}
# "space" for the key/value separators: not a line break.
_INLINE_SPACE = "\t\v\f\r \x85\xa0"
_EXPORT = re.compile(r"export[\t\v\f\r \x85\xa0]+")


class _DotenvSyntax(Exception):
    """A malformed statement; the caller adds the file name."""


def _expand_escapes(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        seq = match.group(0)
        if seq == "\\$":
            # handed to interpolation as its own escape, so "\$x" stays "$x"
            return "$$"
        if seq.startswith("\\0"):
            return chr(int(seq[2:] or "0", 8))
        return _SIMPLE_ESCAPES.get(seq[1], seq)

    return _ESCAPE.sub(one, value)


class _Parser:
    def __init__(self, text: str, lookup: Lookup, out: dict[str, str]) -> None:
        self.text = text
        self.lookup = lookup
        self.out = out
        self.line = 1

    def _resolve(self, name: str) -> str | None:
        value = self.lookup(name)
        if value is not None:
            return value
        return self.out.get(name)

    def _expand(self, value: str) -> str:
        try:
            # warnings about unset variables are not Compose's business in .env files
            return substitute(value, self._resolve, None)
        except TemplateError as exc:
            raise _DotenvSyntax(f"line {self.line}: {exc}") from None

    def parse(self) -> None:
        pos = 0
        text = self.text
        while True:
            pos = self._statement_start(pos)
            if pos >= len(text):
                return
            pos = self._statement(pos)

    def _statement_start(self, pos: int) -> int:
        text = self.text
        while pos < len(text):
            ch = text[pos]
            if ch == "\n":
                self.line += 1
                pos += 1
            elif ch.isspace():
                pos += 1
            elif ch == "#":
                end = text.find("\n", pos)
                pos = len(text) if end < 0 else end
            else:
                return pos
        return pos

    def _statement(self, pos: int) -> int:
        text = self.text
        export = _EXPORT.match(text, pos)
        if export:
            pos = export.end()
        start = pos
        sep = ""
        while pos < len(text):
            ch = text[pos]
            if ch in "=:\n":
                sep = ch
                break
            if not (ch in _INLINE_SPACE or ch in "_.-[]" or ch.isalnum()):
                first_line = text[start:].split("\n", 1)[0]
                raise _DotenvSyntax(
                    f"line {self.line}: unexpected character {go_quote(ch)} "
                    f"in variable name {go_quote(first_line)}"
                )
            pos += 1
        key = text[start:pos].rstrip()
        if " " in key:
            raise _DotenvSyntax(f"line {self.line}: key cannot contain a space")
        if sep in ("", "\n"):
            # a name alone: inherited from the environment when it has it
            if sep == "\n":
                self.line += 1
            value = self.lookup(key)
            if value is not None:
                self.out[key] = value
            return pos + 1
        pos += 1
        while pos < len(text) and text[pos] in _INLINE_SPACE:
            pos += 1
        value, pos = self._value(pos)
        self.out[key] = value
        return pos

    def _value(self, pos: int) -> tuple[str, int]:
        text = self.text
        quote = text[pos] if pos < len(text) else ""
        if quote not in ("'", '"'):
            end = text.find("\n", pos)
            raw = text[pos:] if end < 0 else text[pos:end]
            raw = raw.split(" #", 1)[0].rstrip()
            value = self._expand(raw)
            self.line += 1
            return value, (len(text) if end < 0 else end + 1)
        chars: list[str] = []
        escaped = False
        start_line = self.line
        i = pos + 1
        while i < len(text):
            ch = text[i]
            if ch == "\n":
                self.line += 1
            if ch != quote:
                if not escaped and ch == "\\":
                    escaped = True
                elif escaped:
                    escaped = False
                    chars.append("\\" + ch)
                else:
                    chars.append(ch)
                i += 1
                continue
            if escaped:
                # an escaped closing quote is part of the value
                escaped = False
                chars.append(ch)
                i += 1
                continue
            value = "".join(chars)
            if quote == '"':
                current, self.line = self.line, start_line
                value = self._expand(_expand_escapes(value))
                self.line = current
            return value, i + 1
        end = text.find("\n", pos)
        shown = text[pos:] if end < 0 else text[pos:end]
        raise _DotenvSyntax(f"line {start_line}: unterminated quoted value {shown}")


def _no_lookup(_name: str) -> str | None:
    return None


def parse_dotenv(
    text: str,
    *,
    lookup: Lookup | None = None,
    into: dict[str, str] | None = None,
    filename: str = "",
) -> dict[str, str]:
    """Parse ``.env`` text; keys go into ``into`` (a new dict by default), which is returned.

    ``lookup`` answers ``${VAR}`` and bare ``KEY`` lines before the keys already read."""
    out: dict[str, str] = {} if into is None else into
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        _Parser(text, lookup or _no_lookup, out).parse()
    except _DotenvSyntax as exc:
        where = f"failed to read {filename}: " if filename else ""
        raise ComposeError(f"{where}{exc}") from None
    return out


def _parse_raw(text: str, lookup: Lookup, out: dict[str, str]) -> None:
    """``format: raw``: ``KEY=VALUE`` lines taken as written (no quotes, no interpolation)."""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep:
            out[key] = value
        else:
            inherited = lookup(key)
            if inherited is not None:
                out[key] = inherited


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except IsADirectoryError:
        raise ComposeError(f"{path} is a directory") from None
    except UnicodeDecodeError as exc:
        raise ComposeError(f"failed to read {path}: {exc}") from None
    except OSError as exc:
        raise ComposeError(f"failed to read {path}: {exc.strerror}") from None


def read_dotenv(
    path: str, *, lookup: Lookup | None = None, into: dict[str, str] | None = None, fmt: str = ""
) -> dict[str, str]:
    """Read one env file (``fmt`` is the ``env_file`` ``format``: "" for ``.env`` rules, or "raw")."""
    out: dict[str, str] = {} if into is None else into
    text = _read_text(path)
    if fmt in ("", ".env"):
        return parse_dotenv(text, lookup=lookup, into=out, filename=path)
    if fmt == "raw":
        _parse_raw(text, lookup or _no_lookup, out)
        return out
    raise ComposeError(f"unsupported env_file format {go_quote(fmt)}")


def project_env_files(paths: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of the project's ``.env`` / ``--env-file`` files, read in order.

    ``${VAR}`` in them looks in ``environ`` (the OS environment) first, then at the keys
    read so far; the caller overlays ``environ`` on the result (the environment wins)."""
    out: dict[str, str] = {}

    def lookup(name: str) -> str | None:
        value = environ.get(name)
        return value if value is not None else out.get(name)

    for given in paths:
        path = os.path.abspath(given)
        if not os.path.exists(path):
            raise ComposeError(f"couldn't find env file: {path}")
        if os.path.isdir(path):
            raise ComposeError(f"{path} is a directory")
        # the lookup already sees `out`, so no need to let the parser see it twice
        parsed = parse_dotenv(_read_text(path), lookup=lookup, filename=path)
        out.update(parsed)
    return out


@dataclass
class EnvFile:
    """One ``env_file:`` entry in its long form."""

    path: str
    required: bool = True
    format: str = ""


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ComposeError(f"{where}: invalid boolean: {value}")


def env_file_entries(value: Any, base_dir: str | None = None, *, where: str = "env_file") -> list[EnvFile]:
    """The ``env_file:`` forms (a string, a list of strings, a list of ``{path, required,
    format}``) as entries; relative paths are joined to ``base_dir`` when it is given."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ComposeError(f"{where} must be a string or a list")
    entries: list[EnvFile] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            entry = EnvFile(item)
        elif isinstance(item, dict):
            path = item.get("path")
            if not isinstance(path, str) or not path:
                raise ComposeError(f"{where}[{i}]: environment path attribute is missing")
            entry = EnvFile(
                path,
                required=_to_bool(item.get("required", True), f"{where}[{i}].required"),
                format=str(item.get("format") or ""),
            )
        else:
            raise ComposeError(f"{where}[{i}] must be a string or a mapping")
        if base_dir is not None:
            entry.path = os.path.join(base_dir, os.path.expanduser(entry.path))
        entries.append(entry)
    return entries


def read_env_files(
    entries: Sequence[EnvFile], lookup: Lookup | None = None
) -> dict[str, str]:
    """The variables of a service's env files, in order (later files win).

    A missing file errors unless ``required: false``. ``lookup`` (Compose: the project
    environment, then the service's ``environment``) answers ``${VAR}`` before the
    keys already read from these files."""
    out: dict[str, str] = {}
    for entry in entries:
        if not os.path.exists(entry.path):
            if entry.required:
                raise ComposeError(
                    f"env file {entry.path} not found: stat {entry.path}: no such file or directory"
                )
            continue
        read_dotenv(entry.path, lookup=lookup, into=out, fmt=entry.format)
    return out

