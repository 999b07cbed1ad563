"""model: the create body, Docker's validation and defaults, and the inspect shapes.

The fixture comparison replays the bodies the docker CLI 28 sent to dockerd
20.10 (data/dockerd_specs/) through parse -> validate -> adapt -> merge and
expects the Config and HostConfig dockerd showed in ``docker inspect``, apart
from what the API 1.45 daemon does differently (listed in ``_KNOWN``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ketch.engine import model, specgen
from ketch.engine.model import (
    ContainerConfig,
    DaemonDefaults,
    HostConfig,
    PortBinding,
    RestartPolicy,
    SysInfo,
    adapt_host_config,
    parse_create_request,
    validate_create,
)
from ketch.errors import InvalidArgument
from ketch.image.oci import ContainerConfig as ImageConfig
from ketch.image.oci import HealthConfig
from ketch.jsonmodel import from_json, json_name, to_json

DATA = Path(__file__).parent / "data" / "dockerd_specs"
VARIANTS = sorted(p.stem for p in DATA.glob("*.json") if p.stem != "common")
COMMON = json.loads((DATA / "common.json").read_text())


def _body(**kw: Any) -> dict[str, Any]:
    hc = kw.pop("HostConfig", {})
    return {"Image": "busybox", "Cmd": ["true"], **kw, "HostConfig": hc}


def _validate(hc: dict[str, Any] | None = None, si: SysInfo | None = None,
              **config: Any) -> tuple[list[str], HostConfig]:
    req = parse_create_request(_body(HostConfig=hc or {}, **config))
    warnings = validate_create(req.config, req.host_config, si or SysInfo(ncpu=2))
    return warnings, req.host_config


# --- JSON naming -------------------------------------------------------------------

def test_pascal_naming_policy() -> None:
    @dataclass(slots=True)
    class Pascal:
        __json_naming__: ClassVar[str] = "pascal"
        cpu_shares: int = 0
        uts_mode: str = field(default="", metadata=json_name("UTSMode"))

    @dataclass(slots=True)
    class Camel:
        cpu_shares: int = 0

    assert to_json(Pascal(cpu_shares=2, uts_mode="host")) == {"CpuShares": 2, "UTSMode": "host"}
    assert from_json(Pascal, {"CpuShares": 3, "UTSMode": "x"}) == Pascal(3, "x")
    assert to_json(Camel(cpu_shares=2)) == {"cpuShares": 2}


# --- parsing --------------------------------------------------------------------------

def test_parse_minimal_body() -> None:
    req = parse_create_request(b'{"Image": "busybox", "Cmd": "echo hi"}', "web")
    assert req.name == "web"
    assert req.config.image == "busybox" and req.config.cmd == ["echo hi"]  # StrSlice
    assert req.config.volumes == {}
    assert req.host_config.network_mode == "bridge"
    assert req.networking_config.endpoints_config == {}


@pytest.mark.parametrize(("body", "message"), [
    (b"", "invalid JSON: got EOF while reading request body"),
    (b"{", "invalid JSON: "),
    (b"[1]", "invalid JSON: expected an object"),
    (b'{"HostConfig": {}}', "config cannot be empty in order to create a container"),
    (b'{"Image": "x", "Env": "A=1"}', "invalid JSON: Env: expected array, got string"),
    (b'{"Image": "x", "HostConfig": {"Memory": "1g"}}',
     "invalid JSON: HostConfig.Memory: expected integer, got string"),
])
def test_parse_errors(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_create_request(body)
    assert str(err.value).startswith(message)


def test_strslice_fields_take_a_string() -> None:
    req = parse_create_request(_body(Entrypoint="/bin/sh", Shell="bash",
                                     HostConfig={"CapAdd": "NET_ADMIN", "CapDrop": ["MKNOD"]}))
    assert req.config.entrypoint == ["/bin/sh"] and req.config.shell == ["bash"]
    assert req.host_config.cap_add == ["NET_ADMIN"] and req.host_config.cap_drop == ["MKNOD"]


@pytest.mark.parametrize(("config", "hc", "message"), [
    ({}, {"NetworkMode": "container:"},
     "Invalid network mode: invalid container format container:<name|id>"),
    ({"Hostname": "h"}, {"NetworkMode": "container:db"},
     "conflicting options: hostname and the network mode"),
    ({}, {"NetworkMode": "container:db", "Links": ["a:b"]},
     "conflicting options: container type network can't be used with links."),
    ({}, {"NetworkMode": "container:db", "Dns": ["1.1.1.1"]},
     "conflicting options: dns and the network mode"),
    ({}, {"NetworkMode": "container:db", "ExtraHosts": ["a:1.2.3.4"]},
     "conflicting options: custom host-to-IP mapping and the network mode"),
    ({}, {"NetworkMode": "container:db", "PublishAllPorts": True},
     "conflicting options: port publishing and the container type network mode"),
    ({"ExposedPorts": {"80/tcp": {}}}, {"NetworkMode": "container:db"},
     "conflicting options: port exposing and the container type network mode"),
    ({"Hostname": "h"}, {"UTSMode": "host"}, "conflicting options: hostname and the UTS mode"),
    ({}, {"NetworkMode": "host", "Links": ["a:b"]},
     "conflicting options: host type networking can't be used with links."),
    ({}, {"Isolation": "hyperv"}, "Invalid isolation: \"hyperv\" - linux only supports 'default'"),
    ({}, {"IOMaximumBandwidth": 1},
     "Invalid QoS settings: linux does not support configuration of maximum bandwidth"),
    ({}, {"IOMaximumIOps": 1},
     "Invalid QoS settings: linux does not support configuration of maximum IOPs"),
    ({}, {"Mounts": [{"Type": "bind", "Source": "/a", "Target": "/b",
                      "VolumeOptions": {"NoCopy": True}}]},
     'VolumeOptions must not be specified on mount type "bind"'),
    ({}, {"Mounts": [{"Type": "volume", "Target": "/b", "TmpfsOptions": {}}]},
     'TmpfsOptions must not be specified on mount type "volume"'),
])
def test_decode_time_validation(config: dict[str, Any], hc: dict[str, Any], message: str
                                ) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_create_request(_body(HostConfig=hc, **config))
    assert str(err.value).startswith(message)


def test_api_version_gates() -> None:
    body = _body(Healthcheck={"Test": ["CMD", "true"], "StartInterval": 5_000_000_000},
                 HostConfig={"Annotations": {"a": "b"}, "ConsoleSize": [24, 80],
                             "KernelMemory": 1 << 20, "KernelMemoryTCP": 1 << 20,
                             "AutoRemove": True})
    new = parse_create_request(copy.deepcopy(body), api_version="1.45")
    assert new.host_config.annotations == {"a": "b"} and new.host_config.console_size == [24, 80]
    assert new.host_config.kernel_memory == 0 and new.host_config.kernel_memory_tcp == 1 << 20
    assert new.config.healthcheck is not None and new.config.healthcheck.start_interval
    old = parse_create_request(copy.deepcopy(body), api_version="1.24", cgroup2=False)
    assert old.host_config.annotations is None and old.host_config.console_size == [0, 0]
    assert not old.host_config.auto_remove and old.host_config.kernel_memory_tcp == 0
    assert old.config.healthcheck is not None and old.config.healthcheck.start_interval == 0
    assert old.host_config.ipc_mode == "shareable" and old.host_config.cgroupns_mode == "host"
    v140 = parse_create_request(copy.deepcopy(body), api_version="1.40", cgroup2=True)
    assert v140.host_config.cgroupns_mode == ""
    two = _body(NetworkingConfig={"EndpointsConfig": {"a": {}, "b": {}}})
    with pytest.raises(InvalidArgument, match="multiple network endpoints: a, b"):
        parse_create_request(copy.deepcopy(two), api_version="1.43")
    assert len(parse_create_request(two).networking_config.endpoints_config) == 2
    sub = _body(HostConfig={"Mounts": [{"Type": "volume", "Target": "/x",
                                        "VolumeOptions": {"Subpath": "a"}}]})
    with pytest.raises(InvalidArgument, match="Subpath needs API v1.45"):
        parse_create_request(sub, api_version="1.44")


def test_default_network_and_pids_limit() -> None:
    req = parse_create_request(_body(
        HostConfig={"NetworkMode": "default", "PidsLimit": 0},
        NetworkingConfig={"EndpointsConfig": {"default": {"Aliases": ["web"]}}}))
    assert req.host_config.network_mode == "bridge"
    bridge = req.networking_config.endpoints_config["bridge"]
    assert bridge is not None and bridge.aliases == ["web"]
    assert req.host_config.pids_limit is None
    assert parse_create_request(_body(HostConfig={"PidsLimit": -1})).host_config.pids_limit is None
    assert parse_create_request(_body(HostConfig={"PidsLimit": 5})).host_config.pids_limit == 5


# --- daemon validation -------------------------------------------------------------------

@pytest.mark.parametrize(("hc", "config", "message"), [
    ({"Memory": 1 << 20}, {}, "Minimum memory limit allowed is 6MB"),
    ({"Memory": 64 << 20, "MemorySwap": 32 << 20}, {},
     "Minimum memoryswap limit should be larger than memory limit, see usage"),
    ({"MemorySwap": 64 << 20}, {},
     "You should always set the Memory limit when using Memoryswap limit, see usage"),
    ({"MemorySwappiness": 101}, {},
     "Invalid value: 101, valid memory swappiness range is 0-100"),
    ({"MemoryReservation": 1 << 20}, {}, "Minimum memory reservation allowed is 6MB"),
    ({"Memory": 8 << 20, "MemoryReservation": 16 << 20}, {},
     "Minimum memory limit can not be less than memory reservation limit, see usage"),
    ({"NanoCpus": 10**9, "CpuPeriod": 100000}, {},
     "Conflicting options: Nano CPUs and CPU Period cannot both be set"),
    ({"NanoCpus": 10**9, "CpuQuota": 100000}, {},
     "Conflicting options: Nano CPUs and CPU Quota cannot both be set"),
    ({"NanoCpus": 3 * 10**9}, {},
     "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
    ({"NanoCpus": -1}, {},
     "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
    ({"CpuPeriod": 999}, {},
     "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"),
    ({"CpuQuota": 999}, {}, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
    ({"CpusetCpus": "0-a"}, {}, "Invalid value 0-a for cpuset cpus: invalid format: 0-a"),
    ({"CpusetCpus": "3"}, {},
     "Requested CPUs are not available - requested 3, available: 0-1"),
    ({"CpusetMems": "1"}, {},
     "Requested memory nodes are not available - requested 1, available: 0"),
    ({"BlkioWeight": 5}, {}, "Range of blkio weight is from 10 to 1000"),
    ({"OomScoreAdj": 1001}, {}, "Invalid value 1001, range for oom score adj is [-1000, 1000]"),
    ({"ShmSize": -1}, {}, "SHM size can not be less than 0"),
    ({"IpcMode": "bogus"}, {}, "invalid IPC mode: bogus"),
    ({"PidMode": "bogus"}, {}, "invalid PID mode: bogus"),
    ({"UTSMode": "bogus"}, {}, "invalid UTS mode: bogus"),
    ({"CgroupnsMode": "bogus"}, {}, "invalid cgroup namespace mode: bogus"),
    ({"AutoRemove": True, "RestartPolicy": {"Name": "always"}}, {},
     "can't create 'AutoRemove' container with restart policy"),
    ({"RestartPolicy": {"Name": "sometimes"}}, {},
     "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
     "'on-failure', or 'unless-stopped'"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}, {},
     "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ({"RestartPolicy": {"Name": "no", "MaximumRetryCount": -3}}, {},
     "invalid restart policy: maximum retry count can only be used with 'on-failure' and "
     "cannot be negative"),
    ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}}, {},
     "invalid restart policy: maximum retry count cannot be negative"),
    ({"CapAdd": ["BOGUS"]}, {}, 'invalid CapAdd: unknown capability: "CAP_BOGUS"'),
    ({"CapDrop": ["cap_bogus"]}, {}, 'invalid CapDrop: unknown capability: "CAP_BOGUS"'),
    ({"ExtraHosts": ["nocolon"]}, {}, 'bad format for add-host: "nocolon"'),
    ({"ExtraHosts": ["h:1.2.3"]}, {}, 'invalid IP address in add-host: "1.2.3"'),
    ({"PortBindings": {"0/tcp": []}}, {}, 'invalid port specification: "0/tcp"'),
    ({"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}, {},
     'invalid port specification: "x"'),
    ({"Annotations": {"": "x"}}, {},
     "invalid Annotations: the empty string is not permitted as an annotation key"),
    ({"Tmpfs": {"/": ""}}, {}, "invalid specification: destination can't be '/'"),
    ({"Tmpfs": {"rel": ""}}, {}, "invalid mount path: 'rel' mount path must be absolute"),
    ({"Runtime": "crun"}, {}, "unknown or invalid runtime name: crun"),
    ({"CpuRealtimePeriod": 1000}, {}, "Your kernel does not support CPU real-time scheduler"),
    ({}, {"WorkingDir": "rel"},
     "the working directory 'rel' is invalid, it needs to be an absolute path"),
    ({}, {"StopSignal": "SIGBOGUS"}, "Invalid signal: SIGBOGUS"),
    ({}, {"StopSignal": "0"}, "Invalid signal: 0"),
    ({}, {"Env": ["=x"]}, "invalid environment variable: =x"),
    ({}, {"Healthcheck": {"Interval": 1000}}, "Interval in Healthcheck cannot be less than 1ms"),
    ({}, {"Healthcheck": {"Timeout": 1000}}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({}, {"Healthcheck": {"Retries": -1}}, "Retries in Healthcheck cannot be negative"),
    ({}, {"Healthcheck": {"StartPeriod": 5}}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ({}, {"Hostname": "h" * 65}, f'hostname "{"h" * 65}" is too long (maximum 64 bytes)'),
])
def test_validation_messages(hc: dict[str, Any], config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        _validate(hc, **config)
    assert str(err.value) == message


def test_valid_settings_pass() -> None:
    warnings, hc = _validate({
        "Memory": 64 << 20, "MemorySwap": -1, "MemorySwappiness": -1, "CpusetCpus": "0-1",
        "NanoCpus": 1_500_000_000, "ExtraHosts": ["a:1.2.3.4", "b=::1", "c:[::1]",
                                                   "d:host-gateway"],
        "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                         "1000-1001/udp": [{"HostPort": ""}]},
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "CapAdd": ["all", "cap_net_admin"], "Tmpfs": {"/run": "size=1m"}},
        StopSignal="RTMIN+3", WorkingDir="/a/./b//c/", Env=["A", "B=1"],
        Healthcheck={"Interval": 1_000_000, "StartInterval": 2_000_000_000})
    assert warnings == []
    assert hc.memory_swappiness is None          # -1 means "not set"


def test_working_dir_is_cleaned() -> None:
    req = parse_create_request(_body(WorkingDir="/a/./b//c/"))
    validate_create(req.config, req.host_config, SysInfo(ncpu=1))
    assert req.config.working_dir == "/a/b/c"


def test_unsupported_features_warn_and_are_dropped() -> None:
    si = SysInfo(ncpu=2, memory_limit=False, memory_swappiness=False, memory_reservation=False,
                 oom_kill_disable=False, pids_limit=False, cpu_shares=False, cpu_cfs=False,
                 cpuset=False, blkio_weight=False, blkio_weight_device=False,
                 blkio_read_bps_device=False, cgroup_namespaces=False)
    warnings, hc = _validate({
        "Memory": 64 << 20, "MemorySwappiness": 50, "MemoryReservation": 32 << 20,
        "OomKillDisable": True, "PidsLimit": 10, "CpuShares": 10, "CpuPeriod": 5000,
        "CpusetCpus": "0", "BlkioWeight": 100, "CpuPercent": 5, "CgroupnsMode": "private",
        "BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 10}],
        "BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 10}]}, si)
    assert len(warnings) == 13
    assert "Your kernel does not support memory limit capabilities or the cgroup is not " \
           "mounted. Limitation discarded." in warnings
    assert "linux does not support CPU percent. Percent discarded." in warnings
    assert (hc.memory, hc.memory_swap, hc.memory_swappiness, hc.memory_reservation) == \
        (0, -1, None, 0)
    assert (hc.oom_kill_disable, hc.pids_limit, hc.cpu_shares, hc.cpu_period) == \
        (None, None, 0, 0)
    assert (hc.cpuset_cpus, hc.blkio_weight, hc.cpu_percent) == ("", 0, 0)
    assert hc.blkio_weight_device == [] and hc.blkio_device_read_bps == []
    with pytest.raises(InvalidArgument, match="NanoCPUs can not be set"):
        _validate({"NanoCpus": 10**9}, si)


def test_swap_limit_missing_and_other_warnings() -> None:
    warnings, hc = _validate({"Memory": 64 << 20, "MemorySwap": 128 << 20},
                             SysInfo(ncpu=1, swap_limit=False))
    assert warnings == ["Your kernel does not support swap limit capabilities or the cgroup is "
                        "not mounted. Memory limited without swap."]
    assert hc.memory_swap == -1
    warnings, _ = _validate({"OomKillDisable": True})
    assert warnings == ["OOM killer is disabled for the container, but no memory limit is "
                        "set, this can result in the system running out of resources."]
    warnings, _ = _validate({"NetworkMode": "host",
                             "PortBindings": {"80/tcp": [{"HostPort": "80"}]}},
                            SysInfo(ncpu=1, ipv4_forwarding_disabled=True))
    assert warnings == ["Published ports are discarded when using host network mode"]
    warnings, _ = _validate({}, SysInfo(ncpu=1, ipv4_forwarding_disabled=True))
    assert warnings == ["IPv4 forwarding is disabled. Networking will not work."]


def test_restart_policy_names() -> None:
    for name in ("", "no", "always", "unless-stopped", "on-failure"):
        model.validate_restart_policy(RestartPolicy(name=name))
    model.validate_restart_policy(RestartPolicy(name="on-failure", maximum_retry_count=5))


def test_parse_uint_list() -> None:
    assert model.parse_uint_list("0-2,4") == {0, 1, 2, 4}
    assert model.parse_uint_list("") == set()
    for bad in ("1-", "a", "3-1", "1,,2"):
        with pytest.raises(InvalidArgument, match=f"invalid format: {bad}"):
            model.parse_uint_list(bad)


# --- daemon defaults -------------------------------------------------------------------

def test_adapt_defaults() -> None:
    hc = HostConfig(memory=64 << 20)
    adapt_host_config(hc, DaemonDefaults())
    assert hc.memory_swap == 128 << 20          # twice the memory
    assert hc.shm_size == 64 << 20 and hc.ipc_mode == "private" and hc.cgroupns_mode == "host"
    assert hc.oom_kill_disable is False and hc.runtime == "runc"
    assert hc.restart_policy.name == "no" and hc.log_config.type == "json-file"
    assert hc.log_config.config == {}
    assert hc.masked_paths == model.DEFAULT_MASKED_PATHS
    assert hc.readonly_paths == model.DEFAULT_READONLY_PATHS
    assert hc.security_opt is None

    v2 = HostConfig(privileged=True)
    adapt_host_config(v2, DaemonDefaults(cgroup2=True, shm_size=1 << 20, ipc_mode="shareable"))
    assert v2.cgroupns_mode == "private" and v2.shm_size == 1 << 20
    assert v2.ipc_mode == "shareable"
    assert v2.masked_paths is None and v2.security_opt == ["label=disable"]
    v1 = HostConfig(privileged=True)
    adapt_host_config(v1, DaemonDefaults(cgroupns_mode="private"))
    assert v1.cgroupns_mode == "host"           # privileged on v1 keeps the host's
    mine = HostConfig(pid_mode="host", security_opt=["label=user:x"], memory_swap=-1,
                      memory=8 << 20)
    adapt_host_config(mine, DaemonDefaults(cgroupns_mode="private"))
    assert mine.security_opt == ["label=user:x"] and mine.memory_swap == -1
    assert mine.cgroupns_mode == "private"


# --- inspect shapes ------------------------------------------------------------------------

def test_inspect_shape_of_an_empty_config() -> None:
    assert model.config_json(ContainerConfig()) == {
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
        "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
        "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
        "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None}
    full = model.config_json(ContainerConfig(
        exposed_ports={"80/tcp": {}}, healthcheck=HealthConfig(test=["NONE"]), args_escaped=True,
        network_disabled=True, mac_address="02:42:ac:11:00:02", stop_signal="SIGINT",
        stop_timeout=0, shell=["/bin/sh", "-c"]))
    assert full["ExposedPorts"] == {"80/tcp": {}} and full["Healthcheck"] == {"Test": ["NONE"]}
    assert full["StopTimeout"] == 0 and full["Shell"] == ["/bin/sh", "-c"]
    hc = model.host_config_json(HostConfig(port_bindings={"80/tcp": [PortBinding("", "8080")]}))
    assert hc["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert hc["ConsoleSize"] == [0, 0] and hc["PidsLimit"] is None
    for omitted in ("Annotations", "StorageOpt", "Tmpfs", "Sysctls", "Runtime", "Mounts",
                    "Init", "KernelMemory", "KernelMemoryTCP"):
        assert omitted not in hc


_KNOWN = {
    # API 1.45's encoder leaves out a zero KernelMemory/KernelMemoryTCP; 20.10's wrote 0.
    "KernelMemory", "KernelMemoryTCP",
}


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("name", VARIANTS)
def test_inspect_round_trip(name: str) -> None:
    """dockerd's Config and HostConfig survive from_json -> to_json unchanged."""
    fx = _load(name)
    config = fx["inspect"]["Config"]
    assert model.config_json(from_json(ContainerConfig, config)) == config
    hc = {k: v for k, v in fx["inspect"]["HostConfig"].items() if k not in _KNOWN}
    assert model.host_config_json(from_json(HostConfig, hc)) == hc


@pytest.mark.parametrize("name", VARIANTS)
def test_create_reproduces_dockerd(name: str) -> None:
    """The CLI's body -> parse, validate, adapt, merge -> what dockerd stored."""
    fx = _load(name)
    req = parse_create_request(json.dumps(fx["request"]), name, api_version="1.41")
    si = SysInfo(ncpu=COMMON["ncpu"], runtimes=("runc", "capture"))
    assert validate_create(req.config, req.host_config, si) == []
    adapt_host_config(req.host_config, DaemonDefaults())
    specgen.merge_image_config(req.config, from_json(ImageConfig, COMMON["image_config"]))
    want = fx["inspect"]
    # Resolving container names to ids is the engine's (adaptSharedNamespaceContainer),
    # and so is the hostname of --network container: (the other container's).
    for attr in ("network_mode", "pid_mode", "ipc_mode"):
        mode = getattr(req.host_config, attr)
        if mode.startswith("container:"):
            setattr(req.host_config, attr, "container:" + _id_of(mode[10:]))
    other = req.host_config.network_mode[10:] if req.host_config.network_mode.startswith(
        "container:") else None
    specgen.default_hostname(fx["id"], req.config, req.host_config, COMMON["hostname"],
                             network_container_hostname=other[:12] if other else None)
    assert model.config_json(req.config) == want["Config"]
    got_hc = model.host_config_json(req.host_config)
    want_hc = {k: v for k, v in want["HostConfig"].items() if k not in _KNOWN}
    # 20.10's default masked paths predate /sys/devices/virtual/powercap.
    if got_hc.get("MaskedPaths") == model.DEFAULT_MASKED_PATHS:
        assert want_hc["MaskedPaths"] == model.DEFAULT_MASKED_PATHS[:-1]
        got_hc["MaskedPaths"] = want_hc["MaskedPaths"]
    assert got_hc == want_hc
    assert list(specgen.entrypoint_and_args(req.config)) == [want["Path"], want["Args"]]


def _id_of(name: str) -> str:
    return str(_load(name)["id"])


def test_container_wide_mac_address_moves_to_the_endpoint() -> None:
    mac = "02:42:ac:11:00:02"
    req = parse_create_request(_body(MacAddress=mac))
    assert req.config.mac_address == ""
    ep = req.networking_config.endpoints_config["bridge"]
    assert ep is not None and ep.mac_address == mac
    assert req.warnings == ["The container-wide MacAddress field is now deprecated. It should be "
                            "specified in EndpointsConfig instead."]
    old = parse_create_request(_body(MacAddress=mac, HostConfig={"NetworkMode": "mynet"}),
                               api_version="1.43")
    ep = old.networking_config.endpoints_config["mynet"]
    assert ep is not None and ep.mac_address == mac and old.warnings == []
    assert old.config.mac_address == mac
    with pytest.raises(InvalidArgument, match="^conflicting options: mac-address and the network"):
        parse_create_request(_body(MacAddress=mac, HostConfig={"NetworkMode": "host"}),
                             api_version="1.41")
    with pytest.raises(InvalidArgument, match="must match the identity of a network"):
        parse_create_request(_body(MacAddress=mac, NetworkingConfig={
            "EndpointsConfig": {"other": {}}}))
    with pytest.raises(InvalidArgument, match="must match the endpoint-specific MAC address"):
        parse_create_request(_body(MacAddress=mac, NetworkingConfig={
            "EndpointsConfig": {"bridge": {"MacAddress": "02:00:00:00:00:01"}}}))
    ignored = parse_create_request(_body(NetworkingConfig={
        "EndpointsConfig": {"bridge": {"MacAddress": "02:00:00:00:00:01"}}}), api_version="1.43")
    ep = ignored.networking_config.endpoints_config["bridge"]
    assert ep is not None and ep.mac_address == ""
    host = parse_create_request(_body(MacAddress=mac, HostConfig={"NetworkMode": "host"}))
    assert host.config.mac_address == "" and host.networking_config.endpoints_config == {}


def test_log_config_defaults_from_the_daemon() -> None:
    d = DaemonDefaults(log_driver="local", log_opts={"max-size": "10m", "max-file": "3"})
    hc = HostConfig()
    adapt_host_config(hc, d)
    assert (hc.log_config.type, hc.log_config.config) == ("local",
                                                          {"max-size": "10m", "max-file": "3"})
    mine = from_json(HostConfig, {"LogConfig": {"Type": "local", "Config": {"max-size": "1m"}}})
    adapt_host_config(mine, d)
    assert mine.log_config.config == {"max-size": "1m", "max-file": "3"}
    other = from_json(HostConfig, {"LogConfig": {"Type": "json-file"}})
    adapt_host_config(other, d)
    assert (other.log_config.type, other.log_config.config) == ("json-file", {})


def test_keys_match_in_any_case_as_with_go() -> None:
    req = parse_create_request(b'{"image": "busybox", "cmd": "true", "ENV": ["A=1"], '
                               b'"hostconfig": {"memory": 67108864, "capadd": "NET_ADMIN", '
                               b'"RestartPolicy": {"name": "always"}}, '
                               b'"networkingconfig": {"endpointsconfig": {"n": {"aliases": ["a"]}}}}')
    assert req.config.image == "busybox" and req.config.cmd == ["true"]
    assert req.config.env == ["A=1"]
    assert req.host_config.memory == 64 << 20 and req.host_config.cap_add == ["NET_ADMIN"]
    assert req.host_config.restart_policy.name == "always"
    ep = req.networking_config.endpoints_config["n"]
    assert ep is not None and ep.aliases == ["a"]
    # map keys are data, not field names: never folded
    labels = parse_create_request(b'{"Image": "x", "Labels": {"Key": "1", "key": "2"}}')
    assert labels.config.labels == {"Key": "1", "key": "2"}
    with pytest.raises(InvalidArgument, match="config cannot be empty"):
        parse_create_request(b'{"hostconfig": {}}')
