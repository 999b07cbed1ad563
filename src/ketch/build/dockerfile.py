"""Dockerfile parsing into a typed tree, following BuildKit's parser rules.

The tree keeps arguments the way BuildKit's parser hands them to the
instruction layer: JSON-form arrays decoded, shell-form kept as the raw
string, ENV/LABEL split into key/value/separator triples, flags kept as
written (``--from=x``). ``dump`` renders the tree in BuildKit's test form so
the parser can be checked against BuildKit's own cases.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ketch.errors import InvalidArgument

# BuildKit splits commands and whitespace-delimited arguments on these only
# (no newline: lines are already joined).
_WS = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")

# Instruction name -> how its arguments are split.
_SPLITTERS = {
    "add": "json_or_list",
    "arg": "name_or_nameval",
    "cmd": "json_or_string",
    "copy": "json_or_list",
    "entrypoint": "json_or_string",
    "env": "nameval",
    "expose": "list",
    "from": "list",
    "healthcheck": "health",
    "label": "nameval",
    "maintainer": "string",
    "onbuild": "sub",
    "run": "json_or_string",
    "shell": "json_or_string",
    "stopsignal": "string",
    "user": "string",
    "volume": "json_or_list",
    "workdir": "string",
}
_HEREDOC_INSTRUCTIONS = ("add", "copy", "run")
_NOT_STRINGS = "when using JSON array syntax, arrays must be comprised of strings only"


@dataclass
class Heredoc:
    """One ``<<NAME`` body: its content up to the terminator line."""

    name: str
    content: str = ""
    expand: bool = True  # an unquoted delimiter lets variables expand
    chomp: bool = False  # ``<<-``: leading tabs are stripped from the terminator
    fd: int | None = None  # ``3<<EOF`` names a file descriptor


@dataclass
class Instruction:
    """One instruction: name in lower case, flags, split arguments, lines."""

    name: str
    original: str
    flags: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    json: bool = False  # the arguments came from a JSON array
    start_line: int = 0
    end_line: int = 0
    heredocs: list[Heredoc] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    # HEALTHCHECK's type word and ONBUILD's trigger are sub-nodes in BuildKit.
    sub: Instruction | None = None


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    directives: dict[str, str]
    escape: str = "\\"


class ParseError(InvalidArgument):
    """A Dockerfile syntax error, located the way docker build reports it."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"dockerfile parse error on line {line}: {message}")
        self.line = line
        self.reason = message


class _Directives:
    def __init__(self) -> None:
        self.escape = "\\"
        self.values: dict[str, str] = {}
        self.done = False
        self.continuation = self._continuation("\\")

    def feed(self, line: str) -> None:
        """Take a directive from a leading comment line; any other line ends them."""
        if self.done:
            return
        m = _DIRECTIVE.match(line)
        if not m or m.group(1).lower() not in _KNOWN_DIRECTIVES:
            self.done = True
            return
        key, value = m.group(1).lower(), m.group(2)
        if key in self.values:
            raise InvalidArgument(f"only one {key} parser directive can be used")
        self.values[key] = value
        if key == "escape":
            if value not in ("`", "\\"):
                raise InvalidArgument(f"invalid escape token '{value}' does not match ` or \\")
            self.escape = value
            self.continuation = self._continuation(value)

    @staticmethod
    def _continuation(esc: str) -> re.Pattern[str]:
        # A doubled escape at the end is a literal one, not a continuation.
        e = re.escape(esc)
        return re.compile(f"(?<!{e}){e}[ \t]*$")


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t").startswith("#")


def _process(d: _Directives, raw: str, strip_left: bool) -> str:
    line = raw.rstrip("\r\n")
    if strip_left:
        line = line.lstrip(" \t")
    d.feed(line)
    return "" if line.startswith("#") else line


def _trim_continuation(line: str, d: _Directives) -> tuple[str, bool]:
    m = d.continuation.search(line)
    if m:
        return line[: m.start()], False
    return line, True


def parse(text: str | bytes) -> Dockerfile:
    """Parse a Dockerfile; InvalidArgument (ParseError) on a syntax error."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    d = _Directives()
    result: list[Instruction] = []
    comments: list[str] = []
    n = 0  # number of lines consumed == 1-based number of the current line
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if _is_comment(raw):
            c = raw.lstrip(" \t")[1:].strip()
            comments = comments + [c] if c else []
        try:
            processed = _process(d, raw, True)
        except InvalidArgument as exc:
            raise ParseError(exc.message, n + 1) from None
        n += 1
        start = n
        line, eol = _trim_continuation(processed, d)
        if eol and line == "":
            continue
        while not eol and i < len(lines):
            raw = lines[i]
            i += 1
            n += 1
            if _is_comment(raw):
                continue
            cont = raw.rstrip("\r\n")
            if cont.strip(" \t") == "":
                continue
            cont, eol = _trim_continuation(cont, d)
            line += cont
        try:
            ins = _node_from_line(line, d, comments)
        except InvalidArgument as exc:
            raise ParseError(exc.message, start) from None
        if ins.name in _HEREDOC_INSTRUCTIONS and "<<" in line:
            try:
                docs = _heredocs_from_line(line)
            except InvalidArgument as exc:
                raise ParseError(exc.message, start) from None
            for doc in docs:
                terminated = False
                while i < len(lines):
                    body = lines[i]
                    i += 1
                    n += 1
                    candidate = body.rstrip("\r\n")
                    if doc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == doc.name:
                        terminated = True
                        break
                    doc.content += body + "\n"
                if not terminated:
                    raise ParseError("unterminated heredoc", start)
                ins.heredocs.append(doc)
        ins.start_line, ins.end_line = start, n
        result.append(ins)
        comments = []
    if not result:
        raise ParseError("file with no instructions", max(n, 1))
    for ins in result:
        _validate(ins)
    return Dockerfile(result, dict(d.values), d.escape)


def _validate(ins: Instruction) -> None:
    """The checks BuildKit's instruction layer makes before any build step."""
    if ins.name not in _SPLITTERS:
        raise ParseError(f"unknown instruction: {ins.original.split()[0]}", ins.start_line)
    if ins.name == "onbuild":
        if ins.sub is None:
            raise ParseError("ONBUILD requires at least one argument", ins.start_line)
        trigger = ins.sub.name
        if trigger == "onbuild":
            raise ParseError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", ins.start_line)
        if trigger in ("from", "maintainer"):
            raise ParseError(f"{trigger.upper()} isn't allowed as an ONBUILD trigger",
                             ins.start_line)
        ins.sub.start_line, ins.sub.end_line = ins.start_line, ins.end_line
        _validate(ins.sub)


def _split_command(line: str) -> tuple[str, list[str], str]:
    parts = _WS.split(line.strip(), maxsplit=1)
    args, flags = "", list[str]()
    if len(parts) == 2:
        args, flags = _extract_flags(parts[1])
    return parts[0], flags, args.strip()


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--name[=value]`` words; ``--`` ends them and is dropped."""
    words: list[str] = []
    word = ""
    blank_ok = False
    phase = "space"
    quote = ""
    pos = 0
    end = len(line)
    while pos <= end:
        ch = line[pos] if pos < end else ""
        if phase == "space":
            if pos == end:
                break
            if ch.isspace():
                pos += 1
                continue
            if ch != "-" or pos + 1 == end or line[pos + 1] != "-":
                return line[pos:], words
            phase = "word"
        if pos == end:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if ch.isspace():
                phase = "space"
                if word == "--":
                    return line[pos:], words
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok, phase = ch, True, "quote"
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == end:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
            continue
        # inside quotes
        if ch == quote:
            phase = "word"
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == end:
                phase = "word"
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word += ch
        pos += 1
    return "", words


def _node_from_line(line: str, d: _Directives, comments: list[str]) -> Instruction:
    cmd, flags, rest = _split_command(line)
    name = cmd.lower()
    ins = Instruction(name=name, original=line, flags=flags, comments=list(comments))
    kind = _SPLITTERS.get(name)
    if kind is None or rest == "":
        return ins  # unknown instructions are rejected after the whole file parses
    if kind == "string":
        ins.args = [rest]
    elif kind == "list":
        ins.args = _WS.split(rest)
    elif kind in ("json_or_string", "json_or_list"):
        arr = _parse_json(rest)
        if arr is not None:
            ins.args, ins.json = arr, True
        elif kind == "json_or_string":
            ins.args = [rest]
        else:
            ins.args = _WS.split(rest)
    elif kind == "nameval":
        ins.args = _name_val(rest, name.upper(), d)
    elif kind == "name_or_nameval":
        ins.args = _words(rest, d)
    elif kind == "health":
        m = re.match(r"(\S+)\s*", rest)
        assert m is not None  # rest is stripped and not empty
        ins.args = [m.group(1)]
        tail = rest[m.end():]
        if tail:
            arr = _parse_json(tail)
            if arr is not None:
                ins.args += arr
                ins.json = True
            else:
                ins.args.append(tail)
    elif kind == "sub":
        ins.sub = _node_from_line(rest, d, [])
    return ins


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _parse_json(rest: str) -> list[str] | None:
    """A JSON array of strings, None when not JSON (shell form)."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(_NOT_STRINGS)
    return value


def _name_val(rest: str, key: str, d: _Directives) -> list[str]:
    words = _words(rest, d)
    if not words:
        return []
    if "=" not in words[0]:
        # The legacy form: KEY name value (the value is the rest, raw).
        parts = _WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise InvalidArgument(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise InvalidArgument(
                f"Syntax error - can't find = in {_go_quote(word)}. Must be of the form: name=value")
        k, v = word.split("=", 1)
        out += [k, v, "="]
    return out


def _words(rest: str, d: _Directives) -> list[str]:
    """Whitespace-separated words, quotes and escapes kept as written."""
    esc = d.escape
    words: list[str] = []
    word = ""
    blank_ok = False
    phase = "space"
    quote = ""
    pos = 0
    end = len(rest)
    while pos <= end:
        ch = rest[pos] if pos < end else ""
        if phase == "space":
            if pos == end:
                break
            if ch.isspace():
                pos += 1
                continue
            phase = "word"
        if pos == end:
            if blank_ok or word:
                words.append(word)
            break
        if phase == "word":
            if ch.isspace():
                phase = "space"
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok, phase = ch, True, "quote"
            if ch == esc:
                if pos + 1 == end:
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        if ch == quote:
            phase = "word"
        if ch == esc and quote != "'":
            if pos + 1 == end:
                phase = "word"
                pos += 1
                continue
            word += ch
            pos += 1
            ch = rest[pos]
        word += ch
        pos += 1
    return words


def _shell_words_raw(line: str) -> list[str]:
    """Shell words with quotes kept (enough to find heredoc markers)."""
    words: list[str] = []
    word = ""
    quote = ""
    have = False
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            word += ch
            if ch == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                word += line[i]
            elif ch == quote:
                quote = ""
        elif ch.isspace():
            if have:
                words.append(word)
            word, have = "", False
        else:
            have = True
            word += ch
            if ch in ("'", '"'):
                quote = ch
            elif ch == "\\" and i + 1 < len(line):
                i += 1
                word += line[i]
        i += 1
    if have:
        words.append(word)
    return words


def _heredocs_from_line(line: str) -> list[Heredoc]:
    docs: list[Heredoc] = []
    for word in _shell_words_raw(line):
        m = _HEREDOC.match(word)
        if not m or not m.group(3):
            continue
        name = m.group(3)
        expand = True
        quotes = name.count("'") + name.count('"')
        if quotes:
            if quotes != 2 or len(name) < 2 or name[0] != name[-1] or name[0] not in "'\"":
                raise InvalidArgument("quoted heredoc quotes do not match")
            name, expand = name[1:-1], False
        name = re.sub(r"\\(.)", r"\1", name)
        docs.append(Heredoc(name=name, expand=expand, chomp=m.group(2) == "-",
                            fd=int(m.group(1)) if m.group(1) else None))
    return docs


def _go_quote(s: str) -> str:
    """A string quoted the way Go's strconv.Quote does (BuildKit's dump uses it)."""
    out = ['"']
    simple = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
              "\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\"}
    for ch in s:
        if ch in simple:
            out.append(simple[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _dump_one(ins: Instruction) -> str:
    s = ins.name
    if ins.flags:
        s += " [" + " ".join(_go_quote(f) for f in ins.flags) + "]"
    if ins.sub is not None:
        s += " (" + _dump_one(ins.sub) + ")"
    for a in ins.args:
        s += " " + _go_quote(a)
    return s


def dump(df: Dockerfile) -> str:
    """The tree in BuildKit's test form: one ``(instruction "arg" ...)`` per line."""
    return "".join("(" + _dump_one(ins) + ")\n" for ins in df.instructions)


_SPECIAL_PARAMS = "@*#?-$!0"


class _Expander:
    """BuildKit's word processing: quotes removed, escapes applied, $VAR expanded."""

    def __init__(self, word: str, env: dict[str, str], escape: str) -> None:
        self.s = word
        self.i = 0
        self.env = env
        self.esc = escape
        self.stopped = ""

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def run(self, stop: str = "") -> str:
        """The word up to (and past) any character of ``stop``; ``self.stopped`` says
        which one ended it."""
        out: list[str] = []
        while self.peek():
            ch = self.peek()
            if stop and ch in stop:
                self.i += 1
                self.stopped = ch
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
            elif ch == "'":
                out.append(self.single())
            elif ch == '"':
                out.append(self.double())
            else:
                self.i += 1
                if ch == self.esc:
                    ch = self.next()  # the escaped char is literal; a final escape is dropped
                    if not ch:
                        break
                out.append(ch)
        if stop:
            raise InvalidArgument(
                f"unexpected end of statement while looking for matching {stop[-1]}")
        return "".join(out)

    def single(self) -> str:
        self.i += 1
        end = self.s.find("'", self.i)
        if end < 0:
            raise InvalidArgument(
                "unexpected end of statement while looking for matching single-quote")
        text, self.i = self.s[self.i:end], end + 1
        return text

    def double(self) -> str:
        self.i += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise InvalidArgument(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.i += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.i += 1
            if ch == self.esc:
                nxt = self.peek()
                if not nxt:
                    continue
                # Inside double quotes only these are escapable; others keep the escape.
                if nxt in ('"', "$", self.esc):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        start = self.i
        ch = self.peek()
        if ch.isdigit():
            while self.peek().isdigit():
                self.i += 1
            return self.s[start:self.i]
        if ch and ch in _SPECIAL_PARAMS:
            self.i += 1
            return ch
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.i += 1
        return self.s[start:self.i]

    def dollar(self) -> str:
        self.i += 1
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.i += 1
        ch = self.peek()
        if not ch:
            raise InvalidArgument("syntax error: missing '}'")
        if ch in "{}:":
            raise InvalidArgument("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if not op:
            raise InvalidArgument("syntax error: missing '}'")
        if op == "}":
            return self.env.get(name, "")
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
        if op in ("+", "-", "?"):
            try:
                word = self.run("}")
            except InvalidArgument:
                if not self.peek():
                    raise InvalidArgument("syntax error: missing '}'") from None
                raise
            set_ = name in self.env
            value = self.env.get(name, "")
            unset = not set_ or (null_is_unset and value == "")
            if op == "-":
                return word if unset else value
            if op == "+":
                return "" if unset else word
            if not set_:
                raise InvalidArgument(f"{name}: {word or 'is not allowed to be unset'}")
            if unset:
                raise InvalidArgument(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op in ("#", "%", "/") and not null_is_unset:
            return self.pattern_op(name, op)
        raise InvalidArgument(f"unsupported modifier ({':' if null_is_unset else ''}{op}) "
                              "in substitution")


    def pattern_op(self, name: str, op: str) -> str:
        """``${VAR#p}``, ``${VAR##p}``, ``${VAR%p}``, ``${VAR%%p}``, ``${VAR/p/r}``,
        ``${VAR//p/r}``: the shell's pattern removal and replacement (BuildKit's)."""
        twice = self.peek() == op
        if twice:
            self.i += 1
        value = self.env.get(name, "")
        if op == "/":
            pattern = self._word("/}")
            repl = self._word("}") if self.stopped == "/" else ""
            return _replace(value, _glob_regex(pattern), repl, every=twice)
        regex = _glob_regex(self._word("}"))
        cuts = range(len(value) + 1)
        if op == "#":
            for i in (reversed(cuts) if twice else cuts):
                if regex.fullmatch(value, 0, i):
                    return value[i:]
        else:
            for i in (cuts if twice else reversed(cuts)):
                if regex.fullmatch(value, i):
                    return value[:i]
        return value

    def _word(self, stop: str) -> str:
        try:
            return self.run(stop)
        except InvalidArgument:
            if not self.peek():
                raise InvalidArgument("syntax error: missing '}'") from None
            raise


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A shell pattern (``*``, ``?``, ``[...]``) as a regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _replace(value: str, regex: re.Pattern[str], repl: str, every: bool) -> str:
    """Replace the leftmost-longest match (every match with ``every``)."""
    out: list[str] = []
    i = 0
    while i <= len(value):
        found = next((j for j in range(len(value), i - 1, -1)
                      if regex.fullmatch(value, i, j)), None)
        if found is None or (found == i and not regex.pattern):
            if i < len(value):
                out.append(value[i])
            i += 1
            continue
        out.append(repl)
        if not every:
            out.append(value[found:])
            return "".join(out)
        if found == i:
            if i < len(value):
                out.append(value[i])
            i += 1
        else:
            i = found
    return "".join(out)


def expand(word: str, env: dict[str, str], escape: str = "\\") -> str:
    """A Dockerfile word with quotes removed and $VAR, ${VAR}, ${VAR:-x}, ${VAR-x},
    ${VAR:+x}, ${VAR+x}, ${VAR:?x}, ${VAR?x} and the pattern forms (# ## % %% / //)
    expanded from env, as BuildKit does; InvalidArgument on a syntax error."""
    try:
        return _Expander(word, env, escape).run()
    except InvalidArgument as exc:
        raise InvalidArgument(f"failed to process {_go_quote(word)}: {exc.message}") from None
