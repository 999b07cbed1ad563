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
import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import yaml

from ketch.compose import dotenv, schema
from ketch.compose.errors import ComposeError
from ketch.compose.values import (  # noqa: F401 - also read as normalize.<name>
    _port_range,
    abs_path,
    duration,
    is_remote_context,
    long_port,
    long_volume,
    mapping_of,
    octal_mode,
    ordered,
    parse_duration,
    parse_port,
    parse_volume,
    scalar_str,
    string_list,
    to_bool,
    to_bytes,
    to_float,
    to_int,
)


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
