"""The config.json ``ketch-runc spec`` writes: a minimal, safe container.

Same content as the reference runtime's template (a shell on a terminal, a
read-only root, the usual pseudo-filesystems, a few capabilities, masked and
read-only /proc paths), so bundles made with either runtime behave alike.
"""

from __future__ import annotations

import os

from ketch.linux.cgroups.resources import DeviceRule, Resources
from ketch.runtime.spec import (
    Capabilities,
    IDMapping,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Spec,
    User,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_mounts(rootless: bool = False) -> list[Mount]:
    pts_opts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        pts_opts.append("gid=5")
    sys_mount = (Mount(destination="/sys", type="none", source="/sys",
                       options=["rbind", "nosuid", "noexec", "nodev", "ro"]) if rootless else
                 Mount(destination="/sys", type="sysfs", source="sysfs",
                       options=["nosuid", "noexec", "nodev", "ro"]))
    return [
        Mount(destination="/proc", type="proc", source="proc"),
        Mount(destination="/dev", type="tmpfs", source="tmpfs",
              options=["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount(destination="/dev/pts", type="devpts", source="devpts", options=pts_opts),
        Mount(destination="/dev/shm", type="tmpfs", source="shm",
              options=["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        Mount(destination="/dev/mqueue", type="mqueue", source="mqueue",
              options=["nosuid", "noexec", "nodev"]),
        sys_mount,
        Mount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup",
              options=["nosuid", "noexec", "nodev", "relatime", "ro"]),
    ]


def default_spec(rootless: bool = False) -> Spec:
    caps = list(DEFAULT_CAPS)
    linux = Linux(
        namespaces=[Namespace("pid"), Namespace("network"), Namespace("ipc"),
                    Namespace("uts"), Namespace("mount")],
        masked_paths=list(MASKED_PATHS), readonly_paths=list(READONLY_PATHS),
        resources=Resources(devices=[DeviceRule(allow=False, access="rwm")]),
    )
    if rootless:
        linux.namespaces = [ns for ns in linux.namespaces if ns.type != "network"]
        linux.namespaces.append(Namespace("user"))
        linux.uid_mappings = [IDMapping(container_id=0, host_id=os.getuid(), size=1)]
        linux.gid_mappings = [IDMapping(container_id=0, host_id=os.getgid(), size=1)]
        linux.resources = None
    return Spec(
        process=Process(
            terminal=True, user=User(uid=0, gid=0), args=["sh"],
            env=[f"PATH={DEFAULT_PATH}", "TERM=xterm"], cwd="/",
            capabilities=Capabilities(bounding=list(caps), effective=list(caps),
                                      permitted=list(caps), ambient=list(caps)),
            rlimits=[Rlimit(type="RLIMIT_NOFILE", hard=1024, soft=1024)],
            no_new_privileges=True),
        root=Root(path="rootfs", readonly=True),
        hostname="ketch",
        mounts=default_mounts(rootless),
        linux=linux,
    )
