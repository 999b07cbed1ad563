"""Typed dataclasses <-> JSON, at the edges only.

Boundary types (the OCI runtime spec, image configs, API bodies) are frozen-free
``slots`` dataclasses; this module converts them from and to JSON objects:

    spec = from_json(Spec, json.load(f), where="config.json")
    json.dump(to_json(spec), f)

Field names become camelCase (``no_new_privileges`` -> ``noNewPrivileges``), or
PascalCase (``cpu_shares`` -> ``CpuShares``, Docker's Engine API spelling) in a
class that says ``__json_naming__: ClassVar[str] = "pascal"``; a field whose
JSON name differs says so with ``field(metadata=json_name("hostID"))``. A class
with ``__json_fold_case__ = True`` also takes keys in another case
(``"image"`` for ``"Image"``), as Go's decoder does.
Unknown keys are ignored, as the specs allow extensions. A value of the wrong
type raises ``InvalidArgument`` naming its path ("config.json: process.args:
expected array, got string").

``to_json`` leaves out ``None`` and empty containers unless a field says
otherwise with ``omit``, for shapes that must match a Go encoder's exactly:

    "unset"  (default) left out when None or an empty list/dict
    "never"  always written
    "empty"  also left out when 0, "" or False (Go ``omitempty``)
    "zero"   a nested object left out when all its fields are zero (``omitzero``)

``keep_empty`` is the same as ``omit="never"``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from ketch.errors import InvalidArgument

T = TypeVar("T")

_JSON_NAME = "json"
_OMIT = "omit"
_OMIT_POLICIES = ("unset", "never", "empty", "zero")


def json_name(name: str, *, keep_empty: bool = False, omit: str = "unset") -> dict[str, object]:
    assert omit in _OMIT_POLICIES, omit
    return {_JSON_NAME: name, _OMIT: "never" if keep_empty else omit}


def keep_empty() -> dict[str, object]:
    return {_OMIT: "never"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _pascal(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


_NAMINGS = {"camel": _camel, "pascal": _pascal}


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean",
               int: "number", float: "number", type(None): "null"}


def _kind(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


# Per class: (field name, json key, resolved type, omit policy). Resolved once.
_FIELDS: dict[type, list[tuple[str, str, Any, str]]] = {}


def _fields(cls: type) -> list[tuple[str, str, Any, str]]:
    cached = _FIELDS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        naming = _NAMINGS[getattr(cls, "__json_naming__", "camel")]
        cached = [
            (f.name, str(f.metadata.get(_JSON_NAME) or naming(f.name)), hints[f.name],
             str(f.metadata.get(_OMIT, "unset")))
            for f in dataclasses.fields(cls)
        ]
        _FIELDS[cls] = cached
    return cached


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, path)
        for a in args:
            try:
                return _convert(a, value, path)
            except InvalidArgument:
                continue
        raise InvalidArgument(f"{path}: unexpected {_kind(value)}")
    if tp is Any or tp is object:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise InvalidArgument(f"{path}: expected array, got {_kind(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidArgument(f"{path}: expected object, got {_kind(value)}")
        _, vt = typing.get_args(tp)
        return {str(k): _convert(vt, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value, where=path)
    if tp is bool:
        if not isinstance(value, bool):
            raise InvalidArgument(f"{path}: expected boolean, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InvalidArgument(f"{path}: expected integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument(f"{path}: expected number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InvalidArgument(f"{path}: expected string, got {_kind(value)}")
        return value
    return value


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    if not isinstance(data, dict):
        raise InvalidArgument(f"{where or cls.__name__}: expected object, got {_kind(data)}")
    kwargs: dict[str, Any] = {}
    folded = ({k.lower(): k for k in data} if getattr(cls, "__json_fold_case__", False)
              else None)
    for name, key, tp, _ in _fields(cls):
        if folded is not None and key not in data:
            key = folded.get(key.lower(), key)
        if key in data and data[key] is not None:
            kwargs[name] = _convert(tp, data[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _is_zero(value: Any) -> bool:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_is_zero(getattr(value, f.name)) for f in dataclasses.fields(value))
    return value in (0, "", None) or (isinstance(value, (list, dict)) and not value)


def to_json(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key, _, omit in _fields(type(obj)):
        value = getattr(obj, name)
        if omit != "never":
            if value is None or (isinstance(value, (list, dict)) and not value):
                continue
            if omit == "empty" and value in (0, "", False) and not isinstance(value, float):
                continue
            if omit == "zero" and _is_zero(value):
                continue
        out[key] = _dump(value)
    return out
