"""The container's root filesystem: mounts, devices, pivot_root, masked paths.

Runs inside the init process, in its new mount namespace, in this order:

    prepare()   make / slave (or rootfsPropagation), bind the rootfs on itself,
                mount every spec mount under it, create /dev nodes and links
    pivot()     pivot_root into it (or MS_MOVE + chroot with --no-pivot)
    finalize()  read-only /dev, readonly paths, masked paths, read-only root

Every kernel call goes through the ``Syscalls`` seam, so unit tests record the
mounts instead of making them. Destinations are resolved inside the rootfs
(symlinks included) so a hostile image cannot make us mount over host paths.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from ketch.linux import syscalls as sc
from ketch.linux.securejoin import secure_join  # noqa: F401 - re-exported
from ketch.linux.syscalls import Syscalls
from ketch.runtime.spec import Device
from ketch.runtime.specconv import MountPlan, Plan

# statvfs f_flag bits that equal the MS_* flags a bind remount must keep: in a
# user namespace these are locked, and a remount that drops them fails EPERM.
_LOCKED = (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME
           | sc.MS_NODIRATIME | sc.MS_RELATIME)

_DEV_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

DEV_SYMLINKS = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
]


@dataclass
class Rootfs:
    plan: Plan
    sys: Syscalls
    in_userns: bool = False
    # controller (v1) or "" (v2) -> absolute cgroup dir of this container
    cgroup_paths: Mapping[str, str] = field(default_factory=dict)
    # controller -> mountpoint of its v1 hierarchy on the host
    cgroup_v1_mounts: Mapping[str, str] = field(default_factory=dict)
    cgroup_v2: bool = False
    _ro_dev: bool = False

    # -- prepare ----------------------------------------------------------
    def prepare(self) -> None:
        root = self.plan.rootfs
        self.sys.mount(None, "/", None, self.plan.root_propagation)
        self._parent_mount_private(root)
        self.sys.mount(root, root, "bind", sc.MS_BIND | sc.MS_REC)
        for m in self.plan.mounts:
            self.mount(m)
        if self.plan.setup_dev:
            self.create_devices(self.plan.devices)
            self.dev_symlinks()

    def _parent_mount_private(self, root: str) -> None:
        """pivot_root refuses a root whose parent mount is shared: make just that one private.

        Only matters with rootfsPropagation shared; mounts below keep theirs.
        """
        if not self.plan.root_propagation & sc.MS_SHARED:
            return
        from ketch.linux.mount import read_mountinfo
        parent = os.path.dirname(root.rstrip("/")) or "/"
        best = "/"
        for mi in read_mountinfo():
            mp = mi.mountpoint
            if (parent == mp or parent.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
        try:
            self.sys.mount(None, best, None, sc.MS_PRIVATE)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise

    def mount(self, m: MountPlan) -> None:
        root = self.plan.rootfs
        dest = secure_join(root, m.destination)
        if m.fstype == "cgroup" or m.fstype == "cgroup2":
            self._mount_cgroup(m, dest)
        elif m.is_bind:
            self._mount_bind(m, dest)
        else:
            _mkdirs(dest)
            flags = m.flags
            if m.destination == "/dev" and flags & sc.MS_RDONLY:
                # Devices are created after this mount; make it read-only at the end.
                flags &= ~sc.MS_RDONLY
                self._ro_dev = True
            if "tmpcopyup" in m.extensions and m.fstype == "tmpfs":
                self._tmpcopyup(m, dest, flags)
            else:
                try:
                    self.sys.mount(m.source or m.fstype, dest, m.fstype, flags, m.data or None)
                except OSError as exc:
                    if not self._fallback(m, dest, exc):
                        raise
            self._propagate(m, dest)
        if m.attr_set or m.attr_clr:
            self._setattr(m, dest)

    def _fallback(self, m: MountPlan, dest: str, exc: OSError) -> bool:
        """sysfs and mqueue cannot be mounted without their namespace: bind the host's."""
        if exc.errno != errno.EPERM or m.fstype not in ("sysfs", "mqueue"):
            return False
        host = "/sys" if m.fstype == "sysfs" else "/dev/mqueue"
        self.sys.mount(host, dest, "bind", sc.MS_BIND | sc.MS_REC)
        flags = (m.flags | sc.MS_BIND | sc.MS_REMOUNT | sc.MS_REC) | self._locked(dest)
        self.sys.mount(None, dest, None, flags)
        return True

    def _mount_bind(self, m: MountPlan, dest: str) -> None:
        if os.path.isdir(m.source):
            _mkdirs(dest)
        else:
            _touch(dest)
        self.sys.mount(m.source, dest, "bind", sc.MS_BIND | (m.flags & sc.MS_REC))
        extra = m.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra:
            flags = sc.MS_BIND | sc.MS_REMOUNT | (m.flags & ~sc.MS_REMOUNT)
            flags |= self._locked(dest) & ~m.clear_flags
            self.sys.mount(None, dest, None, flags)
        self._propagate(m, dest)

    def _locked(self, path: str) -> int:
        if not self.in_userns:
            return 0
        try:
            return os.statvfs(path).f_flag & _LOCKED
        except OSError:
            return 0

    def _propagate(self, m: MountPlan, dest: str) -> None:
        for prop in m.propagation:
            self.sys.mount(None, dest, None, prop)

    def _setattr(self, m: MountPlan, dest: str) -> None:
        from ketch.linux.mount import mount_setattr
        mount_setattr(dest, m.attr_set, m.attr_clr, recursive=True)

    def _tmpcopyup(self, m: MountPlan, dest: str, flags: int) -> None:
        """Mount a tmpfs holding a copy of what the image has at ``dest``."""
        import shutil
        import tempfile
        staging = tempfile.mkdtemp(prefix=".ketch-tmpcopyup-", dir=self.plan.rootfs)
        try:
            self.sys.mount(m.source or "tmpfs", staging, "tmpfs", flags, m.data or None)
            for name in os.listdir(dest):
                src, dst = os.path.join(dest, name), os.path.join(staging, name)
                if os.path.isdir(src) and not os.path.islink(src):
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    shutil.copy2(src, dst, follow_symlinks=False)
            shutil.copystat(dest, staging)
            self.sys.mount(staging, dest, None, sc.MS_MOVE)
        finally:
            os.rmdir(staging)

    def _mount_cgroup(self, m: MountPlan, dest: str) -> None:
        """cgroupfs inside the container: the container's own cgroups only."""
        _mkdirs(dest)
        flags = m.flags & ~sc.MS_BIND
        cgroupns = self.plan.has_ns("cgroup")
        if self.cgroup_v2:
            if cgroupns:
                self.sys.mount("cgroup2", dest, "cgroup2", flags, m.data or None)
            else:
                self._bind_ro(self.cgroup_paths[""], dest, flags)
            return
        # v1: a tmpfs holding one directory per hierarchy, as on the host.
        self.sys.mount("tmpfs", dest, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                       "mode=755")
        by_mountpoint: dict[str, list[str]] = {}
        for ctrl, mountpoint in self.cgroup_v1_mounts.items():
            by_mountpoint.setdefault(mountpoint, []).append(ctrl)
        for mountpoint, ctrls in sorted(by_mountpoint.items()):
            name = os.path.basename(mountpoint)
            sub = os.path.join(dest, name)
            _mkdirs(sub)
            if cgroupns:
                opts = ",".join(ctrls)
                self.sys.mount("cgroup", sub, "cgroup", flags, opts)
            else:
                src = next((self.cgroup_paths[c] for c in ctrls if c in self.cgroup_paths),
                           None)
                if src is None or not os.path.isdir(src):
                    continue
                self._bind_ro(src, sub, flags)
            for ctrl in ctrls:
                link = os.path.join(dest, ctrl.removeprefix("name="))
                if ctrl != name and not os.path.lexists(link) and "," in name:
                    os.symlink(name, link)
        # The tmpfs itself stays writable, as runc 1.1 leaves it (the hierarchies under
        # it are read-only): programs that test /sys/fs/cgroup see what they see there.

    def _bind_ro(self, src: str, dest: str, flags: int) -> None:
        self.sys.mount(src, dest, "bind", sc.MS_BIND | sc.MS_REC)
        self.sys.mount(None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_REC
                       | (flags & ~sc.MS_REC) | self._locked(dest))

    # -- /dev -------------------------------------------------------------
    def create_devices(self, devices: list[Device]) -> None:
        for d in devices:
            dest = secure_join(self.plan.rootfs, d.path)
            _mkdirs(os.path.dirname(dest))
            if os.path.lexists(dest) and not os.path.isdir(dest):
                os.unlink(dest)
            if self.in_userns:
                # mknod is not allowed in a user namespace: bind the host's node.
                _touch(dest)
                self.sys.mount(d.path, dest, "bind", sc.MS_BIND)
                continue
            mode = (d.file_mode if d.file_mode is not None else 0o666) | _DEV_TYPES[d.type]
            self.sys.mknod(dest, mode, os.makedev(d.major, d.minor) if d.type != "p" else 0)
            self.sys.chown(dest, d.uid or 0, d.gid or 0)

    def dev_symlinks(self) -> None:
        links = list(DEV_SYMLINKS)
        if os.path.exists("/proc/kcore"):
            links.append(("/proc/kcore", "/dev/core"))
        links.append(("pts/ptmx", "/dev/ptmx"))
        for target, link in links:
            path = secure_join(self.plan.rootfs, link)
            if link == "/dev/ptmx" and os.path.lexists(path):
                os.unlink(path)
            try:
                os.symlink(target, path)
            except FileExistsError:
                pass

    # -- pivot ------------------------------------------------------------
    def pivot(self, no_pivot: bool = False) -> None:
        root = self.plan.rootfs
        if no_pivot:
            os.chdir(root)
            self.sys.mount(root, "/", None, sc.MS_MOVE)
            os.chroot(".")
            os.chdir("/")
            return
        old = os.open("/", os.O_DIRECTORY | os.O_RDONLY)
        new = os.open(root, os.O_DIRECTORY | os.O_RDONLY)
        try:
            os.fchdir(new)
            # pivot_root(".", ".") stacks the old root on top of the new one;
            # unmounting "." afterwards removes it without a put_old directory.
            self.sys.pivot_root(".", ".")
            os.fchdir(old)
            self.sys.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
            self.sys.umount2(".", sc.MNT_DETACH)
        finally:
            os.close(old)
            os.close(new)
        os.chdir("/")

    # -- finalize (after pivot) ---------------------------------------------
    def finalize(self, readonly_paths: list[str], masked_paths: list[str]) -> None:
        if self._ro_dev:
            self.sys.mount(None, "/dev", None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_BIND
                           | self._locked("/dev"))
        for p in readonly_paths:
            self.readonly_path(p)
        for p in masked_paths:
            self.mask_path(p)
        if self.plan.readonly_root:
            self.sys.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
                           | self._locked("/"))

    def readonly_path(self, path: str) -> None:
        try:
            self.sys.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise
        # The bind copies the mount's flags, the remount would clear them: keep
        # nosuid/nodev/noexec (and, in a user namespace, whatever is locked).
        try:
            kept = os.statvfs(path).f_flag & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        except OSError:
            kept = 0
        self.sys.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
                       | kept | self._locked(path))

    def mask_path(self, path: str) -> None:
        try:
            self.sys.mount("/dev/null", path, None, sc.MS_BIND)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            if exc.errno == errno.ENOTDIR:
                self.sys.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
                return
            raise


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _touch(path: str) -> None:
    if os.path.exists(path):
        return
    _mkdirs(os.path.dirname(path))
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
