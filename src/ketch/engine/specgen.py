"""A container's configuration -> the OCI runtime spec, as dockerd writes it for runc.

This is moby's ``createSpec`` (daemon/oci_linux.go over oci/defaults.go) without
its side effects: everything the host must be asked (which devices exist, where
another container's namespaces are, the init binary) comes in through
``SpecOptions`` and the arguments, so the result depends on its inputs only.

    spec = make_spec(cid, config, host_config, None, rootfs, options=SpecOptions(...),
                     mounts=planned, resolve=engine.shared_namespace, shm_path=shm)

What dockerd adds that is not here: its libnetwork prestart hook (ketch sets up
networks itself), AppArmor and SELinux (this host has neither: asking for a
profile or a label is ``NotSupported``), user-namespace remapping (only
``--userns host`` and the default, which without remapping is the same).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ketch.engine import model
from ketch.engine.model import ContainerConfig, HostConfig, Ulimit, normalize_capabilities
from ketch.engine.userdb import spec_user
from ketch.errors import InvalidArgument, NotSupported
from ketch.image.oci import ContainerConfig as ImageConfig
from ketch.linux import caps as capslib
from ketch.linux.cgroups.resources import (
    CPU,
    BlockIO,
    DeviceRule,
    Memory,
    Pids,
    Resources,
    ThrottleDevice,
    WeightDevice,
)
from ketch.linux.seccomp import ArgCmp, Seccomp, SyscallRule
from ketch.runtime.seccomp_default import default_profile
from ketch.runtime.spec import (
    Box,
    Capabilities,
    Device,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Spec,
)
from ketch.runtime.specconv import MOUNT_FLAGS, PROPAGATION, RLIMITS

DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH_IN_CONTAINER = "/sbin/docker-init"
DEFAULT_CGROUP_PARENT = "/ketch"
CPU_PERIOD_FOR_NANO_CPUS = 100_000          # 100ms, in microseconds
UINT64_MAX = 2**64 - 1

# The 14 capabilities every container gets (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def _rule(allow: bool, type_: str | None, major: int | None, minor: int | None) -> DeviceRule:
    return DeviceRule(allow=allow, type=type_, major=major, minor=minor, access="rwm")


# The device cgroup rules of moby's default spec: deny everything, then the
# standard nodes and the console, and explicitly no /dev/fuse (10:229). This
# is not runtime/specconv.DEFAULT_ALLOWED_DEVICES: that is what the runtime
# adds after a spec's own rules (mknod, ptys, tun), as runc does.
DOCKER_DEVICE_RULES = [
    _rule(False, None, None, None),
    _rule(True, "c", 1, 5), _rule(True, "c", 1, 3), _rule(True, "c", 1, 9),
    _rule(True, "c", 1, 8), _rule(True, "c", 5, 0), _rule(True, "c", 5, 1),
    _rule(False, "c", 10, 229),
]


def default_mounts() -> list[Mount]:
    """moby's default mounts; /dev/shm gets its size from ShmSize later."""
    nsn = ["nosuid", "noexec", "nodev"]
    return [
        Mount(destination="/proc", type="proc", source="proc", options=list(nsn)),
        Mount(destination="/dev", type="tmpfs", source="tmpfs",
              options=["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount(destination="/dev/pts", type="devpts", source="devpts",
              options=["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount(destination="/sys", type="sysfs", source="sysfs", options=[*nsn, "ro"]),
        Mount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup", options=["ro", *nsn]),
        Mount(destination="/dev/mqueue", type="mqueue", source="mqueue", options=list(nsn)),
        Mount(destination="/dev/shm", type="tmpfs", source="shm", options=[*nsn, "mode=1777"]),
    ]


# --- inputs --------------------------------------------------------------------

@dataclass(slots=True)
class PlannedMount:
    """A mount the volume planner decided on: a bind (volumes and binds alike) or a tmpfs."""

    destination: str
    source: str = ""
    type: str = "bind"                 # "bind" or "tmpfs"
    writable: bool = True
    propagation: str = "rprivate"      # Docker's default for binds
    non_recursive: bool = False
    read_only_non_recursive: bool = False
    data: str = ""                     # tmpfs: "size=1m,mode=1777"


@dataclass(frozen=True, slots=True)
class SharedNamespace:
    """Another container's namespace to join: its ``/proc/<pid>/ns/<type>``, and
    for IPC its /dev/shm mount on the host."""

    path: str
    shm_path: str | None = None


# (namespace type: "network" | "ipc" | "pid", container id or name) -> SharedNamespace
NamespaceResolver = Callable[[str, str], SharedNamespace]


def _all_capabilities() -> list[str]:
    last = capslib.last_cap()
    return [n for n in capslib.NAMES if capslib.CAPS[n] <= last]


def _kernel_version() -> tuple[int, ...]:
    return _version(platform.release())


def _sysctl_exists(name: str) -> bool:
    return os.path.exists("/proc/sys/" + name.replace(".", "/"))


def device_from_path(path: str) -> Device:
    """The device node at ``path`` on the host (a symlink is followed, as dockerd does)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidArgument(f"error gathering device information while adding custom "
                              f'device "{path}": {exc.strerror.lower() if exc.strerror else exc}'
                              ) from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise InvalidArgument("not a device node")
    return Device(type=kind, path=path, major=os.major(st.st_rdev), minor=os.minor(st.st_rdev),
                  file_mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)


def devices_from_path(path_on_host: str) -> list[Device]:
    """moby's DevicesFromPath: the node, or every node under a directory.

    Paths are those on the host; the caller renames them into the container.
    """
    try:
        return [device_from_path(path_on_host)]
    except InvalidArgument as exc:
        if str(exc) != "not a device node":
            raise
    found: list[Device] = []
    if os.path.isdir(path_on_host):
        for dirpath, dirs, files in os.walk(path_on_host):
            dirs.sort()
            for name in sorted(files):
                try:
                    found.append(device_from_path(os.path.join(dirpath, name)))
                except InvalidArgument:
                    continue
    if not found:
        raise InvalidArgument("error gathering device information while adding custom device "
                              f'"{path_on_host}": not a device node')
    return found


_SKIPPED_DEV_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices(root: str = "/dev") -> list[Device]:
    """Every device node under the host's /dev, for ``--privileged``, in containerd's
    order and with its exceptions (no console, no pts/shm/mqueue trees, no FIFOs,
    no symlinks)."""
    out: list[Device] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIPPED_DEV_DIRS:
                out += host_devices(entry.path)
            continue
        if entry.name == "console" or entry.is_symlink():
            continue
        try:
            out.append(device_from_path(entry.path))
        except InvalidArgument:
            continue
    return out


def block_device_numbers(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidArgument(f"stat {path}: {(exc.strerror or str(exc)).lower()}") from None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


@dataclass(slots=True)
class SpecOptions:
    """The daemon's side of the spec: its settings and its view of the host."""

    cgroup_parent: str = DEFAULT_CGROUP_PARENT
    cgroup_version: int = 1                 # 1 (or hybrid) or 2
    default_shm_size: int = model.DEFAULT_SHM_SIZE
    default_ulimits: list[Ulimit] = field(default_factory=list)
    seccomp_profile: str | None = None      # None: ketch's default; "unconfined"; or JSON text
    no_new_privileges: bool = False         # the daemon's --no-new-privileges
    init: bool = False                      # the daemon's --init
    init_path: str | None = None            # the init binary on the host (tini-static)
    ncpu: int = field(default_factory=lambda: os.cpu_count() or 1)
    recursive_readonly: bool = True         # runtime and kernel (5.12+) can do "rro"
    running_in_userns: bool = False
    arch: str = field(default_factory=platform.machine)
    kernel_version: tuple[int, ...] = field(default_factory=_kernel_version)
    all_capabilities: Callable[[], list[str]] = _all_capabilities
    host_devices: Callable[[], list[Device]] = host_devices
    devices_from_path: Callable[[str], list[Device]] = devices_from_path
    block_device_numbers: Callable[[str], tuple[int, int]] = block_device_numbers
    sysctl_exists: Callable[[str], bool] = _sysctl_exists


# --- pieces dockerd computes at create ---------------------------------------------

def merge_image_config(config: ContainerConfig, image: ImageConfig | None) -> None:
    """moby's merge + mergeAndVerifyConfig: the image's defaults under the user's, in place."""
    if image is not None:
        if not config.user:
            config.user = image.user
        if not config.exposed_ports:
            config.exposed_ports = dict(image.exposed_ports) if image.exposed_ports else None
        else:
            for port in image.exposed_ports:
                config.exposed_ports.setdefault(port, {})
        if not config.env:
            config.env = list(image.env) if image.env else None
        else:
            keys = {e.partition("=")[0] for e in config.env}
            config.env += [e for e in image.env if e.partition("=")[0] not in keys]
        labels = dict(config.labels or {})
        for k, v in image.labels.items():
            labels.setdefault(k, v)
        config.labels = labels
        if not config.entrypoint:
            if not config.cmd:
                config.cmd = list(image.cmd) if image.cmd is not None else None
            if config.entrypoint is None:
                config.entrypoint = list(image.entrypoint) if image.entrypoint is not None else None
        if image.healthcheck is not None:
            if config.healthcheck is None:
                config.healthcheck = copy.deepcopy(image.healthcheck)
            else:
                h, ih = config.healthcheck, image.healthcheck
                h.test = h.test or ih.test
                h.interval = h.interval or ih.interval
                h.timeout = h.timeout or ih.timeout
                h.start_period = h.start_period or ih.start_period
                h.start_interval = h.start_interval or ih.start_interval
                h.retries = h.retries or ih.retries
        if not config.working_dir:
            config.working_dir = image.working_dir
        if not config.volumes:
            config.volumes = dict(image.volumes) if image.volumes else None
        else:
            config.volumes.update(image.volumes)
        if not config.stop_signal:
            config.stop_signal = image.stop_signal
    if config.entrypoint == [""]:
        config.entrypoint = None
    if not config.entrypoint and not config.cmd:
        raise InvalidArgument("No command specified")


def entrypoint_and_args(config: ContainerConfig) -> tuple[str, list[str]]:
    """The container's Path and Args, from a merged config."""
    if config.entrypoint:
        return config.entrypoint[0], [*config.entrypoint[1:], *(config.cmd or [])]
    if not config.cmd:
        raise InvalidArgument("No command specified")
    return config.cmd[0], list(config.cmd[1:])


def default_hostname(container_id: str, config: ContainerConfig, host_config: HostConfig,
                     host_hostname: str | None = None, *,
                     network_container_hostname: str | None = None) -> None:
    """Config.Hostname as dockerd sets it: the host's name with the host's network,
    the other container's with ``--network container:``, else the id's first 12."""
    if network_container_hostname is not None and host_config.network_mode.startswith(
            "container:"):
        config.hostname = network_container_hostname
        return
    if config.hostname:
        return
    if host_config.network_mode == "host":
        config.hostname = host_hostname if host_hostname is not None else platform.node()
    else:
        config.hostname = container_id[:12]


def replace_or_append_env(defaults: list[str], overrides: Iterable[str]) -> list[str]:
    """moby's ReplaceOrAppendEnvValues: an override replaces the default of the same
    name in place, a bare ``NAME`` removes it, anything else is appended."""
    env = list(defaults)
    index = {e.partition("=")[0]: i for i, e in enumerate(env)}
    removed: set[int] = set()
    for value in overrides:
        key, sep, _ = value.partition("=")
        if not sep:
            if value in index:
                removed.add(index[value])
            continue
        if key in index:
            env[index[key]] = value
            removed.discard(index[key])
        else:
            env.append(value)
    return [e for i, e in enumerate(env) if i not in removed]


def container_env(config: ContainerConfig, linked_env: Iterable[str] = ()) -> list[str]:
    """CreateDaemonEnvironment: PATH, HOSTNAME, TERM with a tty, links, then Config.Env."""
    base = [f"PATH={DEFAULT_PATH_ENV}", f"HOSTNAME={config.hostname}"]
    if config.tty:
        base.append("TERM=xterm")
    base += list(linked_env)
    return replace_or_append_env(base, config.env or [])


# --- capabilities ----------------------------------------------------------------

def tweak_capabilities(adds: list[str], drops: list[str], privileged: bool,
                       all_caps: list[str]) -> list[str]:
    """moby's TweakCapabilities over the 14 defaults."""
    if privileged:
        return list(all_caps)
    if not adds and not drops:
        return list(DEFAULT_CAPABILITIES)
    cap_drop = normalize_capabilities(drops, all_caps)
    cap_add = normalize_capabilities(adds, all_caps)
    if "ALL" in cap_add:
        return [c for c in all_caps if c not in cap_drop]
    if "ALL" in cap_drop:
        return list(cap_add)
    return [c for c in DEFAULT_CAPABILITIES if c not in cap_drop] + cap_add


# --- security options -------------------------------------------------------------

@dataclass(slots=True)
class SecurityOptions:
    no_new_privileges: bool = False
    seccomp_profile: str = ""      # "" (daemon's), "unconfined", "builtin", or JSON


def parse_security_opts(opts: list[str] | None, daemon_no_new_privileges: bool = False
                        ) -> SecurityOptions:
    """moby's parseSecurityOpt, with AppArmor and SELinux refused: this host has neither.

    ``label=disable`` and ``apparmor=unconfined`` ask for what the host already
    is, so they are accepted (dockerd itself adds ``label=disable`` for
    --privileged and host PID/IPC).
    """
    out = SecurityOptions(no_new_privileges=daemon_no_new_privileges)
    for opt in opts or []:
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "disable":
            continue
        if "=" in opt:
            k, _, v = opt.partition("=")
        elif ":" in opt:
            k, _, v = opt.partition(":")
        else:
            raise InvalidArgument(f"invalid --security-opt 1: {json.dumps(opt)}")
        if k == "label":
            if v != "disable":
                raise NotSupported(f"SELinux label {v!r}: SELinux is not supported on this host")
        elif k == "apparmor":
            if v != "unconfined":
                raise NotSupported(f"AppArmor profile {v!r}: AppArmor is not supported on "
                                   "this host")
        elif k == "seccomp":
            out.seccomp_profile = v
        elif k == "no-new-privileges":
            b = _parse_bool(v)
            if b is None:
                raise InvalidArgument(f"invalid --security-opt 2: {json.dumps(opt)}")
            out.no_new_privileges = b
        else:
            raise InvalidArgument(f"invalid --security-opt 2: {json.dumps(opt)}")
    return out


def _parse_bool(v: str) -> bool | None:
    """Go's strconv.ParseBool."""
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


# --- seccomp ---------------------------------------------------------------------

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "i386": "386", "i686": "386", "x86": "386", "armv7l": "arm", "armv6l": "arm",
           "arm": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
           "mips64": "mips64", "mips64el": "mips64le", "loongarch64": "loong64"}
_NATIVE_SCMP = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "386": "SCMP_ARCH_X86",
                "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE",
                "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64",
                "mips64": "SCMP_ARCH_MIPS64", "mips64le": "SCMP_ARCH_MIPSEL64",
                "loong64": "SCMP_ARCH_LOONGARCH64"}


def _version(text: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not m:
        raise InvalidArgument(f"invalid kernel version: {text!r}")
    return tuple(int(g) for g in m.groups() if g is not None)


def docker_seccomp_profile(text: str, bounding: list[str], arch: str,
                           kernel: tuple[int, ...]) -> Seccomp:
    """A profile in Docker's format (``seccomp=profile.json``) for this container:
    rules kept or dropped by their ``includes``/``excludes`` (capabilities of the
    bounding set, architecture, minimum kernel), as moby's setupSeccomp."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
    except ValueError as exc:
        raise InvalidArgument(f"Decoding seccomp profile failed: {exc}") from None
    goarch = _GOARCH.get(arch.lower(), arch.lower())
    if data.get("architectures") and data.get("archMap"):
        raise InvalidArgument("both 'architectures' and 'archMap' are specified in the seccomp "
                              "profile, use either 'architectures' or 'archMap'")
    arches = list(data.get("architectures") or [])
    for entry in data.get("archMap") or []:
        if entry.get("architecture") == _NATIVE_SCMP.get(goarch):
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
            break
    caps = set(bounding)

    def kernel_at_least(v: str) -> bool:
        return kernel >= _version(v)

    rules: list[SyscallRule] = []
    for call in data.get("syscalls") or []:
        names = list(call.get("names") or [])
        if call.get("name"):
            if names:
                raise InvalidArgument("both 'name' and 'names' are specified in the seccomp "
                                      "profile, use either 'name' or 'names'")
            names = [call["name"]]
        excl, inc = call.get("excludes") or {}, call.get("includes") or {}
        if goarch in (excl.get("arches") or []):
            continue
        if any(c in caps for c in excl.get("caps") or []):
            continue
        if excl.get("minKernel") and kernel_at_least(excl["minKernel"]):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if any(c not in caps for c in inc.get("caps") or []):
            continue
        if inc.get("minKernel") and not kernel_at_least(inc["minKernel"]):
            continue
        rules.append(SyscallRule(
            names=names, action=str(call.get("action", "")), errno_ret=call.get("errnoRet"),
            args=[ArgCmp(index=int(a.get("index", 0)), value=int(a.get("value", 0)),
                         value_two=int(a.get("valueTwo", 0)), op=str(a.get("op", "")))
                  for a in call.get("args") or []]))
    return Seccomp(default_action=str(data.get("defaultAction", "")),
                   default_errno_ret=data.get("defaultErrnoRet"), architectures=arches,
                   flags=list(data.get("flags") or []), listener_path=data.get("listenerPath"),
                   listener_metadata=data.get("listenerMetadata"), syscalls=rules)


def _seccomp(profile: str, privileged: bool, opts: SpecOptions, bounding: list[str]
             ) -> Seccomp | None:
    """WithSeccomp: the container's choice, else the daemon's, else ketch's default."""
    if profile == "unconfined" or privileged:
        return None
    if profile == "builtin":
        return default_profile(set(bounding), opts.arch)
    if profile:
        return docker_seccomp_profile(profile, bounding, opts.arch, opts.kernel_version)
    if opts.seccomp_profile == "unconfined":
        return None
    if opts.seccomp_profile:
        return docker_seccomp_profile(opts.seccomp_profile, bounding, opts.arch,
                                      opts.kernel_version)
    return default_profile(set(bounding), opts.arch)


# --- devices ---------------------------------------------------------------------

_CGROUP_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def parse_device_cgroup_rule(rule: str) -> DeviceRule:
    """``c 1:3 rwm`` / ``b 8:* r`` -> an allow rule, as moby's AppendDevicePermissionsFromCgroupRules."""
    m = _CGROUP_RULE.match(rule)
    if not m:
        raise InvalidArgument(f"invalid device cgroup rule format: '{rule}'")
    kind, major, minor, access = m.groups()
    return DeviceRule(allow=True, type=kind, major=None if major == "*" else int(major),
                      minor=None if minor == "*" else int(minor), access=access)


def _check_device_mode(mode: str) -> None:
    if not mode or len(mode) > 3 or any(ch not in "rwm" for ch in mode):
        raise InvalidArgument(f"invalid device mode: {mode}")


def _devices(hc: HostConfig, opts: SpecOptions) -> tuple[list[Device], list[DeviceRule]]:
    """WithDevices: the nodes to create and the cgroup rules to allow them."""
    devs: list[Device] = []
    if hc.privileged:
        devs = list(opts.host_devices())
        for dm in hc.devices or []:
            if dm.path_on_host == dm.path_in_container:
                continue            # already there: privileged gets all of /dev
            devs += _renamed(opts.devices_from_path(dm.path_on_host), dm.path_on_host,
                             dm.path_in_container)
        return devs, [DeviceRule(allow=True, access="rwm")]
    rules = copy.deepcopy(DOCKER_DEVICE_RULES)
    for dm in hc.devices or []:
        perms = dm.cgroup_permissions or "rwm"
        _check_device_mode(perms)
        for d in _renamed(opts.devices_from_path(dm.path_on_host), dm.path_on_host,
                          dm.path_in_container or dm.path_on_host):
            devs.append(d)
            rules.append(DeviceRule(allow=True, type=d.type, major=d.major, minor=d.minor,
                                    access=perms))
    rules += [parse_device_cgroup_rule(r) for r in hc.device_cgroup_rules or []]
    return devs, rules


def _check_device_requests(hc: HostConfig) -> None:
    """``--gpus`` and other driver requests: ketch has no device drivers, so every
    request is refused as dockerd refuses one no driver can serve (HTTP 400)."""
    for req in hc.device_requests or []:
        caps = "[" + " ".join("[" + " ".join(c) + "]" for c in req.capabilities or []) + "]"
        raise InvalidArgument(f'could not select device driver "{req.driver}" with '
                              f"capabilities: {caps}")


def _renamed(devs: list[Device], host_path: str, container_path: str) -> list[Device]:
    out = []
    for d in devs:
        d = copy.copy(d)
        if d.path == host_path or not d.path.startswith(host_path.rstrip("/") + "/"):
            d.path = container_path
        else:
            d.path = container_path.rstrip("/") + d.path[len(host_path.rstrip("/")):]
        out.append(d)
    return out


# --- resources -------------------------------------------------------------------

def _resources(hc: HostConfig, opts: SpecOptions) -> Resources:
    """WithResources: Docker's fields in the OCI shape (0 and None mean "not set")."""
    memory = Memory(
        limit=hc.memory if hc.memory > 0 else None,
        reservation=hc.memory_reservation if hc.memory_reservation > 0 else None,
        # MemorySwap -1 is "unlimited swap": no limit written at all.
        swap=hc.memory_swap if hc.memory_swap > 0 else None,
        swappiness=hc.memory_swappiness if hc.memory_swappiness is not None
        and hc.memory_swappiness >= 0 else None,
        disable_oom_killer=hc.oom_kill_disable,
        kernel_tcp=hc.kernel_memory_tcp or None,
    )
    if hc.cpu_shares < 0:
        raise InvalidArgument("shares: invalid argument")
    if hc.nano_cpus < 0 or hc.nano_cpus > opts.ncpu * 10**9:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {opts.ncpu}.00, as there are "
                              f"only {opts.ncpu} CPUs available")
    cpu = CPU(shares=hc.cpu_shares or None, cpus=hc.cpuset_cpus or None,
              mems=hc.cpuset_mems or None)
    if hc.nano_cpus > 0:
        cpu.period = CPU_PERIOD_FOR_NANO_CPUS
        cpu.quota = hc.nano_cpus * CPU_PERIOD_FOR_NANO_CPUS // 10**9
    if hc.cpu_period:
        cpu.period = hc.cpu_period
    if hc.cpu_quota:
        cpu.quota = hc.cpu_quota
    cpu.realtime_period = hc.cpu_realtime_period or None
    cpu.realtime_runtime = hc.cpu_realtime_runtime or None

    def throttle(items: list[model.ThrottleDevice] | None) -> list[ThrottleDevice]:
        out = []
        for t in items or []:
            major, minor = opts.block_device_numbers(t.path)
            out.append(ThrottleDevice(major=major, minor=minor, rate=t.rate))
        return out

    weights = []
    for wd in hc.blkio_weight_device or []:
        major, minor = opts.block_device_numbers(wd.path)
        weights.append(WeightDevice(major=major, minor=minor, weight=wd.weight))
    blkio = BlockIO(weight=hc.blkio_weight or None, weight_device=weights,
                    throttle_read_bps_device=throttle(hc.blkio_device_read_bps),
                    throttle_write_bps_device=throttle(hc.blkio_device_write_bps),
                    throttle_read_iops_device=throttle(hc.blkio_device_read_iops),
                    throttle_write_iops_device=throttle(hc.blkio_device_write_iops))
    pids = None
    if hc.pids_limit is not None:
        # 0 and negative values mean "unlimited"; runc needs -1 to lift a limit.
        pids = Pids(limit=hc.pids_limit if hc.pids_limit > 0 else -1)
    return Resources(
        memory=None if memory == Memory() else memory,
        cpu=None if cpu == CPU() else cpu,
        pids=pids,
        block_io=None if blkio == BlockIO() else blkio,
    )


def rlimits(ulimits: list[Ulimit] | None, defaults: list[Ulimit]) -> list[Rlimit]:
    """withRlimits: the container's ulimits, then the daemon's for the others.
    -1 is "unlimited" (RLIM_INFINITY, Go's uint64(-1))."""
    merged = list(ulimits or [])
    names = {u.name for u in merged}
    merged += [u for u in defaults if u.name not in names]
    out = []
    for u in merged:
        kind = "RLIMIT_" + u.name.upper()
        if kind not in RLIMITS:
            raise InvalidArgument(f"invalid ulimit type: {u.name}")
        soft = u.soft % 2**64
        hard = u.hard % 2**64
        if soft > hard:
            raise InvalidArgument("ulimit soft limit must be less than or equal to hard limit: "
                                  f"{u.soft} > {u.hard}")
        out.append(Rlimit(type=kind, hard=hard, soft=soft))
    return out


# --- mounts ------------------------------------------------------------------------

_TMPFS_DATA_KEYS = {"", "size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"}


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """moby's MergeTmpfsOptions: later options win (``exec`` over ``noexec``,
    the last ``size=``), one propagation mode, unknown data options refused."""
    seen_flags: set[int] = set()
    seen_data: set[str] = set()
    out: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        if option in PROPAGATION:
            key = -1
        elif option in MOUNT_FLAGS and MOUNT_FLAGS[option][1]:
            key = MOUNT_FLAGS[option][1]
        else:
            k, sep, _ = option.partition("=")
            if not sep or k not in _TMPFS_DATA_KEYS:
                shown = " ".join(json.dumps(p) for p in option.split("=", 1))
                raise InvalidArgument(f"invalid tmpfs option [{shown}]")
            if k not in seen_data:
                out.insert(0, option)
                seen_data.add(k)
            continue
        if key not in seen_flags:
            out.insert(0, option)
            seen_flags.add(key)
    return out


def _depth(path: str) -> int:
    return len(os.path.normpath(path).split("/"))


def _user_mounts(mounts: list[PlannedMount], opts: SpecOptions, linux: Linux) -> list[Mount]:
    out = []
    for m in sorted(mounts, key=lambda m: _depth(m.destination)):
        if m.type == "tmpfs":
            options = ["noexec", "nosuid", "nodev", "rprivate"]
            if m.data:
                options += m.data.split(",")
            out.append(Mount(destination=m.destination, type="tmpfs", source="tmpfs",
                             options=merge_tmpfs_options(options)))
            continue
        if m.type != "bind":
            raise InvalidArgument(f"unsupported mount type {m.type!r} for {m.destination}")
        if m.propagation and m.propagation not in PROPAGATION:
            raise InvalidArgument(f"invalid propagation mode: {m.propagation}")
        # A shared or slave bind needs a root that passes events on (moby sets the
        # root's propagation; it also checks the source's own, on the host).
        root = linux.rootfs_propagation
        if m.propagation in ("shared", "rshared") and root not in ("shared", "rshared"):
            linux.rootfs_propagation = "shared"
        elif m.propagation in ("slave", "rslave") and root not in (
                "shared", "rshared", "slave", "rslave"):
            linux.rootfs_propagation = "rslave"
        options = ["bind" if m.non_recursive else "rbind"]
        if not m.writable:
            rro = opts.recursive_readonly and not m.read_only_non_recursive
            options.append("rro" if rro else "ro")
        if m.propagation:
            options.append(m.propagation)
        out.append(Mount(destination=m.destination, type="bind", source=m.source,
                         options=options))
    return out


def _clear_ro(m: Mount) -> None:
    m.options = [o for o in m.options if o != "ro"]


# --- namespaces --------------------------------------------------------------------

def _is_container(mode: str) -> str | None:
    kind, sep, ref = mode.partition(":")
    return ref if kind == "container" and sep and ref else None


def _set_ns(nss: list[Namespace], ns: Namespace) -> None:
    for i, n in enumerate(nss):
        if n.type == ns.type:
            nss[i] = ns
            return
    nss.append(ns)


def _drop_ns(nss: list[Namespace], kind: str) -> None:
    nss[:] = [n for n in nss if n.type != kind]


def _join(resolve: NamespaceResolver | None, kind: str, ref: str) -> SharedNamespace:
    if resolve is None:
        raise InvalidArgument(f"cannot join the {kind} namespace of container {ref}: "
                              "no resolver given")
    return resolve(kind, ref)


# runc's list of namespaced sysctls outside net.*
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def check_sysctls(sysctls: dict[str, str], namespaces: list[Namespace]) -> None:
    """Only sysctls of a namespace the container has its own of (runc's rule and words)."""
    own = {n.type for n in namespaces if n.path is None}
    joined = {n.type for n in namespaces}
    for key in sysctls:
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if "ipc" in joined:
                continue
            raise InvalidArgument(f'sysctl "{key}" is not allowed in the hosts ipc namespace')
        if key.startswith("net."):
            if "network" in joined:
                continue
            raise InvalidArgument(f'sysctl "{key}" not allowed in host network namespace')
        if "uts" in own or "uts" in joined:
            if key == "kernel.domainname":
                continue
            if key == "kernel.hostname":
                raise InvalidArgument('sysctl "kernel.hostname" is not allowed; the hostname '
                                      "should be set via the hostname field")
        raise InvalidArgument(f'sysctl "{key}" is not in a separate kernel namespace')


# --- the spec ----------------------------------------------------------------------

def make_spec(container_id: str, config: ContainerConfig, host_config: HostConfig,
              image_config: ImageConfig | None, rootfs_path: str, *,
              options: SpecOptions | None = None,
              mounts: Iterable[PlannedMount] = (),
              resolve: NamespaceResolver | None = None,
              shm_path: str | None = None,
              linked_env: Iterable[str] = ()) -> Spec:
    """The OCI spec dockerd's createSpec would give runc for this container.

    ``config`` is the container's stored (already merged) config; pass
    ``image_config`` only for a config not merged yet: a copy is merged here.
    ``mounts`` are the planned binds and tmpfs mounts (volumes, binds,
    /etc/hosts...), ``HostConfig.Tmpfs`` is added here. ``resolve`` finds the
    namespaces of ``container:<id>`` modes; ``shm_path`` is the host side of
    this container's /dev/shm when its IPC is shareable.
    """
    opts = options or SpecOptions()
    hc = host_config
    if image_config is not None:
        config = copy.deepcopy(config)
        merge_image_config(config, image_config)
    path, args = entrypoint_and_args(config)
    hostname = config.hostname or container_id[:12]
    if config.hostname != hostname:
        config = copy.copy(config)
        config.hostname = hostname
    secopts = parse_security_opts(hc.security_opt, opts.no_new_privileges)

    linux = Linux(namespaces=[Namespace("mount"), Namespace("network"), Namespace("uts"),
                              Namespace("pid"), Namespace("ipc")],
                  masked_paths=list(model.DEFAULT_MASKED_PATHS),
                  readonly_paths=list(model.DEFAULT_READONLY_PATHS))
    spec = Spec(root=Root(path=rootfs_path, readonly=hc.readonly_rootfs), hostname=hostname,
                mounts=default_mounts(), linux=linux)

    # withCommonOptions: args (with the init in front), cwd, env, tty, hostname, sysctls
    argv = [path, *args]
    pid_private = hc.pid_mode != "host" and _is_container(hc.pid_mode) is None
    want_init = hc.init if hc.init is not None else opts.init
    if pid_private and want_init:
        if not opts.init_path:
            raise NotSupported("--init is not supported: no init binary (docker-init or "
                               "tini-static) is configured on this host")
        argv = [INIT_PATH_IN_CONTAINER, "--", *argv]
        spec.mounts.append(Mount(destination=INIT_PATH_IN_CONTAINER, type="bind",
                                 source=opts.init_path, options=["bind", "ro"]))
    process = Process(terminal=config.tty, args=argv, cwd=config.working_dir or "/",
                      env=container_env(config, linked_env))
    spec.process = process
    if config.domainname:
        linux.sysctl["kernel.domainname"] = config.domainname
    net_private = hc.network_mode != "host" and _is_container(hc.network_mode) is None
    if net_private:
        if not opts.running_in_userns and opts.sysctl_exists("net.ipv4.ping_group_range"):
            linux.sysctl["net.ipv4.ping_group_range"] = "0 2147483647"
        if opts.sysctl_exists("net.ipv4.ip_unprivileged_port_start"):
            linux.sysctl["net.ipv4.ip_unprivileged_port_start"] = "0"

    # withCgroups, WithResources, WithSysctls, WithDevices, withRlimits
    parent = hc.cgroup_parent or opts.cgroup_parent
    linux.cgroups_path = os.path.join(parent, container_id)
    linux.resources = _resources(hc, opts)
    linux.sysctl.update(hc.sysctls or {})
    linux.devices, linux.resources.devices = _devices(hc, opts)
    _check_device_requests(hc)
    process.rlimits = rlimits(hc.ulimits, opts.default_ulimits)

    # WithNamespaces
    nss = linux.namespaces
    if not config.network_disabled:
        ref = _is_container(hc.network_mode)
        if ref is not None:
            _set_ns(nss, Namespace("network", _join(resolve, "network", ref).path))
        elif hc.network_mode == "host":
            _drop_ns(nss, "network")
        else:
            _set_ns(nss, Namespace("network"))
    ipc = hc.ipc_mode or "private"
    ipc_shm: str | None = None
    ref = _is_container(ipc)
    if ref is not None:
        shared = _join(resolve, "ipc", ref)
        _set_ns(nss, Namespace("ipc", shared.path))
        if shared.shm_path is None:
            raise InvalidArgument(f"can't join IPC of container {ref}: non-shareable IPC "
                                  "(hint: use IpcMode:shareable for the donor container)")
        ipc_shm = shared.shm_path
    elif ipc == "host":
        _drop_ns(nss, "ipc")
        ipc_shm = "/dev/shm"
    elif ipc in ("private", "shareable", "none"):
        _set_ns(nss, Namespace("ipc"))
        if ipc == "shareable":
            if shm_path is None:
                raise InvalidArgument("a shareable IPC namespace needs its /dev/shm on the host "
                                      "(shm_path)")
            ipc_shm = shm_path
    else:
        raise InvalidArgument(f"invalid IPC mode: {ipc}")
    ref = _is_container(hc.pid_mode)
    if ref is not None:
        _set_ns(nss, Namespace("pid", _join(resolve, "pid", ref).path))
    elif hc.pid_mode == "host":
        _drop_ns(nss, "pid")
    elif hc.pid_mode == "":
        _set_ns(nss, Namespace("pid"))
    else:
        raise InvalidArgument(f"invalid PID mode: {hc.pid_mode}")
    if hc.uts_mode == "host":
        _drop_ns(nss, "uts")
        spec.hostname = None
    elif hc.uts_mode != "":
        raise InvalidArgument(f"invalid UTS mode: {hc.uts_mode}")
    cgroupns = hc.cgroupns_mode or ("private" if opts.cgroup_version == 2 else "host")
    if cgroupns not in ("private", "host"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {cgroupns}")
    if cgroupns == "private":
        _set_ns(nss, Namespace("cgroup"))
    check_sysctls(linux.sysctl, nss)

    # WithCapabilities, WithSeccomp
    caplist = tweak_capabilities(hc.cap_add or [], hc.cap_drop or [], hc.privileged,
                                 opts.all_capabilities())
    process.capabilities = Capabilities(bounding=list(caplist), effective=list(caplist),
                                        permitted=list(caplist))
    linux.seccomp = _seccomp(secopts.seccomp_profile, hc.privileged, opts, caplist)

    # withMounts
    planned = list(mounts)
    if ipc_shm is not None:
        planned.append(PlannedMount(destination="/dev/shm", source=ipc_shm))
    planned += [PlannedMount(destination=d, type="tmpfs", source="tmpfs", data=data)
                for d, data in (hc.tmpfs or {}).items()]
    user_dest = {m.destination for m in planned}
    defaults = []
    for m in spec.mounts:
        if m.destination in user_dest:
            continue
        if "/dev" in user_dest and m.destination.startswith("/dev/"):
            continue
        if m.destination == "/dev/shm":
            if ipc == "none":
                continue
            m.options.append(f"size={hc.shm_size or opts.default_shm_size}")
        defaults.append(m)
    spec.mounts = defaults + _user_mounts(planned, opts, linux)
    if hc.readonly_rootfs:
        for m in spec.mounts:
            if m.destination in ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"):
                continue
            if m.destination not in user_dest and "ro" not in m.options:
                m.options.append("ro")
    if hc.privileged:
        for m in spec.mounts:
            if m.destination == "/sys" or m.type == "cgroup":
                _clear_ro(m)
        linux.masked_paths = []
        linux.readonly_paths = []

    # WithOOMScore, annotations, WithUser, no-new-privileges, console size, paths
    process.oom_score_adj = hc.oom_score_adj
    spec.annotations = dict(hc.annotations or {})
    process.user = spec_user(rootfs_path, config.user, hc.group_add)
    process.no_new_privileges = secopts.no_new_privileges
    if config.tty and len(hc.console_size) == 2 and (hc.console_size[0] or hc.console_size[1]):
        process.console_size = Box(height=hc.console_size[0], width=hc.console_size[1])
    if hc.masked_paths is not None:
        linux.masked_paths = list(hc.masked_paths)
    if hc.readonly_paths is not None:
        linux.readonly_paths = list(hc.readonly_paths)
    return spec
