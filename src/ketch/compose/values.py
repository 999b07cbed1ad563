"""The value forms of compose files: scalars, sizes, durations, paths, and the short
syntaxes of ports and volumes, each turned into the canonical form or refused with
the path of the value in compose's words (``services.api.ports[0]: invalid port
"3000:abc"``). ``normalize`` applies them key by key.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ketch.compose.errors import ComposeError
from ketch.gotext import go_duration
from ketch.gotext import parse_duration as parse_go_duration

_TRUE = ("true", "yes", "y", "on", "1")
_FALSE = ("false", "no", "n", "off", "0")


# --- scalar conversions ------------------------------------------------------------------------

def to_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ComposeError(f'{path}: invalid boolean "{value}"')


def to_int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise ComposeError(f"{path} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ComposeError(f'{path}: invalid integer "{value}"') from None


def to_float(value: Any, path: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ComposeError(f'{path}: invalid number "{value}"') from None


def scalar_str(value: Any) -> str:
    """A mapping value as compose prints it (YAML's true -> "true", 1.5 -> "1.5")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def to_bytes(value: Any, path: str) -> int:
    """go-units RAMInBytes: "512m", "1.5g", "1024" (binary units); a number is bytes."""
    if isinstance(value, bool):
        raise ComposeError(f"{path} must be a string or number")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text == "-1":
        return -1
    m = _SIZE.match(text)
    if m is None:
        raise ComposeError(f"{path}: invalid size: '{value}'")
    try:
        number = float(m.group(1))
    except ValueError:
        raise ComposeError(f"{path}: invalid size: '{value}'") from None
    return int(number * _SIZE_UNITS[(m.group(2) or "").lower()])




def parse_duration(value: Any, path: str) -> int:
    """Go's time.ParseDuration, in nanoseconds; errors in Go's words after the path."""
    try:
        return parse_go_duration(str(value))
    except ValueError as exc:
        raise ComposeError(f"{path}: {exc}") from None


def duration(value: Any, path: str) -> str:
    return go_duration(parse_duration(value, path))


def octal_mode(value: Any, path: str) -> int:
    """A file mode: a YAML int is taken as written in decimal (0440 is read by YAML 1.1 as
    octal already); a string is octal, as compose reads ``mode: "0440"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise ComposeError(f'{path}: invalid mode "{value}"') from None


# --- lists and mappings ------------------------------------------------------------------------

def string_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [scalar_str(v) for v in value]


def mapping_of(value: Any, *, lookup: Callable[[str], str | None] | None = None,
               missing: str | None = "") -> dict[str, str | None]:
    """list_or_dict -> {k: "v"}; ``K`` alone (or ``K: null``) takes ``lookup(K)``, else
    ``missing`` (labels: "", environment: None). Keys sorted, as Go prints maps."""
    out: dict[str, str | None] = {}
    if value is None:
        return out
    if isinstance(value, Mapping):
        for k, v in value.items():
            if v is None:
                found = lookup(str(k)) if lookup else None
                out[str(k)] = found if found is not None else missing
            else:
                out[str(k)] = scalar_str(v)
    else:
        for item in value:
            key, sep, val = str(item).partition("=")
            if sep:
                out[key] = val
            else:
                found = lookup(key) if lookup else None
                out[key] = found if found is not None else missing
    return dict(sorted(out.items()))


def ordered(d: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """``d`` with the keys of ``order`` first in that order, then the rest (x- keys) as given."""
    out = {k: d[k] for k in order if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


# --- paths -------------------------------------------------------------------------------------

def abs_path(path: str, working_dir: str) -> str:
    """``~`` expanded, relative made absolute against the project directory, cleaned."""
    p = os.path.expanduser(path)
    if not os.path.isabs(p):
        p = os.path.join(working_dir, p)
    return os.path.normpath(p)


def is_remote_context(context: str) -> bool:
    # what the builder fetches itself: git and http(s) URLs
    return bool(re.match(r"^(https?://|git://|git@|github\.com/|ssh://)", context)) or \
        context.endswith(".git")


# --- ports -------------------------------------------------------------------------------------

_PROTOCOLS = ("tcp", "udp", "sctp")


def _port_range(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if m is None:
        return None
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else start
    if end < start or start > 65535 or end > 65535:
        return None
    return start, end


def parse_port(spec: str | int | float, path: str) -> list[dict[str, Any]]:
    """Short syntax ``[[ip:][host[-range]]:]container[-range][/protocol]`` -> long forms,
    one per container port (ranges expanded)."""
    text = str(spec)
    bad = ComposeError(f'{path}: invalid port "{text}"')
    body, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in _PROTOCOLS or not body:
        raise bad
    parts = body.split(":")
    container = parts[-1]
    host = ""
    ip = ""
    if len(parts) == 2:
        host = parts[0]
    elif len(parts) == 3:
        ip, host = parts[0], parts[1]
    elif len(parts) > 3:
        ip, host = ":".join(parts[:-2]), parts[-2]
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise bad from None
    targets = _port_range(container)
    if targets is None:
        raise bad
    hosts = _port_range(host) if host else None
    if host and hosts is None:
        raise bad
    n_targets = targets[1] - targets[0] + 1
    out: list[dict[str, Any]] = []

    def one(target: int, published: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"mode": "ingress"}
        if ip:
            entry["host_ip"] = ip
        entry["target"] = target
        if published is not None:
            entry["published"] = published
        entry["protocol"] = proto
        return entry

    if hosts is None:
        for t in range(targets[0], targets[1] + 1):
            out.append(one(t, None))
    elif n_targets == 1:
        published = str(hosts[0]) if hosts[0] == hosts[1] else f"{hosts[0]}-{hosts[1]}"
        out.append(one(targets[0], published))
    elif hosts[1] - hosts[0] + 1 == n_targets:
        for i in range(n_targets):
            out.append(one(targets[0] + i, str(hosts[0] + i)))
    else:
        raise bad
    return out


def long_port(value: Mapping[str, Any], path: str) -> dict[str, Any]:
    if "target" not in value:
        raise ComposeError(f"{path} missing properties 'target'")
    target = _port_range(str(value["target"]))
    if target is None or target[0] != target[1]:
        raise ComposeError(f'{path}.target: invalid port "{value["target"]}"')
    proto = str(value.get("protocol") or "tcp")
    if proto not in _PROTOCOLS:
        raise ComposeError(f'{path}.protocol: invalid protocol "{proto}"')
    entry: dict[str, Any] = {}
    if "name" in value:
        entry["name"] = value["name"]
    entry["mode"] = value.get("mode") or "ingress"
    if value.get("host_ip"):
        entry["host_ip"] = value["host_ip"]
    entry["target"] = target[0]
    if value.get("published") not in (None, ""):
        published = str(value["published"])
        if _port_range(published) is None:
            raise ComposeError(f'{path}.published: invalid port "{published}"')
        entry["published"] = published
    entry["protocol"] = proto
    if "app_protocol" in value:
        entry["app_protocol"] = value["app_protocol"]
    entry.update((k, v) for k, v in value.items() if k.startswith("x-"))
    return entry


# --- volumes -----------------------------------------------------------------------------------

_PROPAGATION = ("shared", "rshared", "slave", "rslave", "private", "rprivate")


def _is_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _split_colons(spec: str) -> list[str]:
    """``spec`` split at the colons outside ``${...}`` (left there by --no-interpolate)."""
    parts: list[str] = []
    depth = 0
    current = ""
    i = 0
    while i < len(spec):
        ch = spec[i]
        if spec.startswith("${", i):
            depth += 1
            current += "${"
            i += 2
            continue
        if ch == "}" and depth:
            depth -= 1
        if ch == ":" and not depth:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    return parts


def parse_volume(spec: str, path: str, working_dir: str) -> dict[str, Any]:
    """Short syntax ``[source:]target[:mode,...]`` -> long form; a source that is a path
    (``.``, ``/``, ``~``) is a bind mount, else a named volume. Options compose does not
    know (``cached``, ``delegated``) are ignored, as compose ignores them."""
    if not spec:
        raise ComposeError(f"{path}: invalid empty volume spec")
    parts = _split_colons(spec)
    if "" in parts:
        raise ComposeError(f"{path}: invalid spec: {spec}: empty section between colons")
    if len(parts) > 3:
        raise ComposeError(f"{path}: invalid spec: {spec}: too many colons")
    source = ""
    modes: list[str] = []
    if len(parts) == 1:
        target = parts[0]
    elif len(parts) == 2:
        source, target = parts
    else:
        source, target = parts[0], parts[1]
        modes = parts[2].split(",")
    if not target.startswith(("/", "${")):
        raise ComposeError(f"{path}: invalid spec: {spec}: the target must be an absolute path")
    entry: dict[str, Any] = {}
    if not source:
        entry = {"type": "volume", "target": target}
    elif _is_path(source):
        entry = {"type": "bind", "source": abs_path(source, working_dir), "target": target}
    else:
        entry = {"type": "volume", "source": source, "target": target}
    bind: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    for mode in modes:
        if mode == "ro":
            entry["read_only"] = True
        elif mode == "rw":
            entry.pop("read_only", None)
        elif mode in ("z", "Z"):
            bind["selinux"] = mode
        elif mode in _PROPAGATION:
            bind["propagation"] = mode
        elif mode == "nocopy":
            volume["nocopy"] = True
    if entry["type"] == "bind":
        # the short syntax implies create_host_path (docker's legacy -v behaviour);
        # nocopy means nothing for a bind
        entry["bind"] = ordered({"create_host_path": True, **bind},
                                ("propagation", "create_host_path", "selinux"))
    else:
        if bind:
            # the engine refuses bind options on a volume mount: say so here, with the path
            raise ComposeError(f"{path}: invalid spec: {spec}: "
                               f"{', '.join(bind.values())} applies to bind mounts only")
        entry["volume"] = volume
    return entry


def long_volume(value: Mapping[str, Any], path: str, working_dir: str) -> dict[str, Any]:
    kind = value["type"]
    if "target" not in value and kind != "npipe":
        raise ComposeError(f"{path} missing properties 'target'")
    entry: dict[str, Any] = {"type": kind}
    source = value.get("source")
    if source:
        entry["source"] = abs_path(source, working_dir) if kind == "bind" else source
    elif kind == "bind":
        raise ComposeError(f"{path}: a bind mount needs a source")
    if kind == "tmpfs" and source:
        raise ComposeError(f"{path}: a tmpfs mount has no source")
    entry["target"] = value.get("target")
    if "read_only" in value:
        entry["read_only"] = to_bool(value["read_only"], f"{path}.read_only")
    if "consistency" in value:
        entry["consistency"] = value["consistency"]
    if "bind" in value:
        b = dict(value["bind"] or {})
        if "create_host_path" in b:
            b["create_host_path"] = to_bool(b["create_host_path"], f"{path}.bind.create_host_path")
        entry["bind"] = ordered(b, ("propagation", "create_host_path", "recursive", "selinux"))
    if "volume" in value:
        v = dict(value["volume"] or {})
        if "nocopy" in v:
            v["nocopy"] = to_bool(v["nocopy"], f"{path}.volume.nocopy")
        if "labels" in v:
            v["labels"] = mapping_of(v["labels"])
        entry["volume"] = ordered(v, ("labels", "nocopy", "subpath"))
    elif kind == "volume":
        entry["volume"] = {}
    if "tmpfs" in value:
        t = dict(value["tmpfs"] or {})
        if "size" in t:
            t["size"] = to_bytes(t["size"], f"{path}.tmpfs.size")
        if "mode" in t:
            t["mode"] = octal_mode(t["mode"], f"{path}.tmpfs.mode")
        entry["tmpfs"] = ordered(t, ("size", "mode"))
    if "image" in value:
        entry["image"] = dict(value["image"] or {})
    entry.update((k, v) for k, v in value.items() if k.startswith("x-"))
    return entry
