"""The OCI runtime specification (v1.1+) as typed dataclasses.

JSON exists only at the bundle edge: ``load_spec(bundle)`` reads ``config.json``
into these types, ``to_json(spec)`` writes it back. Resource and seccomp types
are the ones ``ketch.linux`` defines, with the spec's own JSON names, so there
is one definition of each.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ketch.errors import InvalidArgument, NotFound
from ketch.jsonmodel import from_json, json_name, keep_empty
from ketch.linux.cgroups.resources import Resources
from ketch.linux.seccomp import Seccomp
from ketch.runtime.state import OCI_VERSION  # noqa: E402  (one definition, re-exported)


@dataclass(slots=True)
class Box:
    height: int = 0
    width: int = 0


@dataclass(slots=True)
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] = field(default_factory=list)
    username: str | None = None


@dataclass(slots=True)
class Capabilities:
    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Rlimit:
    type: str = ""
    hard: int = 0
    soft: int = 0


@dataclass(slots=True)
class IOPriority:
    class_: str = field(default="", metadata=json_name("class"))
    priority: int = 0


@dataclass(slots=True)
class Process:
    terminal: bool = False
    console_size: Box | None = None
    user: User = field(default_factory=User, metadata=keep_empty())
    args: list[str] = field(default_factory=list)
    command_line: str | None = None
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    selinux_label: str | None = None
    io_priority: IOPriority | None = None


@dataclass(slots=True)
class Root:
    path: str = "rootfs"
    readonly: bool = False


@dataclass(slots=True)
class IDMapping:
    container_id: int = field(default=0, metadata=json_name("containerID", keep_empty=True))
    host_id: int = field(default=0, metadata=json_name("hostID", keep_empty=True))
    size: int = 0


@dataclass(slots=True)
class Mount:
    destination: str = ""
    type: str | None = None
    source: str | None = None
    options: list[str] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)


@dataclass(slots=True)
class Hook:
    path: str = ""
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: int | None = None


@dataclass(slots=True)
class Hooks:
    prestart: list[Hook] = field(default_factory=list)
    create_runtime: list[Hook] = field(default_factory=list)
    create_container: list[Hook] = field(default_factory=list)
    start_container: list[Hook] = field(default_factory=list)
    poststart: list[Hook] = field(default_factory=list)
    poststop: list[Hook] = field(default_factory=list)


@dataclass(slots=True)
class Namespace:
    type: str = ""
    path: str | None = None


@dataclass(slots=True)
class Device:
    type: str = ""
    path: str = ""
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(slots=True)
class Personality:
    domain: str = ""
    flags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Linux:
    namespaces: list[Namespace] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    cgroups_path: str | None = None
    resources: Resources | None = None
    rootfs_propagation: str | None = None
    seccomp: Seccomp | None = None
    sysctl: dict[str, str] = field(default_factory=dict)
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    mount_label: str | None = None
    personality: Personality | None = None
    intel_rdt: dict[str, Any] | None = field(default=None, metadata=json_name("intelRdt"))
    time_offsets: dict[str, Any] | None = None


@dataclass(slots=True)
class Spec:
    oci_version: str = field(default=OCI_VERSION, metadata=json_name("ociVersion"))
    process: Process | None = None
    root: Root | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    hooks: Hooks | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    linux: Linux | None = None


def parse_spec(data: Any, where: str = "config.json") -> Spec:
    return from_json(Spec, data, where=where)


def load_spec(bundle: str) -> Spec:
    """Read ``<bundle>/config.json`` with runc's wording for the usual failures."""
    return read_spec(bundle)[1]


def read_spec(bundle: str) -> tuple[str, Spec]:
    """``config.json`` as text (kept as the container's record) and parsed."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound("JSON specification file config.json not found") from None
    try:
        text = raw.decode()
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"failed to parse config.json: {exc}") from None
    return text, _parse_spec_cached(data)


# Parsed seccomp profiles by their canonical JSON. Docker's default profile is
# most of a config.json (about 700 of its values) and the same for nearly every
# container: a long-lived caller (ketchd's supervisor) parses it once. Shared:
# never mutated (the runtime only reads it, to compile it).
_SECCOMP: dict[str, Seccomp] = {}
_SECCOMP_MAX = 8


def _parse_spec_cached(data: Any) -> Spec:
    linux = data.get("linux") if isinstance(data, dict) else None
    profile = linux.get("seccomp") if isinstance(linux, dict) else None
    if not isinstance(profile, dict):
        return parse_spec(data)
    key = json.dumps(profile, sort_keys=True)
    cached = _SECCOMP.get(key)
    if cached is None:
        spec = parse_spec(data)
        if spec.linux is not None and spec.linux.seccomp is not None:
            if len(_SECCOMP) >= _SECCOMP_MAX:
                _SECCOMP.pop(next(iter(_SECCOMP)))
            _SECCOMP[key] = spec.linux.seccomp
        return spec
    rest = dict(data)
    rest["linux"] = {k: v for k, v in linux.items() if k != "seccomp"}  # type: ignore[union-attr]
    spec = parse_spec(rest)
    assert spec.linux is not None
    spec.linux.seccomp = cached
    return spec


def seccomp_key(profile: Seccomp) -> str | None:
    """The canonical JSON ``profile`` was parsed from, if it came through the cache."""
    for key, cached in _SECCOMP.items():
        if cached is profile:
            return key
    return None


def parse_process(data: Any, where: str = "process.json") -> Process:
    return from_json(Process, data, where=where)
