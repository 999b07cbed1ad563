"""specgen: a container's config -> the OCI spec dockerd gives runc.

The fixtures under data/dockerd_specs/ are our own captures from Debian's
dockerd 20.10 (see data/dockerd_specs/README.md): the create request the
docker CLI sent, what ``docker inspect`` showed, and the bundle's config.json.
The comparison feeds the inspect's Config/HostConfig (dockerd's stored,
merged and adapted config) to make_spec with the host facts of the capture
(devices, namespace paths, planned binds) and compares field by field, with
the differences between dockerd 20.10 and the API 1.45 daemon ketch follows
spelled out in ``_normalize``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ketch.engine import model, specgen
from ketch.engine.model import ContainerConfig, DeviceMapping, HostConfig, Ulimit
from ketch.engine.specgen import PlannedMount, SharedNamespace, SpecOptions, make_spec
from ketch.errors import InvalidArgument, NotSupported
from ketch.image.oci import ContainerConfig as ImageConfig
from ketch.jsonmodel import from_json, to_json
from ketch.runtime.spec import Device, Spec

DATA = Path(__file__).parent / "data" / "dockerd_specs"
VARIANTS = sorted(p.stem for p in DATA.glob("*.json") if p.stem != "common")
COMMON = json.loads((DATA / "common.json").read_text())
# The capabilities Docker 20.10's Go library knew (up to CAP_AUDIT_READ).
CAPS_2010 = [n for n in specgen.capslib.NAMES if specgen.capslib.CAPS[n] <= 37]
CID = "0123456789abcdef" * 4


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(COMMON["etc_passwd"])
    (tmp_path / "etc" / "group").write_text(COMMON["etc_group"])
    return str(tmp_path)


def _opts(**kw: Any) -> SpecOptions:
    base: dict[str, Any] = dict(
        cgroup_parent="/ketch-test", init_path="/usr/bin/tini-static", ncpu=4,
        sysctl_exists=lambda name: True, all_capabilities=lambda: list(CAPS_2010),
        host_devices=lambda: [Device(type="c", path="/dev/kmsg", major=1, minor=11,
                                     file_mode=0o644, uid=0, gid=0)],
        devices_from_path=lambda p: [Device(type="c", path=p, major=1, minor=3,
                                            file_mode=0o666, uid=0, gid=0)],
        block_device_numbers=lambda p: (8, 0), arch="x86_64", kernel_version=(6, 1, 0))
    base.update(kw)
    return SpecOptions(**base)


def _spec(rootfs: str, config: ContainerConfig | None = None, hc: HostConfig | None = None,
          **kw: Any) -> Spec:
    config = config or ContainerConfig(cmd=["sleep", "1"])
    hc = hc or HostConfig()
    if "options" not in kw:
        kw["options"] = _opts()
    return make_spec(CID, config, hc, None, rootfs, **kw)


# --- the comparison with dockerd ---------------------------------------------------

def _normalize(spec: dict[str, Any]) -> dict[str, Any]:
    """What differs between dockerd 20.10 and ketch on purpose, made equal."""
    s = copy.deepcopy(spec)
    s.pop("ociVersion", None)
    s.pop("hooks", None)                  # libnetwork's prestart hook: ketch wires networks itself
    s.pop("annotations", None)
    proc = s["process"]
    for key, default in (("terminal", False), ("noNewPrivileges", False)):
        if proc.get(key) == default:
            proc.pop(key)
    # 20.10 gave a non-root user only the bounding set; API 1.45's daemon gives all
    # three (execve as non-root clears the others anyway): compare the bounding set.
    caps = proc.get("capabilities") or {}
    proc["capabilities"] = {"bounding": caps.get("bounding")}
    if s["root"].get("readonly") is False:
        s["root"].pop("readonly")
    linux = s["linux"]
    res = linux.get("resources") or {}
    # Go zero values 20.10 wrote and newer dockerd leaves out: no limit either way.
    if res.get("cpu") == {"shares": 0}:
        res.pop("cpu")
    elif res.get("cpu", {}).get("shares") == 0:
        res["cpu"].pop("shares")
    if res.get("blockIO") == {"weight": 0}:
        res.pop("blockIO")
    for rule in res.get("devices", []):
        for key in ("major", "minor"):        # "*" is -1 in Go, absent in ketch's JSON
            if rule.get(key) == -1:
                rule.pop(key)
    if linux.get("seccomp"):
        linux["seccomp"] = {"defaultAction": linux["seccomp"]["defaultAction"]}
    # --network host: 20.10 joined the host's netns by path, newer dockerd leaves the
    # namespace out; either way the container is in the host's network namespace.
    linux["namespaces"] = [n for n in linux.get("namespaces", [])
                           if not (n["type"] == "network" and n.get("path", "").endswith(
                               "/netns/default"))]
    return s


def _from_fixture(name: str, rootfs: str) -> tuple[dict[str, Any], dict[str, Any]]:
    fx = json.loads((DATA / f"{name}.json").read_text())
    want = fx["spec"]
    config = from_json(ContainerConfig, fx["inspect"]["Config"])
    hc = from_json(HostConfig, fx["inspect"]["HostConfig"])
    linux = want["linux"]
    devices = [from_json(Device, d) for d in linux.get("devices", [])]
    # The binds the engine plans (volumes, -v, /etc/resolv.conf, hostname, hosts:
    # read-only with a read-only root, as dockerd's NetworkMounts), in dockerd's order.
    planned = [PlannedMount(destination=m["destination"], source=m["source"],
                            writable="ro" not in m["options"],
                            non_recursive="bind" in m["options"],
                            propagation=next((o for o in m["options"]
                                              if o in specgen.PROPAGATION), ""))
               for m in want["mounts"]
               if m["type"] == "bind" and m["destination"] not in ("/dev/shm",
                                                                   "/sbin/docker-init")]
    shm = next((m["source"] for m in want["mounts"]
                if m["destination"] == "/dev/shm" and m["type"] == "bind"), None)
    paths = {n["type"]: n.get("path") for n in linux["namespaces"]}

    def resolve(kind: str, ref: str) -> SharedNamespace:
        assert hc.network_mode == f"container:{ref}" or hc.pid_mode == f"container:{ref}" \
            or hc.ipc_mode == f"container:{ref}"
        return SharedNamespace(path=paths[kind], shm_path=shm)

    def from_path(p: str) -> list[Device]:
        return [Device(type=d.type, path=p, major=d.major, minor=d.minor, file_mode=d.file_mode,
                       uid=d.uid, gid=d.gid)
                for d in devices if (d.major, d.minor) == {"/dev/fuse": (10, 229),
                                                           "/dev/null": (1, 3)}.get(p)]

    opts = _opts(cgroup_parent="/kspecgen-ref", init_path="/usr/bin/docker-init",
                 ncpu=COMMON["ncpu"], host_devices=lambda: devices, devices_from_path=from_path,
                 recursive_readonly=False)
    spec = make_spec(fx["id"], config, hc, None, want["root"]["path"] and rootfs, options=opts,
                     mounts=planned, resolve=resolve, shm_path=shm)
    got = to_json(spec)
    got["root"]["path"] = want["root"]["path"]
    return _normalize(got), _normalize(want)


@pytest.mark.parametrize("name", VARIANTS)
def test_matches_dockerd(name: str, rootfs: str) -> None:
    got, want = _from_fixture(name, rootfs)
    for key in ("process", "mounts", "hostname", "root"):
        assert got.get(key) == want.get(key), key
    for key in sorted(set(got["linux"]) | set(want["linux"])):
        assert got["linux"].get(key) == want["linux"].get(key), f"linux.{key}"
    assert got == want


def test_fixtures_cover_the_interesting_cases() -> None:
    assert {"default", "tty_user", "resources", "memonly", "security", "privileged", "hostns",
            "capsall", "joined", "ipcnone", "binds", "misc"} <= set(VARIANTS)


# --- process -------------------------------------------------------------------

def test_default_spec_shape(rootfs: str) -> None:
    spec = _spec(rootfs)
    assert spec.hostname == CID[:12]
    assert spec.process is not None and spec.linux is not None and spec.root is not None
    assert spec.process.args == ["sleep", "1"]
    assert spec.process.env == [f"PATH={specgen.DEFAULT_PATH_ENV}", f"HOSTNAME={CID[:12]}"]
    assert spec.process.cwd == "/"
    assert spec.process.user.uid == 0 and spec.process.user.additional_gids == [0]
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.bounding == specgen.DEFAULT_CAPABILITIES
    assert len(specgen.DEFAULT_CAPABILITIES) == 14
    assert spec.process.oom_score_adj == 0
    assert spec.root.path == rootfs and not spec.root.readonly
    assert [n.type for n in spec.linux.namespaces] == ["mount", "network", "uts", "pid", "ipc"]
    assert spec.linux.cgroups_path == f"/ketch-test/{CID}"
    assert spec.linux.masked_paths == model.DEFAULT_MASKED_PATHS
    assert spec.linux.readonly_paths == model.DEFAULT_READONLY_PATHS
    assert spec.linux.seccomp is not None and spec.linux.seccomp.default_action == "SCMP_ACT_ERRNO"
    assert [m.destination for m in spec.mounts] == [
        "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    shm = spec.mounts[-1]
    assert shm.options[-1] == f"size={model.DEFAULT_SHM_SIZE}"
    assert spec.linux.sysctl == {"net.ipv4.ping_group_range": "0 2147483647",
                                 "net.ipv4.ip_unprivileged_port_start": "0"}
    assert spec.linux.resources is not None
    assert spec.linux.resources.devices == specgen.DOCKER_DEVICE_RULES


def test_env_defaults_are_replaced_removed_and_appended(rootfs: str) -> None:
    cfg = ContainerConfig(cmd=["x"], tty=True, hostname="h",
                          env=["PATH=/bin", "A=1", "TERM", "B=2", "A=3"])
    spec = _spec(rootfs, cfg)
    assert spec.process is not None
    assert spec.process.env == ["PATH=/bin", "HOSTNAME=h", "A=1", "B=2", "A=3"]
    assert specgen.replace_or_append_env(["X=1", "Y=2"], ["Y", "Z=3", "X=0"]) == ["X=0", "Z=3"]


def test_linked_env_comes_before_the_containers(rootfs: str) -> None:
    spec = _spec(rootfs, ContainerConfig(cmd=["x"], env=["DB_PORT=1"]),
                 linked_env=["DB_PORT=tcp://172.17.0.2:5432", "DB_NAME=/web/db"])
    assert spec.process is not None
    assert spec.process.env[2:] == ["DB_PORT=1", "DB_NAME=/web/db"]


@pytest.mark.parametrize(("user", "image", "want"), [
    (ContainerConfig(cmd=["a", "b"]), ImageConfig(entrypoint=["/ep"], cmd=["img"]),
     ["/ep", "a", "b"]),
    (ContainerConfig(), ImageConfig(entrypoint=["/ep"], cmd=["img"]), ["/ep", "img"]),
    (ContainerConfig(entrypoint=["/mine"]), ImageConfig(entrypoint=["/ep"], cmd=["img"]),
     ["/mine"]),
    (ContainerConfig(entrypoint=[""], cmd=["sh"]), ImageConfig(entrypoint=["/ep"], cmd=["img"]),
     ["sh"]),
    (ContainerConfig(entrypoint=[], cmd=None), ImageConfig(entrypoint=["/ep"], cmd=["img"]),
     ["img"]),
    (ContainerConfig(), ImageConfig(cmd=["sh", "-c", "x"]), ["sh", "-c", "x"]),
])
def test_entrypoint_and_cmd_override_rules(rootfs: str, user: ContainerConfig,
                                           image: ImageConfig, want: list[str]) -> None:
    spec = make_spec(CID, user, HostConfig(), image, rootfs, options=_opts())
    assert spec.process is not None and spec.process.args == want
    assert user.cmd != ["img"] or want != ["/ep", "img"]   # the caller's config is not merged


def test_no_command_is_refused(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match="^No command specified$"):
        make_spec(CID, ContainerConfig(), HostConfig(), ImageConfig(), rootfs, options=_opts())
    with pytest.raises(InvalidArgument, match="^No command specified$"):
        specgen.merge_image_config(ContainerConfig(entrypoint=[""]), None)


def test_merge_image_config_as_dockerd() -> None:
    cfg = ContainerConfig(env=["A=1", "PATH=/x"], labels={"mine": "1", "both": "user"},
                          exposed_ports={"80/tcp": {}}, volumes={"/u": {}})
    img = ImageConfig(user="app", env=["PATH=/img", "B=2"], labels={"both": "img", "img": "1"},
                      exposed_ports={"443/tcp": {}}, volumes={"/data": {}}, working_dir="/srv",
                      stop_signal="SIGQUIT", cmd=["run"])
    specgen.merge_image_config(cfg, img)
    assert cfg.user == "app" and cfg.working_dir == "/srv" and cfg.stop_signal == "SIGQUIT"
    assert cfg.env == ["A=1", "PATH=/x", "B=2"]
    assert cfg.labels == {"mine": "1", "both": "user", "img": "1"}
    assert cfg.exposed_ports == {"80/tcp": {}, "443/tcp": {}}
    assert cfg.volumes == {"/u": {}, "/data": {}}
    assert cfg.cmd == ["run"]
    bare = ContainerConfig(cmd=["x"], volumes={})
    specgen.merge_image_config(bare, ImageConfig())
    assert bare.env is None and bare.volumes is None and bare.labels == {}


def test_hostname_defaults() -> None:
    c = ContainerConfig()
    specgen.default_hostname(CID, c, HostConfig(network_mode="bridge"))
    assert c.hostname == CID[:12]
    c = ContainerConfig()
    specgen.default_hostname(CID, c, HostConfig(network_mode="host"), "myhost")
    assert c.hostname == "myhost"
    c = ContainerConfig(hostname="mine")
    specgen.default_hostname(CID, c, HostConfig(network_mode="host"), "myhost")
    assert c.hostname == "mine"
    c = ContainerConfig()
    specgen.default_hostname(CID, c, HostConfig(network_mode="container:db"),
                             network_container_hostname="dbhost")
    assert c.hostname == "dbhost"


def test_workdir_tty_console_domainname_annotations(rootfs: str) -> None:
    cfg = ContainerConfig(cmd=["x"], working_dir="/srv", tty=True, domainname="example.org")
    hc = HostConfig(console_size=[24, 80], annotations={"a": "b"}, oom_score_adj=-500)
    spec = _spec(rootfs, cfg, hc)
    assert spec.process is not None and spec.linux is not None
    assert spec.process.cwd == "/srv" and spec.process.terminal
    assert "TERM=xterm" in spec.process.env
    assert spec.process.console_size is not None
    assert (spec.process.console_size.height, spec.process.console_size.width) == (24, 80)
    assert spec.linux.sysctl["kernel.domainname"] == "example.org"
    assert spec.annotations == {"a": "b"}
    assert spec.process.oom_score_adj == -500


def test_user_and_group_add(rootfs: str) -> None:
    spec = _spec(rootfs, ContainerConfig(cmd=["x"], user="www"),
                 HostConfig(group_add=["daemon", "777"]))
    assert spec.process is not None
    u = spec.process.user
    assert (u.uid, u.gid, u.additional_gids) == (33, 33, [33, 29, 1, 777])
    with pytest.raises(InvalidArgument,
                       match="^unable to find user nope: no matching entries in passwd file$"):
        _spec(rootfs, ContainerConfig(cmd=["x"], user="nope"))


def test_init_is_bound_and_prefixed(rootfs: str) -> None:
    spec = _spec(rootfs, hc=HostConfig(init=True))
    assert spec.process is not None
    assert spec.process.args == ["/sbin/docker-init", "--", "sleep", "1"]
    init = [m for m in spec.mounts if m.destination == "/sbin/docker-init"]
    assert len(init) == 1 and init[0].source == "/usr/bin/tini-static"
    assert init[0].type == "bind" and init[0].options == ["bind", "ro"]
    # The daemon's --init applies unless the container says otherwise.
    assert _spec(rootfs, options=_opts(init=True)).process.args[0] == "/sbin/docker-init"  # type: ignore[union-attr]
    assert _spec(rootfs, hc=HostConfig(init=False),
                 options=_opts(init=True)).process.args[0] == "sleep"  # type: ignore[union-attr]
    # Not in a PID namespace that already has an init.
    spec = _spec(rootfs, hc=HostConfig(init=True, pid_mode="host"))
    assert spec.process is not None and spec.process.args[0] == "sleep"
    with pytest.raises(NotSupported, match="--init is not supported"):
        _spec(rootfs, hc=HostConfig(init=True), options=_opts(init_path=None))


# --- namespaces ------------------------------------------------------------------

def _ns(spec: Spec) -> dict[str, str | None]:
    assert spec.linux is not None
    return {n.type: n.path for n in spec.linux.namespaces}


def test_host_namespaces(rootfs: str) -> None:
    spec = _spec(rootfs, hc=HostConfig(network_mode="host", pid_mode="host", ipc_mode="host",
                                       uts_mode="host"))
    assert _ns(spec) == {"mount": None}
    assert spec.hostname is None
    assert spec.linux is not None and spec.linux.sysctl == {}     # no net.* in the host's netns
    shm = [m for m in spec.mounts if m.destination == "/dev/shm"]
    assert len(shm) == 1 and shm[0].type == "bind" and shm[0].source == "/dev/shm"
    assert shm[0].options == ["rbind", "rprivate"]


def test_joining_other_containers(rootfs: str) -> None:
    calls: list[tuple[str, str]] = []

    def resolve(kind: str, ref: str) -> SharedNamespace:
        calls.append((kind, ref))
        return SharedNamespace(path=f"/proc/42/ns/{kind}", shm_path="/var/lib/x/shm")

    hc = HostConfig(network_mode="container:a", pid_mode="container:b", ipc_mode="container:c")
    spec = _spec(rootfs, hc=hc, resolve=resolve)
    assert calls == [("network", "a"), ("ipc", "c"), ("pid", "b")]
    assert _ns(spec) == {"mount": None, "network": "/proc/42/ns/network", "uts": None,
                         "pid": "/proc/42/ns/pid", "ipc": "/proc/42/ns/ipc"}
    shm = [m for m in spec.mounts if m.destination == "/dev/shm"]
    assert shm[0].source == "/var/lib/x/shm" and shm[0].type == "bind"
    with pytest.raises(InvalidArgument, match="no resolver"):
        _spec(rootfs, hc=HostConfig(pid_mode="container:b"))
    with pytest.raises(InvalidArgument, match="shareable"):
        _spec(rootfs, hc=HostConfig(ipc_mode="container:c"),
              resolve=lambda k, r: SharedNamespace(path="/proc/1/ns/ipc"))


def test_ipc_modes(rootfs: str) -> None:
    none = _spec(rootfs, hc=HostConfig(ipc_mode="none"))
    assert "/dev/shm" not in [m.destination for m in none.mounts]
    assert "ipc" in _ns(none)
    shareable = _spec(rootfs, hc=HostConfig(ipc_mode="shareable"), shm_path="/run/x/shm")
    shm = [m for m in shareable.mounts if m.destination == "/dev/shm"]
    assert shm[0].source == "/run/x/shm" and shm[0].type == "bind"
    with pytest.raises(InvalidArgument, match="shm_path"):
        _spec(rootfs, hc=HostConfig(ipc_mode="shareable"))
    sized = _spec(rootfs, hc=HostConfig(shm_size=1 << 20))
    assert [m for m in sized.mounts if m.destination == "/dev/shm"][0].options[-1] == \
        "size=1048576"
    with pytest.raises(InvalidArgument, match="invalid IPC mode: bogus"):
        _spec(rootfs, hc=HostConfig(ipc_mode="bogus"))


def test_cgroup_namespace_default_follows_the_cgroup_version(rootfs: str) -> None:
    assert "cgroup" not in _ns(_spec(rootfs, options=_opts(cgroup_version=1)))
    assert "cgroup" in _ns(_spec(rootfs, options=_opts(cgroup_version=2)))
    assert "cgroup" in _ns(_spec(rootfs, hc=HostConfig(cgroupns_mode="private")))
    assert "cgroup" not in _ns(_spec(rootfs, hc=HostConfig(cgroupns_mode="host"),
                                     options=_opts(cgroup_version=2)))
    with pytest.raises(InvalidArgument, match="invalid cgroup namespace mode: x"):
        _spec(rootfs, hc=HostConfig(cgroupns_mode="x"))


def test_network_disabled_keeps_a_private_network(rootfs: str) -> None:
    spec = _spec(rootfs, ContainerConfig(cmd=["x"], network_disabled=True),
                 HostConfig(network_mode="host"))
    assert "network" in _ns(spec)


# --- resources ----------------------------------------------------------------------

def test_resources(rootfs: str) -> None:
    hc = HostConfig(memory=64 << 20, memory_swap=128 << 20, memory_reservation=32 << 20,
                    memory_swappiness=10, oom_kill_disable=True, cpu_shares=512,
                    nano_cpus=1_500_000_000, cpuset_cpus="0-1", cpuset_mems="0",
                    pids_limit=100, blkio_weight=300,
                    blkio_weight_device=[model.WeightDevice(path="/dev/sda", weight=200)],
                    blkio_device_read_bps=[model.ThrottleDevice(path="/dev/sda", rate=1024)])
    spec = _spec(rootfs, hc=hc)
    assert spec.linux is not None and spec.linux.resources is not None
    r = spec.linux.resources
    assert r.memory is not None and r.cpu is not None and r.pids is not None
    assert (r.memory.limit, r.memory.swap, r.memory.reservation) == (64 << 20, 128 << 20, 32 << 20)
    assert (r.memory.swappiness, r.memory.disable_oom_killer) == (10, True)
    assert (r.cpu.shares, r.cpu.period, r.cpu.quota) == (512, 100_000, 150_000)
    assert (r.cpu.cpus, r.cpu.mems) == ("0-1", "0")
    assert r.pids.limit == 100
    assert r.block_io is not None and r.block_io.weight == 300
    assert [(w.major, w.minor, w.weight) for w in r.block_io.weight_device] == [(8, 0, 200)]
    assert [(t.major, t.minor, t.rate) for t in r.block_io.throttle_read_bps_device] == \
        [(8, 0, 1024)]


@pytest.mark.parametrize(("hc", "check"), [
    # -1 is unlimited swap: no swap limit in the spec at all
    (HostConfig(memory=64 << 20, memory_swap=-1),
     lambda r: r.memory.limit == 64 << 20 and r.memory.swap is None),
    (HostConfig(pids_limit=0), lambda r: r.pids.limit == -1),
    (HostConfig(pids_limit=-1), lambda r: r.pids.limit == -1),
    (HostConfig(), lambda r: r.pids is None and r.cpu is None and r.memory is None
     and r.block_io is None),
    (HostConfig(oom_kill_disable=False), lambda r: r.memory.disable_oom_killer is False),
    (HostConfig(cpu_period=50_000, cpu_quota=25_000),
     lambda r: (r.cpu.period, r.cpu.quota) == (50_000, 25_000)),
    (HostConfig(nano_cpus=10_000_000), lambda r: (r.cpu.period, r.cpu.quota) == (100_000, 1000)),
    (HostConfig(cpu_realtime_period=1000, cpu_realtime_runtime=500),
     lambda r: (r.cpu.realtime_period, r.cpu.realtime_runtime) == (1000, 500)),
])
def test_resource_semantics(rootfs: str, hc: HostConfig, check: Any) -> None:
    spec = _spec(rootfs, hc=hc)
    assert spec.linux is not None and check(spec.linux.resources)


def test_resource_errors(rootfs: str) -> None:
    with pytest.raises(InvalidArgument,
                       match=r"^Range of CPUs is from 0.01 to 4.00, as there are only 4 CPUs"):
        _spec(rootfs, hc=HostConfig(nano_cpus=5 * 10**9))
    with pytest.raises(InvalidArgument, match="^shares: invalid argument$"):
        _spec(rootfs, hc=HostConfig(cpu_shares=-1))
    with pytest.raises(InvalidArgument, match="stat /nope: no such file"):
        _spec(rootfs, hc=HostConfig(blkio_weight_device=[model.WeightDevice("/nope", 10)]),
              options=_opts(block_device_numbers=specgen.block_device_numbers))


def test_ulimits(rootfs: str) -> None:
    hc = HostConfig(ulimits=[Ulimit("nofile", hard=2000, soft=1000), Ulimit("core", -1, -1)])
    opts = _opts(default_ulimits=[Ulimit("nofile", 10, 10), Ulimit("nproc", 4096, 4096)])
    spec = _spec(rootfs, hc=hc, options=opts)
    assert spec.process is not None
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits] == [
        ("RLIMIT_NOFILE", 1000, 2000), ("RLIMIT_CORE", specgen.UINT64_MAX, specgen.UINT64_MAX),
        ("RLIMIT_NPROC", 4096, 4096)]
    with pytest.raises(InvalidArgument, match="invalid ulimit type: bogus"):
        specgen.rlimits([Ulimit("bogus", 1, 1)], [])
    with pytest.raises(InvalidArgument, match="soft limit must be less than or equal"):
        specgen.rlimits([Ulimit("nofile", 1, 2)], [])


# --- devices ------------------------------------------------------------------------

def test_devices_and_cgroup_rules(rootfs: str) -> None:
    hc = HostConfig(devices=[DeviceMapping("/dev/null", "/dev/mynull", "r"),
                             DeviceMapping("/dev/zero", "", "rwm")],
                    device_cgroup_rules=["c 42:* rmw", "b *:* r"])
    spec = _spec(rootfs, hc=hc)
    assert spec.linux is not None and spec.linux.resources is not None
    assert [d.path for d in spec.linux.devices] == ["/dev/mynull", "/dev/zero"]
    extra = spec.linux.resources.devices[len(specgen.DOCKER_DEVICE_RULES):]
    assert [(r.allow, r.type, r.major, r.minor, r.access) for r in extra] == [
        (True, "c", 1, 3, "r"), (True, "c", 1, 3, "rwm"), (True, "c", 42, None, "rmw"),
        (True, "b", None, None, "r")]
    for bad in ("c 1:3", "x 1:3 r", "c 1:3 rwx", "c a:3 r"):
        with pytest.raises(InvalidArgument, match="invalid device cgroup rule format"):
            specgen.parse_device_cgroup_rule(bad)
    with pytest.raises(InvalidArgument, match="invalid device mode: rx"):
        _spec(rootfs, hc=HostConfig(devices=[DeviceMapping("/dev/null", "/dev/null", "rx")]))


def test_device_from_the_host(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    os.symlink("/dev/null", tmp_path / "dir" / "n")
    assert specgen.devices_from_path("/dev/null")[0].major == 1
    found = specgen.devices_from_path(str(tmp_path / "dir"))
    assert [(d.type, d.major, d.minor) for d in found] == [("c", 1, 3)]
    with pytest.raises(InvalidArgument, match="error gathering device information"):
        specgen.devices_from_path(str(tmp_path / "nope"))
    (tmp_path / "plain").write_text("")
    with pytest.raises(InvalidArgument, match="not a device node"):
        specgen.devices_from_path(str(tmp_path / "plain"))


# --- privileges, capabilities, seccomp ---------------------------------------------------

def test_privileged(rootfs: str) -> None:
    hc = HostConfig(privileged=True, devices=[DeviceMapping("/dev/null", "/dev/other", "r")])
    spec = _spec(rootfs, hc=hc)
    assert spec.process is not None and spec.linux is not None
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.bounding == CAPS_2010
    assert spec.linux.seccomp is None
    assert spec.linux.masked_paths == [] and spec.linux.readonly_paths == []
    assert [d.path for d in spec.linux.devices] == ["/dev/kmsg", "/dev/other"]
    assert spec.linux.resources is not None
    assert [(r.allow, r.type, r.access) for r in spec.linux.resources.devices] == \
        [(True, None, "rwm")]
    sys_mounts = {m.destination: m.options for m in spec.mounts}
    assert "ro" not in sys_mounts["/sys"] and "ro" not in sys_mounts["/sys/fs/cgroup"]


@pytest.mark.parametrize(("add", "drop", "want"), [
    ([], [], specgen.DEFAULT_CAPABILITIES),
    (["sys_admin", "CAP_NET_ADMIN"], ["net_raw"],
     [c for c in specgen.DEFAULT_CAPABILITIES if c != "CAP_NET_RAW"]
     + ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]),
    (["chown"], ["ALL"], ["CAP_CHOWN"]),
    (["all"], ["mknod"], [c for c in CAPS_2010 if c != "CAP_MKNOD"]),
    ([], ["all"], []),
])
def test_capabilities(rootfs: str, add: list[str], drop: list[str], want: list[str]) -> None:
    spec = _spec(rootfs, hc=HostConfig(cap_add=add, cap_drop=drop))
    assert spec.process is not None and spec.process.capabilities is not None
    c = spec.process.capabilities
    assert c.bounding == want and c.effective == want and c.permitted == want
    assert c.inheritable == [] and c.ambient == []


def test_capability_errors() -> None:
    with pytest.raises(InvalidArgument, match='^unknown capability: "CAP_BOGUS"$'):
        specgen.tweak_capabilities(["bogus"], [], False, CAPS_2010)
    with pytest.raises(InvalidArgument, match="not supported by your kernel"):
        specgen.tweak_capabilities(["bpf"], [], False, CAPS_2010)


def test_the_seccomp_profile_follows_the_capabilities(rootfs: str) -> None:
    def allowed(spec: Spec) -> set[str]:
        assert spec.linux is not None and spec.linux.seccomp is not None
        return {n for r in spec.linux.seccomp.syscalls if r.action == "SCMP_ACT_ALLOW"
                and not r.args for n in r.names}

    plain = allowed(_spec(rootfs))
    admin = allowed(_spec(rootfs, hc=HostConfig(cap_add=["SYS_ADMIN"])))
    assert "mount" not in plain and "mount" in admin


def test_seccomp_choices(rootfs: str) -> None:
    unconfined = _spec(rootfs, hc=HostConfig(security_opt=["seccomp=unconfined"]))
    assert unconfined.linux is not None and unconfined.linux.seccomp is None
    builtin = _spec(rootfs, hc=HostConfig(security_opt=["seccomp=builtin"]),
                    options=_opts(seccomp_profile="unconfined"))
    assert builtin.linux is not None and builtin.linux.seccomp is not None
    daemon_off = _spec(rootfs, options=_opts(seccomp_profile="unconfined"))
    assert daemon_off.linux is not None and daemon_off.linux.seccomp is None
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
    custom = _spec(rootfs, hc=HostConfig(security_opt=[f"seccomp={profile}"]))
    assert custom.linux is not None and custom.linux.seccomp is not None
    assert custom.linux.seccomp.default_action == "SCMP_ACT_ALLOW"
    assert [(r.names, r.errno_ret) for r in custom.linux.seccomp.syscalls] == [(["mkdir"], 1)]
    with pytest.raises(InvalidArgument, match="^Decoding seccomp profile failed"):
        _spec(rootfs, hc=HostConfig(security_opt=["seccomp={nope"]))


def test_docker_profile_includes_and_excludes() -> None:
    profile = json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["amd64"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]},
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["new_thing"], "action": "SCMP_ACT_ALLOW",
             "includes": {"minKernel": "6.5"}},
        ]})
    s = specgen.docker_seccomp_profile(profile, ["CAP_CHOWN"], "x86_64", (6, 1, 0))
    assert s.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert [r.names for r in s.syscalls] == [["read"], ["arch_prctl"], ["clone"]]
    assert s.syscalls[2].args[0].value == 2114060288
    s = specgen.docker_seccomp_profile(profile, ["CAP_SYS_ADMIN"], "aarch64", (6, 6))
    assert s.architectures == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert [r.names for r in s.syscalls] == [["read"], ["mount"], ["new_thing"]]
    both = json.dumps({"architectures": ["SCMP_ARCH_X86_64"], "archMap": [{"architecture": "x"}]})
    with pytest.raises(InvalidArgument, match="both 'architectures' and 'archMap'"):
        specgen.docker_seccomp_profile(both, [], "x86_64", (6,))


@pytest.mark.parametrize(("opts", "nnp"), [
    (["no-new-privileges"], True), (["no-new-privileges=true"], True),
    (["no-new-privileges:1"], True), (["no-new-privileges=false"], False), ([], False),
    (["label=disable", "apparmor=unconfined", "disable"], False),
])
def test_security_opts(rootfs: str, opts: list[str], nnp: bool) -> None:
    spec = _spec(rootfs, hc=HostConfig(security_opt=opts))
    assert spec.process is not None and spec.process.no_new_privileges is nnp


def test_security_opts_the_host_cannot_honour(rootfs: str) -> None:
    with pytest.raises(NotSupported, match="AppArmor is not supported on this host"):
        _spec(rootfs, hc=HostConfig(security_opt=["apparmor=docker-default"]))
    with pytest.raises(NotSupported, match="SELinux is not supported on this host"):
        _spec(rootfs, hc=HostConfig(security_opt=["label=type:svirt_t"]))
    with pytest.raises(InvalidArgument, match='^invalid --security-opt 1: "bogus"$'):
        _spec(rootfs, hc=HostConfig(security_opt=["bogus"]))
    with pytest.raises(InvalidArgument, match='^invalid --security-opt 2: "foo=bar"$'):
        _spec(rootfs, hc=HostConfig(security_opt=["foo=bar"]))
    with pytest.raises(InvalidArgument, match="invalid --security-opt 2"):
        _spec(rootfs, hc=HostConfig(security_opt=["no-new-privileges=maybe"]))
    nnp = _spec(rootfs, options=_opts(no_new_privileges=True))
    assert nnp.process is not None and nnp.process.no_new_privileges


# --- sysctls, mounts, paths ----------------------------------------------------------

def test_sysctls(rootfs: str) -> None:
    spec = _spec(rootfs, hc=HostConfig(sysctls={"net.ipv4.ip_forward": "1",
                                                "kernel.shmmax": "1", "fs.mqueue.msg_max": "9",
                                                "net.ipv4.ping_group_range": "1 1"}))
    assert spec.linux is not None
    assert spec.linux.sysctl["net.ipv4.ping_group_range"] == "1 1"     # the user's wins
    assert spec.linux.sysctl["kernel.shmmax"] == "1"
    cases: list[tuple[dict[str, str], dict[str, Any], str]] = [
        ({"net.ipv4.ip_forward": "1"}, {"network_mode": "host"},
         'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
        ({"kernel.shmmax": "1"}, {"ipc_mode": "host"},
         'sysctl "kernel.shmmax" is not allowed in the hosts ipc namespace'),
        ({"kernel.hostname": "x"}, {}, 'sysctl "kernel.hostname" is not allowed; the hostname'),
        ({"vm.swappiness": "1"}, {}, 'sysctl "vm.swappiness" is not in a separate kernel'),
        ({"kernel.domainname": "x"}, {"uts_mode": "host"}, "not in a separate kernel namespace"),
    ]
    for sysctls, hc_kw, msg in cases:
        with pytest.raises(InvalidArgument, match=msg):
            _spec(rootfs, hc=HostConfig(sysctls=sysctls, **hc_kw))
    quiet = _spec(rootfs, options=_opts(sysctl_exists=lambda n: False))
    assert quiet.linux is not None and quiet.linux.sysctl == {}
    userns = _spec(rootfs, options=_opts(running_in_userns=True))
    assert userns.linux is not None
    assert userns.linux.sysctl == {"net.ipv4.ip_unprivileged_port_start": "0"}


def test_read_only_root_and_tmpfs(rootfs: str) -> None:
    hc = HostConfig(readonly_rootfs=True, tmpfs={"/run": "", "/tmp": "size=1m,exec,mode=1777"})
    spec = _spec(rootfs, hc=hc, mounts=[PlannedMount("/data", "/srv/data"),
                                        PlannedMount("/etc/hosts", "/x/hosts", writable=False)])
    assert spec.root is not None and spec.root.readonly
    m = {x.destination: x for x in spec.mounts}
    assert "ro" in m["/sys"].options and "ro" in m["/sys/fs/cgroup"].options
    assert "ro" not in m["/proc"].options and "ro" not in m["/dev/shm"].options
    assert m["/run"].options == ["noexec", "nosuid", "nodev", "rprivate"]
    assert m["/tmp"].options == ["nosuid", "nodev", "rprivate", "size=1m", "exec", "mode=1777"]
    assert m["/data"].options == ["rbind", "rprivate"]
    assert m["/etc/hosts"].options == ["rbind", "rro", "rprivate"]


def test_merge_tmpfs_options() -> None:
    assert specgen.merge_tmpfs_options(["noexec", "nosuid", "rprivate", "exec", "size=1",
                                        "size=2", "shared", "defaults"]) == \
        ["nosuid", "exec", "size=2", "shared"]
    with pytest.raises(InvalidArgument, match=r'invalid tmpfs option \["foo" "bar"\]'):
        specgen.merge_tmpfs_options(["foo=bar"])
    with pytest.raises(InvalidArgument, match=r'invalid tmpfs option \["weird"\]'):
        specgen.merge_tmpfs_options(["weird"])


def test_user_mounts(rootfs: str) -> None:
    planned = [PlannedMount("/a/b/c", "/s3"), PlannedMount("/a", "/s1", propagation="rslave"),
               PlannedMount("/a/b", "/s2", writable=False, non_recursive=True, propagation=""),
               PlannedMount("/ro", "/s4", writable=False, read_only_non_recursive=True),
               PlannedMount("/dev", "/host-dev")]
    spec = _spec(rootfs, mounts=planned, options=_opts())
    dests = [m.destination for m in spec.mounts]
    # no default mount under a user's /dev; user mounts by depth, parents first
    assert dests == ["/proc", "/sys", "/sys/fs/cgroup", "/a", "/ro", "/dev", "/a/b", "/a/b/c"]
    m = {x.destination: x for x in spec.mounts}
    assert m["/a/b"].options == ["bind", "rro"]
    assert m["/ro"].options == ["rbind", "ro", "rprivate"]
    assert spec.linux is not None and spec.linux.rootfs_propagation == "rslave"
    shared = _spec(rootfs, mounts=[PlannedMount("/x", "/y", propagation="rshared")])
    assert shared.linux is not None and shared.linux.rootfs_propagation == "shared"
    no_rro = _spec(rootfs, mounts=[PlannedMount("/x", "/y", writable=False)],
                   options=_opts(recursive_readonly=False))
    assert no_rro.mounts[-1].options == ["rbind", "ro", "rprivate"]
    with pytest.raises(InvalidArgument, match="unsupported mount type"):
        _spec(rootfs, mounts=[PlannedMount("/x", "/y", type="volume")])
    with pytest.raises(InvalidArgument, match="invalid propagation mode"):
        _spec(rootfs, mounts=[PlannedMount("/x", "/y", propagation="sideways")])


def test_masked_and_readonly_paths_can_be_replaced(rootfs: str) -> None:
    spec = _spec(rootfs, hc=HostConfig(masked_paths=["/proc/x"], readonly_paths=[]))
    assert spec.linux is not None
    assert spec.linux.masked_paths == ["/proc/x"] and spec.linux.readonly_paths == []
    priv = _spec(rootfs, hc=HostConfig(privileged=True, masked_paths=["/proc/y"]))
    assert priv.linux is not None and priv.linux.masked_paths == ["/proc/y"]


def test_cgroup_parent(rootfs: str) -> None:
    spec = _spec(rootfs, hc=HostConfig(cgroup_parent="/mine/"))
    assert spec.linux is not None and spec.linux.cgroups_path == f"/mine/{CID}"
    rel = _spec(rootfs, hc=HostConfig(cgroup_parent="rel"))
    assert rel.linux is not None and rel.linux.cgroups_path == f"rel/{CID}"


def test_spec_is_valid_for_the_runtime(rootfs: str) -> None:
    """What make_spec writes, ketch's runtime reads back (config.json round trip)."""
    from ketch.runtime.spec import parse_spec

    spec = _spec(rootfs, hc=HostConfig(memory=64 << 20, ulimits=[Ulimit("core", -1, -1)],
                                       device_cgroup_rules=["c 42:* rwm"], init=True))
    text = json.dumps(to_json(spec))
    again = parse_spec(json.loads(text))
    assert to_json(again) == to_json(spec)


@pytest.mark.parametrize("hc", [
    HostConfig(),
    HostConfig(privileged=True, readonly_rootfs=True, tmpfs={"/run": "size=1m"}),
    HostConfig(network_mode="host", pid_mode="host", ipc_mode="host", uts_mode="host",
               cgroupns_mode="private", init=True),
    HostConfig(ipc_mode="none", cap_drop=["ALL"], ulimits=[Ulimit("nofile", 20, 10)],
               sysctls={"kernel.domainname": "x", "fs.mqueue.msg_max": "10"}),
])
def test_specs_pass_the_runtimes_checks(rootfs: str, hc: HostConfig) -> None:
    """ketch's runtime accepts what make_spec writes (specconv.convert: runc's checks)."""
    from ketch.runtime.specconv import convert

    domain = "" if hc.uts_mode == "host" else "example.org"
    spec = _spec(rootfs, ContainerConfig(cmd=["x"], domainname=domain, tty=True), hc)
    plan = convert(spec, rootfs)
    assert plan.rootfs == os.path.realpath(rootfs)


def test_device_requests_are_refused_as_dockerd_without_drivers(rootfs: str) -> None:
    req = model.DeviceRequest(driver="", count=-1, capabilities=[["gpu"]])
    with pytest.raises(InvalidArgument) as err:
        _spec(rootfs, hc=HostConfig(device_requests=[req]))
    assert str(err.value) == 'could not select device driver "" with capabilities: [[gpu]]'
    req = model.DeviceRequest(driver="nvidia", capabilities=[["gpu", "utility"], ["compute"]])
    with pytest.raises(InvalidArgument, match=r'"nvidia" with capabilities: \[\[gpu utility\] '
                                              r'\[compute\]\]'):
        _spec(rootfs, hc=HostConfig(device_requests=[req]))


def test_host_devices_walk_as_containerd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("b", "a", "console", "sub/c", "sub/0/z", "pts/0", "shm/x", "mqueue/q", "zz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    os.symlink("a", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")

    def fake(path: str) -> Device:
        if not os.path.isfile(path):
            raise InvalidArgument("not a device node")
        return Device(type="c", path=path, major=1, minor=1)

    monkeypatch.setattr(specgen, "device_from_path", fake)
    got = [os.path.relpath(d.path, tmp_path) for d in specgen.host_devices(str(tmp_path))]
    assert got == ["a", "b", "sub/0/z", "sub/c", "zz"]
