"""Validate a loaded compose model and give its canonical form (what ``config`` prints).

The canonical model is compose v2's ``docker compose config --format json`` shape:
every short form in its long form (ports, volumes, lists that are mappings, strings
that are commands), durations as Go duration strings, sizes in bytes, relative paths
absolute against the project directory, ``env_file`` contents merged into
``environment``, top-level networks/volumes/secrets/configs named ``<project>_<key>``
and the ``default`` network added where services use it, every reference checked.
Keys are in compose's order, so ``dump`` prints what compose prints.

Input is duck-typed on ``RawProject`` (``name``, ``working_dir``, ``environment``,
``model``, ``files``) so this module does not depend on the loader.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import yaml

from ketch.compose import dotenv, schema
from ketch.compose.errors import ComposeError
from ketch.gotext import go_duration
from ketch.gotext import parse_duration as parse_go_duration


class RawLike(Protocol):
    name: str
    working_dir: str
    environment: dict[str, str]
    model: dict[str, Any]


# compose-go's ServiceConfig field order (its yaml/json output order)
SERVICE_ORDER = (
    "profiles", "annotations", "attach", "build", "develop", "blkio_config", "cap_add",
    "cap_drop", "cgroup_parent", "cgroup", "cpu_count", "cpu_percent", "cpu_period",
    "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpus", "cpuset", "cpu_shares",
    "command", "configs", "container_name", "credential_spec", "depends_on", "deploy",
    "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname",
    "entrypoint", "provider", "environment", "env_file", "expose", "extends",
    "external_links", "extra_hosts", "group_add", "gpus", "hostname", "healthcheck", "image",
    "init", "ipc", "isolation", "labels", "label_file", "links", "logging", "mem_limit",
    "mem_reservation", "memswap_limit", "mem_swappiness", "mac_address", "models",
    "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
    "platform", "ports", "privileged", "pull_policy", "pull_refresh_after", "read_only",
    "restart", "runtime", "scale", "secrets", "security_opt", "shm_size", "stdin_open",
    "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits",
    "use_api_socket", "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
    "post_start", "pre_stop",
)
TOP_ORDER = ("name", "services", "networks", "volumes", "secrets", "configs", "models")
BUILD_ORDER = (
    "context", "dockerfile", "dockerfile_inline", "entitlements", "args", "ssh", "labels",
    "cache_from", "cache_to", "no_cache", "additional_contexts", "network", "provenance",
    "sbom", "pull", "target", "shm_size", "extra_hosts", "isolation", "privileged", "secrets",
    "tags", "ulimits", "platforms",
)
NETWORK_ORDER = ("name", "driver", "driver_opts", "ipam", "external", "internal",
                 "enable_ipv4", "enable_ipv6", "attachable", "labels")
VOLUME_ORDER = ("name", "driver", "driver_opts", "external", "labels")
FILE_OBJECT_ORDER = ("name", "content", "environment", "file", "external", "labels",
                     "driver", "driver_opts", "template_driver")
DEPLOY_ORDER = ("mode", "replicas", "labels", "update_config", "rollback_config", "resources",
                "restart_policy", "placement", "endpoint_mode")
BOOL_KEYS = ("attach", "init", "oom_kill_disable", "privileged", "read_only", "stdin_open",
             "tty")
BYTE_KEYS = ("mem_limit", "mem_reservation", "memswap_limit", "shm_size")
INT_KEYS = ("cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_shares",
            "mem_swappiness", "oom_score_adj", "pids_limit")
MICROSECOND_KEYS = ("cpu_rt_period", "cpu_rt_runtime")  # a number of µs, or a duration
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


# --- the service -------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, raw: RawLike) -> None:
        self.project = raw.name
        self.working_dir = os.path.abspath(raw.working_dir)
        self.environment = dict(raw.environment or {})

    def lookup(self, name: str) -> str | None:
        return self.environment.get(name)

    def path(self, p: str) -> str:
        return abs_path(p, self.working_dir)


def _command(value: Any) -> list[str]:
    """A string is split with shell rules (quotes, backslashes), as compose splits it."""
    if isinstance(value, str):
        return shlex.split(value)
    return [scalar_str(v) for v in value]


def _build(value: Any, p: str, ctx: _Ctx) -> dict[str, Any]:
    b: dict[str, Any] = {"context": value} if isinstance(value, str) else dict(value)
    context = str(b.get("context") or ".")
    b["context"] = context if is_remote_context(context) else ctx.path(context)
    if "dockerfile" not in b and "dockerfile_inline" not in b:
        b["dockerfile"] = "Dockerfile"
    for key in ("args", "additional_contexts"):
        if key in b:
            b[key] = mapping_of(b[key], lookup=ctx.lookup, missing=None)
    if "labels" in b:
        b["labels"] = mapping_of(b["labels"])
    if "additional_contexts" in b:
        b["additional_contexts"] = {
            k: (v if v is None or is_remote_context(v) or ":" in v.split("/")[0]
                else ctx.path(v))
            for k, v in b["additional_contexts"].items()}
    if "shm_size" in b:
        b["shm_size"] = to_bytes(b["shm_size"], f"{p}.shm_size")
    for key in ("no_cache", "pull", "privileged"):
        if key in b:
            b[key] = to_bool(b[key], f"{p}.{key}")
    if "secrets" in b:
        b["secrets"] = _file_refs(b["secrets"], f"{p}.secrets")
    if "extra_hosts" in b:
        b["extra_hosts"] = _extra_hosts(b["extra_hosts"], f"{p}.extra_hosts")
    if "ulimits" in b:
        b["ulimits"] = _ulimits(b["ulimits"], f"{p}.ulimits")
    if "ssh" in b:
        ssh = b["ssh"]
        b["ssh"] = ([f"{k}={v}" if v is not None else k for k, v in ssh.items()]
                    if isinstance(ssh, Mapping) else list(ssh))
    return ordered(b, BUILD_ORDER)


def _file_refs(value: list[Any], p: str) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append({"source": item})
            continue
        ref = dict(item)
        if "source" not in ref:
            raise ComposeError(f"{p}[{i}] missing properties 'source'")
        if "mode" in ref:
            ref["mode"] = octal_mode(ref["mode"], f"{p}[{i}].mode")
        out.append(ordered(ref, ("source", "target", "uid", "gid", "mode")))
    return out


_HOST_IP = re.compile(r"^([^:=]+)[:=](.+)$")


def _extra_hosts(value: Any, p: str) -> list[str]:
    out: list[str] = []
    if isinstance(value, Mapping):
        for host, ips in value.items():
            for ip in string_list(ips):
                out.append(f"{host}={ip}")
        return out
    for i, item in enumerate(value):
        text = str(item)
        if "=" in text:
            host, _, ip = text.partition("=")
        else:
            m = _HOST_IP.match(text)
            if m is None:
                raise ComposeError(f'{p}[{i}]: invalid extra host "{text}"')
            host, ip = m.group(1), m.group(2)
        if not host or not ip:
            raise ComposeError(f'{p}[{i}]: invalid extra host "{text}"')
        out.append(f"{host}={ip}")
    return out


def _ulimits(value: Mapping[str, Any], p: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, limit in sorted(value.items()):
        if isinstance(limit, Mapping):
            out[name] = {"soft": to_int(limit["soft"], f"{p}.{name}.soft"),
                         "hard": to_int(limit["hard"], f"{p}.{name}.hard")}
        else:
            n = to_int(limit, f"{p}.{name}")
            out[name] = {"soft": n, "hard": n}
    return out


def _healthcheck(value: Mapping[str, Any], p: str) -> dict[str, Any]:
    hc: dict[str, Any] = {}
    test = value.get("test")
    disable = to_bool(value["disable"], f"{p}.disable") if "disable" in value else False
    if isinstance(test, str):
        hc["test"] = ["CMD-SHELL", test]
    elif test is not None:
        hc["test"] = [str(t) for t in test]
        if hc["test"] and hc["test"][0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ComposeError(f'{p}.test must start either by "CMD", "CMD-SHELL" or "NONE"')
    if disable:
        hc["test"] = ["NONE"]
    for key in ("timeout", "interval"):
        if key in value:
            hc[key] = duration(value[key], f"{p}.{key}")
    if "retries" in value:
        hc["retries"] = to_int(value["retries"], f"{p}.retries")
    for key in ("start_period", "start_interval"):
        if key in value:
            hc[key] = duration(value[key], f"{p}.{key}")
    if disable:
        hc["disable"] = True
    hc.update((k, v) for k, v in value.items() if k.startswith("x-"))
    return hc


def _resources(value: Mapping[str, Any], p: str) -> dict[str, Any]:
    r = dict(value)
    if "cpus" in r:
        cpus = to_float(r["cpus"], f"{p}.cpus")
        r["cpus"] = format(cpus, "g") if not cpus.is_integer() else str(int(cpus))
    if "memory" in r:
        r["memory"] = to_bytes(r["memory"], f"{p}.memory")
    if "pids" in r:
        r["pids"] = to_int(r["pids"], f"{p}.pids")
    return ordered(r, ("cpus", "memory", "pids", "generic_resources", "devices"))


def _deploy(value: Mapping[str, Any] | None, p: str) -> dict[str, Any]:
    d = dict(value or {})
    if "replicas" in d:
        d["replicas"] = to_int(d["replicas"], f"{p}.replicas")
    if "labels" in d:
        d["labels"] = mapping_of(d["labels"])
    if "resources" in d:
        res = dict(d["resources"] or {})
        for key in ("limits", "reservations"):
            if key in res:
                res[key] = _resources(res[key] or {}, f"{p}.resources.{key}")
        d["resources"] = ordered(res, ("limits", "reservations"))
    if "restart_policy" in d:
        rp = dict(d["restart_policy"] or {})
        for key in ("delay", "window"):
            if key in rp:
                rp[key] = duration(rp[key], f"{p}.restart_policy.{key}")
        if "max_attempts" in rp:
            rp["max_attempts"] = to_int(rp["max_attempts"], f"{p}.restart_policy.max_attempts")
        d["restart_policy"] = ordered(rp, ("condition", "delay", "max_attempts", "window"))
    for key in ("rollback_config", "update_config"):
        if key in d:
            c = dict(d[key] or {})
            for k in ("delay", "monitor"):
                if k in c:
                    c[k] = duration(c[k], f"{p}.{key}.{k}")
            if "parallelism" in c:
                c["parallelism"] = to_int(c["parallelism"], f"{p}.{key}.parallelism")
            d[key] = c
    return ordered(d, DEPLOY_ORDER)


def _devices(value: list[Any], p: str) -> list[dict[str, str]]:
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) > 3 or not parts[0]:
                raise ComposeError(f'{p}[{i}]: invalid device "{item}"')
            source = parts[0]
            target = parts[1] if len(parts) > 1 and parts[1] else source
            perms = parts[2] if len(parts) > 2 else "rwm"
            # "src:rwm" is the source with permissions
            if len(parts) == 2 and re.fullmatch(r"[rwm]+", parts[1]):
                target, perms = source, parts[1]
        else:
            source = item["source"]
            target = item.get("target") or source
            perms = item.get("permissions") or "rwm"
        if not re.fullmatch(r"[rwm]{1,3}", perms):
            raise ComposeError(f'{p}[{i}]: invalid device permissions "{perms}"')
        out.append({"source": source, "target": target, "permissions": perms})
    return out


def _env_files(value: Any, p: str, ctx: _Ctx,
               environment: dict[str, str | None]) -> dict[str, str]:
    """Read a service's env files (later files win); a missing file errors unless
    ``required: false``. ``${VAR}`` in them sees the project environment first."""
    entries = dotenv.env_file_entries(value, ctx.working_dir, where=p)
    for e in entries:
        e.path = os.path.normpath(e.path)

    def lookup(name: str) -> str | None:
        found = ctx.lookup(name)
        if found is None:
            v = environment.get(name)
            found = v if isinstance(v, str) else None
        return found

    return dotenv.read_env_files(entries, lookup)


def _label_files(paths: list[str], p: str, ctx: _Ctx) -> dict[str, str]:
    """``label_file:`` files, ``KEY=VALUE`` lines as in env files (later files win)."""
    out: dict[str, str] = {}
    for given in paths:
        path = ctx.path(given)
        if not os.path.exists(path):
            raise ComposeError(f"{p}: label file {path} not found: stat {path}: "
                               "no such file or directory")
        try:
            dotenv.read_dotenv(path, into=out)
        except ComposeError as exc:
            raise ComposeError(f"{p}: {exc}") from None
    return out


def _microseconds(value: Any, p: str) -> int:
    if isinstance(value, str) and value.strip() and not value.strip().lstrip("+-").isdigit():
        return parse_duration(value, p) // 1_000
    return to_int(value, p)


def _blkio(value: Mapping[str, Any], p: str) -> dict[str, Any]:
    b = dict(value)
    if "weight" in b:
        b["weight"] = to_int(b["weight"], f"{p}.weight")
    for key in ("device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops"):
        limits = []
        for i, item in enumerate(b.get(key) or []):
            item = dict(item)
            if "rate" in item:
                where = f"{p}.{key}[{i}].rate"
                item["rate"] = (to_bytes(item["rate"], where) if key.endswith("bps")
                                else to_int(item["rate"], where))
            limits.append(ordered(item, ("path", "rate")))
        if key in b:
            b[key] = limits
    if "weight_device" in b:
        b["weight_device"] = [
            ordered({**d, **({"weight": to_int(d["weight"], f"{p}.weight_device[{i}].weight")}
                             if "weight" in d else {})}, ("path", "weight"))
            for i, d in enumerate(b["weight_device"] or [])]
    return ordered(b, ("weight", "weight_device", "device_read_bps", "device_read_iops",
                       "device_write_bps", "device_write_iops"))


def _develop(value: Mapping[str, Any] | None, p: str, ctx: _Ctx) -> dict[str, Any]:
    d = dict(value or {})
    if "watch" in d:
        watch = []
        for i, w in enumerate(d["watch"] or []):
            w = dict(w)
            w["path"] = ctx.path(w["path"])
            for key in ("ignore", "include"):
                if key in w:
                    w[key] = string_list(w[key])
            if w["action"] != "rebuild" and not w.get("target"):
                raise ComposeError(f"{p}.watch[{i}]: target is required for non-rebuild actions")
            watch.append(ordered(w, ("ignore", "include", "path", "action", "target", "exec")))
        d["watch"] = watch
    return d


def _service(name: str, svc: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    p = f"services.{name}"
    s: dict[str, Any] = {}
    for key, value in svc.items():
        kp = f"{p}.{key}"
        if value is None and key not in ("command", "entrypoint"):
            continue  # null is unset (an override file's way to say "not this")
        if key in BOOL_KEYS:
            s[key] = to_bool(value, kp)
        elif key in BYTE_KEYS:
            s[key] = to_bytes(value, kp)
        elif key in INT_KEYS:
            s[key] = to_int(value, kp)
        elif key == "cpus":
            s[key] = to_float(value, kp)
        elif key == "scale":
            s[key] = to_int(value, kp)
        elif key == "build":
            s[key] = _build(value, kp, ctx)
        elif key in ("command", "entrypoint"):
            if value is not None:
                try:
                    s[key] = _command(value)
                except ValueError as exc:
                    raise ComposeError(f"{kp}: {exc}") from None
        elif key == "environment":
            s[key] = mapping_of(value, lookup=ctx.lookup, missing=None)
        elif key in ("labels", "annotations", "sysctls"):
            s[key] = mapping_of(value)
        elif key == "ports":
            ports: list[dict[str, Any]] = []
            for i, item in enumerate(value):
                ip = f"{kp}[{i}]"
                ports.extend([long_port(item, ip)] if isinstance(item, Mapping)
                             else parse_port(item, ip))
            s[key] = ports
        elif key == "expose":
            for i, item in enumerate(value):
                if _port_range(str(item).partition("/")[0]) is None:
                    raise ComposeError(f'{kp}[{i}]: invalid port "{item}"')
            s[key] = [scalar_str(v) for v in value]
        elif key == "volumes":
            s[key] = [long_volume(item, f"{kp}[{i}]", ctx.working_dir)
                      if isinstance(item, Mapping)
                      else parse_volume(item, f"{kp}[{i}]", ctx.working_dir)
                      for i, item in enumerate(value)]
        elif key == "tmpfs":
            s[key] = string_list(value)
        elif key == "depends_on":
            s[key] = _depends_on(value, kp)
        elif key == "healthcheck":
            s[key] = _healthcheck(value, kp)
        elif key == "deploy":
            s[key] = _deploy(value, kp)
        elif key == "develop":
            s[key] = _develop(value, kp, ctx)
        elif key == "networks":
            if value:  # an empty list is no list (the default network, or network_mode)
                s[key] = _service_networks(value)
        elif key == "stop_grace_period":
            s[key] = duration(value, kp)
        elif key == "ulimits":
            s[key] = _ulimits(value, kp)
        elif key == "extra_hosts":
            s[key] = _extra_hosts(value, kp)
        elif key in ("dns", "dns_search", "dns_opt", "cap_add", "cap_drop", "security_opt",
                     "group_add", "links", "volumes_from", "profiles", "external_links",
                     "device_cgroup_rules"):
            s[key] = string_list(value)
        elif key == "label_file":
            continue  # read into labels below
        elif key in MICROSECOND_KEYS:
            s[key] = _microseconds(value, kp)
        elif key == "blkio_config":
            s[key] = _blkio(value, kp)
        elif key == "devices":
            s[key] = _devices(value, kp)
        elif key == "logging":
            lg = dict(value)
            if "options" in lg:
                lg["options"] = {k: (None if v is None else scalar_str(v))
                                 for k, v in sorted((lg["options"] or {}).items())}
            s[key] = ordered(lg, ("driver", "options"))
        elif key in ("secrets", "configs"):
            s[key] = _file_refs(value, kp)
        elif key == "env_file":
            continue  # merged into environment below
        elif key == "extends":
            continue  # resolved by the loader
        else:
            s[key] = copy.deepcopy(value)
    if svc.get("label_file"):
        from_files = _label_files(string_list(svc["label_file"]), f"{p}.label_file", ctx)
        s["labels"] = dict(sorted({**from_files, **(s.get("labels") or {})}.items()))
    if "env_file" in svc:
        env = s.get("environment", {})
        try:
            from_files = _env_files(svc["env_file"], f"{p}.env_file", ctx, env)
        except ComposeError as exc:
            if str(exc).startswith(f"{p}.env_file"):
                raise
            raise ComposeError(f"{p}.env_file: {exc}") from None
        merged: dict[str, str | None] = dict(from_files)
        # a bare KEY the environment does not have leaves the file's value in place
        merged.update((k, v) for k, v in env.items() if v is not None or k not in merged)
        s["environment"] = dict(sorted(merged.items()))
    _consistency(name, s)
    _implicit_dependencies(s)
    if s.get("pull_policy") == "if_not_present":
        s["pull_policy"] = "missing"
    if "image" not in s and "build" not in s and "provider" not in s:
        raise ComposeError(f'service "{name}" has neither an image nor a build context specified: '
                           "invalid compose project")
    if "network_mode" in s and "networks" in s:
        raise ComposeError(f"service {name} declares mutually exclusive `network_mode` and "
                           "`networks`: invalid compose project")
    return ordered(s, SERVICE_ORDER)


def _consistency(name: str, s: dict[str, Any]) -> None:
    """What compose refuses across keys: two spellings of one setting that disagree."""
    p = f"services.{name}"
    deploy = s.get("deploy") or {}
    replicas = deploy.get("replicas")
    if "scale" in s:
        if replicas is not None and replicas != s["scale"]:
            raise ComposeError(f"{p}: can't set distinct values on 'scale' and 'deploy.replicas': "
                               "invalid compose project")
        if "deploy" in s:
            s["deploy"] = ordered({**deploy, "replicas": s["scale"]}, DEPLOY_ORDER)
    count = s.get("scale", replicas)
    if count is not None and count < 0:
        which = "scale" if "scale" in s else "deploy.replicas"
        raise ComposeError(f"{p}.{which} must be greater than or equal to 0")
    if count is not None and count > 1 and s.get("container_name"):
        which = "scale" if "scale" in s else "deploy.replicas"
        raise ComposeError(f"services.{name}: can't set container_name and {which} as container "
                           "name must be unique: invalid compose project")
    resources = deploy.get("resources") or {}
    limits = resources.get("limits") or {}
    reservations = resources.get("reservations") or {}
    pairs = (("cpus", limits, "cpus", "deploy.resources.limits.cpus"),
             ("mem_limit", limits, "memory", "deploy.resources.limits.memory"),
             ("mem_reservation", reservations, "memory", "deploy.resources.reservations.memory"),
             ("pids_limit", limits, "pids", "deploy.resources.limits.pids"))
    for key, section, field_, where in pairs:
        if key in s and field_ in section:
            ours = float(s[key]) if key == "cpus" else s[key]
            theirs = float(section[field_]) if key == "cpus" else section[field_]
            if ours != theirs:
                raise ComposeError(f"{p}: can't set distinct values on '{key}' and '{where}': "
                                   "invalid compose project")
    build = s.get("build") or {}
    if build.get("dockerfile") and build.get("dockerfile_inline"):
        raise ComposeError(f'service "{name}" declares mutualy exclusive dockerfile and '
                           "dockerfile_inline: invalid compose project")


def _implicit_dependencies(s: dict[str, Any]) -> None:
    """Compose makes a service depend on what it links to, shares a namespace with
    (``service:x``) or mounts volumes from, so those start first."""
    found: list[tuple[str, bool]] = []
    for link in s.get("links") or []:
        found.append((link.split(":", 1)[0], True))
    for key in ("network_mode", "ipc", "pid", "uts", "cgroup"):
        ref = _service_ref(str(s.get(key) or ""))
        if ref:
            found.append((ref, True))
    for vf in s.get("volumes_from") or []:
        if not vf.startswith("container:"):
            found.append((vf.split(":", 1)[0], False))
    if not found:
        return
    deps = dict(s.get("depends_on") or {})
    for dep, restart in found:
        if dep not in deps:
            entry: dict[str, Any] = {"condition": "service_started"}
            if restart:
                entry["restart"] = True
            entry["required"] = True
            deps[dep] = entry
    s["depends_on"] = dict(sorted(deps.items()))


def _depends_on(value: Any, p: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if isinstance(value, list):
        for dep in value:
            out[dep] = {"condition": "service_started", "required": True}
    else:
        for dep, d in value.items():
            entry: dict[str, Any] = {"condition": d["condition"]}
            if "restart" in d:
                entry["restart"] = to_bool(d["restart"], f"{p}.{dep}.restart")
            entry["required"] = d.get("required", True)
            entry.update((k, v) for k, v in d.items() if k.startswith("x-"))
            out[dep] = entry
    return dict(sorted(out.items()))


def _service_networks(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {n: None for n in sorted(value)}
    out: dict[str, Any] = {}
    for n, cfg in sorted(value.items()):
        if cfg is None:
            out[n] = None
            continue
        c = dict(cfg)
        if "driver_opts" in c:
            c["driver_opts"] = {k: scalar_str(v) for k, v in sorted(c["driver_opts"].items())}
        out[n] = ordered(c, ("aliases", "interface_name", "ipv4_address", "ipv6_address",
                             "link_local_ips", "mac_address", "driver_opts", "priority",
                             "gw_priority"))
    return out


# --- top-level objects -------------------------------------------------------------------------

def _external(value: Any, p: str) -> tuple[bool, str | None]:
    """(external?, legacy external.name)."""
    if isinstance(value, Mapping):
        name = value.get("name")
        return True, (str(name) if name else None)
    return to_bool(value, p), None


def _top_object(kind: str, key: str, value: Mapping[str, Any] | None, ctx: _Ctx,
                order: Sequence[str]) -> dict[str, Any]:
    p = f"{kind}.{key}"
    o = dict(value or {})
    if "external" in o:
        external, legacy_name = _external(o["external"], f"{p}.external")
        if legacy_name:
            if o.get("name") and o["name"] != legacy_name:
                raise ComposeError(f"{p}: name and external.name conflict; only use name")
            o["name"] = legacy_name
        if external:
            o["external"] = True
            extra = [k for k in o if k not in ("external", "name") and not k.startswith("x-")]
            if kind in ("networks", "volumes") and extra:
                raise ComposeError(f'conflicting parameters "external" and "{extra[0]}" '
                                   f'specified for {kind[:-1]} "{key}"')
        else:
            del o["external"]
    if not o.get("name"):
        o["name"] = key if o.get("external") else f"{ctx.project}_{key}"
    if "labels" in o:
        o["labels"] = mapping_of(o["labels"])
    if "driver_opts" in o:
        o["driver_opts"] = {k: scalar_str(v) for k, v in sorted(o["driver_opts"].items())}
    for b in ("internal", "attachable", "enable_ipv4", "enable_ipv6"):
        if b in o:
            o[b] = to_bool(o[b], f"{p}.{b}")
    if "file" in o:
        o["file"] = ctx.path(o["file"])
    opts = o.get("driver_opts") or {}
    if kind == "volumes" and o.get("driver", "local") == "local" and opts.get("o") == "bind" \
            and opts.get("device"):
        # a local volume that is a bind mount: its device is a host path like any other
        o["driver_opts"] = {**opts, "device": ctx.path(opts["device"])}
    if kind in ("secrets", "configs") and not o.get("external"):
        sources = [k for k in ("file", "environment", "content") if k in o]
        if not sources:
            what = "secret" if kind == "secrets" else "config"
            raise ComposeError(f'{what} "{key}" must declare either `file`'
                               + (", `environment` or `content`" if kind == "configs"
                                  else " or `environment`")
                               + ": invalid compose project")
    if "ipam" in o:
        ipam = dict(o["ipam"] or {})
        if "config" in ipam:
            ipam["config"] = [ordered(dict(c), ("subnet", "gateway", "ip_range", "aux_addresses"))
                              for c in ipam["config"] or []]
        o["ipam"] = ordered(ipam, ("driver", "config", "options"))
    return ordered(o, order)


# --- the project -------------------------------------------------------------------------------

def normalize(raw: RawLike) -> dict[str, Any]:
    """Validate ``raw.model`` and return the canonical model (a new dict)."""
    files = list(getattr(raw, "files", None) or [])
    model = raw.model if raw.model is not None else {}
    schema.validate(model, files)
    # the canonical model shares nothing with the input, so callers may change either
    model = copy.deepcopy(model)
    ctx = _Ctx(raw)
    try:
        out = _normalize(model, ctx)
    except ComposeError as exc:
        text = str(exc)
        if "invalid compose project" in text or not text.startswith(
                ("services.", "networks.", "volumes.", "secrets.", "configs.")):
            raise
        raise ComposeError(schema.file_prefix(files) + text) from None
    _check_references(out)
    return out


def _normalize(model: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {"name": ctx.project}
    services = model.get("services") or {}
    out["services"] = {name: _service(str(name), svc or {}, ctx)
                       for name, svc in sorted(services.items(), key=lambda kv: str(kv[0]))}
    networks = {str(k): v for k, v in (model.get("networks") or {}).items()}
    uses_default = False
    for svc in out["services"].values():
        if "networks" not in svc and "network_mode" not in svc:
            svc["networks"] = {"default": None}
            _reorder(svc)
        if "default" in (svc.get("networks") or {}):
            uses_default = True
    if uses_default and "default" not in networks:
        networks["default"] = None
    for kind, found, order in (("networks", networks, NETWORK_ORDER),
                               ("volumes", model.get("volumes"), VOLUME_ORDER),
                               ("secrets", model.get("secrets"), FILE_OBJECT_ORDER),
                               ("configs", model.get("configs"), FILE_OBJECT_ORDER)):
        if found:
            out[kind] = {str(k): _top_object(kind, str(k), v, ctx, order)
                         for k, v in sorted(found.items(), key=lambda kv: str(kv[0]))}
    if model.get("models"):
        out["models"] = copy.deepcopy(model["models"])
    for key, value in model.items():
        if isinstance(key, str) and key.startswith("x-"):
            out[key] = copy.deepcopy(value)
    return out


def _reorder(svc: dict[str, Any]) -> None:
    reordered = ordered(svc, SERVICE_ORDER)
    svc.clear()
    svc.update(reordered)


def _service_ref(value: str) -> str | None:
    """The service a ``service:x`` mode names (None for any other mode)."""
    return value[len("service:"):] if value.startswith("service:") else None


def _check_references(model: Mapping[str, Any]) -> None:
    services = model.get("services", {})
    defined = {kind: set(model.get(kind) or {})
               for kind in ("networks", "volumes", "secrets", "configs")}
    for name, svc in services.items():
        for net in svc.get("networks") or {}:
            if net not in defined["networks"]:
                raise ComposeError(f'service "{name}" refers to undefined network {net}: '
                                   "invalid compose project")
        for vol in svc.get("volumes") or []:
            if vol["type"] == "volume" and vol.get("source") and \
                    vol["source"] not in defined["volumes"]:
                raise ComposeError(f'service "{name}" refers to undefined volume '
                                   f'{vol["source"]}: invalid compose project')
        for kind in ("secrets", "configs"):
            for ref in svc.get(kind) or []:
                if ref["source"] not in defined[kind]:
                    raise ComposeError(f'service "{name}" refers to undefined {kind[:-1]} '
                                       f'{ref["source"]}: invalid compose project')
        for ref in (svc.get("build") or {}).get("secrets") or []:
            if ref["source"] not in defined["secrets"]:
                raise ComposeError(f'service "{name}" refers to undefined build secret '
                                   f'{ref["source"]}: invalid compose project')
        for vf in svc.get("volumes_from") or []:
            if vf.startswith("container:") and not vf.split(":")[1]:
                raise ComposeError(f'service "{name}": invalid volumes_from "{vf}"')
        # links, volumes_from and service:x namespaces are implicit depends_on entries
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                raise ComposeError(f'service "{name}" depends on undefined service "{dep}": '
                                   "invalid compose project")


# --- profiles ----------------------------------------------------------------------------------

def apply_profiles(model: Mapping[str, Any], profiles: Sequence[str],
                   explicit: Sequence[str] = ()) -> dict[str, Any]:
    """The model with only the enabled services: those without ``profiles``, those with an
    active profile (``*`` activates all), the ``explicit`` ones named on the command line and,
    transitively, what these depend on. An enabled service that requires a disabled one is an
    error; a ``required: false`` dependency on a disabled service is dropped."""
    services: Mapping[str, Any] = model.get("services") or {}
    active = set(profiles)
    for name in explicit:
        if name not in services:
            raise ComposeError(f"no such service: {name}")

    def enabled_by_profile(svc: Mapping[str, Any]) -> bool:
        own = svc.get("profiles") or []
        return not own or "*" in active or bool(active.intersection(own))

    keep = {n for n, s in services.items() if enabled_by_profile(s)}
    todo = list(explicit)
    while todo:
        n = todo.pop()
        if n in keep and n not in explicit:
            continue
        keep.add(n)
        for dep in (services[n].get("depends_on") or {}):
            if dep in services and dep not in keep:
                todo.append(dep)
    out = dict(model)
    out["services"] = {}
    for n, svc in services.items():
        if n not in keep:
            continue
        deps = svc.get("depends_on") or {}
        kept_deps = {}
        for dep, d in deps.items():
            if dep in keep:
                kept_deps[dep] = d
            elif (d or {}).get("required", True):
                raise ComposeError(f'service "{n}" depends on undefined service "{dep}": '
                                   "invalid compose project")
        if deps:
            svc = dict(svc)
            svc["depends_on"] = kept_deps
            if not kept_deps:
                del svc["depends_on"]
        out["services"][n] = svc
    return out


# --- output ------------------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    """Block style, no aliases, sequences indented under their key (as Go's yaml.v3 does)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    # strings YAML would read as another type ("3000", "true", "null"), and those that cannot
    # be plain (": ", a leading "*", ""), are double-quoted as Go's encoder does
    implicit = dumper.resolve(yaml.ScalarNode, value, (True, False))
    plain = value != "" and dumper.analyze_scalar(value).allow_block_plain
    style = '"' if implicit != "tag:yaml.org,2002:str" or not plain else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def _pyyaml_dump(data: Any) -> str:
    """The reference form of ``config``'s YAML (``yamlout`` writes the same, faster)."""
    return str(yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False,
                         allow_unicode=True, width=1 << 20, indent=2))


def dump(model: Mapping[str, Any], fmt: str = "yaml", *, escape_dollars: bool = False) -> str:
    """``config`` output as compose-go marshals a project: "yaml" (the Project struct's key
    order, block style, ends with a newline) or "json" (a map at the top, so its keys sorted,
    with name and services always and the rest when not empty; indented by two; no newline
    at the end; ``models`` left out as compose-go's MarshalJSON leaves it out).

    ``escape_dollars``: every ``$`` of the text doubled, as ``docker compose config`` prints an
    interpolated model, so that the output read again as a compose file gives the same values
    (a literal ``$`` left single would be interpolated a second time)."""
    top = ordered(model, TOP_ORDER)
    if fmt == "json":
        keep = {k: v for k, v in top.items()
                if k in ("name", "services") or k.startswith("x-") or (k != "models" and v)}
        keep.setdefault("services", {})
        text = json.dumps(dict(sorted(keep.items())), indent=2, ensure_ascii=False)
        # Go's encoder escapes these in strings; they only occur inside strings here
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    elif fmt in ("yaml", "yml", ""):
        from ketch.compose import yamlout

        text = yamlout.dump(top, _pyyaml_dump)
    else:
        raise ComposeError(f"unsupported format {json.dumps(fmt)}")
    # after serialising, as compose does: quoting was chosen for the value itself
    return text.replace("$", "$$") if escape_dollars else text
