"""compose.convert: a canonical service -> the create body compose v2 sends.

Every body is also decoded by ketchd's own parser (engine.model), and each key
sent is checked to be one ketchd reads, so a misspelt field cannot pass.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

import pytest

from ketch.compose.convert import (
    ContainerSpec,
    InjectedFile,
    byte_size,
    container_spec,
    duration_ns,
)
from ketch.compose.errors import ComposeError
from ketch.engine import model as engine_model

# --- helpers ------------------------------------------------------------------------------

# Keys ketchd does not read (the report lists them); anything else unknown is a typo.
IGNORED_BY_KETCHD = {"GwPriority", "ImageOptions"}


def _json_keys(cls: type[Any]) -> dict[str, tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        name = f.metadata.get("json") or "".join(p[:1].upper() + p[1:] for p in f.name.split("_"))
        out[str(name).lower()] = (str(name), hints[f.name])
    return out


def _dataclass_in(tp: Any) -> Any:
    """The dataclass a field's type holds, directly or in a list/dict value/Optional."""
    if dataclasses.is_dataclass(tp):
        return ("one", tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            found = _dataclass_in(a)
            if found:
                return found
        return None
    if origin is list and args:
        inner = _dataclass_in(args[0])
        return ("list", inner) if inner else None
    if origin is dict and len(args) == 2:
        inner = _dataclass_in(args[1])
        return ("dict", inner) if inner else None
    return None


def _unknown(cls: type[Any], data: Any, path: str) -> list[str]:
    known = _json_keys(cls)
    bad = []
    for key, value in data.items():
        if key.lower() not in known:
            if key not in IGNORED_BY_KETCHD:
                bad.append(f"{path}{key}")
            continue
        name, tp = known[key.lower()]
        if name != key:
            bad.append(f"{path}{key} (ketchd spells it {name})")
        bad += _walk(_dataclass_in(tp), value, f"{path}{key}.")
    return bad


def _walk(shape: Any, value: Any, path: str) -> list[str]:
    if shape is None or value is None:
        return []
    kind, inner = shape
    if kind == "one":
        return _unknown(inner, value, path)
    if kind == "list":
        return [b for i, v in enumerate(value) for b in _walk(inner, v, f"{path}[{i}].")]
    return [b for k, v in value.items() for b in _walk(inner, v, f"{path}{k}.")]


def check_ketchd_reads(body: dict[str, Any]) -> engine_model.CreateRequest:
    """Every key is a field ketchd decodes, and its parser and validation accept the
    body without a warning (a value it dropped would be one)."""
    bad = []
    for key, value in body.items():
        if key == "HostConfig":
            bad += _unknown(engine_model.HostConfig, value, "HostConfig.")
        elif key == "NetworkingConfig":
            bad += _unknown(engine_model.NetworkingConfig, value, "NetworkingConfig.")
        else:
            bad += _unknown(engine_model.ContainerConfig, {key: value}, "")
    assert not bad, bad
    req = engine_model.parse_create_request(json.dumps(body), "x")
    sysinfo = engine_model.SysInfo(ncpu=4)
    assert engine_model.validate_create(req.config, req.host_config, sysinfo) == []
    return req


NETS = {"default": "proj_default", "front": "proj_front", "back": "proj_back",
        "ext": "shared-net"}
VOLS = {"data": "proj_data", "cache": "proj_cache"}
CONTAINERS = {"db": "proj-db-1", "web": "proj-web-1", "cache": "custom-cache"}


def model_of(svc: dict[str, Any], **top: Any) -> dict[str, Any]:
    top.setdefault("networks", {"default": {"name": "proj_default"}})
    return {"name": "proj", "services": {"app": svc, "db": {"image": "db"}}, **top}


def spec(svc: dict[str, Any], *, number: int = 1, **kw: Any) -> ContainerSpec:
    top = kw.pop("top", {})
    return container_spec(model_of(svc, **top), "app", project="proj", number=number,
                          image=kw.pop("image", "busybox:latest"), network_names=NETS,
                          volume_names=VOLS, container_names=CONTAINERS, **kw)


def body(svc: dict[str, Any], **kw: Any) -> dict[str, Any]:
    b = spec(svc, **kw).body
    check_ketchd_reads(b)
    return b


# --- Config -------------------------------------------------------------------------------

def test_minimal_service() -> None:
    b = body({"image": "busybox"})
    assert b["Image"] == "busybox:latest"
    assert "Cmd" not in b and "Entrypoint" not in b
    assert b["Env"] == [] and b["Labels"] == {}
    assert "ExposedPorts" not in b and "Healthcheck" not in b and "StopTimeout" not in b
    assert b["Tty"] is False and b["OpenStdin"] is False and b["AttachStdin"] is False
    assert b["AttachStdout"] is True and b["AttachStderr"] is True
    hc = b["HostConfig"]
    assert hc["NetworkMode"] == "proj_default"
    assert hc["RestartPolicy"] == {"Name": "", "MaximumRetryCount": 0}
    assert hc["PortBindings"] == {} and hc["PublishAllPorts"] is False
    assert hc["Binds"] is None and "Mounts" not in hc
    ep = b["NetworkingConfig"]["EndpointsConfig"]
    assert list(ep) == ["proj_default"]
    assert ep["proj_default"]["Aliases"] == ["proj-app-1", "app"]


def test_command_and_entrypoint() -> None:
    b = body({"command": ["sh", "-c", "echo hi"], "entrypoint": ["/init"]})
    assert b["Cmd"] == ["sh", "-c", "echo hi"] and b["Entrypoint"] == ["/init"]
    b = body({"command": [], "entrypoint": []})
    assert b["Cmd"] == [] and b["Entrypoint"] == []
    req = check_ketchd_reads(b)
    assert req.config.cmd == [] and req.config.entrypoint == []


def test_environment_sorted_and_null_is_a_bare_name() -> None:
    b = body({"environment": {"B": "2", "A": "x=y", "UNSET": None, "EMPTY": ""}})
    assert b["Env"] == ["A=x=y", "B=2", "EMPTY=", "UNSET"]


def test_yaml_booleans_are_lowercase_strings() -> None:
    b = body({"environment": {"DEBUG": True, "N": 3}, "labels": {"on": False},
              "sysctls": {"net.ipv4.ip_forward": 1}})
    assert b["Env"] == ["DEBUG=true", "N=3"] and b["Labels"] == {"on": "false"}
    assert b["HostConfig"]["Sysctls"] == {"net.ipv4.ip_forward": "1"}


def test_labels_are_the_service_labels_only() -> None:
    b = body({"labels": {"a.b": "1", "n": 2}})
    assert b["Labels"] == {"a.b": "1", "n": "2"}


def test_plain_config_fields() -> None:
    b = body({"hostname": "h", "domainname": "example.org", "user": "1000:1000",
              "working_dir": "/srv", "tty": True, "stdin_open": True,
              "stop_signal": "SIGINT", "stop_grace_period": "1m30.9s"})
    assert (b["Hostname"], b["Domainname"], b["User"], b["WorkingDir"]) == (
        "h", "example.org", "1000:1000", "/srv")
    assert b["Tty"] is True and b["OpenStdin"] is True
    assert b["StopSignal"] == "SIGINT"
    assert b["StopTimeout"] == 90          # truncated to whole seconds, as compose
    req = check_ketchd_reads(b)
    assert req.config.stop_timeout == 90 and req.config.working_dir == "/srv"


def test_exposed_ports_from_ports_and_expose() -> None:
    b = body({"ports": [{"mode": "ingress", "target": 80, "published": "3000",
                         "protocol": "tcp"},
                        {"mode": "ingress", "target": 53, "protocol": "udp"}],
              "expose": ["9000", "7000-7001/udp"]})
    assert b["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "9000/tcp": {},
                                 "7000/udp": {}, "7001/udp": {}}


def test_bad_expose_names_the_path() -> None:
    with pytest.raises(ComposeError, match=r'services\.app\.expose\[0\]: invalid port "x"'):
        spec({"expose": ["x"]})


def test_healthcheck_durations_in_nanoseconds() -> None:
    b = body({"healthcheck": {"test": ["CMD", "true"], "interval": "1m30s", "timeout": "500ms",
                              "start_period": "2s", "start_interval": "1.5s", "retries": 4}})
    assert b["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 90_000_000_000,
                                "Timeout": 500_000_000, "StartPeriod": 2_000_000_000,
                                "StartInterval": 1_500_000_000, "Retries": 4}
    req = check_ketchd_reads(b)
    assert req.config.healthcheck is not None
    assert req.config.healthcheck.interval == 90_000_000_000


def test_healthcheck_disabled_and_partial() -> None:
    assert body({"healthcheck": {"test": ["NONE"], "disable": True}})["Healthcheck"][
        "Test"] == ["NONE"]
    # Only an interval: the image's test applies (Test null), zeros keep the image's.
    h = body({"healthcheck": {"interval": "5s"}})["Healthcheck"]
    assert h["Test"] is None and h["Interval"] == 5_000_000_000 and h["Retries"] == 0


def test_healthcheck_start_interval_needs_start_period() -> None:
    with pytest.raises(ComposeError, match="start_interval requires healthcheck.start_period"):
        spec({"healthcheck": {"test": ["CMD", "true"], "start_interval": "1s"}})


def test_bad_duration_names_the_path() -> None:
    with pytest.raises(ComposeError,
                       match=r'services\.app\.healthcheck\.interval: invalid duration "5x"'):
        spec({"healthcheck": {"interval": "5x"}})


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0), ("1s", 10**9), ("1m30s", 90 * 10**9), ("1.5h", 5400 * 10**9),
    ("300ms", 300 * 10**6), ("10us", 10_000), ("7ns", 7), (".5s", 5 * 10**8), (42, 42)])
def test_duration_ns(text: Any, ns: int) -> None:
    assert duration_ns(text, "x") == ns


@pytest.mark.parametrize("text", ["", "1", "s", "1.s.", "1d", "--1s"])
def test_duration_ns_rejects(text: str) -> None:
    with pytest.raises(ComposeError, match="invalid duration"):
        duration_ns(text, "x")


@pytest.mark.parametrize(("text", "n"), [
    (1024, 1024), ("64m", 64 << 20), ("1g", 1 << 30), ("512kb", 512 << 10), ("2MiB", 2 << 20),
    ("100", 100), ("1.5k", 1536)])
def test_byte_size(text: Any, n: int) -> None:
    assert byte_size(text, "x") == n


def test_byte_size_rejects() -> None:
    with pytest.raises(ComposeError, match='x: invalid size "lots"'):
        byte_size("lots", "x")


# --- ports, restart, resources ------------------------------------------------------------

def test_port_bindings() -> None:
    hc = body({"ports": [
        {"mode": "ingress", "target": 80, "published": "3000", "protocol": "tcp"},
        {"mode": "ingress", "target": 80, "published": "3001", "protocol": "tcp",
         "host_ip": "127.0.0.1"},
        {"mode": "ingress", "target": 53, "protocol": "udp"}]})["HostConfig"]
    assert hc["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "3000"},
                   {"HostIp": "127.0.0.1", "HostPort": "3001"}],
        "53/udp": [{"HostIp": "", "HostPort": ""}]}
    req = check_ketchd_reads(body({"ports": [{"target": 80, "published": "3000"}]}))
    assert req.host_config.port_bindings is not None
    assert req.host_config.port_bindings["80/tcp"][0].host_port == "3000"  # type: ignore[index]


def test_bad_host_ip() -> None:
    with pytest.raises(ComposeError, match=r"ports\[0\]\.host_ip: invalid host IP address: x"):
        spec({"ports": [{"target": 80, "host_ip": "x"}]})


@pytest.mark.parametrize(("svc", "policy"), [
    ({"restart": "always"}, ("always", 0)),
    ({"restart": "unless-stopped"}, ("unless-stopped", 0)),
    ({"restart": "on-failure:5"}, ("on-failure", 5)),
    ({"restart": "no"}, ("no", 0)),
    ({"restart": "always", "deploy": {"restart_policy": {"condition": "any"}}}, ("always", 0)),
    ({"deploy": {"restart_policy": {"condition": "on-failure", "max_attempts": 3}}},
     ("on-failure", 3)),
    ({"restart": "always", "deploy": {"restart_policy": {"condition": "none"}}}, ("no", 0)),
])
def test_restart_policy(svc: dict[str, Any], policy: tuple[str, int]) -> None:
    b = body(svc)
    assert b["HostConfig"]["RestartPolicy"] == {"Name": policy[0], "MaximumRetryCount": policy[1]}


def test_resources_from_service_keys() -> None:
    hc = body({"mem_limit": 64 << 20, "memswap_limit": 128 << 20, "mem_reservation": "32m",
               "pids_limit": 100, "cpu_shares": 512, "cpu_quota": 50000,
               "cpu_period": "100ms", "cpuset": "0", "shm_size": "128m",
               "blkio_config": {"weight": 300,
                                "device_read_bps": [{"path": "/dev/sda", "rate": "1mb"}]},
               "oom_kill_disable": True, "oom_score_adj": -100,
               "mem_swappiness": 10})["HostConfig"]
    assert hc["Memory"] == 64 << 20 and hc["MemorySwap"] == 128 << 20
    assert hc["MemoryReservation"] == 32 << 20
    assert "NanoCpus" not in hc and hc["PidsLimit"] == 100
    assert (hc["CpuShares"], hc["CpuQuota"], hc["CpuPeriod"]) == (512, 50000, 100_000)
    assert hc["CpusetCpus"] == "0" and hc["ShmSize"] == 128 << 20
    assert hc["BlkioWeight"] == 300
    assert hc["BlkioDeviceReadBps"] == [{"Path": "/dev/sda", "Rate": 1 << 20}]
    assert hc["OomKillDisable"] is True and hc["OomScoreAdj"] == -100
    assert hc["MemorySwappiness"] == 10


def test_deploy_resources_win() -> None:
    hc = body({"mem_limit": 1 << 30, "cpus": 2, "pids_limit": 10,
               "deploy": {"resources": {"limits": {"cpus": "0.25", "memory": 50 << 20,
                                                   "pids": 20},
                                        "reservations": {"memory": 10 << 20, "cpus": "1"}},
                          "placement": {"constraints": ["node.role==manager"]},
                          "replicas": 2}})["HostConfig"]
    assert hc["Memory"] == 50 << 20 and hc["NanoCpus"] == 250_000_000
    assert hc["PidsLimit"] == 20 and hc["MemoryReservation"] == 10 << 20
    req = check_ketchd_reads(body({"deploy": {"resources": {"limits": {"memory": 50 << 20}}}}))
    assert req.host_config.memory == 50 << 20


def test_cpus_truncate_as_go_does() -> None:
    # Go's int64(cpus * 1e9) truncates: 1.5 ns of CPU is 1.
    assert body({"cpus": 0.0000000015})["HostConfig"]["NanoCpus"] == 1
    assert body({"cpus": "1.25"})["HostConfig"]["NanoCpus"] == 1_250_000_000


def test_ulimits_sysctls_hosts_dns_logging() -> None:
    hc = body({"ulimits": {"nproc": 65535, "nofile": {"soft": 1024, "hard": 2048}},
               "sysctls": {"net.core.somaxconn": 1024},
               "extra_hosts": ["db.local=10.0.0.2", "v6=::1"],
               "dns": ["1.1.1.1"], "dns_search": ["example.org"], "dns_opt": ["ndots:2"],
               "logging": {"driver": "json-file", "options": {"max-size": "1m"}}})["HostConfig"]
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                             {"Name": "nproc", "Soft": 65535, "Hard": 65535}]
    assert hc["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert hc["ExtraHosts"] == ["db.local:10.0.0.2", "v6:::1"]
    assert (hc["Dns"], hc["DnsSearch"], hc["DnsOptions"]) == (
        ["1.1.1.1"], ["example.org"], ["ndots:2"])
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    hc = body({"logging": {"options": {"tag": None}}})["HostConfig"]
    assert hc["LogConfig"] == {"Type": "", "Config": {"tag": ""}}


def test_bad_dns_address() -> None:
    with pytest.raises(ComposeError, match="invalid DNS address: dns.example"):
        spec({"dns": ["dns.example"]})


def test_security_and_misc_host_fields() -> None:
    hc = body({"cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"], "privileged": True,
               "read_only": True, "init": True, "group_add": ["audio"],
               "security_opt": ["no-new-privileges", "label:disable"],
               "devices": [{"source": "/dev/fuse", "target": "/dev/fuse",
                            "permissions": "rw"},
                           {"source": "/dev/null", "target": "/dev/mynull"}],
               "cgroup_parent": "/custom", "userns_mode": "host", "cgroup": "private",
               "tmpfs": ["/run:size=64m", "/tmp"]})["HostConfig"]
    assert hc["CapAdd"] == ["NET_ADMIN"] and hc["CapDrop"] == ["ALL"]
    assert hc["Privileged"] is True and hc["ReadonlyRootfs"] is True and hc["Init"] is True
    assert hc["GroupAdd"] == ["audio"]
    assert hc["SecurityOpt"] == ["no-new-privileges", "label:disable"]
    assert hc["Devices"] == [
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"},
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull",
         "CgroupPermissions": "rwm"}]
    assert hc["CgroupParent"] == "/custom" and hc["UsernsMode"] == "host"
    assert hc["CgroupnsMode"] == "private"
    assert hc["Tmpfs"] == {"/run": "size=64m", "/tmp": ""}
    assert "Init" not in body({})["HostConfig"]
    hc = body({"uts": "host", "runtime": "runc", "isolation": "default",
               "volume_driver": "local"})["HostConfig"]
    assert (hc["UTSMode"], hc["Runtime"], hc["Isolation"], hc["VolumeDriver"]) == (
        "host", "runc", "default", "local")


def test_cdi_devices_become_a_device_request() -> None:
    hc = body({"devices": [{"source": "vendor.com/gpu=0", "target": "vendor.com/gpu=0"}]})[
        "HostConfig"]
    assert hc["DeviceRequests"] == [{"Driver": "cdi", "DeviceIDs": ["vendor.com/gpu=0"]}]
    assert "Devices" not in hc


def test_gpu_device_requests() -> None:
    hc = spec({"gpus": "all"}).body["HostConfig"]
    assert hc["DeviceRequests"] == [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]
    hc = spec({"gpus": [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["utility"]}],
               "deploy": {"resources": {"reservations": {"devices": [
                   {"capabilities": ["compute"], "count": "all"}]}}}}).body["HostConfig"]
    assert hc["DeviceRequests"] == [
        {"Driver": "", "Count": -1, "Capabilities": [["compute"]]},
        {"Driver": "nvidia", "Count": 0, "Capabilities": [["utility", "gpu"]],
         "DeviceIDs": ["0"]}]
    assert not _unknown(engine_model.HostConfig, hc, "")


def test_systempaths_unconfined_and_seccomp_file(tmp_path: Any) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW"\n}\n')
    hc = body({"security_opt": ["systempaths=unconfined", f"seccomp={profile}",
                                "apparmor=unconfined"]})["HostConfig"]
    assert hc["MaskedPaths"] == [] and hc["ReadonlyPaths"] == []
    assert hc["SecurityOpt"] == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}',
                                 "apparmor=unconfined"]
    with pytest.raises(ComposeError, match=r"opening seccomp profile \(/nonexistent\) failed"):
        spec({"security_opt": ["seccomp=/nonexistent"]})
    with pytest.raises(ComposeError, match='invalid security-opt: "bogus"'):
        spec({"security_opt": ["bogus"]})


# --- volumes ------------------------------------------------------------------------------

def test_short_syntax_bind_and_named_volume_go_as_binds() -> None:
    hc = body({"volumes": [
        {"type": "bind", "source": "/srv/app", "target": "/app",
         "bind": {"create_host_path": True}},
        {"type": "bind", "source": "/srv/conf", "target": "/conf", "read_only": True},
        {"type": "volume", "source": "data", "target": "/data"},
        {"type": "bind", "source": "/srv/z", "target": "/z",
         "bind": {"create_host_path": True, "selinux": "z"}}]})["HostConfig"]
    assert hc["Binds"] == ["/srv/app:/app:rw", "/srv/conf:/conf:ro", "proj_data:/data:rw",
                           "/srv/z:/z:rw,z"]
    assert "Mounts" not in hc


def test_advanced_binds_and_volumes_use_the_mount_api() -> None:
    hc = body({"volumes": [
        {"type": "bind", "source": "/srv/a", "target": "/a",
         "bind": {"create_host_path": True, "propagation": "rshared"}},
        {"type": "bind", "source": "/srv/b", "target": "/b", "read_only": True,
         "bind": {"create_host_path": False}},
        {"type": "volume", "source": "cache", "target": "/c",
         "volume": {"nocopy": True, "subpath": "sub"}},
        {"type": "volume", "target": "/anon"},
        {"type": "tmpfs", "target": "/t", "tmpfs": {"size": 1 << 20, "mode": "1777"}}]})[
        "HostConfig"]
    assert hc["Binds"] is None
    assert hc["Mounts"] == [
        {"Type": "bind", "Target": "/a", "Source": "/srv/a",
         "BindOptions": {"Propagation": "rshared", "CreateMountpoint": True}},
        {"Type": "bind", "Target": "/b", "Source": "/srv/b", "BindOptions": {},
         "ReadOnly": True},
        {"Type": "volume", "Target": "/c", "Source": "proj_cache",
         "VolumeOptions": {"NoCopy": True, "Subpath": "sub"}},
        {"Type": "volume", "Target": "/anon"},
        {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20,
                                                           "Mode": 0o1777}}]
    req = check_ketchd_reads(body({"volumes": [
        {"type": "volume", "source": "cache", "target": "/c", "volume": {"nocopy": True}}]}))
    assert req.host_config.mounts is not None
    m = req.host_config.mounts[0]
    assert m.source == "proj_cache" and m.volume_options is not None
    assert m.volume_options.no_copy is True


def test_same_target_later_volume_wins() -> None:
    hc = body({"volumes": [{"type": "volume", "source": "data", "target": "/d"},
                           {"type": "volume", "source": "cache", "target": "/d"}]})["HostConfig"]
    assert hc["Binds"] == ["proj_cache:/d:rw"]


def test_undefined_volume() -> None:
    with pytest.raises(ComposeError,
                       match='service "app" refers to undefined volume nope: invalid compose'):
        spec({"volumes": [{"type": "volume", "source": "nope", "target": "/d"}]})


def test_volume_without_target() -> None:
    with pytest.raises(ComposeError, match=r"services\.app\.volumes\[0\]: a volume needs a target"):
        spec({"volumes": [{"type": "volume", "source": "data"}]})


OLD_MOUNTS = [
    {"Type": "volume", "Name": "3f9a", "Source": "/var/lib/ketch/volumes/3f9a/_data",
     "Destination": "/anon", "RW": True},
    {"Type": "volume", "Name": "77aa", "Source": "/x", "Destination": "/var/lib/db",
     "RW": False},
    {"Type": "volume", "Name": "proj_data", "Source": "/y", "Destination": "/data", "RW": True},
    {"Type": "volume", "Name": "5e5e", "Source": "/z", "Destination": "/img-but-declared",
     "RW": True},
    {"Type": "volume", "Name": "gone", "Source": "/w", "Destination": "/no-longer", "RW": True},
    {"Type": "tmpfs", "Source": "", "Destination": "/var/lib/tmp", "RW": True},
]


def test_recreate_keeps_anonymous_and_image_volumes() -> None:
    s = spec({"volumes": [{"type": "volume", "target": "/anon"},
                          {"type": "volume", "source": "data", "target": "/data"},
                          {"type": "volume", "source": "cache", "target": "/img-but-declared"}]},
             inherit_mounts=OLD_MOUNTS,
             image_volumes={"/var/lib/db", "/img-but-declared", "/var/lib/tmp"})
    check_ketchd_reads(s.body)
    hc = s.body["HostConfig"]
    assert hc["Mounts"] == [
        {"Type": "volume", "Source": "3f9a", "Target": "/anon"},
        {"Type": "volume", "Source": "77aa", "Target": "/var/lib/db", "ReadOnly": True}]
    # Declared named volumes win over what the old container had at that target.
    assert hc["Binds"] == ["proj_data:/data:rw", "proj_cache:/img-but-declared:rw"]
    # Without the old container, the anonymous volume is a new one.
    fresh = spec({"volumes": [{"type": "volume", "target": "/anon"}]}).body["HostConfig"]
    assert fresh["Mounts"] == [{"Type": "volume", "Target": "/anon"}]


def test_volumes_from() -> None:
    hc = body({"volumes_from": ["db", "cache:ro", "container:other", "container:x:ro"]})[
        "HostConfig"]
    assert hc["VolumesFrom"] == ["proj-db-1", "custom-cache:ro", "other", "x:ro"]
    with pytest.raises(ComposeError, match="cannot share volume with service nope: container"):
        spec({"volumes_from": ["nope"]})


# --- secrets and configs ------------------------------------------------------------------

SECRETS = {"pw": {"name": "proj_pw", "file": "/run/proj/pw.txt"},
           "token": {"name": "proj_token", "environment": "TOKEN"},
           "inline": {"name": "proj_inline", "content": "hello"},
           "empty": {"name": "proj_empty", "content": ""},
           "ext": {"name": "outside", "external": True}}
CONFIGS = {"nginx": {"name": "proj_nginx", "file": "/etc/proj/nginx.conf"},
           "inline": {"name": "proj_cfg", "content": "k=v\n"}}


def test_file_secrets_and_configs_are_read_only_bind_mounts() -> None:
    s = spec({"secrets": [{"source": "pw"}, {"source": "pw", "target": "other"},
                          {"source": "pw", "target": "/abs/pw"}],
              "configs": [{"source": "nginx"},
                          {"source": "nginx", "target": "/etc/nginx/nginx.conf"},
                          {"source": "nginx", "target": "rel.conf"}]},
             top={"secrets": SECRETS, "configs": CONFIGS})
    check_ketchd_reads(s.body)
    mounts = s.body["HostConfig"]["Mounts"]
    assert [(m["Source"], m["Target"]) for m in mounts] == [
        ("/run/proj/pw.txt", "/run/secrets/pw"), ("/run/proj/pw.txt", "/run/secrets/other"),
        ("/run/proj/pw.txt", "/abs/pw"), ("/etc/proj/nginx.conf", "/nginx"),
        ("/etc/proj/nginx.conf", "/etc/nginx/nginx.conf"), ("/etc/proj/nginx.conf", "/rel.conf")]
    assert all(m["Type"] == "bind" and m["ReadOnly"] is True for m in mounts)
    assert s.files == []
    assert any("secret file proj_pw does not exist" in w for w in s.warnings)


def test_a_volume_keeps_its_target_over_a_secret() -> None:
    s = spec({"volumes": [{"type": "bind", "source": "/x", "target": "/run/secrets/pw"}],
              "secrets": ["pw"]}, top={"secrets": SECRETS})
    assert s.body["HostConfig"]["Binds"] == ["/x:/run/secrets/pw:rw"]
    assert "Mounts" not in s.body["HostConfig"]


def test_content_and_environment_secrets_are_injected_files() -> None:
    s = spec({"secrets": [{"source": "token", "uid": "100", "gid": "101", "mode": 0o400},
                          {"source": "inline", "target": "inl"}, {"source": "empty"}],
              "configs": [{"source": "inline", "mode": "0640"}]},
             top={"secrets": SECRETS, "configs": CONFIGS}, environment={"TOKEN": "s3cret"})
    assert s.files == [
        InjectedFile("/run/secrets/token", b"s3cret", 0o400, 100, 101),
        InjectedFile("/run/secrets/inl", b"hello", 0o444, 0, 0),
        InjectedFile("/inline", b"k=v\n", 0o640, 0, 0)]
    assert "Mounts" not in s.body["HostConfig"]


def test_environment_secret_unset() -> None:
    with pytest.raises(ComposeError,
                       match='environment variable "TOKEN" required by secret "proj_token"'):
        spec({"secrets": ["token"]}, top={"secrets": SECRETS}, environment={})


def test_injected_secret_in_read_only_service() -> None:
    with pytest.raises(ComposeError, match='cannot create secret "proj_inline" in read-only '
                                           "service app"):
        spec({"read_only": True, "secrets": ["inline"]}, top={"secrets": SECRETS})


def test_external_and_undefined_secrets() -> None:
    with pytest.raises(ComposeError, match="unsupported external secret outside"):
        spec({"secrets": ["ext"]}, top={"secrets": SECRETS})
    with pytest.raises(ComposeError, match='service "app" refers to undefined secret nope'):
        spec({"secrets": ["nope"]}, top={"secrets": SECRETS})
    with pytest.raises(ComposeError, match="does not support configs.\\*.template_driver"):
        spec({"configs": ["t"]}, top={"configs": {"t": {"name": "t", "file": "/f",
                                                        "template_driver": "golang"}}})


# --- networks -----------------------------------------------------------------------------

def test_first_network_by_priority_then_name_and_the_rest_extra() -> None:
    s = spec({"networks": {"front": None,
                           "back": {"aliases": ["database"], "ipv4_address": "172.30.0.5",
                                    "priority": 10},
                           "ext": {}}})
    check_ketchd_reads(s.body)
    assert s.body["HostConfig"]["NetworkMode"] == "proj_back"
    assert s.body["NetworkingConfig"] == {"EndpointsConfig": {"proj_back": {
        "Aliases": ["proj-app-1", "app", "database"],
        "IPAMConfig": {"IPv4Address": "172.30.0.5"}}}}
    assert s.extra_networks == [("shared-net", {"Aliases": ["proj-app-1", "app"]}),
                                ("proj_front", {"Aliases": ["proj-app-1", "app"]})]


def test_no_service_networks_uses_default_and_container_name_alias() -> None:
    s = spec({"container_name": "my-app"}, number=3)
    assert s.body["NetworkingConfig"]["EndpointsConfig"]["proj_default"]["Aliases"] == [
        "my-app", "app"]
    s = spec({}, number=3)
    assert s.body["NetworkingConfig"]["EndpointsConfig"]["proj_default"]["Aliases"] == [
        "proj-app-3", "app"]


def test_run_without_aliases_and_explicit_name() -> None:
    s = spec({"networks": {"front": {"aliases": ["f"]}}}, name="proj-app-run-1a2b",
             use_aliases=False)
    assert s.body["NetworkingConfig"]["EndpointsConfig"]["proj_front"]["Aliases"] == [
        "proj-app-run-1a2b"]


def test_mac_address_goes_to_the_primary_endpoint() -> None:
    s = spec({"mac_address": "02:42:ac:11:00:02", "networks": {"front": None, "back": None}})
    req = check_ketchd_reads(s.body)
    assert "MacAddress" not in s.body
    assert s.body["NetworkingConfig"]["EndpointsConfig"]["proj_back"]["MacAddress"] == (
        "02:42:ac:11:00:02")
    assert "MacAddress" not in s.extra_networks[0][1]
    assert req.warnings == []
    with pytest.raises(ComposeError, match="service-level mac_address should have the same "
                                           "value as network back"):
        spec({"mac_address": "02:42:ac:11:00:02",
              "networks": {"back": {"mac_address": "02:42:ac:11:00:03"}}})


def test_endpoint_ipv6_driver_opts_and_bad_ip() -> None:
    ep = body({"networks": {"front": {"ipv6_address": "fd00::5", "interface_name": "eth7",
                                      "driver_opts": {"a": "b"}}}})["NetworkingConfig"][
        "EndpointsConfig"]["proj_front"]
    assert ep["IPAMConfig"] == {"IPv6Address": "fd00::5"}
    assert ep["DriverOpts"] == {"a": "b", "com.docker.network.endpoint.ifname": "eth7"}
    with pytest.raises(ComposeError, match=r"networks\.front: invalid IPv4 address: 1\.2\.3"):
        spec({"networks": {"front": {"ipv4_address": "1.2.3"}}})


def test_undefined_network() -> None:
    with pytest.raises(ComposeError, match='refers to undefined network nope: invalid compose'):
        spec({"networks": {"nope": None}})


@pytest.mark.parametrize(("mode", "expected"), [
    ("host", "host"), ("none", "none"), ("bridge", "bridge"),
    ("container:abc", "container:abc"), ("service:db", "container:proj-db-1")])
def test_network_mode(mode: str, expected: str) -> None:
    s = spec({"network_mode": mode})
    check_ketchd_reads(s.body)
    assert s.body["HostConfig"]["NetworkMode"] == expected
    assert "NetworkingConfig" not in s.body and s.extra_networks == []


def test_network_mode_disabled_and_service_missing() -> None:
    b = body({"network_mode": "disabled"})
    assert b["HostConfig"]["NetworkMode"] == "none" and b["NetworkDisabled"] is True
    with pytest.raises(ComposeError, match="cannot share network namespace with service nope"):
        spec({"network_mode": "service:nope"})


def test_mac_address_with_network_mode_is_container_wide() -> None:
    s = spec({"network_mode": "bridge", "mac_address": "02:42:ac:11:00:02"})
    assert s.body["MacAddress"] == "02:42:ac:11:00:02"


def test_no_project_networks_means_none() -> None:
    s = container_spec({"name": "proj", "services": {"app": {}}}, "app", project="proj",
                       number=1, image="i", network_names={}, volume_names={},
                       container_names={})
    assert s.body["HostConfig"]["NetworkMode"] == "none" and "NetworkingConfig" not in s.body


def test_pid_and_ipc_service_references() -> None:
    hc = body({"pid": "service:db", "ipc": "service:cache"})["HostConfig"]
    assert hc["PidMode"] == "container:proj-db-1" and hc["IpcMode"] == "container:custom-cache"
    hc = body({"pid": "host", "ipc": "shareable"})["HostConfig"]
    assert hc["PidMode"] == "host" and hc["IpcMode"] == "shareable"
    with pytest.raises(ComposeError, match="cannot share PID namespace with service x"):
        spec({"pid": "service:x"})


def test_links_as_compose_v2_sends_them() -> None:
    s = spec({"links": ["db", "cache:kv", "missing"], "external_links": ["legacy:old", "solo"],
              "networks": {"front": None}}, number=2)
    links = ["proj-db-1:db", "proj-db-1:db-2", "proj-db-1:proj-db-2",
             "custom-cache:kv", "custom-cache:cache-2", "custom-cache:proj-cache-2",
             "legacy:old", "solo:solo"]
    assert s.body["HostConfig"]["Links"] == links
    assert s.body["NetworkingConfig"]["EndpointsConfig"]["proj_front"]["Links"] == links
    check_ketchd_reads(s.body)


def test_unknown_service() -> None:
    with pytest.raises(ComposeError, match="no such service: nope"):
        container_spec(model_of({}), "nope", project="proj", number=1, image="i",
                       network_names=NETS, volume_names=VOLS, container_names={})


def test_everything_at_once_is_read_by_ketchd() -> None:
    """A service using most keys: every field sent is one ketchd decodes."""
    s = spec({
        "command": ["run"], "entrypoint": ["/e"], "environment": {"A": "1"},
        "labels": {"l": "v"}, "ports": [{"target": 80, "published": "8080", "protocol": "tcp"}],
        "expose": ["81"], "hostname": "h", "user": "u", "working_dir": "/w", "tty": True,
        "stop_signal": "SIGTERM", "stop_grace_period": "3s",
        "healthcheck": {"test": ["CMD", "true"], "interval": "1s", "start_period": "1s",
                        "start_interval": "1s", "retries": 1},
        "volumes": [{"type": "bind", "source": "/s", "target": "/t"},
                    {"type": "tmpfs", "target": "/tm"},
                    {"type": "volume", "target": "/a", "volume": {"nocopy": True}}],
        "tmpfs": ["/run"], "restart": "on-failure:2", "mem_limit": 1 << 30, "cpus": 1.5,
        "pids_limit": 50, "ulimits": {"nofile": 10}, "sysctls": {"a.b": "1"},
        "extra_hosts": ["h=1.2.3.4"], "dns": ["8.8.8.8"], "logging": {"driver": "local"},
        "init": True, "devices": [{"source": "/dev/null", "target": "/dev/n"}],
        "security_opt": ["no-new-privileges"], "group_add": ["1"], "cap_add": ["SYS_ADMIN"],
        "links": ["db"], "volumes_from": ["db"], "shm_size": 1 << 20,
        "networks": {"front": {"aliases": ["x"], "ipv4_address": "10.1.0.9"}, "back": None},
        "annotations": {"k": "v"}, "storage_opt": {"size": "1G"},
    })
    req = check_ketchd_reads(s.body)
    assert req.host_config.restart_policy.name == "on-failure"
    assert req.host_config.restart_policy.maximum_retry_count == 2
    assert req.host_config.nano_cpus == 1_500_000_000
    assert req.host_config.binds == ["/s:/t:rw"]
    assert req.host_config.ulimits is not None and req.host_config.ulimits[0].soft == 10
    ep = req.networking_config.endpoints_config["proj_back"]
    assert ep is not None and ep.aliases == ["proj-app-1", "app"]
    assert [name for name, _ in s.extra_networks] == ["proj_front"]
    _, front = s.extra_networks[0]
    bad = _unknown(engine_model.EndpointSettings, front, "extra.")
    assert not bad, bad


def test_key_checker_catches_a_misspelt_field() -> None:
    """The checker itself: a wrong key or a wrong case is reported."""
    assert _unknown(engine_model.HostConfig, {"Memroy": 1}, "") == ["Memroy"]
    assert _unknown(engine_model.HostConfig, {"RestartPolicy": {"Nme": "x"}}, "") == [
        "RestartPolicy.Nme"]
    assert _unknown(engine_model.HostConfig, {"nanocpus": 1}, "") == [
        "nanocpus (ketchd spells it NanoCpus)"]


def test_from_the_normalized_model(tmp_path: Any) -> None:
    """The NORMALIZE helper's canonical model of short-syntax input converts as compose does."""
    from ketch.compose.loader import RawProject
    from ketch.compose.normalize import normalize

    raw = RawProject(name="proj", working_dir=str(tmp_path), files=[],
                     environment={"PW": "x"}, model={
        "services": {
            "api": {"image": "api", "command": "serve --port 80",
                    "ports": ["127.0.0.1:3000:80", "9000-9001:9000-9001/udp"],
                    "volumes": ["./src:/src:ro", "data:/data", "/anon"],
                    "environment": ["A=1", "UNSET_HERE"], "restart": "on-failure:3",
                    "healthcheck": {"test": "curl -f localhost", "interval": "2s"},
                    "extra_hosts": ["gw:10.0.0.1"], "ulimits": {"nofile": 1024},
                    "tmpfs": "/run", "secrets": ["pw"], "mem_limit": "64m",
                    "networks": {"back": {"aliases": ["api.back"]}, "front": None}},
            "db": {"image": "db"}},
        "volumes": {"data": None},
        "networks": {"front": None, "back": None},
        "secrets": {"pw": {"environment": "PW"}}})
    model = normalize(raw)
    names = {k: v["name"] for k, v in model["networks"].items()}
    vols = {k: v["name"] for k, v in model["volumes"].items()}
    s = container_spec(model, "api", project="proj", number=1, image="api:latest",
                       network_names=names, volume_names=vols, container_names={},
                       environment=raw.environment)
    req = check_ketchd_reads(s.body)
    b = s.body
    assert b["Cmd"] == ["serve", "--port", "80"]
    assert b["Env"] == ["A=1", "UNSET_HERE"]
    assert b["Healthcheck"]["Test"] == ["CMD-SHELL", "curl -f localhost"]
    assert b["Healthcheck"]["Interval"] == 2_000_000_000
    hc = b["HostConfig"]
    assert hc["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3000"}],
                                  "9000/udp": [{"HostIp": "", "HostPort": "9000"}],
                                  "9001/udp": [{"HostIp": "", "HostPort": "9001"}]}
    assert hc["Binds"] == [f"{tmp_path}/src:/src:ro", "proj_data:/data:rw"]
    assert hc["Mounts"] == [{"Type": "volume", "Target": "/anon"}]
    assert hc["Tmpfs"] == {"/run": ""} and hc["Memory"] == 64 << 20
    assert hc["ExtraHosts"] == ["gw:10.0.0.1"]
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 1024}]
    assert hc["NetworkMode"] == "proj_back"
    assert b["NetworkingConfig"]["EndpointsConfig"]["proj_back"]["Aliases"] == [
        "proj-api-1", "api", "api.back"]
    assert s.extra_networks == [("proj_front", {"Aliases": ["proj-api-1", "api"]})]
    assert s.files == [InjectedFile("/run/secrets/pw", b"x")]
    assert req.host_config.memory == 64 << 20
