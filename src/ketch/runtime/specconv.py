"""Validate an OCI spec and turn it into the plan the init process follows.

As runc's specconv does, tables drive the conversion (namespace names, mount
options), and the same tables say what is supported. Every error names the bad
input, in runc's words where runc has them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ketch.errors import InvalidArgument, NotSupported
from ketch.linux import syscalls as sc
from ketch.linux.cgroups.resources import DeviceRule
from ketch.runtime.spec import Device, IDMapping, Mount, Spec

# OCI namespace type -> (clone flag, name under /proc/<pid>/ns/)
NAMESPACES: dict[str, tuple[int, str]] = {
    "pid": (sc.CLONE_NEWPID, "pid"),
    "network": (sc.CLONE_NEWNET, "net"),
    "mount": (sc.CLONE_NEWNS, "mnt"),
    "ipc": (sc.CLONE_NEWIPC, "ipc"),
    "uts": (sc.CLONE_NEWUTS, "uts"),
    "user": (sc.CLONE_NEWUSER, "user"),
    "cgroup": (sc.CLONE_NEWCGROUP, "cgroup"),
    "time": (sc.CLONE_NEWTIME, "time"),
}

# The order namespaces are joined by path: user first, so that the others are
# joined with the capabilities that user namespace gives; mount last but one,
# since it changes how later paths resolve.
JOIN_ORDER = ["user", "ipc", "uts", "network", "cgroup", "time", "pid", "mount"]

# mount option -> (clears the flag?, flag)
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "suid": (True, sc.MS_NOSUID),
    "nosuid": (False, sc.MS_NOSUID),
    "dev": (True, sc.MS_NODEV),
    "nodev": (False, sc.MS_NODEV),
    "exec": (True, sc.MS_NOEXEC),
    "noexec": (False, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS),
    "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC),
    "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK),
    "nomand": (True, sc.MS_MANDLOCK),
    "atime": (True, sc.MS_NOATIME),
    "noatime": (False, sc.MS_NOATIME),
    "diratime": (True, sc.MS_NODIRATIME),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "relatime": (False, sc.MS_RELATIME),
    "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "lazytime": (False, sc.MS_LAZYTIME),
    "nolazytime": (True, sc.MS_LAZYTIME),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "symfollow": (True, sc.MS_NOSYMFOLLOW),
    "bind": (False, sc.MS_BIND),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "silent": (False, sc.MS_SILENT),
    "loud": (True, sc.MS_SILENT),
}

PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# Recursive mount attributes, applied with mount_setattr(AT_RECURSIVE):
# option -> (clears the attribute?, MOUNT_ATTR_* bit)
RECURSIVE_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, 0x1),
    "rrw": (True, 0x1),
    "rnosuid": (False, 0x2),
    "rsuid": (True, 0x2),
    "rnodev": (False, 0x4),
    "rdev": (True, 0x4),
    "rnoexec": (False, 0x8),
    "rexec": (True, 0x8),
    "rnoatime": (False, 0x10),
    "rnodiratime": (False, 0x80),
    "rdiratime": (True, 0x80),
    "rstrictatime": (False, 0x20),
    "rnosymfollow": (False, 0x200000),
    "rsymfollow": (True, 0x200000),
}

# Options ketch handles itself rather than passing to the kernel.
EXTENSIONS = {"tmpcopyup"}
UNSUPPORTED_OPTIONS = {"idmap", "ridmap"}

# Devices every container gets when /dev is not bind-mounted from the host.
DEFAULT_DEVICES = [
    Device(type="c", path="/dev/null", major=1, minor=3, file_mode=0o666, uid=0, gid=0),
    Device(type="c", path="/dev/zero", major=1, minor=5, file_mode=0o666, uid=0, gid=0),
    Device(type="c", path="/dev/full", major=1, minor=7, file_mode=0o666, uid=0, gid=0),
    Device(type="c", path="/dev/tty", major=5, minor=0, file_mode=0o666, uid=0, gid=0),
    Device(type="c", path="/dev/random", major=1, minor=8, file_mode=0o666, uid=0, gid=0),
    Device(type="c", path="/dev/urandom", major=1, minor=9, file_mode=0o666, uid=0, gid=0),
]

def _allow(type_: str, major: int | None, minor: int | None, access: str = "rwm") -> DeviceRule:
    return DeviceRule(allow=True, type=type_, major=major, minor=minor, access=access)


# Cgroup rules every container gets after its own, as runc adds them: mknod of
# anything (a node is useless without read/write permission), the default
# devices, ptys (136:*, ptmx 5:2) and tun/tap (10:200, for VPNs). Not the
# console (5:1): a container must not open the host's console.
DEFAULT_ALLOWED_DEVICES = [
    _allow("c", None, None, "m"), _allow("b", None, None, "m"),
    _allow("c", 1, 3), _allow("c", 1, 5), _allow("c", 1, 7), _allow("c", 1, 8),
    _allow("c", 1, 9), _allow("c", 5, 0), _allow("c", 5, 2), _allow("c", 136, None),
    _allow("c", 10, 200),
]


def device_rules(spec: Spec) -> list[DeviceRule]:
    """The devices cgroup rules: the spec's, then the defaults, as runc orders them.

    ``linux.devices`` only creates nodes; access to them needs a rule, as with
    runc. A spec without rules leaves the cgroup's devices as they are.
    """
    linux = spec.linux
    if linux is None or linux.resources is None or not linux.resources.devices:
        return []
    return list(linux.resources.devices) + DEFAULT_ALLOWED_DEVICES


RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

PROPAGATION_ROOT = {"private", "rprivate", "shared", "rshared", "slave", "rslave",
                    "unbindable", "runbindable"}


@dataclass(slots=True)
class MountPlan:
    """One mount, with its options sorted into flags, propagation and data."""

    source: str
    destination: str
    fstype: str
    flags: int = 0
    clear_flags: int = 0
    propagation: list[int] = field(default_factory=list)
    data: str = ""
    attr_set: int = 0
    attr_clr: int = 0
    extensions: set[str] = field(default_factory=set)

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


@dataclass(slots=True)
class Plan:
    """What the init process must do, already validated."""

    rootfs: str
    readonly_root: bool
    new_namespaces: int                        # clone flags to create
    join_namespaces: list[tuple[str, str]]     # (OCI type, path), in JOIN_ORDER
    mounts: list[MountPlan]
    setup_dev: bool                            # /dev is not a bind mount: make devices
    devices: list[Device]
    uid_mappings: list[IDMapping]
    gid_mappings: list[IDMapping]
    root_propagation: int
    rlimits: list[tuple[int, int, int]]        # (resource, soft, hard)

    def has_new(self, ns: str) -> bool:
        return bool(self.new_namespaces & NAMESPACES[ns][0])

    def has_ns(self, ns: str) -> bool:
        return self.has_new(ns) or any(t == ns for t, _ in self.join_namespaces)


def parse_mount(m: Mount, rootless: bool = False) -> MountPlan:
    if not m.destination:
        raise InvalidArgument(f"invalid mount {m.source or ''!r}: mount destination is empty")
    if not os.path.isabs(m.destination):
        raise InvalidArgument(f"mount destination {m.destination} is not absolute")
    if m.uid_mappings or m.gid_mappings:
        raise NotSupported(f"mount {m.destination}: idmapped mounts are not supported")
    plan = MountPlan(source=m.source or "", destination=os.path.normpath(m.destination),
                     fstype=m.type or "")
    data: list[str] = []
    for opt in m.options:
        if opt in MOUNT_FLAGS:
            clear, flag = MOUNT_FLAGS[opt]
            if clear:
                plan.flags &= ~flag
                plan.clear_flags |= flag
            else:
                plan.flags |= flag
        elif opt in PROPAGATION:
            plan.propagation.append(PROPAGATION[opt])
        elif opt in RECURSIVE_ATTRS:
            clear, bit = RECURSIVE_ATTRS[opt]
            if clear:
                plan.attr_clr |= bit
            else:
                plan.attr_set |= bit
        elif opt in EXTENSIONS:
            plan.extensions.add(opt)
        elif opt in UNSUPPORTED_OPTIONS:
            raise NotSupported(f"mount {m.destination}: option {opt} is not supported")
        else:
            data.append(opt)
    if plan.fstype == "bind":
        plan.flags |= sc.MS_BIND
    plan.data = ",".join(data)
    if plan.is_bind:
        if not plan.source:
            raise InvalidArgument(f"invalid mount {m.destination}: bind mount source is empty")
        if not os.path.exists(plan.source):
            raise InvalidArgument(
                f"invalid mount {m.destination}: bind mount source {plan.source}: "
                "no such file or directory")
        plan.fstype = "bind"
    elif not plan.fstype:
        raise InvalidArgument(f"invalid mount {m.destination}: mount type is empty")
    return plan


def _namespaces(spec: Spec) -> tuple[int, list[tuple[str, str]]]:
    new = 0
    joins: dict[str, str] = {}
    seen: set[str] = set()
    for ns in spec.linux.namespaces if spec.linux else []:
        if ns.type not in NAMESPACES:
            raise InvalidArgument(f'namespace "{ns.type}" does not exist')
        if ns.type in seen:
            raise InvalidArgument(f"malformed spec file: duplicated ns {ns.type!r}")
        seen.add(ns.type)
        if ns.type == "time" and not os.path.exists("/proc/self/ns/time"):
            raise NotSupported("time namespaces are not supported by this kernel")
        if ns.path:
            if not os.path.exists(ns.path):
                raise InvalidArgument(f"namespace path {ns.path} ({ns.type}) does not exist")
            joins[ns.type] = ns.path
        else:
            new |= NAMESPACES[ns.type][0]
    ordered = [(t, joins[t]) for t in JOIN_ORDER if t in joins]
    return new, ordered


def convert(spec: Spec, bundle: str) -> Plan:
    """Check ``spec`` as runc would and build the plan; raises InvalidArgument."""
    if spec.process is None:
        raise InvalidArgument("process property must not be empty")
    if not spec.process.args:
        raise InvalidArgument("args must not be empty")
    if spec.root is None or not spec.root.path:
        raise InvalidArgument("root must be specified")
    if spec.process.cwd and not os.path.isabs(spec.process.cwd):
        raise InvalidArgument(f"cwd {spec.process.cwd!r} is not an absolute path")
    rootfs = spec.root.path
    if not os.path.isabs(rootfs):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.realpath(rootfs)
    if not os.path.isdir(rootfs):
        raise InvalidArgument(f"rootfs ({rootfs}) does not exist")
    new, joins = _namespaces(spec)
    has_mnt = bool(new & sc.CLONE_NEWNS) or any(t == "mount" for t, _ in joins)
    if not has_mnt:
        raise InvalidArgument("the mount namespace is required (namespace mount)")
    linux = spec.linux
    assert linux is not None
    has_user = bool(new & sc.CLONE_NEWUSER)
    if has_user and not (linux.uid_mappings and linux.gid_mappings):
        raise InvalidArgument("user namespaces enabled, but no user mapping found")
    if not has_user and not any(t == "user" for t, _ in joins) and (
            linux.uid_mappings or linux.gid_mappings):
        raise InvalidArgument("user namespaces not enabled in config, but uid/gid mappings "
                              "are present")
    if spec.hostname and not (new & sc.CLONE_NEWUTS):
        raise InvalidArgument("unable to set hostname without a private UTS namespace")
    if spec.domainname and not (new & sc.CLONE_NEWUTS):
        raise InvalidArgument("unable to set domainname without a private UTS namespace")
    for key in linux.sysctl:
        _check_sysctl(key, new | sum(NAMESPACES[t][0] for t, _ in joins))
    mounts = [parse_mount(m) for m in spec.mounts]
    setup_dev = not any(m.destination == "/dev" and m.is_bind for m in mounts)
    devices: list[Device] = []
    if setup_dev:
        explicit = {d.path for d in linux.devices}
        devices = [d for d in DEFAULT_DEVICES if d.path not in explicit]
    for d in linux.devices:
        if d.type not in ("c", "b", "u", "p"):
            raise InvalidArgument(f"{d.path}: invalid device type {d.type!r}")
        if not os.path.isabs(d.path) or not d.path.startswith("/dev/"):
            raise InvalidArgument(f"device path {d.path!r} must be under /dev")
        devices.append(d)
    prop = linux.rootfs_propagation or ""
    if prop and prop not in PROPAGATION_ROOT:
        raise InvalidArgument(f"invalid rootfsPropagation: {prop}")
    rlimits = []
    for r in spec.process.rlimits:
        if r.type not in RLIMITS:
            raise InvalidArgument(f"wrong rlimit value: {r.type}")
        rlimits.append((RLIMITS[r.type], r.soft, r.hard))
    if spec.process.apparmor_profile and not _apparmor_enabled():
        raise NotSupported("apparmor profile specified but AppArmor is not enabled on this host")
    if (spec.process.selinux_label or linux.mount_label) and not _selinux_enabled():
        raise NotSupported("SELinux label specified but SELinux is not enabled on this host")
    if linux.intel_rdt:
        raise NotSupported("intelRdt is not supported")
    return Plan(
        rootfs=rootfs,
        readonly_root=spec.root.readonly,
        new_namespaces=new,
        join_namespaces=joins,
        mounts=mounts,
        setup_dev=setup_dev,
        devices=devices,
        uid_mappings=linux.uid_mappings,
        gid_mappings=linux.gid_mappings,
        root_propagation=PROPAGATION.get(prop, sc.MS_SLAVE | sc.MS_REC),
        rlimits=rlimits,
    )


def _check_sysctl(key: str, ns_flags: int) -> None:
    """Only namespaced sysctls, and only with their namespace, as runc allows."""
    ipc = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
           "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
    if key in ipc or key.startswith("fs.mqueue."):
        if not ns_flags & sc.CLONE_NEWIPC:
            raise InvalidArgument(f"sysctl {key!r} is not allowed in the hosts ipc namespace")
        return
    if key.startswith("net."):
        if not ns_flags & sc.CLONE_NEWNET:
            raise InvalidArgument(f"sysctl {key!r} is not allowed in the hosts network namespace")
        return
    if key in ("kernel.domainname", "kernel.hostname"):
        if not ns_flags & sc.CLONE_NEWUTS:
            raise InvalidArgument(f"sysctl {key!r} is not allowed in the hosts uts namespace")
        return
    raise InvalidArgument(f"sysctl {key!r} is not in a separate kernel namespace")


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def _selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")
