"""The Compose Specification's keys and types, as tables, and a validator over them.

Written for ketch from the specification's text (which keys exist, what each may hold),
not translated from its JSON schema. A value's kinds are JSON's: ``string``, ``number``,
``integer``, ``boolean``, ``null``, ``object`` (a mapping), ``array`` (a list). Many
scalar keys also take a ``string`` because interpolation produces strings
(``privileged: ${PRIV}``); ``normalize`` casts those.

Messages are compose v2's: ``services.api additional properties 'foo' not allowed``,
``services.web.mem_limit must be a string or number``; ``validate`` prefixes them with
``validating <file>: `` when the file is known. Only the first error is reported, as
compose does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ketch.compose.errors import ComposeError

_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
_ANY_KEY = re.compile(r".+", re.S)


@dataclass(frozen=True)
class Spec:
    """What one value may be. ``props`` are the known keys of a mapping, ``values`` the spec
    of any further key whose name matches ``key_pattern`` (None: further keys are errors,
    except ``x-`` keys where ``x_ok``); ``items`` is the spec of a list's items."""
    types: tuple[str, ...]
    props: Mapping[str, Spec] | None = None
    values: Spec | None = None
    key_pattern: re.Pattern[str] = _ANY_KEY
    items: Spec | None = None
    enum: tuple[Any, ...] | None = None
    required: tuple[str, ...] = ()
    x_ok: bool = True
    unique: bool = False


def _t(*types: str, **kw: Any) -> Spec:
    return Spec(types=types, **kw)


def obj(props: Mapping[str, Spec], *, required: tuple[str, ...] = (), x_ok: bool = True,
        also: tuple[str, ...] = ()) -> Spec:
    """A mapping with known keys (``also``: other kinds the value may be instead)."""
    return Spec(types=("object", *also), props=props, required=required, x_ok=x_ok)


def mapping(values: Spec, pattern: re.Pattern[str] = _ANY_KEY) -> Spec:
    """A free mapping: any key matching ``pattern``, every value per ``values``."""
    return Spec(types=("object",), values=values, key_pattern=pattern, x_ok=False)


def array(items: Spec, *, unique: bool = False) -> Spec:
    return Spec(types=("array",), items=items, unique=unique)


STRING = _t("string")
BOOL = _t("boolean", "string")
INT = _t("integer", "string")
NUMBER = _t("number", "string")
DURATION = _t("string")
LIST_OF_STRINGS = array(STRING, unique=True)
STRING_OR_LIST = _t("string", "array", items=STRING)
SCALAR = _t("string", "number", "boolean", "null")
# list_or_dict: {"K": scalar} or ["K=V", ...]
LIST_OR_DICT = _t("object", "array", values=SCALAR, items=STRING, x_ok=False, unique=True)
DRIVER_OPTS = mapping(_t("string", "number"))
COMMAND = _t("null", "string", "array", items=STRING)
EXTRA_HOSTS = _t("object", "array", values=_t("string", "array", items=STRING),
                 items=STRING, x_ok=False, unique=True)
ULIMITS = mapping(_t("integer", "string", "object",
                     props={"soft": INT, "hard": INT}, required=("soft", "hard")),
                  re.compile(r"^[a-z]+$"))
FILE_REF = _t("string", "object", props={  # a service's secrets:/configs: entry
    "source": STRING, "target": STRING, "uid": STRING, "gid": STRING, "mode": NUMBER})
FILE_REFS = array(FILE_REF)
EXTERNAL = _t("boolean", "string", "object", props={"name": STRING})

BLKIO_LIMIT = obj({"path": STRING, "rate": INT}, x_ok=False)
BLKIO_WEIGHT = obj({"path": STRING, "weight": INT}, x_ok=False)
DEVICE_REQUEST = obj({"capabilities": LIST_OF_STRINGS, "count": _t("string", "integer"),
                      "device_ids": LIST_OF_STRINGS, "driver": STRING, "options": LIST_OR_DICT})
SERVICE_HOOK = obj({"command": COMMAND, "user": STRING, "privileged": BOOL,
                    "working_dir": STRING, "environment": LIST_OR_DICT}, required=("command",))

BUILD = obj({
    "context": STRING, "dockerfile": STRING, "dockerfile_inline": STRING,
    "entitlements": array(STRING), "args": LIST_OR_DICT, "ssh": LIST_OR_DICT,
    "labels": LIST_OR_DICT, "cache_from": array(STRING), "cache_to": array(STRING),
    "no_cache": BOOL, "additional_contexts": LIST_OR_DICT, "network": STRING,
    "provenance": _t("string", "boolean"), "sbom": _t("string", "boolean"), "pull": BOOL,
    "target": STRING, "shm_size": _t("integer", "string"), "extra_hosts": EXTRA_HOSTS,
    "isolation": STRING, "privileged": BOOL, "secrets": FILE_REFS, "tags": array(STRING),
    "ulimits": ULIMITS, "platforms": array(STRING),
}, also=("string",))

HEALTHCHECK = obj({
    "disable": BOOL, "interval": DURATION, "retries": NUMBER,
    "test": _t("string", "array", items=STRING), "timeout": DURATION,
    "start_period": DURATION, "start_interval": DURATION,
})

RESOURCES = {"cpus": NUMBER, "memory": _t("string", "integer"), "pids": INT}
DEPLOY = obj({
    "mode": STRING, "endpoint_mode": STRING, "replicas": INT, "labels": LIST_OR_DICT,
    "rollback_config": obj({"parallelism": INT, "delay": DURATION, "failure_action": STRING,
                            "monitor": DURATION, "max_failure_ratio": NUMBER,
                            "order": _t("string", enum=("start-first", "stop-first"))}),
    "update_config": obj({"parallelism": INT, "delay": DURATION, "failure_action": STRING,
                          "monitor": DURATION, "max_failure_ratio": NUMBER,
                          "order": _t("string", enum=("start-first", "stop-first"))}),
    "resources": obj({
        "limits": obj(RESOURCES),
        "reservations": obj({**RESOURCES, "devices": array(DEVICE_REQUEST),
                             "generic_resources": array(obj({
                                 "discrete_resource_spec": obj({"kind": STRING,
                                                                "value": NUMBER})}))}),
    }),
    "restart_policy": obj({"condition": STRING, "delay": DURATION, "max_attempts": INT,
                           "window": DURATION}),
    "placement": obj({"constraints": array(STRING),
                      "preferences": array(obj({"spread": STRING})),
                      "max_replicas_per_node": INT}),
}, also=("null",))

DEVELOP = obj({"watch": array(obj({
    "ignore": STRING_OR_LIST, "include": STRING_OR_LIST, "path": STRING,
    "action": _t("string", enum=("rebuild", "sync", "restart", "sync+restart", "sync+exec")),
    "target": STRING, "exec": SERVICE_HOOK,
}, required=("path", "action")))}, also=("null",))

PORT = _t("number", "string", "object", props={
    "name": STRING, "mode": STRING, "host_ip": STRING, "target": _t("integer", "string"),
    "published": _t("string", "integer"), "protocol": STRING, "app_protocol": STRING})

VOLUME_MOUNT = _t("string", "object", required=("type",), props={
    "type": _t("string", enum=("bind", "volume", "tmpfs", "cluster", "npipe", "image")),
    "source": STRING, "target": STRING, "read_only": BOOL, "consistency": STRING,
    "bind": obj({"propagation": STRING, "create_host_path": BOOL,
                 "recursive": _t("string", enum=("enabled", "disabled", "writable", "readonly")),
                 "selinux": _t("string", enum=("z", "Z"))}),
    "volume": obj({"labels": LIST_OR_DICT, "nocopy": BOOL, "subpath": STRING}),
    "tmpfs": obj({"size": _t("integer", "string"), "mode": NUMBER}),
    "image": obj({"subpath": STRING}),
})

SERVICE_NETWORK = _t("object", "null", props={
    "aliases": LIST_OF_STRINGS, "interface_name": STRING, "ipv4_address": STRING,
    "ipv6_address": STRING, "link_local_ips": LIST_OF_STRINGS, "mac_address": STRING,
    "driver_opts": DRIVER_OPTS, "priority": _t("number"), "gw_priority": _t("number")})

DEPENDS_ON = _t("array", "object", items=STRING, unique=True, x_ok=False, key_pattern=_NAME,
                values=obj({"restart": BOOL, "required": _t("boolean"),
                            "condition": _t("string", enum=(
                                "service_started", "service_healthy",
                                "service_completed_successfully"))},
                           required=("condition",)))

ENV_FILE = _t("string", "array", items=_t("string", "object", props={
    "path": STRING, "format": STRING, "required": BOOL}, required=("path",), x_ok=False))

SERVICE_KEYS: dict[str, Spec] = {
    "annotations": LIST_OR_DICT,
    "attach": BOOL,
    "blkio_config": obj({"device_read_bps": array(BLKIO_LIMIT),
                         "device_read_iops": array(BLKIO_LIMIT),
                         "device_write_bps": array(BLKIO_LIMIT),
                         "device_write_iops": array(BLKIO_LIMIT),
                         "weight": INT, "weight_device": array(BLKIO_WEIGHT)}, x_ok=False),
    "build": BUILD,
    "cap_add": LIST_OF_STRINGS,
    "cap_drop": LIST_OF_STRINGS,
    "cgroup": _t("string", enum=("host", "private")),
    "cgroup_parent": STRING,
    "command": COMMAND,
    "configs": FILE_REFS,
    "container_name": STRING,
    "cpu_count": INT,
    "cpu_percent": INT,
    "cpu_period": NUMBER,
    "cpu_quota": NUMBER,
    "cpu_rt_period": NUMBER,
    "cpu_rt_runtime": NUMBER,
    "cpu_shares": NUMBER,
    "cpus": NUMBER,
    "cpuset": STRING,
    "credential_spec": obj({"config": STRING, "file": STRING, "registry": STRING}),
    "depends_on": DEPENDS_ON,
    "deploy": DEPLOY,
    "develop": DEVELOP,
    "device_cgroup_rules": LIST_OF_STRINGS,
    "devices": array(_t("string", "object", props={
        "source": STRING, "target": STRING, "permissions": STRING}, required=("source",))),
    "dns": STRING_OR_LIST,
    "dns_opt": LIST_OF_STRINGS,
    "dns_search": STRING_OR_LIST,
    "domainname": STRING,
    "entrypoint": COMMAND,
    "env_file": ENV_FILE,
    "environment": LIST_OR_DICT,
    "expose": array(_t("string", "number"), unique=True),
    "extends": _t("string", "object", props={"service": STRING, "file": STRING},
                  required=("service",), x_ok=False),
    "external_links": LIST_OF_STRINGS,
    "extra_hosts": EXTRA_HOSTS,
    "gpus": _t("string", "array", enum=None, items=DEVICE_REQUEST),
    "group_add": array(_t("string", "number"), unique=True),
    "healthcheck": HEALTHCHECK,
    "hostname": STRING,
    "image": STRING,
    "init": BOOL,
    "ipc": STRING,
    "isolation": STRING,
    "label_file": STRING_OR_LIST,
    "labels": LIST_OR_DICT,
    "links": LIST_OF_STRINGS,
    "logging": obj({"driver": STRING,
                    "options": mapping(_t("string", "number", "null"))}),
    "mac_address": STRING,
    "mem_limit": NUMBER,
    "mem_reservation": _t("string", "integer"),
    "mem_swappiness": INT,
    "memswap_limit": NUMBER,
    "models": _t("array", "object", items=STRING, x_ok=False, key_pattern=_NAME,
                 values=obj({"endpoint_var": STRING, "model_var": STRING})),
    "network_mode": STRING,
    "networks": _t("array", "object", items=STRING, unique=True, x_ok=False,
                   key_pattern=_NAME, values=SERVICE_NETWORK),
    "oom_kill_disable": BOOL,
    "oom_score_adj": INT,
    "pid": _t("string", "null"),
    "pids_limit": NUMBER,
    "platform": STRING,
    "ports": array(PORT, unique=True),
    "post_start": array(SERVICE_HOOK),
    "pre_stop": array(SERVICE_HOOK),
    "privileged": BOOL,
    "profiles": LIST_OF_STRINGS,
    "provider": obj({"type": STRING, "options": mapping(_t(
        "string", "number", "boolean", "array", items=_t("string", "number", "boolean")))},
        required=("type",)),
    "pull_policy": STRING,
    "pull_refresh_after": STRING,
    "read_only": BOOL,
    "restart": STRING,
    "runtime": STRING,
    "scale": INT,
    "secrets": FILE_REFS,
    "security_opt": LIST_OF_STRINGS,
    "shm_size": NUMBER,
    "stdin_open": BOOL,
    "stop_grace_period": DURATION,
    "stop_signal": STRING,
    "storage_opt": mapping(_t("string", "number", "boolean", "null")),
    "sysctls": LIST_OR_DICT,
    "tmpfs": STRING_OR_LIST,
    "tty": BOOL,
    "ulimits": ULIMITS,
    "use_api_socket": _t("boolean"),
    "user": STRING,
    "userns_mode": STRING,
    "uts": STRING,
    "volumes": array(VOLUME_MOUNT, unique=True),
    "volumes_from": LIST_OF_STRINGS,
    "working_dir": STRING,
}
SERVICE = obj(SERVICE_KEYS)

NETWORK = obj({
    "name": STRING, "driver": STRING, "driver_opts": DRIVER_OPTS,
    "ipam": obj({"driver": STRING,
                 "config": array(obj({"subnet": STRING, "ip_range": STRING, "gateway": STRING,
                                      "aux_addresses": mapping(STRING)})),
                 "options": mapping(STRING)}),
    "external": EXTERNAL, "internal": BOOL, "enable_ipv4": BOOL, "enable_ipv6": BOOL,
    "attachable": BOOL, "labels": LIST_OR_DICT,
}, also=("null",))
VOLUME = obj({"name": STRING, "driver": STRING, "driver_opts": DRIVER_OPTS,
              "external": EXTERNAL, "labels": LIST_OR_DICT}, also=("null",))
SECRET = obj({"name": STRING, "environment": STRING, "file": STRING, "external": EXTERNAL,
              "labels": LIST_OR_DICT, "driver": STRING, "driver_opts": DRIVER_OPTS,
              "template_driver": STRING})
CONFIG = obj({"name": STRING, "content": STRING, "environment": STRING, "file": STRING,
              "external": EXTERNAL, "labels": LIST_OR_DICT, "template_driver": STRING})
MODEL = obj({"name": STRING, "model": STRING, "context_size": _t("integer"),
             "runtime_flags": array(STRING)}, required=("model",))
INCLUDE = _t("string", "object", props={"path": STRING_OR_LIST, "env_file": STRING_OR_LIST,
                                        "project_directory": STRING}, x_ok=False)


def _named(spec: Spec) -> Spec:
    return Spec(types=("object",), values=spec, key_pattern=_NAME, x_ok=False)


TOP_LEVEL_KEYS: dict[str, Spec] = {
    "version": STRING,  # obsolete, ignored
    "name": STRING,
    "include": array(INCLUDE),
    "services": _named(SERVICE),
    "networks": _named(NETWORK),
    "volumes": _named(VOLUME),
    "secrets": _named(SECRET),
    "configs": _named(CONFIG),
    "models": _named(MODEL),
}
PROJECT = obj(TOP_LEVEL_KEYS)


# --- validation --------------------------------------------------------------------------------

def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _accepts(types: tuple[str, ...], kind: str) -> bool:
    if kind in types:
        return True
    # every integer is a number; a float with no fraction is an integer (YAML "1.0")
    return kind == "integer" and "number" in types


def human_type(types: tuple[str, ...]) -> str:
    """compose's wording: array is a list, object a mapping; ``a, b or c``."""
    # a string first: most of these keys take one, and it is what users write
    ordered_types = sorted((t for t in types if t != "null"), key=lambda t: t != "string")
    names = [{"array": "list", "object": "mapping"}.get(t, t) for t in ordered_types]
    if not names:
        return "null"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "(root)"


def check(value: Any, spec: Spec, path: str) -> None:
    """Raise ComposeError (without the file prefix) at the first value not per ``spec``."""
    kind = kind_of(value)
    if not _accepts(spec.types, kind):
        if kind == "number" and "integer" in spec.types and float(value).is_integer():
            return
        raise ComposeError(f"{_where(path)} must be a {human_type(spec.types)}")
    if spec.enum is not None and kind == "string" and value not in spec.enum:
        allowed = ", ".join(f'"{e}"' for e in spec.enum)
        raise ComposeError(f"{_where(path)} must be one of the following: {allowed}")
    if kind == "object":
        _check_mapping(value, spec, path)
    elif kind == "array" and spec.items is not None:
        seen: list[Any] = []
        for i, item in enumerate(value):
            check(item, spec.items, f"{path}[{i}]")
            if spec.unique:
                if item in seen:
                    raise ComposeError(f"{_where(path)} array items[{seen.index(item)},{i}] "
                                       "must be unique")
                seen.append(item)


def _check_mapping(value: Mapping[Any, Any], spec: Spec, path: str) -> None:
    unknown: list[str] = []
    for raw_key, item in value.items():
        key = str(raw_key)
        if spec.props is not None and key in spec.props:
            check(item, spec.props[key], key_path(path, key))
        elif key.startswith("x-") and spec.x_ok:
            continue
        elif spec.values is not None and spec.key_pattern.match(key):
            check(item, spec.values, key_path(path, key))
        else:
            unknown.append(key)
    if unknown:
        names = ", ".join(f"'{k}'" for k in unknown)
        raise ComposeError(f"{_where(path)} additional properties {names} not allowed")
    missing = [k for k in spec.required if k not in value]
    if missing:
        names = ", ".join(f"'{k}'" for k in missing)
        raise ComposeError(f"{_where(path)} missing properties {names}")


def file_prefix(files: list[str] | tuple[str, ...] | None) -> str:
    """compose's ``validating <file>: `` (several merged files: all of them)."""
    if not files:
        return ""
    return f"validating {', '.join(files)}: "


def validate(model: Any, files: list[str] | tuple[str, ...] | None = None) -> None:
    """Check a whole (merged, interpolated) model against the specification."""
    try:
        if not isinstance(model, Mapping):
            raise ComposeError(f"(root) must be a mapping, not {human_type((kind_of(model),))}")
        check(model, PROJECT, "")
    except ComposeError as exc:
        raise ComposeError(file_prefix(files) + str(exc)) from None
