"""The body of ``POST /containers/create`` (Engine API 1.45) as typed dataclasses.

Three steps, in dockerd's order, each in Docker's words when it refuses:

    req = parse_create_request(raw_body, name="web", api_version="1.45")
    warnings = validate_create(req.config, req.host_config, sysinfo)   # verifyContainerSettings
    adapt_host_config(req.host_config, defaults)                       # adaptContainerSettings

``parse_create_request`` is runconfig's decoder plus the API router's version
gates; ``validate_create`` is the daemon's check against what the host offers
(``SysInfo``); ``adapt_host_config`` fills in the daemon's defaults (swap twice
the memory, 64 MiB of /dev/shm, private IPC, the cgroup namespace mode of the
cgroup version...). ``to_json`` of ``ContainerConfig`` and ``HostConfig`` gives
the ``Config`` and ``HostConfig`` objects of ``GET /containers/{id}/json``:
Go's encoder writes nil slices and maps as ``null`` and empty ones as ``[]``/``{}``,
so list and map fields keep ``None`` apart from empty, exactly as the client
sent them, and ``omitempty`` fields are left out the way Go leaves them out.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ketch.errors import InvalidArgument, NotSupported
from ketch.image.oci import HealthConfig
from ketch.jsonmodel import from_json, to_json
from ketch.linux import caps as capslib

API_VERSION = "1.45"

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
LINUX_MIN_MEMORY = 6 * 1024 * 1024          # dockerd's linuxMinMemory
MAX_HOSTNAME_LEN = 64                       # HOST_NAME_MAX
HEALTH_MIN_DURATION = 1_000_000             # 1ms, in nanoseconds (container.MinimumDuration)

# Docker's masked and read-only /proc and /sys paths (moby oci/defaults.go).
DEFAULT_MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")


def _f(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
       name: str | None = None, omit: str = "never") -> Any:
    """A field with Go's encoding: written always (``omit="never"``, also as null),
    or left out when empty (``"empty"``, Go's omitempty) or nil (``"unset"``)."""
    meta: dict[str, object] = {"omit": omit}
    if name:
        meta["json"] = name
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class _GoJSON:
    """Docker's JSON: PascalCase names, matched in any case on input as Go does."""

    __slots__ = ()
    __json_naming__: ClassVar[str] = "pascal"
    __json_fold_case__: ClassVar[bool] = True


# --- small shapes ------------------------------------------------------------

@dataclass(slots=True)
class LogConfig(_GoJSON):
    type: str = _f("")
    config: dict[str, str] | None = _f(None)


@dataclass(slots=True)
class RestartPolicy(_GoJSON):
    name: str = _f("")
    maximum_retry_count: int = _f(0)

    def is_none(self) -> bool:
        return self.name in ("", "no")


@dataclass(slots=True)
class PortBinding(_GoJSON):
    host_ip: str = _f("")
    host_port: str = _f("")


@dataclass(slots=True)
class DeviceMapping(_GoJSON):
    path_on_host: str = _f("")
    path_in_container: str = _f("")
    cgroup_permissions: str = _f("")


@dataclass(slots=True)
class WeightDevice(_GoJSON):
    path: str = _f("")
    weight: int = _f(0)


@dataclass(slots=True)
class ThrottleDevice(_GoJSON):
    path: str = _f("")
    rate: int = _f(0)


@dataclass(slots=True)
class DeviceRequest(_GoJSON):
    driver: str = _f("")
    count: int = _f(0)
    device_ids: list[str] | None = _f(None, name="DeviceIDs")
    capabilities: list[list[str]] | None = _f(None)
    options: dict[str, str] | None = _f(None)


@dataclass(slots=True)
class Ulimit(_GoJSON):
    name: str = _f("")
    hard: int = _f(0)
    soft: int = _f(0)


@dataclass(slots=True)
class BindOptions(_GoJSON):
    propagation: str = _f("", omit="empty")
    non_recursive: bool = _f(False, omit="empty")
    create_mountpoint: bool = _f(False, omit="empty")
    read_only_non_recursive: bool = _f(False, omit="empty")
    read_only_force_recursive: bool = _f(False, omit="empty")


@dataclass(slots=True)
class DriverConfig(_GoJSON):
    name: str = _f("", omit="empty")
    options: dict[str, str] | None = _f(None, omit="unset")


@dataclass(slots=True)
class VolumeOptions(_GoJSON):
    no_copy: bool = _f(False, omit="empty")
    labels: dict[str, str] | None = _f(None, omit="unset")
    subpath: str = _f("", omit="empty")
    driver_config: DriverConfig | None = _f(None, omit="unset")


@dataclass(slots=True)
class TmpfsOptions(_GoJSON):
    size_bytes: int = _f(0, omit="empty")
    mode: int = _f(0, omit="empty")
    options: list[list[str]] | None = _f(None, omit="unset")


@dataclass(slots=True)
class MountSpec(_GoJSON):
    """One ``HostConfig.Mounts`` entry (``--mount``)."""

    type: str = _f("", omit="empty")
    source: str = _f("", omit="empty")
    target: str = _f("", omit="empty")
    read_only: bool = _f(False, omit="empty")
    consistency: str = _f("", omit="empty")
    bind_options: BindOptions | None = _f(None, omit="unset")
    volume_options: VolumeOptions | None = _f(None, omit="unset")
    tmpfs_options: TmpfsOptions | None = _f(None, omit="unset")


# --- Config ------------------------------------------------------------------

@dataclass(slots=True)
class ContainerConfig(_GoJSON):
    """``container.Config``: what runs and how its stdio is wired."""

    hostname: str = _f("")
    domainname: str = _f("")
    user: str = _f("")
    attach_stdin: bool = _f(False)
    attach_stdout: bool = _f(False)
    attach_stderr: bool = _f(False)
    exposed_ports: dict[str, dict[str, Any]] | None = _f(None, omit="unset")
    tty: bool = _f(False)
    open_stdin: bool = _f(False)
    stdin_once: bool = _f(False)
    env: list[str] | None = _f(None)
    cmd: list[str] | None = _f(None)
    healthcheck: HealthConfig | None = _f(None, omit="unset")
    args_escaped: bool = _f(False, omit="empty")
    image: str = _f("")
    volumes: dict[str, dict[str, Any]] | None = _f(None)
    working_dir: str = _f("")
    entrypoint: list[str] | None = _f(None)
    network_disabled: bool = _f(False, omit="empty")
    mac_address: str = _f("", omit="empty")
    on_build: list[str] | None = _f(None)
    labels: dict[str, str] | None = _f(None)
    stop_signal: str = _f("", omit="empty")
    stop_timeout: int | None = _f(None, omit="unset")
    shell: list[str] | None = _f(None, omit="unset")


# --- HostConfig --------------------------------------------------------------

@dataclass(slots=True)
class HostConfig(_GoJSON):
    """``container.HostConfig`` with its embedded ``Resources``, in Go's field order."""

    binds: list[str] | None = _f(None)
    container_id_file: str = _f("", name="ContainerIDFile")
    log_config: LogConfig = _f(factory=LogConfig)
    network_mode: str = _f("")
    port_bindings: dict[str, list[PortBinding] | None] | None = _f(None)
    restart_policy: RestartPolicy = _f(factory=RestartPolicy)
    auto_remove: bool = _f(False)
    volume_driver: str = _f("")
    volumes_from: list[str] | None = _f(None)
    console_size: list[int] = _f(factory=lambda: [0, 0])
    annotations: dict[str, str] | None = _f(None, omit="unset")
    cap_add: list[str] | None = _f(None)
    cap_drop: list[str] | None = _f(None)
    cgroupns_mode: str = _f("")
    dns: list[str] | None = _f(None)
    dns_options: list[str] | None = _f(None)
    dns_search: list[str] | None = _f(None)
    extra_hosts: list[str] | None = _f(None)
    group_add: list[str] | None = _f(None)
    ipc_mode: str = _f("")
    cgroup: str = _f("")
    links: list[str] | None = _f(None)
    oom_score_adj: int = _f(0)
    pid_mode: str = _f("")
    privileged: bool = _f(False)
    publish_all_ports: bool = _f(False)
    readonly_rootfs: bool = _f(False)
    security_opt: list[str] | None = _f(None)
    storage_opt: dict[str, str] | None = _f(None, omit="unset")
    tmpfs: dict[str, str] | None = _f(None, omit="unset")
    uts_mode: str = _f("", name="UTSMode")
    userns_mode: str = _f("")
    shm_size: int = _f(0)
    sysctls: dict[str, str] | None = _f(None, omit="unset")
    runtime: str = _f("", omit="empty")
    isolation: str = _f("")
    # Resources
    cpu_shares: int = _f(0)
    memory: int = _f(0)
    nano_cpus: int = _f(0)
    cgroup_parent: str = _f("")
    blkio_weight: int = _f(0)
    blkio_weight_device: list[WeightDevice] | None = _f(None)
    blkio_device_read_bps: list[ThrottleDevice] | None = _f(None)
    blkio_device_write_bps: list[ThrottleDevice] | None = _f(None)
    blkio_device_read_iops: list[ThrottleDevice] | None = _f(None, name="BlkioDeviceReadIOps")
    blkio_device_write_iops: list[ThrottleDevice] | None = _f(None, name="BlkioDeviceWriteIOps")
    cpu_period: int = _f(0)
    cpu_quota: int = _f(0)
    cpu_realtime_period: int = _f(0)
    cpu_realtime_runtime: int = _f(0)
    cpuset_cpus: str = _f("")
    cpuset_mems: str = _f("")
    devices: list[DeviceMapping] | None = _f(None)
    device_cgroup_rules: list[str] | None = _f(None)
    device_requests: list[DeviceRequest] | None = _f(None)
    kernel_memory: int = _f(0, omit="empty")
    kernel_memory_tcp: int = _f(0, name="KernelMemoryTCP", omit="empty")
    memory_reservation: int = _f(0)
    memory_swap: int = _f(0)
    memory_swappiness: int | None = _f(None)
    oom_kill_disable: bool | None = _f(None)
    pids_limit: int | None = _f(None)
    ulimits: list[Ulimit] | None = _f(None)
    cpu_count: int = _f(0)
    cpu_percent: int = _f(0)
    io_maximum_iops: int = _f(0, name="IOMaximumIOps")
    io_maximum_bandwidth: int = _f(0, name="IOMaximumBandwidth")
    # end of Resources
    mounts: list[MountSpec] | None = _f(None, omit="unset")
    masked_paths: list[str] | None = _f(None)
    readonly_paths: list[str] | None = _f(None)
    init: bool | None = _f(None, omit="unset")


# --- NetworkingConfig --------------------------------------------------------

@dataclass(slots=True)
class EndpointIPAMConfig(_GoJSON):
    ipv4_address: str = _f("", name="IPv4Address", omit="empty")
    ipv6_address: str = _f("", name="IPv6Address", omit="empty")
    link_local_ips: list[str] | None = _f(None, name="LinkLocalIPs", omit="unset")


@dataclass(slots=True)
class EndpointSettings(_GoJSON):
    ipam_config: EndpointIPAMConfig | None = _f(None, name="IPAMConfig")
    links: list[str] | None = _f(None)
    aliases: list[str] | None = _f(None)
    mac_address: str = _f("")
    driver_opts: dict[str, str] | None = _f(None)
    network_id: str = _f("", name="NetworkID")
    endpoint_id: str = _f("", name="EndpointID")
    gateway: str = _f("")
    ip_address: str = _f("", name="IPAddress")
    ip_prefix_len: int = _f(0, name="IPPrefixLen")
    ipv6_gateway: str = _f("", name="IPv6Gateway")
    global_ipv6_address: str = _f("", name="GlobalIPv6Address")
    global_ipv6_prefix_len: int = _f(0, name="GlobalIPv6PrefixLen")
    dns_names: list[str] | None = _f(None, name="DNSNames")


@dataclass(slots=True)
class NetworkingConfig(_GoJSON):
    endpoints_config: dict[str, EndpointSettings | None] = _f(factory=dict)


@dataclass(slots=True)
class CreateRequest:
    name: str
    config: ContainerConfig
    host_config: HostConfig
    networking_config: NetworkingConfig
    warnings: list[str] = field(default_factory=list)


# --- the host, as validation needs it ------------------------------------------

@dataclass(slots=True)
class SysInfo:
    """What the host's kernel and cgroups offer (moby's pkg/sysinfo), for validation.

    The engine fills it from the cgroup controllers it finds; a feature that is
    absent turns a setting into a warning and drops it, as dockerd does.
    """

    ncpu: int = field(default_factory=lambda: os.cpu_count() or 1)
    cpus: str = ""                 # cpuset.cpus available, "" = 0..ncpu-1
    mems: str = "0"                # cpuset.mems available
    memory_limit: bool = True
    swap_limit: bool = True
    memory_reservation: bool = True
    memory_swappiness: bool = True
    oom_kill_disable: bool = True
    pids_limit: bool = True
    cpu_cfs: bool = True
    cpu_shares: bool = True
    cpu_realtime: bool = False
    cpuset: bool = True
    blkio_weight: bool = True
    blkio_weight_device: bool = True
    blkio_read_bps_device: bool = True
    blkio_write_bps_device: bool = True
    blkio_read_iops_device: bool = True
    blkio_write_iops_device: bool = True
    cgroup_namespaces: bool = True
    ipv4_forwarding_disabled: bool = False
    runtimes: tuple[str, ...] = ("runc",)
    default_runtime: str = "runc"


@dataclass(slots=True)
class DaemonDefaults:
    """The daemon settings ``adapt_host_config`` fills unset fields from."""

    shm_size: int = DEFAULT_SHM_SIZE
    ipc_mode: str = "private"
    cgroupns_mode: str = ""        # "" = host on cgroup v1/hybrid, private on v2
    cgroup2: bool = False
    runtime: str = "runc"
    log_driver: str = "json-file"           # the daemon's log-driver and log-opts
    log_opts: dict[str, str] = field(default_factory=dict)
    ulimits: list[Ulimit] = field(default_factory=list)   # the daemon's default-ulimits


# --- parsing -----------------------------------------------------------------

_CONFIG_KEYS = frozenset(
    str(f.metadata.get("json") or "".join(p[:1].upper() + p[1:] for p in f.name.split("_"))).lower()
    for f in dataclasses.fields(ContainerConfig))
_STRSLICE_CONFIG = ("Cmd", "Entrypoint", "Shell")
_STRSLICE_HOST = ("CapAdd", "CapDrop")


def version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        raise InvalidArgument(f"invalid API version {v!r}") from None


def _strslices(obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Go's StrSlice takes a JSON string as a one-element list."""
    wanted = {k.lower() for k in keys}
    return {k: [v] if k.lower() in wanted and isinstance(v, str) else v for k, v in obj.items()}


def _get_folded(data: dict[str, Any], key: str) -> Any:
    """``data[key]``, the key matched in any case when not exact (Go's decoder)."""
    if key in data:
        return data[key]
    lowered = key.lower()
    return next((v for k, v in data.items() if k.lower() == lowered), None)


def _decode(cls: type[Any], data: Any, where: str) -> Any:
    try:
        return from_json(cls, data, where=where)
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None


def parse_create_request(body: bytes | str | dict[str, Any], name: str = "", *,
                         api_version: str = API_VERSION, cgroup2: bool = False) -> CreateRequest:
    """Decode and check a create body as runconfig and the API router do.

    ``cgroup2`` matters only for clients older than 1.41, whose default cgroup
    namespace mode was "host" on cgroup v1 hosts.
    """
    if isinstance(body, (bytes, str)):
        text = body.decode() if isinstance(body, bytes) else body
        if not text.strip():
            raise InvalidArgument("invalid JSON: got EOF while reading request body")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidArgument(f"invalid JSON: {exc}") from None
    else:
        data = body
    if not isinstance(data, dict):
        raise InvalidArgument(f"invalid JSON: expected an object, got {type(data).__name__}")
    # Config is embedded in the body: a body naming none of its fields has none.
    if not any(k.lower() in _CONFIG_KEYS and data[k] is not None for k in data):
        raise InvalidArgument("config cannot be empty in order to create a container")
    config = _decode(ContainerConfig, _strslices(data, _STRSLICE_CONFIG), "")
    hc_data = _get_folded(data, "HostConfig")
    host_config = (HostConfig() if hc_data is None else
                   _decode(HostConfig, _strslices(hc_data, _STRSLICE_HOST)
                           if isinstance(hc_data, dict) else hc_data, "HostConfig"))
    nc_data = _get_folded(data, "NetworkingConfig")
    networking = (NetworkingConfig() if nc_data is None
                  else _decode(NetworkingConfig, nc_data, "NetworkingConfig"))

    _validate_net_mode(config, host_config)
    if host_config.isolation not in ("", "default"):
        # Go's %q: double quotes (Python's repr gave single ones).
        raise InvalidArgument(f"Invalid isolation: {json.dumps(host_config.isolation)} - "
                              "linux only supports 'default'")
    if host_config.io_maximum_bandwidth:
        raise InvalidArgument(
            "Invalid QoS settings: linux does not support configuration of maximum bandwidth")
    if host_config.io_maximum_iops:
        raise InvalidArgument(
            "Invalid QoS settings: linux does not support configuration of maximum IOPs")
    if config.volumes is None:
        config.volumes = {}

    _api_gates(config, host_config, networking, version_tuple(api_version), cgroup2)
    if host_config.network_mode in ("", "default"):
        host_config.network_mode = "bridge"
        if "default" in networking.endpoints_config:
            networking.endpoints_config["bridge"] = networking.endpoints_config.pop("default")
    warnings = _mac_address_bc(config, host_config, networking, version_tuple(api_version))
    # 0 and any negative value mean "unlimited", stored as no limit at all.
    if host_config.pids_limit is not None and host_config.pids_limit <= 0:
        host_config.pids_limit = None
    return CreateRequest(name=name, config=config, host_config=host_config,
                         networking_config=networking, warnings=warnings)


def _network_name(mode: str) -> str | None:
    """The network a bridge or user-defined NetworkMode names; None for the others."""
    if mode in ("host", "none", "default") or mode.startswith("container:"):
        return None
    return mode


def _mac_address_bc(c: ContainerConfig, hc: HostConfig, nc: NetworkingConfig,
                    v: tuple[int, ...]) -> list[str]:
    """The container-wide MacAddress (deprecated in 1.44) moved to its endpoint."""
    mac = c.mac_address
    net = _network_name(hc.network_mode)
    if v < (1, 44):
        if not mac:
            for ep in nc.endpoints_config.values():
                if ep is not None:
                    ep.mac_address = ""
            return []
        if net is None:
            raise InvalidArgument("conflicting options: mac-address and the network mode")
        if not nc.endpoints_config:
            nc.endpoints_config[net] = EndpointSettings()
        for key, ep in list(nc.endpoints_config.items()):
            if ep is None:
                ep = nc.endpoints_config[key] = EndpointSettings()
            ep.mac_address = mac
        return []
    if not mac:
        return []
    if net is not None:
        if not nc.endpoints_config:
            nc.endpoints_config[net] = EndpointSettings(mac_address=mac)
        else:
            if net not in nc.endpoints_config:
                raise InvalidArgument("if a container-wide MAC address is supplied, "
                                      "HostConfig.NetworkMode must match the identity of a "
                                      "network in NetworkSettings.Networks")
            ep = nc.endpoints_config[net] or EndpointSettings()
            nc.endpoints_config[net] = ep
            if not ep.mac_address:
                ep.mac_address = mac
            elif ep.mac_address != mac:
                raise InvalidArgument("the container-wide MAC address must match the "
                                      "endpoint-specific MAC address for the main network, "
                                      "or be left empty")
    c.mac_address = ""
    return ["The container-wide MacAddress field is now deprecated. It should be specified "
            "in EndpointsConfig instead."]


def _validate_net_mode(c: ContainerConfig, hc: HostConfig) -> None:
    mode = hc.network_mode
    is_container = mode.startswith("container:")
    if mode.split(":")[0] == "container" and (":" not in mode or not mode.split(":")[1]):
        raise InvalidArgument("Invalid network mode: invalid container format container:<name|id>")
    if is_container:
        if c.hostname:
            raise InvalidArgument("conflicting options: hostname and the network mode")
        if hc.links:
            raise InvalidArgument("conflicting options: container type network can't be used "
                                  "with links. This would result in undefined behavior")
        if hc.dns:
            raise InvalidArgument("conflicting options: dns and the network mode")
        if hc.extra_hosts:
            raise InvalidArgument(
                "conflicting options: custom host-to-IP mapping and the network mode")
        if hc.port_bindings or hc.publish_all_ports:
            raise InvalidArgument(
                "conflicting options: port publishing and the container type network mode")
        if c.exposed_ports:
            raise InvalidArgument(
                "conflicting options: port exposing and the container type network mode")
    if hc.uts_mode == "host" and c.hostname:
        raise InvalidArgument("conflicting options: hostname and the UTS mode")
    if mode == "host" and hc.links:
        raise InvalidArgument("conflicting options: host type networking can't be used with "
                              "links. This would result in undefined behavior")


def _api_gates(c: ContainerConfig, hc: HostConfig, nc: NetworkingConfig,
               v: tuple[int, ...], cgroup2: bool) -> None:
    """What the router changes or refuses by the client's API version."""
    if v < (1, 25):
        hc.auto_remove = False
    if v < (1, 40):
        hc.kernel_memory_tcp = 0
        for m in hc.mounts or []:
            if m.bind_options:
                m.bind_options.non_recursive = False
        if not hc.ipc_mode:
            hc.ipc_mode = "shareable"
    if v < (1, 41) and not cgroup2 and not hc.cgroupns_mode:
        hc.cgroupns_mode = "host"
    if v < (1, 42):
        for m in hc.mounts or []:
            if m.volume_options and m.type != "volume":
                m.volume_options = None
            if m.tmpfs_options and m.type != "tmpfs":
                m.tmpfs_options = None
            if m.bind_options:
                m.bind_options.create_mountpoint = False
        hc.console_size = [0, 0]
    else:
        hc.kernel_memory = 0
        for m in hc.mounts or []:
            if m.volume_options is not None and m.type != "volume":
                raise InvalidArgument(f'VolumeOptions must not be specified on mount type "{m.type}"')
            if m.bind_options is not None and m.type != "bind":
                raise InvalidArgument(f'BindOptions must not be specified on mount type "{m.type}"')
            if m.tmpfs_options is not None and m.type != "tmpfs":
                raise InvalidArgument(f'TmpfsOptions must not be specified on mount type "{m.type}"')
    if v < (1, 43):
        hc.annotations = None
    if v < (1, 44):
        if c.healthcheck is not None:
            c.healthcheck.start_interval = 0
        for m in hc.mounts or []:
            if m.type == "bind" and m.bind_options and m.bind_options.read_only_force_recursive:
                raise InvalidArgument("BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer")
        if len(nc.endpoints_config) > 1:
            raise InvalidArgument("Container cannot be created with multiple network endpoints: "
                                  + ", ".join(nc.endpoints_config))
    if v < (1, 45):
        for m in hc.mounts or []:
            if m.volume_options and m.volume_options.subpath:
                raise InvalidArgument("VolumeOptions.Subpath needs API v1.45 or newer")


# --- daemon-side validation --------------------------------------------------

def _signal_number(raw: str) -> int:
    """moby's signal.ParseSignal: a number, or a name with or without SIG."""
    if raw.isdigit():
        if int(raw) == 0:
            raise InvalidArgument(f"Invalid signal: {raw}")
        return int(raw)
    name = raw.upper().removeprefix("SIG")
    for base, label in ((signal.SIGRTMIN, "RTMIN"), (signal.SIGRTMAX, "RTMAX")):
        if name == label:
            return int(base)
        for sep in ("+", "-"):
            if name.startswith(label + sep) and name[len(label) + 1:].isdigit():
                off = int(name[len(label) + 1:])
                n = int(base) + off if sep == "+" else int(base) - off
                if signal.SIGRTMIN <= n <= signal.SIGRTMAX:
                    return n
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        raise InvalidArgument(f"Invalid signal: {raw}") from None


def parse_uint_list(value: str) -> set[int]:
    """``0-2,4`` -> {0, 1, 2, 4}, as moby's parsers.ParseUintList."""
    if value == "":
        return set()
    out: set[int] = set()
    for part in value.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise InvalidArgument(f"invalid format: {value}")
        a = int(lo)
        b = int(hi) if sep else a
        if b < a:
            raise InvalidArgument(f"invalid format: {value}")
        out.update(range(a, b + 1))
    return out


def _check_env(env: str) -> None:
    if env.partition("=")[0] == "":
        raise InvalidArgument(f"invalid environment variable: {env}")


def _check_extra_host(val: str) -> None:
    k, sep, v = val.partition("=")
    if not sep:
        k, sep, v = val.partition(":")
    if not sep or not k or ":" in k:
        raise InvalidArgument(f'bad format for add-host: "{val}"')
    if v == "host-gateway":
        return
    if len(v) > 2 and v[0] == "[" and v[-1] == "]":
        v = v[1:-1]
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise InvalidArgument(f'invalid IP address in add-host: "{v}"') from None


def _port_range_ok(s: str) -> bool:
    lo, sep, hi = s.partition("-")
    try:
        a = int(lo)
        b = int(hi) if sep else a
    except ValueError:
        return False
    return 0 <= a <= 65535 and 0 <= b <= 65535 and a <= b


def _check_port_bindings(ports: dict[str, list[PortBinding] | None] | None) -> None:
    for port, bindings in (ports or {}).items():
        num = port.partition("/")[0]
        if not _port_range_ok(num) or num.partition("-")[0] == "0":
            raise InvalidArgument(f'invalid port specification: "{port}"')
        for pb in bindings or []:
            if pb.host_port and not _port_range_ok(pb.host_port):
                raise InvalidArgument(f'invalid port specification: "{pb.host_port}"')


def validate_restart_policy(p: RestartPolicy) -> None:
    if p.name in ("always", "unless-stopped", "no"):
        if p.maximum_retry_count != 0:
            msg = "invalid restart policy: maximum retry count can only be used with 'on-failure'"
            if p.maximum_retry_count < 0:
                msg += " and cannot be negative"
            raise InvalidArgument(msg)
    elif p.name == "on-failure":
        if p.maximum_retry_count < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    elif p.name != "":
        raise InvalidArgument(f"invalid restart policy: unknown policy '{p.name}'; use one of "
                              "'no', 'always', 'on-failure', or 'unless-stopped'")


def _duration(ns: int) -> str:
    """Go's time.Duration String() for the whole milliseconds the messages use."""
    if ns % 1_000_000_000 == 0:
        return f"{ns // 1_000_000_000}s"
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{ns}ns"


def _check_healthcheck(h: HealthConfig | None) -> None:
    if h is None:
        return
    minimum = _duration(HEALTH_MIN_DURATION)
    for label, value in (("Interval", h.interval), ("Timeout", h.timeout)):
        if value != 0 and value < HEALTH_MIN_DURATION:
            raise InvalidArgument(f"{label} in Healthcheck cannot be less than {minimum}")
    if h.retries < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")
    for label, value in (("StartPeriod", h.start_period), ("StartInterval", h.start_interval)):
        if value != 0 and value < HEALTH_MIN_DURATION:
            raise InvalidArgument(f"{label} in Healthcheck cannot be less than {minimum}")


def normalize_capabilities(names: Iterable[str], known: Iterable[str] | None = None) -> list[str]:
    """``net_admin`` / ``CAP_NET_ADMIN`` / ``ALL``, as moby's NormalizeLegacyCapabilities;
    ``known`` is what the kernel has (all names ketch knows by default)."""
    valid = set(capslib.CAPS if known is None else known)
    out = []
    for raw in names:
        c = raw.upper()
        if c == "ALL":
            out.append(c)
            continue
        if not c.startswith("CAP_"):
            c = "CAP_" + c
        if c not in capslib.CAPS:
            raise InvalidArgument(f'unknown capability: "{c}"')
        if c not in valid:
            raise InvalidArgument("capability not supported by your kernel or not available "
                                  f'in the current environment: "{c}"')
        out.append(c)
    return out


def _cap_names(caps: list[str] | None, what: str) -> None:
    try:
        normalize_capabilities(caps or [])
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None


def _is_container_mode(mode: str) -> bool:
    kind, sep, ref = mode.partition(":")
    return kind == "container" and bool(sep) and ref != ""


def validate_create(config: ContainerConfig | None, hc: HostConfig | None,
                    sysinfo: SysInfo, *, update: bool = False) -> list[str]:
    """dockerd's verifyContainerSettings; returns its warnings, raises its errors.

    Settings the host cannot enforce are dropped from ``hc`` with a warning,
    as dockerd does.
    """
    warnings: list[str] = []
    if config is not None:
        if config.working_dir:
            if not config.working_dir.startswith("/"):
                raise InvalidArgument(f"the working directory '{config.working_dir}' is invalid, "
                                      "it needs to be an absolute path")
            config.working_dir = os.path.normpath(config.working_dir).replace("//", "/")
        if config.stop_signal:
            _signal_number(config.stop_signal)
        for env in config.env or []:
            _check_env(env)
        _check_healthcheck(config.healthcheck)
    if hc is None:
        return warnings
    if hc.auto_remove and not hc.restart_policy.is_none():
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    for extra in hc.extra_hosts or []:
        _check_extra_host(extra)
    _check_port_bindings(hc.port_bindings)
    validate_restart_policy(hc.restart_policy)
    _cap_names(hc.cap_add, "CapAdd")
    _cap_names(hc.cap_drop, "CapDrop")
    if hc.isolation not in ("", "default"):
        raise InvalidArgument(f"invalid isolation '{hc.isolation}' on linux")
    if any(k == "" for k in hc.annotations or {}):
        raise InvalidArgument(
            "invalid Annotations: the empty string is not permitted as an annotation key")

    # verifyPlatformContainerSettings
    if config is not None and len(config.hostname.encode()) > MAX_HOSTNAME_LEN:
        raise InvalidArgument(f'hostname "{config.hostname}" is too long '
                              f"(maximum {MAX_HOSTNAME_LEN} bytes)")
    if (hc.cpu_realtime_period or hc.cpu_realtime_runtime) and not sysinfo.cpu_realtime:
        raise InvalidArgument("Your kernel does not support CPU real-time scheduler")
    if (hc.cpu_realtime_period and hc.cpu_realtime_runtime
            and hc.cpu_realtime_runtime > hc.cpu_realtime_period):
        raise InvalidArgument("cpu real-time runtime cannot be higher than cpu real-time period")
    warnings += _verify_resources(hc, sysinfo, update)
    ipc = hc.ipc_mode
    if ipc not in ("", "none", "private", "host", "shareable") and not _is_container_mode(ipc):
        raise InvalidArgument(f"invalid IPC mode: {ipc}")
    if hc.pid_mode not in ("", "host") and not _is_container_mode(hc.pid_mode):
        raise InvalidArgument(f"invalid PID mode: {hc.pid_mode}")
    if hc.shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    if hc.uts_mode not in ("", "host"):
        raise InvalidArgument(f"invalid UTS mode: {hc.uts_mode}")
    if hc.oom_score_adj < -1000 or hc.oom_score_adj > 1000:
        raise InvalidArgument(f"Invalid value {hc.oom_score_adj}, range for oom score adj is "
                              "[-1000, 1000]")
    if sysinfo.ipv4_forwarding_disabled and hc.network_mode not in ("host", "none"):
        warnings.append("IPv4 forwarding is disabled. Networking will not work.")
    if hc.network_mode == "host" and hc.port_bindings:
        warnings.append("Published ports are discarded when using host network mode")
    runtime = hc.runtime or sysinfo.default_runtime
    if runtime not in sysinfo.runtimes:
        raise InvalidArgument(f"unknown or invalid runtime name: {runtime}")
    for dest in hc.tmpfs or {}:
        _check_tmpfs_destination(dest)
    if hc.cgroupns_mode not in ("", "private", "host"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {hc.cgroupns_mode}")
    if hc.cgroupns_mode == "private" and not sysinfo.cgroup_namespaces:
        warnings.append("Your kernel does not support cgroup namespaces.  "
                        "Cgroup namespace setting discarded.")
    return warnings


def _check_tmpfs_destination(dest: str) -> None:
    clean = os.path.normpath(dest.replace("\\", "/")) if dest else "."
    if clean in ("/", "//"):
        raise InvalidArgument("invalid specification: destination can't be '/'")
    if not dest.replace("\\", "/").startswith("/"):
        raise InvalidArgument(f"invalid mount path: '{dest}' mount path must be absolute")


def _verify_resources(r: HostConfig, si: SysInfo, update: bool) -> list[str]:
    """verifyPlatformContainerResources: Docker's limits, messages and warnings."""
    w: list[str] = []
    if r.memory_swappiness == -1:        # fixMemorySwappiness: -1 means "unset"
        r.memory_swappiness = None
    if r.memory != 0 and r.memory < LINUX_MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if r.memory > 0 and not si.memory_limit:
        w.append("Your kernel does not support memory limit capabilities or the cgroup is not "
                 "mounted. Limitation discarded.")
        r.memory = 0
        r.memory_swap = -1
    if r.memory > 0 and r.memory_swap != -1 and not si.swap_limit:
        w.append("Your kernel does not support swap limit capabilities or the cgroup is not "
                 "mounted. Memory limited without swap.")
        r.memory_swap = -1
    if r.memory > 0 and r.memory_swap > 0 and r.memory_swap < r.memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if r.memory == 0 and r.memory_swap > 0 and not update:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap "
                              "limit, see usage")
    if r.memory_swappiness is not None and not si.memory_swappiness:
        w.append("Your kernel does not support memory swappiness capabilities or the cgroup is "
                 "not mounted. Memory swappiness discarded.")
        r.memory_swappiness = None
    if r.memory_swappiness is not None and not 0 <= r.memory_swappiness <= 100:
        raise InvalidArgument(f"Invalid value: {r.memory_swappiness}, valid memory swappiness "
                              "range is 0-100")
    if r.memory_reservation > 0 and not si.memory_reservation:
        w.append("Your kernel does not support memory soft limit capabilities or the cgroup is "
                 "not mounted. Limitation discarded.")
        r.memory_reservation = 0
    if 0 < r.memory_reservation < LINUX_MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if r.memory > 0 and r.memory_reservation > 0 and r.memory < r.memory_reservation:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    if r.oom_kill_disable is not None and not si.oom_kill_disable:
        if r.oom_kill_disable:
            w.append("Your kernel does not support OomKillDisable. OomKillDisable discarded.")
        r.oom_kill_disable = None
    if r.oom_kill_disable and r.memory == 0:
        w.append("OOM killer is disabled for the container, but no memory limit is set, this "
                 "can result in the system running out of resources.")
    if r.pids_limit is not None and not si.pids_limit:
        if r.pids_limit > 0:
            w.append("Your kernel does not support PIDs limit capabilities or the cgroup is not "
                     "mounted. PIDs limit discarded.")
        r.pids_limit = None

    if r.nano_cpus > 0 and r.cpu_period > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if r.nano_cpus > 0 and r.cpu_quota > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if r.nano_cpus > 0 and not si.cpu_cfs:
        raise InvalidArgument("NanoCPUs can not be set, as your kernel does not support CPU CFS "
                              "scheduler or the cgroup is not mounted")
    if r.nano_cpus < 0 or r.nano_cpus > si.ncpu * 10**9:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {si.ncpu}.00, as there are only "
                              f"{si.ncpu} CPUs available")
    # A negative --cpu-shares passes create: dockerd refuses it only at start, when it
    # builds the spec ("shares: invalid argument", specgen).
    if r.cpu_shares > 0 and not si.cpu_shares:
        w.append("Your kernel does not support CPU shares or the cgroup is not mounted. "
                 "Shares discarded.")
        r.cpu_shares = 0
    if (r.cpu_period or r.cpu_quota) and not si.cpu_cfs:
        w.append("Your kernel does not support CPU CFS scheduler. CPU period/quota discarded.")
        r.cpu_period = r.cpu_quota = 0
    if r.cpu_period != 0 and not 1000 <= r.cpu_period <= 1_000_000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    if 0 < r.cpu_quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if r.cpu_percent > 0:
        w.append("linux does not support CPU percent. Percent discarded.")
        r.cpu_percent = 0

    if (r.cpuset_cpus or r.cpuset_mems) and not si.cpuset:
        w.append("Your kernel does not support cpuset or the cgroup is not mounted. "
                 "Cpuset discarded.")
        r.cpuset_cpus = r.cpuset_mems = ""
    available_cpus = si.cpus or (f"0-{si.ncpu - 1}" if si.ncpu > 1 else "0")
    for label, value, available in (("cpus", r.cpuset_cpus, available_cpus),
                                    ("mems", r.cpuset_mems, si.mems)):
        try:
            wanted = parse_uint_list(value)
        except InvalidArgument as exc:
            raise InvalidArgument(f"Invalid value {value} for cpuset {label}: {exc}") from None
        if not wanted <= parse_uint_list(available):
            what = "CPUs" if label == "cpus" else "memory nodes"
            raise InvalidArgument(f"Requested {what} are not available - requested {value}, "
                                  f"available: {available}")

    if r.blkio_weight > 0 and not si.blkio_weight:
        w.append("Your kernel does not support Block I/O weight or the cgroup is not mounted. "
                 "Weight discarded.")
        r.blkio_weight = 0
    if r.blkio_weight > 0 and not 10 <= r.blkio_weight <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")
    if r.io_maximum_bandwidth or r.io_maximum_iops:
        raise InvalidArgument("Invalid QoS settings: linux does not support Maximum IO Bandwidth "
                              "or Maximum IO IOps")
    for attr, flag, msg in (
        ("blkio_weight_device", si.blkio_weight_device,
         "Block I/O weight_device or the cgroup is not mounted. Weight-device discarded."),
        ("blkio_device_read_bps", si.blkio_read_bps_device,
         "BPS Block I/O read limit or the cgroup is not mounted. Block I/O BPS read limit "
         "discarded."),
        ("blkio_device_write_bps", si.blkio_write_bps_device,
         "BPS Block I/O write limit or the cgroup is not mounted. Block I/O BPS write limit "
         "discarded."),
        ("blkio_device_read_iops", si.blkio_read_iops_device,
         "IOPS Block read limit or the cgroup is not mounted. Block I/O IOPS read limit "
         "discarded."),
        ("blkio_device_write_iops", si.blkio_write_iops_device,
         "IOPS Block write limit or the cgroup is not mounted. Block I/O IOPS write limit "
         "discarded."),
    ):
        if getattr(r, attr) and not flag:
            w.append("Your kernel does not support " + msg)
            setattr(r, attr, [])
    return w


# --- daemon defaults -----------------------------------------------------------

def adapt_host_config(hc: HostConfig, defaults: DaemonDefaults) -> None:
    """dockerd's adaptContainerSettings and create-time defaults, in place."""
    if hc.memory > 0 and hc.memory_swap == 0:
        hc.memory_swap = hc.memory * 2          # Docker's default: as much swap as memory
    if hc.shm_size == 0:
        hc.shm_size = defaults.shm_size
    if not hc.ipc_mode:
        hc.ipc_mode = defaults.ipc_mode
    if not hc.cgroupns_mode:
        if hc.privileged and not defaults.cgroup2:
            hc.cgroupns_mode = "host"
        else:
            hc.cgroupns_mode = defaults.cgroupns_mode or ("private" if defaults.cgroup2 else "host")
    if not any(o.partition("=")[0] == "label" for o in hc.security_opt or []) and (
            hc.ipc_mode == "host" or hc.pid_mode == "host" or hc.privileged):
        hc.security_opt = [*(hc.security_opt or []), "label=disable"]
    if hc.oom_kill_disable is None:
        hc.oom_kill_disable = False
    # mergeUlimits: the daemon's default-ulimits join the container's own, kept in its
    # HostConfig (inspect shows them, as dockerd's does).
    if defaults.ulimits:
        own = {u.name for u in hc.ulimits or []}
        hc.ulimits = [*(hc.ulimits or []), *(Ulimit(name=u.name, hard=u.hard, soft=u.soft)
                                             for u in defaults.ulimits if u.name not in own)]
    if not hc.runtime:
        hc.runtime = defaults.runtime
    # mergeAndVerifyLogConfig: the daemon's driver, and its options under the
    # container's when the container uses that driver.
    if not hc.log_config.type:
        hc.log_config.type = defaults.log_driver
    if hc.log_config.config is None:
        hc.log_config.config = {}
    if hc.log_config.type == defaults.log_driver:
        for k, v in defaults.log_opts.items():
            hc.log_config.config.setdefault(k, v)
    verify_log_config(hc.log_config)
    if not hc.restart_policy.name:
        hc.restart_policy.name = "no"
    if hc.masked_paths is None and not hc.privileged:
        hc.masked_paths = list(DEFAULT_MASKED_PATHS)
    if hc.readonly_paths is None and not hc.privileged:
        hc.readonly_paths = list(DEFAULT_READONLY_PATHS)


# dockerd's built-in logging drivers that ketch does not have.
UNSUPPORTED_LOG_DRIVERS = frozenset({"syslog", "journald", "gelf", "fluentd", "awslogs",
                                     "splunk", "etwlogs", "gcplogs", "logentries"})


def verify_log_config(lc: LogConfig) -> None:
    """dockerd's ValidateLogOpts at create: the mode, the driver, its option names.

    The values are the driver's to check when it starts (the container's start).
    """
    from ketch.engine import locallog
    from ketch.engine.supervisor.logs import JSON_FILE_OPTS, parse_size

    if lc.type == "none":
        return
    cfg = lc.config or {}
    mode = cfg.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise InvalidArgument(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in cfg:
        if mode != "non-blocking":
            raise InvalidArgument("logger: max-buffer-size option is only supported with "
                                  "'mode=non-blocking'")
        try:
            parse_size(cfg["max-buffer-size"])
        except InvalidArgument as exc:
            raise InvalidArgument(f"error parsing option max-buffer-size: {exc}") from None
    if lc.type == locallog.NAME:
        locallog.check_keys(cfg)
    elif lc.type == "json-file":
        for key in cfg:
            if key not in JSON_FILE_OPTS and key not in locallog.COMMON_OPTS:
                raise InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
    elif lc.type in UNSUPPORTED_LOG_DRIVERS:
        raise NotSupported(f"logging driver {lc.type} is not supported by ketch "
                           "(json-file, local or none)")
    else:
        raise InvalidArgument(
            f'error looking up logging plugin {lc.type}: plugin "{lc.type}" not found')


# --- inspect shapes ------------------------------------------------------------

def config_json(c: ContainerConfig) -> dict[str, Any]:
    """``Config`` of ``GET /containers/{id}/json``."""
    return to_json(c)


def host_config_json(hc: HostConfig) -> dict[str, Any]:
    """``HostConfig`` of ``GET /containers/{id}/json``."""
    return to_json(hc)
