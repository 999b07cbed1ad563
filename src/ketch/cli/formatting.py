"""Output formatting as the docker CLI does it: ``--format`` templates, tables, units.

What lives here, each written to print byte for byte what docker 28 prints:

- ``parse``/``Template``: the part of Go's ``text/template`` that docker's
  ``--format`` uses, with docker's extra functions (``json``, ``join``,
  ``split``, ``title``, ``lower``, ``upper``, ``pad``, ``truncate``) and Go's
  builtins (``and or not len index slice print printf println eq ne lt le gt
  ge html urlquery call``). Values are what JSON decodes to: dict, list, str,
  int, float, bool, None; a dict value that is callable acts as a Go method
  (``{{.Label "x"}}``). ``Struct`` marks the row objects of a listing, which
  docker renders from Go structs: an unknown field is an error there and
  ``{{json .}}`` sorts and HTML-escapes their keys, as docker's MarshalJSON.
- ``render``: docker's ``formatter.Context.Write``: ``table ...`` (header row
  plus Go's ``tabwriter`` with minwidth 10, padding 3), ``json``, or any
  template applied to each row.
- ``inspect_json``/``inspect_format``/``check_inspect_format``: ``docker
  inspect`` output; ``format_object``: ``docker version``/``info --format``.
- go-units (``human_size``, ``bytes_size``, ``human_duration``, ``since``,
  ``parse_size``), ``truncate_id`` and ``ellipsis``.

Messages are Go's own ("template: :1: function \"foo\" not defined"); the
commands prefix "template parsing error: " as docker does (``TemplateError``).

The CLI imports this on every listing, so it pulls in nothing beyond the
builtins at import time; ``unicodedata`` and ``urllib`` load on first use.
"""

from __future__ import annotations

import time

from ketch.cli.flags import go_quote
from ketch.errors import InvalidArgument
from ketch.units import human_duration, human_size, human_size_precision

# typing and collections.abc cost milliseconds at start-up; annotations only need them
# for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

__all__ = [
    "MISSING",
    "Struct",
    "Template",
    "TemplateError",
    "bytes_size",
    "check_inspect_format",
    "compile_format",
    "display_width",
    "docker_size",
    "ellipsis",
    "format_object",
    "go_float",
    "go_json",
    "go_quote",
    "go_time",
    "go_time_rfc3339",
    "go_zone",
    "human_duration",
    "human_size",
    "human_size_precision",
    "inspect_format",
    "inspect_json",
    "parse",
    "parse_size",
    "render",
    "resolve_format",
    "since",
    "tabwrite",
    "truncate_id",
]


# --------------------------------------------------------------------------- errors


class TemplateError(InvalidArgument):
    """A template failed to parse or to execute.

    ``str()`` is the full message docker prints ("template parsing error:
    template: :1: ..."); ``go_message`` is Go's error text alone, for the
    commands (``docker version``) that print it without the prefix;
    ``exit_code`` is the status docker exits with (64 for ``inspect``'s parse
    errors, else 1).
    """

    local = True  # found by the CLI itself: printed without "Error response from daemon"

    def __init__(self, go_message: str, *, prefix: str = "template parsing error: ",
                 exit_code: int = 1, parse_error: bool = True) -> None:
        super().__init__(prefix + go_message)
        self.go_message = go_message
        self.exit_code = exit_code
        self.parse_error = parse_error


class _ExecError(Exception):
    """Raised inside execution; carries Go's text without the location."""

    def __init__(self, message: str, node: _Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


class _Missing:
    """Go's invalid reflect.Value: a missing map key. Prints "<no value>"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class Struct(dict):  # type: ignore[type-arg]
    """A row object that docker renders from a Go struct (``*formatter.imageContext``).

    In templates an unknown field is an error ("can't evaluate field Foo in
    type *formatter.imageContext"); ``{{json .}}`` gives its fields sorted
    and HTML-escaped, leaving out callables (Go methods with arguments), as
    docker's ``MarshalJSON`` of its format contexts does.
    """

    __slots__ = ("go_type", "marshal")

    def __init__(self, go_type: str, fields: Mapping[str, Any] | None = None, *,
                 marshal: bool = True) -> None:
        super().__init__(fields or ())
        self.go_type = go_type
        # False for a plain Go struct (no MarshalJSON): JSON keeps field order.
        self.marshal = marshal


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# --------------------------------------------------------------------------- Go values


def _type_name(v: Any) -> str:
    """Go's name of the type a JSON-ish value would have (for messages)."""
    if isinstance(v, Struct):
        return v.go_type
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "map[string]interface {}"
    if isinstance(v, (list, tuple)):
        return "[]string" if v and all(isinstance(e, str) for e in v) else "[]interface {}"
    if v is None:
        return "<nil>"
    if callable(v):
        return "func"
    return type(v).__name__


def _float_digits(f: float) -> tuple[str, int]:
    """Shortest decimal digits of abs(f) and the decimal point position: f = 0.DIGITS x 10^dp."""
    r = repr(abs(f))
    mant, _, exp = r.partition("e")
    e = int(exp) if exp else 0
    intpart, _, frac = mant.partition(".")
    digits = (intpart + frac).lstrip("0")
    lead = len(intpart + frac) - len((intpart + frac).lstrip("0"))
    dp = len(intpart) - lead + e
    digits = digits.rstrip("0")
    if not digits:
        return "0", 1
    return digits, dp


def _fmt_e(neg: bool, digits: str, dp: int, min_exp_digits: int = 2) -> str:
    exp = dp - 1
    s = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if exp < 0 else "+"
    return ("-" if neg else "") + s + "e" + sign + str(abs(exp)).rjust(min_exp_digits, "0")


def _fmt_f(neg: bool, digits: str, dp: int) -> str:
    if dp <= 0:
        s = "0." + "0" * (-dp) + digits
    elif dp >= len(digits):
        s = digits + "0" * (dp - len(digits))
    else:
        s = digits[:dp] + "." + digits[dp:]
    return ("-" if neg else "") + s


def go_float(f: float) -> str:
    """Go's ``%v`` of a float64 (strconv 'g', shortest): 1e+06, 1.5, 1.23456789e+08."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    digits, dp = _float_digits(f)
    exp = dp - 1
    # strconv's shortest 'g' switches to exponent form outside [1e-4, 1e6).
    if exp < -4 or exp >= 6:
        return _fmt_e(f < 0, digits, dp)
    return _fmt_f(f < 0, digits, dp)


def _go_json_float(f: float) -> str:
    """encoding/json's float64: fixed notation unless < 1e-6 or >= 1e21, then e-7 (no zero pad)."""
    if f != f or f in (float("inf"), float("-inf")):
        raise _ExecError(f"json: unsupported value: {go_float(f)}")
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    digits, dp = _float_digits(f)
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        return _fmt_e(f < 0, digits, dp, 1)
    return _fmt_f(f < 0, digits, dp)


def _go_print(v: Any) -> str:
    """fmt's ``%v`` of a value as text/template prints it."""
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, dict):
        if _looks_like_struct(v):
            # Docker's API objects are Go structs there, which print as {v1 v2 ...}.
            return "{" + " ".join(_go_print(x) for x in v.values() if not callable(x)) + "}"
        items = sorted((k, x) for k, x in v.items() if not callable(x)) if _sortable(v) else \
            [(k, x) for k, x in v.items() if not callable(x)]
        return "map[" + " ".join(f"{_go_print(k)}:{_go_print(x)}" for k, x in items) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_go_print(e) for e in v) + "]"
    return str(v)


def _looks_like_struct(m: Mapping[Any, Any]) -> bool:
    """A dict of Go struct fields (exported names), not a map such as Labels."""
    if not m or isinstance(m, Struct):
        return False
    if all(isinstance(x, str) for x in m.values()):
        return False
    return all(isinstance(k, str) and k[:1].isascii() and k[:1].isupper() for k in m)


def _sortable(m: Mapping[Any, Any]) -> bool:
    kinds = {type(k) for k in m}
    return len(kinds) <= 1


def _truth(v: Any) -> bool:
    """text/template's isTrue: zero values and empty containers are false."""
    if v is MISSING or v is None:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


# --------------------------------------------------------------------------- Go JSON


_HTML_ESC = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\b": "\\b", "\f": "\\f", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_str(s: str, escape_html: bool) -> str:
    out = ['"']
    start = 0
    for i, ch in enumerate(s):
        o = ord(ch)
        if o >= 0x20 and ch not in _JSON_ESC and not (escape_html and ch in _HTML_ESC) \
                and not 0xD800 <= o <= 0xDFFF:
            continue
        out.append(s[start:i])
        if ch in _JSON_ESC:
            out.append(_JSON_ESC[ch])
        elif escape_html and ch in _HTML_ESC:
            out.append(_HTML_ESC[ch])
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")  # Go replaces invalid UTF-8 (lone surrogates here)
        else:
            out.append(f"\\u{o:04x}")
        start = i + 1
    out.append(s[start:])
    out.append('"')
    return "".join(out)


def go_json(v: Any, *, escape_html: bool = False, indent: str | None = None,
            sort_keys: bool = False) -> str:
    """JSON the way Go's encoding/json writes it.

    Compact by default (``json.Marshal``); ``indent`` gives ``MarshalIndent``
    with that unit (empty containers stay ``[]``/``{}``). Go escapes <, >, &
    as \\u003c... when ``escape_html``, always U+2028/U+2029, and writes
    floats as 1e-7 / 100000 rather than Python's 1e-07 / 1e+16. A ``Struct``
    is encoded as docker's MarshalJSON does: keys sorted, HTML escaped.
    """
    parts: list[str] = []
    _json_enc(v, parts, escape_html, indent, sort_keys, 0)
    return "".join(parts)


def _json_enc(v: Any, out: list[str], esc: bool, indent: str | None, sort: bool,
              depth: int) -> None:
    if v is None or v is MISSING:
        out.append("null")
    elif isinstance(v, str):
        out.append(_json_str(v, esc))
    elif isinstance(v, bool):
        out.append("true" if v else "false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        out.append(_go_json_float(v))
    elif isinstance(v, dict):
        if isinstance(v, Struct) and v.marshal:
            esc, sort = True, True
        items = [(str(k), x) for k, x in v.items() if not callable(x)]
        if sort:
            items.sort()
        if not items:
            out.append("{}")
            return
        out.append("{")
        for n, (k, x) in enumerate(items):
            if n:
                out.append(",")
            if indent is not None:
                out.append("\n" + indent * (depth + 1))
            out.append(_json_str(k, esc))
            out.append(": " if indent is not None else ":")
            _json_enc(x, out, esc, indent, sort, depth + 1)
        if indent is not None:
            out.append("\n" + indent * depth)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        if not v:
            out.append("[]")
            return
        out.append("[")
        for n, x in enumerate(v):
            if n:
                out.append(",")
            if indent is not None:
                out.append("\n" + indent * (depth + 1))
            _json_enc(x, out, esc, indent, sort, depth + 1)
        if indent is not None:
            out.append("\n" + indent * depth)
        out.append("]")
    else:
        raise _ExecError(f"json: unsupported type: {_type_name(v)}")


# --------------------------------------------------------------------------- lexer

# Token kinds.
_T_TEXT, _T_LEFT, _T_RIGHT, _T_SPACE, _T_FIELD, _T_VAR, _T_DOT, _T_IDENT = range(8)
_T_STRING, _T_RAW, _T_CHAR, _T_NUMBER, _T_BOOL, _T_NIL, _T_LPAREN, _T_RPAREN = range(8, 16)
_T_PIPE, _T_DECLARE, _T_ASSIGN, _T_CHARTOK, _T_EOF, _T_ERROR, _T_KEYWORD = range(16, 23)

_KEYWORDS = frozenset(("if", "else", "end", "range", "with", "template", "define", "block",
                       "break", "continue"))
_SPACE = " \t\r\n"


class _Tok:
    __slots__ = ("kind", "pos", "val", "line")

    def __init__(self, kind: int, pos: int, val: str, line: int) -> None:
        self.kind, self.pos, self.val, self.line = kind, pos, val, line

    def __str__(self) -> str:
        # Go's item.String(), used in "unexpected ... in ..." messages.
        if self.kind == _T_EOF:
            return "EOF"
        if self.kind == _T_ERROR:
            return self.val
        if self.kind in (_T_KEYWORD, _T_DOT, _T_NIL):
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _is_alnum(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdigit()


def _lex(text: str) -> list[_Tok]:
    """Split a template into tokens; a lexing error ends the list with an error token."""
    toks: list[_Tok] = []
    n = len(text)
    pos = 0
    line = 1

    def add(kind: int, start: int, val: str) -> None:
        toks.append(_Tok(kind, start, val, line))

    while True:
        i = text.find("{{", pos)
        if i < 0:
            if pos < n:
                add(_T_TEXT, pos, text[pos:])
            add(_T_EOF, n, "")
            return toks
        # "{{- " trims the white space before the action ("-" then a space).
        trim_left = text[i + 2:i + 3] == "-" and i + 3 < n and text[i + 3] in _SPACE
        chunk = text[pos:i]
        if trim_left:
            chunk = chunk.rstrip(_SPACE)
        if chunk:
            add(_T_TEXT, pos, chunk)
        line += text.count("\n", pos, i)
        j = i + 2 + (2 if trim_left else 0)
        if text.startswith("/*", j):
            end = text.find("*/", j + 2)
            if end < 0:
                add(_T_ERROR, i, "unclosed comment")
                return toks
            line += text.count("\n", j, end)
            k = end + 2
            trim_right = False
            if k < n and text[k] in _SPACE and text[k + 1:k + 2] == "-" \
                    and text.startswith("}}", k + 2):
                trim_right = True
                k += 2
            if not text.startswith("}}", k):
                add(_T_ERROR, i, "comment ends before closing delimiter")
                return toks
            pos = k + 2
            if trim_right:
                while pos < n and text[pos] in _SPACE:
                    if text[pos] == "\n":
                        line += 1
                    pos += 1
            continue
        add(_T_LEFT, i, "{{")
        pos = j
        depth = 0
        # Inside the action.
        while True:
            if pos >= n:
                add(_T_ERROR, pos, "unclosed action")
                return toks
            trim_right = text[pos] in _SPACE and text[pos + 1:pos + 2] == "-" \
                and text.startswith("}}", pos + 2)
            if trim_right or text.startswith("}}", pos):
                if depth:
                    add(_T_ERROR, pos, "unclosed left paren")
                    return toks
                if trim_right:
                    pos += 2
                add(_T_RIGHT, pos, "}}")
                pos += 2
                if trim_right:
                    while pos < n and text[pos] in _SPACE:
                        if text[pos] == "\n":
                            line += 1
                        pos += 1
                break
            ch = text[pos]
            start = pos
            if ch in _SPACE:
                while pos < n and text[pos] in _SPACE and not (
                        text[pos + 1:pos + 2] == "-" and text.startswith("}}", pos + 2)):
                    if text[pos] == "\n":
                        line += 1
                    pos += 1
                if pos == start:  # a lone space that starts " -}}"
                    pos += 1
                    continue
                add(_T_SPACE, start, text[start:pos])
            elif ch == ":":
                if text[pos + 1:pos + 2] != "=":
                    add(_T_ERROR, pos, "expected :=")
                    return toks
                pos += 2
                add(_T_DECLARE, start, ":=")
            elif ch == "=":
                pos += 1
                add(_T_ASSIGN, start, "=")
            elif ch == "|":
                pos += 1
                add(_T_PIPE, start, "|")
            elif ch in "\"'":
                pos += 1
                while True:
                    c = text[pos] if pos < n else ""
                    if c == "\\":
                        if pos + 1 >= n or text[pos + 1] == "\n":
                            c = ""
                        else:
                            pos += 2
                            continue
                    if c in ("", "\n"):
                        add(_T_ERROR, start, "unterminated quoted string" if ch == '"'
                            else "unterminated character constant")
                        return toks
                    pos += 1
                    if c == ch:
                        break
                add(_T_STRING if ch == '"' else _T_CHAR, start, text[start:pos])
            elif ch == "`":
                end = text.find("`", pos + 1)
                if end < 0:
                    add(_T_ERROR, start, "unterminated raw quoted string")
                    return toks
                line_add = text.count("\n", pos, end)
                pos = end + 1
                add(_T_RAW, start, text[start:pos])
                line += line_add
            elif ch in "$." and not (ch == "." and text[pos + 1:pos + 2].isdigit()):
                pos += 1
                while pos < n and _is_alnum(text[pos]):
                    pos += 1
                word = text[start:pos]
                if not _at_terminator(text, pos):
                    add(_T_ERROR, start, f"bad character {_go_u(text[pos])}")
                    return toks
                add(_T_DOT if word == "." else (_T_VAR if ch == "$" else _T_FIELD), start, word)
            elif ch in "+-." or ch.isdigit():
                pos = _scan_number(text, pos)
                if pos < 0:
                    add(_T_ERROR, start, "bad number syntax: " + go_quote(text[start:-pos - 1]))
                    return toks
                add(_T_NUMBER, start, text[start:pos])
            elif _is_alnum(ch):
                while pos < n and _is_alnum(text[pos]):
                    pos += 1
                word = text[start:pos]
                if not _at_terminator(text, pos):
                    add(_T_ERROR, start, f"bad character {_go_u(text[pos])}")
                    return toks
                if word in _KEYWORDS:
                    add(_T_KEYWORD, start, word)
                elif word in ("true", "false"):
                    add(_T_BOOL, start, word)
                elif word == "nil":
                    add(_T_NIL, start, word)
                else:
                    add(_T_IDENT, start, word)
            elif ch == "(":
                pos += 1
                depth += 1
                add(_T_LPAREN, start, "(")
            elif ch == ")":
                pos += 1
                depth -= 1
                if depth < 0:
                    add(_T_ERROR, start, "unexpected right paren")
                    return toks
                add(_T_RPAREN, start, ")")
            elif ch.isascii() and ch.isprintable():
                pos += 1
                add(_T_CHARTOK, start, ch)
            else:
                add(_T_ERROR, start, f"unrecognized character in action: {_go_u(ch)}")
                return toks


def _at_terminator(text: str, pos: int) -> bool:
    if pos >= len(text):
        return True
    return text[pos] in " \t\r\n.,|:)(}"


def _go_u(ch: str) -> str:
    """Go's %#U: U+0029 ')'."""
    return f"U+{ord(ch):04X} '{ch}'" if ch.isprintable() else f"U+{ord(ch):04X}"


def _scan_number(text: str, pos: int) -> int:
    """Go's lexer scanNumber; returns the end, or -(end+1) for bad syntax."""
    n = len(text)

    def accept(valid: str) -> bool:
        nonlocal pos
        if pos < n and text[pos] in valid:
            pos += 1
            return True
        return False

    def run(valid: str) -> None:
        nonlocal pos
        while pos < n and text[pos] in valid:
            pos += 1

    accept("+-")
    digits = "0123456789_"
    if accept("0"):
        if accept("xX"):
            digits = "0123456789abcdefABCDEF_"
        elif accept("oO"):
            digits = "01234567_"
        elif accept("bB"):
            digits = "01_"
    run(digits)
    if accept("."):
        run(digits)
    if len(digits) == 11 and accept("eE"):
        accept("+-")
        run("0123456789_")
    if len(digits) == 23 and accept("pP"):
        accept("+-")
        run("0123456789_")
    accept("i")
    if pos < n and _is_alnum(text[pos]):
        return -(pos + 2)
    return pos


def _unquote(tok: str) -> str:
    """strconv.Unquote for "..." and `...` literals."""
    if tok[0] == "`":
        return tok[1:-1].replace("\r", "")
    body = tok[1:-1]
    out: list[str] = []
    i = 0
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", '"': '"', "'": "'"}
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        e = body[i + 1]
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            hexs = body[i + 2:i + 2 + width]
            if len(hexs) != width or any(c not in "0123456789abcdefABCDEF" for c in hexs):
                raise ValueError("invalid syntax")
            out.append(chr(int(hexs, 16)))
            i += 2 + width
        elif e in "01234567":
            octs = body[i + 1:i + 4]
            if len(octs) != 3 or any(c not in "01234567" for c in octs):
                raise ValueError("invalid syntax")
            out.append(chr(int(octs, 8)))
            i += 4
        else:
            raise ValueError("invalid syntax")
    return "".join(out)


# --------------------------------------------------------------------------- parse tree


class _Node:
    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


class _Text(_Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return go_quote(self.text)


class _ListNode(_Node):
    __slots__ = ("nodes",)

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.nodes: list[_Node] = []

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class _Field(_Node):
    __slots__ = ("idents",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.idents = name[1:].split(".")

    def __str__(self) -> str:
        return "." + ".".join(self.idents)


class _Variable(_Node):
    __slots__ = ("idents",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.idents = name.split(".")

    def __str__(self) -> str:
        return ".".join(self.idents)


class _Identifier(_Node):
    __slots__ = ("name",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.name = name

    def __str__(self) -> str:
        return self.name


class _Dot(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "."


class _Nil(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "nil"


class _Bool(_Node):
    __slots__ = ("value",)

    def __init__(self, pos: int, value: bool) -> None:
        super().__init__(pos)
        self.value = value

    def __str__(self) -> str:
        return "true" if self.value else "false"


class _Number(_Node):
    __slots__ = ("text", "ival", "fval", "is_float")

    def __init__(self, pos: int, text: str, ival: int | None, fval: float | None,
                 is_float: bool) -> None:
        super().__init__(pos)
        self.text, self.ival, self.fval, self.is_float = text, ival, fval, is_float

    def __str__(self) -> str:
        return self.text


class _String(_Node):
    __slots__ = ("quoted", "text")

    def __init__(self, pos: int, quoted: str, text: str) -> None:
        super().__init__(pos)
        self.quoted, self.text = quoted, text

    def __str__(self) -> str:
        return self.quoted


class _Pipe(_Node):
    __slots__ = ("decl", "is_assign", "cmds")

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.decl: list[_Variable] = []
        self.is_assign = False
        self.cmds: list[_Command] = []

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class _Command(_Node):
    __slots__ = ("args",)

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.args: list[_Node] = []

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, _Pipe) else str(a) for a in self.args)


class _Chain(_Node):
    __slots__ = ("node", "fields")

    def __init__(self, pos: int, node: _Node) -> None:
        super().__init__(pos)
        self.node = node
        self.fields: list[str] = []

    def __str__(self) -> str:
        base = f"({self.node})" if isinstance(self.node, _Pipe) else str(self.node)
        return base + "".join("." + f for f in self.fields)


class _Action(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: _Pipe) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class _Branch(_Node):
    """if, with and range."""

    __slots__ = ("kind", "pipe", "list", "else_list")

    def __init__(self, kind: str, pos: int, pipe: _Pipe, body: _ListNode,
                 else_list: _ListNode | None) -> None:
        super().__init__(pos)
        self.kind, self.pipe, self.list, self.else_list = kind, pipe, body, else_list

    def __str__(self) -> str:
        s = "{{" + self.kind + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


class _Loop(_Node):
    """break and continue."""

    __slots__ = ("word",)

    def __init__(self, pos: int, word: str) -> None:
        super().__init__(pos)
        self.word = word

    def __str__(self) -> str:
        return "{{" + self.word + "}}"


class _TemplateCall(_Node):
    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: _Pipe | None) -> None:
        super().__init__(pos)
        self.name, self.pipe = name, pipe

    def __str__(self) -> str:
        if self.pipe is None:
            return "{{template " + go_quote(self.name) + "}}"
        return "{{template " + go_quote(self.name) + " " + str(self.pipe) + "}}"


class _End(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{end}}"


class _Else(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{else}}"


# --------------------------------------------------------------------------- parser


class _ParseError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class _Parser:
    def __init__(self, text: str, funcs: Mapping[str, Any]) -> None:
        self.toks = _lex(text)
        self.i = 0
        self.funcs = funcs
        self.vars = ["$"]
        self.range_depth = 0
        self.line = 1
        self.defs: dict[str, _ListNode] = {}

    # Token access. Space tokens are significant only right after a variable.
    def next(self) -> _Tok:
        t = self.toks[self.i]
        if self.i < len(self.toks) - 1:
            self.i += 1
        self.line = t.line
        return t

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next_non_space(self) -> _Tok:
        t = self.next()
        while t.kind == _T_SPACE:
            t = self.next()
        return t

    def peek_non_space(self) -> _Tok:
        j = self.i
        while self.toks[j].kind == _T_SPACE:
            j += 1
        return self.toks[j]

    def skip_space(self) -> None:
        while self.toks[self.i].kind == _T_SPACE:
            self.i += 1

    def error(self, message: str, tok: _Tok | None = None) -> _ParseError:
        return _ParseError(message, tok.line if tok is not None else self.line)

    def unexpected(self, tok: _Tok, context: str) -> _ParseError:
        if tok.kind == _T_ERROR:
            return self.error(tok.val, tok)
        return self.error(f"unexpected {tok} in {context}", tok)

    def expect(self, kind: int, context: str) -> _Tok:
        t = self.next_non_space()
        if t.kind != kind:
            raise self.unexpected(t, context)
        return t

    # Grammar.
    def parse(self) -> _ListNode:
        root = _ListNode(0)
        while self.peek().kind != _T_EOF:
            if self.peek().kind == _T_LEFT:
                j = self.i + 1
                while self.toks[j].kind == _T_SPACE:
                    j += 1
                if self.toks[j].kind == _T_KEYWORD and self.toks[j].val == "define":
                    self.i = j + 1
                    self.define()
                    continue
            n = self.text_or_action()
            if isinstance(n, (_End, _Else)):
                raise self.error(f"unexpected {n}")
            root.nodes.append(n)
        return root

    def define(self) -> None:
        """{{define "name"}}...{{end}}: a named template for {{template}}."""
        name_tok = self.next_non_space()
        if name_tok.kind not in (_T_STRING, _T_RAW):
            raise self.unexpected(name_tok, "define clause")
        self.expect(_T_RIGHT, "define clause")
        mark = self.vars
        self.vars = ["$"]
        body, nxt = self.item_list()
        self.vars = mark
        if not isinstance(nxt, _End):
            raise self.error(f"unexpected {nxt} in define clause")
        self.defs[_unquote(name_tok.val)] = body

    def text_or_action(self) -> _Node:
        t = self.next_non_space()
        if t.kind == _T_TEXT:
            return _Text(t.pos, t.val)
        if t.kind == _T_LEFT:
            return self.action()
        raise self.unexpected(t, "input")

    def action(self) -> _Node:
        save = self.i
        t = self.next_non_space()
        if t.kind == _T_KEYWORD:
            w = t.val
            if w == "if" or w == "with" or w == "range":
                return self.control(w, t)
            if w == "else":
                p = self.peek_non_space()
                if p.kind == _T_KEYWORD and p.val in ("if", "with"):
                    return _Else(p.pos)
                return _Else(self.expect(_T_RIGHT, "else").pos)
            if w == "end":
                return _End(self.expect(_T_RIGHT, "end").pos)
            if w in ("break", "continue"):
                self.expect(_T_RIGHT, "{{" + w + "}}")
                if self.range_depth == 0:
                    raise self.error(f"{{{{{w}}}}} outside {{{{range}}}}", t)
                return _Loop(t.pos, w)
            if w in ("template", "block"):
                context = w + " clause"
                name_tok = self.next_non_space()
                if name_tok.kind not in (_T_STRING, _T_RAW):
                    raise self.unexpected(name_tok, context)
                pipe = None
                if self.peek_non_space().kind == _T_RIGHT:
                    self.next_non_space()
                else:
                    pipe = self.pipeline(context, _T_RIGHT)
                name = _unquote(name_tok.val)
                if w == "block":
                    # {{block "n" .}}body{{end}} defines "n" and calls it in place.
                    mark = self.vars
                    self.vars = ["$"]
                    body, nxt = self.item_list()
                    self.vars = mark
                    if not isinstance(nxt, _End):
                        raise self.error(f"unexpected {nxt} in block clause")
                    self.defs[name] = body
                return _TemplateCall(name_tok.pos, name, pipe)
            raise self.error(f"{{{{{w}}}}} is not supported by ketch", t)
        self.i = save
        start = self.peek_non_space()
        return _Action(start.pos, self.pipeline("command", _T_RIGHT))

    def control(self, kind: str, tok: _Tok) -> _Node:
        mark = len(self.vars)
        pipe = self.pipeline(kind, _T_RIGHT)
        if kind == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(nxt, _Else):
            p = self.peek_non_space()
            if kind in ("if", "with") and p.kind == _T_KEYWORD and p.val == kind:
                kw = self.next_non_space()
                else_list = _ListNode(nxt.pos)
                else_list.nodes.append(self.control(kind, kw))
            else:
                else_list, nxt = self.item_list()
                if not isinstance(nxt, _End):
                    raise self.error(f"expected end; found {nxt}")
        del self.vars[mark:]
        return _Branch(kind, pipe.pos, pipe, body, else_list)

    def item_list(self) -> tuple[_ListNode, _Node]:
        lst = _ListNode(self.peek_non_space().pos)
        while self.peek_non_space().kind != _T_EOF:
            n = self.text_or_action()
            if isinstance(n, (_End, _Else)):
                return lst, n
            lst.nodes.append(n)
        raise self.error("unexpected EOF", self.peek_non_space())

    def pipeline(self, context: str, end: int) -> _Pipe:
        pipe = _Pipe(self.peek_non_space().pos)
        while True:
            v = self.peek_non_space()
            if v.kind != _T_VAR:
                break
            save = self.i
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.kind in (_T_ASSIGN, _T_DECLARE):
                self.next_non_space()
                pipe.is_assign = nxt.kind == _T_ASSIGN
                if pipe.is_assign and v.val not in self.vars:
                    raise self.error(f"undefined variable {go_quote(v.val)}", v)
                pipe.decl.append(_Variable(v.pos, v.val))
                self.vars.append(v.val)
                break
            if nxt.kind == _T_CHARTOK and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(_Variable(v.pos, v.val))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in (_T_VAR, _T_RIGHT, _T_RPAREN):
                        continue
                    raise self.error("range can only initialize variables")
                raise self.error(f"too many declarations in {context}")
            self.i = save
            break
        while True:
            t = self.next_non_space()
            if t.kind == end:
                if not pipe.cmds:
                    raise self.error(f"missing value for {context}", t)
                for n, c in enumerate(pipe.cmds[1:]):
                    if isinstance(c.args[0], (_Bool, _Dot, _Nil, _Number, _String)):
                        raise self.error(f"non executable command in pipeline stage {n + 2}", t)
                return pipe
            if t.kind in (_T_BOOL, _T_CHAR, _T_DOT, _T_FIELD, _T_IDENT, _T_NUMBER, _T_NIL,
                          _T_RAW, _T_STRING, _T_VAR, _T_LPAREN):
                self.i -= 1
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(t, context)

    def command(self) -> _Command:
        cmd = _Command(self.peek_non_space().pos)
        while True:
            self.skip_space()
            op = self.operand()
            if op is not None:
                cmd.args.append(op)
            t = self.next()
            if t.kind == _T_SPACE:
                continue
            if t.kind in (_T_RIGHT, _T_RPAREN):
                self.i -= 1
            elif t.kind != _T_PIPE:
                raise self.unexpected(t, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().kind == _T_FIELD:
            chain = _Chain(self.peek().pos, node)
            while self.peek().kind == _T_FIELD:
                chain.fields.append(self.next().val[1:])
            if isinstance(node, _Field):
                f = _Field(chain.pos, str(chain))
                return f
            if isinstance(node, _Variable):
                return _Variable(chain.pos, str(chain))
            if isinstance(node, (_Bool, _String, _Number, _Nil, _Dot)):
                raise self.error(f"unexpected . after term {go_quote(str(node))}")
            return chain
        return node

    def term(self) -> _Node | None:
        t = self.next_non_space()
        k = t.kind
        if k == _T_IDENT:
            if t.val not in self.funcs:
                raise self.error(f"function {go_quote(t.val)} not defined", t)
            return _Identifier(t.pos, t.val)
        if k == _T_DOT:
            return _Dot(t.pos)
        if k == _T_NIL:
            return _Nil(t.pos)
        if k == _T_VAR:
            name = t.val.split(".")[0]
            if name not in self.vars:
                raise self.error(f"undefined variable {go_quote(name)}", t)
            return _Variable(t.pos, t.val)
        if k == _T_FIELD:
            return _Field(t.pos, t.val)
        if k == _T_BOOL:
            return _Bool(t.pos, t.val == "true")
        if k in (_T_NUMBER, _T_CHAR):
            return self.number(t)
        if k == _T_LPAREN:
            return self.pipeline("parenthesized pipeline", _T_RPAREN)
        if k in (_T_STRING, _T_RAW):
            try:
                return _String(t.pos, t.val, _unquote(t.val))
            except (ValueError, IndexError):
                raise self.error("invalid syntax", t) from None
        self.i -= 1
        return None

    def number(self, t: _Tok) -> _Number:
        text = t.val
        if t.kind == _T_CHAR:
            try:
                ch = _unquote('"' + text[1:-1] + '"') if text[1:-1] != '"' else '"'
            except (ValueError, IndexError):
                raise self.error(f"malformed character constant: {text}", t) from None
            if len(ch) != 1:
                raise self.error(f"malformed character constant: {text}", t)
            return _Number(t.pos, text, ord(ch), float(ord(ch)), False)
        if text.endswith("i"):
            raise self.error(f"complex constants are not supported by ketch: {text}", t)
        clean = text.replace("_", "")
        ival: int | None = None
        fval: float | None = None
        try:
            ival = int(clean, 0)
        except ValueError:
            pass
        low = clean.lower()
        is_hex = low.lstrip("+-").startswith("0x")
        if not is_hex or "p" in low:
            try:
                fval = float.fromhex(clean) if is_hex else float(clean)
            except ValueError:
                fval = None
        elif ival is not None:
            fval = float(ival)
        if ival is None and fval is None:
            raise self.error(f"illegal number syntax: {go_quote(text)}", t)
        if ival is None and fval is not None and fval.is_integer():
            ival = int(fval)
        is_float = not is_hex and any(c in low for c in ".e") or "p" in low
        return _Number(t.pos, text, ival, fval, is_float)


# --------------------------------------------------------------------------- fmt


def _bad_verb(verb: str, a: Any) -> str:
    if a is None or a is MISSING:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_type_name(a)}={_go_print(a)})"


def _pad(s: str, flags: str, width: int | None, zero_ok: bool = False) -> str:
    if width is None or len(s) >= width:
        return s
    if "-" in flags:
        return s + " " * (width - len(s))
    if zero_ok and "0" in flags:
        sign = s[0] if s[:1] in ("+", "-", " ") else ""
        return sign + "0" * (width - len(s)) + s[len(sign):]
    return " " * (width - len(s)) + s


def _fmt_int(verb: str, v: int, flags: str, prec: int | None) -> str | None:
    a = abs(v)
    if verb in "vd":
        digits = str(a)
    elif verb == "b":
        digits = format(a, "b")
    elif verb == "o":
        digits = format(a, "o")
        if "#" in flags:
            digits = "0" + digits
    elif verb == "O":
        digits = "0o" + format(a, "o")
    elif verb in "xX":
        digits = format(a, verb)
        if "#" in flags:
            digits = "0" + verb + digits
    elif verb == "c":
        return chr(v) if 0 <= v <= 0x10FFFF else "\ufffd"
    elif verb == "q":
        ch = chr(v) if 0 <= v <= 0x10FFFF else "\ufffd"
        return "'" + go_quote(ch)[1:-1].replace('\\"', '"') + "'"
    elif verb == "U":
        return f"U+{v:04X}"
    else:
        return None
    if prec is not None:
        digits = digits.rjust(prec, "0")
    sign = "-" if v < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
    return sign + digits


def _fmt_float(verb: str, v: float, flags: str, prec: int | None) -> str | None:
    if verb in "vgG" and prec is None:
        s = go_float(v)
        if verb == "G":
            s = s.upper()
    elif verb in "eEfFgGv":
        p = 6 if prec is None else prec
        s = ("%." + str(p) + ("g" if verb == "v" else verb)) % v
        if s in ("inf", "-inf", "nan", "INF", "-INF", "NAN"):
            s = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}.get(s.lower(), s)
    else:
        return None
    if "+" in flags and not s.startswith(("-", "+")):
        s = "+" + s
    elif " " in flags and not s.startswith(("-", "+")):
        s = " " + s
    return s


def _fmt_one(verb: str, a: Any, flags: str, width: int | None, prec: int | None) -> str:
    if a is MISSING:
        a = None
    if verb == "T":
        return _pad(_type_name(a) if a is not None else "<nil>", flags, width)
    if a is None:
        return _pad("<nil>", flags, width) if verb == "v" else _bad_verb(verb, a)
    if isinstance(a, bool):
        if verb in "tv":
            return _pad("true" if a else "false", flags, width)
        return _bad_verb(verb, a)
    if isinstance(a, int):
        s = _fmt_int(verb, a, flags, prec)
        return _bad_verb(verb, a) if s is None else _pad(s, flags, width, prec is None)
    if isinstance(a, float):
        s = _fmt_float(verb, a, flags, prec)
        return _bad_verb(verb, a) if s is None else _pad(s, flags, width, True)
    if isinstance(a, str):
        if verb in "vs":
            s = a if prec is None else a[:prec]
        elif verb == "q":
            s = go_quote(a if prec is None else a[:prec])
        elif verb in "xX":
            b = a.encode()
            s = b.hex() if verb == "x" else b.hex().upper()
        else:
            return _bad_verb(verb, a)
        return _pad(s, flags, width)
    if isinstance(a, dict):
        items = sorted(a.items()) if _sortable(a) else list(a.items())
        return "map[" + " ".join(
            f"{_fmt_one(verb, k, flags, width, prec)}:{_fmt_one(verb, x, flags, width, prec)}"
            for k, x in items if not callable(x)) + "]"
    if isinstance(a, (list, tuple)):
        return "[" + " ".join(_fmt_one(verb, e, flags, width, prec) for e in a) + "]"
    return _pad(str(a), flags, width)


def _sprintf(fmt: str, args: Sequence[Any]) -> str:
    """Go's fmt.Sprintf for the common verbs, with Go's %!v(MISSING)-style complaints."""
    out: list[str] = []
    i = 0
    argi = 0
    n = len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        flags = ""
        while i < n and fmt[i] in "+-# 0":
            flags += fmt[i]
            i += 1
        width: int | None = None
        prec: int | None = None
        if i < n and fmt[i] == "*":
            i += 1
            if argi < len(args) and isinstance(args[argi], int):
                width = args[argi]
                argi += 1
                if width < 0:
                    flags += "-"
                    width = -width
            else:
                out.append("%!(BADWIDTH)")
        else:
            k = i
            while i < n and fmt[i].isdigit():
                i += 1
            if i > k:
                width = int(fmt[k:i])
        if i < n and fmt[i] == ".":
            i += 1
            if i < n and fmt[i] == "*":
                i += 1
                if argi < len(args) and isinstance(args[argi], int):
                    prec = args[argi]
                    argi += 1
                else:
                    out.append("%!(BADPREC)")
            else:
                k = i
                while i < n and fmt[i].isdigit():
                    i += 1
                prec = int(fmt[k:i]) if i > k else 0
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_fmt_one(verb, args[argi], flags, width, prec))
        argi += 1
    if argi < len(args):
        extra = []
        for a in args[argi:]:
            extra.append("<nil>" if a is None or a is MISSING else f"{_type_name(a)}={_go_print(a)}")
        out.append("%!(EXTRA " + ", ".join(extra) + ")")
    return "".join(out)


def _sprint(args: Sequence[Any]) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for n, a in enumerate(args):
        if a is MISSING:
            a = None
        if n and not isinstance(a, str) and not isinstance(args[n - 1], str):
            out.append(" ")
        out.append(_go_print(a))
    return "".join(out)


def _sprintln(args: Sequence[Any]) -> str:
    return " ".join(_go_print(None if a is MISSING else a) for a in args) + "\n"


# --------------------------------------------------------------------------- functions


class _FuncError(Exception):
    """A function's own error: reported as "error calling NAME: MESSAGE"."""


class _Func:
    __slots__ = ("fn", "params", "variadic", "lazy")

    def __init__(self, fn: Callable[..., Any], params: tuple[str, ...], variadic: str | None = None,
                 lazy: bool = False) -> None:
        self.fn, self.params, self.variadic, self.lazy = fn, params, variadic, lazy


def _kind(v: Any) -> str:
    if v is None or v is MISSING:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "other"


def _f_eq(a: Any, *rest: Any) -> bool:
    if not rest:
        raise _FuncError("missing argument for comparison")
    k1 = _kind(a)
    for b in rest:
        k2 = _kind(b)
        if k1 != k2:
            if k1 != "nil" and k2 != "nil":
                raise _FuncError("incompatible types for comparison")
            continue
        if k1 == "other":
            raise _FuncError(f"non-comparable type {_go_print(b)}: {_type_name(b)}")
        if k1 == "nil" or a == b:
            return True
    return False


def _f_lt(a: Any, b: Any) -> bool:
    k1, k2 = _kind(a), _kind(b)
    if k1 in ("nil", "bool", "other") or k2 in ("nil", "bool", "other"):
        raise _FuncError("invalid type for comparison")
    if k1 != k2:
        raise _FuncError("incompatible types for comparison")
    return bool(a < b)


def _f_le(a: Any, b: Any) -> bool:
    return _f_lt(a, b) or _f_eq(a, b)


def _f_len(v: Any) -> int:
    if v is None or v is MISSING:
        raise _FuncError("reflect: call of reflect.Value.Type on zero Value")
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, (list, tuple, dict)):
        return len(v)
    raise _FuncError(f"len of type {_type_name(v)}")


def _index_arg(i: Any, n: int, what: str = "") -> int:
    """Go's indexArg, then reflect's own complaint for an index equal to the length."""
    if i is None or i is MISSING:
        raise _FuncError("cannot index slice/array with nil")
    if isinstance(i, bool) or not isinstance(i, int):
        raise _FuncError(f"cannot index slice/array with type {_type_name(i)}")
    if i < 0 or i > n:
        raise _FuncError(f"index out of range: {i}")
    if what and i == n:
        raise _FuncError(f"reflect: {what} index out of range")
    return i


def _f_index(item: Any, *indices: Any) -> Any:
    if item is MISSING:
        raise _FuncError("index of untyped nil")
    for idx in indices:
        if item is None:
            # A null map (Labels: null) indexes like Go's nil map[string]string.
            if isinstance(idx, str):
                return ""
            raise _FuncError("index of untyped nil")
        if isinstance(item, str):
            b = item.encode()
            item = b[_index_arg(idx, len(b), "string")]
        elif isinstance(item, (list, tuple)):
            item = item[_index_arg(idx, len(item), "slice")]
        elif isinstance(item, Struct):
            raise _FuncError(f"can't index item of type {item.go_type.lstrip('*')}")
        elif isinstance(item, dict):
            if not isinstance(idx, str):
                raise _FuncError(f"value has type {_type_name(idx)}; should be string")
            if idx in item:
                item = item[idx]
            else:
                # The zero value of the map's element type.
                item = "" if all(isinstance(x, str) for x in item.values()) else MISSING
        else:
            raise _FuncError(f"can't index item of type {_type_name(item)}")
    return item


def _f_slice(item: Any, *indices: Any) -> Any:
    if item is None or item is MISSING:
        raise _FuncError("slice of untyped nil")
    if len(indices) > 3:
        raise _FuncError(f"too many slice indexes: {len(indices)}")
    if isinstance(item, str):
        if len(indices) == 3:
            raise _FuncError("cannot 3-index slice a string")
        seq: Any = item.encode()
    elif isinstance(item, (list, tuple)):
        seq = item
    else:
        raise _FuncError(f"can't slice item of type {_type_name(item)}")
    n = len(seq)
    idx = [0, n]
    for k, v in enumerate(indices[:2]):
        idx[k] = _index_arg(v, n)
    if idx[0] > idx[1]:
        raise _FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    out = seq[idx[0]:idx[1]]
    return out.decode(errors="replace") if isinstance(out, bytes) else list(out)


def _f_html(*args: Any) -> str:
    s = args[0] if len(args) == 1 and isinstance(args[0], str) else _sprint(args)
    return (s.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&#34;").replace("\x00", "\ufffd"))


def _f_urlquery(*args: Any) -> str:
    from urllib.parse import quote_plus

    s = args[0] if len(args) == 1 and isinstance(args[0], str) else _sprint(args)
    return quote_plus(s, safe="")


def _f_call(fn: Any, *args: Any) -> Any:
    if not callable(fn):
        raise _FuncError(f"non-function {_go_print(fn)} of type {_type_name(fn)}")
    return fn(*args)


def _f_json(v: Any) -> str:
    return go_json(v)


def _f_split(s: str, sep: str) -> list[str]:
    return list(s) if sep == "" else s.split(sep)


def _map_runes(s: str, upper: bool) -> str:
    # Go maps rune by rune; Python's "ß".upper() == "SS" has no Go counterpart.
    out = []
    for ch in s:
        c = ch.upper() if upper else ch.lower()
        out.append(c if len(c) == 1 else ch)
    return "".join(out)


def _f_title(s: str) -> str:
    """strings.Title: upper-case the first letter of each word."""
    out = []
    prev_sep = True
    for ch in s:
        if prev_sep:
            t = ch.title() if len(ch.title()) == 1 else ch
            out.append(t)
        else:
            out.append(ch)
        if ch.isascii():
            prev_sep = not (ch.isalnum() or ch == "_")
        elif ch.isalpha() or ch.isdigit():
            prev_sep = False
        else:
            prev_sep = ch.isspace()
    return "".join(out)


def _f_pad(s: str, prefix: int, suffix: int) -> str:
    if s == "":
        return s
    return " " * prefix + s + " " * suffix


def _f_truncate(s: str, n: int) -> str:
    b = s.encode()
    if len(b) < n:
        return s
    if n < 0:
        raise _FuncError(f"runtime error: slice bounds out of range [:{n}]")
    return b[:n].decode(errors="replace")


_A = "any"
_BUILTINS: dict[str, _Func] = {
    "and": _Func(lambda *a: a, (_A,), _A, lazy=True),
    "or": _Func(lambda *a: a, (_A,), _A, lazy=True),
    "not": _Func(lambda v: not _truth(v), (_A,)),
    "len": _Func(_f_len, (_A,)),
    "index": _Func(_f_index, (_A,), _A),
    "slice": _Func(_f_slice, (_A,), _A),
    "print": _Func(lambda *a: _sprint(a), (), _A),
    "printf": _Func(lambda f, *a: _sprintf(f, a), ("string",), _A),
    "println": _Func(lambda *a: _sprintln(a), (), _A),
    "eq": _Func(_f_eq, (_A,), _A),
    "ne": _Func(lambda a, b: not _f_eq(a, b), (_A, _A)),
    "lt": _Func(_f_lt, (_A, _A)),
    "le": _Func(_f_le, (_A, _A)),
    "gt": _Func(lambda a, b: not _f_le(a, b), (_A, _A)),
    "ge": _Func(lambda a, b: not _f_lt(a, b), (_A, _A)),
    "html": _Func(_f_html, (), _A),
    "urlquery": _Func(_f_urlquery, (), _A),
    "call": _Func(_f_call, (_A,), _A),
    # docker's templates.basicFunctions
    "json": _Func(_f_json, (_A,)),
    "split": _Func(_f_split, ("string", "string")),
    "join": _Func(lambda lst, sep: sep.join(lst), ("[]string", "string")),
    "title": _Func(_f_title, ("string",)),
    "lower": _Func(lambda s: _map_runes(s, False), ("string",)),
    "upper": _Func(lambda s: _map_runes(s, True), ("string",)),
    "pad": _Func(_f_pad, ("string", "int", "int")),
    "truncate": _Func(_f_truncate, ("string", "int")),
}

# docker's templates.HeaderFunctions: a table header keeps the column names as they are.
_HEADER_FUNCS: dict[str, _Func] = dict(_BUILTINS)
_HEADER_FUNCS.update({
    "json": _Func(lambda v: v, ("string",)),
    "split": _Func(lambda v, _s: v, ("string", "string")),
    "join": _Func(lambda v, _s: v, ("string", "string")),
    "title": _Func(lambda v: v, ("string",)),
    "lower": _Func(lambda v: v, ("string",)),
    "upper": _Func(lambda v: v, ("string",)),
    "truncate": _Func(lambda v, _n: v, ("string", "int")),
})


# --------------------------------------------------------------------------- execution

_NOFINAL: Any = object()  # Go's missingVal: no value piped in from a previous command


class _Exec:
    def __init__(self, tmpl: Template, data: Any, funcs: Mapping[str, _Func],
                 missing_key_error: bool) -> None:
        self.tmpl = tmpl
        self.funcs = funcs
        self.missing_error = missing_key_error
        self.vars: list[list[Any]] = [["$", data]]
        self.node: _Node | None = None

    def fail(self, message: str) -> _ExecError:
        return _ExecError(message, self.node)

    # Variables.
    def var(self, name: str) -> Any:
        for k, v in reversed(self.vars):
            if k == name:
                return v
        raise self.fail(f"undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise self.fail(f"undefined variable: {name}")

    # Walking.
    def walk(self, dot: Any, node: _Node, out: list[str]) -> None:
        self.node = node
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Action):
            val = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.node = node
                out.append(self.printable(val))
        elif isinstance(node, _ListNode):
            for n in node.nodes:
                self.walk(dot, n, out)
        elif isinstance(node, _Branch):
            if node.kind == "range":
                self.walk_range(dot, node, out)
                return
            mark = len(self.vars)
            val = self.pipeline(dot, node.pipe)
            if _truth(val):
                self.walk(val if node.kind == "with" else dot, node.list, out)
            elif node.else_list is not None:
                self.walk(dot, node.else_list, out)
            del self.vars[mark:]
        elif isinstance(node, _Loop):
            raise _Break() if node.word == "break" else _Continue()
        elif isinstance(node, _TemplateCall):
            body = self.tmpl.defs.get(node.name)
            if body is None:
                raise self.fail(f"template {go_quote(node.name)} not defined")
            value = self.pipeline(dot, node.pipe) if node.pipe is not None else None
            saved = self.vars
            self.vars = [["$", value]]
            try:
                self.walk(value, body, out)
            finally:
                self.vars = saved
        else:
            raise self.fail(f"unknown node: {node}")

    def walk_range(self, dot: Any, node: _Branch, out: list[str]) -> None:
        mark = len(self.vars)
        val = self.pipeline(dot, node.pipe)
        decl = node.pipe.decl
        items: list[tuple[Any, Any]]
        if isinstance(val, Struct):
            raise self.fail(f"range can't iterate over {_go_print(val)}")
        if isinstance(val, dict):
            keys = sorted(val) if _sortable(val) else list(val)
            items = [(k, val[k]) for k in keys]
        elif isinstance(val, (list, tuple)):
            items = list(enumerate(val))
        elif isinstance(val, int) and not isinstance(val, bool):
            if len(decl) > 1:
                raise self.fail(f"can't use {val} to iterate over more than one variable")
            items = [(i, i) for i in range(val)]
        elif val is None or val is MISSING:
            items = []
        else:
            raise self.fail(f"range can't iterate over {_go_print(val)}")
        for index, elem in items:
            if decl:
                if node.pipe.is_assign:
                    if len(decl) > 1:
                        self.set_var(decl[0].idents[0], index)
                        self.set_var(decl[1].idents[0], elem)
                    else:
                        self.set_var(decl[0].idents[0], elem)
                else:
                    self.vars[-1][1] = elem
                    if len(decl) > 1:
                        self.vars[-2][1] = index
            inner = len(self.vars)
            try:
                self.walk(elem, node.list, out)
            except _Continue:
                pass
            except _Break:
                del self.vars[inner:]
                break
            del self.vars[inner:]
        if not items and node.else_list is not None:
            self.walk(dot, node.else_list, out)
        del self.vars[mark:]

    def printable(self, val: Any) -> str:
        if callable(val) and not isinstance(val, (dict, list)):
            raise self.fail(f"can't print {self.node} of type {_type_name(val)}")
        return _go_print(val)

    # Evaluation.
    def pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        value: Any = _NOFINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for v in pipe.decl:
            if pipe.is_assign:
                self.set_var(v.idents[0], value)
            else:
                self.vars.append([v.idents[0], value])
        return value

    def not_a_function(self, args: list[_Node], final: Any) -> None:
        if len(args) > 1 or final is not _NOFINAL:
            raise self.fail(f"can't give argument to non-function {args[0]}")

    def command(self, dot: Any, cmd: _Command, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Field):
            self.node = first
            return self.field_chain(dot, dot, first, first.idents, cmd.args, final)
        if isinstance(first, _Chain):
            self.node = first
            if isinstance(first.node, _Nil):
                raise self.fail(f"indirection through explicit nil in {first}")
            recv = self.arg(dot, _A, first.node)
            return self.field_chain(dot, recv, first, first.fields, cmd.args, final)
        if isinstance(first, _Identifier):
            return self.function(dot, first, cmd, cmd.args, final)
        if isinstance(first, _Pipe):
            self.node = first
            self.not_a_function(cmd.args, final)
            return self.pipeline(dot, first)
        if isinstance(first, _Variable):
            self.node = first
            return self.variable(first, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if isinstance(first, _Bool):
            return first.value
        if isinstance(first, _Dot):
            return dot
        if isinstance(first, _Nil):
            raise self.fail("nil is not a command")
        if isinstance(first, _Number):
            return self.ideal(first)
        if isinstance(first, _String):
            return first.text
        raise self.fail(f"can't evaluate command {go_quote(str(first))}")

    def ideal(self, n: _Number) -> Any:
        if n.is_float:
            return n.fval
        if n.ival is not None and -(1 << 63) <= n.ival < (1 << 63):
            return n.ival
        raise self.fail(f"{n.text} overflows int")

    def variable(self, node: _Variable, args: list[_Node], final: Any) -> Any:
        value = self.var(node.idents[0])
        if len(node.idents) == 1:
            self.not_a_function(args, final)
            return value
        return self.field_chain(value, value, node, node.idents[1:], args, final)

    def field_chain(self, dot: Any, recv: Any, node: _Node, idents: list[str],
                    args: list[_Node], final: Any) -> Any:
        for name in idents[:-1]:
            recv = self.field(dot, name, node, [], _NOFINAL, recv)
        return self.field(dot, idents[-1], node, args, final, recv)

    def field(self, dot: Any, name: str, node: _Node, args: list[_Node], final: Any,
              recv: Any) -> Any:
        if recv is MISSING:
            if self.missing_error:
                raise self.fail(f"nil data; no entry for key {go_quote(name)}")
            return MISSING
        has_args = len(args) > 1 or final is not _NOFINAL
        if isinstance(recv, dict):
            if name in recv:
                value = recv[name]
                if callable(value) and isinstance(recv, (Struct, _HeaderMap)):
                    return self.call_method(dot, value, name, args, final)
                if has_args and isinstance(recv, Struct):
                    # docker's rows are Go methods without parameters
                    if recv.marshal:
                        n = len(args) - 1 + (0 if final is _NOFINAL else 1)
                        raise self.fail(f"wrong number of args for {name}: want 0 got {n}")
                    raise self.fail(f"{name} has arguments but cannot be invoked as function")
                if has_args:
                    raise self.fail(f"{name} is not a method but has arguments")
                return value
            if isinstance(recv, Struct):
                raise self.fail(f"can't evaluate field {name} in type {recv.go_type}")
            if has_args:
                raise self.fail(f"{name} is not a method but has arguments")
            if self.missing_error:
                raise self.fail(f"map has no entry for key {go_quote(name)}")
            return MISSING
        if recv is None:
            raise self.fail(f"nil pointer evaluating interface {{}}.{name}")
        raise self.fail(f"can't evaluate field {name} in type {_type_name(recv)}")

    def call_method(self, dot: Any, fn: Callable[..., Any], name: str, args: list[_Node],
                    final: Any) -> Any:
        code = getattr(fn, "__code__", None)
        nparams = code.co_argcount if code is not None else 0
        spec = _Func(fn, (_A,) * nparams)
        return self.call(dot, spec, name, None, args, final)

    def function(self, dot: Any, ident: _Identifier, cmd: _Command, args: list[_Node],
                 final: Any) -> Any:
        self.node = ident
        spec = self.funcs.get(ident.name)
        if spec is None:
            raise self.fail(f"{ident.name!r} is not a defined function")
        return self.call(dot, spec, ident.name, cmd, args, final)

    def call(self, dot: Any, spec: _Func, name: str, cmd: _Node | None, args: list[_Node],
             final: Any) -> Any:
        argn = args[1:]
        num_in = len(argn) + (0 if final is _NOFINAL else 1)
        nparams = len(spec.params)
        if spec.variadic is not None:
            if num_in < nparams:
                raise self.fail(f"wrong number of args for {name}: want at least {nparams} "
                                f"got {len(argn)}")
        elif num_in != nparams:
            raise self.fail(f"wrong number of args for {name}: want {nparams} got {num_in}")

        def ptype(i: int) -> str:
            return spec.params[i] if i < nparams else (spec.variadic or _A)

        if spec.lazy:  # and, or: short-circuit, return the deciding operand
            want = name == "or"
            v: Any = None
            for i, a in enumerate(argn):
                v = self.arg(dot, ptype(i), a)
                if _truth(v) == want:
                    return v
            if final is not _NOFINAL:
                v = final
            return v
        values = [self.arg(dot, ptype(i), a) for i, a in enumerate(argn)]
        if final is not _NOFINAL:
            values.append(self.validate(final, ptype(len(argn))))
        try:
            return spec.fn(*values)
        except _FuncError as e:
            if cmd is not None:
                self.node = cmd
            raise self.fail(f"error calling {name}: {e}") from None
        except _ExecError:
            raise
        except (TypeError, ValueError, KeyError, IndexError) as e:
            if cmd is not None:
                self.node = cmd
            raise self.fail(f"error calling {name}: {e}") from None

    def arg(self, dot: Any, typ: str, n: _Node) -> Any:
        self.node = n
        if isinstance(n, _Dot):
            return self.validate(dot, typ)
        if isinstance(n, _Nil):
            if typ in (_A, "[]string"):
                return None
            raise self.fail(f"cannot assign nil to {typ}")
        if isinstance(n, _Field):
            return self.validate(self.field_chain(dot, dot, n, n.idents, [n], _NOFINAL), typ)
        if isinstance(n, _Variable):
            return self.validate(self.variable(n, [n], _NOFINAL), typ)
        if isinstance(n, _Pipe):
            return self.validate(self.pipeline(dot, n), typ)
        if isinstance(n, _Identifier):
            return self.validate(self.function(dot, n, _Command(n.pos), [n], _NOFINAL), typ)
        if isinstance(n, _Chain):
            recv = self.arg(dot, _A, n.node)
            return self.validate(self.field_chain(dot, recv, n, n.fields, [n], _NOFINAL), typ)
        if typ == _A:
            if isinstance(n, _Bool):
                return n.value
            if isinstance(n, _Number):
                return self.ideal(n)
            if isinstance(n, _String):
                return n.text
        elif typ == "string":
            if isinstance(n, _String):
                return n.text
            raise self.fail(f"expected string; found {n}")
        elif typ == "int":
            if isinstance(n, _Number) and n.ival is not None:
                return n.ival
            raise self.fail(f"expected integer; found {n}")
        elif typ == "bool":
            if isinstance(n, _Bool):
                return n.value
            raise self.fail(f"expected bool; found {n}")
        raise self.fail(f"can't handle {n} for arg of type {typ}")

    def validate(self, value: Any, typ: str) -> Any:
        if value is MISSING or value is _NOFINAL:
            if typ in (_A, "[]string"):
                return None
            raise self.fail(f"invalid value; expected {typ}")
        if typ == _A:
            return value
        ok = (typ == "string" and isinstance(value, str)) or \
             (typ == "int" and isinstance(value, int) and not isinstance(value, bool)) or \
             (typ == "bool" and isinstance(value, bool)) or \
             (typ == "[]string" and (value is None or (isinstance(value, (list, tuple))
                                                        and all(isinstance(e, str) for e in value))))
        if not ok:
            raise self.fail(f"wrong type for value; expected {typ}; got {_type_name(value)}")
        return value


class Template:
    """A parsed template; ``execute`` renders it against one value."""

    __slots__ = ("name", "text", "root", "defs")

    def __init__(self, name: str, text: str, root: _ListNode,
                 defs: dict[str, _ListNode] | None = None) -> None:
        self.name, self.text, self.root = name, text, root
        self.defs = defs or {}

    def execute(self, data: Any, *, missing_key_error: bool = False,
                header: bool = False) -> str:
        """Render; raise TemplateError with Go's message (no docker prefix) on failure.

        ``missing_key_error`` is Go's ``missingkey=error`` option; ``header``
        swaps in docker's header functions, which leave column names as they are.
        """
        out: list[str] = []
        try:
            self._run(data, out, missing_key_error, header)
        except TemplateError:
            raise
        return "".join(out)

    def _run(self, data: Any, out: list[str], missing_key_error: bool, header: bool) -> None:
        ex = _Exec(self, data, _HEADER_FUNCS if header else _BUILTINS, missing_key_error)
        try:
            ex.walk(data, self.root, out)
        except _ExecError as e:
            raise TemplateError(self._exec_message(e), prefix="", parse_error=False) from None
        except (_Break, _Continue):  # parse rejects these outside range
            pass
        except RecursionError:
            raise TemplateError(f"template: {self.name}: exceeded maximum template depth "
                                f"(100000)", prefix="", parse_error=False) from None

    def execute_partial(self, data: Any, *, header: bool = False) -> str:
        """Render as much as renders: Go writes output up to a failing action."""
        out: list[str] = []
        try:
            self._run(data, out, False, header)
        except TemplateError:
            pass
        return "".join(out)

    def _exec_message(self, e: _ExecError) -> str:
        node = e.node
        name = self.name
        if node is None:
            return f"template: {name}: {e.message}"
        pos = len(self.text[:node.pos].encode())
        before = self.text.encode()[:pos]
        nl = before.rfind(b"\n")
        col = pos if nl < 0 else pos - nl - 1
        line = 1 + before.count(b"\n")
        return (f"template: {name}:{line}:{col}: executing {go_quote(name)} at <{node}>: "
                f"{e.message}")


def parse(text: str, name: str = "") -> Template:
    """Parse a Go template; TemplateError carries Go's message (no docker prefix)."""
    parser = _Parser(text, _BUILTINS)
    try:
        root = parser.parse()
    except _ParseError as e:
        raise TemplateError(f"template: {name}:{e.line}: {e.message}", prefix="") from None
    return Template(name, text, root, parser.defs)


# --------------------------------------------------------------------------- tabwriter


def _char_width(ch: str) -> int:
    import unicodedata

    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(s: str) -> int:
    """Terminal columns of ``s`` (East Asian wide runes count two), as go-runewidth."""
    if s.isascii():
        return len(s)
    return sum(_char_width(ch) for ch in s)


def tabwrite(text: str, minwidth: int = 10, tabwidth: int = 1, padding: int = 3,
             padchar: str = " ") -> str:
    """Go's text/tabwriter with flags 0: align tab-terminated cells into columns.

    A column block is a run of consecutive lines that have a cell in that
    column; a line without tabs ends every block (docker's table output
    relies on this: ``tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)``).
    """
    del tabwidth  # only used when padding with tabs
    lines: list[list[tuple[str, int, bool]]] = [[]]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            line = lines[i]
            for j, (txt, w, _h) in enumerate(line):
                out.append(txt)
                if j < len(widths):
                    out.append(padchar * (widths[j] - w))
            if i + 1 < len(lines):
                out.append("\n")

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1:
                line = lines[this]
                if column >= len(line) - 1:
                    break
                w = line[column][1] + padding
                if w > width:
                    width = w
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    def flush() -> None:
        nonlocal lines
        fmt(0, len(lines))
        lines = [[]]

    start = 0
    for i, ch in enumerate(text):
        if ch in "\t\v\n\f":
            cell = text[start:i]
            lines[-1].append((cell, display_width(cell), ch == "\t"))
            start = i + 1
            if ch in "\n\f":
                ncells = len(lines[-1])
                lines.append([])
                if ch == "\f" or ncells == 1:
                    flush()
    if start < len(text):
        cell = text[start:]
        lines[-1].append((cell, display_width(cell), False))
    flush()
    return "".join(out)


# --------------------------------------------------------------------------- docker formatter


def _pre_format(fmt: str) -> str:
    """docker's Context.preFormat: strip "table", map "json", unescape \\t and \\n."""
    if fmt.startswith("table"):
        fmt = fmt[len("table"):]
    elif fmt == "json":
        fmt = "{{json .}}"
    fmt = fmt.strip(" ")
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def compile_format(fmt: str) -> Template:
    """Parse a ``--format`` value as docker's formatter does; TemplateError on bad syntax."""
    try:
        return parse(_pre_format(fmt))
    except TemplateError as e:
        raise TemplateError(e.go_message) from None


def render(fmt: str, rows: Iterable[Any], headers: Mapping[str, str]) -> str:
    """docker's ``formatter.Context.Write``: the text to print for these rows.

    ``fmt`` is the resolved format ("table {{.ID}}\\t{{.Size}}", "json", or a
    template); ``headers`` maps field names to column titles. A table gets
    the header row (the template run over ``headers`` with docker's header
    functions) and tabwriter alignment; everything else is each row's
    output followed by a newline. Nothing is returned when a row fails:
    TemplateError("template parsing error: ..."), as docker prints.
    """
    tmpl = compile_format(fmt)
    body: list[str] = []
    for row in rows:
        try:
            body.append(tmpl.execute(row))
        except TemplateError as e:
            raise TemplateError(e.go_message, parse_error=False) from None
        body.append("\n")
    if not fmt.startswith("table"):
        return "".join(body)
    header_data = _HeaderMap(headers)
    header_data["Label"] = _header_label
    header = tmpl.execute_partial(header_data, header=True)
    return tabwrite(header + "\n" + "".join(body))


class _HeaderMap(dict):  # type: ignore[type-arg]
    """docker's SubHeaderContext: a map of titles (missing ones print "<no value>")
    with a Label method."""

    __slots__ = ()


def _header_label(name: str) -> str:
    """docker's SubHeaderContext.Label: {{.Label "com.example.some-key"}} titles "some key"."""
    return name.split(".")[-1].replace("-", " ").replace("_", " ")


def resolve_format(source: str | None, *, table: str, quiet: bool = False,
                   quiet_format: str = "{{.ID}}", raw: str | None = None) -> str:
    """The format a listing command uses, as docker's NewXFormat functions pick it.

    No ``--format`` or "table" gives the command's default ``table``; with
    ``quiet`` that becomes ``quiet_format`` (ids one per line, repeated per
    row as docker does). "raw" gives ``raw`` when the command has one. Any
    other value is used as it is.
    """
    if not source or source == "table":
        return quiet_format if quiet else table
    if source == "raw" and raw is not None:
        return raw
    return source


# --------------------------------------------------------------------------- inspect


def inspect_json(objs: Sequence[Any]) -> str:
    """``docker inspect`` without --format: an indented JSON array and a newline.

    Like dockerd's responses that docker indents, nothing is HTML-escaped
    and the objects keep their key order.
    """
    if not objs:
        return "[]\n"
    return go_json(list(objs), indent="    ") + "\n"


def inspect_format(fmt: str | None, objs: Sequence[Any]) -> tuple[str, list[str]]:
    """``docker inspect [--format F]``: stdout text and the errors of objects that failed.

    A template that does not parse raises TemplateError with exit_code 64
    before anything is printed, as docker does. Otherwise each object's
    output ends with a newline; the objects that fail add their message to
    the list (docker prints those on stderr and exits 1) and nothing to the
    output. With no output at all docker prints one empty line.

    Objects are plain dicts from the Engine API. Docker executes against Go
    structs first, where a missing struct field is an error, while a missing
    map key or a field under a nil pointer prints "<no value>" or "<nil>".
    Here a key missing from the object itself is an error ("map has no entry
    for key"), as in docker's fallback to the raw JSON; one missing deeper
    down, or under a null, prints "<no value>".
    """
    if not fmt:
        return inspect_json(objs), []
    if fmt == "json":
        return go_json(list(objs)) + "\n", []
    try:
        tmpl = parse(fmt)
    except TemplateError as e:
        raise TemplateError(e.go_message, exit_code=64) from None
    out: list[str] = []
    errors: list[str] = []
    for obj in objs:
        try:
            out.append(_execute_inspect(tmpl, obj) + "\n")
        except TemplateError as e:
            errors.append("template parsing error: " + e.go_message)
    text = "".join(out)
    return (text or "\n"), errors


def check_inspect_format(fmt: str | None) -> None:
    """Fail as ``docker inspect`` does on a bad --format, before asking the daemon.

    Raises TemplateError("template parsing error: ...", exit_code=64).
    """
    if fmt and fmt != "json":
        try:
            parse(fmt)
        except TemplateError as e:
            raise TemplateError(e.go_message, exit_code=64) from None


def format_object(fmt: str, obj: Any, *, name: str = "",
                  parse_exit_code: int = 1) -> tuple[str, str | None]:
    """``docker version --format`` / ``docker info --format``: one object, one template.

    "json" means ``{{json .}}``. Returns the output followed by a newline and
    None, or, when execution fails part way, the output up to the failure
    (plus the newline, as docker still prints it) and Go's error text, which
    docker prints as it is. A template that does not parse raises
    TemplateError("template parsing error: ...") with ``parse_exit_code``
    (docker info uses 64). ``name`` is the template's name in messages
    (docker version's is "version"). Missing keys behave as in
    ``inspect_format``. ``docker version`` then aligns the text with
    ``tabwrite(text, 20, 1, 1)``.
    """
    if fmt == "json":
        fmt = "{{json .}}"
    try:
        tmpl = parse(fmt, name)
    except TemplateError as e:
        raise TemplateError(e.go_message, exit_code=parse_exit_code) from None
    out: list[str] = []
    ex = _InspectExec(tmpl, obj, _BUILTINS, True)
    error = None
    try:
        ex.walk(obj, tmpl.root, out)
    except _ExecError as e:
        error = tmpl._exec_message(e)
    except (_Break, _Continue):
        pass
    return "".join(out) + "\n", error


def _execute_inspect(tmpl: Template, obj: Any) -> str:
    out: list[str] = []
    ex = _InspectExec(tmpl, obj, _BUILTINS, True)
    try:
        ex.walk(obj, tmpl.root, out)
    except _ExecError as e:
        raise TemplateError(tmpl._exec_message(e), prefix="", parse_error=False) from None
    except (_Break, _Continue):
        pass
    return "".join(out)


class _InspectExec(_Exec):
    """missingkey=error on the inspected object itself only (see inspect_format)."""

    def field(self, dot: Any, name: str, node: _Node, args: list[_Node], final: Any,
              recv: Any) -> Any:
        if recv is None or recv is MISSING:
            return MISSING
        if isinstance(recv, dict) and name not in recv and recv is not self.vars[0][1]:
            return MISSING
        return super().field(dot, name, node, args, final, recv)


# --------------------------------------------------------------------------- units (go-units)

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def _scale(size: float, base: float, units: tuple[str, ...]) -> tuple[float, str]:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return size, units[i]


def docker_size(size: float) -> str:
    """The 3-digit size docker's image and history tables print ("1.98MB")."""
    return human_size_precision(size, 3)


def bytes_size(size: float) -> str:
    """go-units BytesSize: binary units, 4 digits ("1.5KiB", "17MiB")."""
    v, unit = _scale(float(size), 1024.0, _BINARY)
    return format(v, ".4g") + unit


def parse_size(text: str) -> int:
    """go-units RAMInBytes: "512m", "1.5g", "10KiB", "100" -> bytes (binary multiples).

    Raises InvalidArgument with go-units' wording ("invalid size: 'x'",
    "invalid suffix: 'q'").
    """
    num, sep, sfx = text.partition(" ")
    if not sep:
        last = max(text.rfind(c) for c in "0123456789.")
        if last < 0:
            raise InvalidArgument(f"invalid size: '{text}'")
        num, sfx = text[:last + 1], text[last + 1:]
    try:
        if any(c in num for c in "_ \t\n") or not num:
            raise ValueError
        size = float(num)
    except ValueError:
        raise InvalidArgument(f'strconv.ParseFloat: parsing {go_quote(num)}: invalid syntax') \
            from None
    if size < 0:
        raise InvalidArgument(f"invalid size: '{text}'")
    if not sfx:
        return int(size)
    low = sfx.lower()
    if len(sfx) > 3:
        raise InvalidArgument(f"invalid suffix: '{sfx}'")
    if low[0] == "b":
        if len(low) > 1:
            raise InvalidArgument(f"invalid suffix: '{low}'")
        return int(size)
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}.get(low[0])
    if mult is None or (len(low) == 2 and low[1] != "b") or (len(low) == 3 and low[1:] != "ib"):
        raise InvalidArgument(f"invalid suffix: '{low}'")
    return int(size * mult)


def since(ts: float, now: float | None = None) -> str:
    """"<duration> ago" for a unix time, as docker's CREATED columns."""
    if now is None:
        now = time.time()
    return human_duration(now - ts) + " ago"


def go_time(ts: float) -> str:
    """Go's ``time.Unix(ts, 0).String()`` in local time: "2026-12-01 06:55:50 +0000 UTC"."""
    t = time.localtime(int(ts))
    return time.strftime("%Y-%m-%d %H:%M:%S %z ", t) + (t.tm_zone or time.strftime("%z", t))


def go_time_rfc3339(ts: float) -> str:
    """``time.Unix(ts, 0).Format(time.RFC3339)`` in local time: "2026-12-01T06:55:50Z"."""
    t = time.localtime(int(ts))
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + go_zone(t.tm_gmtoff or 0)


def go_zone(offset: int) -> str:
    """The "Z07:00" of Go's layouts: "Z" for UTC, else "+01:00"."""
    if offset == 0:
        return "Z"
    sign = "+" if offset > 0 else "-"
    offset = abs(offset)
    return f"{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


# --------------------------------------------------------------------------- ids and text


def truncate_id(image_id: str) -> str:
    """stringid.TruncateID: drop the "algo:" prefix, keep 12 characters."""
    i = image_id.find(":")
    if i >= 0:
        image_id = image_id[i + 1:]
    return image_id[:12]


def ellipsis(s: str, max_width: int) -> str:
    """docker's formatter.Ellipsis: cut to ``max_width`` columns, ending in "…"."""
    if max_width <= 0:
        return ""
    if max_width == 1:
        return s[:1]
    if s.isascii():
        return s if len(s) <= max_width else s[:max_width - 1] + "…"
    acc = 0
    ends: list[int] = []
    for ch in s:
        acc += _char_width(ch)
        ends.append(acc)
    if acc <= max_width:
        return s
    for i in range(len(ends) - 1):
        if ends[i] <= max_width - 1 < ends[i + 1]:
            return s[:i + 1] + "…"
    return s
