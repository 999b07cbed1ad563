"""One service of the canonical compose model -> the Engine API create body.

This is Docker Compose v2's ``getCreateConfigs`` (pkg/compose/create.go) for one
container: the ``Config``, ``HostConfig`` and ``NetworkingConfig`` of
``POST /containers/create``, with compose's choices kept where they show in
``docker inspect``:

* bind mounts and plain named volumes go as ``HostConfig.Binds`` strings
  ("src:dst:rw"): the Mount API cannot create a missing host directory
  (moby#43483), and compose relies on that (``bind.create_host_path``). A bind
  with propagation, ``create_host_path: false`` or ``recursive``, a volume with
  ``nocopy``/``subpath``/labels, an anonymous volume, a tmpfs volume and every
  secret/config file go as ``HostConfig.Mounts``;
* ``environment:`` entries with a null value are sent as a bare ``NAME``, which
  the engine reads as "unset" (it also removes the image's value);
* only the first network (by priority, then name) is in ``NetworkingConfig``;
  the others come back in ``extra_networks`` for the caller to connect before
  start (engines before API 1.44 take one endpoint at create);
* references to other services (``network_mode``/``pid``/``ipc: service:x``,
  ``volumes_from``, ``links``) are resolved through ``container_names``.

Secrets and configs backed by a file are read-only bind mounts; those given by
``content:`` or ``environment:`` are returned as ``InjectedFile`` for the caller
to copy into the created container (compose does it with a tar archive).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ketch.compose.errors import ComposeError

SECRETS_DIR = "/run/secrets/"


@dataclass
class InjectedFile:
    """A file to write into the container before it starts (a secret or config
    from ``content:`` or ``environment:``)."""

    path: str
    content: bytes
    mode: int = 0o444
    uid: int = 0
    gid: int = 0


@dataclass
class ContainerSpec:
    """What creating one container of a service takes."""

    body: dict[str, Any]
    extra_networks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    files: list[InjectedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # compose's logrus warnings


def container_name(project: str, service: str, svc: Mapping[str, Any], number: int) -> str:
    """compose's getContainerName: ``container_name`` or ``<project>-<service>-<n>``."""
    return str(svc.get("container_name") or f"{project}-{service}-{number}")


def container_spec(model: Mapping[str, Any], service: str, *, project: str, number: int,
                   image: str, network_names: Mapping[str, str],
                   volume_names: Mapping[str, str], container_names: Mapping[str, str],
                   name: str | None = None, use_aliases: bool = True,
                   environment: Mapping[str, str] | None = None,
                   inherit_mounts: Sequence[Mapping[str, Any]] = (),
                   image_volumes: Collection[str] = ()) -> ContainerSpec:
    """The create body of container ``number`` of ``service``.

    ``name`` is the container's own name (its first network alias); by default
    compose's ``project-service-N`` or ``container_name``. ``use_aliases=False``
    is ``compose run`` without ``--use-aliases``: the service name and network
    aliases are left out. ``environment`` is the project environment that
    ``secrets/configs: environment:`` read (default: ``os.environ``).

    When recreating, ``inherit_mounts`` is the old container's ``Mounts`` (from
    inspect) and ``image_volumes`` the keys of the image's ``Config.Volumes``: the
    old container's anonymous volumes and image-VOLUME volumes are mounted again,
    so their data survives ``up`` recreating the container.
    """
    services = model.get("services") or {}
    if service not in services:
        raise ComposeError(f"no such service: {service}")
    svc: Mapping[str, Any] = services[service] or {}
    conv = _Converter(model, service, svc, project=project, number=number,
                      network_names=network_names, volume_names=volume_names,
                      container_names=container_names,
                      name=name or container_name(project, service, svc, number),
                      use_aliases=use_aliases,
                      environment=os.environ if environment is None else environment,
                      inherit_mounts=inherit_mounts, image_volumes=image_volumes)
    return conv.run(image)


# --- value parsers -------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([^\d.]+)")


def duration_ns(value: Any, where: str) -> int:
    """A Go duration string ("1m30s", "500ms", "1.5h") in nanoseconds; an int is
    taken as nanoseconds already (what a JSON model written by compose holds)."""
    if isinstance(value, bool):
        raise ComposeError(f"{where}: invalid duration {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    s = text[1:] if text[:1] in "+-" else text
    if s == "0":
        return 0
    bad = ComposeError(f'{where}: invalid duration "{text}"')
    if not s:
        raise bad
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or m.group(2) not in _DURATION_UNITS:
            raise bad
        total += Fraction(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    ns = int(total)
    return -ns if text.startswith("-") else ns


_BYTES = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)$", re.IGNORECASE)


def byte_size(value: Any, where: str) -> int:
    """go-units RAMInBytes (compose's UnitBytes): an int, or "64m", "1.5g", "512kb"."""
    if isinstance(value, bool):
        raise ComposeError(f"{where}: invalid size {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    m = _BYTES.match(str(value).strip())
    if m is None:
        raise ComposeError(f'{where}: invalid size "{value}"')
    power = " kmgtp".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024 ** power)


def _file_mode(value: Any, where: str) -> int:
    """A mode as an int, or an octal string ("0440") as compose-go reads it."""
    if isinstance(value, bool):
        raise ComposeError(f"{where}: invalid mode {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise ComposeError(f'{where}: invalid mode "{value}"') from None


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ComposeError(f"{where}: invalid number {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ComposeError(f'{where}: invalid number "{value}"') from None


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ComposeError(f"{where}: invalid number {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ComposeError(f'{where}: invalid number "{value}"') from None


def _str(value: Any) -> str:
    """A YAML scalar as compose-go turns it into a string (true, not True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _strs(value: Any) -> list[str]:
    return [_str(v) for v in value or []]


def _str_map(value: Any) -> dict[str, str]:
    """A string map; a null value is an empty string, as in compose-go's maps."""
    return {str(k): "" if v is None else _str(v) for k, v in (value or {}).items()}


def _port_range(spec: str, where: str) -> list[str]:
    """``expose`` entries: "80", "80/udp", "8000-8002/tcp" -> ["80/tcp", ...]."""
    ports, _, proto = str(spec).partition("/")
    proto = proto or "tcp"
    first, _, last = ports.partition("-")
    try:
        lo = int(first)
        hi = int(last) if last else lo
    except ValueError:
        raise ComposeError(f'{where}: invalid port "{spec}"') from None
    if not (0 <= lo <= hi <= 65535):
        raise ComposeError(f'{where}: invalid port "{spec}"')
    return [f"{p}/{proto}" for p in range(lo, hi + 1)]


def _ip(value: str, kind: str, where: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ComposeError(f"{where}: invalid {kind} address: {value}") from None
    return value


_RESTART_NAMES = {"none": "no", "no": "no", "on-failure": "on-failure",
                  "unless-stopped": "unless-stopped", "any": "always", "always": "always"}


def _restart_name(condition: str) -> str:
    """compose's mapRestartPolicyCondition (deploy's ``any`` is the engine's ``always``)."""
    return _RESTART_NAMES.get(condition, condition)


_CDI_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*/[a-zA-Z0-9][a-zA-Z0-9_.-]*="
                       r"[a-zA-Z0-9_.:-]+$")


# --- the conversion --------------------------------------------------------------------

class _Converter:
    def __init__(self, model: Mapping[str, Any], service: str, svc: Mapping[str, Any], *,
                 project: str, number: int, network_names: Mapping[str, str],
                 volume_names: Mapping[str, str], container_names: Mapping[str, str],
                 name: str, use_aliases: bool, environment: Mapping[str, str],
                 inherit_mounts: Sequence[Mapping[str, Any]] = (),
                 image_volumes: Collection[str] = ()) -> None:
        self.model = model
        self.service = service
        self.svc = svc
        self.project = project
        self.number = number
        self.network_names = network_names
        self.volume_names = volume_names
        self.container_names = container_names
        self.name = name
        self.use_aliases = use_aliases
        self.environment = environment
        self.inherit_mounts = inherit_mounts
        self.image_volumes = set(image_volumes)
        self.warnings: list[str] = []
        self.files: list[InjectedFile] = []

    def where(self, key: str) -> str:
        return f"services.{self.service}.{key}"

    def run(self, image: str) -> ContainerSpec:
        svc = self.svc
        config: dict[str, Any] = {
            "Image": image,
            "Hostname": str(svc.get("hostname") or ""),
            "Domainname": str(svc.get("domainname") or ""),
            "User": str(svc.get("user") or ""),
            "WorkingDir": str(svc.get("working_dir") or ""),
            "Tty": bool(svc.get("tty")),
            "OpenStdin": bool(svc.get("stdin_open")),
            "StdinOnce": False,
            # Compose v2 always asks for stdout/stderr (they only matter to an
            # attaching client; the engine logs either way).
            "AttachStdin": False,
            "AttachStdout": True,
            "AttachStderr": True,
            "Env": self.env(),
            "Labels": _str_map(svc.get("labels")),
        }
        # An unset command/entrypoint is left out so the image's applies;
        # an explicit [] is sent as [] (it clears the image's).
        if svc.get("command") is not None:
            config["Cmd"] = _strs(svc["command"])
        if svc.get("entrypoint") is not None:
            config["Entrypoint"] = _strs(svc["entrypoint"])
        exposed = self.exposed_ports()
        if exposed:
            config["ExposedPorts"] = exposed
        if svc.get("stop_signal"):
            config["StopSignal"] = str(svc["stop_signal"])
        if svc.get("stop_grace_period") is not None:
            # compose's ToSeconds: whole seconds, truncated.
            ns = duration_ns(svc["stop_grace_period"], self.where("stop_grace_period"))
            config["StopTimeout"] = int(ns / 1_000_000_000)
        health = self.healthcheck()
        if health is not None:
            config["Healthcheck"] = health

        host = self.host_config()
        network_mode, networking, extra = self.networks(host.get("Links") or [])
        host["NetworkMode"] = network_mode
        if network_mode == "none" and svc.get("network_mode") == "disabled":
            config["NetworkDisabled"] = True
        if svc.get("mac_address") and networking is None:
            # No endpoint to carry it (network_mode set): the engine moves a
            # container-wide MacAddress to the network of its NetworkMode.
            config["MacAddress"] = str(svc["mac_address"])
        body = dict(config)
        body["HostConfig"] = host
        if networking is not None:
            body["NetworkingConfig"] = networking
        self.secret_and_config_files()
        return ContainerSpec(body=body, extra_networks=extra, files=self.files,
                             warnings=self.warnings)

    # --- Config ---------------------------------------------------------------------

    def env(self) -> list[str]:
        out = []
        for key, value in sorted((self.svc.get("environment") or {}).items()):
            # compose's ToMobyEnv: a null value goes as a bare NAME, which the
            # engine takes as "unset" (no variable, even the image's).
            out.append(str(key) if value is None else f"{key}={_str(value)}")
        return out

    def exposed_ports(self) -> dict[str, dict[str, Any]]:
        exposed: dict[str, dict[str, Any]] = {}
        for i, port in enumerate(self.svc.get("ports") or []):
            exposed[self.port_key(port, i)] = {}
        for i, spec in enumerate(self.svc.get("expose") or []):
            for key in _port_range(str(spec), self.where(f"expose[{i}]")):
                exposed[key] = {}
        return exposed

    def port_key(self, port: Mapping[str, Any], i: int) -> str:
        target = _int(port.get("target"), self.where(f"ports[{i}].target"))
        return f"{target}/{port.get('protocol') or 'tcp'}"

    def healthcheck(self) -> dict[str, Any] | None:
        check = self.svc.get("healthcheck")
        if check is None:
            return None
        where = self.where("healthcheck")
        test = check.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if check.get("disable"):
            test = ["NONE"]
        if check.get("start_interval") is not None and check.get("start_period") is None:
            # moby#48874: the engine would ignore it; compose refuses.
            raise ComposeError("healthcheck.start_interval requires healthcheck.start_period "
                               "to be set")
        out: dict[str, Any] = {"Test": None if test is None else _strs(test)}
        for key, api in (("interval", "Interval"), ("timeout", "Timeout"),
                         ("start_period", "StartPeriod"), ("start_interval", "StartInterval")):
            value = check.get(key)
            out[api] = 0 if value is None else duration_ns(value, f"{where}.{key}")
        retries = check.get("retries")
        out["Retries"] = 0 if retries is None else _int(retries, f"{where}.retries")
        return out

    # --- HostConfig -------------------------------------------------------------------

    def host_config(self) -> dict[str, Any]:
        svc = self.svc
        binds, mounts = self.volumes()
        host: dict[str, Any] = {
            "Binds": binds or None,
            "PortBindings": self.port_bindings(),
            "PublishAllPorts": False,
            "RestartPolicy": self.restart_policy(),
            "Privileged": bool(svc.get("privileged")),
            "ReadonlyRootfs": bool(svc.get("read_only")),
            "ShmSize": byte_size(svc["shm_size"], self.where("shm_size"))
            if svc.get("shm_size") is not None else 0,
            "OomScoreAdj": _int(svc.get("oom_score_adj") or 0, self.where("oom_score_adj")),
            "OomKillDisable": bool(svc.get("oom_kill_disable")),
        }
        if mounts:
            host["Mounts"] = mounts
        if svc.get("tmpfs"):
            tmpfs = svc["tmpfs"]
            entries = [tmpfs] if isinstance(tmpfs, str) else tmpfs
            host["Tmpfs"] = {path: opts for path, _, opts in
                             (str(t).partition(":") for t in entries)}
        for key, api in (("cap_add", "CapAdd"), ("cap_drop", "CapDrop"),
                         ("dns_search", "DnsSearch"), ("dns_opt", "DnsOptions"),
                         ("group_add", "GroupAdd"),
                         ("device_cgroup_rules", "DeviceCgroupRules")):
            if svc.get(key):
                host[api] = _strs(svc[key])
        if svc.get("dns"):
            dns = svc["dns"]
            host["Dns"] = [_ip(str(d), "DNS", self.where("dns"))
                           for d in ([dns] if isinstance(dns, str) else dns)]
        if svc.get("sysctls"):
            host["Sysctls"] = _str_map(svc["sysctls"])
        if svc.get("extra_hosts"):
            host["ExtraHosts"] = self.extra_hosts()
        if svc.get("logging"):
            logging = svc["logging"]
            host["LogConfig"] = {"Type": str(logging.get("driver") or ""),
                                 "Config": _str_map(logging.get("options")) or None}
        if svc.get("init") is not None:
            host["Init"] = bool(svc["init"])
        if svc.get("security_opt"):
            self.security_opts(host)
        if svc.get("pid"):
            host["PidMode"] = self.shared_namespace(str(svc["pid"]), "PID")
        if svc.get("ipc"):
            host["IpcMode"] = self.shared_namespace(str(svc["ipc"]), "IPC")
        for key, api in (("uts", "UTSMode"), ("userns_mode", "UsernsMode"),
                         ("isolation", "Isolation"), ("runtime", "Runtime"),
                         ("cgroup", "CgroupnsMode"), ("volume_driver", "VolumeDriver")):
            if svc.get(key):
                host[api] = str(svc[key])
        if svc.get("storage_opt"):
            host["StorageOpt"] = _str_map(svc["storage_opt"])
        if svc.get("annotations"):
            host["Annotations"] = _str_map(svc["annotations"])
        links = self.links()
        if links:
            host["Links"] = links
        if svc.get("volumes_from"):
            host["VolumesFrom"] = self.volumes_from()
        self.resources(host)
        return host

    def port_bindings(self) -> dict[str, list[dict[str, str]]]:
        bindings: dict[str, list[dict[str, str]]] = {}
        for i, port in enumerate(self.svc.get("ports") or []):
            host_ip = str(port.get("host_ip") or "")
            if host_ip:
                _ip(host_ip, "host IP", self.where(f"ports[{i}].host_ip"))
            published = port.get("published")
            bindings.setdefault(self.port_key(port, i), []).append(
                {"HostIp": host_ip, "HostPort": "" if published is None else str(published)})
        return bindings

    def restart_policy(self) -> dict[str, Any]:
        name, count = "", 0
        restart = self.svc.get("restart")
        if restart:
            cond, sep, num = str(restart).partition(":")
            name = _restart_name(cond)
            if sep:
                count = _int(num, self.where("restart"))
        policy = (self.svc.get("deploy") or {}).get("restart_policy")
        if policy is not None:
            # deploy.restart_policy wins over restart, as in compose.
            name = _restart_name(str(policy.get("condition") or ""))
            attempts = policy.get("max_attempts")
            count = 0 if attempts is None else _int(
                attempts, self.where("deploy.restart_policy.max_attempts"))
        return {"Name": name, "MaximumRetryCount": count}

    def extra_hosts(self) -> list[str]:
        out = []
        for entry in _strs(self.svc.get("extra_hosts")):
            # The model spells them "host=ip"; the API wants "host:ip".
            host, sep, ip = entry.partition("=")
            out.append(f"{host}:{ip}" if sep else entry)
        return out

    def security_opts(self, host: dict[str, Any]) -> None:
        """compose's parseSecurityOpts: ``systempaths=unconfined`` clears the masked
        and read-only paths, a seccomp profile file is read and sent inline."""
        parsed: list[str] = []
        for opt in _strs(self.svc.get("security_opt")):
            if opt == "systempaths=unconfined":
                host["MaskedPaths"] = []
                host["ReadonlyPaths"] = []
                continue
            key, sep, value = opt.partition("=")
            if not sep and opt != "no-new-privileges":
                if ":" not in opt:
                    raise ComposeError(f'invalid security-opt: "{opt}"')
                key, _, value = opt.partition(":")
            if key == "seccomp" and value not in ("unconfined", "builtin"):
                try:
                    with open(value, "rb") as f:
                        profile = json.loads(f.read())
                except OSError as exc:
                    raise ComposeError(f"opening seccomp profile ({value}) failed: "
                                       f"{exc.strerror}") from None
                except ValueError as exc:
                    raise ComposeError(f"compacting json for seccomp profile ({value}) "
                                       f"failed: {exc}") from None
                parsed.append("seccomp=" + json.dumps(profile, separators=(",", ":")))
            else:
                parsed.append(opt)
        if parsed:
            host["SecurityOpt"] = parsed

    def shared_namespace(self, mode: str, what: str) -> str:
        """``service:x`` -> ``container:<x's container>`` (compose's resolveSharedNamespaces)."""
        if not mode.startswith("service:"):
            return mode
        other = mode[len("service:"):]
        target = self.container_names.get(other)
        if not target:
            raise ComposeError(f"cannot share {what} namespace with service {other}: "
                               "container missing")
        return f"container:{target}"

    def links(self) -> list[str]:
        """compose's getLinks: each linked container under its link name and
        ``<service>-<n>`` and ``<project>-<service>-<n>``; external links as given."""
        out = []
        for raw in _strs(self.svc.get("links")):
            linked, sep, alias = raw.partition(":")
            alias = alias if sep else linked
            target = self.container_names.get(linked)
            if not target:
                continue        # no container of that service: compose links none
            out += [f"{target}:{alias}", f"{target}:{linked}-{self.number}",
                    f"{target}:{self.project}-{linked}-{self.number}"]
        for raw in _strs(self.svc.get("external_links")):
            ext, sep, alias = raw.partition(":")
            out.append(f"{ext}:{alias if sep else ext}")
        return out

    def volumes_from(self) -> list[str]:
        out = []
        for raw in _strs(self.svc.get("volumes_from")):
            parts = raw.split(":")
            if parts[0] == "container":
                if len(parts) < 2 or not parts[1]:
                    raise ComposeError(f'{self.where("volumes_from")}: invalid "{raw}"')
                out.append(":".join(parts[1:]))
                continue
            target = self.container_names.get(parts[0])
            if not target:
                raise ComposeError(f"cannot share volume with service {parts[0]}: "
                                   "container missing")
            # The access mode is kept (compose drops it; the API takes "name:ro").
            out.append(":".join([target, *parts[1:]]))
        return out

    def resources(self, host: dict[str, Any]) -> None:
        """compose's getDeployResources: the service keys, then deploy.resources."""
        svc = self.svc
        sizes = (("mem_limit", "Memory"), ("memswap_limit", "MemorySwap"),
                 ("mem_reservation", "MemoryReservation"))
        for key, api in sizes:
            if svc.get(key) is not None:
                host[api] = byte_size(svc[key], self.where(key))
        ints = (("cpu_shares", "CpuShares"), ("cpu_quota", "CpuQuota"),
                ("cpu_count", "CpuCount"))
        for key, api in ints:
            if svc.get(key):
                host[api] = _int(svc[key], self.where(key))
        # cpu_period and the realtime ones are durations in the spec, microseconds in the API.
        for key, api in (("cpu_period", "CpuPeriod"), ("cpu_rt_period", "CpuRealtimePeriod"),
                         ("cpu_rt_runtime", "CpuRealtimeRuntime")):
            value = svc.get(key)
            if value:
                host[api] = (value if isinstance(value, int) and not isinstance(value, bool)
                             else duration_ns(value, self.where(key)) // 1000)
        if svc.get("cpus"):
            # Go's int64(cpus * 1e9): truncated, as compose sends it.
            host["NanoCpus"] = int(_float(svc["cpus"], self.where("cpus")) * 1e9)
        if svc.get("cpuset"):
            host["CpusetCpus"] = str(svc["cpuset"])
        if svc.get("mem_swappiness"):
            host["MemorySwappiness"] = _int(svc["mem_swappiness"], self.where("mem_swappiness"))
        if svc.get("pids_limit"):
            host["PidsLimit"] = _int(svc["pids_limit"], self.where("pids_limit"))
        if svc.get("cgroup_parent"):
            host["CgroupParent"] = str(svc["cgroup_parent"])
        self.blkio(host)

        res = (svc.get("deploy") or {}).get("resources") or {}
        limits = res.get("limits") or {}
        where = self.where("deploy.resources.limits")
        if limits.get("memory"):
            host["Memory"] = byte_size(limits["memory"], f"{where}.memory")
        if limits.get("cpus"):
            host["NanoCpus"] = int(_float(limits["cpus"], f"{where}.cpus") * 1e9)
        if limits.get("pids") and _int(limits["pids"], f"{where}.pids") > 0:
            host["PidsLimit"] = _int(limits["pids"], f"{where}.pids")
        reservations = res.get("reservations") or {}
        # A CPU reservation is a swarm setting; only memory (and devices) apply here.
        if reservations.get("memory"):
            host["MemoryReservation"] = byte_size(
                reservations["memory"], self.where("deploy.resources.reservations.memory"))

        devices, requests = [], []
        cdi = []
        for i, dev in enumerate(svc.get("devices") or []):
            if isinstance(dev, str):
                parts = dev.split(":")
                if len(parts) > 3:
                    raise ComposeError(f"confusing device mapping, please use long syntax: {dev}")
                dev = {"source": parts[0], "target": parts[1] if len(parts) > 1 else "",
                       "permissions": parts[2] if len(parts) > 2 else "rwm"}
            source = str(dev.get("source") or "")
            target = str(dev.get("target") or source)
            if not source:
                raise ComposeError(f"{self.where(f'devices[{i}]')}: a device needs a source")
            if source == target and _CDI_NAME.match(source):
                cdi.append(source)
                continue
            devices.append({"PathOnHost": source, "PathInContainer": target,
                            "CgroupPermissions": str(dev.get("permissions") or "rwm")})
        if cdi:
            requests.append({"Driver": "cdi", "DeviceIDs": cdi})
        for dev in reservations.get("devices") or []:
            requests.append(self.device_request(dev, []))
        gpus = svc.get("gpus") or []
        for dev in [{"count": "all"}] if isinstance(gpus, str) else gpus:     # gpus: all
            requests.append(self.device_request(dev, ["gpu"]))
        if devices:
            host["Devices"] = devices
        if requests:
            host["DeviceRequests"] = requests
        ulimits = svc.get("ulimits") or {}
        if ulimits:
            host["Ulimits"] = [self.ulimit(n, ulimits[n]) for n in sorted(ulimits)]

    def device_request(self, dev: Any, extra_caps: list[str]) -> dict[str, Any]:
        count = dev.get("count")
        caps = _strs(dev.get("capabilities"))
        out: dict[str, Any] = {
            "Driver": str(dev.get("driver") or ""),
            "Count": -1 if count == "all" else _int(count or 0, self.where("devices.count")),
            "Capabilities": [caps + extra_caps],
        }
        if dev.get("device_ids"):
            out["DeviceIDs"] = _strs(dev["device_ids"])
        if dev.get("options"):
            out["Options"] = _str_map(dev["options"])
        return out

    def ulimit(self, name: str, value: Any) -> dict[str, Any]:
        where = self.where(f"ulimits.{name}")
        if isinstance(value, Mapping):
            single = value.get("single")
            soft = value.get("soft") or single or 0
            hard = value.get("hard") or single or 0
            return {"Name": name, "Soft": _int(soft, where), "Hard": _int(hard, where)}
        n = _int(value, where)
        return {"Name": name, "Soft": n, "Hard": n}

    def blkio(self, host: dict[str, Any]) -> None:
        blkio = self.svc.get("blkio_config")
        if not blkio:
            return
        where = self.where("blkio_config")
        if blkio.get("weight"):
            host["BlkioWeight"] = _int(blkio["weight"], f"{where}.weight")
        if blkio.get("weight_device"):
            host["BlkioWeightDevice"] = [
                {"Path": str(d.get("path") or ""), "Weight": _int(d.get("weight") or 0, where)}
                for d in blkio["weight_device"]]
        for key, api in (("device_read_bps", "BlkioDeviceReadBps"),
                         ("device_write_bps", "BlkioDeviceWriteBps"),
                         ("device_read_iops", "BlkioDeviceReadIOps"),
                         ("device_write_iops", "BlkioDeviceWriteIOps")):
            if blkio.get(key):
                host[api] = [{"Path": str(d.get("path") or ""),
                              "Rate": byte_size(d.get("rate") or 0, f"{where}.{key}")}
                             for d in blkio[key]]

    # --- volumes ----------------------------------------------------------------------

    def volumes(self) -> tuple[list[str], list[dict[str, Any]]]:
        """compose's buildContainerVolumes: a later entry with the same target
        replaces an earlier one; a secret or config never replaces a volume."""
        by_target: dict[str, str | dict[str, Any]] = {}
        anonymous = {str(v.get("target")) for v in self.svc.get("volumes") or []
                     if str(v.get("type") or "volume") == "volume" and not v.get("source")}
        inherited = set()
        for m in self.inherit_mounts:
            # A recreated container keeps the previous one's anonymous volumes and
            # the volumes of its image's VOLUMEs (compose's buildContainerMountOptions).
            kind = str(m.get("Type") or "")
            dest = str(m.get("Destination") or "")
            if kind == "tmpfs" or not dest or (dest not in self.image_volumes
                                               and dest not in anonymous):
                continue
            source = str(m.get("Name") if kind == "volume" else m.get("Source") or "")
            mount: dict[str, Any] = {"Type": kind, "Source": source, "Target": dest}
            if not m.get("RW", True):
                mount["ReadOnly"] = True
            by_target[dest] = mount
            inherited.add(dest)
        for i, vol in enumerate(self.svc.get("volumes") or []):
            target = str(vol.get("target") or "")
            if not target:
                raise ComposeError(f"{self.where(f'volumes[{i}]')}: a volume needs a target")
            if target in inherited and target in anonymous:
                continue
            by_target.pop(target, None)
            by_target[target] = self.volume(vol, i)
        for target, mount in self.secret_and_config_mounts():
            by_target.setdefault(target, mount)
        binds = [v for v in by_target.values() if isinstance(v, str)]
        mounts = [v for v in by_target.values() if not isinstance(v, str)]
        return binds, mounts

    def volume(self, vol: Mapping[str, Any], i: int) -> str | dict[str, Any]:
        kind = str(vol.get("type") or "volume")
        target = str(vol["target"])
        read_only = bool(vol.get("read_only"))
        mount: dict[str, Any] = {"Type": kind, "Target": target}
        if kind == "bind":
            source = str(vol.get("source") or "")
            if not source:
                raise ComposeError(f"{self.where(f'volumes[{i}]')}: a bind mount needs a source")
            source = os.path.abspath(source)
            bind = vol.get("bind")
            if bind is None or (bind.get("create_host_path") and not bind.get("propagation")
                                and not bind.get("recursive")):
                # Binds create a missing host path; the Mount API refuses it.
                return self.bind_string(source, target, read_only, vol)
            mount["Source"] = source
            opts: dict[str, Any] = {}
            if bind.get("propagation"):
                opts["Propagation"] = str(bind["propagation"])
            if bind.get("create_host_path"):
                opts["CreateMountpoint"] = True
            recursive = bind.get("recursive")
            if recursive == "disabled":
                opts["NonRecursive"] = True
            elif recursive == "writable":
                opts["ReadOnlyNonRecursive"] = True
            elif recursive == "readonly":
                opts["ReadOnlyForceRecursive"] = True
            mount["BindOptions"] = opts
        elif kind == "volume":
            source = str(vol.get("source") or "")
            options = vol.get("volume") or {}
            if source:
                if source not in self.volume_names:
                    raise ComposeError(f'service "{self.service}" refers to undefined volume '
                                       f"{source}: invalid compose project")
                source = self.volume_names[source]
                if not (options.get("nocopy") or options.get("subpath")
                        or options.get("labels")):
                    return self.bind_string(source, target, read_only, vol)
                mount["Source"] = source
            if options:
                vopts: dict[str, Any] = {}
                if options.get("nocopy"):
                    vopts["NoCopy"] = True
                if options.get("subpath"):
                    vopts["Subpath"] = str(options["subpath"])
                if options.get("labels"):
                    vopts["Labels"] = _str_map(options["labels"])
                mount["VolumeOptions"] = vopts
        elif kind == "tmpfs":
            tmpfs = vol.get("tmpfs") or {}
            if tmpfs:
                topts: dict[str, Any] = {}
                where = self.where(f"volumes[{i}].tmpfs")
                if tmpfs.get("size"):
                    topts["SizeBytes"] = byte_size(tmpfs["size"], f"{where}.size")
                if tmpfs.get("mode"):
                    topts["Mode"] = _file_mode(tmpfs["mode"], f"{where}.mode")
                mount["TmpfsOptions"] = topts
        elif kind == "npipe":
            raise ComposeError(f"{self.where(f'volumes[{i}]')}: npipe mounts are Windows only")
        else:
            # image, cluster: passed on for the engine to accept or refuse, as compose does.
            if vol.get("source"):
                mount["Source"] = str(vol["source"])
            if kind == "image" and (vol.get("image") or {}).get("subpath"):
                mount["ImageOptions"] = {"Subpath": str(vol["image"]["subpath"])}
        if read_only:
            mount["ReadOnly"] = True
        if vol.get("consistency"):
            mount["Consistency"] = str(vol["consistency"])
        return mount

    @staticmethod
    def bind_string(source: str, target: str, read_only: bool, vol: Mapping[str, Any]) -> str:
        """compose's toBindString: "src:dst:rw[,z|Z]"."""
        options = ["ro" if read_only else "rw"]
        selinux = (vol.get("bind") or {}).get("selinux")
        if selinux:
            options.append(str(selinux))
        return f"{source}:{target}:{','.join(options)}"

    # --- secrets and configs ----------------------------------------------------------

    def _file_refs(self, kind: str) -> list[tuple[Mapping[str, Any], Mapping[str, Any], str]]:
        """(service reference, top-level definition, target path) of each secret or config."""
        defined = self.model.get(kind) or {}
        out = []
        for ref in self.svc.get(kind) or []:
            if isinstance(ref, str):
                ref = {"source": ref}
            source = str(ref.get("source") or "")
            if source not in defined:
                raise ComposeError(f'service "{self.service}" refers to undefined '
                                   f"{kind[:-1]} {source}: invalid compose project")
            definition = defined[source] or {}
            name = str(definition.get("name") or source)
            if definition.get("external"):
                raise ComposeError(f"unsupported external {kind[:-1]} {name}")
            for key in ("driver", "template_driver"):
                if definition.get(key):
                    raise ComposeError(f"Docker Compose does not support {kind}.*.{key}")
            target = str(ref.get("target") or "")
            if kind == "secrets":
                if not target:
                    target = SECRETS_DIR + source
                elif not target.startswith("/"):
                    target = SECRETS_DIR + target
            elif not target:
                target = "/" + source
            elif not target.startswith("/"):
                target = "/" + target
            out.append((ref, definition, target))
        return out

    def secret_and_config_mounts(self) -> list[tuple[str, dict[str, Any]]]:
        mounts: list[tuple[str, dict[str, Any]]] = []
        for kind in ("secrets", "configs"):
            for ref, definition, target in self._file_refs(kind):
                if definition.get("environment") is not None or definition.get(
                        "content") is not None:
                    continue
                if not definition.get("file"):
                    raise ComposeError(f"{kind}.{ref.get('source')}: file, environment or "
                                       "content is required")
                if any(ref.get(k) is not None for k in ("uid", "gid", "mode")):
                    self.warnings.append(f"{kind} `uid`, `gid` and `mode` are not supported, "
                                         "they will be ignored")
                source = os.path.abspath(str(definition["file"]))
                if kind == "secrets" and not os.path.exists(source):
                    self.warnings.append(f"secret file {definition.get('name') or ref.get('source')} "
                                         "does not exist")
                mounts.append((target, {"Type": "bind", "Source": source, "Target": target,
                                        "ReadOnly": True}))
        return mounts

    def secret_and_config_files(self) -> None:
        for kind in ("secrets", "configs"):
            for ref, definition, target in self._file_refs(kind):
                name = str(definition.get("name") or ref.get("source"))
                if definition.get("content") is not None:
                    content = str(definition["content"])
                elif definition.get("environment") is not None:
                    var = str(definition["environment"])
                    if var not in self.environment:
                        raise ComposeError(f'environment variable "{var}" required by '
                                           f'{kind[:-1]} "{name}" is not set')
                    content = self.environment[var]
                else:
                    continue
                if not content:
                    continue        # compose writes nothing for an empty value
                if self.svc.get("read_only"):
                    raise ComposeError(f'cannot create {kind[:-1]} "{name}" in read-only '
                                       f"service {self.service}: `file` is the sole supported "
                                       "option")
                where = self.where(f"{kind}.{ref.get('source')}")
                self.files.append(InjectedFile(
                    path=target, content=content.encode(),
                    mode=0o444 if ref.get("mode") is None else _file_mode(ref["mode"],
                                                                          f"{where}.mode"),
                    uid=_int(ref.get("uid") or 0, f"{where}.uid"),
                    gid=_int(ref.get("gid") or 0, f"{where}.gid")))

    # --- networks ---------------------------------------------------------------------

    def networks(self, links: list[str]) -> tuple[
            str, dict[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
        """compose's defaultNetworkSettings: (NetworkMode, NetworkingConfig, others)."""
        mode = self.svc.get("network_mode")
        if mode:
            mode = str(mode)
            if mode == "disabled":
                return "none", None, []
            if mode.startswith("service:"):
                return self.shared_namespace(mode, "network"), None, []
            return mode, None, []
        if not self.model.get("networks"):
            return "none", None, []
        nets: Mapping[str, Any] = self.svc.get("networks") or {}
        ordered = sorted(nets, key=lambda k: (-int((nets[k] or {}).get("priority") or 0), k))
        keys = ordered or ["default"]
        primary = keys[0]
        mac = str(self.svc.get("mac_address") or "")
        primary_mac = str((nets.get(primary) or {}).get("mac_address") or "")
        if mac and primary_mac and mac != primary_mac:
            raise ComposeError("the service-level mac_address should have the same value as "
                               f"network {primary}")
        endpoints = []
        for key in keys:
            if key not in self.network_names:
                raise ComposeError(f'service "{self.service}" refers to undefined network '
                                   f"{key}: invalid compose project")
            ep = self.endpoint(key, nets.get(key), links)
            if key == primary and mac and not ep.get("MacAddress"):
                ep["MacAddress"] = mac
            endpoints.append((self.network_names[key], ep))
        first_name, first = endpoints[0]
        return first_name, {"EndpointsConfig": {first_name: first}}, endpoints[1:]

    def endpoint(self, key: str, cfg: Mapping[str, Any] | None,
                 links: list[str]) -> dict[str, Any]:
        # compose's getAliases: the container's own name always; the service
        # name and the network's aliases unless `run` without --use-aliases.
        aliases = [self.name]
        if self.use_aliases:
            aliases.append(self.service)
            aliases += _strs((cfg or {}).get("aliases"))
        ep: dict[str, Any] = {"Aliases": aliases}
        if links:
            ep["Links"] = list(links)
        if cfg:
            where = self.where(f"networks.{key}")
            ipam: dict[str, Any] = {}
            if cfg.get("ipv4_address"):
                ipam["IPv4Address"] = _ip(str(cfg["ipv4_address"]), "IPv4", where)
            if cfg.get("ipv6_address"):
                ipam["IPv6Address"] = _ip(str(cfg["ipv6_address"]), "IPv6", where)
            if cfg.get("link_local_ips"):
                ipam["LinkLocalIPs"] = [_ip(str(a), "link-local", where)
                                        for a in cfg["link_local_ips"] if a]
            if ipam:
                ep["IPAMConfig"] = ipam
            if cfg.get("mac_address"):
                ep["MacAddress"] = str(cfg["mac_address"])
            opts = _str_map(cfg.get("driver_opts"))
            if cfg.get("interface_name"):
                ifname = "com.docker.network.endpoint.ifname"
                if opts.get(ifname, cfg["interface_name"]) != cfg["interface_name"]:
                    self.warnings.append(f"ignoring services.{self.service}.networks.{key}."
                                         f"interface_name as {ifname} driver_opts is already "
                                         "declared")
                opts[ifname] = str(cfg["interface_name"])
            if opts:
                ep["DriverOpts"] = opts
            if cfg.get("gw_priority"):
                ep["GwPriority"] = _int(cfg["gw_priority"], f"{where}.gw_priority")
        return ep
