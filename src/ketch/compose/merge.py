"""Compose's rules for merging YAML trees: several ``-f`` files, ``extends`` and ``include``.

Mappings merge key by key, sequences append, scalars are replaced, and a ``null``
override keeps what was there. The exceptions (Compose v2's ``override`` package):
``command``, ``entrypoint`` and ``healthcheck.test`` are replaced; ``environment``,
``labels``, ``sysctls``, ``build.args`` and friends merge as mappings whatever form
each side was written in; ``depends_on`` and service ``networks`` merge as mappings
(a list turned into one); ``build: "dir"`` merges as ``{context: dir}``; ``logging``
options merge only for the same driver. Then ``enforce_unicity`` drops earlier
entries that a later one redefines: ``ports`` (same binding), ``volumes`` (same
target), ``secrets``/``configs`` (same target), ``expose``, ``dns``, ``cap_add``...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ketch.compose.errors import ComposeError

Path = tuple[str, ...]


# --- the !reset and !override YAML tags ----------------------------------------------

class Reset:
    """A value tagged ``!reset``: the key is removed from what it is merged onto."""

    _instance: Reset | None = None

    def __new__(cls) -> Reset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "!reset"

    def __deepcopy__(self, memo: dict[int, Any]) -> Reset:
        return self


RESET = Reset()


class OverrideDict(dict[str, Any]):
    """A mapping tagged ``!override``: it replaces what it is merged onto."""


class OverrideList(list[Any]):
    """A sequence tagged ``!override``: it replaces what it is merged onto."""


def strip_markers(value: Any) -> Any:
    """``value`` without ``!reset`` entries and with ``!override`` collections made plain."""
    if isinstance(value, dict):
        return {k: strip_markers(v) for k, v in value.items() if v is not RESET}
    if isinstance(value, list):
        return [strip_markers(v) for v in value if v is not RESET]
    return value


def _matches(path: Path, pattern: Path) -> bool:
    return len(path) == len(pattern) and all(
        p == "*" or p == part for p, part in zip(pattern, path, strict=True)
    )


def _pattern(text: str) -> Path:
    return tuple(text.split("."))


class _Table:
    """Patterns indexed by (length, last part): the lookup is done for every node."""

    def __init__(self, rules: list[tuple[Path, Any]]) -> None:
        self.by_tail: dict[tuple[int, str], list[tuple[Path, Any]]] = {}
        for pattern, rule in rules:
            self.by_tail.setdefault((len(pattern), pattern[-1]), []).append((pattern, rule))
        self.depth = max(len(p) for p, _ in rules)

    def find(self, path: Path) -> Any:
        if not path or len(path) > self.depth:
            return None
        for key in ((len(path), path[-1]), (len(path), "*")):
            for pattern, rule in self.by_tail.get(key, ()):
                if _matches(path, pattern):
                    return rule
        return None


def path_text(path: Path) -> str:
    return ".".join(path)


# --- conversions --------------------------------------------------------------------

def _to_mapping(value: Any) -> dict[str, Any]:
    """``["K=V", "K2"]`` or ``{K: V}`` as a mapping (``K2`` without a value maps to None)."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            out[key] = val if sep else None
        return out
    if isinstance(value, str):
        return _to_mapping([value])
    return {}


def _to_sequence(value: Any) -> list[Any]:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        seq: list[str] = []
        for key, val in value.items():
            if val is None:
                seq.append(key)
            elif isinstance(val, list):
                seq.extend(f"{key}={_text(v)}" for v in val)
            else:
                seq.append(f"{key}={_text(val)}")
        return sorted(seq)
    if value is None:
        return []
    return [value]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _keys_to_mapping(value: Any, default: dict[str, Any] | None) -> dict[str, Any]:
    """A list of names (``depends_on: [db]``, ``networks: [front]``) as a mapping."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return {str(k): (dict(default) if default is not None else None) for k in value}
    return {}


# --- special mergers ------------------------------------------------------------------

Merger = Callable[[Any, Any, Path], Any]


def _override(_base: Any, over: Any, _path: Path) -> Any:
    return over


def _merge_as_mapping(base: Any, over: Any, _path: Path) -> Any:
    merged = _to_mapping(base)
    merged.update(_to_mapping(over))
    return merged


def _merge_to_sequence(base: Any, over: Any, _path: Path) -> Any:
    return _to_sequence(base) + _to_sequence(over)


def _merge_extra_hosts(base: Any, over: Any, _path: Path) -> Any:
    left = _to_sequence(base)
    return left + [v for v in _to_sequence(over) if v not in left]


def _merge_build(base: Any, over: Any, path: Path) -> Any:
    def as_build(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            return {"context": value}
        return dict(value) if isinstance(value, dict) else {}

    return _merge_mappings(as_build(base), as_build(over), path)


_DEPENDS_DEFAULT = {"condition": "service_started", "required": True}


def _merge_depends_on(base: Any, over: Any, path: Path) -> Any:
    return _merge_mappings(
        _keys_to_mapping(base, _DEPENDS_DEFAULT), _keys_to_mapping(over, _DEPENDS_DEFAULT), path
    )


def _merge_networks(base: Any, over: Any, path: Path) -> Any:
    return _merge_mappings(_keys_to_mapping(base, None), _keys_to_mapping(over, None), path)


def _merge_logging(base: Any, over: Any, path: Path) -> Any:
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over if over is not None else base
    if "driver" not in base or "driver" not in over or base["driver"] == over["driver"]:
        return _merge_mappings(dict(base), over, path)
    return over


def _merge_ulimit(base: Any, over: Any, path: Path) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return _merge_mappings(dict(base), over, path)
    return over if over is not None else base


def _merge_ipam_config(base: Any, over: Any, path: Path) -> Any:
    if not isinstance(base, list) or not isinstance(over, list):
        return over if over is not None else base
    merged: list[Any] = [dict(c) if isinstance(c, dict) else c for c in base]
    for item in over:
        subnet = item.get("subnet") if isinstance(item, dict) else None
        for i, existing in enumerate(merged):
            if isinstance(existing, dict) and subnet is not None and existing.get("subnet") == subnet:
                merged[i] = _merge_mappings(existing, item, path)
                break
        else:
            merged.append(item)
    return merged


_SPECIALS = _Table([
    (_pattern(p), m)
    for p, m in [
        ("networks.*.ipam.config", _merge_ipam_config),
        ("networks.*.labels", _merge_as_mapping),
        ("volumes.*.labels", _merge_as_mapping),
        ("services.*.annotations", _merge_as_mapping),
        ("services.*.build", _merge_build),
        ("services.*.build.args", _merge_as_mapping),
        ("services.*.build.additional_contexts", _merge_as_mapping),
        ("services.*.build.extra_hosts", _merge_extra_hosts),
        ("services.*.build.labels", _merge_as_mapping),
        ("services.*.command", _override),
        ("services.*.depends_on", _merge_depends_on),
        ("services.*.deploy.labels", _merge_as_mapping),
        ("services.*.dns", _merge_to_sequence),
        ("services.*.dns_opt", _merge_to_sequence),
        ("services.*.dns_search", _merge_to_sequence),
        ("services.*.entrypoint", _override),
        ("services.*.env_file", _merge_to_sequence),
        ("services.*.label_file", _merge_to_sequence),
        ("services.*.environment", _merge_as_mapping),
        ("services.*.extra_hosts", _merge_extra_hosts),
        ("services.*.healthcheck.test", _override),
        ("services.*.labels", _merge_as_mapping),
        ("services.*.volumes.*.volume.labels", _merge_as_mapping),
        ("services.*.logging", _merge_logging),
        ("services.*.networks", _merge_networks),
        ("services.*.sysctls", _merge_as_mapping),
        ("services.*.tmpfs", _merge_to_sequence),
        ("services.*.ulimits.*", _merge_ulimit),
    ]
])


def merge_yaml(base: Any, over: Any, path: Path = ()) -> Any:
    """``over`` merged onto ``base`` (``path`` says where, for the special rules).

    ``base`` mappings may be updated in place; pass copies when that matters."""
    if over is RESET:
        return None
    if isinstance(over, (OverrideDict, OverrideList)):
        return strip_markers(over)
    merger = _SPECIALS.find(path)
    if merger is not None:
        if base is None:
            return over
        return merger(base, over, path)
    if over is None:
        return base
    if isinstance(base, dict):
        if not isinstance(over, dict):
            raise ComposeError(f"cannot override {path_text(path)}")
        return _merge_mappings(base, over, path)
    if isinstance(base, list):
        if not isinstance(over, list):
            raise ComposeError(f"cannot override {path_text(path)}")
        return base + over
    return over


def _merge_mappings(base: dict[str, Any], over: dict[str, Any], path: Path) -> dict[str, Any]:
    for key, value in over.items():
        if value is RESET:
            base.pop(key, None)
            continue
        if key not in base or isinstance(value, (OverrideDict, OverrideList)):
            base[key] = strip_markers(value)
            continue
        base[key] = merge_yaml(base[key], value, (*path, key))
    return base


def merge_models(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """One more compose file merged onto the model built so far."""
    result = merge_yaml(base, over, ())
    assert isinstance(result, dict)
    return result


def extend_service(base: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    """A service that ``extends`` ``base``: its own keys win, with the same merge rules."""
    result = merge_yaml(base, service, ("services", "x"))
    assert isinstance(result, dict)
    return result


# --- unicity -------------------------------------------------------------------------

Indexer = Callable[[Any], "str | None"]


def _key_value_index(value: Any) -> str | None:
    if isinstance(value, (dict, list)):
        return None
    return _text(value).partition("=")[0]


def volume_target(spec: str) -> str:
    """The container path of a short-syntax volume (``src:dst[:mode]`` or ``dst``)."""
    parts = spec.split(":")
    return parts[0] if len(parts) == 1 else parts[1]


def _volume_index(value: Any) -> str | None:
    if isinstance(value, dict):
        target = value.get("target")
        return target if isinstance(target, str) else None
    if isinstance(value, str):
        return volume_target(value)
    return None


def _device_index(value: Any) -> str | None:
    if isinstance(value, dict):
        target = value.get("target")
        return target if isinstance(target, str) else None
    if isinstance(value, str):
        return volume_target(value)
    return None


def _expose_index(value: Any) -> str | None:
    return None if isinstance(value, (dict, list)) else _text(value)


def _mount_index(default_dir: str) -> Indexer:
    def index(value: Any) -> str | None:
        if isinstance(value, str):
            return f"{default_dir}/{value}"
        if isinstance(value, dict):
            if isinstance(value.get("target"), str):
                return str(value["target"])
            return f"{default_dir}/{value.get('source')}"
        return None

    return index


def _port_index(value: Any) -> str | None:
    if isinstance(value, dict):
        if "target" not in value:
            return None
        return "{}:{}:{}/{}".format(
            value.get("host_ip", "0.0.0.0"),
            value.get("published", ""),
            value["target"],
            value.get("protocol", "tcp"),
        )
    if isinstance(value, list):
        return None
    return _text(value)


def _env_file_index(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return str(value["path"])
    return None


_UNIQUE = _Table([
    (_pattern(p), ix)
    for p, ix in [
        ("networks.*.labels", _key_value_index),
        ("services.*.annotations", _key_value_index),
        ("services.*.build.args", _key_value_index),
        ("services.*.build.additional_contexts", _key_value_index),
        ("services.*.build.platforms", _key_value_index),
        ("services.*.build.tags", _key_value_index),
        ("services.*.build.labels", _key_value_index),
        ("services.*.cap_add", _key_value_index),
        ("services.*.cap_drop", _key_value_index),
        ("services.*.configs", _mount_index("")),
        ("services.*.deploy.labels", _key_value_index),
        ("services.*.devices", _device_index),
        ("services.*.dns", _key_value_index),
        ("services.*.dns_opt", _key_value_index),
        ("services.*.dns_search", _key_value_index),
        ("services.*.environment", _key_value_index),
        ("services.*.env_file", _env_file_index),
        ("services.*.expose", _expose_index),
        ("services.*.labels", _key_value_index),
        ("services.*.links", _key_value_index),
        ("services.*.networks.*.aliases", _key_value_index),
        ("services.*.networks.*.link_local_ips", _key_value_index),
        ("services.*.ports", _port_index),
        ("services.*.profiles", _key_value_index),
        ("services.*.secrets", _mount_index("/run/secrets")),
        ("services.*.sysctls", _key_value_index),
        ("services.*.tmpfs", _key_value_index),
        ("services.*.volumes", _volume_index),
    ]
])


def _unique(items: list[Any], indexer: Indexer) -> list[Any]:
    seq: list[Any] = []
    positions: dict[str, int] = {}
    for item in items:
        key = indexer(item)
        if key is None:
            # an entry we cannot key is left for validation to report
            seq.append(item)
        elif key in positions:
            seq[positions[key]] = item
        else:
            positions[key] = len(seq)
            seq.append(item)
    return seq


def enforce_unicity(value: Any, path: Path = ()) -> Any:
    """Later entries of the keyed sequences replace earlier ones with the same key, in place."""
    if isinstance(value, dict):
        if len(path) < _UNIQUE.depth:
            for key, item in value.items():
                value[key] = enforce_unicity(item, (*path, str(key)))
        return value
    if isinstance(value, list):
        indexer = _UNIQUE.find(path)
        if indexer is not None:
            return _unique(value, indexer)
    return value
