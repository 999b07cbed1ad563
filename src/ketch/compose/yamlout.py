"""``config``'s YAML, written directly: the canonical model is plain data, and PyYAML's
event machinery costs most of ``config``'s time on a large project (84 of 180 ms for
100 services), where the issue asks for the whole command under 0.3 s.

The output is exactly what ``yaml.dump`` gives with compose's dumper in
``normalize`` (block style, sequences indented under their key, strings quoted
only where YAML would read them as something else). What this writer does not
handle itself (multi-line or non-ASCII strings, very long keys, floats) sends
the whole document back to PyYAML, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml


class _Fallback(Exception):
    """Something only PyYAML's emitter writes right."""


def _string_style(resolve: Callable[[str], str], plain_ok: Callable[[str], bool],
                  cache: dict[str, str], value: str) -> str:
    out = cache.get(value)
    if out is not None:
        return out
    if not value.isascii() or not value.isprintable():
        raise _Fallback(value)
    if value != "" and resolve(value) == "tag:yaml.org,2002:str" and plain_ok(value):
        out = value
    else:
        out = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    cache[value] = out
    return out


def dump(data: Mapping[str, Any], fallback: Callable[[Any], str]) -> str:
    """The YAML text of ``data``; ``fallback(data)`` writes it when this writer cannot."""
    resolver = yaml.resolver.Resolver()
    analyzer = yaml.emitter.Emitter(None)        # only its scalar analysis is used
    cache: dict[str, str] = {}

    def resolve(v: str) -> str:
        return str(resolver.resolve(yaml.ScalarNode, v, (True, False)))

    def plain_ok(v: str) -> bool:
        return bool(analyzer.analyze_scalar(v).allow_block_plain)

    def scalar(v: Any) -> str:
        if isinstance(v, str):
            return _string_style(resolve, plain_ok, cache, v)
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        raise _Fallback(v)

    out: list[str] = []

    def key(k: Any) -> str:
        text = scalar(k)
        if len(text) > 128:         # PyYAML writes a long key in the "? " form
            raise _Fallback(k)
        return text

    def mapping(m: Mapping[Any, Any], pad: str, first: str | None = None) -> None:
        # ``first``: the prefix of the first line ("- " of a sequence item), else ``pad``
        lead = first if first is not None else pad
        for k, v in m.items():
            head = f"{lead}{key(k)}:"
            lead = pad
            node(v, head, pad)

    def sequence(s: list[Any], pad: str, first: str | None = None) -> None:
        lead = first if first is not None else pad
        for item in s:
            if isinstance(item, Mapping) and item:
                mapping(item, pad + "  ", lead + "- ")
            elif isinstance(item, list) and item:
                sequence(item, pad + "  ", lead + "- ")
            else:
                out.append(f"{lead}- {inline(item)}")
            lead = pad

    def inline(v: Any) -> str:
        if isinstance(v, Mapping):
            return "{}"
        if isinstance(v, list):
            return "[]"
        return scalar(v)

    def node(v: Any, head: str, pad: str) -> None:
        if isinstance(v, Mapping) and v:
            out.append(head)
            mapping(v, pad + "  ")
        elif isinstance(v, list) and v:
            out.append(head)
            sequence(v, pad + "  ")
        else:
            out.append(f"{head} {inline(v)}")

    try:
        if not isinstance(data, Mapping) or not data:
            raise _Fallback(data)
        mapping(data, "")
    except _Fallback:
        return fallback(data)
    return "\n".join(out) + "\n"
