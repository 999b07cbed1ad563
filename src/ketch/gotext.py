"""Go's text forms that Docker's messages and outputs carry, for every layer.

dockerd, the docker CLI and compose are Go programs: their errors quote with
``strconv.Quote`` ("%q"), print durations with ``time.Duration.String`` and read
them with ``time.ParseDuration``. Users and scripts see those forms, so ketch
writes and reads them the same way, here once. Standard library only: the
CLI's start-up imports this.
"""

from __future__ import annotations

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(s: str) -> str:
    """strconv.Quote: a Go-syntax double-quoted string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif o < 0x80 or (0xD800 <= o <= 0xDFFF):
            out.append(f"\\x{o & 0xFF:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
# A number, then its unit: everything up to the next digit or dot, as Go reads it.
# (Compiled on first use: `re` stays out of the CLI's start-up.)
_PART_PATTERN = r"(\d*)(\.\d*)?([^\d.]*)"


def parse_duration(text: str) -> int:
    """time.ParseDuration, in nanoseconds, exactly ("1m30s", "500ms", "1.5h", "-2s");
    ValueError in Go's words ("time: invalid duration \\"x\\"")."""
    s = text
    neg = False
    if s[:1] in ("+", "-"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"time: invalid duration {go_quote(text)}")
    import re

    part = re.compile(_PART_PATTERN)
    total = 0
    pos = 0
    while pos < len(s):
        m = part.match(s, pos)
        assert m is not None            # every group may be empty
        whole, frac, unit = m.group(1), m.group(2) or "", m.group(3)
        if not whole and len(frac) < 2:
            raise ValueError(f"time: invalid duration {go_quote(text)}")
        if not unit:
            raise ValueError(f"time: missing unit in duration {go_quote(text)}")
        if unit not in _UNIT_NS:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration "
                             f"{go_quote(text)}")
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        digits = frac[1:]
        if digits:
            total += int(digits) * scale // 10 ** len(digits)
        pos = m.end()
    return -total if neg else total


def _decimal(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    return f"{whole}." + f"{rest:0{len(str(unit)) - 1}d}".rstrip("0")


def go_duration(ns: int) -> str:
    """time.Duration.String: "1m30s", "1.5s", "500ms", "1h0m0s", "0s"."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text
